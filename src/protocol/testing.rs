//! Test helpers shared by the protocol's unit tests (compiled for tests
//! only): Python's white-space table, an owned view of a decoded message,
//! one-shot decoding, and a deterministic pseudo-random generator.
//!
//! Must never: be used outside `#[cfg(test)]` code, or hold protocol logic
//! of its own (the tests compare the real code with these, not the other
//! way round).

use serde_json::{json, Value};

use super::{ClientMessage, Decoder, ReplyError};

/// `[hex(c) for c in range(0x110000) if chr(c).isspace()]`, Python 3.11.
pub(super) const PY_SPACE: [u32; 29] = [
    0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
    0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f,
    0x205f, 0x3000,
];

/// An owned [`ClientMessage`], so results outlive the decoder.
#[derive(Debug, PartialEq)]
pub(super) enum Got {
    Chat(String),
    Delete(i64),
    Typing(bool),
}

pub(super) fn got(m: ClientMessage<'_>) -> Got {
    match m {
        ClientMessage::Chat { content } => Got::Chat(content.to_owned()),
        ClientMessage::Delete { message_id } => Got::Delete(message_id),
        ClientMessage::Typing { is_typing } => Got::Typing(is_typing),
    }
}

pub(super) fn dec(payload: impl AsRef<[u8]>) -> Result<Got, ReplyError> {
    Decoder::new().decode(payload.as_ref()).map(got)
}

pub(super) fn chat_frame(content: &str) -> String {
    json!({"type": "chat_message", "content": content}).to_string()
}

pub(super) fn chat(s: &str) -> Result<Got, ReplyError> {
    Ok(Got::Chat(s.to_owned()))
}

pub(super) fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("encoder output is JSON")
}

/// xorshift64: deterministic pseudo-random numbers, no extra crate.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
