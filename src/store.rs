//! The store: where users, participants and messages live.
//!
//! Owns the request vocabulary between shards and the storage backend
//! ([`StoreRequest`]), the handle shards use to send requests
//! ([`StoreHandle`]), the readiness flag backends publish ([`Readiness`]),
//! and backend selection with its configuration ([`StoreConfig`], re-exported
//! by `config`). Backends: embedded SQLite on a dedicated thread
//! (`store/sqlite.rs`), PostgreSQL through a pool on the side runtime
//! (`store/postgres.rs`).
//!
//! Writes are group-committed: the backend takes every insert waiting when a
//! batch starts (up to `batch_max`), commits them in one transaction with their
//! `unread_count` increments, and hands the outcomes, in commit order, to the
//! [`CommitSink`] — one call per shard per batch. A shard broadcasts
//! `new_message` only from those outcomes, so nothing is shown that is not
//! stored.
//!
//! Must never: be called in a way that blocks a shard thread. Shards only
//! `send` on the bounded channel (async) and await oneshot replies.

pub mod postgres;
pub mod requests;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

pub use crate::ids::{ConversationId, MessageId, UserId};
pub use crate::records::UserProfile;

/// Where messages are stored.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// Embedded SQLite database file.
    Sqlite { path: PathBuf },
    /// PostgreSQL (the Django app's database), through a connection pool on
    /// the side runtime.
    Postgres {
        /// `postgres://user@host:port/dbname` (libpq-style key=value also accepted).
        url: String,
        /// Connections in the pool. Default 8.
        pool_size: usize,
    },
}

/// What a connect needs to know: who the user is and whether they belong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectInfo {
    /// `None` when no `auth_user` row has that id.
    pub user: Option<UserProfile>,
    /// Whether `(conversation_id, user_id)` is in `chatapp_conversationparticipant`.
    pub is_participant: bool,
    /// Whether the conversation exists (`false` too when the user does not:
    /// then nothing else is looked up). The server API tells a missing
    /// conversation (`not_found`) from a non-member (`not_participant`).
    pub conversation_exists: bool,
}

/// Routing data the store carries untouched from an insert to its outcome.
#[derive(Debug)]
pub struct Origin {
    /// Shard that owns the sender's socket (and the conversation).
    pub shard: usize,
    /// The sender's connection id on that shard (0: no socket, the server API).
    pub conn: u64,
    /// The sender's profile, pre-serialized as a JSON object.
    pub sender_json: Bytes,
    /// `None` for a socket's message. A server API `send_message` waits
    /// here for the outcome: the committed message object (the bytes of
    /// `new_message`'s `"message"`), or why it was not stored. The shard
    /// answers it after broadcasting (`shard/commit.rs`).
    pub reply: Option<InsertReply>,
}

/// Where a server API insert's outcome goes.
pub type InsertReply = oneshot::Sender<Result<Bytes, StoreError>>;

/// One `chat_message` to store.
#[derive(Debug)]
pub struct InsertRequest {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    /// Already stripped and validated.
    pub content: String,
    pub origin: Origin,
}

/// A committed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MessageId,
    /// Commit time, UTC, microsecond precision.
    pub timestamp: DateTime<Utc>,
}

/// The outcome of one insert, handed back to its shard.
#[derive(Debug)]
pub struct InsertOutcome {
    pub request: InsertRequest,
    pub result: Result<StoredMessage, StoreError>,
}

/// Receives insert outcomes: `deliver(shard, outcomes)` is called once per
/// shard per committed (or failed) batch, outcomes in commit order.
pub type CommitSink = Arc<dyn Fn(usize, Vec<InsertOutcome>) + Send + Sync>;

