//! Property tests of the server API's request parsing: the key headers,
//! the content type, the body (size and JSON object), the typed parameter
//! getters and every method's parameters (`publish`, `send_message` and
//! its content, `disconnect`, `presence`, `batch` and its commands).
//! Seeds: the bodies of real calls (`tests/fixtures/fuzz/api.txt`, from
//! docs/protocol.md §10, docs/server-api.md and loadtest/soak.sh).
//!
//! Properties: never panic; the getters agree with a model that reads the
//! parameter's JSON text (an id is a run of digits that fits an i64 and is
//! not 0); each method accepts exactly what the documentation says; the
//! body reader agrees with "`Content-Length` over 1 MiB, or more than
//! 1 MiB of body: 413; a JSON object: its parameters; else 400"; length
//! bombs (a huge declared length, an endless body, deep nesting) are
//! refused after reading at most the limit.
//!
//! Must never: be compiled outside `cargo test`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Full;
use hyper::body::{Body, Frame};
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{config, mutated};
use crate::config::ApiKeys;
use crate::server_api::auth::authorized;
use crate::server_api::error::{ApiError, Refusal};
use crate::server_api::params::{self, Params, MAX_BATCH, MAX_EVENT, MAX_IDEMPOTENCY_KEY};
use crate::server_api::serve::{is_json, read_object};
use crate::server_api::MAX_BODY;

/// Bodies of real calls, one a line.
const API: &str = include_str!("../../tests/fixtures/fuzz/api.txt");

fn api_bodies() -> Vec<Vec<u8>> {
    API.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Every parameter name a method reads.
const NAMES: [&str; 11] = [
    "conversation_id",
    "sender_id",
    "user_id",
    "content",
    "idempotency_key",
    "event",
    "v2_only",
    "code",
    "commands",
    "method",
    "params",
];

/// Any JSON value, leaning to the shapes parameters take.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..70_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from(4001)),
        Just(Value::from(4003)),
        Just(Value::from(5.0)),
        ".{0,80}".prop_map(Value::from),
        Just(Value::from("info")),
        Just(Value::from("a\u{0}b")),
    ];
    leaf.prop_recursive(3, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES.to_vec()).prop_map(String::from),
        1 => Just("type".to_string()),
        1 => "[a-z_]{0,12}",
    ]
}

fn params_map() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(name(), json_value(), 0..8).prop_map(|m| m.into_iter().collect())
}

/// The model of an id: absent or null, or a JSON text of digits only that
/// fits an i64 and is above 0.
fn model_id(v: Option<&Value>) -> Result<Option<i64>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let text = v.to_string();
            let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
            match text.parse::<i64>() {
                Ok(n) if digits && n > 0 => Ok(Some(n)),
                _ => Err(()),
            }
        }
    }
}

/// The model of a code: a JSON text of digits only that fits a u16.
fn model_u16(v: Option<&Value>) -> Result<Option<u16>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let text = v.to_string();
            let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
            match text.parse::<u16>() {
                Ok(n) if digits => Ok(Some(n)),
                _ => Err(()),
            }
        }
    }
}

/// `ok` of an answer, without the message.
fn shape<T: PartialEq + std::fmt::Debug>(r: Result<T, ApiError>) -> Result<T, ()> {
    r.map_err(|e| assert_eq!(e.code(), "bad_request", "{e:?}"))
}

fn check_getters(m: &Map<String, Value>) -> Result<(), TestCaseError> {
    let p = Params(m);
    for name in NAMES.iter().chain(["type", "absent"].iter()) {
        let v = m.get(*name);
        prop_assert_eq!(shape(p.opt_id(name)), model_id(v), "{}", name);
        prop_assert_eq!(shape(p.opt_u16(name)), model_u16(v), "{}", name);
        let flag = match v {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            _ => Err(()),
        };
        prop_assert_eq!(shape(p.flag(name)), flag);
        let text = match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            _ => Err(()),
        };
        prop_assert_eq!(shape(p.opt_text(name)), text);
        prop_assert_eq!(p.object(name).is_ok(), matches!(v, Some(Value::Object(_))));
        prop_assert_eq!(p.array(name).is_ok(), matches!(v, Some(Value::Array(_))));
    }
    Ok(())
}

