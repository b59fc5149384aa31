//! Test helpers shared by the protocol's unit tests (compiled for tests
//! only): Python's white-space table, Unicode's `White_Space` and `Cc`
//! tables, an owned view of a decoded message, one-shot decoding on both
//! versions, a sample history item, and a deterministic pseudo-random
//! generator.
//!
//! Must never: be used outside `#[cfg(test)]` code, or hold protocol logic
//! of its own (the tests compare the real code with these, not the other
//! way round).

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use super::{ClientMessage, Decoder, ReplyError, Version};
use crate::records::UserProfile;
use crate::records::{HistoryItem, ReactionGroup};

/// `[hex(c) for c in range(0x110000) if chr(c).isspace()]`, Python 3.11.
pub(super) const PY_SPACE: [u32; 29] = [
    0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
    0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f,
    0x205f, 0x3000,
];

/// Unicode's `White_Space` property (PropList.txt, Unicode 15).
pub(super) const WHITE_SPACE: [u32; 25] = [
    0x9, 0xa, 0xb, 0xc, 0xd, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
];

/// General category `Cc`: U+0000–U+001F and U+007F–U+009F.
pub(super) fn is_cc(c: u32) -> bool {
    c <= 0x1f || (0x7f..=0x9f).contains(&c)
}

/// An owned [`ClientMessage`], so results outlive the decoder.
#[derive(Debug, PartialEq)]
pub(super) enum Got {
    Chat(String),
    Delete(i64),
    Typing(bool),
    History(Option<i64>, u32),
    MarkRead(i64),
    React(i64, String, bool),
    Signal(i64, String, &'static str, bool),
    Upload(String, String, u8),
}

impl Got {
    /// Whether this is a protocol-v2 message type.
    pub(super) fn is_v2(&self) -> bool {
        matches!(
            self,
            Got::History(..)
                | Got::MarkRead(_)
                | Got::React(..)
                | Got::Signal(..)
                | Got::Upload(..)
        )
    }
}

pub(super) fn got(m: ClientMessage<'_>) -> Got {
    match m {
        ClientMessage::Chat { content } => Got::Chat(content.to_owned()),
        ClientMessage::Delete { message_id } => Got::Delete(message_id),
        ClientMessage::Typing { is_typing } => Got::Typing(is_typing),
        ClientMessage::History { before, limit } => Got::History(before, limit),
        ClientMessage::MarkRead { message_id } => Got::MarkRead(message_id),
        ClientMessage::React {
            message_id,
            emoji,
            on,
        } => Got::React(message_id, emoji.to_owned(), on),
        ClientMessage::CallSignal {
            to_user_id,
            call_id,
            kind,
            has_payload,
        } => Got::Signal(to_user_id, call_id.to_owned(), kind.as_str(), has_payload),
        ClientMessage::UploadProgress {
            upload_id,
            file_name,
            percent,
        } => Got::Upload(upload_id.to_owned(), file_name.to_owned(), percent),
    }
}

/// Decodes on a v2 socket, checking that a v1 socket gets the same answer,
/// or `Unknown message type` (a v2 type, or a v2 type's error).
pub(super) fn dec(payload: impl AsRef<[u8]>) -> Result<Got, ReplyError> {
    let v2 = Decoder::new()
        .decode(payload.as_ref(), Version::V2)
        .map(got);
    let v1 = dec_v1(payload.as_ref());
    if v1 != v2 {
        assert_eq!(v1, Err(ReplyError::UnknownType), "v1 differs from v2");
        assert!(
            v2.as_ref().is_ok_and(Got::is_v2) || v2.is_err(),
            "a v1 type decodes alike on v1"
        );
    }
    v2
}

/// Decodes on a v1 socket.
pub(super) fn dec_v1(payload: impl AsRef<[u8]>) -> Result<Got, ReplyError> {
    Decoder::new()
        .decode(payload.as_ref(), Version::V1)
        .map(got)
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

/// John's "Hello world" of docs/protocol.md §4 with the given id and reactions.
pub(super) fn history_item(id: i64, reactions: &[(&str, &[i64])]) -> HistoryItem {
    HistoryItem {
        id,
        sender: UserProfile {
            id: 1,
            username: "johndoe".into(),
            first_name: "John".into(),
            last_name: "Doe".into(),
            is_active: true,
        },
        content: "Hello world".into(),
        timestamp: Utc.with_ymd_and_hms(2025, 12, 11, 10, 30, 0).unwrap()
            + chrono::Duration::microseconds(123_456),
        reactions: reactions
            .iter()
            .map(|(emoji, user_ids)| ReactionGroup {
                emoji: (*emoji).to_owned(),
                user_ids: user_ids.to_vec(),
            })
            .collect(),
    }
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
