//! The wire vocabulary: decoding client frames and encoding server events
//! (PROTOCOL.md sections 2–4).
//!
//! Owns: [`ReplyError`] (the `{"type":"error"}` replies, each defined once),
//! [`Decoder`] / [`ClientMessage`] (client text frames → validated messages,
//! with the Python semantics of the original `ChatConsumer`), and the
//! `encode_*` functions plus the constant frames for server events.
//!
//! Must never: do I/O, block, or allocate on the decode path of a common
//! message (one [`Decoder`] per shard reuses its scratch copy, simd-json's
//! buffers and its tape; `&str`s borrow from the scratch copy, escaped or
//! not). Encoders only ever append to the caller's `Vec<u8>`: the caller has
//! reserved frame-header room in front.

use std::io::Write as _;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::store::{MessageId, UserId, UserProfile};

/// Longest accepted `chat_message` content, in Unicode code points after stripping.
pub const MAX_CONTENT_CHARS: usize = 5000;

/// Sent first on every accepted, authenticated, authorised socket.
pub const CONNECTION_ESTABLISHED: &[u8] =
    br#"{"type":"connection_established","message":"Connected to chat"}"#;

/// The application-level keep-alive, sent every ping interval.
pub const PING: &[u8] = br#"{"type":"ping"}"#;

// ---------------------------------------------------------------------------
// Reply errors
// ---------------------------------------------------------------------------

/// An error reply: sent only to the offending socket, which stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReplyError {
    #[error("Invalid JSON")]
    InvalidJson,
    #[error("Unknown message type")]
    UnknownType,
    #[error("Invalid message format")]
    InvalidFormat,
    #[error("Empty message")]
    EmptyMessage,
    #[error("Message too long")]
    MessageTooLong,
    #[error("Message ID required")]
    MessageIdRequired,
    #[error("Failed to delete message")]
    DeleteFailed,
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("Failed to send message")]
    SendFailed,
    #[error("Binary frames are not supported")]
    BinaryNotSupported,
}

impl ReplyError {
    /// Every variant, e.g. to pre-register metric labels.
    pub const ALL: [ReplyError; 10] = [
        Self::InvalidJson,
        Self::UnknownType,
        Self::InvalidFormat,
        Self::EmptyMessage,
        Self::MessageTooLong,
        Self::MessageIdRequired,
        Self::DeleteFailed,
        Self::RateLimited,
        Self::SendFailed,
        Self::BinaryNotSupported,
    ];

    /// The `message` of the error reply, exactly as the original backend sent it.
    pub fn text(self) -> &'static str {
        match self {
            Self::InvalidJson => "Invalid JSON",
            Self::UnknownType => "Unknown message type",
            Self::InvalidFormat => "Invalid message format",
            Self::EmptyMessage => "Empty message",
            Self::MessageTooLong => "Message too long",
            Self::MessageIdRequired => "Message ID required",
            Self::DeleteFailed => "Failed to delete message",
            Self::RateLimited => "Rate limit exceeded",
            Self::SendFailed => "Failed to send message",
            Self::BinaryNotSupported => "Binary frames are not supported",
        }
    }

    /// A short snake_case label for metrics (bounded cardinality).
    pub fn kind(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidFormat => "invalid_format",
            Self::EmptyMessage => "empty_message",
            Self::MessageTooLong => "message_too_long",
            Self::MessageIdRequired => "message_id_required",
            Self::DeleteFailed => "delete_failed",
            Self::RateLimited => "rate_limited",
            Self::SendFailed => "send_failed",
            Self::BinaryNotSupported => "binary_not_supported",
        }
    }

    /// Appends `{"type":"error","message":"<text>"}` (no text needs escaping).
    pub fn encode(self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"type":"error","message":""#);
        out.extend_from_slice(self.text().as_bytes());
        out.extend_from_slice(br#""}"#);
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// A validated client message. `content` borrows from the [`Decoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `chat_message`; `content` is stripped, non-empty, at most
    /// [`MAX_CONTENT_CHARS`] code points and free of U+0000.
    Chat { content: &'a str },
    /// `delete_message`; `message_id` is positive.
    Delete { message_id: MessageId },
    /// `typing`; `is_typing` defaults to false.
    Typing { is_typing: bool },
}

/// Decodes client text frames. One per shard, reused for every frame.
///
/// Parsing is simd-json's `fill_tape_padded` + `Deserializer::from_tape`
/// rather than `simd_json::serde::from_slice_with_buffers`: the latter
/// allocates a fresh tape on every call, this keeps it (and skips simd-json's
/// internal padded copy of the input, since `scratch` carries the padding).
pub struct Decoder {
    buffers: simd_json::Buffers,
    /// The payload plus `simd_json::INPUT_PADDING` bytes; simd-json unescapes
    /// strings in place here, so decoded `&str`s borrow from it.
    scratch: Vec<u8>,
    /// simd-json's tape, kept empty between calls so its allocation is reused.
    tape: simd_json::Tape<'static>,
    /// Chat content decoded by the slow path (serde_json), which cannot lend
    /// from `scratch`.
    spill: String,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with buffers sized for a typical frame; they grow as needed.
    pub fn new() -> Self {
        Self {
            buffers: simd_json::Buffers::new(512),
            scratch: Vec::with_capacity(512 + simd_json::INPUT_PADDING),
            tape: simd_json::Tape(Vec::with_capacity(64)),
            spill: String::new(),
        }
    }

    /// Decodes and validates one text frame.
    ///
    /// The fast path is one simd-json parse. Only when simd-json rejects the
    /// frame does serde_json look at it again, to tell invalid JSON from
    /// numbers simd-json cannot represent (integers beyond 64 bits).
    pub fn decode<'a>(&'a mut self, payload: &[u8]) -> Result<ClientMessage<'a>, ReplyError> {
        let Self {
            buffers,
            scratch,
            tape,
            spill,
        } = self;
        scratch.clear();
        scratch.extend_from_slice(payload);
        scratch.resize(payload.len() + simd_json::INPUT_PADDING, b' ');
        let mut filled: simd_json::Tape<'a> =
            std::mem::replace(tape, simd_json::Tape(Vec::new())).reset();
        if simd_json::fill_tape_padded(scratch, payload.len(), buffers, &mut filled).is_err() {
            *tape = filled.reset();
            return decode_slow(payload, spill);
        }
        let mut de = simd_json::Deserializer::from_tape(filled);
        let frame = Frame::deserialize(&mut de);
        *tape = de.into_tape().reset();
        frame.map_err(|_| ReplyError::InvalidJson)?.classify()
    }
}

