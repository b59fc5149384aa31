//! One JSON value reduced to what the client rules look at: its kind, a
//! borrowed string, an integer, and Python truthiness (`not value`).
//!
//! Owns `Json`, its serde visitor (every JSON type accepted, strings
//! borrowed from simd-json's in-place unescaped input, containers drained
//! and reduced to empty / not empty) and its conversion from a
//! `serde_json::Value` for the slow path.
//!
//! Must never: allocate (strings are borrowed, containers are not kept), or
//! reject a valid JSON value.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One JSON value, reduced to what the rules look at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX` (never a valid id, always truthy).
    BigInt,
    Float(f64),
    Str(&'a str),
    Array {
        empty: bool,
    },
    Object {
        empty: bool,
    },
}

impl Json<'_> {
    /// Python truthiness (`not value`).
    pub(super) fn is_falsy(self) -> bool {
        match self {
            Json::Null => true,
            Json::Bool(b) => !b,
            Json::Int(n) => n == 0,
            Json::Float(f) => f == 0.0,
            Json::Str(s) => s.is_empty(),
            Json::Array { empty } | Json::Object { empty } => empty,
            Json::BigInt => false,
        }
    }

    pub(super) fn from_value(v: &serde_json::Value) -> Json<'_> {
        use serde_json::Value as V;
        match v {
            V::Null => Json::Null,
            V::Bool(b) => Json::Bool(*b),
            V::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Json::Int(i),
                (None, Some(_)) => Json::BigInt,
                (None, None) => Json::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            V::String(s) => Json::Str(s),
            V::Array(a) => Json::Array {
                empty: a.is_empty(),
            },
            V::Object(o) => Json::Object {
                empty: o.is_empty(),
            },
        }
    }
}

/// Consumes a sequence, reporting whether it was empty.
pub(super) fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
    let mut empty = true;
    while seq.next_element::<IgnoredAny>()?.is_some() {
        empty = false;
    }
    Ok(empty)
}

/// Consumes a map, reporting whether it was empty.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
    let mut empty = true;
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
        empty = false;
    }
    Ok(empty)
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value with borrowed strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Json::BigInt, Json::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Json::Float(v))
    }

    // No `visit_str`: simd-json always lends strings (unescaped in place).
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|empty| Json::Array { empty })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map).map(|empty| Json::Object { empty })
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}
