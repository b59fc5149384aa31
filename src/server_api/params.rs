//! A method's parameters read from the request's JSON object, each rule
//! once: ids are positive integers, flags are booleans, texts are strings.
//!
//! Owns: the typed getters ([`Params`]), the `bad_request` message that
//! names the parameter at fault, and each method's parameters read and
//! checked (`publish_params`, `send_message_params` and
//! `checked_content`, `disconnect_params`, `batch_commands` and
//! `command_of`) with their limits. Pure: no I/O; fuzzed against a model
//! in `src/fuzz/server_api.rs`.
//!
//! Must never: panic on any input, or accept a value of another type in
//! place of the documented one (no `"5"` for `5`).

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::protocol::{validate_content, ReplyError};

/// The parameters of one call (a JSON object).
pub(crate) struct Params<'a>(pub(crate) &'a Map<String, Value>);

impl<'a> Params<'a> {
    /// A required positive integer id.
    pub(crate) fn id(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_id(name)?
            .ok_or_else(|| ApiError::bad(format!("{name} is required")))
    }

    /// An optional positive integer id (`null` counts as absent).
    pub(crate) fn opt_id(&self, name: &str) -> Result<Option<i64>, ApiError> {
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
    pub(crate) fn opt_u16(&self, name: &str) -> Result<Option<u16>, ApiError> {
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
    pub(crate) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::bad(format!("{name} must be a boolean"))),
        }
    }

    /// A required string.
    pub(crate) fn text(&self, name: &str) -> Result<&'a str, ApiError> {
        self.opt_text(name)?
            .ok_or_else(|| ApiError::bad(format!("{name} is required")))
    }

    /// An optional string.
    pub(crate) fn opt_text(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad(format!("{name} must be a string"))),
        }
    }

    /// A required JSON object.
    pub(crate) fn object(&self, name: &str) -> Result<&'a Map<String, Value>, ApiError> {
        match self.0.get(name) {
            Some(Value::Object(m)) => Ok(m),
            None | Some(Value::Null) => Err(ApiError::bad(format!("{name} is required"))),
            Some(_) => Err(ApiError::bad(format!("{name} must be an object"))),
        }
    }

    /// A required JSON array.
    pub(crate) fn array(&self, name: &str) -> Result<&'a [Value], ApiError> {
        match self.0.get(name) {
            Some(Value::Array(a)) => Ok(a),
            None | Some(Value::Null) => Err(ApiError::bad(format!("{name} is required"))),
            Some(_) => Err(ApiError::bad(format!("{name} must be an array"))),
        }
    }
}

/// Largest `publish` event, serialized, bytes.
pub const MAX_EVENT: usize = 64 * 1024;
/// Most commands in one `batch`.
pub const MAX_BATCH: usize = 100;

/// `publish`'s parameters, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PublishParams {
    pub(crate) conversation_id: i64,
    pub(crate) v2_only: bool,
    /// The event as JSON text, at most [`MAX_EVENT`] bytes.
    pub(crate) payload: Vec<u8>,
}

/// Reads and checks `publish`'s parameters (pure).
pub(crate) fn publish_params(p: &Params<'_>) -> Result<PublishParams, ApiError> {
    let conversation_id = p.id("conversation_id")?;
    let event = p.object("event")?;
    if !matches!(event.get("type"), Some(Value::String(_))) {
        return Err(ApiError::bad("event must have a string type"));
    }
    let v2_only = p.flag("v2_only")?;
    let payload = serde_json::to_vec(event).map_err(|_| ApiError::bad("event is not JSON"))?;
    if payload.len() > MAX_EVENT {
        return Err(ApiError::bad("event is larger than 64 KiB as JSON"));
    }
    Ok(PublishParams {
        conversation_id,
        v2_only,
        payload,
    })
}

