//! The values a Channels layer message carries, and their byte forms:
//! msgpack as `msgpack.packb`/`unpackb` write and read them, compact JSON as
//! a WebSocket text frame carries it, and JSON as Python's `json.dumps`
//! writes it (channels_redis's `serializer_format="json"`).
//!
//! Owns [`Value`] (what JSON can hold, map order kept), [`WireError`] and
//! the five codecs. The decoders take bytes from anyone who can write to
//! the layer's Redis, so they bound depth and allocation and refuse what a
//! WebSocket frame could not carry (msgpack bin and ext, non-string keys,
//! NaN and infinities).
//!
//! Must never: do I/O, panic on any input, or reserve memory from a length
//! an input claims before the input has shown those bytes.

mod json;
mod msgpack;
mod pyjson;

use std::collections::hash_map::{Entry, HashMap};

pub(crate) use json::{decode_json, write_json};
pub(crate) use msgpack::{decode_msgpack, encode_msgpack};
pub(crate) use pyjson::encode_python_json;

/// Nesting limit of both decoders: a map or array at depth 64 (the top
/// value is at depth 1) is still taken, one more level is [`WireError::TooDeep`].
pub(crate) const MAX_DEPTH: usize = 64;

/// One JSON-representable value, as Python holds a decoded layer message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `None` / `null`.
    Nil,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits an `i64` (every integer that does is here).
    Int(i64),
    /// An integer above `i64::MAX` (only those: smaller ones are [`Value::Int`]).
    UInt(u64),
    /// A float; the decoders only produce finite ones.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Array(Vec<Value>),
    /// A dict, in insertion order, each key once.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The value of `key` if this is a map holding it.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one that fits an `i64` (a bool is not one).
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The bool, if this is one.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// Why bytes are not a [`Value`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The input ends inside a value.
    #[error("input ends inside a value")]
    Truncated,
    /// Bytes follow the first complete value.
    #[error("bytes after the value")]
    Trailing,
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A msgpack bin (Python `bytes`): JSON has no bytes.
    #[error("msgpack bin (bytes) value")]
    Bin,
    /// A msgpack ext (including timestamps).
    #[error("msgpack ext value")]
    Ext,
    /// The reserved msgpack tag 0xc1.
    #[error("reserved msgpack tag 0xc1")]
    Reserved,
    /// A map key that is not a string.
    #[error("map key that is not a string")]
    NonStringKey,
    /// A msgpack string that is not UTF-8.
    #[error("string is not UTF-8")]
    BadUtf8,
    /// NaN or an infinity: JSON cannot hold them.
    #[error("NaN or infinite float")]
    NonFinite,
    /// Not JSON (serde_json's reason).
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl WireError {
    /// True for well-formed input holding what a WebSocket frame cannot
    /// carry (bytes, ext, non-string keys, non-finite floats, too deep);
    /// false for bytes that are no value at all.
    pub(crate) fn is_unsupported(&self) -> bool {
        matches!(
            self,
            WireError::TooDeep
                | WireError::Bin
                | WireError::Ext
                | WireError::NonStringKey
                | WireError::NonFinite
        )
    }
}

/// Entries as a Python dict built from them in order holds them: a
/// repeated key keeps its first position and takes its last value (what
/// both `msgpack.unpackb` and `json.loads` do).
fn python_dict(entries: Vec<(String, Value)>) -> Vec<(String, Value)> {
    if !has_repeated_key(&entries) {
        return entries;
    }
    let first_of: Vec<Option<usize>> = {
        let mut seen = HashMap::with_capacity(entries.len());
        let keys = entries.iter().enumerate();
        keys.map(|(i, (k, _))| match seen.entry(k.as_str()) {
            Entry::Occupied(e) => Some(*e.get()),
            Entry::Vacant(e) => {
                e.insert(i);
                None
            }
        })
        .collect()
    };
    let mut slot = vec![0; entries.len()];
    let mut out: Vec<(String, Value)> = Vec::with_capacity(entries.len());
    for (i, (entry, first)) in entries.into_iter().zip(first_of).enumerate() {
        match first {
            Some(f) => out[slot[f]].1 = entry.1,
            None => {
                slot[i] = out.len();
                out.push(entry);
            }
        }
    }
    out
}

/// Whether a key repeats (a scan for small maps, a set for large ones).
fn has_repeated_key(entries: &[(String, Value)]) -> bool {
    if entries.len() <= 16 {
        let mut rest = entries;
        while let Some(((k, _), tail)) = rest.split_first() {
            if tail.iter().any(|(other, _)| other == k) {
                return true;
            }
            rest = tail;
        }
        return false;
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    !entries.iter().all(|(k, _)| seen.insert(k.as_str()))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared by the channel layer's tests: hex, the vectors channels_redis
    //! made (`tests/fixtures/channel_layer/`), generated values.
    use proptest::prelude::*;

    use super::Value;

    /// `tests/fixtures/channel_layer/vectors.json`, made by `make_vectors.py`.
    pub(crate) const VECTORS: &str =
        include_str!("../../tests/fixtures/channel_layer/vectors.json");

    /// The vectors file as a serde_json tree (for navigation only: the
    /// values inside are read with `decode_json`, which keeps key order).
    pub(crate) fn vectors() -> serde_json::Value {
        serde_json::from_str(VECTORS).expect("vectors.json is JSON")
    }

    /// Bytes from hex digits (whitespace ignored).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
            .collect()
    }

    /// Any [`Value`] the decoders can produce (finite floats; `UInt` only
    /// above `i64::MAX`), nested a few levels.
    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            ".{0,40}".prop_map(Value::Str),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((".{0,12}", inner), 0..8)
                    .prop_map(|entries| Value::Map(super::python_dict(entries))),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let entries = vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
            ("a".into(), Value::Int(3)),
        ];
        let want = vec![("a".into(), Value::Int(3)), ("b".into(), Value::Int(2))];
        assert_eq!(python_dict(entries), want);
        let many: Vec<(String, Value)> = (0..40)
            .map(|i| (format!("k{}", i % 20), Value::Int(i)))
            .collect();
        let got = python_dict(many);
        assert_eq!(got.len(), 20);
        assert_eq!(got[3], ("k3".into(), Value::Int(23)));
    }

    #[test]
    fn accessors() {
        let v = Value::Map(vec![
            ("type".into(), s("x")),
            ("n".into(), Value::Int(-4)),
            ("ok".into(), Value::Bool(true)),
        ]);
        assert_eq!(v.get("type").and_then(Value::as_str), Some("x"));
        assert_eq!(v.get("n").and_then(Value::as_i64), Some(-4));
        assert_eq!(v.get("ok").and_then(Value::as_bool), Some(true));
        assert_eq!(v.get("ok").and_then(Value::as_i64), None);
        assert_eq!(v.get("missing"), None);
        assert_eq!(s("x").get("type"), None);
    }

    #[test]
    fn unsupported_is_the_well_formed_refusals() {
        assert!(WireError::Bin.is_unsupported());
        assert!(WireError::NonFinite.is_unsupported());
        assert!(!WireError::Truncated.is_unsupported());
        assert!(!WireError::BadUtf8.is_unsupported());
    }
}
