//! The raw text of one member of a JSON object, for relaying a value
//! byte for byte (the `payload` of a `call_signal`, docs/protocol.md §9.6).
//!
//! Owns a small scanner over a document that is already known to be valid
//! JSON (the decoder parsed it): it walks the top-level object's members,
//! skipping values by nesting depth and string escapes, and returns the
//! byte range of the last member named `key` (later duplicates win, as
//! everywhere in the decoder). Keys written with escapes are compared
//! after unescaping.
//!
//! Must never: be given unvalidated input (it does not report errors, it
//! only stays in bounds), or copy the value.

/// The text of the value of the last top-level member `key` of the JSON
/// object `doc`, white space around it excluded.
pub fn member_text<'a>(doc: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut s = Scan { doc, pos: 0 };
    s.ws();
    if s.peek()? != b'{' {
        return None;
    }
    s.pos += 1;
    let mut found = None;
    loop {
        s.ws();
        match s.peek()? {
            b'}' => return found,
            b',' => {
                s.pos += 1;
                continue;
            }
            b'"' => {}
            _ => return found,
        }
        let name = s.string()?;
        s.ws();
        if s.peek()? != b':' {
            return found;
        }
        s.pos += 1;
        s.ws();
        let start = s.pos;
        s.value()?;
        if key_is(name, key) {
            found = Some(&doc[start..s.pos]);
        }
    }
}

/// Whether the raw key text (between its quotes) names `key`.
fn key_is(raw: &[u8], key: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == key.as_bytes();
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == key)
}

struct Scan<'a> {
    doc: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.doc.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// At an opening quote: returns the raw text inside the quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.pos + 1;
        let mut i = start;
        loop {
            match *self.doc.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        Some(&self.doc[start..i])
    }

    /// Skips one value.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.pos += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(doc: &'a str, key: &str) -> Option<&'a str> {
        member_text(doc.as_bytes(), key).map(|b| std::str::from_utf8(b).unwrap())
    }

    #[test]
    fn finds_the_member_text_as_written() {
        let doc = r#" { "type":"call_signal" , "payload" : { "a" : [1, "}\"]" , {"b":null}] } , "x":1 } "#;
        assert_eq!(
            m(doc, "payload"),
            Some(r#"{ "a" : [1, "}\"]" , {"b":null}] }"#)
        );
        assert_eq!(m(doc, "type"), Some(r#""call_signal""#));
        assert_eq!(m(doc, "x"), Some("1"));
        assert_eq!(m(doc, "nope"), None);
        assert_eq!(m(r#"{"payload":-1.5e3}"#, "payload"), Some("-1.5e3"));
        assert_eq!(m(r#"{"payload":null,"k":true}"#, "payload"), Some("null"));
        assert_eq!(m(r#"{"payload":"é\\"}"#, "payload"), Some(r#""é\\""#));
    }

    #[test]
    fn later_duplicates_and_escaped_keys() {
        assert_eq!(m(r#"{"payload":1,"payload":[2]}"#, "payload"), Some("[2]"));
        assert_eq!(
            m(r#"{"p\u0061yload":{"z":0}}"#, "payload"),
            Some(r#"{"z":0}"#)
        );
        assert_eq!(m(r#"{"pay\"load":1}"#, "payload"), None);
        assert_eq!(m("[1]", "payload"), None);
        assert_eq!(m("", "payload"), None);
    }
}
