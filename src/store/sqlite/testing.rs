//! Test helpers shared by the SQLite backend's unit tests (compiled for
//! tests only): a database in a temporary directory with its [`Admin`], a
//! worker run over requests queued in advance (deterministic batches), a
//! recording [`CommitSink`], insert requests, and for v2: messages and
//! deletions written directly (many at once), and v2 requests queued before
//! a worker starts.
//!
//! Must never: be used outside `#[cfg(test)]` code, or hold backend logic of
//! its own.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tempfile::TempDir;
use tokio::sync::mpsc;

use super::worker::spawn_worker;
use super::{format_timestamp, now, open, Admin};
use crate::store::requests::V2Request;
use crate::store::{
    CommitSink, ConversationId, InsertOutcome, InsertRequest, MessageId, Origin, StoreHandle,
    StoreRequest, StoredMessage, UserId, REQUEST_QUEUE,
};

pub(super) type Delivered = Arc<Mutex<Vec<(usize, Vec<InsertOutcome>)>>>;

pub(super) struct Fixture {
    pub(super) _dir: TempDir,
    pub(super) path: PathBuf,
    pub(super) admin: Admin,
}

impl Fixture {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let admin = Admin::open(&path).unwrap();
        Fixture {
            _dir: dir,
            path,
            admin,
        }
    }

    pub(super) fn user(&self, username: &str) -> UserId {
        self.admin.create_user(username, "First", "Last").unwrap()
    }

    pub(super) fn unread(&self, conv: ConversationId, user: UserId) -> i64 {
        self.query(
            "SELECT unread_count FROM chatapp_conversationparticipant \
             WHERE conversation_id = ?1 AND user_id = ?2",
            [conv, user],
        )
    }

    pub(super) fn messages(&self) -> i64 {
        self.query("SELECT COUNT(*) FROM chatapp_message", [])
    }

    pub(super) fn query<P: rusqlite::Params>(&self, sql: &str, params: P) -> i64 {
        let conn = self.admin.connection();
        conn.query_row(sql, params, |row| row.get(0)).unwrap()
    }

    /// Writes `count` messages from `sender` ("m0", "m1", ...) in one
    /// transaction, straight into the table; their ids, ascending.
    pub(super) fn write_messages(
        &self,
        conv: ConversationId,
        sender: UserId,
        count: usize,
    ) -> Vec<MessageId> {
        let conn = self.admin.connection();
        let tx = conn.unchecked_transaction().unwrap();
        let at = format_timestamp(now());
        let ids = (0..count)
            .map(|i| {
                tx.execute(
                    "INSERT INTO chatapp_message (content, timestamp, conversation_id, sender_id) \
                     VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![format!("m{i}"), at, conv, sender],
                )
                .unwrap();
                tx.last_insert_rowid()
            })
            .collect();
        tx.commit().unwrap();
        ids
    }

    /// `user` deletes `messages` (for themselves), straight into the table.
    pub(super) fn delete_for(&self, user: UserId, messages: &[MessageId]) {
        let at = format_timestamp(now());
        for message in messages {
            self.admin
                .connection()
                .execute(
                    "INSERT INTO chatapp_messagedeletion (deleted_at, message_id, user_id) \
                     VALUES (?1, ?2, ?3)",
                    rusqlite::params![at, message, user],
                )
                .unwrap();
        }
    }

    /// Queues `requests` on a channel *before* a worker starts, so the
    /// worker drains them together (one pass); waits for it to finish.
    pub(super) fn run_queued_v2(&self, requests: Vec<V2Request>) {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        for request in requests {
            tx.try_send(StoreRequest::V2(request)).unwrap();
        }
        drop(tx);
        let (sink, _) = recording_sink();
        let conn = open(&self.path).unwrap();
        spawn_worker(conn, rx, 16, sink).unwrap().join();
    }

    /// Queues `requests` through a real handle *before* the worker starts,
    /// so the batches they form are deterministic; then drops the handle
    /// and waits for the worker to finish.
    pub(super) fn run_queued(
        &self,
        batch_max: usize,
        requests: Vec<InsertRequest>,
    ) -> Vec<(usize, Vec<InsertOutcome>)> {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let handle = StoreHandle::new(tx);
        runtime().block_on(async {
            for request in requests {
                handle.insert(request).await.unwrap();
            }
        });
        drop(handle);
        let (sink, delivered) = recording_sink();
        let conn = open(&self.path).unwrap();
        spawn_worker(conn, rx, batch_max, sink).unwrap().join();
        take(delivered)
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

pub(super) fn recording_sink() -> (CommitSink, Delivered) {
    let delivered = Delivered::default();
    let log = Arc::clone(&delivered);
    let sink: CommitSink = Arc::new(move |shard, outcomes| {
        log.lock().unwrap().push((shard, outcomes));
    });
    (sink, delivered)
}

pub(super) fn take(delivered: Delivered) -> Vec<(usize, Vec<InsertOutcome>)> {
    std::mem::take(&mut *delivered.lock().unwrap())
}

/// The first outcome delivered to the sink (it arrives after the commit).
pub(super) fn wait_for_first(delivered: &Delivered) -> InsertOutcome {
    for _ in 0..500 {
        if let Some((_, outcomes)) = delivered.lock().unwrap().pop() {
            return outcomes.into_iter().next().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no outcome delivered within 5 s");
}

pub(super) fn insert(
    conv: ConversationId,
    sender: UserId,
    content: &str,
    shard: usize,
) -> InsertRequest {
    InsertRequest {
        conversation_id: conv,
        sender_id: sender,
        content: content.to_owned(),
        origin: Origin {
            shard,
            conn: 7,
            sender_json: Bytes::from_static(b"{}"),
            reply: None,
        },
    }
}

pub(super) fn stored(outcome: &InsertOutcome) -> StoredMessage {
    outcome.result.clone().unwrap()
}

pub(super) fn names(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| c.to_string()).collect()
}
