//! The [`Decoder`]: one client text frame in, one validated
//! [`ClientMessage`] or [`ReplyError`] out.
//!
//! Owns the buffers of the hot path (the padded scratch copy simd-json
//! unescapes into, simd-json's buffers and its tape, all reused frame after
//! frame) and the choice between the fast path (one simd-json pass) and the
//! slow path (serde_json, only for frames simd-json rejects). What a frame
//! means is decided in `envelope.rs` and the per-type files.
//!
//! Must never: allocate on the fast path once the buffers have grown to the
//! frame size; hand out a `&str` that does not borrow from `self`.

use serde::Deserialize;

use super::envelope::{ClientMessage, Frame};
use super::errors::ReplyError;

/// Decodes client text frames. One per shard, reused for every frame.
///
/// Parsing is simd-json's `fill_tape_padded` + `Deserializer::from_tape`
/// rather than `simd_json::serde::from_slice_with_buffers`: the latter
/// allocates a fresh tape on every call, this keeps it (and skips simd-json's
/// internal padded copy of the input, since `scratch` carries the padding).
pub struct Decoder {
    buffers: simd_json::Buffers,
    /// The payload plus `simd_json::INPUT_PADDING` bytes; simd-json unescapes
    /// strings in place here, so decoded `&str`s borrow from it.
    scratch: Vec<u8>,
    /// simd-json's tape, kept empty between calls so its allocation is reused.
    tape: simd_json::Tape<'static>,
    /// Chat content decoded by the slow path (serde_json), which cannot lend
    /// from `scratch`.
    spill: String,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with buffers sized for a typical frame; they grow as needed.
    pub fn new() -> Self {
        Self {
            buffers: simd_json::Buffers::new(512),
            scratch: Vec::with_capacity(512 + simd_json::INPUT_PADDING),
            tape: simd_json::Tape(Vec::with_capacity(64)),
            spill: String::new(),
        }
    }

    /// Decodes and validates one text frame.
    ///
    /// The fast path is one simd-json parse. Only when simd-json rejects the
    /// frame does serde_json look at it again, to tell invalid JSON from
    /// numbers simd-json cannot represent (integers beyond 64 bits).
    pub fn decode<'a>(&'a mut self, payload: &[u8]) -> Result<ClientMessage<'a>, ReplyError> {
        let Self {
            buffers,
            scratch,
            tape,
            spill,
        } = self;
        scratch.clear();
        scratch.extend_from_slice(payload);
        scratch.resize(payload.len() + simd_json::INPUT_PADDING, b' ');
        let mut filled: simd_json::Tape<'a> =
            std::mem::replace(tape, simd_json::Tape(Vec::new())).reset();
        if simd_json::fill_tape_padded(scratch, payload.len(), buffers, &mut filled).is_err() {
            *tape = filled.reset();
            return decode_slow(payload, spill);
        }
        let mut de = simd_json::Deserializer::from_tape(filled);
        let frame = Frame::deserialize(&mut de);
        *tape = de.into_tape().reset();
        frame.map_err(|_| ReplyError::InvalidJson)?.classify()
    }
}