/// `send_message`'s parameters, checked but for the content (checked
/// after the sender, as a socket's message is).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SendParams<'a> {
    pub(crate) conversation_id: i64,
    pub(crate) sender_id: i64,
    pub(crate) raw: &'a str,
    pub(crate) key: Option<&'a str>,
}

/// Reads and checks `send_message`'s parameters (pure).
pub(crate) fn send_message_params<'a>(p: &Params<'a>) -> Result<SendParams<'a>, ApiError> {
    Ok(SendParams {
        conversation_id: p.id("conversation_id")?,
        sender_id: p.id("sender_id")?,
        raw: p.text("content")?,
        key: p
            .opt_text("idempotency_key")?
            .map(idempotency_key)
            .transpose()?,
    })
}

/// The content a `send_message` stores, or why not (pure).
pub(crate) fn checked_content(raw: &str) -> Result<&str, ApiError> {
    validate_content(raw).map_err(|e| match e {
        ReplyError::EmptyMessage => ApiError::EmptyMessage,
        ReplyError::MessageTooLong => ApiError::MessageTooLong,
        _ => ApiError::bad("content must not contain U+0000"),
    })
}

/// Longest `idempotency_key`, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 64;

/// A valid `idempotency_key`: 1 to [`MAX_IDEMPOTENCY_KEY`] characters.
fn idempotency_key(key: &str) -> Result<&str, ApiError> {
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::bad("idempotency_key must be 1 to 64 characters"));
    }
    if key.contains('\0') {
        return Err(ApiError::bad("idempotency_key must not contain U+0000"));
    }
    Ok(key)
}

/// `disconnect`'s parameters, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DisconnectParams {
    pub(crate) user_id: i64,
    pub(crate) conversation_id: Option<i64>,
    /// 4001 or 4003.
    pub(crate) code: u16,
}

/// Reads and checks `disconnect`'s parameters (pure): the code defaults to
/// 4003 with a conversation, 4001 without, and must be one of the two.
pub(crate) fn disconnect_params(p: &Params<'_>) -> Result<DisconnectParams, ApiError> {
    let user_id = p.id("user_id")?;
    let conversation_id = p.opt_id("conversation_id")?;
    let default = if conversation_id.is_some() {
        4003
    } else {
        4001
    };
    let code = p.opt_u16("code")?.unwrap_or(default);
    if crate::shard::disconnect_reason(code).is_none() {
        return Err(ApiError::bad("code must be 4001 or 4003"));
    }
    Ok(DisconnectParams {
        user_id,
        conversation_id,
        code,
    })
}

/// `batch`'s commands (pure): at most [`MAX_BATCH`].
pub(crate) fn batch_commands<'a>(p: &Params<'a>) -> Result<&'a [Value], ApiError> {
    let commands = p.array("commands")?;
    if commands.len() > MAX_BATCH {
        return Err(ApiError::bad("commands holds more than 100 commands"));
    }
    Ok(commands)
}

/// A batch command's method name and parameters (pure; `empty` stands for
/// parameters left out).
pub(crate) fn command_of<'a>(
    command: &'a Value,
    empty: &'a Map<String, Value>,
) -> Result<(&'a str, &'a Map<String, Value>), ApiError> {
    let Value::Object(command) = command else {
        return Err(ApiError::bad("a command must be an object"));
    };
    let c = Params(command);
    let method = c.text("method")?;
    let params = match command.get("params") {
        None | Some(Value::Null) => empty,
        Some(_) => c.object("params")?,
    };
    Ok((method, params))
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
    fn idempotency_keys_are_1_to_64_characters() {
        assert_eq!(idempotency_key("order-1").unwrap(), "order-1");
        let most = "é".repeat(MAX_IDEMPOTENCY_KEY);
        assert_eq!(
            idempotency_key(&most).unwrap(),
            most,
            "characters, not bytes"
        );
        for bad in [String::new(), "x".repeat(65), "a\0b".to_string()] {
            assert_eq!(idempotency_key(&bad).unwrap_err().code(), "bad_request");
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
