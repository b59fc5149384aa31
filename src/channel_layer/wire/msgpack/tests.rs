//! msgpack against msgpack-python: the tag table both ways, hostile
//! inputs, and the vectors channels_redis made.

use super::*;
use crate::channel_layer::wire::testing::{hex, vectors};
use crate::channel_layer::wire::{decode_json, encode_python_json};

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_msgpack(v, &mut out);
    out
}

fn st(s: &str) -> Value {
    Value::Str(s.into())
}

/// Expected bytes from `msgpack.packb(v)` (msgpack-python 1.2.4).
#[test]
fn encode_matches_packb_table() {
    let table: Vec<(Value, &str)> = vec![
        (Value::Nil, "c0"),
        (Value::Bool(true), "c3"),
        (Value::Bool(false), "c2"),
        (Value::Int(0), "00"),
        (Value::Int(127), "7f"),
        (Value::Int(128), "cc80"),
        (Value::Int(255), "ccff"),
        (Value::Int(256), "cd0100"),
        (Value::Int(65535), "cdffff"),
        (Value::Int(65536), "ce00010000"),
        (Value::Int(4294967295), "ceffffffff"),
        (Value::Int(4294967296), "cf0000000100000000"),
        (Value::Int(i64::MAX), "cf7fffffffffffffff"),
        (Value::UInt(u64::MAX), "cfffffffffffffffff"),
        (Value::Int(-1), "ff"),
        (Value::Int(-32), "e0"),
        (Value::Int(-33), "d0df"),
        (Value::Int(-128), "d080"),
        (Value::Int(-129), "d1ff7f"),
        (Value::Int(-32768), "d18000"),
        (Value::Int(-32769), "d2ffff7fff"),
        (Value::Int(-2147483648), "d280000000"),
        (Value::Int(-2147483649), "d3ffffffff7fffffff"),
        (Value::Int(i64::MIN), "d38000000000000000"),
        (Value::Float(1.5), "cb3ff8000000000000"),
        (Value::Float(-0.0), "cb8000000000000000"),
        (st(""), "a0"),
        (st("é"), "a2c3a9"),
        (Value::Array(vec![]), "90"),
        (Value::Map(vec![]), "80"),
    ];
    for (v, want) in table {
        assert_eq!(enc(&v), hex(want), "{v:?}");
        assert_eq!(decode_msgpack(&hex(want)).unwrap(), v, "{want}");
    }
}

#[test]
fn string_and_container_lengths_take_the_smallest_header() {
    let cases = [(31, "bf"), (32, "d920"), (255, "d9ff"), (256, "da0100")];
    for (n, head) in cases {
        let v = st(&"x".repeat(n));
        let bytes = enc(&v);
        assert!(bytes.starts_with(&hex(head)), "{n}");
        assert_eq!(bytes.len(), hex(head).len() + n);
        assert_eq!(decode_msgpack(&bytes).unwrap(), v);
    }
    let big = st(&"y".repeat(70_000));
    assert!(enc(&big).starts_with(&hex("db00011170")));
    let arrays = [(15, "9f"), (16, "dc0010"), (65536, "dd00010000")];
    for (n, head) in arrays {
        let v = Value::Array(vec![Value::Nil; n]);
        assert!(enc(&v).starts_with(&hex(head)), "{n}");
        assert_eq!(decode_msgpack(&enc(&v)).unwrap(), v);
    }
    let maps = [(15, "8f"), (16, "de0010"), (65536, "df00010000")];
    for (n, head) in maps {
        let v = Value::Map((0..n).map(|i| (i.to_string(), Value::Nil)).collect());
        assert!(enc(&v).starts_with(&hex(head)), "{n}");
        assert_eq!(decode_msgpack(&enc(&v)).unwrap(), v);
    }
}

#[test]
fn every_input_form_decodes() {
    let forms: Vec<(&str, Value)> = vec![
        ("ca3fc00000", Value::Float(1.5)),
        ("cc05", Value::Int(5)),
        ("cd0005", Value::Int(5)),
        ("ce00000005", Value::Int(5)),
        ("cf0000000000000005", Value::Int(5)),
        ("d005", Value::Int(5)),
        ("d10005", Value::Int(5)),
        ("d200000005", Value::Int(5)),
        ("d30000000000000005", Value::Int(5)),
        ("d3ffffffffffffffff", Value::Int(-1)),
        ("d90161", st("a")),
        ("da000161", st("a")),
        ("db0000000161", st("a")),
        ("dc000101", Value::Array(vec![Value::Int(1)])),
        ("dd0000000101", Value::Array(vec![Value::Int(1)])),
        (
            "de0001a16101",
            Value::Map(vec![("a".into(), Value::Int(1))]),
        ),
        (
            "df00000001d9016101",
            Value::Map(vec![("a".into(), Value::Int(1))]),
        ),
        (
            "81a16192c0c3",
            Value::Map(vec![(
                "a".into(),
                Value::Array(vec![Value::Nil, Value::Bool(true)]),
            )]),
        ),
    ];
    for (bytes, want) in forms {
        assert_eq!(decode_msgpack(&hex(bytes)).unwrap(), want, "{bytes}");
    }
}

