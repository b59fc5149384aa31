//! Call signalling (v2): `call_signal` in and out (docs/protocol.md §9.6).
//!
//! Owns the `call_signal` rule — `to_user_id` a JSON integer, `call_id` 1–64
//! characters of `[A-Za-z0-9_-]`, `kind` one of [`SignalKind`] (defined with [`ClientMessage`] in `message.rs`), `payload`
//! any JSON value or absent — the frame size limit ([`MAX_SIGNAL_FRAME`])
//! and the relayed frame's encoder, which copies `payload`'s text as the
//! client sent it (found by `raw.rs`, never re-serialised).
//!
//! Must never: store anything, parse or rewrite `payload`, or allocate on
//! decode (`call_id` borrows from the decoder).

use super::errors::ReplyError;
use super::json::{push_i64, write_json_str};
use super::message::{ClientMessage, SignalKind};
use super::value::Json;
use crate::ids::UserId;

/// The largest `call_signal` frame, in bytes of its UTF-8 text.
pub const MAX_SIGNAL_FRAME: usize = 16 * 1024;

/// Longest `call_id` / `upload_id`.
pub const MAX_ID_CHARS: usize = 64;

/// 1–64 characters of `[A-Za-z0-9_-]` (`call_id`, `upload_id`).
pub(super) fn is_valid_id(s: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `to_user_id`, `call_id`, `kind`; whether `payload` is present.
pub(super) fn decode<'a>(
    to_user_id: Option<Json<'a>>,
    call_id: Option<Json<'a>>,
    kind: Option<Json<'a>>,
    payload: Option<Json<'a>>,
) -> Result<ClientMessage<'a>, ReplyError> {
    let (Some(Json::Int(to_user_id)), Some(Json::Str(call_id)), Some(Json::Str(kind))) =
        (to_user_id, call_id, kind)
    else {
        return Err(ReplyError::InvalidFormat);
    };
    let kind = SignalKind::parse(kind).ok_or(ReplyError::InvalidFormat)?;
    if !is_valid_id(call_id) {
        return Err(ReplyError::InvalidFormat);
    }
    Ok(ClientMessage::CallSignal {
        to_user_id,
        call_id,
        kind,
        has_payload: payload.is_some(),
    })
}

/// Appends `{"type":"call_signal","from_user_id":U,"from_username":"…","call_id":"…","kind":"…","payload":…}`;
/// `payload` is the client's raw JSON text (left out when `None`).
pub fn encode_call_signal(
    out: &mut Vec<u8>,
    from: UserId,
    from_username: &str,
    call_id: &str,
    kind: SignalKind,
    payload: Option<&[u8]>,
) {
    out.reserve(110 + from_username.len() + call_id.len() + payload.map_or(0, <[u8]>::len));
    out.extend_from_slice(br#"{"type":"call_signal","from_user_id":"#);
    push_i64(out, from);
    out.extend_from_slice(br#","from_username":"#);
    write_json_str(out, from_username);
    out.extend_from_slice(br#","call_id":""#);
    out.extend_from_slice(call_id.as_bytes()); // [A-Za-z0-9_-]: nothing to escape
    out.extend_from_slice(br#"","kind":""#);
    out.extend_from_slice(kind.as_str().as_bytes());
    out.push(b'"');
    if let Some(p) = payload {
        out.extend_from_slice(br#","payload":"#);
        out.extend_from_slice(p);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{dec, dec_v1, Got};

    #[test]
    fn the_rule() {
        let ok = |p: &str| dec(p).unwrap_or_else(|e| panic!("{p}: {e:?}"));
        assert_eq!(
            ok(
                r#"{"type":"call_signal","to_user_id":2,"call_id":"a-Z_9","kind":"offer","payload":{"sdp":"x"}}"#
            ),
            Got::Signal(2, "a-Z_9".into(), "offer", true)
        );
        assert_eq!(
            ok(r#"{"type":"call_signal","to_user_id":-1,"call_id":"c","kind":"ring"}"#),
            Got::Signal(-1, "c".into(), "ring", false)
        );
        let long = "x".repeat(64);
        let p = format!(
            r#"{{"type":"call_signal","to_user_id":2,"call_id":"{long}","kind":"hangup","payload":null}}"#
        );
        assert_eq!(ok(&p), Got::Signal(2, long.clone(), "hangup", true));
        for bad in [
            r#"{"type":"call_signal","call_id":"c","kind":"ring"}"#,
            r#"{"type":"call_signal","to_user_id":"2","call_id":"c","kind":"ring"}"#,
            r#"{"type":"call_signal","to_user_id":2.5,"call_id":"c","kind":"ring"}"#,
            r#"{"type":"call_signal","to_user_id":2,"call_id":"","kind":"ring"}"#,
            r#"{"type":"call_signal","to_user_id":2,"call_id":"a b","kind":"ring"}"#,
            r#"{"type":"call_signal","to_user_id":2,"call_id":"é","kind":"ring"}"#,
            r#"{"type":"call_signal","to_user_id":2,"call_id":1,"kind":"ring"}"#,
            r#"{"type":"call_signal","to_user_id":2,"call_id":"c","kind":"Ring"}"#,
            r#"{"type":"call_signal","to_user_id":2,"call_id":"c"}"#,
            r#"{"type":"call_signal","to_user_id":18446744073709551616,"call_id":"c","kind":"ring"}"#,
        ] {
            assert_eq!(dec(bad), Err(ReplyError::InvalidFormat), "{bad}");
        }
        let p =
            format!(r#"{{"type":"call_signal","to_user_id":2,"call_id":"{long}x","kind":"ring"}}"#);
        assert_eq!(dec(p), Err(ReplyError::InvalidFormat));
        let p = r#"{"type":"call_signal","to_user_id":2,"call_id":"c","kind":"ring"}"#;
        assert_eq!(dec_v1(p), Err(ReplyError::UnknownType));
    }

    #[test]
    fn the_relayed_frame_carries_the_payload_text_as_sent() {
        let mut out = Vec::new();
        let raw = br#"{ "sdp" : "v=0\r\n", "n": 1.50 }"#;
        encode_call_signal(&mut out, 1, "al\"ice", "c1", SignalKind::Answer, Some(raw));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains(r#","payload":{ "sdp" : "v=0\r\n", "n": 1.50 }}"#));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type":"call_signal","from_user_id":1,"from_username":"al\"ice",
                   "call_id":"c1","kind":"answer","payload":{"sdp":"v=0\r\n","n":1.50}})
        );
        out.clear();
        encode_call_signal(&mut out, 1, "a", "c1", SignalKind::Ring, None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("payload").is_none());
        assert!(SignalKind::Hangup.tells_own_tabs() && !SignalKind::Candidate.tells_own_tabs());
    }
}
