//! Resume (v2): what a reconnecting socket missed (docs/protocol.md §9.1).
//!
//! Owns the encoders of a replay: each missed message as a `new_message`
//! whose `message` is a history item (so it carries `reactions`), and the
//! closing `resumed` frame. There is no client message: `?since=` arrives
//! with the upgrade request.
//!
//! Must never: be used for live messages (live `new_message` frames are
//! the same bytes for v1 and v2 sockets, without `reactions`: `chat.rs`).

use super::chat::NEW_MESSAGE_HEAD;
use super::history::encode_history_item;
use super::json::push_i64;
use crate::ids::MessageId;
use crate::records::HistoryItem;

/// Appends `{"type":"new_message","message":<history item>}`.
pub fn encode_replayed(out: &mut Vec<u8>, item: &HistoryItem) {
    out.extend_from_slice(NEW_MESSAGE_HEAD);
    encode_history_item(out, item);
    out.push(b'}');
}

/// Appends `{"type":"resumed","last_id":N,"complete":true}`.
pub fn encode_resumed(out: &mut Vec<u8>, last_id: MessageId, complete: bool) {
    out.extend_from_slice(br#"{"type":"resumed","last_id":"#);
    push_i64(out, last_id);
    out.extend_from_slice(if complete {
        br#","complete":true}"#
    } else {
        br#","complete":false}"#
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{history_item, parse};

    #[test]
    fn replayed_encoding() {
        let item = history_item(123, &[("👍", &[1, 2])]);
        let mut out = b"hdr".to_vec();
        encode_replayed(&mut out, &item);
        let expected = r#"hdr{"type":"new_message","message":{"id":123,"sender":{"id":1,"username":"johndoe","first_name":"John","last_name":"Doe"},"content":"Hello world","timestamp":"2025-12-11T10:30:00.123456Z","reactions":[{"emoji":"👍","user_ids":[1,2]}]}}"#;
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        let mut body = Vec::new();
        encode_history_item(&mut body, &item);
        assert_eq!(parse(&out[3..])["message"], parse(&body));
    }

    #[test]
    fn resumed_encoding() {
        let mut out = Vec::new();
        encode_resumed(&mut out, 42, true);
        assert_eq!(out, br#"{"type":"resumed","last_id":42,"complete":true}"#);
        out.clear();
        encode_resumed(&mut out, 0, false);
        assert_eq!(out, br#"{"type":"resumed","last_id":0,"complete":false}"#);
        out.clear();
        encode_resumed(&mut out, i64::MAX, false);
        let expected = json!({"type": "resumed", "last_id": i64::MAX, "complete": false});
        assert_eq!(parse(&out), expected);
    }
}