/// Whether an error is the expected one.
type Expect = fn(&WireError) -> bool;

#[test]
fn hostile_inputs_are_typed_errors() {
    let bad: Vec<(&str, Expect)> = vec![
        ("", |e| matches!(e, WireError::Truncated)),
        ("cd00", |e| matches!(e, WireError::Truncated)),
        ("a4616263", |e| matches!(e, WireError::Truncated)),
        ("c0c0", |e| matches!(e, WireError::Trailing)),
        ("c1", |e| matches!(e, WireError::Reserved)),
        ("c40161", |e| matches!(e, WireError::Bin)),
        ("81c40161c0", |e| matches!(e, WireError::NonStringKey)),
        ("810101", |e| matches!(e, WireError::NonStringKey)),
        ("d6ffffffffff", |e| matches!(e, WireError::Ext)),
        ("c70100ff", |e| matches!(e, WireError::Ext)),
        ("a2c328", |e| matches!(e, WireError::BadUtf8)),
        ("cb7ff8000000000000", |e| matches!(e, WireError::NonFinite)),
        ("ca7f800000", |e| matches!(e, WireError::NonFinite)),
    ];
    for (bytes, ok) in bad {
        let got = decode_msgpack(&hex(bytes));
        assert!(got.as_ref().is_err_and(ok), "{bytes}: {got:?}");
    }
}

#[test]
fn length_bombs_reserve_nothing() {
    // Each claims 2^32 - 1 elements, bytes or entries in a few bytes.
    for bomb in ["ddffffffff", "dfffffffff", "dbffffffff", "ddffffffffc0c0"] {
        assert!(
            matches!(decode_msgpack(&hex(bomb)), Err(WireError::Truncated)),
            "{bomb}"
        );
    }
    // 16-bit claims inside nested arrays: still refused before reserving.
    let nested = hex("91dcffff91dcffff");
    assert!(matches!(decode_msgpack(&nested), Err(WireError::Truncated)));
}

#[test]
fn a_value_is_32_bytes() {
    // The allocation bound in the module doc counts on it.
    assert!(std::mem::size_of::<Value>() <= 32);
    assert!(std::mem::size_of::<(String, Value)>() <= 56);
}

#[test]
fn nesting_is_bounded() {
    let ok = [vec![0x91; MAX_DEPTH - 1], vec![0x90]].concat();
    assert!(decode_msgpack(&ok).is_ok());
    let deep = [vec![0x91; MAX_DEPTH], vec![0x90]].concat();
    assert!(matches!(decode_msgpack(&deep), Err(WireError::TooDeep)));
    let maps = [b"\x81\xa1k".repeat(MAX_DEPTH + 1), vec![0xc0]].concat();
    assert!(matches!(decode_msgpack(&maps), Err(WireError::TooDeep)));
    let hostile = vec![0x91; 100_000];
    assert!(matches!(decode_msgpack(&hostile), Err(WireError::TooDeep)));
}

#[test]
fn repeated_keys_are_a_python_dict() {
    let bytes = hex("83a16101a16202a16103");
    let want = Value::Map(vec![
        ("a".into(), Value::Int(3)),
        ("b".into(), Value::Int(2)),
    ]);
    assert_eq!(decode_msgpack(&bytes).unwrap(), want);
}

/// Every value channels_redis's vectors hold: our msgpack and
/// `json.dumps` bytes equal Python's, and both decode to the value.
#[test]
fn python_vectors_byte_for_byte() {
    let v = vectors();
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let value = decode_json(case["value"].as_str().unwrap().as_bytes()).unwrap();
        let packed = hex(case["msgpack"].as_str().unwrap());
        assert_eq!(enc(&value), packed, "{name}");
        assert_eq!(decode_msgpack(&packed).unwrap(), value, "{name}");
        let dumped = hex(case["json"].as_str().unwrap());
        let mut ours = Vec::new();
        encode_python_json(&value, &mut ours);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&dumped),
            "{name}"
        );
        assert_eq!(decode_json(&dumped).unwrap(), value, "{name}");
    }
}
