//! Typing indicators: `typing` in and out (docs/protocol.md §3, §4).
//!
//! Owns the `typing` rule (`is_typing` absent → false, a boolean → it,
//! anything else → invalid format) and the `typing` event encoder.
//!
//! Must never: store anything (a typing event is relayed, never persisted),
//! or treat a non-boolean `is_typing` as truthy.

use super::errors::ReplyError;
use super::json::{push_i64, write_json_str};
use super::message::ClientMessage;
use super::value::Json;
use crate::ids::UserId;

/// `is_typing`: absent → false, a bool → it, anything else is malformed.
pub(super) fn decode(is_typing: Option<Json<'_>>) -> Result<ClientMessage<'static>, ReplyError> {
    match is_typing {
        None => Ok(ClientMessage::Typing { is_typing: false }),
        Some(Json::Bool(is_typing)) => Ok(ClientMessage::Typing { is_typing }),
        Some(_) => Err(ReplyError::InvalidFormat),
    }
}

/// What every `typing` frame [`encode_typing`] writes starts with; the
/// Channels layer recognizes the gateway's own frames by it.
pub(crate) const TYPING_HEAD: &[u8] = br#"{"type":"typing","user_id":"#;

/// Appends `{"type":"typing","user_id":2,"username":"janedoe","is_typing":true}`.
pub fn encode_typing(out: &mut Vec<u8>, user_id: UserId, username: &str, is_typing: bool) {
    out.reserve(70 + username.len());
    out.extend_from_slice(TYPING_HEAD);
    push_i64(out, user_id);
    out.extend_from_slice(br#","username":"#);
    write_json_str(out, username);
    out.extend_from_slice(if is_typing {
        br#","is_typing":true}"#
    } else {
        br#","is_typing":false}"#
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{dec, parse, Got};

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

    #[test]
    fn typing_encoding() {
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
    }
}
