//! The envelope of a client frame: which fields it carries and which
//! `type` it names (docs/protocol.md §3, parsing).
//!
//! Owns the reduction of a frame to the fields the rules look at (`Fields`,
//! later duplicates winning as in Python's `json.loads`), the serde visitors
//! that fill them in the single simd-json pass, and the dispatch on `type`
//! (gated by the socket's [`Version`]) to the per-type rules in `chat.rs`,
//! `delete.rs`, `typing.rs` (v1 and v2) and `history.rs`, `mark_read.rs`,
//! `react.rs`, `call_signal.rs`, `upload.rs` (v2 only: on a v1 socket their
//! types are `Unknown message type`, exactly as an unknown type), which
//! answer a [`ClientMessage`] (`message.rs`). A new client message type adds
//! its keys here, one arm in `Frame::classify`, and a file of its own.
//!
//! Must never: fail the serde pass on a valid JSON document (every JSON type
//! is accepted, the rules decide), or decide a field's validity itself.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::errors::ReplyError;
use super::message::ClientMessage;
use super::value::{drain_seq, Json};
use super::version::Version;
use super::{call_signal, chat, delete, history, mark_read, react, typing, upload};

/// The fields of a client frame the rules look at (later duplicates win,
/// as in Python's `json.loads`).
#[derive(Default)]
pub(super) struct Fields<'a> {
    kind: Option<Json<'a>>,
    content: Option<Json<'a>>,
    message_id: Option<Json<'a>>,
    is_typing: Option<Json<'a>>,
    before: Option<Json<'a>>,
    limit: Option<Json<'a>>,
    emoji: Option<Json<'a>>,
    on: Option<Json<'a>>,
    to_user_id: Option<Json<'a>>,
    call_id: Option<Json<'a>>,
    signal_kind: Option<Json<'a>>,
    payload: Option<Json<'a>>,
    upload_id: Option<Json<'a>>,
    file_name: Option<Json<'a>>,
    percent: Option<Json<'a>>,
}

/// A parsed client frame: an object, or any other valid JSON value.
// Lives on the stack for one decode; boxing `Fields` would allocate per frame.
#[allow(clippy::large_enum_variant)]
pub(super) enum Frame<'a> {
    Object(Fields<'a>),
    NotObject,
}

impl<'a> Frame<'a> {
    pub(super) fn from_value(v: &'a serde_json::Value) -> Self {
        let Some(map) = v.as_object() else {
            return Frame::NotObject;
        };
        let get = |k: &str| map.get(k).map(Json::from_value);
        Frame::Object(Fields {
            kind: get("type"),
            content: get("content"),
            message_id: get("message_id"),
            is_typing: get("is_typing"),
            before: get("before"),
            limit: get("limit"),
            emoji: get("emoji"),
            on: get("on"),
            to_user_id: get("to_user_id"),
            call_id: get("call_id"),
            signal_kind: get("kind"),
            payload: get("payload"),
            upload_id: get("upload_id"),
            file_name: get("file_name"),
            percent: get("percent"),
        })
    }

    /// Dispatches on `type`; the v2 types exist only on v2 sockets.
    pub(super) fn classify(self, version: Version) -> Result<ClientMessage<'a>, ReplyError> {
        let Frame::Object(f) = self else {
            return Err(ReplyError::UnknownType);
        };
        let Some(Json::Str(kind)) = f.kind else {
            return Err(ReplyError::UnknownType);
        };
        match (kind, version) {
            ("chat_message", _) => chat::decode(f.content),
            ("delete_message", _) => delete::decode(f.message_id),
            ("typing", _) => typing::decode(f.is_typing),
            ("history", Version::V2) => history::decode(f.before, f.limit),
            ("mark_read", Version::V2) => mark_read::decode(f.message_id),
            ("react", Version::V2) => react::decode(f.message_id, f.emoji, f.on),
            ("call_signal", Version::V2) => {
                call_signal::decode(f.to_user_id, f.call_id, f.signal_kind, f.payload)
            }
            ("upload_progress", Version::V2) => upload::decode(f.upload_id, f.file_name, f.percent),
            _ => Err(ReplyError::UnknownType),
        }
    }
}

// Serde plumbing: visitors that accept every JSON type, so the single
// simd-json pass never fails on a valid document and the rules decide.

enum Key {
    Type,
    Content,
    MessageId,
    IsTyping,
    Before,
    Limit,
    Emoji,
    On,
    ToUserId,
    CallId,
    Kind,
    Payload,
    UploadId,
    FileName,
    Percent,
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
            "before" => Key::Before,
            "limit" => Key::Limit,
            "emoji" => Key::Emoji,
            "on" => Key::On,
            "to_user_id" => Key::ToUserId,
            "call_id" => Key::CallId,
            "kind" => Key::Kind,
            "payload" => Key::Payload,
            "upload_id" => Key::UploadId,
            "file_name" => Key::FileName,
            "percent" => Key::Percent,
            _ => Key::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
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
                Key::Before => &mut f.before,
                Key::Limit => &mut f.limit,
                Key::Emoji => &mut f.emoji,
                Key::On => &mut f.on,
                Key::ToUserId => &mut f.to_user_id,
                Key::CallId => &mut f.call_id,
                Key::Kind => &mut f.signal_kind,
                Key::Payload => &mut f.payload,
                Key::UploadId => &mut f.upload_id,
                Key::FileName => &mut f.file_name,
                Key::Percent => &mut f.percent,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{chat, dec, Got};

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
}
