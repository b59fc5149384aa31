//! Reactions (v2): `react` in, `reaction` out (docs/protocol.md §9.4).
//!
//! Owns the `react` rule — `message_id` as for `mark_read` (an id that can
//! name no message decodes as 0 and the session answers `Failed to react`),
//! `emoji` a string of 1–[`MAX_EMOJI_CHARS`] code points without Unicode
//! `White_Space` or control (`Cc`) characters (joiners and variation
//! selectors are fine), `on` absent/`null` → true, else a boolean — and the
//! `reaction` event encoder.
//!
//! Must never: normalise or otherwise rewrite the emoji (it is stored and
//! compared byte for byte), or allocate for it (it borrows from the decoder).

use super::errors::ReplyError;
use super::json::{push_i64, write_json_str};
use super::message::ClientMessage;
use super::validate::target_message_id;
use super::value::Json;
use crate::ids::{MessageId, UserId};

/// Longest accepted `emoji`, in Unicode code points.
pub const MAX_EMOJI_CHARS: usize = 16;

/// `message_id` (see `mark_read.rs`), `emoji`, `on` (default true).
pub(super) fn decode<'a>(
    message_id: Option<Json<'a>>,
    emoji: Option<Json<'a>>,
    on: Option<Json<'a>>,
) -> Result<ClientMessage<'a>, ReplyError> {
    let message_id = target_message_id(message_id)?;
    let emoji = match emoji {
        Some(Json::Str(s)) if is_valid_emoji(s) => s,
        _ => return Err(ReplyError::InvalidFormat),
    };
    let on = match on {
        None | Some(Json::Null) => true,
        Some(Json::Bool(on)) => on,
        Some(_) => return Err(ReplyError::InvalidFormat),
    };
    Ok(ClientMessage::React {
        message_id,
        emoji,
        on,
    })
}

/// 1–16 code points, none `White_Space` (`char::is_whitespace` is exactly
/// that property) and none `Cc` (`char::is_control` is exactly that category).
fn is_valid_emoji(s: &str) -> bool {
    // At most 4 bytes a code point: a longer string has too many.
    if s.is_empty() || s.len() > 4 * MAX_EMOJI_CHARS {
        return false;
    }
    let mut count = 0;
    for c in s.chars() {
        count += 1;
        if count > MAX_EMOJI_CHARS || c.is_whitespace() || c.is_control() {
            return false;
        }
    }
    true
}