/// Every method's parameters against the documented rules.
fn check_methods(m: &Map<String, Value>) -> Result<(), TestCaseError> {
    let p = Params(m);
    let id = |n: &str| model_id(m.get(n));
    // publish
    let event_ok = match m.get("event") {
        Some(Value::Object(e)) => matches!(e.get("type"), Some(Value::String(_))),
        _ => false,
    };
    let v2_ok = matches!(m.get("v2_only"), None | Some(Value::Null | Value::Bool(_)));
    let size_ok = m
        .get("event")
        .is_some_and(|e| serde_json::to_vec(e).unwrap().len() <= MAX_EVENT);
    let publish = params::publish_params(&p);
    let expected = matches!(id("conversation_id"), Ok(Some(_))) && event_ok && v2_ok && size_ok;
    prop_assert_eq!(publish.is_ok(), expected, "publish {:?}", publish);
    if let Ok(call) = publish {
        prop_assert_eq!(call.payload, serde_json::to_vec(&m["event"]).unwrap());
    }
    // send_message (and its content)
    match params::send_message_params(&p) {
        Ok(call) => {
            prop_assert!(call.conversation_id > 0 && call.sender_id > 0);
            if let Some(key) = call.key {
                let n = key.chars().count();
                prop_assert!((1..=MAX_IDEMPOTENCY_KEY).contains(&n) && !key.contains('\0'));
            }
            if let Ok(content) = params::checked_content(call.raw) {
                prop_assert!(!content.is_empty() && call.raw.contains(content));
            }
        }
        Err(e) => prop_assert_eq!(e.code(), "bad_request"),
    }
    // disconnect
    let code = model_u16(m.get("code"));
    let conv = id("conversation_id");
    let expected = match (id("user_id"), conv, code) {
        (Ok(Some(_)), Ok(c), Ok(code)) => {
            let code = code.unwrap_or(if c.is_some() { 4003 } else { 4001 });
            [4001, 4003].contains(&code).then_some(code)
        }
        _ => None,
    };
    prop_assert_eq!(params::disconnect_params(&p).ok().map(|d| d.code), expected);
    // batch and its commands
    let commands = params::batch_commands(&p);
    let expected = matches!(m.get("commands"), Some(Value::Array(a)) if a.len() <= MAX_BATCH);
    prop_assert_eq!(commands.is_ok(), expected);
    let empty = Map::new();
    for command in commands.unwrap_or_default() {
        if let Ok((method, params)) = params::command_of(command, &empty) {
            prop_assert_eq!(Some(&Value::from(method)), command.get("method"));
            check_getters(params)?;
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// `body` with `Content-Length: declared` (if any), through the reader.
fn read<B>(declared: Option<&str>, body: B) -> Result<Map<String, Value>, Refusal>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut request = Request::new(body);
    if let Some(v) = declared.and_then(|d| HeaderValue::from_str(d).ok()) {
        request
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, v);
    }
    runtime().block_on(read_object(request))
}

/// The reader's model on a whole body.
fn model_body(declared: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    let claim = declared.and_then(|d| d.trim().parse::<u64>().ok());
    if claim.is_some_and(|n| n > MAX_BODY as u64) || body.len() > MAX_BODY {
        return Err(Refusal::TooLarge);
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Refusal::BadBody("the body must be a JSON object")),
    }
}

fn check_body(declared: Option<&str>, body: Vec<u8>) -> Result<(), TestCaseError> {
    // Only what a header can carry is sent (and modelled).
    let declared = declared.filter(|d| HeaderValue::from_str(d).is_ok());
    let expected = model_body(declared, &body);
    let got = read(declared, Full::new(Bytes::from(body)));
    prop_assert_eq!(&got, &expected);
    if let Ok(m) = got {
        check_getters(&m)?;
        check_methods(&m)?;
    }
    Ok(())
}

fn declared() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (0u64..200).prop_map(|n| Some(n.to_string())),
        any::<u64>().prop_map(|n| Some(n.to_string())),
        Just(Some((MAX_BODY + 1).to_string())),
        "[ 0-9a-z+-]{0,24}".prop_map(Some),
    ]
}

/// The key model: `Authorization: apikey <KEY>` (scheme in any case, the
/// key trimmed) when that header has the scheme, else `X-API-Key`; empty
/// is no key.
fn model_key(authorization: Option<&[u8]>, x_api_key: Option<&[u8]>) -> Option<Vec<u8>> {
    let from_auth = authorization.and_then(|v| {
        let space = v.iter().position(|b| *b == b' ')?;
        let (scheme, rest) = v.split_at(space);
        scheme
            .eq_ignore_ascii_case(b"apikey")
            .then(|| rest.trim_ascii().to_vec())
    });
    from_auth
        .or_else(|| x_api_key.map(|v| v.trim_ascii().to_vec()))
        .filter(|k| !k.is_empty())
}

fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        "(apikey|ApiKey|APIKEY|Bearer|apikey ) {0,2}(old-key|new-key|other|)[ \t]{0,2}"
            .prop_map(|s| Some(s.into_bytes())),
        prop::collection::vec(0x20u8..0x7f, 0..40).prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn api_params_match_the_text_model(m in params_map()) {
        check_getters(&m)?;
    }

    #[test]
    fn api_method_params_follow_the_documented_rules(m in params_map()) {
        check_methods(&m)?;
    }

    #[test]
    fn any_bytes_as_an_api_body(declared in declared(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_body(declared.as_deref(), body)?;
    }

    #[test]
    fn mutated_api_bodies(declared in declared(), body in mutated(api_bodies())) {
        check_body(declared.as_deref(), body)?;
    }

    #[test]
    fn api_keys_match_the_model(auth in header_value(), x in header_value()) {
        let keys = ApiKeys(vec!["old-key".into(), "new-key".into()]);
        let mut headers = HeaderMap::new();
        for (name, v) in [("authorization", &auth), ("x-api-key", &x)] {
            if let Some(v) = v.as_deref().and_then(|v| HeaderValue::from_bytes(v).ok()) {
                headers.insert(name, v);
            }
        }
        let a = headers.get("authorization").map(|v| v.as_bytes());
        let k = headers.get("x-api-key").map(|v| v.as_bytes());
        let expected = model_key(a, k).is_some_and(|k| keys.0.iter().any(|key| key.as_bytes() == k));
        prop_assert_eq!(authorized(&headers, &keys), expected);
    }

    #[test]
    fn api_content_types_match_the_model(v in "[ -~]{0,40}") {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&v) {
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        let expected = headers.contains_key(http::header::CONTENT_TYPE)
            && v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json");
        prop_assert_eq!(is_json(&headers), expected);
    }
}

#[test]
fn the_seed_bodies_parse_as_their_methods_expect() {
    let bodies = api_bodies();
    for body in &bodies {
        let m = read(None, Full::new(Bytes::from(body.clone()))).expect("a seed is an object");
        check_methods(&m).expect("the rules hold");
    }
    let m = |i: usize| read(None, Full::new(Bytes::from(bodies[i].clone()))).unwrap();
    assert!(params::publish_params(&Params(&m(1))).is_ok());
    assert!(params::send_message_params(&Params(&m(4))).is_ok());
    assert_eq!(
        params::disconnect_params(&Params(&m(7))).unwrap().code,
        4001
    );
    assert_eq!(params::batch_commands(&Params(&m(10))).unwrap().len(), 3);
    assert!(params::send_message_params(&Params(&m(12))).is_err());
}

/// A body that never ends: 64 KiB of spaces per frame, counting frames.
struct Endless(Arc<AtomicUsize>);

static CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];

impl Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }
}

#[test]
fn api_length_bombs_are_refused_after_at_most_the_limit() {
    // A declared length of any size: refused before a byte is read.
    for claim in [u64::MAX, MAX_BODY as u64 + 1, 1 << 40] {
        let polled = Arc::new(AtomicUsize::new(0));
        let got = read(Some(&claim.to_string()), Endless(polled.clone()));
        assert_eq!(got, Err(Refusal::TooLarge));
        assert_eq!(polled.load(Ordering::Relaxed), 0, "{claim}: body read");
    }
    // No length, an endless (chunked) body: cut at the limit.
    let polled = Arc::new(AtomicUsize::new(0));
    assert_eq!(read(None, Endless(polled.clone())), Err(Refusal::TooLarge));
    assert!(polled.load(Ordering::Relaxed) <= MAX_BODY / CHUNK.len() + 1);
    // A small declared length does not let a longer body through.
    let polled = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        read(Some("2"), Endless(polled.clone())),
        Err(Refusal::TooLarge)
    );
    // Nesting as deep as the limit allows: refused, not a stack overflow.
    let deep = vec![b'['; MAX_BODY];
    let got = read(None, Full::new(Bytes::from(deep)));
    assert_eq!(got, Err(Refusal::BadBody("the body must be a JSON object")));
    let deep_object = format!("{{\"commands\":{}", "[".repeat(100_000));
    assert!(read(None, Full::new(Bytes::from(deep_object))).is_err());
    // A batch one over the limit, and an event one byte over 64 KiB.
    let commands = vec![serde_json::json!({"method": "info"}); MAX_BATCH + 1];
    let batch = serde_json::json!({ "commands": commands });
    assert!(params::batch_commands(&Params(batch.as_object().unwrap())).is_err());
    let pad = "x".repeat(MAX_EVENT - r#"{"type":"t","p":""}"#.len());
    let fits = serde_json::json!({"conversation_id": 1, "event": {"type": "t", "p": pad}});
    assert!(params::publish_params(&Params(fits.as_object().unwrap())).is_ok());
    let over =
        serde_json::json!({"conversation_id": 1, "event": {"type": "t", "p": format!("{pad}x")}});
    assert!(params::publish_params(&Params(over.as_object().unwrap())).is_err());
}