/// Classifies a frame simd-json rejected. Allocates; rare.
#[cold]
fn decode_slow<'s>(payload: &[u8], spill: &'s mut String) -> Result<ClientMessage<'s>, ReplyError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| ReplyError::InvalidJson)?;
    match Frame::from_value(&value).classify()? {
        ClientMessage::Chat { content } => {
            spill.clear();
            spill.push_str(content);
            Ok(ClientMessage::Chat { content: spill })
        }
        ClientMessage::Delete { message_id } => Ok(ClientMessage::Delete { message_id }),
        ClientMessage::Typing { is_typing } => Ok(ClientMessage::Typing { is_typing }),
    }
}

/// Strips leading and trailing white space with Python `str.strip()`
/// semantics (every char for which `str.isspace()` is true).
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

/// Python's `str.isspace()` for one char (unlike `char::is_whitespace`, it
/// includes U+001C–U+001F and excludes nothing Python strips).
fn is_python_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Applies the `chat_message` content rules in the original's order: strip,
/// empty, too long, then U+0000. Returns the stripped content.
pub fn validate_content(raw: &str) -> Result<&str, ReplyError> {
    let content = python_strip(raw);
    if content.is_empty() {
        return Err(ReplyError::EmptyMessage);
    }
    if exceeds_max_chars(content) {
        return Err(ReplyError::MessageTooLong);
    }
    if content.as_bytes().contains(&0) {
        return Err(ReplyError::InvalidFormat);
    }
    Ok(content)
}

/// Whether `s` has more than [`MAX_CONTENT_CHARS`] code points; counts only
/// when the byte length cannot decide (a char is 1 to 4 bytes).
fn exceeds_max_chars(s: &str) -> bool {
    let len = s.len();
    len > MAX_CONTENT_CHARS
        && (len > 4 * MAX_CONTENT_CHARS || s.chars().count() > MAX_CONTENT_CHARS)
}

/// One JSON value, reduced to what the rules look at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Json<'a> {
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
    fn is_falsy(self) -> bool {
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

    fn from_value(v: &serde_json::Value) -> Json<'_> {
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

/// The fields of a client frame the rules look at (later duplicates win,
/// as in Python's `json.loads`).
#[derive(Default)]
struct Fields<'a> {
    kind: Option<Json<'a>>,
    content: Option<Json<'a>>,
    message_id: Option<Json<'a>>,
    is_typing: Option<Json<'a>>,
}

/// A parsed client frame: an object, or any other valid JSON value.
enum Frame<'a> {
    Object(Fields<'a>),
    NotObject,
}

impl<'a> Frame<'a> {
    fn from_value(v: &'a serde_json::Value) -> Self {
        let Some(map) = v.as_object() else {
            return Frame::NotObject;
        };
        let get = |k: &str| map.get(k).map(Json::from_value);
        Frame::Object(Fields {
            kind: get("type"),
            content: get("content"),
            message_id: get("message_id"),
            is_typing: get("is_typing"),
        })
    }

    fn classify(self) -> Result<ClientMessage<'a>, ReplyError> {
        let Frame::Object(f) = self else {
            return Err(ReplyError::UnknownType);
        };
        match f.kind {
            Some(Json::Str("chat_message")) => chat(f.content),
            Some(Json::Str("delete_message")) => delete(f.message_id),
            Some(Json::Str("typing")) => typing(f.is_typing),
            _ => Err(ReplyError::UnknownType),
        }
    }
}