/// Appends `{"type":"reaction","message_id":N,"user_id":U,"username":"…","emoji":"…","on":true}`.
pub fn encode_reaction(
    out: &mut Vec<u8>,
    message_id: MessageId,
    user_id: UserId,
    username: &str,
    emoji: &str,
    on: bool,
) {
    out.reserve(100 + username.len() + emoji.len());
    out.extend_from_slice(br#"{"type":"reaction","message_id":"#);
    push_i64(out, message_id);
    out.extend_from_slice(br#","user_id":"#);
    push_i64(out, user_id);
    out.extend_from_slice(br#","username":"#);
    write_json_str(out, username);
    out.extend_from_slice(br#","emoji":"#);
    write_json_str(out, emoji);
    out.extend_from_slice(if on {
        br#","on":true}"#
    } else {
        br#","on":false}"#
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{dec, dec_v1, is_cc, parse, Got, WHITE_SPACE};
    use crate::protocol::{ClientMessage, Decoder, Version};

    fn react(id: &str, emoji: &str, on: &str) -> String {
        let mut p = format!(r#"{{"type":"react","message_id":{id}"#);
        if !emoji.is_empty() {
            p += &format!(r#","emoji":{emoji}"#);
        }
        if !on.is_empty() {
            p += &format!(r#","on":{on}"#);
        }
        p + "}"
    }

    fn ok(id: i64, emoji: &str, on: bool) -> Result<Got, ReplyError> {
        Ok(Got::React(id, emoji.to_owned(), on))
    }

    #[test]
    fn react_variants() {
        use ReplyError::InvalidFormat as Bad;
        let cases: &[(String, Result<Got, ReplyError>)] = &[
            (react("5", "\"👍\"", ""), ok(5, "👍", true)),
            (react("5", "\"👍\"", "null"), ok(5, "👍", true)),
            (react("5", "\"👍\"", "true"), ok(5, "👍", true)),
            (react("\"5\"", "\"👍\"", "false"), ok(5, "👍", false)),
            (react("0", "\"👍\"", "false"), ok(0, "👍", false)),
            (react("-7", "\"x\"", ""), ok(0, "x", true)),
            (react("9223372036854775808", "\"x\"", ""), ok(0, "x", true)),
            (react("5", "\"\\ud83d\\udc4d\"", ""), ok(5, "👍", true)),
            (react("5", "\"❤️\"", ""), ok(5, "❤\u{fe0f}", true)),
            (react("5", "\":+1:\"", ""), ok(5, ":+1:", true)),
            (react("null", "\"👍\"", ""), Err(Bad)),
            (react("1.0", "\"👍\"", ""), Err(Bad)),
            (react("true", "\"👍\"", ""), Err(Bad)),
            (react("\"x\"", "\"👍\"", ""), Err(Bad)),
            (react("5", "", ""), Err(Bad)),
            (react("5", "null", ""), Err(Bad)),
            (react("5", "\"\"", ""), Err(Bad)),
            (react("5", "1", ""), Err(Bad)),
            (react("5", "[\"👍\"]", ""), Err(Bad)),
            (react("5", "{}", ""), Err(Bad)),
            (react("5", "\"👍\"", "1"), Err(Bad)),
            (react("5", "\"👍\"", "0"), Err(Bad)),
            (react("5", "\"👍\"", "\"true\""), Err(Bad)),
            (react("5", "\"👍\"", "[]"), Err(Bad)),
        ];
        for (p, want) in cases {
            assert_eq!(&dec(p), want, "{p}");
            assert_eq!(dec_v1(p), Err(ReplyError::UnknownType), "v1: {p}");
        }
        assert_eq!(dec(r#"{"type":"react","emoji":"👍"}"#), Err(Bad));
    }

    #[test]
    fn emoji_length_in_code_points() {
        let family = "👨\u{200d}👩\u{200d}👧\u{200d}👦"; // 7 code points, 25 bytes
        let flag = "🇺🇦";
        let keycap = "1\u{fe0f}\u{20e3}";
        let skin = "👍🏽";
        for e in [
            family, flag, keycap, skin, "❤️", "a", "\u{200d}", "\u{feff}",
        ] {
            assert!(is_valid_emoji(e), "{e:?}");
        }
        assert!(is_valid_emoji(&"😀".repeat(16)));
        assert!(!is_valid_emoji(&"😀".repeat(17)));
        assert!(is_valid_emoji(&"a".repeat(16)));
        assert!(!is_valid_emoji(&"a".repeat(17)));
        assert!(is_valid_emoji(&format!("{family}{family}\u{200d}a")));
        assert!(!is_valid_emoji(&format!("{family}{family}\u{200d}ab")));
        let p = react("1", &serde_json::to_string(&"é".repeat(16)).unwrap(), "");
        assert_eq!(dec(&p), ok(1, &"é".repeat(16), true));
    }

    #[test]
    fn emoji_white_space_and_controls_are_exact() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let banned = WHITE_SPACE.contains(&(c as u32)) || is_cc(c as u32);
            let s = c.to_string();
            assert_eq!(is_valid_emoji(&s), !banned, "{:#x}", c as u32);
        }
        for c in WHITE_SPACE
            .into_iter()
            .chain((0..=0x9f).filter(|&c| is_cc(c)))
        {
            let c = char::from_u32(c).unwrap();
            let p = react("1", &serde_json::to_string(&format!("👍{c}")).unwrap(), "");
            assert_eq!(dec(&p), Err(ReplyError::InvalidFormat), "{:#x}", c as u32);
        }
        // Python's isspace() set is not the rule: U+001C–U+001F are controls
        // (banned anyway), U+180E and U+200B are neither (allowed).
        assert!(is_valid_emoji("\u{180e}") && is_valid_emoji("\u{200b}"));
    }

    #[test]
    fn emoji_borrows_from_the_decoder() {
        let mut d = Decoder::new();
        let p = react("1", "\"\\u2764\\ufe0f\"", "");
        match d.decode(p.as_bytes(), Version::V2) {
            Ok(ClientMessage::React { emoji, .. }) => {
                assert_eq!(emoji, "❤️");
                let at = emoji.as_ptr() as usize;
                let scratch = d.scratch_range();
                assert!(scratch.contains(&at), "borrowed from scratch");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reaction_encoding() {
        let mut out = Vec::new();
        encode_reaction(&mut out, 123, 2, "janedoe", "👍", true);
        let expected = r#"{"type":"reaction","message_id":123,"user_id":2,"username":"janedoe","emoji":"👍","on":true}"#;
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        out.clear();
        encode_reaction(&mut out, 1, 3, "j\"ane", "❤️", false);
        let expected = json!({"type": "reaction", "message_id": 1, "user_id": 3, "username": "j\"ane", "emoji": "❤️", "on": false});
        assert_eq!(parse(&out), expected);
    }
}
