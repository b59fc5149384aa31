//! Low-level JSON writers for the server encoders: integers, escaped
//! strings and Django REST framework timestamps, appended to a `Vec<u8>`.
//!
//! Owns the escaping table (the same escapes as serde_json, non-ASCII left
//! as UTF-8) and the digit writers, so the encoders never go through
//! `fmt` or serde on the fan-out path.
//!
//! Must never: produce output that differs from serde_json's for a string
//! (checked by the tests), or write anything but what it is asked to append.

use std::io::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Appends the timestamp as Django REST framework renders it, unquoted:
/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` — six fraction digits only when the
/// microseconds are not zero (Python `isoformat`); nanoseconds are truncated.
pub fn write_timestamp(out: &mut Vec<u8>, ts: DateTime<Utc>) {
    let year = ts.year();
    match u32::try_from(year) {
        Ok(y) if y <= 9999 => push_digits(out, y, 4),
        _ => {
            let _ = write!(out, "{year:04}");
        }
    }
    out.push(b'-');
    push_digits(out, ts.month(), 2);
    out.push(b'-');
    push_digits(out, ts.day(), 2);
    out.push(b'T');
    push_digits(out, ts.hour(), 2);
    out.push(b':');
    push_digits(out, ts.minute(), 2);
    out.push(b':');
    push_digits(out, ts.second(), 2);
    // A leap second shows as nanosecond >= 1e9 in chrono; Python has none.
    let micros = ts.nanosecond() % 1_000_000_000 / 1_000;
    if micros != 0 {
        out.push(b'.');
        push_digits(out, micros, 6);
    }
    out.push(b'Z');
}

/// Appends `v` as exactly `width` (at most 6) zero-padded decimal digits.
fn push_digits(out: &mut Vec<u8>, mut v: u32, width: usize) {
    let mut buf = [b'0'; 6];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Appends `n` in decimal.
pub(super) fn push_i64(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// For each byte: 0 if it is copied as is, else the char after the `\`
/// (`u` for `\u00XX`). The same escapes as serde_json; non-ASCII is UTF-8.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` as a quoted, escaped JSON string (output equals serde_json's).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[usize::from(b)];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        push_escape(out, b, esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn push_escape(out: &mut Vec<u8>, b: u8, esc: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if esc == b'u' {
        let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
        out.extend_from_slice(b"\\u00");
        out.extend_from_slice(&hex);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::protocol::testing::Rng;

    #[test]
    fn integers() {
        for n in [
            0,
            1,
            -1,
            9,
            10,
            99,
            100,
            123_456_789,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            let mut out = Vec::new();
            push_i64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn string_escaping_matches_serde_json() {
        let check = |s: &str| {
            let mut out = vec![b'x'];
            write_json_str(&mut out, s);
            assert_eq!(out[1..], serde_json::to_vec(s).unwrap(), "{s:?}");
        };
        for c in (0..0x80).filter_map(char::from_u32) {
            check(&c.to_string());
            check(&format!("ab{c}cd{c}"));
        }
        for s in [
            "",
            "plain",
            "é😀\u{2028}\u{7f}\u{85}",
            "\\\\\"\"",
            "\u{0}\u{1f}end",
        ] {
            check(s);
        }
        let mut rng = Rng(7);
        let pool = [
            'a', ' ', '"', '\\', '\n', '\u{0}', '\u{1b}', 'é', '€', '😀', '\u{7f}', '/',
        ];
        for _ in 0..2_000 {
            let s: String = (0..rng.below(24))
                .map(|_| pool[rng.below(pool.len())])
                .collect();
            check(&s);
        }
    }

    #[test]
    fn timestamps_render_like_django_rest_framework() {
        let at = |y, mo, d, h, mi, s, nanos| {
            let base = Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
            let mut out = Vec::new();
            write_timestamp(&mut out, base + chrono::Duration::nanoseconds(nanos));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            at(2025, 12, 11, 10, 30, 0, 123_456_000),
            "2025-12-11T10:30:00.123456Z"
        );
        assert_eq!(at(2025, 12, 11, 10, 30, 0, 0), "2025-12-11T10:30:00Z");
        assert_eq!(
            at(2025, 1, 2, 3, 4, 5, 1_000),
            "2025-01-02T03:04:05.000001Z"
        );
        assert_eq!(
            at(2025, 1, 2, 3, 4, 5, 999),
            "2025-01-02T03:04:05Z",
            "sub-µs truncated"
        );
        assert_eq!(
            at(2025, 1, 2, 3, 4, 5, 123_456_789),
            "2025-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            at(999, 12, 31, 23, 59, 59, 500_000_000),
            "0999-12-31T23:59:59.500000Z"
        );
        let mut out = Vec::new();
        let leap = Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap()
            + chrono::Duration::nanoseconds(0);
        write_timestamp(&mut out, leap.with_nanosecond(1_250_000_000).unwrap());
        assert_eq!(out, b"2016-12-31T23:59:59.250000Z");
    }
}
