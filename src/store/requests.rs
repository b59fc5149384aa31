//! What protocol v2 asks of the store (docs/protocol.md §9.1–§9.4).
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
//! - **Claim key / finish key** (the server API's `send_message` with an
//!   `idempotency_key`, docs/protocol.md §10): see [`Claim`]; finishing
//!   records the key's message or deletes a claim that has none.
//! - On a Django database where `chatgate migrate` has not created the
//!   `chatgate_` tables: mark read, react and claim key answer
//!   [`V2Error::NotMigrated`];
//!   read state answers no positions and items carry no reactions; the
//!   backend logs once that `chatgate migrate` is needed.
//!
//! The one place a [`V2Request`] is taken apart is here too
//! (`V2Request::answer_with`): each variant's fields become a typed question
//! (`HistoryQuery`, `ReplayQuery`, `MarkRead`, `React`, or a conversation
//! id for read state) handed, with its reply, to the backend's method of
//! that name (`V2Backend`). A backend only says how it answers each: SQLite
//! at once on its thread, Postgres as a future its dispatcher awaits.
//!
//! Must never: block a shard (requests travel on the store's channel), or
//! return a message the asking user deleted.

use tokio::sync::oneshot;

pub use crate::records::{HistoryItem, ReactionGroup, ReadPosition};

use super::{ConversationId, MessageId, StoreError, UserId};

/// Most distinct emoji on one message.
pub const MAX_EMOJI_PER_MESSAGE: usize = 20;

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
    /// A server API `send_message` claims its `idempotency_key`
    /// (`chatgate_idempotency`, see [`Claim`]).
    ClaimKey {
        key: String,
        conversation_id: ConversationId,
        /// A claim without a message older than this is abandoned.
        stale_after: std::time::Duration,
        reply: oneshot::Sender<Result<Claim, V2Error>>,
    },
    /// The owner of a claimed key: `Some` records the stored message,
    /// `None` gives the key up (the message was not stored).
    FinishKey {
        key: String,
        message_id: Option<MessageId>,
        reply: oneshot::Sender<Result<(), V2Error>>,
    },
}

/// How long an idempotency key holds its message.
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What claiming an idempotency key found, in one atomic step on the
/// `chatgate_idempotency` row of the key:
/// - no row, or a row older than [`IDEMPOTENCY_TTL`], or one without a
///   message older than `stale_after`: the row is (re)written without a
///   message and the caller owns the key ([`Claim::Owned`]): it stores the
///   message, then `FinishKey`;
/// - a row with a message: that message with its sender ([`Claim::Done`],
///   no reactions), nothing stored;
/// - a fresh row without a message: another request is storing it
///   ([`Claim::Pending`]): ask again shortly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    Owned,
    Done(HistoryItem),
    Pending,
}

/// Where the answer to a v2 request goes; a failed `send` means the
/// requester stopped waiting.
pub(super) type Reply<T> = oneshot::Sender<Result<T, V2Error>>;

/// What [`V2Request::History`] asks.
#[derive(Debug)]
pub(super) struct HistoryQuery {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub before: Option<MessageId>,
    pub limit: u32,
}

/// What [`V2Request::Replay`] asks.
#[derive(Debug)]
pub(super) struct ReplayQuery {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub since: MessageId,
    pub max: u32,
}

/// What [`V2Request::MarkRead`] asks.
#[derive(Debug)]
pub(super) struct MarkRead {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub message_id: MessageId,
}

/// What [`V2Request::React`] asks.
#[derive(Debug)]
pub(super) struct React {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub message_id: MessageId,
    pub emoji: String,
    pub on: bool,
}

/// How a backend answers each kind of v2 request, with the semantics of the
/// module header. Each method gets the question and its reply, and sends
/// the answer on it when it has one.
pub(super) trait V2Backend {
    /// What a call leaves to its caller: the SQLite worker gets a replay
    /// back to gather, the Postgres dispatcher a future to await.
    type Done;

    fn history(self, query: HistoryQuery, reply: Reply<HistoryPage>) -> Self::Done;
    fn replay(self, query: ReplayQuery, reply: Reply<Replay>) -> Self::Done;
    fn mark_read(self, query: MarkRead, reply: Reply<Option<ReadPosition>>) -> Self::Done;
    fn read_state(
        self,
        conversation_id: ConversationId,
        reply: Reply<Vec<ReadPosition>>,
    ) -> Self::Done;
    fn react(self, query: React, reply: Reply<bool>) -> Self::Done;
    fn claim_key(self, query: ClaimKey, reply: Reply<Claim>) -> Self::Done;
    fn finish_key(self, query: FinishKey, reply: Reply<()>) -> Self::Done;
}

/// What [`V2Request::ClaimKey`] asks.
#[derive(Debug)]
pub(super) struct ClaimKey {
    pub key: String,
    pub conversation_id: ConversationId,
    pub stale_after: std::time::Duration,
}

/// What [`V2Request::FinishKey`] asks.
#[derive(Debug)]
pub(super) struct FinishKey {
    pub key: String,
    pub message_id: Option<MessageId>,
}

impl V2Request {
    /// Hands this request, taken apart, to `backend`'s method of its kind.
    pub(super) fn answer_with<B: V2Backend>(self, backend: B) -> B::Done {
        match self {
            V2Request::History {
                conversation_id,
                user_id,
                before,
                limit,
                reply,
            } => {
                let query = HistoryQuery {
                    conversation_id,
                    user_id,
                    before,
                    limit,
                };
                backend.history(query, reply)
            }
            V2Request::Replay {
                conversation_id,
                user_id,
                since,
                max,
                reply,
            } => {
                let query = ReplayQuery {
                    conversation_id,
                    user_id,
                    since,
                    max,
                };
                backend.replay(query, reply)
            }
            V2Request::MarkRead {
                conversation_id,
                user_id,
                message_id,
                reply,
            } => {
                let query = MarkRead {
                    conversation_id,
                    user_id,
                    message_id,
                };
                backend.mark_read(query, reply)
            }
            V2Request::ReadState {
                conversation_id,
                reply,
            } => backend.read_state(conversation_id, reply),
            V2Request::React {
                conversation_id,
                user_id,
                message_id,
                emoji,
                on,
                reply,
            } => {
                let query = React {
                    conversation_id,
                    user_id,
                    message_id,
                    emoji,
                    on,
                };
                backend.react(query, reply)
            }
            V2Request::ClaimKey {
                key,
                conversation_id,
                stale_after,
                reply,
            } => {
                let query = ClaimKey {
                    key,
                    conversation_id,
                    stale_after,
                };
                backend.claim_key(query, reply)
            }
            V2Request::FinishKey {
                key,
                message_id,
                reply,
            } => backend.finish_key(FinishKey { key, message_id }, reply),
        }
    }
}
