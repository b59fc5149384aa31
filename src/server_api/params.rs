//! A method's parameters read from the request's JSON object, each rule
//! once: ids are positive integers, flags are booleans, texts are strings.
//!
//! Owns: the typed getters ([`Params`]) and the `bad_request` message that
//! names the parameter at fault. Pure: no I/O.
//!
//! Must never: panic on any input, or accept a value of another type in
//! place of the documented one (no `"5"` for `5`).

use serde_json::{Map, Value};

use super::error::ApiError;

/// The parameters of one call (a JSON object).
pub(super) struct Params<'a>(pub(super) &'a Map<String, Value>);

impl<'a> Params<'a> {
    /// A required positive integer id.
    pub(super) fn id(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_id(name)?
            .ok_or_else(|| ApiError::bad(format!("{name} is required")))
    }

    /// An optional positive integer id (`null` counts as absent).
    pub(super) fn opt_id(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|id| *id > 0)
                .map(Some)
                .ok_or_else(|| ApiError::bad(format!("{name} must be a positive integer"))),
        }
    }

    /// An optional integer in 0..=65535.
    pub(super) fn opt_u16(&self, name: &str) -> Result<Option<u16>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| ApiError::bad(format!("{name} must be an integer"))),
        }
    }

    /// An optional boolean, `false` when absent.
    pub(super) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::bad(format!("{name} must be a boolean"))),
        }
    }

    /// A required string.
    pub(super) fn text(&self, name: &str) -> Result<&'a str, ApiError> {
        self.opt_text(name)?
            .ok_or_else(|| ApiError::bad(format!("{name} is required")))
    }

    /// An optional string.
    pub(super) fn opt_text(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad(format!("{name} must be a string"))),
        }
    }

    /// A required JSON object.
    pub(super) fn object(&self, name: &str) -> Result<&'a Map<String, Value>, ApiError> {
        match self.0.get(name) {
            Some(Value::Object(m)) => Ok(m),
            None | Some(Value::Null) => Err(ApiError::bad(format!("{name} is required"))),
            Some(_) => Err(ApiError::bad(format!("{name} must be an object"))),
        }
    }

    /// A required JSON array.
    pub(super) fn array(&self, name: &str) -> Result<&'a [Value], ApiError> {
        match self.0.get(name) {
            Some(Value::Array(a)) => Ok(a),
            None | Some(Value::Null) => Err(ApiError::bad(format!("{name} is required"))),
            Some(_) => Err(ApiError::bad(format!("{name} must be an array"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn ids_are_positive_integers_only() {
        let m = params(json!({"a": 5, "b": 0, "c": "5", "d": -1, "e": 1.5, "f": null}));
        let p = Params(&m);
        assert_eq!(p.id("a"), Ok(5));
        for bad in ["b", "c", "d", "e"] {
            assert_eq!(p.id(bad).unwrap_err().code(), "bad_request");
        }
        assert_eq!(p.opt_id("f"), Ok(None));
        assert_eq!(p.id("missing"), Err(ApiError::bad("missing is required")));
    }

    #[test]
    fn flags_texts_and_codes() {
        let m = params(json!({"t": true, "s": "x", "n": 4001, "big": 70000, "o": {}}));
        let p = Params(&m);
        assert_eq!(p.flag("t"), Ok(true));
        assert_eq!(p.flag("absent"), Ok(false));
        assert!(p.flag("s").is_err());
        assert_eq!(p.text("s"), Ok("x"));
        assert!(p.text("t").is_err());
        assert_eq!(p.opt_u16("n"), Ok(Some(4001)));
        assert!(p.opt_u16("big").is_err());
        assert!(p.object("o").is_ok());
        assert!(p.object("s").is_err());
        assert!(p.array("o").is_err());
    }
}
