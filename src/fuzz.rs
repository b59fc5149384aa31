//! Property tests of every decoder that takes bytes from outside: the
//! request-head parser of the WebSocket port (upgrades and `/api/`), the
//! admin listener's and the server API's request handling, the
//! path and query parsers, token verification, the client-message
//! decoder (the reference-model property lives beside it in
//! `protocol/decode.rs`), the raw member reader of call signals, the
//! bridge's envelope and presence-report decoders (other nodes, or anyone
//! publishing on our Redis channels), and the Channels layer codec
//! (anyone who can write to the layer's Redis: msgpack, JSON, Fernet, the
//! event table).
//!
//! Properties: never panic; what a decoder returns lies inside its input
//! (offsets and slices); encoders round-trip; a valid head cut anywhere
//! before its end asks for more bytes. Inputs are arbitrary bytes and
//! mutations of real frames (seeds in `tests/fixtures/fuzz/`). Each
//! property runs [`cases`] cases: 512 in `cargo test` (all of them in well
//! under a minute), `CHATGATE_FUZZ_CASES` for long runs
//! (`loadtest/fuzz.sh`). A failure prints the shrunk input: keep it as a
//! regression case in `tests/fixtures/fuzz/`.
//!
//! The admin listener and the server API have their own files:
//! `fuzz/admin.rs` (routes against a model, whole connections through
//! hyper with the listener's settings, head and body length bombs) and
//! `fuzz/server_api.rs` (keys, content type, body, every method's
//! parameters against a model, length bombs).
//!
//! Must never: be compiled outside `cargo test`.

mod admin;
mod server_api;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::auth::{mint_token, Verifier};
use crate::bridge::envelope::{self, Header};
use crate::bridge::presence::{self, Report};
use crate::channel_layer::events;
use crate::channel_layer::seal::{Codec, Format};
use crate::channel_layer::wire::{self, testing::any_value};
use crate::config::JwtConfig;
use crate::handshake::{self, Head};
use crate::protocol::{self, Decoder, Version};
use crate::routing;

/// Request heads as browsers, proxies and tools send them.
const HEADS: &str = include_str!("../tests/fixtures/fuzz/heads.txt");
/// Client text frames as the original and v2 clients send them.
const FRAMES: &str = include_str!("../tests/fixtures/fuzz/frames.txt");

