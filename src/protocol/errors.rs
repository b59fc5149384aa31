//! Reply errors: the `{"type":"error"}` answers of docs/protocol.md §5 (and
//! §9.8 for protocol v2), each defined once with its wire text, its metric
//! label and its encoding.
//!
//! Owns [`ReplyError`]. A reply error goes only to the offending socket,
//! which stays open; close codes (the socket goes) live in `crate::close`.
//!
//! Must never: change a text (clients match on them; the v1 ones are the
//! original backend's), or give two variants the same metric label.

/// An error reply: sent only to the offending socket, which stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReplyError {
    #[error("Invalid JSON")]
    InvalidJson,
    #[error("Unknown message type")]
    UnknownType,
    #[error("Invalid message format")]
    InvalidFormat,
    #[error("Empty message")]
    EmptyMessage,
    #[error("Message too long")]
    MessageTooLong,
    #[error("Message ID required")]
    MessageIdRequired,
    #[error("Failed to delete message")]
    DeleteFailed,
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("Failed to send message")]
    SendFailed,
    #[error("Binary frames are not supported")]
    BinaryNotSupported,
    // Protocol v2 (docs/protocol.md §9.8); never sent to a v1 socket.
    #[error("Failed to mark read")]
    MarkReadFailed,
    #[error("Failed to react")]
    ReactFailed,
    #[error("Too many reactions")]
    TooManyReactions,
    #[error("Invalid recipient")]
    InvalidRecipient,
    #[error("User not available")]
    UserNotAvailable,
    /// A `history` request the store could not answer (down, timing out).
    #[error("Failed to load history")]
    HistoryFailed,
}

impl ReplyError {
    /// Every variant, e.g. to pre-register metric labels.
    pub const ALL: [ReplyError; 16] = [
        Self::InvalidJson,
        Self::UnknownType,
        Self::InvalidFormat,
        Self::EmptyMessage,
        Self::MessageTooLong,
        Self::MessageIdRequired,
        Self::DeleteFailed,
        Self::RateLimited,
        Self::SendFailed,
        Self::BinaryNotSupported,
        Self::MarkReadFailed,
        Self::ReactFailed,
        Self::TooManyReactions,
        Self::InvalidRecipient,
        Self::UserNotAvailable,
        Self::HistoryFailed,
    ];

    /// The `message` of the error reply, exactly as the original backend sent it.
    pub fn text(self) -> &'static str {
        match self {
            Self::InvalidJson => "Invalid JSON",
            Self::UnknownType => "Unknown message type",
            Self::InvalidFormat => "Invalid message format",
            Self::EmptyMessage => "Empty message",
            Self::MessageTooLong => "Message too long",
            Self::MessageIdRequired => "Message ID required",
            Self::DeleteFailed => "Failed to delete message",
            Self::RateLimited => "Rate limit exceeded",
            Self::SendFailed => "Failed to send message",
            Self::BinaryNotSupported => "Binary frames are not supported",
            Self::MarkReadFailed => "Failed to mark read",
            Self::ReactFailed => "Failed to react",
            Self::TooManyReactions => "Too many reactions",
            Self::InvalidRecipient => "Invalid recipient",
            Self::UserNotAvailable => "User not available",
            Self::HistoryFailed => "Failed to load history",
        }
    }

    /// A short snake_case label for metrics (bounded cardinality).
    pub fn kind(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidFormat => "invalid_format",
            Self::EmptyMessage => "empty_message",
            Self::MessageTooLong => "message_too_long",
            Self::MessageIdRequired => "message_id_required",
            Self::DeleteFailed => "delete_failed",
            Self::RateLimited => "rate_limited",
            Self::SendFailed => "send_failed",
            Self::BinaryNotSupported => "binary_not_supported",
            Self::MarkReadFailed => "mark_read_failed",
            Self::ReactFailed => "react_failed",
            Self::TooManyReactions => "too_many_reactions",
            Self::InvalidRecipient => "invalid_recipient",
            Self::UserNotAvailable => "user_not_available",
            Self::HistoryFailed => "history_failed",
        }
    }

    /// Appends `{"type":"error","message":"<text>"}` (no text needs escaping).
    pub fn encode(self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"type":"error","message":""#);
        out.extend_from_slice(self.text().as_bytes());
        out.extend_from_slice(br#""}"#);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::parse;

    #[test]
    fn reply_error_texts_are_the_originals() {
        use ReplyError::*;
        let expected = [
            (InvalidJson, "Invalid JSON"),
            (UnknownType, "Unknown message type"),
            (InvalidFormat, "Invalid message format"),
            (EmptyMessage, "Empty message"),
            (MessageTooLong, "Message too long"),
            (MessageIdRequired, "Message ID required"),
            (DeleteFailed, "Failed to delete message"),
            (RateLimited, "Rate limit exceeded"),
            (SendFailed, "Failed to send message"),
            (BinaryNotSupported, "Binary frames are not supported"),
            (MarkReadFailed, "Failed to mark read"),
            (ReactFailed, "Failed to react"),
            (TooManyReactions, "Too many reactions"),
            (InvalidRecipient, "Invalid recipient"),
            (UserNotAvailable, "User not available"),
            (HistoryFailed, "Failed to load history"),
        ];
        assert_eq!(expected.map(|(e, _)| e), ReplyError::ALL);
        for (err, text) in expected {
            assert_eq!(err.text(), text);
            assert_eq!(err.to_string(), text);
            let mut out = b"HDR".to_vec();
            err.encode(&mut out);
            assert_eq!(&out[..3], b"HDR", "encode only appends");
            assert_eq!(parse(&out[3..]), json!({"type": "error", "message": text}));
        }
    }

    #[test]
    fn reply_error_kinds_are_unique_snake_case() {
        let kinds: Vec<_> = ReplyError::ALL.iter().map(|e| e.kind()).collect();
        for (i, k) in kinds.iter().enumerate() {
            assert!(
                k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{k}"
            );
            assert!(!kinds[..i].contains(k), "duplicate {k}");
        }
    }
}
