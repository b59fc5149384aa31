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

use super::envelope::Frame;
use super::errors::ReplyError;
use super::message::ClientMessage;
use super::version::Version;

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

    /// Decodes and validates one text frame from a socket speaking `version`
    /// (on [`Version::V1`] every v2 type is `Unknown message type`).
    ///
    /// The fast path is one simd-json parse. Only when simd-json rejects the
    /// frame does serde_json look at it again, to tell invalid JSON from
    /// numbers simd-json cannot represent (integers beyond 64 bits).
    pub fn decode<'a>(
        &'a mut self,
        payload: &[u8],
        version: Version,
    ) -> Result<ClientMessage<'a>, ReplyError> {
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
            return decode_slow(payload, version, spill);
        }
        let mut de = simd_json::Deserializer::from_tape(filled);
        let frame = Frame::deserialize(&mut de);
        *tape = de.into_tape().reset();
        frame
            .map_err(|_| ReplyError::InvalidJson)?
            .classify(version)
    }

    /// The addresses of the scratch copy, to check what borrows from it.
    #[cfg(test)]
    pub(super) fn scratch_range(&self) -> std::ops::Range<usize> {
        let r = self.scratch.as_ptr_range();
        r.start as usize..r.end as usize
    }
}

/// Classifies a frame simd-json rejected. Allocates; rare.
#[cold]
fn decode_slow<'s>(
    payload: &[u8],
    version: Version,
    spill: &'s mut String,
) -> Result<ClientMessage<'s>, ReplyError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| ReplyError::InvalidJson)?;
    match Frame::from_value(&value).classify(version)? {
        ClientMessage::Chat { content } => {
            spill.clear();
            spill.push_str(content);
            Ok(ClientMessage::Chat { content: spill })
        }
        ClientMessage::Delete { message_id } => Ok(ClientMessage::Delete { message_id }),
        ClientMessage::Typing { is_typing } => Ok(ClientMessage::Typing { is_typing }),
        ClientMessage::History { before, limit } => Ok(ClientMessage::History { before, limit }),
        ClientMessage::MarkRead { message_id } => Ok(ClientMessage::MarkRead { message_id }),
        ClientMessage::React {
            message_id,
            emoji,
            on,
        } => {
            spill.clear();
            spill.push_str(emoji);
            Ok(ClientMessage::React {
                message_id,
                emoji: spill,
                on,
            })
        }
        ClientMessage::CallSignal {
            to_user_id,
            call_id,
            kind,
            has_payload,
        } => {
            spill.clear();
            spill.push_str(call_id);
            Ok(ClientMessage::CallSignal {
                to_user_id,
                call_id: spill,
                kind,
                has_payload,
            })
        }
        ClientMessage::UploadProgress {
            upload_id,
            file_name,
            percent,
        } => {
            spill.clear();
            spill.push_str(upload_id);
            spill.push_str(file_name);
            let (upload_id, file_name) = spill.split_at(upload_id.len());
            Ok(ClientMessage::UploadProgress {
                upload_id,
                file_name,
                percent,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::protocol::testing::{
        chat, chat_frame, dec, got, is_cc, Got, Rng, PY_SPACE, WHITE_SPACE,
    };

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
        let m = d.decode(p.as_bytes(), Version::V2).unwrap();
        let ClientMessage::Chat { content } = m else {
            panic!("{m:?}")
        };
        assert_eq!(content, "he said \"hi\"\né 😀 \\ /");
        let content_at = content.as_ptr() as usize;
        assert!(
            d.scratch_range().contains(&content_at),
            "borrowed from scratch"
        );
        let p = r#"{"\u0074ype":"chat\u005fmessage","cont\u0065nt":"\u0041"}"#;
        assert_eq!(dec(p), chat("A"));
    }

    #[test]
    fn slow_path_keeps_python_semantics_for_huge_integers() {
        let p = r#"{"type":"chat_message","content":" caf\u00e9 ","n":18446744073709551616}"#;
        let mut d = Decoder::new();
        let content_at = match d.decode(p.as_bytes(), Version::V2) {
            Ok(ClientMessage::Chat { content }) => (content == "café").then_some(content.as_ptr()),
            _ => None,
        };
        assert_eq!(
            content_at,
            Some(d.spill.as_ptr()),
            "decoded by the slow path"
        );
        let p = r#"{"type":"typing","is_typing":true,"n":-99999999999999999999}"#;
        assert_eq!(
            d.decode(p.as_bytes(), Version::V2).map(got),
            Ok(Got::Typing(true))
        );
        let p = r#"[18446744073709551616]"#;
        assert_eq!(
            d.decode(p.as_bytes(), Version::V2).map(got),
            Err(ReplyError::UnknownType)
        );
        let p = r#"{"type":18446744073709551616}"#;
        assert_eq!(
            d.decode(p.as_bytes(), Version::V2).map(got),
            Err(ReplyError::UnknownType)
        );
        // The fast path still works after the slow one.
        assert_eq!(
            d.decode(chat_frame("x").as_bytes(), Version::V1).map(got),
            chat("x")
        );
    }

    #[test]
    fn slow_path_decodes_the_v2_types() {
        let big = r#","n":18446744073709551616}"#;
        let mut d = Decoder::new();
        let p = format!(r#"{{"type":"react","message_id":"5","emoji":"❤️","on":false{big}"#);
        let emoji_at = match d.decode(p.as_bytes(), Version::V2) {
            Ok(ClientMessage::React {
                message_id: 5,
                emoji,
                on: false,
            }) => (emoji == "❤️").then_some(emoji.as_ptr()),
            _ => None,
        };
        assert_eq!(emoji_at, Some(d.spill.as_ptr()), "decoded by the slow path");
        let p = format!(r#"{{"type":"history","before":7,"limit":3{big}"#);
        assert_eq!(dec(p), Ok(Got::History(Some(7), 3)));
        let p = format!(r#"{{"type":"mark_read","message_id":-3{big}"#);
        assert_eq!(dec(p), Ok(Got::MarkRead(0)));
        for t in ["history", "mark_read", "react", "call_signal"] {
            let p = format!(r#"{{"type":"{t}","message_id":1,"emoji":"x"{big}"#);
            assert_eq!(
                d.decode(p.as_bytes(), Version::V1).map(got),
                Err(ReplyError::UnknownType)
            );
        }
    }

    #[test]
    fn negative_zero() {
        // `-0` is a JSON integer: simd-json reads 0, serde_json (the slow
        // path, only for frames simd-json rejects) reads -0.0. Where the two
        // readings meet different rules it is documented in `validate.rs`.
        let big = r#","n":18446744073709551616"#;
        for (t, field) in [("history", "before"), ("history", "limit")] {
            let fast = format!(r#"{{"type":"{t}","{field}":-0}}"#);
            let slow = format!(r#"{{"type":"{t}","{field}":-0{big}}}"#);
            assert_eq!(dec(&fast), Err(ReplyError::InvalidFormat), "{fast}");
            assert_eq!(dec(&slow), Err(ReplyError::InvalidFormat), "{slow}");
        }
        let fast = r#"{"type":"delete_message","message_id":-0}"#;
        let slow = format!(r#"{{"type":"delete_message","message_id":-0{big}}}"#);
        assert_eq!(dec(fast), Err(ReplyError::MessageIdRequired));
        assert_eq!(dec(slow), Err(ReplyError::MessageIdRequired));
        let fast = r#"{"type":"mark_read","message_id":-0}"#;
        let slow = format!(r#"{{"type":"mark_read","message_id":-0{big}}}"#);
        assert_eq!(
            dec(fast),
            Ok(Got::MarkRead(0)),
            "an integer naming no message"
        );
        assert_eq!(
            dec(slow),
            Err(ReplyError::InvalidFormat),
            "-0.0 to serde_json"
        );
    }

    #[test]
    fn v2_types_are_unknown_on_v1_only() {
        let frames = [
            r#"{"type":"history"}"#,
            r#"{"type":"history","before":1,"limit":2}"#,
            r#"{"type":"history","limit":"bad"}"#,
            r#"{"type":"mark_read","message_id":1}"#,
            r#"{"type":"mark_read"}"#,
            r#"{"type":"react","message_id":1,"emoji":"👍"}"#,
            r#"{"type":"react"}"#,
        ];
        let mut d = Decoder::new();
        for p in frames {
            let v1 = d.decode(p.as_bytes(), Version::V1).map(got);
            assert_eq!(v1, Err(ReplyError::UnknownType), "{p}");
            let v2 = d.decode(p.as_bytes(), Version::V2).map(got);
            assert_ne!(v2, Err(ReplyError::UnknownType), "{p}");
        }
        for p in [
            r#"{"type":"call_signal","to_user_id":2,"call_id":"c","kind":"ring"}"#,
            r#"{"type":"upload_progress","upload_id":"u","file_name":"f","percent":5}"#,
        ] {
            let v1 = d.decode(p.as_bytes(), Version::V1).map(got);
            assert_eq!(v1, Err(ReplyError::UnknownType), "{p}");
            assert!(d.decode(p.as_bytes(), Version::V2).is_ok(), "{p}");
        }
        for p in [r#"{"type":"History"}"#, r#"{"type":"mark_read "}"#] {
            for v in [Version::V1, Version::V2] {
                let r = d.decode(p.as_bytes(), v).map(got);
                assert_eq!(r, Err(ReplyError::UnknownType), "{p} {v:?}");
            }
        }
    }

    #[test]
    fn decoder_reuses_its_buffers() {
        let mut d = Decoder::new();
        let big = chat_frame(&"word ".repeat(900));
        let small = chat_frame("hi");
        for p in [&big, &small, &big] {
            assert!(d.decode(p.as_bytes(), Version::V2).is_ok());
        }
        let caps = (d.scratch.capacity(), d.tape.0.capacity(), d.tape.0.as_ptr());
        for p in [&small, &big, &"{".to_owned(), &small] {
            let _ = d.decode(p.as_bytes(), Version::V2);
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
            let _ = d.decode(&payload, Version::V1);
            let _ = d.decode(&payload, Version::V2);
        }
    }

    /// An independent model of the original consumer on `serde_json::Value`,
    /// extended with the v2 types of docs/protocol.md §9.
    fn reference(payload: &[u8], version: Version) -> Result<Got, ReplyError> {
        use ReplyError::*;
        let v: Value = serde_json::from_slice(payload).map_err(|_| InvalidJson)?;
        let obj = v.as_object().ok_or(UnknownType)?;
        let kind = obj.get("type").and_then(Value::as_str);
        let v2_only = [
            "history",
            "mark_read",
            "react",
            "call_signal",
            "upload_progress",
        ];
        if version == Version::V1 && kind.is_some_and(|k| v2_only.contains(&k)) {
            return Err(UnknownType);
        }
        // `mark_read` / `react`: integer or digit string; unnameable → 0.
        let target = |id: Option<&Value>| match id {
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                Ok(n.as_i64().filter(|&n| n > 0).unwrap_or(0))
            }
            Some(Value::String(s)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
                Ok(s.parse::<i64>().unwrap_or(0))
            }
            _ => Err(InvalidFormat),
        };
        let absent_or_null = |k: &str| obj.get(k).is_none_or(Value::is_null);
        match kind {
            Some("history") => {
                let before = match obj.get("before") {
                    _ if absent_or_null("before") => None,
                    Some(Value::Number(n)) => {
                        Some(n.as_i64().filter(|&n| n > 0).ok_or(InvalidFormat)?)
                    }
                    _ => return Err(InvalidFormat),
                };
                let limit = match obj.get("limit") {
                    _ if absent_or_null("limit") => 50,
                    Some(Value::Number(n)) => match n.as_u64() {
                        Some(l @ 1..=100) => l as u32,
                        _ => return Err(InvalidFormat),
                    },
                    _ => return Err(InvalidFormat),
                };
                Ok(Got::History(before, limit))
            }
            Some("mark_read") => target(obj.get("message_id")).map(Got::MarkRead),
            Some("react") => {
                let id = target(obj.get("message_id"))?;
                let emoji = match obj.get("emoji") {
                    Some(Value::String(s))
                        if (1..=16).contains(&s.chars().count())
                            && !s
                                .chars()
                                .any(|c| WHITE_SPACE.contains(&(c as u32)) || is_cc(c as u32)) =>
                    {
                        s.clone()
                    }
                    _ => return Err(InvalidFormat),
                };
                let on = match obj.get("on") {
                    _ if absent_or_null("on") => true,
                    Some(Value::Bool(b)) => *b,
                    _ => return Err(InvalidFormat),
                };
                Ok(Got::React(id, emoji, on))
            }
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
            r#"{"type":"history","before":120,"limit":20}"#,
            r#"{"type":"history","before":null}"#,
            r#"{"type":"mark_read","message_id":"0042"}"#,
            r#"{"type":"mark_read","message_id":17}"#,
            r#"{"type":"mark_read","message_id":-1}"#,
            r#"{"message_id":"0","type":"mark_read"}"#,
            r#"{"type":"react","message_id":0,"emoji":"x"}"#,
            r#"{"type":"react","message_id":9,"emoji":"👍","on":false}"#,
            r#"{"type":"react","message_id":"9","emoji":"\u2764\ufe0f\u00a0"}"#,
        ];
        let alphabet = b"{}[]\":,\\ 0123456789.-+eEtrufalsnu\x00\xc3\xa9";
        // Long runs (`loadtest/fuzz.sh`) set more cases and a fresh seed.
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        let seed = env("CHATGATE_FUZZ_SEED");
        let mut rng = Rng(seed.unwrap_or(42));
        let rounds: usize =
            env("CHATGATE_FUZZ_CASES").map_or(20_000, |n: u64| n.max(20_000) as usize);
        let mut d = Decoder::new();
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..rounds {
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
            let mut want = Err(ReplyError::InvalidJson);
            for version in [Version::V1, Version::V2] {
                want = reference(&p, version);
                let have = d.decode(&p, version).map(got);
                // `-0` is the integer 0 to simd-json but -0.0 to serde_json (the
                // model): a well-formed id naming no message (0), not a float.
                let negative_zero = want == Err(ReplyError::InvalidFormat)
                    && matches!(have, Ok(Got::MarkRead(0) | Got::React(0, ..)))
                    && p.windows(2).any(|w| w == b"-0");
                assert!(
                    have == want || negative_zero,
                    "{:?} {version:?}: {have:?} != {want:?}",
                    String::from_utf8_lossy(&p)
                );
            }
            let outcome = match want /* on v2 */ {
                Ok(Got::Chat(_)) => "chat",
                Ok(Got::Delete(_)) => "delete",
                Ok(Got::Typing(_)) => "typing",
                Ok(Got::History(..)) => "history",
                Ok(Got::MarkRead(0) | Got::React(0, ..)) => "id_naming_no_message",
                Ok(Got::MarkRead(_)) => "mark_read",
                Ok(Got::React(..)) => "react",
                Ok(Got::Signal(..)) => "call_signal",
                Ok(Got::Upload(..)) => "upload_progress",
                Err(e) => e.kind(),
            };
            *seen.entry(outcome).or_insert(0u32) += 1;
        }
        // Every outcome class is reached; the default seed also reaches each
        // at least 20 times (another seed may reach a rare one less often).
        let floor = if seed.is_none() { 20 } else { 1 };
        assert!(
            seen.len() >= 13 && seen.values().all(|&n| n >= floor),
            "{seen:?}"
        );
    }
}