/// Classifies a frame simd-json rejected. Allocates; rare.
#[cold]
fn decode_slow<'s>(payload: &[u8], spill: &'s mut String) -> Result<ClientMessage<'s>, ReplyError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| ReplyError::InvalidJson)?;
    match Frame::from_value(&value).classify()? {
        ClientMessage::Chat { content } => {
            spill.clear();
            spill.push_str(content);
            Ok(ClientMessage::Chat { content: spill })
        }
        ClientMessage::Delete { message_id } => Ok(ClientMessage::Delete { message_id }),
        ClientMessage::Typing { is_typing } => Ok(ClientMessage::Typing { is_typing }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::protocol::testing::{chat, chat_frame, dec, got, Got, Rng, PY_SPACE};

    #[test]
    fn invalid_json() {
        for p in [
            "",
            " ",
            "{",
            "{\"type\":\"typing\"",
            "{\"type\":\"typing\",}",
            "{'type':'typing'}",
            "nul",
            "NaN",
            "{\"type\":\"typing\",\"is_typing\":Infinity}",
            "{\"type\":\"chat_message\",\"content\":\"hi\"} x",
            "{\"type\":\"chat_message\",\"content\":\"hi\"}{}",
            "1 2",
            "\u{feff}{\"type\":\"typing\"}",
            "{\"type\":\"chat_message\",\"content\":\"a\tb\"}",
            "{\"type\":\"chat_message\",\"content\":\"\\ud800\"}",
            "{\"type\":\"chat_message\",\"content\":\"\\x41\"}",
            "{\"type\":\"delete_message\",\"message_id\":01}",
            "{\"type\":\"delete_message\",\"message_id\":1e999}",
        ] {
            assert_eq!(dec(p), Err(ReplyError::InvalidJson), "{p:?}");
        }
        assert_eq!(
            dec(b"{\"type\":\"chat_message\",\"content\":\"\xff\"}"),
            Err(ReplyError::InvalidJson)
        );
    }

    #[test]
    fn escaped_strings_decode_borrowed() {
        let p =
            r#"{"type":"chat_message","content":"he said \"hi\"\n\u00e9 \ud83d\ude00 \\ \/ \t"}"#;
        let mut d = Decoder::new();
        let m = d.decode(p.as_bytes()).unwrap();
        let ClientMessage::Chat { content } = m else {
            panic!("{m:?}")
        };
        assert_eq!(content, "he said \"hi\"\né 😀 \\ /");
        let content_at = content.as_ptr() as usize;
        let scratch = d.scratch.as_ptr_range();
        let scratch = scratch.start as usize..scratch.end as usize;
        assert!(scratch.contains(&content_at), "borrowed from scratch");
        let p = r#"{"\u0074ype":"chat\u005fmessage","cont\u0065nt":"\u0041"}"#;
        assert_eq!(dec(p), chat("A"));
    }

    #[test]
    fn slow_path_keeps_python_semantics_for_huge_integers() {
        let p = r#"{"type":"chat_message","content":" caf\u00e9 ","n":18446744073709551616}"#;
        let mut d = Decoder::new();
        let content_at = match d.decode(p.as_bytes()) {
            Ok(ClientMessage::Chat { content }) => (content == "café").then_some(content.as_ptr()),
            _ => None,
        };
        assert_eq!(
            content_at,
            Some(d.spill.as_ptr()),
            "decoded by the slow path"
        );
        let p = r#"{"type":"typing","is_typing":true,"n":-99999999999999999999}"#;
        assert_eq!(d.decode(p.as_bytes()).map(got), Ok(Got::Typing(true)));
        let p = r#"[18446744073709551616]"#;
        assert_eq!(
            d.decode(p.as_bytes()).map(got),
            Err(ReplyError::UnknownType)
        );
        let p = r#"{"type":18446744073709551616}"#;
        assert_eq!(
            d.decode(p.as_bytes()).map(got),
            Err(ReplyError::UnknownType)
        );
        // The fast path still works after the slow one.
        assert_eq!(d.decode(chat_frame("x").as_bytes()).map(got), chat("x"));
    }

    #[test]
    fn decoder_reuses_its_buffers() {
        let mut d = Decoder::new();
        let big = chat_frame(&"word ".repeat(900));
        let small = chat_frame("hi");
        for p in [&big, &small, &big] {
            assert!(d.decode(p.as_bytes()).is_ok());
        }
        let caps = (d.scratch.capacity(), d.tape.0.capacity(), d.tape.0.as_ptr());
        for p in [&small, &big, &"{".to_owned(), &small] {
            let _ = d.decode(p.as_bytes());
            assert!(d.tape.0.is_empty());
            assert_eq!(
                (d.scratch.capacity(), d.tape.0.capacity(), d.tape.0.as_ptr()),
                caps
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut d = Decoder::new();
        let alphabet = b"{}[]\":,\\ 0123456789.-+eEtrufalsn\t\n\x00\x7f\xc3\xa9\xff";
        for i in 0..10_000 {
            let len = rng.below(64);
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if i % 2 == 0 {
                        r as u8
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let _ = d.decode(&payload);
        }
    }

    /// An independent model of the original consumer on `serde_json::Value`.
    fn reference(payload: &[u8]) -> Result<Got, ReplyError> {
        use ReplyError::*;
        let v: Value = serde_json::from_slice(payload).map_err(|_| InvalidJson)?;
        let obj = v.as_object().ok_or(UnknownType)?;
        match obj.get("type").and_then(Value::as_str) {
            Some("chat_message") => {
                let raw = match obj.get("content") {
                    None => "",
                    Some(Value::String(s)) => s,
                    Some(_) => return Err(InvalidFormat),
                };
                let s = raw.trim_matches(|c| PY_SPACE.contains(&(c as u32)));
                match () {
                    _ if s.is_empty() => Err(EmptyMessage),
                    _ if s.chars().count() > 5000 => Err(MessageTooLong),
                    _ if s.contains('\0') => Err(InvalidFormat),
                    _ => Ok(Got::Chat(s.to_owned())),
                }
            }
            Some("delete_message") => {
                let id = obj.get("message_id").unwrap_or(&Value::Null);
                let falsy = match id {
                    Value::Null => true,
                    Value::Bool(b) => !b,
                    Value::Number(n) => n.as_f64() == Some(0.0),
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                };
                if falsy {
                    return Err(MessageIdRequired);
                }
                let id = match id {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
                    _ => None,
                };
                id.filter(|&n| n > 0).map(Got::Delete).ok_or(DeleteFailed)
            }
            Some("typing") => match obj.get("is_typing") {
                None => Ok(Got::Typing(false)),
                Some(Value::Bool(b)) => Ok(Got::Typing(*b)),
                Some(_) => Err(InvalidFormat),
            },
            _ => Err(UnknownType),
        }
    }

    #[test]
    fn mutated_frames_match_the_reference_model() {
        let seeds = [
            r#"{"type":"chat_message","content":" Hello \"world\" \u00e9\n"}"#,
            r#"{"type":"delete_message","message_id":"0012"}"#,
            r#"{"type":"delete_message","message_id":12,"x":[1,{"a":null}]}"#,
            r#"{"type":"typing","is_typing":true}"#,
            r#"{"type":"typing","is_typing":null}"#,
            r#"{"type":"chat_message","content":"a\u0000"}"#,
            r#"[{"type":"typing"},1.5e3,-0,"s"]"#,
        ];
        let alphabet = b"{}[]\":,\\ 0123456789.-+eEtrufalsnu\x00\xc3\xa9";
        let mut rng = Rng(42);
        let mut d = Decoder::new();
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..20_000 {
            let mut p = seeds[rng.below(seeds.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(p.len() + 1);
                let b = alphabet[rng.below(alphabet.len())];
                match rng.below(3) {
                    0 if at < p.len() => p[at] = b,
                    1 if at < p.len() => drop(p.remove(at)),
                    _ => p.insert(at, b),
                }
            }
            let want = reference(&p);
            assert_eq!(
                d.decode(&p).map(got),
                want,
                "{:?}",
                String::from_utf8_lossy(&p)
            );
            let outcome = match want {
                Ok(Got::Chat(_)) => "chat",
                Ok(Got::Delete(_)) => "delete",
                Ok(Got::Typing(_)) => "typing",
                Err(e) => e.kind(),
            };
            *seen.entry(outcome).or_insert(0u32) += 1;
        }
        assert!(
            seen.len() >= 9 && seen.values().all(|&n| n >= 20),
            "{seen:?}"
        );
    }
}
