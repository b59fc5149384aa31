//! JSON as Python's `json.dumps(v)` writes it with its defaults, the bytes
//! channels_redis's `serializer_format="json"` puts on the wire:
//! `", "` and `": "` separators, `ensure_ascii` (every character outside
//! printable ASCII as `\uXXXX`, lowercase hex, a surrogate pair above
//! U+FFFF), floats as `repr(float)`.
//!
//! Owns that writer (the reader is `json.rs`: any JSON reads the same).
//!
//! Must never: write anything but what `json.dumps` would for the same
//! Python value (byte for byte, checked against vectors made by Python).

use std::io::Write as _;

use super::Value;

/// Appends `json.dumps(v)` of the Python value `v` stands for.
pub(crate) fn encode_python_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::UInt(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) => python_float(*f, out),
        Value::Str(s) => ascii_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                encode_python_json(item, out);
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            out.push(b'{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                ascii_str(k, out);
                out.extend_from_slice(b": ");
                encode_python_json(item, out);
            }
            out.push(b'}');
        }
    }
}

/// A string as `json.dumps` quotes it with `ensure_ascii=True`.
fn ascii_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push(b'"');
}

/// `repr(f)` (what `json.dumps` writes for a float): the shortest digits
/// that read back as `f`, positional when the decimal exponent is in
/// -4..16, else `d.ddde±XX`; positional always has a `.`; non-finite as
/// Python writes them (`NaN`, `Infinity`, `-Infinity`).
fn python_float(f: f64, out: &mut Vec<u8>) {
    if f.is_nan() {
        return out.extend_from_slice(b"NaN");
    }
    if f.is_infinite() {
        let text: &[u8] = if f > 0.0 { b"Infinity" } else { b"-Infinity" };
        return out.extend_from_slice(text);
    }
    if f.is_sign_negative() {
        out.push(b'-');
    }
    // Rust's `{:e}` without a precision is the shortest round-trip form,
    // the same digits Python's repr picks: "d[.ddd]e<exp>".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Python's decpt: the value is 0.<digits> × 10^decpt.
    let decpt = exp + 1;
    if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1);
        out.extend_from_slice(first.as_bytes());
        if !rest.is_empty() {
            out.push(b'.');
            out.extend_from_slice(rest.as_bytes());
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    } else {
        positional(&digits, decpt, out);
    }
}

/// `digits` with the point after `decpt` of them (padding with zeros), and
/// `.0` when nothing follows the point.
fn positional(digits: &str, decpt: i32, out: &mut Vec<u8>) {
    let n = digits.len() as i32;
    if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        out.extend_from_slice(digits.as_bytes());
    } else if decpt >= n {
        out.extend_from_slice(digits.as_bytes());
        out.extend(std::iter::repeat_n(b'0', (decpt - n) as usize));
        out.extend_from_slice(b".0");
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(v: &Value) -> String {
        let mut out = Vec::new();
        encode_python_json(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Expected text from CPython 3.11 `json.dumps` / `repr`.
    #[test]
    fn floats_as_repr() {
        let table = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1234567890123456.7, "1234567890123456.8"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5e-300, "-2.5e-300"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (f, want) in table {
            assert_eq!(py(&Value::Float(f)), want, "{f:e}");
        }
    }

    #[test]
    fn strings_with_ensure_ascii() {
        let s = Value::Str("a\"\\/\n\r\t\u{8}\u{c}\u{1}\u{7f}é€😀".into());
        assert_eq!(
            py(&s),
            r#""a\"\\/\n\r\t\b\f\u0001\u007f\u00e9\u20ac\ud83d\ude00""#
        );
    }

    #[test]
    fn separators_and_nesting() {
        let v = Value::Map(vec![
            ("type".into(), Value::Str("x".into())),
            (
                "l".into(),
                Value::Array(vec![Value::Int(-1), Value::Nil, Value::Bool(false)]),
            ),
            ("big".into(), Value::UInt(u64::MAX)),
            ("e".into(), Value::Map(vec![])),
            ("a".into(), Value::Array(vec![])),
        ]);
        assert_eq!(
            py(&v),
            r#"{"type": "x", "l": [-1, null, false], "big": 18446744073709551615, "e": {}, "a": []}"#
        );
    }
}