/// Cases per property: `CHATGATE_FUZZ_CASES`, else 512.
fn cases() -> u32 {
    std::env::var("CHATGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

/// The seed heads, with the `\n` of the file as `\r\n` on the wire; blocks
/// are separated by a line holding `---`.
fn heads() -> Vec<Vec<u8>> {
    HEADS
        .split("\n---\n")
        .map(|h| {
            let mut head = h.trim_end().replace('\n', "\r\n");
            head.push_str("\r\n\r\n");
            head.into_bytes()
        })
        .collect()
}

fn frames() -> Vec<Vec<u8>> {
    FRAMES
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// A seed changed by up to eight byte edits (replace, delete, insert).
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..8);
    (0..seeds.len(), edits).prop_map(move |(i, edits)| {
        let mut bytes = seeds[i].clone();
        for (at, byte, kind) in edits {
            let at = usize::from(at) % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    })
}

/// The Channels layer vectors (`tests/fixtures/channel_layer/vectors.json`):
/// every sealed form channels_redis wrote, and the plain msgpack and JSON.
fn layer_vectors() -> Vec<Vec<u8>> {
    let v = wire::testing::vectors();
    let mut seeds = Vec::new();
    for case in v["cases"].as_array().into_iter().flatten() {
        for key in ["msgpack", "json"] {
            seeds.push(wire::testing::hex(case[key].as_str().unwrap_or("")));
        }
        for sealed in case["sealed"].as_array().into_iter().flatten() {
            seeds.push(wire::testing::hex(sealed["hex"].as_str().unwrap_or("")));
        }
    }
    seeds
}

/// The codecs a node may run with: core and pub/sub, both formats, with
/// and without the vectors' keys.
fn layer_codecs() -> Vec<Codec> {
    let keys = ["key-one".to_string(), "key-two".to_string()];
    let ttl = Some(Duration::from_secs(70));
    let mut codecs = Vec::new();
    for format in [Format::Msgpack, Format::Json] {
        for k in [&keys[..], &[]] {
            codecs.push(Codec::new(format, k, 12, ttl));
            codecs.push(Codec::new(format, k, 0, None));
        }
    }
    codecs
}

/// Every layer decoder on `bytes`: none may panic.
fn check_layer_bytes(bytes: &[u8], codecs: &[Codec]) {
    let _ = wire::decode_msgpack(bytes);
    let _ = wire::decode_json(bytes);
    for codec in codecs {
        let _ = codec.open(bytes);
        let _ = events::decode_core(codec, bytes);
        let _ = events::decode_pubsub(codec, bytes);
    }
    if let Some((_, dict)) = events::outgoing_dict(bytes) {
        assert!(events::is_outgoing(bytes));
        assert!(matches!(dict, wire::Value::Map(_)));
    }
}

fn origins() -> Vec<String> {
    vec!["chat.example.com".into(), ".example.org".into()]
}

/// Parses `bytes` as the accept side does and checks what comes back
/// lies inside the input.
fn check_head(bytes: &[u8]) {
    if let Ok(Some((used, head))) = handshake::parse_head(bytes, &origins()) {
        assert!(used <= bytes.len());
        if let Head::Upgrade(upgrade) = head {
            assert!(upgrade.conversation_id > 0);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_as_a_request_head(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_head(&bytes);
    }

    #[test]
    fn mutated_request_heads(bytes in mutated(heads())) {
        check_head(&bytes);
    }

    #[test]
    fn a_valid_head_cut_short_asks_for_more(i in 0..heads().len(), cut in any::<u16>()) {
        let head = &heads()[i];
        let full = handshake::parse_head(head, &origins());
        prop_assert!(matches!(full, Ok(Some(_)) | Err(_)), "{full:?}");
        if let Ok(Some((used, _))) = full {
            prop_assert_eq!(used, head.len());
            let cut = usize::from(cut) % used;
            let partial = handshake::parse_head(&head[..cut], &origins());
            prop_assert!(matches!(partial, Ok(None)), "cut at {}: {:?}", cut, partial);
        }
    }

    #[test]
    fn paths_and_queries(s in ".{0,200}", id in 1i64..=i64::MAX) {
        let _ = routing::conversation_from_path(&s);
        let _ = handshake::conversation_of(&s);
        let (path, query) = routing::split_target(&s);
        prop_assert!(path.len() <= s.len());
        if let Some(q) = query {
            let _ = routing::token_from_query(q);
            let _ = routing::query_param(q, "since");
        }
        let _ = routing::origin_allowed(&s, &origins());
        let chat = format!("/ws/chat/{id}/");
        prop_assert_eq!(routing::conversation_from_path(&chat), Some(id));
        let padded = format!("/ws/chat/000{id}");
        prop_assert_eq!(routing::conversation_from_path(&padded), Some(id));
    }

    #[test]
    fn any_token_is_refused_without_a_panic(s in "[A-Za-z0-9_.=-]{0,300}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let verifier = Verifier::new(&JwtConfig::new("fuzz-secret"));
        prop_assert!(verifier.verify(Some(&s)).is_err());
        let lossy = String::from_utf8_lossy(&bytes);
        prop_assert!(verifier.verify(Some(&lossy)).is_err());
    }

    #[test]
    fn a_minted_token_names_its_user(user in 1i64..=i64::MAX) {
        let cfg = JwtConfig::new("fuzz-secret");
        let token = mint_token(&cfg, user, Duration::from_secs(60));
        prop_assert_eq!(Verifier::new(&cfg).verify(Some(&token)).map(|t| t.user_id), Ok(user));
        let other = Verifier::new(&JwtConfig::new("another-secret"));
        prop_assert!(other.verify(Some(&token)).is_err());
    }

    #[test]
    fn any_bytes_as_a_client_frame(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut decoder = Decoder::new();
        for version in [Version::V1, Version::V2] {
            let _ = decoder.decode(&bytes, version);
        }
        if let Some(text) = protocol::member_text(&bytes, "payload") {
            let start = text.as_ptr() as usize - bytes.as_ptr() as usize;
            prop_assert!(start + text.len() <= bytes.len());
        }
    }

    #[test]
    fn mutated_client_frames(bytes in mutated(frames())) {
        let mut decoder = Decoder::new();
        for version in [Version::V1, Version::V2] {
            let _ = decoder.decode(&bytes, version);
        }
        let _ = protocol::member_text(&bytes, "payload");
    }

    #[test]
    fn any_bytes_as_a_bridge_envelope(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok((_, offset)) = envelope::decode(&bytes) {
            prop_assert!(offset <= bytes.len());
        }
        for reads in [envelope::Reads::CURRENT, envelope::Reads::PREVIOUS, envelope::Reads::BEFORE_PRESENCE] {
            if let Ok(envelope::Read::Event { payload_at, .. }) = envelope::read(&bytes, reads) {
                prop_assert!(payload_at <= bytes.len());
            }
        }
        let _ = presence::decode_report(&bytes);
        let split = bytes.len() / 2;
        let _ = presence::parse_entry(&bytes[..split], &bytes[split..]);
    }

    #[test]
    fn envelopes_round_trip(
        node in prop::collection::vec(any::<u8>(), 1..=255),
        instance in any::<u64>(),
        seq in any::<u64>(),
        conversation_id in 1i64..=i64::MAX,
        except_user in proptest::option::of(1i64..=i64::MAX),
        only_user in proptest::option::of(1i64..=i64::MAX),
        v2_only in any::<bool>(),
        is_presence in any::<bool>(),
        is_disconnect in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let header = Header {
            node_id: &node,
            instance,
            seq,
            conversation_id,
            audience: crate::audience::Audience { except_user, v2_only, only_user, except_conn: None },
            presence: is_presence,
            disconnect: is_disconnect,
        };
        let mut out = Vec::new();
        envelope::encode(&header, &payload, &mut out);
        prop_assert_eq!(out.len(), envelope::header_len(&header) + payload.len());
        let (decoded, offset) = envelope::decode(&out).expect("own envelope decodes");
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(&out[offset..], &payload[..]);
        // Every strict prefix of the header is refused, never misread.
        for cut in 0..offset {
            prop_assert!(envelope::decode(&out[..cut]).is_err());
        }
        // As a later release writes it (extensible, an unknown trailing
        // field): the same header and payload.
        let mut later = Vec::new();
        let extension = envelope::Extension { fields: &payload[..payload.len().min(7)], ..Default::default() };
        envelope::encode_extensible(3, &header, extension, &payload, &mut later);
        let (decoded, offset) = envelope::decode(&later).expect("a later envelope decodes");
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(&later[offset..], &payload[..]);
    }

    #[test]
    fn presence_reports_round_trip(user in any::<i64>(), name in ".{0,64}", state in 0u8..3) {
        let report = match state {
            0 => Report::Offline,
            1 => Report::Online(false),
            _ => Report::Online(true),
        };
        let bytes = presence::encode_report(report, user, &name);
        prop_assert_eq!(presence::decode_report(&bytes), Some((report, user, name.as_str())));
    }

    #[test]
    fn any_bytes_as_a_layer_message(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_layer_bytes(&bytes, &layer_codecs());
    }

    #[test]
    fn mutated_layer_messages(bytes in mutated(layer_vectors())) {
        check_layer_bytes(&bytes, &layer_codecs());
    }

    #[test]
    fn msgpack_length_claims_reserve_nothing(
        tag in prop::sample::select(vec![0xdcu8, 0xdd, 0xde, 0xdf, 0xda, 0xdb]),
        claim in any::<u32>(),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        // A 32-bit claim the input cannot back is refused before any
        // reserve (reserving 2^32 values would abort the test binary).
        let mut bytes = vec![tag];
        if tag % 2 == 0 {
            bytes.extend_from_slice(&(claim as u16).to_be_bytes());
        } else {
            bytes.extend_from_slice(&claim.to_be_bytes());
        }
        bytes.extend_from_slice(&tail);
        let claimed = if tag % 2 == 0 { claim as u16 as usize } else { claim as usize };
        if claimed > tail.len() {
            prop_assert!(wire::decode_msgpack(&bytes).is_err());
        }
    }

    #[test]
    fn layer_values_round_trip(v in any_value()) {
        let mut packed = Vec::new();
        wire::encode_msgpack(&v, &mut packed);
        prop_assert_eq!(wire::decode_msgpack(&packed).ok(), Some(v.clone()));
        let mut json = Vec::new();
        wire::write_json(&v, &mut json);
        prop_assert_eq!(wire::decode_json(&json).ok(), Some(v.clone()));
        let mut py = Vec::new();
        wire::encode_python_json(&v, &mut py);
        prop_assert_eq!(wire::decode_json(&py).ok(), Some(v.clone()));
        for codec in layer_codecs() {
            prop_assert_eq!(codec.open(&codec.seal(&v)).ok(), Some(v.clone()));
        }
    }
}