/// Requests from shards to the store.
#[derive(Debug)]
pub enum StoreRequest {
    /// Load the user's profile and the participant flag.
    Connect {
        user_id: UserId,
        conversation_id: ConversationId,
        reply: oneshot::Sender<Result<ConnectInfo, StoreError>>,
    },
    /// Store a message (group-committed); the outcome goes to the [`CommitSink`].
    Insert(InsertRequest),
    /// Delete a message for one user (idempotent).
    Delete {
        message_id: MessageId,
        user_id: UserId,
        reply: oneshot::Sender<Result<(), DeleteError>>,
    },
    /// A protocol v2 read or write (history, replay, receipts, reactions).
    V2(requests::V2Request),
}

/// A store failure (the database is unreachable, locked, full, or a statement failed).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("store is shut down")]
    Closed,
    #[error("store did not answer in time")]
    Timeout,
}

/// Why [`StoreHandle::try_insert`] did not queue the message.
#[derive(Debug)]
pub enum TryInsertError {
    /// The channel is full: the request, to be sent with `insert`.
    Full(InsertRequest),
    /// The store is shut down.
    Closed,
}

/// Why a delete did not happen.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeleteError {
    #[error("no such message")]
    NotFound,
    #[error("not a participant of the message's conversation")]
    NotParticipant,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether the backend can currently reach its database. The backend sets
/// it; shards, the gateway and the admin listener read it. Cloning shares
/// the flag (an `Arc<AtomicBool>`: one writer, the backend; many readers).
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag starting at `ready`.
    pub fn new(ready: bool) -> Self {
        Self(Arc::new(AtomicBool::new(ready)))
    }

    /// The current state.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the state; returns the previous one (so callers log transitions once).
    pub fn set(&self, ready: bool) -> bool {
        self.0.swap(ready, Ordering::AcqRel)
    }
}

/// The shards' side of the store: a bounded channel (backpressure) to the
/// backend, plus the backend's readiness flag. Cloned into every shard;
/// `Send + Sync`.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    tx: mpsc::Sender<StoreRequest>,
    ready: Readiness,
}

impl StoreHandle {
    /// Wraps the sending side of the store's request channel, for a backend
    /// that is always ready (the embedded store).
    pub fn new(tx: mpsc::Sender<StoreRequest>) -> Self {
        Self::with_readiness(tx, Readiness::new(true))
    }

    /// Wraps the request channel of a backend that publishes its readiness.
    pub fn with_readiness(tx: mpsc::Sender<StoreRequest>, ready: Readiness) -> Self {
        Self { tx, ready }
    }

    /// Whether the backend can currently reach its database.
    pub fn is_ready(&self) -> bool {
        self.ready.is_ready()
    }