/// `data.get('content', '').strip()` and the content rules.
fn chat(content: Option<Json<'_>>) -> Result<ClientMessage<'_>, ReplyError> {
    match content {
        None => Err(ReplyError::EmptyMessage),
        Some(Json::Str(raw)) => {
            validate_content(raw).map(|content| ClientMessage::Chat { content })
        }
        Some(_) => Err(ReplyError::InvalidFormat),
    }
}

/// `if not message_id: ...`, then a positive integer or decimal string.
fn delete(message_id: Option<Json<'_>>) -> Result<ClientMessage<'static>, ReplyError> {
    let id = message_id.unwrap_or(Json::Null);
    if id.is_falsy() {
        return Err(ReplyError::MessageIdRequired);
    }
    let message_id = match id {
        Json::Int(n) if n > 0 => Some(n),
        Json::Str(s) => parse_decimal_id(s),
        _ => None,
    };
    message_id
        .map(|message_id| ClientMessage::Delete { message_id })
        .ok_or(ReplyError::DeleteFailed)
}

/// ASCII digits only (leading zeros allowed), positive, fits `i64`.
fn parse_decimal_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|&n| n > 0)
}

/// `is_typing`: absent → false, a bool → it, anything else is malformed.
fn typing(is_typing: Option<Json<'_>>) -> Result<ClientMessage<'static>, ReplyError> {
    match is_typing {
        None => Ok(ClientMessage::Typing { is_typing: false }),
        Some(Json::Bool(is_typing)) => Ok(ClientMessage::Typing { is_typing }),
        Some(_) => Err(ReplyError::InvalidFormat),
    }
}

// Serde plumbing: visitors that accept every JSON type, so the single
// simd-json pass never fails on a valid document and the rules above decide.

enum Key {
    Type,
    Content,
    MessageId,
    IsTyping,
    Other,
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "type" => Key::Type,
            "content" => Key::Content,
            "message_id" => Key::MessageId,
            "is_typing" => Key::IsTyping,
            _ => Key::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

/// Consumes a sequence, reporting whether it was empty.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<bool, A::Error> {
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

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Frame<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Type => &mut f.kind,
                Key::Content => &mut f.content,
                Key::MessageId => &mut f.message_id,
                Key::IsTyping => &mut f.is_typing,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(Frame::Object(f))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq).map(|_| Frame::NotObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Frame::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Frame::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Frame::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Frame::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Frame::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Frame::NotObject)
    }
}

