//! What protocol v2 asks of the store (PROTOCOL.md §6.1–6.4).
//!
//! Owns the vocabulary of the stored half of v2 between shards (and the
//! HTTP history endpoint) and the backends: the requests ([`V2Request`]),
//! what they answer (history pages, replays, read positions, reaction
//! changes) and why they fail ([`V2Error`]). Both backends implement every
//! request with the same semantics; `tests` in each backend check them.
//!
//! Semantics, shared by both backends:
//! - **History / replay items** are messages of the conversation that the
//!   asking user has not deleted (`chatapp_messagedeletion`), in id order,
//!   each with its reactions ([`ReactionGroup`]: emoji in the order first
//!   used on the message, user ids in the order they reacted).
//! - **History** (`before`, `limit`): the newest `limit` such messages with
//!   `id < before` (all when `None`), oldest first; `has_more` when older
//!   ones exist in the same selection.
//! - **Replay** (`since`, `max`): such messages with `id > since`, the
//!   newest `max` of them, oldest first; `complete` false when more existed.
//!   Replays of one conversation that are waiting together are answered by
//!   one set of queries (reconnect storms).
//! - **Mark read**: `message_id` must be a message of the conversation
//!   (else [`V2Error::NoSuchMessage`]). In one transaction the user's
//!   `unread_count` there becomes 0 and their position in
//!   `chatgate_readreceipt` becomes max(old, N). Answers the new position
//!   when it moved, `None` when it did not.
//! - **React**: the message must be in the conversation
//!   ([`V2Error::NoSuchMessage`]); adding an existing (message, user,
//!   emoji) or removing a missing one changes nothing (`Ok(false)`);
//!   adding a 21st distinct emoji to a message is [`V2Error::TooManyReactions`].
//! - On a Django database where `chatgate migrate` has not created the
//!   `chatgate_` tables: mark read and react answer [`V2Error::NotMigrated`];
//!   read state answers no positions and items carry no reactions; the
//!   backend logs once that `chatgate migrate` is needed.
//!
//! Must never: block a shard (requests travel on the store's channel), or
//! return a message the asking user deleted.

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{ConversationId, MessageId, StoreError, UserProfile};
use crate::store::UserId;

/// Most distinct emoji on one message.
pub const MAX_EMOJI_PER_MESSAGE: usize = 20;

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

/// A history page, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
    /// Older messages exist in the same selection.
    pub has_more: bool,
}

/// What a resuming socket missed, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    pub items: Vec<HistoryItem>,
    /// False when older missed messages were left out (more than `max`).
    pub complete: bool,
}

/// A participant's read position in a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPosition {
    pub user_id: UserId,
    pub username: String,
    pub message_id: MessageId,
    pub read_at: DateTime<Utc>,
}

/// Why a v2 request failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum V2Error {
    /// The message does not exist or is not in this conversation.
    #[error("no such message in this conversation")]
    NoSuchMessage,
    /// The message already has [`MAX_EMOJI_PER_MESSAGE`] distinct emoji.
    #[error("too many distinct reactions on the message")]
    TooManyReactions,
    /// The `chatgate_` tables are missing: run `chatgate migrate`.
    #[error("the chatgate tables are missing: run `chatgate migrate`")]
    NotMigrated,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The requests of protocol v2. Every reply is a oneshot; a dropped reply
/// sender means the store is gone.
#[derive(Debug)]
pub enum V2Request {
    History {
        conversation_id: ConversationId,
        user_id: UserId,
        before: Option<MessageId>,
        /// 1–100 (checked by the caller).
        limit: u32,
        reply: oneshot::Sender<Result<HistoryPage, V2Error>>,
    },
    Replay {
        conversation_id: ConversationId,
        user_id: UserId,
        since: MessageId,
        /// `--resume-max`, at least 1.
        max: u32,
        reply: oneshot::Sender<Result<Replay, V2Error>>,
    },
    MarkRead {
        conversation_id: ConversationId,
        user_id: UserId,
        message_id: MessageId,
        reply: oneshot::Sender<Result<Option<ReadPosition>, V2Error>>,
    },
    /// Every participant's read position (those that have one).
    ReadState {
        conversation_id: ConversationId,
        reply: oneshot::Sender<Result<Vec<ReadPosition>, V2Error>>,
    },
    React {
        conversation_id: ConversationId,
        user_id: UserId,
        message_id: MessageId,
        emoji: String,
        on: bool,
        reply: oneshot::Sender<Result<bool, V2Error>>,
    },
}