    /// The readiness flag alone: lets a holder watch the store without
    /// keeping it running (a [`StoreHandle`] keeps the backend alive).
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Looks up the user and their membership.
    pub async fn connect_info(
        &self,
        user_id: UserId,
        conversation_id: ConversationId,
    ) -> Result<ConnectInfo, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(StoreRequest::Connect {
            user_id,
            conversation_id,
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a message for the next batch. The outcome arrives at the sink.
    pub async fn insert(&self, req: InsertRequest) -> Result<(), StoreError> {
        self.send(StoreRequest::Insert(req)).await
    }

    /// Queues a message if the request channel has room right now; gives
    /// it back when the channel is full (the caller then awaits `insert`).
    pub fn try_insert(&self, req: InsertRequest) -> Result<(), TryInsertError> {
        match self.tx.try_send(StoreRequest::Insert(req)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(StoreRequest::Insert(req))) => {
                Err(TryInsertError::Full(req))
            }
            Err(_) => Err(TryInsertError::Closed),
        }
    }

    /// Deletes a message for one user.
    pub async fn delete(&self, message_id: MessageId, user_id: UserId) -> Result<(), DeleteError> {
        let (reply, rx) = oneshot::channel();
        self.send(StoreRequest::Delete {
            message_id,
            user_id,
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Sends a v2 request built around `reply` and awaits its answer.
    pub async fn v2<T>(
        &self,
        build: impl FnOnce(oneshot::Sender<Result<T, requests::V2Error>>) -> requests::V2Request,
    ) -> Result<T, requests::V2Error> {
        let (reply, rx) = oneshot::channel();
        self.send(StoreRequest::V2(build(reply))).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn send(&self, req: StoreRequest) -> Result<(), StoreError> {
        self.tx.send(req).await.map_err(|_| StoreError::Closed)
    }
}

/// A running store backend. Dropping every [`StoreHandle`] makes it finish
/// the requests already queued and stop; [`StoreWorker::join`] waits for that.
pub struct StoreWorker {
    done: Option<Done>,
}

/// What [`StoreWorker::join`] waits on.
enum Done {
    /// The backend's own thread (SQLite), and the signal that tells it to
    /// close its request channel (what is queued still commits).
    Thread {
        thread: std::thread::JoinHandle<()>,
        close: oneshot::Sender<()>,
    },
    /// A task on the side runtime.
    Task {
        /// The task holds the sender and drops it when it ends (or when the
        /// runtime drops it): `recv` then returns.
        done: std::sync::mpsc::Receiver<()>,
        /// Tells the task to close its request channel: what is queued is
        /// still committed, nothing new is accepted.
        close: oneshot::Sender<()>,
    },
}

impl StoreWorker {
    /// Wraps the backend's thread.
    pub fn from_thread(thread: std::thread::JoinHandle<()>, close: oneshot::Sender<()>) -> Self {
        Self {
            done: Some(Done::Thread { thread, close }),
        }
    }

    /// Wraps a backend task: it holds the sender of `done` and drops it
    /// when it has finished; `close` asks it to stop accepting requests.
    pub fn from_task(done: std::sync::mpsc::Receiver<()>, close: oneshot::Sender<()>) -> Self {
        Self {
            done: Some(Done::Task { done, close }),
        }
    }

    /// Waits until the backend has committed everything queued and stopped.
    /// A task backend is first told to close its request channel, so a
    /// handle that outlives its shard cannot keep it running. Blocks: call
    /// it from outside every runtime, once the shards are gone.
    pub fn join(mut self) {
        match self.done.take() {
            Some(Done::Thread { thread, close }) => {
                let _ = close.send(());
                let _ = thread.join();
            }
            Some(Done::Task { done, close }) => {
                let _ = close.send(());
                let _ = done.recv();
            }
            None => {}
        }
    }
}

/// Hands a batch's outcomes to the sink, once per shard with that shard's
/// outcomes in commit order, and records the batch's metrics.
pub(crate) fn deliver(sink: &CommitSink, outcomes: Vec<InsertOutcome>, commit: Duration) {
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    crate::metrics::store_batch(outcomes.len(), commit, failed);
    let mut by_shard: std::collections::BTreeMap<usize, Vec<InsertOutcome>> =
        std::collections::BTreeMap::new();
    for outcome in outcomes {
        by_shard
            .entry(outcome.request.origin.shard)
            .or_default()
            .push(outcome);
    }
    for (shard, outcomes) in by_shard {
        sink(shard, outcomes);
    }
}

/// Capacity of the shards → store request channel.
pub const REQUEST_QUEUE: usize = 8192;

/// Opens the configured backend, migrating an embedded database on first use.
/// Backends that need async I/O run on `side`. A request the backend cannot
/// complete within `timeout` fails with [`StoreError::Timeout`] (Postgres;
/// SQLite relies on its busy timeout).
pub fn start(
    config: &StoreConfig,
    batch_max: usize,
    timeout: Duration,
    sink: CommitSink,
    side: &tokio::runtime::Handle,
) -> Result<(StoreHandle, StoreWorker), StoreError> {
    match config {
        StoreConfig::Sqlite { path } => sqlite::start(path, batch_max, sink),
        StoreConfig::Postgres { url, pool_size } => {
            postgres::start(url, *pool_size, batch_max, timeout, sink, side)
        }
    }
}
