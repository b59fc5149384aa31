//! The codec against what channels_redis 4.3.0 itself wrote
//! (`tests/fixtures/channel_layer/vectors.json`), and its own round trips.

use super::*;
use crate::channel_layer::wire::testing::{hex, vectors};
use crate::channel_layer::wire::{decode_json, encode_msgpack};

const EXPIRY: u64 = 60;
/// The core layer's decrypt TTL: `expiry + 10`.
const TTL: u64 = EXPIRY + 10;

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|k| k.to_string()).collect()
}

/// One sealed vector: the codec that reads it (keys key-one and key-two
/// whenever it was encrypted), its bytes, its token time.
struct Sealed {
    label: String,
    codec: Codec,
    raw: Vec<u8>,
    timestamp: Option<u64>,
    layer: String,
    format: Format,
}

fn sealed_vectors() -> Vec<(Value, Sealed)> {
    let v = vectors();
    let mut out = Vec::new();
    for case in v["cases"].as_array().unwrap() {
        let value = decode_json(case["value"].as_str().unwrap().as_bytes()).unwrap();
        for s in case["sealed"].as_array().unwrap() {
            let layer = s["layer"].as_str().unwrap().to_owned();
            let format = match s["format"].as_str().unwrap() {
                "msgpack" => Format::Msgpack,
                _ => Format::Json,
            };
            let encrypted = !s["encrypt_keys"].as_array().unwrap().is_empty();
            let open_keys = if encrypted {
                keys(&["key-one", "key-two"])
            } else {
                vec![]
            };
            let codec = match layer.as_str() {
                "core" => Codec::new(format, &open_keys, 12, Some(Duration::from_secs(TTL))),
                _ => Codec::new(format, &open_keys, 0, None),
            };
            let label = format!("{} {layer} {format:?} {}", case["name"], s["encrypt_keys"]);
            let sealed = Sealed {
                label,
                codec,
                raw: hex(s["hex"].as_str().unwrap()),
                timestamp: s["timestamp"].as_u64(),
                layer,
                format,
            };
            out.push((value.clone(), sealed));
        }
    }
    out
}

#[test]
fn every_python_vector_opens_to_its_value() {
    let all = sealed_vectors();
    assert_eq!(all.len(), 6 * 2 * 2 * 3);
    for (value, s) in &all {
        let now = s.timestamp.unwrap_or(1_700_000_000) + 5;
        assert_eq!(s.codec.open_at(&s.raw, now).unwrap(), *value, "{}", s.label);
    }
}

#[test]
fn stale_and_future_tokens_on_the_core_layer() {
    for (_, s) in sealed_vectors() {
        let (Some(ts), "core") = (s.timestamp, s.layer.as_str()) else {
            continue;
        };
        assert!(s.codec.open_at(&s.raw, ts + TTL).is_ok(), "{}", s.label);
        let stale = s.codec.open_at(&s.raw, ts + TTL + 1).unwrap_err();
        assert!(
            matches!(stale, OpenError::Expired),
            "{}: {stale:?}",
            s.label
        );
        assert_eq!(stale.label(), "expired");
        let early = s.codec.open_at(&s.raw, ts - 61).unwrap_err();
        assert!(matches!(early, OpenError::Future), "{}: {early:?}", s.label);
    }
}

#[test]
fn the_pubsub_layer_has_no_ttl() {
    for (value, s) in sealed_vectors() {
        if let (Some(ts), "pubsub") = (s.timestamp, s.layer.as_str()) {
            let years_later = ts + 10 * 365 * 86_400;
            assert_eq!(s.codec.open_at(&s.raw, years_later).unwrap(), value);
        }
    }
}

#[test]
fn wrong_keys_only_is_wrong_key() {
    for (_, s) in sealed_vectors() {
        let Some(ts) = s.timestamp else { continue };
        let prefix = if s.layer == "core" { 12 } else { 0 };
        let other = Codec::new(s.format, &keys(&["key-three"]), prefix, None);
        let err = other.open_at(&s.raw, ts).unwrap_err();
        assert!(matches!(err, OpenError::WrongKey), "{}: {err:?}", s.label);
        assert_eq!(err.label(), "wrong_key");
        // Encrypted bytes read by a layer without keys: also a wrong key.
        let keyless = Codec::new(s.format, &[], prefix, None);
        let err = keyless.open_at(&s.raw, ts).unwrap_err();
        assert_eq!(err.label(), "wrong_key", "{}", s.label);
    }
}