impl<'de> Deserialize<'de> for Frame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FrameVisitor)
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// `{"id":1,"username":"johndoe","first_name":"John","last_name":"Doe"}`,
/// computed once per connection and embedded in every `new_message`.
pub fn sender_json(p: &UserProfile) -> Bytes {
    let text_len = p.username.len() + p.first_name.len() + p.last_name.len();
    let mut out = Vec::with_capacity(72 + text_len);
    out.extend_from_slice(br#"{"id":"#);
    push_i64(&mut out, p.id);
    out.extend_from_slice(br#","username":"#);
    write_json_str(&mut out, &p.username);
    out.extend_from_slice(br#","first_name":"#);
    write_json_str(&mut out, &p.first_name);
    out.extend_from_slice(br#","last_name":"#);
    write_json_str(&mut out, &p.last_name);
    out.push(b'}');
    Bytes::from(out)
}

/// Appends `{"type":"new_message","message":{"id":…,"sender":…,"content":…,"timestamp":…}}`.
/// `sender_json` is the output of [`sender_json`], inserted verbatim.
pub fn encode_new_message(
    out: &mut Vec<u8>,
    id: MessageId,
    sender_json: &[u8],
    content: &str,
    timestamp: DateTime<Utc>,
) {
    out.reserve(110 + sender_json.len() + content.len());
    out.extend_from_slice(br#"{"type":"new_message","message":{"id":"#);
    push_i64(out, id);
    out.extend_from_slice(br#","sender":"#);
    out.extend_from_slice(sender_json);
    out.extend_from_slice(br#","content":"#);
    write_json_str(out, content);
    out.extend_from_slice(br#","timestamp":""#);
    write_timestamp(out, timestamp);
    out.extend_from_slice(br#""}}"#);
}

/// Appends `{"type":"typing","user_id":2,"username":"janedoe","is_typing":true}`.
pub fn encode_typing(out: &mut Vec<u8>, user_id: UserId, username: &str, is_typing: bool) {
    out.reserve(70 + username.len());
    out.extend_from_slice(br#"{"type":"typing","user_id":"#);
    push_i64(out, user_id);
    out.extend_from_slice(br#","username":"#);
    write_json_str(out, username);
    out.extend_from_slice(if is_typing {
        br#","is_typing":true}"#
    } else {
        br#","is_typing":false}"#
    });
}

/// Appends `{"type":"message_deleted","message_id":123}`.
pub fn encode_message_deleted(out: &mut Vec<u8>, message_id: MessageId) {
    out.extend_from_slice(br#"{"type":"message_deleted","message_id":"#);
    push_i64(out, message_id);
    out.push(b'}');
}

/// Appends the timestamp as Django REST framework renders it, unquoted:
/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` — six fraction digits only when the
/// microseconds are not zero (Python `isoformat`); nanoseconds are truncated.
pub fn write_timestamp(out: &mut Vec<u8>, ts: DateTime<Utc>) {
    let year = ts.year();
    match u32::try_from(year) {
        Ok(y) if y <= 9999 => push_digits(out, y, 4),
        _ => {
            let _ = write!(out, "{year:04}");
        }
    }
    out.push(b'-');
    push_digits(out, ts.month(), 2);
    out.push(b'-');
    push_digits(out, ts.day(), 2);
    out.push(b'T');
    push_digits(out, ts.hour(), 2);
    out.push(b':');
    push_digits(out, ts.minute(), 2);
    out.push(b':');
    push_digits(out, ts.second(), 2);
    // A leap second shows as nanosecond >= 1e9 in chrono; Python has none.
    let micros = ts.nanosecond() % 1_000_000_000 / 1_000;
    if micros != 0 {
        out.push(b'.');
        push_digits(out, micros, 6);
    }
    out.push(b'Z');
}

/// Appends `v` as exactly `width` (at most 6) zero-padded decimal digits.
fn push_digits(out: &mut Vec<u8>, mut v: u32, width: usize) {
    let mut buf = [b'0'; 6];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Appends `n` in decimal.
fn push_i64(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// For each byte: 0 if it is copied as is, else the char after the `\`
/// (`u` for `\u00XX`). The same escapes as serde_json; non-ASCII is UTF-8.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` as a quoted, escaped JSON string (output equals serde_json's).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[usize::from(b)];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        push_escape(out, b, esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn push_escape(out: &mut Vec<u8>, b: u8, esc: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if esc == b'u' {
        let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
        out.extend_from_slice(b"\\u00");
        out.extend_from_slice(&hex);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::{json, Value};

    /// `[hex(c) for c in range(0x110000) if chr(c).isspace()]`, Python 3.11.
    const PY_SPACE: [u32; 29] = [
        0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
        0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
        0x202f, 0x205f, 0x3000,
    ];

    /// An owned [`ClientMessage`], so results outlive the decoder.
    #[derive(Debug, PartialEq)]
    enum Got {
        Chat(String),
        Delete(i64),
        Typing(bool),
    }

    fn got(m: ClientMessage<'_>) -> Got {
        match m {
            ClientMessage::Chat { content } => Got::Chat(content.to_owned()),
            ClientMessage::Delete { message_id } => Got::Delete(message_id),
            ClientMessage::Typing { is_typing } => Got::Typing(is_typing),
        }
    }

    fn dec(payload: impl AsRef<[u8]>) -> Result<Got, ReplyError> {
        Decoder::new().decode(payload.as_ref()).map(got)
    }

    fn chat_frame(content: &str) -> String {
        json!({"type": "chat_message", "content": content}).to_string()
    }

    fn chat(s: &str) -> Result<Got, ReplyError> {
        Ok(Got::Chat(s.to_owned()))
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("encoder output is JSON")
    }

    /// xorshift64: deterministic pseudo-random numbers, no extra crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    // --- reply errors -----------------------------------------------------

    #[test]
    fn reply_error_texts_are_the_originals() {
        use ReplyError::*;
        let expected = [
            (InvalidJson, "Invalid JSON"),
            (UnknownType, "Unknown message type"),
            (InvalidFormat, "Invalid message format"),
            (EmptyMessage, "Empty message"),
            (MessageTooLong, "Message too long"),
            (MessageIdRequired, "Message ID required"),
            (DeleteFailed, "Failed to delete message"),
            (RateLimited, "Rate limit exceeded"),
            (SendFailed, "Failed to send message"),
            (BinaryNotSupported, "Binary frames are not supported"),
        ];
        assert_eq!(expected.map(|(e, _)| e), ReplyError::ALL);
        for (err, text) in expected {
            assert_eq!(err.text(), text);
            assert_eq!(err.to_string(), text);
            let mut out = b"HDR".to_vec();
            err.encode(&mut out);
            assert_eq!(&out[..3], b"HDR", "encode only appends");
            assert_eq!(parse(&out[3..]), json!({"type": "error", "message": text}));
        }
    }

    #[test]
    fn reply_error_kinds_are_unique_snake_case() {
        let kinds: Vec<_> = ReplyError::ALL.iter().map(|e| e.kind()).collect();
        for (i, k) in kinds.iter().enumerate() {
            assert!(
                k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{k}"
            );
            assert!(!kinds[..i].contains(k), "duplicate {k}");
        }
    }

    // --- envelope: JSON validity and type ----------------------------------

    #[test]
    fn invalid_json() {
        for p in [
            "",
            " ",
            "{",
            "{\"type\":\"typing\"",
            "{\"type\":\"typing\",}",
            "{'type':'typing'}",
            "nul",
            "NaN",
            "{\"type\":\"typing\",\"is_typing\":Infinity}",
            "{\"type\":\"chat_message\",\"content\":\"hi\"} x",
            "{\"type\":\"chat_message\",\"content\":\"hi\"}{}",
            "1 2",
            "\u{feff}{\"type\":\"typing\"}",
            "{\"type\":\"chat_message\",\"content\":\"a\tb\"}",
            "{\"type\":\"chat_message\",\"content\":\"\\ud800\"}",
            "{\"type\":\"chat_message\",\"content\":\"\\x41\"}",
            "{\"type\":\"delete_message\",\"message_id\":01}",
            "{\"type\":\"delete_message\",\"message_id\":1e999}",
        ] {
            assert_eq!(dec(p), Err(ReplyError::InvalidJson), "{p:?}");
        }
        assert_eq!(
            dec(b"{\"type\":\"chat_message\",\"content\":\"\xff\"}"),
            Err(ReplyError::InvalidJson)
        );
    }

    #[test]
    fn valid_json_that_is_not_a_known_type() {
        for p in [
            "[]",
            "[{\"type\":\"typing\"}]",
            "1",
            "-1.5",
            "\"chat_message\"",
            "null",
            "true",
            "{}",
            "{\"content\":\"hi\"}",
            "{\"type\":null}",
            "{\"type\":1}",
            "{\"type\":true}",
            "{\"type\":[\"typing\"]}",
            "{\"type\":{\"typing\":1}}",
            "{\"type\":\"\"}",
            "{\"type\":\"Chat_message\"}",
            "{\"type\":\"typing \"}",
            "{\"type\":\"new_message\"}",
            " {\"type\":\"ping\"} ",
        ] {
            assert_eq!(dec(p), Err(ReplyError::UnknownType), "{p:?}");
        }
    }

    #[test]
    fn extra_fields_order_and_duplicates() {
        let p =
            r#"{"x":[1,{"y":[null,"z"]}],"content":"hi","n":-1.5e3,"type":"chat_message","o":{}}"#;
        assert_eq!(dec(p), chat("hi"));
        let p = r#"{"type":"typing","is_typing":false,"is_typing":true}"#;
        assert_eq!(
            dec(p),
            Ok(Got::Typing(true)),
            "later duplicate wins, as in Python"
        );
        let p = r#"{"type":"typing","type":"chat_message","content":"x"}"#;
        assert_eq!(dec(p), chat("x"));
        let p = r#"{"type":"chat_message","content":5,"content":"ok"}"#;
        assert_eq!(dec(p), chat("ok"));
    }

    // --- chat_message ------------------------------------------------------

    #[test]
    fn chat_message_content_rules() {
        assert_eq!(dec(chat_frame("  Hello world \n")), chat("Hello world"));
        assert_eq!(
            dec(r#"{"type":"chat_message"}"#),
            Err(ReplyError::EmptyMessage)
        );
        assert_eq!(dec(chat_frame("")), Err(ReplyError::EmptyMessage));
        assert_eq!(dec(chat_frame(" \t\r\n ")), Err(ReplyError::EmptyMessage));
        for bad in ["null", "5", "1.5", "true", "[]", "[\"hi\"]", "{}"] {
            let p = format!(r#"{{"type":"chat_message","content":{bad}}}"#);
            assert_eq!(dec(&p), Err(ReplyError::InvalidFormat), "{p}");
        }
    }

    #[test]
    fn escaped_strings_decode_borrowed() {
        let p =
            r#"{"type":"chat_message","content":"he said \"hi\"\n\u00e9 \ud83d\ude00 \\ \/ \t"}"#;
        let mut d = Decoder::new();
        let m = d.decode(p.as_bytes()).unwrap();
        let ClientMessage::Chat { content } = m else {
            panic!("{m:?}")
        };
        assert_eq!(content, "he said \"hi\"\né 😀 \\ /");
        let content_at = content.as_ptr() as usize;
        let scratch = d.scratch.as_ptr_range();
        let scratch = scratch.start as usize..scratch.end as usize;
        assert!(scratch.contains(&content_at), "borrowed from scratch");
        let p = r#"{"\u0074ype":"chat\u005fmessage","cont\u0065nt":"\u0041"}"#;
        assert_eq!(dec(p), chat("A"));
    }

    #[test]
    fn python_whitespace_set_is_exact() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(
                is_python_space(c),
                PY_SPACE.contains(&(c as u32)),
                "{:#x}",
                c as u32
            );
        }
    }

    #[test]
    fn python_strip_semantics() {
        let all: String = PY_SPACE.iter().filter_map(|&c| char::from_u32(c)).collect();
        assert_eq!(
            python_strip(&format!("{all}a {all} b{all}")),
            format!("a {all} b")
        );
        assert_eq!(python_strip(&all), "");
        for keep in ['\u{200b}', '\u{feff}', '\u{180e}', '\u{0}', 'x'] {
            let s = format!(" {keep} ");
            assert_eq!(python_strip(&s), keep.to_string(), "{:#x}", keep as u32);
        }
        let framed = chat_frame("\u{1c}\u{1f}\u{85}\u{a0}\u{2028}\u{2029}\u{3000} hi \u{b}\u{c}");
        assert_eq!(dec(framed), chat("hi"));
        assert_eq!(dec(chat_frame("\u{200b}")), chat("\u{200b}"));
        assert_eq!(
            dec(chat_frame("\u{3000}\u{2029}")),
            Err(ReplyError::EmptyMessage)
        );
    }

    #[test]
    fn content_length_counts_code_points_after_strip() {
        for unit in ["a", "é", "€", "😀"] {
            let at_limit = unit.repeat(MAX_CONTENT_CHARS);
            assert_eq!(dec(chat_frame(&at_limit)), chat(&at_limit), "{unit}");
            let padded = format!("  \u{3000}{at_limit}\n\u{a0}");
            assert_eq!(dec(chat_frame(&padded)), chat(&at_limit), "{unit}");
            let over = unit.repeat(MAX_CONTENT_CHARS + 1);
            assert_eq!(
                dec(chat_frame(&over)),
                Err(ReplyError::MessageTooLong),
                "{unit}"
            );
        }
        let mixed = format!("{}{}", "é".repeat(2500), "a".repeat(2501));
        assert_eq!(validate_content(&mixed), Err(ReplyError::MessageTooLong));
        assert_eq!(
            validate_content(&mixed[2..]).map(str::len),
            Ok(mixed.len() - 2)
        );
    }

    #[test]
    fn nul_is_invalid_format_after_length_checks() {
        assert_eq!(dec(chat_frame("a\u{0}b")), Err(ReplyError::InvalidFormat));
        assert_eq!(dec(chat_frame("\u{0}")), Err(ReplyError::InvalidFormat));
        assert_eq!(dec(chat_frame(" \u{0} ")), Err(ReplyError::InvalidFormat));
        let long = format!("\u{0}{}", "a".repeat(MAX_CONTENT_CHARS));
        assert_eq!(dec(chat_frame(&long)), Err(ReplyError::MessageTooLong));
    }

    // --- delete_message ----------------------------------------------------

    #[test]
    fn delete_message_id_variants() {
        use ReplyError::{DeleteFailed as Failed, MessageIdRequired as Required};
        let cases: &[(&str, Result<Got, ReplyError>)] = &[
            ("123", Ok(Got::Delete(123))),
            ("\"123\"", Ok(Got::Delete(123))),
            ("\"007\"", Ok(Got::Delete(7))),
            ("9223372036854775807", Ok(Got::Delete(i64::MAX))),
            ("\"9223372036854775807\"", Ok(Got::Delete(i64::MAX))),
            ("\"\\u0031\"", Ok(Got::Delete(1))),
            ("null", Err(Required)),
            ("0", Err(Required)),
            ("-0", Err(Required)),
            ("0.0", Err(Required)),
            ("-0.0", Err(Required)),
            ("0e5", Err(Required)),
            ("\"\"", Err(Required)),
            ("false", Err(Required)),
            ("[]", Err(Required)),
            ("{}", Err(Required)),
            ("-1", Err(Failed)),
            ("\"-1\"", Err(Failed)),
            ("\"+1\"", Err(Failed)),
            ("\" 1\"", Err(Failed)),
            ("\"1.5\"", Err(Failed)),
            ("\"0\"", Err(Failed)),
            ("\"000\"", Err(Failed)),
            ("\"abc\"", Err(Failed)),
            ("\"١\"", Err(Failed)),
            ("1.5", Err(Failed)),
            ("1.0", Err(Failed)),
            ("1e2", Err(Failed)),
            ("true", Err(Failed)),
            ("[1]", Err(Failed)),
            ("{\"id\":1}", Err(Failed)),
            ("9223372036854775808", Err(Failed)),
            ("\"9223372036854775808\"", Err(Failed)),
            ("18446744073709551615", Err(Failed)),
            ("18446744073709551616", Err(Failed)),
            ("-9223372036854775809", Err(Failed)),
            ("123456789012345678901234567890", Err(Failed)),
        ];
        for (id, want) in cases {
            let p = format!(r#"{{"type":"delete_message","message_id":{id}}}"#);
            assert_eq!(&dec(&p), want, "{p}");
        }
        assert_eq!(dec(r#"{"type":"delete_message"}"#), Err(Required));
    }

    // --- typing ------------------------------------------------------------

    #[test]
    fn typing_variants() {
        assert_eq!(dec(r#"{"type":"typing"}"#), Ok(Got::Typing(false)));
        assert_eq!(
            dec(r#"{"type":"typing","is_typing":true}"#),
            Ok(Got::Typing(true))
        );
        assert_eq!(
            dec(r#"{"type":"typing","is_typing":false}"#),
            Ok(Got::Typing(false))
        );
        for bad in ["null", "1", "0", "\"true\"", "[]", "{}", "1.0"] {
            let p = format!(r#"{{"type":"typing","is_typing":{bad}}}"#);
            assert_eq!(dec(&p), Err(ReplyError::InvalidFormat), "{p}");
        }
    }

    // --- the decoder itself --------------------------------------------------

    #[test]
    fn slow_path_keeps_python_semantics_for_huge_integers() {
        let p = r#"{"type":"chat_message","content":" caf\u00e9 ","n":18446744073709551616}"#;
        let mut d = Decoder::new();
        let content_at = match d.decode(p.as_bytes()) {
            Ok(ClientMessage::Chat { content }) => (content == "café").then_some(content.as_ptr()),
            _ => None,
        };
        assert_eq!(
            content_at,
            Some(d.spill.as_ptr()),
            "decoded by the slow path"
        );
        let p = r#"{"type":"typing","is_typing":true,"n":-99999999999999999999}"#;
        assert_eq!(d.decode(p.as_bytes()).map(got), Ok(Got::Typing(true)));
        let p = r#"[18446744073709551616]"#;
        assert_eq!(
            d.decode(p.as_bytes()).map(got),
            Err(ReplyError::UnknownType)
        );
        let p = r#"{"type":18446744073709551616}"#;
        assert_eq!(
            d.decode(p.as_bytes()).map(got),
            Err(ReplyError::UnknownType)
        );
        // The fast path still works after the slow one.
        assert_eq!(d.decode(chat_frame("x").as_bytes()).map(got), chat("x"));
    }

    #[test]
    fn decoder_reuses_its_buffers() {
        let mut d = Decoder::new();
        let big = chat_frame(&"word ".repeat(900));
        let small = chat_frame("hi");
        for p in [&big, &small, &big] {
            assert!(d.decode(p.as_bytes()).is_ok());
        }
        let caps = (d.scratch.capacity(), d.tape.0.capacity(), d.tape.0.as_ptr());
        for p in [&small, &big, &"{".to_owned(), &small] {
            let _ = d.decode(p.as_bytes());
            assert!(d.tape.0.is_empty());
            assert_eq!(
                (d.scratch.capacity(), d.tape.0.capacity(), d.tape.0.as_ptr()),
                caps
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut d = Decoder::new();
        let alphabet = b"{}[]\":,\\ 0123456789.-+eEtrufalsn\t\n\x00\x7f\xc3\xa9\xff";
        for i in 0..10_000 {
            let len = rng.below(64);
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if i % 2 == 0 {
                        r as u8
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let _ = d.decode(&payload);
        }
    }

    /// An independent model of the original consumer on `serde_json::Value`.
    fn reference(payload: &[u8]) -> Result<Got, ReplyError> {
        use ReplyError::*;
        let v: Value = serde_json::from_slice(payload).map_err(|_| InvalidJson)?;
        let obj = v.as_object().ok_or(UnknownType)?;
        match obj.get("type").and_then(Value::as_str) {
            Some("chat_message") => {
                let raw = match obj.get("content") {
                    None => "",
                    Some(Value::String(s)) => s,
                    Some(_) => return Err(InvalidFormat),
                };
                let s = raw.trim_matches(|c| PY_SPACE.contains(&(c as u32)));
                match () {
                    _ if s.is_empty() => Err(EmptyMessage),
                    _ if s.chars().count() > 5000 => Err(MessageTooLong),
                    _ if s.contains('\0') => Err(InvalidFormat),
                    _ => Ok(Got::Chat(s.to_owned())),
                }
            }
            Some("delete_message") => {
                let id = obj.get("message_id").unwrap_or(&Value::Null);
                let falsy = match id {
                    Value::Null => true,
                    Value::Bool(b) => !b,
                    Value::Number(n) => n.as_f64() == Some(0.0),
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                };
                if falsy {
                    return Err(MessageIdRequired);
                }
                let id = match id {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
                    _ => None,
                };
                id.filter(|&n| n > 0).map(Got::Delete).ok_or(DeleteFailed)
            }
            Some("typing") => match obj.get("is_typing") {
                None => Ok(Got::Typing(false)),
                Some(Value::Bool(b)) => Ok(Got::Typing(*b)),
                Some(_) => Err(InvalidFormat),
            },
            _ => Err(UnknownType),
        }
    }

    #[test]
    fn mutated_frames_match_the_reference_model() {
        let seeds = [
            r#"{"type":"chat_message","content":" Hello \"world\" \u00e9\n"}"#,
            r#"{"type":"delete_message","message_id":"0012"}"#,
            r#"{"type":"delete_message","message_id":12,"x":[1,{"a":null}]}"#,
            r#"{"type":"typing","is_typing":true}"#,
            r#"{"type":"typing","is_typing":null}"#,
            r#"{"type":"chat_message","content":"a\u0000"}"#,
            r#"[{"type":"typing"},1.5e3,-0,"s"]"#,
        ];
        let alphabet = b"{}[]\":,\\ 0123456789.-+eEtrufalsnu\x00\xc3\xa9";
        let mut rng = Rng(42);
        let mut d = Decoder::new();
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..20_000 {
            let mut p = seeds[rng.below(seeds.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(p.len() + 1);
                let b = alphabet[rng.below(alphabet.len())];
                match rng.below(3) {
                    0 if at < p.len() => p[at] = b,
                    1 if at < p.len() => drop(p.remove(at)),
                    _ => p.insert(at, b),
                }
            }
            let want = reference(&p);
            assert_eq!(
                d.decode(&p).map(got),
                want,
                "{:?}",
                String::from_utf8_lossy(&p)
            );
            let outcome = match want {
                Ok(Got::Chat(_)) => "chat",
                Ok(Got::Delete(_)) => "delete",
                Ok(Got::Typing(_)) => "typing",
                Err(e) => e.kind(),
            };
            *seen.entry(outcome).or_insert(0u32) += 1;
        }
        assert!(
            seen.len() >= 9 && seen.values().all(|&n| n >= 20),
            "{seen:?}"
        );
    }

    // --- encoding ----------------------------------------------------------

    fn john() -> UserProfile {
        UserProfile {
            id: 1,
            username: "johndoe".into(),
            first_name: "John".into(),
            last_name: "Doe".into(),
            is_active: true,
        }
    }

    #[test]
    fn constant_frames() {
        let established = json!({"type": "connection_established", "message": "Connected to chat"});
        assert_eq!(parse(CONNECTION_ESTABLISHED), established);
        assert_eq!(parse(PING), json!({"type": "ping"}));
    }

    #[test]
    fn sender_json_matches_the_documented_shape() {
        let s = sender_json(&john());
        assert_eq!(
            &s[..],
            br#"{"id":1,"username":"johndoe","first_name":"John","last_name":"Doe"}"#
        );
        let odd = UserProfile {
            id: i64::MAX,
            username: "a\"b\\c".into(),
            first_name: "Zoë\n".into(),
            last_name: "\u{1}\u{2028}".into(),
            is_active: false,
        };
        let expected = json!({"id": i64::MAX, "username": "a\"b\\c", "first_name": "Zoë\n", "last_name": "\u{1}\u{2028}"});
        assert_eq!(parse(&sender_json(&odd)), expected);
    }

    #[test]
    fn new_message_encoding() {
        let ts = Utc.with_ymd_and_hms(2025, 12, 11, 10, 30, 0).unwrap()
            + chrono::Duration::microseconds(123_456);
        let mut out = b"hdr".to_vec();
        encode_new_message(&mut out, 123, &sender_json(&john()), "Hello world", ts);
        let expected = br#"hdr{"type":"new_message","message":{"id":123,"sender":{"id":1,"username":"johndoe","first_name":"John","last_name":"Doe"},"content":"Hello world","timestamp":"2025-12-11T10:30:00.123456Z"}}"#;
        assert_eq!(out, expected);
        out.clear();
        encode_new_message(&mut out, 9, &sender_json(&john()), "\"é\"\n\t😀", ts);
        let v = parse(&out);
        assert_eq!(v["message"]["content"], "\"é\"\n\t😀");
        assert!(
            std::str::from_utf8(&out).unwrap().contains("é"),
            "UTF-8, not \\u escapes"
        );
    }

    #[test]
    fn typing_and_deleted_encoding() {
        let mut out = Vec::new();
        encode_typing(&mut out, 2, "janedoe", true);
        assert_eq!(
            out,
            br#"{"type":"typing","user_id":2,"username":"janedoe","is_typing":true}"#
        );
        out.clear();
        encode_typing(&mut out, -3, "j\"ane", false);
        let expected =
            json!({"type": "typing", "user_id": -3, "username": "j\"ane", "is_typing": false});
        assert_eq!(parse(&out), expected);
        out.clear();
        encode_message_deleted(&mut out, 123);
        assert_eq!(out, br#"{"type":"message_deleted","message_id":123}"#);
    }

    #[test]
    fn integers() {
        for n in [
            0,
            1,
            -1,
            9,
            10,
            99,
            100,
            123_456_789,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            let mut out = Vec::new();
            push_i64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn string_escaping_matches_serde_json() {
        let check = |s: &str| {
            let mut out = vec![b'x'];
            write_json_str(&mut out, s);
            assert_eq!(out[1..], serde_json::to_vec(s).unwrap(), "{s:?}");
        };
        for c in (0..0x80).filter_map(char::from_u32) {
            check(&c.to_string());
            check(&format!("ab{c}cd{c}"));
        }
        for s in [
            "",
            "plain",
            "é😀\u{2028}\u{7f}\u{85}",
            "\\\\\"\"",
            "\u{0}\u{1f}end",
        ] {
            check(s);
        }
        let mut rng = Rng(7);
        let pool = [
            'a', ' ', '"', '\\', '\n', '\u{0}', '\u{1b}', 'é', '€', '😀', '\u{7f}', '/',
        ];
        for _ in 0..2_000 {
            let s: String = (0..rng.below(24))
                .map(|_| pool[rng.below(pool.len())])
                .collect();
            check(&s);
        }
    }

    #[test]
    fn timestamps_render_like_django_rest_framework() {
        let at = |y, mo, d, h, mi, s, nanos| {
            let base = Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
            let mut out = Vec::new();
            write_timestamp(&mut out, base + chrono::Duration::nanoseconds(nanos));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            at(2025, 12, 11, 10, 30, 0, 123_456_000),
            "2025-12-11T10:30:00.123456Z"
        );
        assert_eq!(at(2025, 12, 11, 10, 30, 0, 0), "2025-12-11T10:30:00Z");
        assert_eq!(
            at(2025, 1, 2, 3, 4, 5, 1_000),
            "2025-01-02T03:04:05.000001Z"
        );
        assert_eq!(
            at(2025, 1, 2, 3, 4, 5, 999),
            "2025-01-02T03:04:05Z",
            "sub-µs truncated"
        );
        assert_eq!(
            at(2025, 1, 2, 3, 4, 5, 123_456_789),
            "2025-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            at(999, 12, 31, 23, 59, 59, 500_000_000),
            "0999-12-31T23:59:59.500000Z"
        );
        let mut out = Vec::new();
        let leap = Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap()
            + chrono::Duration::nanoseconds(0);
        write_timestamp(&mut out, leap.with_nanosecond(1_250_000_000).unwrap());
        assert_eq!(out, b"2016-12-31T23:59:59.250000Z");
    }
}
