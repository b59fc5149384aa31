//! File-upload progress (v2): `upload_progress` in and out (docs/protocol.md §9.7).
//!
//! Owns the `upload_progress` rule — `upload_id` 1–64 characters of
//! `[A-Za-z0-9_-]`, `file_name` a string of 1–[`MAX_FILE_NAME_CHARS`]
//! code points, `percent` a JSON integer 0–100 — and the relayed frame's
//! encoder. How often values go out is `upload_throttle.rs`'s business.
//!
//! Must never: store anything, or allocate on decode (the strings borrow
//! from the decoder).

use super::call_signal::is_valid_id;
use super::errors::ReplyError;
use super::json::{push_i64, write_json_str};
use super::message::ClientMessage;
use super::value::Json;
use crate::ids::UserId;

/// Longest `file_name`, in code points.
pub const MAX_FILE_NAME_CHARS: usize = 255;

/// `upload_id`, `file_name`, `percent`.
pub(super) fn decode<'a>(
    upload_id: Option<Json<'a>>,
    file_name: Option<Json<'a>>,
    percent: Option<Json<'a>>,
) -> Result<ClientMessage<'a>, ReplyError> {
    let (Some(Json::Str(upload_id)), Some(Json::Str(file_name)), Some(Json::Int(percent))) =
        (upload_id, file_name, percent)
    else {
        return Err(ReplyError::InvalidFormat);
    };
    let name_ok = !file_name.is_empty() && file_name.chars().count() <= MAX_FILE_NAME_CHARS;
    if !is_valid_id(upload_id) || !name_ok || !(0..=100).contains(&percent) {
        return Err(ReplyError::InvalidFormat);
    }
    Ok(ClientMessage::UploadProgress {
        upload_id,
        file_name,
        percent: percent as u8,
    })
}

/// Appends `{"type":"upload_progress","user_id":U,"username":"…","upload_id":"…","file_name":"…","percent":P}`.
pub fn encode_upload_progress(
    out: &mut Vec<u8>,
    user: UserId,
    username: &str,
    upload_id: &str,
    file_name: &str,
    percent: u8,
) {
    out.reserve(110 + username.len() + upload_id.len() + file_name.len());
    out.extend_from_slice(br#"{"type":"upload_progress","user_id":"#);
    push_i64(out, user);
    out.extend_from_slice(br#","username":"#);
    write_json_str(out, username);
    out.extend_from_slice(br#","upload_id":""#);
    out.extend_from_slice(upload_id.as_bytes()); // [A-Za-z0-9_-]
    out.extend_from_slice(br#"","file_name":"#);
    write_json_str(out, file_name);
    out.extend_from_slice(br#","percent":"#);
    push_i64(out, i64::from(percent));
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{dec, dec_v1, Got};

    #[test]
    fn the_rule() {
        let p = r#"{"type":"upload_progress","upload_id":"u-1","file_name":"a \"b\".pdf","percent":100}"#;
        assert_eq!(
            dec(p),
            Ok(Got::Upload("u-1".into(), "a \"b\".pdf".into(), 100))
        );
        assert_eq!(dec_v1(p), Err(ReplyError::UnknownType));
        let name = "é".repeat(255);
        let p = json!({"type":"upload_progress","upload_id":"u","file_name":name,"percent":0});
        assert_eq!(
            dec(p.to_string()),
            Ok(Got::Upload("u".into(), name.clone(), 0))
        );
        for bad in [
            json!({"type":"upload_progress","upload_id":"u","file_name":"f","percent":101}),
            json!({"type":"upload_progress","upload_id":"u","file_name":"f","percent":-1}),
            json!({"type":"upload_progress","upload_id":"u","file_name":"f","percent":50.5}),
            json!({"type":"upload_progress","upload_id":"u","file_name":"f","percent":"5"}),
            json!({"type":"upload_progress","upload_id":"u","file_name":"f"}),
            json!({"type":"upload_progress","upload_id":"u","file_name":"","percent":5}),
            json!({"type":"upload_progress","upload_id":"u","file_name":format!("{name}x"),"percent":5}),
            json!({"type":"upload_progress","upload_id":"u u","file_name":"f","percent":5}),
            json!({"type":"upload_progress","upload_id":"","file_name":"f","percent":5}),
            json!({"type":"upload_progress","file_name":"f","percent":5}),
            json!({"type":"upload_progress","upload_id":"u","file_name":7,"percent":5}),
        ] {
            assert_eq!(
                dec(bad.to_string()),
                Err(ReplyError::InvalidFormat),
                "{bad}"
            );
        }
    }

    #[test]
    fn encoder() {
        let mut out = Vec::new();
        encode_upload_progress(&mut out, 3, "bob", "u1", "r\u{e9}sum\u{e9}\n.pdf", 42);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"type":"upload_progress","user_id":3,"username":"bob","upload_id":"u1",
                   "file_name":"r\u{e9}sum\u{e9}\n.pdf","percent":42})
        );
    }
}
