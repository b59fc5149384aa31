//! Read receipts (v2): `mark_read` in, `read_receipt` and `read_state` out
//! (docs/protocol.md §9.3).
//!
//! Owns the `mark_read` rule and the two encoders. `message_id` is a JSON
//! integer or a decimal string of one, as `delete_message` accepts; missing,
//! `null` or another JSON type (bool, float, array, object) is `Invalid
//! message format`.
//!
//! **Choice:** an id that is well formed but can name no message — zero,
//! negative, or above `i64::MAX` — is not a format error: it decodes as
//! `message_id: 0`, and the session answers `Failed to mark read` because
//! no message has that id, exactly as for any id that is not a message of
//! the conversation. (The shared rule is `validate::target_message_id`,
//! also used by `react`.)
//!
//! Must never: answer `Rate limit exceeded` (a read position is a state;
//! the session coalesces it), or put a read position on a v1 socket.

use super::errors::ReplyError;
use super::json::{push_i64, write_json_str, write_timestamp};
use super::message::ClientMessage;
use super::validate::target_message_id;
use super::value::Json;
use crate::records::ReadPosition;

/// `message_id`: an integer or a decimal string; see the file's doc for 0.
pub(super) fn decode(message_id: Option<Json<'_>>) -> Result<ClientMessage<'static>, ReplyError> {
    target_message_id(message_id).map(|message_id| ClientMessage::MarkRead { message_id })
}

/// Appends `{"type":"read_receipt","user_id":U,"username":"…","message_id":N,"read_at":"…"}`.
pub fn encode_read_receipt(out: &mut Vec<u8>, pos: &ReadPosition) {
    out.reserve(120 + pos.username.len());
    out.extend_from_slice(br#"{"type":"read_receipt","user_id":"#);
    push_i64(out, pos.user_id);
    out.extend_from_slice(br#","username":"#);
    write_json_str(out, &pos.username);
    out.extend_from_slice(br#","message_id":"#);
    push_i64(out, pos.message_id);
    out.extend_from_slice(br#","read_at":""#);
    write_timestamp(out, pos.read_at);
    out.extend_from_slice(br#""}"#);
}

/// Appends `{"type":"read_state","receipts":[{"user_id":U,"message_id":N,"read_at":"…"},…]}`.
pub fn encode_read_state(out: &mut Vec<u8>, positions: &[ReadPosition]) {
    out.reserve(40 + 72 * positions.len());
    out.extend_from_slice(br#"{"type":"read_state","receipts":["#);
    for (i, pos) in positions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"user_id":"#);
        push_i64(out, pos.user_id);
        out.extend_from_slice(br#","message_id":"#);
        push_i64(out, pos.message_id);
        out.extend_from_slice(br#","read_at":""#);
        write_timestamp(out, pos.read_at);
        out.extend_from_slice(br#""}"#);
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{dec, dec_v1, Got};

    #[test]
    fn mark_read_message_id_variants() {
        use ReplyError::InvalidFormat as Bad;
        let cases: &[(&str, Result<Got, ReplyError>)] = &[
            ("123", Ok(Got::MarkRead(123))),
            ("\"123\"", Ok(Got::MarkRead(123))),
            ("\"007\"", Ok(Got::MarkRead(7))),
            ("\"\\u0031\"", Ok(Got::MarkRead(1))),
            ("9223372036854775807", Ok(Got::MarkRead(i64::MAX))),
            ("\"9223372036854775807\"", Ok(Got::MarkRead(i64::MAX))),
            // Well formed but naming no message: 0, answered `Failed to mark read`.
            ("0", Ok(Got::MarkRead(0))),
            ("-1", Ok(Got::MarkRead(0))),
            ("-9223372036854775808", Ok(Got::MarkRead(0))),
            ("\"0\"", Ok(Got::MarkRead(0))),
            ("\"000\"", Ok(Got::MarkRead(0))),
            ("9223372036854775808", Ok(Got::MarkRead(0))),
            ("18446744073709551615", Ok(Got::MarkRead(0))),
            ("\"9223372036854775808\"", Ok(Got::MarkRead(0))),
            ("\"123456789012345678901234567890\"", Ok(Got::MarkRead(0))),
            // Malformed.
            ("null", Err(Bad)),
            ("true", Err(Bad)),
            ("false", Err(Bad)),
            ("1.0", Err(Bad)),
            ("1.5", Err(Bad)),
            ("1e2", Err(Bad)),
            ("-0.0", Err(Bad)),
            ("[]", Err(Bad)),
            ("[1]", Err(Bad)),
            ("{}", Err(Bad)),
            ("{\"id\":1}", Err(Bad)),
            ("\"\"", Err(Bad)),
            ("\"-1\"", Err(Bad)),
            ("\"+1\"", Err(Bad)),
            ("\" 1\"", Err(Bad)),
            ("\"1.5\"", Err(Bad)),
            ("\"abc\"", Err(Bad)),
            ("\"١\"", Err(Bad)),
            ("18446744073709551616", Err(Bad)),
            ("-9223372036854775809", Err(Bad)),
        ];
        for (id, want) in cases {
            let p = format!(r#"{{"type":"mark_read","message_id":{id}}}"#);
            assert_eq!(&dec(&p), want, "{p}");
            assert_eq!(dec_v1(&p), Err(ReplyError::UnknownType), "v1: {p}");
        }
        assert_eq!(dec(r#"{"type":"mark_read"}"#), Err(Bad));
    }

    fn position(user_id: i64, username: &str, message_id: i64, micros: i64) -> ReadPosition {
        ReadPosition {
            user_id,
            username: username.into(),
            message_id,
            read_at: Utc.with_ymd_and_hms(2025, 12, 11, 10, 30, 0).unwrap()
                + chrono::Duration::microseconds(micros),
        }
    }

    #[test]
    fn read_receipt_encoding() {
        let mut out = b"hdr".to_vec();
        encode_read_receipt(&mut out, &position(2, "janedoe", 123, 123_456));
        let expected = br#"hdr{"type":"read_receipt","user_id":2,"username":"janedoe","message_id":123,"read_at":"2025-12-11T10:30:00.123456Z"}"#;
        assert_eq!(out, expected);
        out.clear();
        encode_read_receipt(&mut out, &position(3, "Zoë \"z\"", 9, 0));
        let expected = json!({"type": "read_receipt", "user_id": 3, "username": "Zoë \"z\"", "message_id": 9, "read_at": "2025-12-11T10:30:00Z"});
        assert_eq!(crate::protocol::testing::parse(&out), expected);
    }

    #[test]
    fn read_state_encoding() {
        let mut out = Vec::new();
        encode_read_state(&mut out, &[]);
        assert_eq!(out, br#"{"type":"read_state","receipts":[]}"#);
        out.clear();
        let positions = [position(1, "a", 10, 1), position(2, "b", 12, 0)];
        encode_read_state(&mut out, &positions);
        let expected = br#"{"type":"read_state","receipts":[{"user_id":1,"message_id":10,"read_at":"2025-12-11T10:30:00.000001Z"},{"user_id":2,"message_id":12,"read_at":"2025-12-11T10:30:00Z"}]}"#;
        assert_eq!(out, expected);
        let v = crate::protocol::testing::parse(&out);
        assert_eq!(v["receipts"][1]["message_id"], 12);
    }
}