#[test]
fn plain_bytes_with_keys_configured_is_wrong_key() {
    for (_, s) in sealed_vectors() {
        if s.timestamp.is_none() && s.layer == "core" {
            let keyed = Codec::new(s.format, &keys(&["key-one"]), 12, None);
            let err = keyed.open_at(&s.raw, 0).unwrap_err();
            assert_eq!(err.label(), "wrong_key", "{}", s.label);
        }
    }
}

#[test]
fn seal_then_open_every_configuration() {
    let value = decode_json(
        r#"{"type":"chat_message_broadcast","message":{"id":5,"content":"héllo 😀","n":[1.5,-2,null]}}"#
            .as_bytes(),
    )
    .unwrap();
    let ttl = Some(Duration::from_secs(TTL));
    for format in [Format::Msgpack, Format::Json] {
        for k in [vec![], keys(&["key-one", "key-two"])] {
            for (prefix, ttl) in [(12, ttl), (0, None)] {
                let codec = Codec::new(format, &k, prefix, ttl);
                let raw = codec.seal_at(&value, 1_000);
                assert_eq!(codec.open_at(&raw, 1_010).unwrap(), value);
                assert_eq!(codec.open(&codec.seal(&value)).unwrap(), value);
                assert_eq!(codec.format(), format);
            }
        }
    }
}

#[test]
fn the_first_key_encrypts_and_any_key_opens() {
    let value = Value::Map(vec![("type".into(), Value::Str("x".into()))]);
    let writer = Codec::new(Format::Msgpack, &keys(&["key-two", "key-one"]), 12, None);
    let raw = writer.seal_at(&value, 1_000);
    let only_two = Codec::new(Format::Msgpack, &keys(&["key-two"]), 12, None);
    assert_eq!(only_two.open_at(&raw, 1_000).unwrap(), value);
    let only_one = Codec::new(Format::Msgpack, &keys(&["key-one"]), 12, None);
    assert!(matches!(
        only_one.open_at(&raw, 1_000),
        Err(OpenError::WrongKey)
    ));
}

#[test]
fn unencrypted_msgpack_is_prefix_then_packb() {
    let value = decode_json(br#"{"type":"typing_indicator","user_id":2}"#).unwrap();
    let codec = Codec::new(Format::Msgpack, &[], 12, None);
    let raw = codec.seal_at(&value, 0);
    let mut packed = Vec::new();
    encode_msgpack(&value, &mut packed);
    assert_eq!(raw.len(), 12 + packed.len());
    assert_eq!(&raw[12..], &packed[..]);
}

#[test]
fn short_garbage_and_unsupported() {
    let codec = Codec::new(Format::Msgpack, &[], 12, None);
    for raw in [&b""[..], &[0u8; 11], &[0u8; 12]] {
        let err = codec.open_at(raw, 0).unwrap_err();
        assert!(matches!(err, OpenError::Short(12)), "{err:?}");
        assert_eq!(err.label(), "short");
    }
    let garbage = [[0u8; 12].as_slice(), b"\xc1"].concat();
    assert_eq!(codec.open_at(&garbage, 0).unwrap_err().label(), "garbage");
    let bin = [[0u8; 12].as_slice(), b"\x81\xa1k\xc4\x01x"].concat();
    assert_eq!(codec.open_at(&bin, 0).unwrap_err().label(), "unsupported");
    let json = Codec::new(Format::Json, &[], 0, None);
    assert_eq!(json.open_at(b"{\"a\":", 0).unwrap_err().label(), "garbage");
    assert_eq!(
        json.open_at(b"{\"a\":1}", 0).unwrap(),
        decode_json(b"{\"a\":1}").unwrap()
    );
}

#[test]
fn debug_shows_no_key_material() {
    let codec = Codec::new(Format::Json, &keys(&["key-one", "key-two"]), 12, None);
    let text = format!("{codec:?}");
    assert_eq!(
        text,
        "Codec { format: Json, keys: 2, random_prefix_length: 12, ttl: None }"
    );
}
