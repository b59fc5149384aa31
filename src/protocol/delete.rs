//! Deleting a message for oneself: `delete_message` in, `message_deleted`
//! out (docs/protocol.md §3).
//!
//! Owns the `delete_message` rule: `message_id` falsy in Python's sense →
//! `Message ID required`; a positive integer, or a decimal string of one →
//! accepted; anything else → `Failed to delete message`. And the
//! `message_deleted` encoder, whose id is always a JSON integer.
//!
//! Must never: accept an id that is not positive or does not fit `i64`.

use super::errors::ReplyError;
use super::json::push_i64;
use super::message::ClientMessage;
use super::validate::parse_decimal_id;
use super::value::Json;
use crate::ids::MessageId;

/// `if not message_id: ...`, then a positive integer or decimal string.
pub(super) fn decode(message_id: Option<Json<'_>>) -> Result<ClientMessage<'static>, ReplyError> {
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

/// Appends `{"type":"message_deleted","message_id":123}`.
pub fn encode_message_deleted(out: &mut Vec<u8>, message_id: MessageId) {
    out.extend_from_slice(br#"{"type":"message_deleted","message_id":"#);
    push_i64(out, message_id);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{dec, Got};

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

    #[test]
    fn message_deleted_encoding() {
        let mut out = Vec::new();
        encode_message_deleted(&mut out, 123);
        assert_eq!(out, br#"{"type":"message_deleted","message_id":123}"#);
    }
}
