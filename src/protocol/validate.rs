//! Field rules shared by the client message types, with the Python
//! semantics of the original `ChatConsumer` (docs/protocol.md §3).
//!
//! Owns Python's `str.strip()` / `str.isspace()` white-space set, the
//! content rules of a chat message (strip, empty, too long in code points,
//! U+0000 — in that order) and the parsing of an id sent as a decimal
//! string, and the `message_id` rule of the v2 types that point at a
//! message (`mark_read`, `react`). A v2 field that reuses one of these (a
//! `message_id`, a text) calls it from its own type's file.
//!
//! Must never: allocate (every rule borrows its input and returns a slice of
//! it or a number), or drift from Python: the white-space set is checked
//! against Python's table code point by code point.

use super::errors::ReplyError;
use super::value::Json;

/// Longest accepted `chat_message` content, in Unicode code points after stripping.
pub const MAX_CONTENT_CHARS: usize = 5000;

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

/// ASCII digits only (leading zeros allowed), positive, fits `i64`.
pub(super) fn parse_decimal_id(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|&n| n > 0)
}

/// The `message_id` of `mark_read` and `react` (docs/protocol.md §9.3, §9.4):
/// a JSON integer or a string of ASCII digits (as `delete_message` accepts).
///
/// Missing, `null`, any other JSON type (bool, float, array, object) or any
/// other string (empty, signed, spaced, fractional) → `Invalid message
/// format`. A well-formed id that cannot name a message — zero, negative, or
/// beyond `i64::MAX` — decodes as `0`: no message has it, so the session's
/// store lookup answers the documented `Failed to mark read` /
/// `Failed to react`, exactly as for an id that names no message. (Integer
/// literals beyond the 64-bit range are floats to both JSON parsers, hence
/// `Invalid message format`. `-0` is the integer 0 on the fast path; the
/// serde_json slow path, taken only for a frame simd-json rejects, e.g. one
/// that also carries an integer beyond 64 bits, reads it as `-0.0`: there
/// it is `Invalid message format`. Either way an error reply.)
pub(super) fn target_message_id(message_id: Option<Json<'_>>) -> Result<i64, ReplyError> {
    match message_id {
        Some(Json::Int(n)) => Ok(n.max(0)),
        Some(Json::BigInt) => Ok(0),
        Some(Json::Str(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(s.parse::<i64>().unwrap_or(0))
        }
        _ => Err(ReplyError::InvalidFormat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{chat, chat_frame, dec, PY_SPACE};

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
}
