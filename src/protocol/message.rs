//! What a client frame means once its rules have passed: [`ClientMessage`]
//! and the [`SignalKind`] a `call_signal` names (docs/protocol.md §3, §9.6).
//!
//! Owns only these types, so that the per-type rules (`chat.rs`,
//! `delete.rs`, …) build their result without importing the dispatch in
//! `envelope.rs`, which imports them. A new client message type adds one
//! variant here.
//!
//! Must never: import a per-type rule or the envelope, or decode anything.

use crate::ids::MessageId;

/// A validated client message. `content` and `emoji` borrow from the
/// [`Decoder`](super::Decoder). The variants after `Typing` come only from
/// v2 sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// `chat_message`; `content` is stripped, non-empty, at most
    /// [`MAX_CONTENT_CHARS`](super::MAX_CONTENT_CHARS) code points and free of U+0000.
    Chat { content: &'a str },
    /// `delete_message`; `message_id` is positive.
    Delete { message_id: MessageId },
    /// `typing`; `is_typing` defaults to false.
    Typing { is_typing: bool },
    /// `history` (v2): `before` is positive when present; `limit` is 1–100,
    /// 50 when absent.
    History {
        before: Option<MessageId>,
        limit: u32,
    },
    /// `mark_read` (v2). `message_id` is 0 when the client sent a well-formed
    /// id that can name no message (≤ 0 or beyond `i64::MAX`): the session
    /// answers `Failed to mark read`, as for any id that is not a message.
    MarkRead { message_id: MessageId },
    /// `react` (v2). `message_id` as for `MarkRead` (0 → `Failed to react`);
    /// `emoji` is 1–16 code points without white space or controls; `on`
    /// defaults to true.
    React {
        message_id: MessageId,
        emoji: &'a str,
        on: bool,
    },
    /// `call_signal` (v2): `call_id` is 1–64 of `[A-Za-z0-9_-]`; the
    /// session takes `payload`'s text from the frame itself (`raw.rs`)
    /// when `has_payload`.
    CallSignal {
        to_user_id: i64,
        call_id: &'a str,
        kind: SignalKind,
        has_payload: bool,
    },
    /// `upload_progress` (v2): `upload_id` as `call_id`, `file_name` 1–255
    /// code points, `percent` 0–100.
    UploadProgress {
        upload_id: &'a str,
        file_name: &'a str,
        percent: u8,
    },
}

/// What a call signal says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    Ring,
    Offer,
    Answer,
    Candidate,
    Hangup,
    Decline,
}

impl SignalKind {
    /// The kind a wire name names; `None` for any other text.
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ring" => Self::Ring,
            "offer" => Self::Offer,
            "answer" => Self::Answer,
            "candidate" => Self::Candidate,
            "hangup" => Self::Hangup,
            "decline" => Self::Decline,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Candidate => "candidate",
            Self::Hangup => "hangup",
            Self::Decline => "decline",
        }
    }

    /// Also sent to the sender's own other v2 sockets (a second tab stops
    /// ringing): `answer`, `decline`, `hangup`.
    pub fn tells_own_tabs(self) -> bool {
        matches!(self, Self::Answer | Self::Decline | Self::Hangup)
    }
}
