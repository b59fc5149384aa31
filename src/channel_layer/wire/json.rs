//! JSON to and from [`Value`] with serde_json, keys kept in their order
//! (a `DeserializeSeed` of our own; serde_json's `preserve_order` feature
//! stays off for the rest of the crate).
//!
//! Owns the visitor and the `Serialize` of [`Value`]. [`write_json`] is
//! the compact form a WebSocket text frame carries, written by serde_json
//! (its string escapes, which `crate::protocol::write_json_str` shares,
//! and its float form: `1.0`, `1e+16`, `1.5e-7`).
//!
//! Must never: recurse past [`MAX_DEPTH`], or need serde_json's
//! `preserve_order` (it would change every `serde_json::Map` of the crate).
//! Floats read back exactly: the crate turns on serde_json's
//! `float_roundtrip`. Limit: an integer beyond `u64` becomes a float here
//! (serde_json without `arbitrary_precision`), where Python keeps an int.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{python_dict, Value, WireError, MAX_DEPTH};

/// Decodes one JSON document (surrounding whitespace allowed, as
/// `json.loads` allows it) into a [`Value`], keys in document order, a
/// repeated key as a Python dict keeps it (first place, last value).
pub(crate) fn decode_json(bytes: &[u8]) -> Result<Value, WireError> {
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed {
        depth: 1,
        too_deep: &too_deep,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| {
        if too_deep.get() {
            WireError::TooDeep
        } else {
            WireError::Json(e)
        }
    })
}

/// Appends `v` as compact JSON, exactly as `serde_json::to_writer` writes
/// the same document (a non-finite float, which no decoder produces, as
/// `null`).
pub(crate) fn write_json(v: &Value, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail and every key is a string, so
    // serde_json has no error to return here.
    let _ = serde_json::to_writer(out, v);
}

/// The depth being read; `too_deep` tells the caller why an error came.
#[derive(Clone, Copy)]
struct Seed<'c> {
    depth: usize,
    too_deep: &'c Cell<bool>,
}

impl Seed<'_> {
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        if self.depth > MAX_DEPTH {
            self.too_deep.set(true);
            return Err(E::custom("nested too deep"));
        }
        Ok(Seed {
            depth: self.depth + 1,
            too_deep: self.too_deep,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Int(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(i64::try_from(n).map_or(Value::UInt(n), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(E::custom("non-finite number"))
        }
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value_seed(inner)?));
        }
        Ok(Value::Map(python_dict(entries)))
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            Value::UInt(n) => s.serialize_u64(*n),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Value {
        decode_json(s.as_bytes()).unwrap()
    }

    fn out(v: &Value) -> String {
        let mut o = Vec::new();
        write_json(v, &mut o);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn keys_keep_their_order() {
        let v = dec(r#" {"z": 1, "a": [true, null, -2, 1.5], "m": {"y": "é", "b": {}}} "#);
        let want = Value::Map(vec![
            ("z".into(), Value::Int(1)),
            (
                "a".into(),
                Value::Array(vec![
                    Value::Bool(true),
                    Value::Nil,
                    Value::Int(-2),
                    Value::Float(1.5),
                ]),
            ),
            (
                "m".into(),
                Value::Map(vec![
                    ("y".into(), Value::Str("é".into())),
                    ("b".into(), Value::Map(vec![])),
                ]),
            ),
        ]);
        assert_eq!(v, want);
        assert_eq!(
            out(&v),
            r#"{"z":1,"a":[true,null,-2,1.5],"m":{"y":"é","b":{}}}"#
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(dec("18446744073709551615"), Value::UInt(u64::MAX));
        assert_eq!(dec("9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(dec("-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(dec("1e2"), Value::Float(100.0));
        assert_eq!(
            dec("18446744073709551616"),
            Value::Float(18446744073709551616.0)
        );
        for (f, text) in [
            (1.0, "1.0"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-7"),
            (0.1, "0.1"),
        ] {
            assert_eq!(out(&Value::Float(f)), text);
            assert_eq!(text, serde_json::to_string(&f).unwrap());
        }
        assert_eq!(out(&Value::Float(f64::NAN)), "null");
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        let s = "q\"b\\n\n\t\u{1}\u{7f}\u{2028}😀";
        let v = Value::Str(s.into());
        assert_eq!(out(&v), serde_json::to_string(s).unwrap());
        let mut own = Vec::new();
        crate::protocol::write_json_str(&mut own, s);
        assert_eq!(out(&v).into_bytes(), own);
        assert_eq!(dec(&out(&v)), v);
        assert_eq!(dec(r#""\ud83d\ude00""#), Value::Str("😀".into()));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1} x",
            "NaN",
            "1e400",
            "\"\\ud800\"",
            "{1:2}",
        ] {
            let got = decode_json(bad.as_bytes());
            assert!(matches!(got, Err(WireError::Json(_))), "{bad}: {got:?}");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            decode_json(deep.as_bytes()),
            Err(WireError::TooDeep)
        ));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(decode_json(ok.as_bytes()).is_ok());
        let hostile = "[".repeat(100_000);
        assert!(matches!(
            decode_json(hostile.as_bytes()),
            Err(WireError::TooDeep)
        ));
    }

    #[test]
    fn repeated_keys_are_a_python_dict() {
        let want = Value::Map(vec![
            ("a".into(), Value::Int(3)),
            ("b".into(), Value::Int(2)),
        ]);
        assert_eq!(dec(r#"{"a":1,"b":2,"a":3}"#), want);
    }
}
