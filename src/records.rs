//! The records the store reads and the wire encoders write: a user's
//! public profile, a stored message as history shows it with its
//! reactions, a read position. Plain data, shared by `store` (which fills
//! them) and `protocol` (which encodes them), so neither needs the other.
//! `crate::store` re-exports them.
//!
//! Must never: import another module of the crate but `ids`, or grow
//! behaviour.

use chrono::{DateTime, Utc};

use crate::ids::{MessageId, UserId};

/// The public profile sent as `sender` in `new_message`, plus `is_active`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProfile {
    pub id: UserId,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
}

/// One emoji on a message and who reacted with it, in reaction order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactionGroup {
    pub emoji: String,
    pub user_ids: Vec<UserId>,
}

/// A stored message as history and replay show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    pub id: MessageId,
    /// The sender's public profile (`is_active` is not used).
    pub sender: UserProfile,
    pub content: String,
    pub timestamp: DateTime<Utc>,
    pub reactions: Vec<ReactionGroup>,
}

/// A participant's read position in a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPosition {
    pub user_id: UserId,
    pub username: String,
    pub message_id: MessageId,
    pub read_at: DateTime<Utc>,
}
