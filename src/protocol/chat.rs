//! Chat messages: `chat_message` in, `new_message` out (docs/protocol.md §3, §4).
//!
//! Owns the `chat_message` rule (`content` absent → empty, non-string →
//! invalid format, then the content rules of `validate.rs`), the sender
//! object embedded in every `new_message` ([`sender_json`], built once per
//! connection) and the `new_message` encoder.
//!
//! Must never: escape non-ASCII content as `\u` sequences (UTF-8 is sent as
//! is), or re-serialize the sender per message.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::errors::ReplyError;
use super::json::{push_i64, write_json_str, write_timestamp};
use super::message::ClientMessage;
use super::validate::validate_content;
use super::value::Json;
use crate::ids::MessageId;
use crate::records::UserProfile;

/// `data.get('content', '').strip()` and the content rules.
pub(super) fn decode(content: Option<Json<'_>>) -> Result<ClientMessage<'_>, ReplyError> {
    match content {
        None => Err(ReplyError::EmptyMessage),
        Some(Json::Str(raw)) => {
            validate_content(raw).map(|content| ClientMessage::Chat { content })
        }
        Some(_) => Err(ReplyError::InvalidFormat),
    }
}

/// `{"id":1,"username":"johndoe","first_name":"John","last_name":"Doe"}`,
/// computed once per connection and embedded in every `new_message`.
pub fn sender_json(p: &UserProfile) -> Bytes {
    let text_len = p.username.len() + p.first_name.len() + p.last_name.len();
    let mut out = Vec::with_capacity(72 + text_len);
    write_sender(&mut out, p);
    Bytes::from(out)
}

/// Appends the sender object of [`sender_json`] (also used by the history
/// items of protocol v2, whose senders vary item by item).
pub(super) fn write_sender(out: &mut Vec<u8>, p: &UserProfile) {
    out.extend_from_slice(br#"{"id":"#);
    push_i64(out, p.id);
    out.extend_from_slice(br#","username":"#);
    write_json_str(out, &p.username);
    out.extend_from_slice(br#","first_name":"#);
    write_json_str(out, &p.first_name);
    out.extend_from_slice(br#","last_name":"#);
    write_json_str(out, &p.last_name);
    out.push(b'}');
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
    out.extend_from_slice(NEW_MESSAGE_HEAD);
    out.extend_from_slice(br#"{"id":"#);
    push_i64(out, id);
    out.extend_from_slice(br#","sender":"#);
    out.extend_from_slice(sender_json);
    out.extend_from_slice(br#","content":"#);
    write_json_str(out, content);
    out.extend_from_slice(br#","timestamp":""#);
    write_timestamp(out, timestamp);
    out.extend_from_slice(br#""}}"#);
}

/// What every `new_message` frame starts with, before the message object
/// ([`encode_new_message`], `resume.rs`); the Channels layer recognizes
/// the gateway's own frames by it.
pub(crate) const NEW_MESSAGE_HEAD: &[u8] = br#"{"type":"new_message","message":"#;

/// The message object inside a `new_message` payload written by
/// [`encode_new_message`] (the same bytes, shared, not copied).
pub fn new_message_object(payload: &Bytes) -> Bytes {
    debug_assert!(payload.starts_with(NEW_MESSAGE_HEAD));
    let end = payload.len().saturating_sub(1).max(NEW_MESSAGE_HEAD.len());
    payload.slice(NEW_MESSAGE_HEAD.len().min(end)..end)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{chat, chat_frame, dec, parse};

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
}
