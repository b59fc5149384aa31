//! Embedded SQLite backend: one dedicated thread owns the database file.
//!
//! Owns: the schema ([`migrate`]: Django's five tables with their column
//! types, NOT NULL flags and unique constraints), the connection settings
//! ([`open`]: WAL, `synchronous=NORMAL`, busy timeout, foreign keys), the
//! worker thread ([`start`]) that answers connect and delete requests and
//! group-commits inserts, and the synchronous [`Admin`] API for the CLI and
//! tests.
//!
//! Must never: run on a shard thread or inside an async runtime — every
//! function here blocks on disk (the worker `blocking_recv`s on its own
//! `chatgate-sqlite` thread); hand an insert to the [`CommitSink`] before its
//! batch has committed; panic on what it reads — every SQLite failure
//! becomes [`StoreError::Database`].

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::deliver;

use super::{
    CommitSink, ConnectInfo, ConversationId, DeleteError, InsertOutcome, InsertRequest, MessageId,
    StoreError, StoreHandle, StoreRequest, StoreWorker, StoredMessage, UserId, UserProfile,
    REQUEST_QUEUE,
};

/// How long a statement waits for another writer (e.g. the Django app).
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Django's SQLite datetime text: UTC, always six fractional digits.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// Django's tables as its SQLite backend creates them (AUTOINCREMENT: ids
/// are never reused), plus the indexes the worker's queries need, under
/// Django's index names. Foreign keys are immediate so a bad reference fails
/// its own statement, not the whole batch's COMMIT.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS "auth_user" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "password" varchar(128) NOT NULL,
    "last_login" datetime NULL,
    "is_superuser" bool NOT NULL,
    "username" varchar(150) NOT NULL UNIQUE,
    "first_name" varchar(150) NOT NULL,
    "last_name" varchar(150) NOT NULL,
    "email" varchar(254) NOT NULL,
    "is_staff" bool NOT NULL,
    "is_active" bool NOT NULL,
    "date_joined" datetime NOT NULL
);
CREATE TABLE IF NOT EXISTS "chatapp_conversation" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "created_at" datetime NOT NULL,
    "updated_at" datetime NOT NULL
);
CREATE TABLE IF NOT EXISTS "chatapp_conversationparticipant" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "unread_count" integer NOT NULL CHECK ("unread_count" >= 0),
    "joined_at" datetime NOT NULL,
    "conversation_id" bigint NOT NULL REFERENCES "chatapp_conversation" ("id"),
    "user_id" integer NOT NULL REFERENCES "auth_user" ("id"),
    UNIQUE ("conversation_id", "user_id")
);
CREATE TABLE IF NOT EXISTS "chatapp_message" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "content" text NOT NULL,
    "timestamp" datetime NOT NULL,
    "conversation_id" bigint NOT NULL REFERENCES "chatapp_conversation" ("id"),
    "sender_id" integer NOT NULL REFERENCES "auth_user" ("id")
);
CREATE TABLE IF NOT EXISTS "chatapp_messagedeletion" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "deleted_at" datetime NOT NULL,
    "message_id" bigint NOT NULL REFERENCES "chatapp_message" ("id"),
    "user_id" integer NOT NULL REFERENCES "auth_user" ("id"),
    UNIQUE ("message_id", "user_id")
);
CREATE INDEX IF NOT EXISTS "chatapp_conversationparticipant_user_id_4dc7efd6"
    ON "chatapp_conversationparticipant" ("user_id");
CREATE INDEX IF NOT EXISTS "chatapp_message_conversation_id_751b6c97"
    ON "chatapp_message" ("conversation_id");
CREATE INDEX IF NOT EXISTS "chatapp_messagedeletion_user_id_cae8a1e0"
    ON "chatapp_messagedeletion" ("user_id");
"#;

/// The user's profile and membership, in one lookup (no row: unknown user).
const CONNECT_QUERY: &str = "SELECT u.id, u.username, u.first_name, u.last_name, u.is_active, \
     EXISTS (SELECT 1 FROM chatapp_conversationparticipant p \
             WHERE p.conversation_id = ?2 AND p.user_id = u.id) \
     FROM auth_user u WHERE u.id = ?1";

/// Inserts nothing (0 rows) when the conversation or the sender is gone, so
/// the failure stays inside the message's savepoint even where foreign keys
/// are deferred (a database created by Django).
const INSERT_MESSAGE: &str =
    "INSERT INTO chatapp_message (content, timestamp, conversation_id, sender_id) \
     SELECT ?1, ?2, ?3, ?4 \
     WHERE EXISTS (SELECT 1 FROM chatapp_conversation WHERE id = ?3) \
     AND EXISTS (SELECT 1 FROM auth_user WHERE id = ?4)";

const BUMP_UNREAD: &str = "UPDATE chatapp_conversationparticipant \
     SET unread_count = unread_count + 1 WHERE conversation_id = ?1 AND user_id <> ?2";

/// `None`: no such message; `Some(member)`: whether the user belongs to its conversation.
const DELETE_CHECK: &str = "SELECT EXISTS (SELECT 1 FROM chatapp_conversationparticipant p \
     WHERE p.conversation_id = m.conversation_id AND p.user_id = ?2) \
     FROM chatapp_message m WHERE m.id = ?1";

const INSERT_DELETION: &str =
    "INSERT INTO chatapp_messagedeletion (deleted_at, message_id, user_id) VALUES (?1, ?2, ?3) \
     ON CONFLICT (message_id, user_id) DO NOTHING";

const INSERT_PARTICIPANT: &str = "INSERT INTO chatapp_conversationparticipant \
     (unread_count, joined_at, conversation_id, user_id) VALUES (0, ?1, ?2, ?3)";

/// Creates Django's tables and the worker's indexes if they are missing (idempotent).
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    tx.execute_batch(SCHEMA).map_err(db_err)?;
    tx.commit().map_err(db_err)
}

/// Opens (or creates) the database file, configures the connection and migrates.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db_err)?;
    configure(&conn).map_err(db_err)?;
    migrate(&conn)?;
    Ok(conn)
}

/// WAL with `synchronous=NORMAL`: a commit survives a process crash (not
/// necessarily a power cut) without an fsync per transaction.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "sqlite store: WAL unavailable");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")
}

/// Opens the database and starts the `chatgate-sqlite` worker thread.
pub fn start(
    path: &Path,
    batch_max: usize,
    sink: CommitSink,
) -> Result<(StoreHandle, StoreWorker), StoreError> {
    let conn = open(path)?;
    // Bounded: shards feel backpressure when the disk falls behind.
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let worker = spawn_worker(conn, rx, batch_max, sink)?;
    Ok((StoreHandle::new(tx), worker))
}

fn spawn_worker(
    conn: Connection,
    rx: mpsc::Receiver<StoreRequest>,
    batch_max: usize,
    sink: CommitSink,
) -> Result<StoreWorker, StoreError> {
    let worker = Worker {
        conn,
        rx,
        batch_max: batch_max.max(1),
        sink,
        idle_runtime: None,
    };
    let (close_tx, close_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("chatgate-sqlite".into())
        .spawn(move || worker.run(close_rx))
        .map(|thread| StoreWorker::from_thread(thread, close_tx))
        .map_err(|e| StoreError::Database(format!("cannot start the store thread: {e}")))
}

/// The worker thread's state; `conn` is touched by no other thread.
struct Worker {
    conn: Connection,
    rx: mpsc::Receiver<StoreRequest>,
    batch_max: usize,
    sink: CommitSink,
    /// Waits for a request or the close signal while idle (no I/O driver).
    idle_runtime: Option<tokio::runtime::Runtime>,
}

fn idle_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime without drivers builds")
}

impl Worker {
    /// One batch per wake-up; returns once every handle is dropped, or
    /// `close` fired, and the queue is empty.
    fn run(mut self, close: oneshot::Receiver<()>) {
        let mut close = Some(close);
        while let Some(first) = self.next_request(&mut close) {
            let inserts = self.collect(first);
            if !inserts.is_empty() {
                let started = std::time::Instant::now();
                let outcomes = commit_batch(&mut self.conn, inserts);
                deliver(&self.sink, outcomes, started.elapsed());
            }
        }
        tracing::debug!("sqlite store: worker stopped");
    }

    /// Waits for the next request. Once `close` fires the channel is closed:
    /// what is already queued is still returned, then `None`.
    fn next_request(&mut self, close: &mut Option<oneshot::Receiver<()>>) -> Option<StoreRequest> {
        loop {
            let Some(signal) = close.as_mut() else {
                // Closed: take what is queued, then stop. Not `recv`: a
                // sender parked on the full channel whose runtime is gone
                // (a shard's session at exit) may hold a permit it will
                // never use, and `recv` would wait for it forever.
                return self.rx.try_recv().ok();
            };
            if signal.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                // Closed on purpose, or the worker handle is gone: stop taking requests.
                *close = None;
                self.rx.close();
                continue;
            }
            match self.rx.try_recv() {
                Ok(request) => return Some(request),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // Idle: block until a request or the close signal (whichever first).
            let rt = self.idle_runtime.get_or_insert_with(idle_runtime);
            let rx = &mut self.rx;
            let got = rt.block_on(async {
                tokio::select! {
                    r = rx.recv() => Some(r),
                    _ = signal => None,
                }
            });
            match got {
                Some(r) => return r,
                None => {
                    *close = None;
                    self.rx.close();
                }
            }
        }
    }

    /// Answers connects and deletes at once and gathers the inserts among
    /// the requests waiting when the batch started (at most `batch_max`).
    /// Bounding the drain to what was waiting keeps a steady stream of
    /// connects from postponing the commit.
    fn collect(&mut self, first: StoreRequest) -> Vec<InsertRequest> {
        let mut waiting = self.rx.len();
        let mut inserts = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next {
            if let Some(insert) = self.answer(request) {
                inserts.push(insert);
            }
            if inserts.len() >= self.batch_max || waiting == 0 {
                break;
            }
            waiting -= 1;
            next = self.rx.try_recv().ok();
        }
        inserts
    }

    /// Answers a connect or delete; hands an insert back for the batch.
    fn answer(&self, request: StoreRequest) -> Option<InsertRequest> {
        // A failed `send` means the requester stopped waiting: nothing to do.
        match request {
            StoreRequest::Insert(insert) => return Some(insert),
            StoreRequest::Connect {
                user_id,
                conversation_id,
                reply,
            } => {
                let _ = reply.send(connect_info(&self.conn, user_id, conversation_id));
            }
            StoreRequest::Delete {
                message_id,
                user_id,
                reply,
            } => {
                let _ = reply.send(delete_message(&self.conn, message_id, user_id));
            }
        }
        None
    }
}

fn connect_info(
    conn: &Connection,
    user_id: UserId,
    conversation_id: ConversationId,
) -> Result<ConnectInfo, StoreError> {
    let found = conn
        .prepare_cached(CONNECT_QUERY)
        .and_then(|mut stmt| {
            stmt.query_row(params![user_id, conversation_id], |row| {
                let user = UserProfile {
                    id: row.get(0)?,
                    username: row.get(1)?,
                    first_name: row.get(2)?,
                    last_name: row.get(3)?,
                    is_active: row.get(4)?,
                };
                Ok(ConnectInfo {
                    user: Some(user),
                    is_participant: row.get(5)?,
                })
            })
            .optional()
        })
        .map_err(db_err)?;
    Ok(found.unwrap_or(ConnectInfo {
        user: None,
        is_participant: false,
    }))
}

fn delete_message(
    conn: &Connection,
    message_id: MessageId,
    user_id: UserId,
) -> Result<(), DeleteError> {
    let member: Option<bool> = conn
        .prepare_cached(DELETE_CHECK)
        .and_then(|mut stmt| {
            stmt.query_row(params![message_id, user_id], |row| row.get(0))
                .optional()
        })
        .map_err(db_err)?;
    match member {
        None => Err(DeleteError::NotFound),
        Some(false) => Err(DeleteError::NotParticipant),
        Some(true) => {
            let now = format_timestamp(now());
            conn.prepare_cached(INSERT_DELETION)
                .and_then(|mut stmt| stmt.execute(params![now, message_id, user_id]))
                .map_err(db_err)?;
            Ok(())
        }
    }
}

/// Commits `inserts` in one transaction, each in its own savepoint, and
/// returns their outcomes in arrival order. If the transaction itself fails
/// (BEGIN, a savepoint, or COMMIT), every insert fails and nothing is kept.
fn commit_batch(conn: &mut Connection, inserts: Vec<InsertRequest>) -> Vec<InsertOutcome> {
    let timestamp = now();
    let results = insert_all(conn, &inserts, timestamp).unwrap_or_else(|e| {
        tracing::error!(error = %e, batch = inserts.len(), "sqlite store: batch not committed");
        vec![Err(db_err(e)); inserts.len()]
    });
    inserts
        .into_iter()
        .zip(results)
        .map(|(request, result)| InsertOutcome { request, result })
        .collect()
}

type InsertResult = Result<StoredMessage, StoreError>;

fn insert_all(
    conn: &mut Connection,
    inserts: &[InsertRequest],
    timestamp: DateTime<Utc>,
) -> rusqlite::Result<Vec<InsertResult>> {
    let text = format_timestamp(timestamp);
    // IMMEDIATE: take the write lock up front (waiting up to the busy timeout)
    // rather than failing to upgrade a read lock halfway through the batch.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(inserts.len());
    for insert in inserts {
        let id = insert_in_savepoint(&tx, insert, &text)?;
        results.push(id.map(|id| StoredMessage { id, timestamp }));
    }
    tx.commit()?;
    Ok(results)
}

/// The outer error means the transaction is unusable (the batch fails); the
/// inner one means only this message failed and was rolled back.
fn insert_in_savepoint(
    conn: &Connection,
    insert: &InsertRequest,
    timestamp: &str,
) -> rusqlite::Result<Result<MessageId, StoreError>> {
    run_cached(conn, "SAVEPOINT chatgate_insert")?;
    let outcome = match insert_message(conn, insert, timestamp) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(missing_reference(conn, insert.conversation_id)),
        Err(e) => Err(db_err(e)),
    };
    if let Err(e) = &outcome {
        let conversation_id = insert.conversation_id;
        tracing::warn!(error = %e, conversation_id, "sqlite store: message not stored");
        run_cached(conn, "ROLLBACK TO chatgate_insert")?;
    }
    run_cached(conn, "RELEASE chatgate_insert")?;
    Ok(outcome)
}

fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// `None` when the conversation or the sender does not exist.
fn insert_message(
    conn: &Connection,
    insert: &InsertRequest,
    timestamp: &str,
) -> rusqlite::Result<Option<MessageId>> {
    let conversation = insert.conversation_id;
    let sender = insert.sender_id;
    let inserted = conn.prepare_cached(INSERT_MESSAGE)?.execute(params![
        insert.content,
        timestamp,
        conversation,
        sender
    ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let id = conn.last_insert_rowid();
    conn.prepare_cached(BUMP_UNREAD)?
        .execute(params![conversation, sender])?;
    Ok(Some(id))
}

/// Names which reference made an insert select no row.
fn missing_reference(conn: &Connection, conversation_id: ConversationId) -> StoreError {
    let exists = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM chatapp_conversation WHERE id = ?1)")
        .and_then(|mut stmt| stmt.query_row([conversation_id], |row| row.get::<_, bool>(0)));
    match exists {
        Ok(false) => StoreError::Database("conversation not found".into()),
        Ok(true) => StoreError::Database("sender not found".into()),
        Err(e) => db_err(e),
    }
}

/// Now, at the microsecond precision the database keeps.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format(TIMESTAMP_FORMAT).to_string()
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Synchronous administration (CLI and tests): never use it from a shard.
#[derive(Debug)]
pub struct Admin {
    conn: Connection,
}

impl Admin {
    /// Opens (creating and migrating if needed) the database file.
    pub fn open(path: &Path) -> Result<Admin, StoreError> {
        open(path).map(|conn| Admin { conn })
    }

    /// Adds an active user with an unusable password (`!`) and no e-mail.
    pub fn create_user(
        &self,
        username: &str,
        first_name: &str,
        last_name: &str,
    ) -> Result<UserId, StoreError> {
        self.conn
            .execute(
                "INSERT INTO auth_user (password, last_login, is_superuser, username, \
                 first_name, last_name, email, is_staff, is_active, date_joined) \
                 VALUES ('!', NULL, 0, ?1, ?2, ?3, '', 0, 1, ?4)",
                params![username, first_name, last_name, format_timestamp(now())],
            )
            .map_err(db_err)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Activates or deactivates a user; an unknown id is an error.
    pub fn set_user_active(&self, id: UserId, active: bool) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE auth_user SET is_active = ?2 WHERE id = ?1",
                params![id, active],
            )
            .map_err(db_err)?;
        expect_one(changed, "user", id)
    }

    /// Creates a conversation with `members` as participants, atomically; an
    /// unknown user id fails the whole call.
    pub fn create_conversation(&self, members: &[UserId]) -> Result<ConversationId, StoreError> {
        let now = format_timestamp(now());
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO chatapp_conversation (created_at, updated_at) VALUES (?1, ?1)",
            [&now],
        )
        .map_err(db_err)?;
        let id = tx.last_insert_rowid();
        for user in members {
            tx.execute(INSERT_PARTICIPANT, params![now, id, user])
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(id)
    }

    /// Adds a participant with no unread messages.
    pub fn add_participant(&self, conv: ConversationId, user: UserId) -> Result<(), StoreError> {
        let now = format_timestamp(now());
        self.conn
            .execute(INSERT_PARTICIPANT, params![now, conv, user])
            .map_err(db_err)?;
        Ok(())
    }

    /// Deletes a conversation with its participants, messages and deletions.
    pub fn delete_conversation(&self, conv: ConversationId) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        for sql in [
            "DELETE FROM chatapp_messagedeletion WHERE message_id IN \
             (SELECT id FROM chatapp_message WHERE conversation_id = ?1)",
            "DELETE FROM chatapp_message WHERE conversation_id = ?1",
            "DELETE FROM chatapp_conversationparticipant WHERE conversation_id = ?1",
        ] {
            tx.execute(sql, [conv]).map_err(db_err)?;
        }
        let deleted = tx
            .execute("DELETE FROM chatapp_conversation WHERE id = ?1", [conv])
            .map_err(db_err)?;
        expect_one(deleted, "conversation", conv)?;
        tx.commit().map_err(db_err)
    }

    /// Number of rows in `auth_user`.
    pub fn user_count(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM auth_user", [], |row| row.get(0))
            .map_err(db_err)
    }

    /// The underlying connection (tests read rows directly).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn expect_one(changed: usize, what: &str, id: i64) -> Result<(), StoreError> {
    match changed {
        0 => Err(StoreError::Database(format!("no {what} with id {id}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use tempfile::TempDir;

    use super::*;
    use crate::store::Origin;

    type Delivered = Arc<Mutex<Vec<(usize, Vec<InsertOutcome>)>>>;

    struct Fixture {
        _dir: TempDir,
        path: PathBuf,
        admin: Admin,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("chat.db");
            let admin = Admin::open(&path).unwrap();
            Fixture {
                _dir: dir,
                path,
                admin,
            }
        }

        fn user(&self, username: &str) -> UserId {
            self.admin.create_user(username, "First", "Last").unwrap()
        }

        fn unread(&self, conv: ConversationId, user: UserId) -> i64 {
            self.query(
                "SELECT unread_count FROM chatapp_conversationparticipant \
                 WHERE conversation_id = ?1 AND user_id = ?2",
                [conv, user],
            )
        }

        fn messages(&self) -> i64 {
            self.query("SELECT COUNT(*) FROM chatapp_message", [])
        }

        fn query<P: rusqlite::Params>(&self, sql: &str, params: P) -> i64 {
            let conn = self.admin.connection();
            conn.query_row(sql, params, |row| row.get(0)).unwrap()
        }

        /// Queues `requests` through a real handle *before* the worker starts,
        /// so the batches they form are deterministic; then drops the handle
        /// and waits for the worker to finish.
        fn run_queued(
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

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn recording_sink() -> (CommitSink, Delivered) {
        let delivered = Delivered::default();
        let log = Arc::clone(&delivered);
        let sink: CommitSink = Arc::new(move |shard, outcomes| {
            log.lock().unwrap().push((shard, outcomes));
        });
        (sink, delivered)
    }

    fn take(delivered: Delivered) -> Vec<(usize, Vec<InsertOutcome>)> {
        std::mem::take(&mut *delivered.lock().unwrap())
    }

    /// The first outcome delivered to the sink (it arrives after the commit).
    fn wait_for_first(delivered: &Delivered) -> InsertOutcome {
        for _ in 0..500 {
            if let Some((_, outcomes)) = delivered.lock().unwrap().pop() {
                return outcomes.into_iter().next().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no outcome delivered within 5 s");
    }

    fn insert(conv: ConversationId, sender: UserId, content: &str, shard: usize) -> InsertRequest {
        InsertRequest {
            conversation_id: conv,
            sender_id: sender,
            content: content.to_owned(),
            origin: Origin {
                shard,
                conn: 7,
                sender_json: Bytes::from_static(b"{}"),
            },
        }
    }

    fn stored(outcome: &InsertOutcome) -> StoredMessage {
        outcome.result.clone().unwrap()
    }

    fn table_columns(conn: &Connection, table: &str) -> Vec<(String, bool)> {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info(\"{table}\")"))
            .unwrap();
        let rows = stmt.query_map([], |row| Ok((row.get(1)?, row.get(3)?)));
        rows.unwrap().map(Result::unwrap).collect()
    }

    fn unique_column_sets(conn: &Connection, table: &str) -> BTreeSet<Vec<String>> {
        let mut list = conn
            .prepare(&format!("PRAGMA index_list(\"{table}\")"))
            .unwrap();
        let indexes: Vec<(String, bool)> = list
            .query_map([], |row| Ok((row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let unique = indexes.into_iter().filter(|(_, unique)| *unique);
        unique
            .map(|(name, _)| {
                let mut info = conn
                    .prepare(&format!("PRAGMA index_info(\"{name}\")"))
                    .unwrap();
                let cols = info.query_map([], |row| row.get(2)).unwrap();
                cols.map(Result::unwrap).collect()
            })
            .collect()
    }

    fn names(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn migrate_is_idempotent_and_creates_djangos_tables() {
        let fx = Fixture::new();
        let conn = fx.admin.connection();
        migrate(conn).unwrap();
        migrate(conn).unwrap();
        drop(Admin::open(&fx.path).unwrap());

        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .unwrap();
        let tables: BTreeSet<String> = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected_tables = [
            "auth_user",
            "chatapp_conversation",
            "chatapp_conversationparticipant",
            "chatapp_message",
            "chatapp_messagedeletion",
        ];
        assert_eq!(
            tables,
            expected_tables.iter().map(|t| t.to_string()).collect()
        );

        let nn = |cols: &[(&str, bool)]| -> Vec<(String, bool)> {
            cols.iter().map(|(c, n)| (c.to_string(), *n)).collect()
        };
        assert_eq!(
            table_columns(conn, "auth_user"),
            nn(&[
                ("id", true),
                ("password", true),
                ("last_login", false),
                ("is_superuser", true),
                ("username", true),
                ("first_name", true),
                ("last_name", true),
                ("email", true),
                ("is_staff", true),
                ("is_active", true),
                ("date_joined", true),
            ])
        );
        assert_eq!(
            table_columns(conn, "chatapp_conversation"),
            nn(&[("id", true), ("created_at", true), ("updated_at", true)])
        );
        assert_eq!(
            table_columns(conn, "chatapp_conversationparticipant"),
            nn(&[
                ("id", true),
                ("unread_count", true),
                ("joined_at", true),
                ("conversation_id", true),
                ("user_id", true),
            ])
        );
        assert_eq!(
            table_columns(conn, "chatapp_message"),
            nn(&[
                ("id", true),
                ("content", true),
                ("timestamp", true),
                ("conversation_id", true),
                ("sender_id", true),
            ])
        );
        assert_eq!(
            table_columns(conn, "chatapp_messagedeletion"),
            nn(&[
                ("id", true),
                ("deleted_at", true),
                ("message_id", true),
                ("user_id", true),
            ])
        );

        let uniques = |sets: &[&[&str]]| -> BTreeSet<Vec<String>> {
            sets.iter().map(|cols| names(cols)).collect()
        };
        assert_eq!(
            unique_column_sets(conn, "auth_user"),
            uniques(&[&["username"]])
        );
        assert_eq!(
            unique_column_sets(conn, "chatapp_conversationparticipant"),
            uniques(&[&["conversation_id", "user_id"]])
        );
        assert_eq!(
            unique_column_sets(conn, "chatapp_messagedeletion"),
            uniques(&[&["message_id", "user_id"]])
        );
        assert!(unique_column_sets(conn, "chatapp_message").is_empty());
    }

    #[test]
    fn open_enables_wal_and_foreign_keys() {
        let fx = Fixture::new();
        let conn = fx.admin.connection();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), fk), ("wal", 1));
    }

    #[test]
    fn timestamps_use_djangos_sqlite_text_format() {
        let at = DateTime::from_timestamp(1_700_000_000, 5_000).unwrap();
        assert_eq!(format_timestamp(at), "2023-11-14 22:13:20.000005");
        let t = now();
        assert_eq!(t.timestamp_subsec_nanos() % 1_000, 0);
    }

    #[test]
    fn group_commit_stores_a_batch_with_one_timestamp_and_bumps_unread() {
        let fx = Fixture::new();
        let (a, b, c) = (fx.user("a"), fx.user("b"), fx.user("c"));
        let conv = fx.admin.create_conversation(&[a, b, c]).unwrap();
        let other = fx.admin.create_conversation(&[a, b]).unwrap();

        let before = now();
        let delivered = fx.run_queued(
            16,
            vec![
                insert(conv, a, "one", 0),
                insert(conv, b, "two", 0),
                insert(conv, a, "three", 0),
            ],
        );
        let after = now();

        assert_eq!(delivered.len(), 1, "one batch, one shard: one sink call");
        let outcomes = &delivered[0].1;
        let msgs: Vec<StoredMessage> = outcomes.iter().map(stored).collect();
        assert!(msgs[0].id < msgs[1].id && msgs[1].id < msgs[2].id);
        assert!(msgs.iter().all(|m| m.timestamp == msgs[0].timestamp));
        assert!(before <= msgs[0].timestamp && msgs[0].timestamp <= after);
        assert_eq!(msgs[0].timestamp.timestamp_subsec_nanos() % 1_000, 0);
        let contents: Vec<&str> = outcomes
            .iter()
            .map(|o| o.request.content.as_str())
            .collect();
        assert_eq!(contents, ["one", "two", "three"]);

        let (text, content, sender): (String, String, i64) = fx
            .admin
            .connection()
            .query_row(
                "SELECT timestamp, content, sender_id FROM chatapp_message WHERE id = ?1",
                [msgs[1].id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!(text, format_timestamp(msgs[1].timestamp));
        assert_eq!((content.as_str(), sender), ("two", b));

        assert_eq!(fx.unread(conv, a), 1);
        assert_eq!(fx.unread(conv, b), 2);
        assert_eq!(fx.unread(conv, c), 3);
        assert_eq!((fx.unread(other, a), fx.unread(other, b)), (0, 0));
    }

    #[test]
    fn insert_into_deleted_conversation_fails_alone() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let kept = fx.admin.create_conversation(&[a, b]).unwrap();
        let gone = fx.admin.create_conversation(&[a, b]).unwrap();
        fx.admin.delete_conversation(gone).unwrap();

        let delivered = fx.run_queued(
            16,
            vec![
                insert(kept, a, "first", 0),
                insert(gone, a, "lost", 0),
                insert(kept, a, "second", 0),
                insert(kept, 999, "ghost sender", 0),
            ],
        );

        let outcomes = &delivered[0].1;
        assert!(outcomes[0].result.is_ok());
        assert_eq!(
            outcomes[1].result,
            Err(StoreError::Database("conversation not found".into()))
        );
        assert!(outcomes[2].result.is_ok());
        assert_eq!(
            outcomes[3].result,
            Err(StoreError::Database("sender not found".into()))
        );
        assert_eq!(fx.messages(), 2);
        assert_eq!((fx.unread(kept, a), fx.unread(kept, b)), (0, 2));
    }

    #[test]
    fn a_failed_unread_bump_rolls_back_only_its_own_message() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let open_conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let blocked = fx.admin.create_conversation(&[a, b]).unwrap();
        // The message row is written, then its unread bump fails: only the
        // savepoint can take the row back out.
        fx.admin
            .connection()
            .execute_batch(&format!(
                "CREATE TRIGGER refuse_bump BEFORE UPDATE ON chatapp_conversationparticipant \
                 WHEN NEW.conversation_id = {blocked} \
                 BEGIN SELECT RAISE(ABORT, 'bump refused'); END;"
            ))
            .unwrap();

        let delivered = fx.run_queued(
            16,
            vec![
                insert(open_conv, a, "before", 0),
                insert(blocked, a, "refused", 0),
                insert(open_conv, a, "after", 0),
            ],
        );

        let outcomes = &delivered[0].1;
        assert!(outcomes[0].result.is_ok() && outcomes[2].result.is_ok());
        assert_eq!(
            outcomes[1].result,
            Err(StoreError::Database("bump refused".into()))
        );
        let in_blocked = fx.query(
            "SELECT COUNT(*) FROM chatapp_message WHERE conversation_id = ?1",
            [blocked],
        );
        assert_eq!((fx.messages(), in_blocked), (2, 0));
        assert_eq!(fx.unread(open_conv, b), 2);
    }

    #[test]
    fn failed_commit_fails_every_insert_of_the_batch_and_keeps_nothing() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        // A deferred foreign key is checked only at COMMIT: this trigger makes
        // the batch holding a "poison" message fail there.
        fx.admin
            .connection()
            .execute_batch(
                "CREATE TABLE trap (ref integer REFERENCES chatapp_conversation (id) \
                     DEFERRABLE INITIALLY DEFERRED);
                 CREATE TRIGGER trap_poison AFTER INSERT ON chatapp_message \
                     WHEN NEW.content = 'poison' \
                     BEGIN INSERT INTO trap (ref) VALUES (-1); END;",
            )
            .unwrap();

        let delivered = fx.run_queued(
            16,
            vec![
                insert(conv, a, "fine", 0),
                insert(conv, a, "poison", 1),
                insert(conv, a, "fine too", 0),
            ],
        );

        let results: Vec<InsertResult> = delivered
            .into_iter()
            .flat_map(|(_, outcomes)| outcomes.into_iter().map(|o| o.result))
            .collect();
        let failed = Err(StoreError::Database("FOREIGN KEY constraint failed".into()));
        assert_eq!(results, vec![failed; 3]);
        assert_eq!(fx.messages(), 0);
        assert_eq!(fx.unread(conv, b), 0);

        let delivered = fx.run_queued(16, vec![insert(conv, a, "after", 0)]);
        assert!(delivered[0].1[0].result.is_ok(), "the next batch commits");
        assert_eq!(fx.unread(conv, b), 1);
    }

    #[test]
    fn outcomes_reach_the_sink_grouped_per_shard_in_order() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let shards = [2, 0, 1, 0, 2, 0];
        let requests = shards
            .iter()
            .enumerate()
            .map(|(i, &shard)| insert(conv, a, &format!("m{i}"), shard))
            .collect();

        let delivered = fx.run_queued(16, requests);

        let calls: Vec<(usize, Vec<String>)> = delivered
            .iter()
            .map(|(shard, outcomes)| {
                assert!(outcomes.iter().all(|o| o.request.origin.shard == *shard));
                let contents = outcomes.iter().map(|o| o.request.content.clone());
                (*shard, contents.collect())
            })
            .collect();
        assert_eq!(
            calls,
            [
                (0, names(&["m1", "m3", "m5"])),
                (1, names(&["m2"])),
                (2, names(&["m0", "m4"])),
            ]
        );
        for (_, outcomes) in &delivered {
            let ids: Vec<MessageId> = outcomes.iter().map(|o| stored(o).id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn batch_max_caps_the_inserts_per_transaction() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let requests = (0..5).map(|i| insert(conv, a, &i.to_string(), 0)).collect();

        let delivered = fx.run_queued(2, requests);

        let sizes: Vec<usize> = delivered.iter().map(|(_, o)| o.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(fx.messages(), 5);
    }

    /// A sender parked on the full channel whose task will never run again
    /// (a shard's session when its runtime is gone) is handed a permit as
    /// soon as the worker takes a message. Closing must still end the
    /// worker: it takes what is queued and stops instead of waiting for
    /// that permit to be used.
    #[test]
    fn join_does_not_wait_for_a_parked_sender_that_will_never_send() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let (tx, rx) = mpsc::channel(2);
        let handle = StoreHandle::new(tx);
        for i in 0..2 {
            assert!(handle
                .try_insert(insert(conv, a, &i.to_string(), 0))
                .is_ok());
        }
        let parked = handle.clone();
        let mut send = Box::pin(async move { parked.insert(insert(conv, a, "parked", 0)).await });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = std::future::Future::poll(send.as_mut(), &mut cx);
        assert!(polled.is_pending(), "the channel is full");
        std::mem::forget(send); // never polled again, never dropped
        drop(handle);

        let (sink, delivered) = recording_sink();
        let worker = spawn_worker(open(&fx.path).unwrap(), rx, 16, sink).unwrap();
        wait_for_first(&delivered);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            worker.join();
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("join returns");
        assert_eq!(fx.messages(), 2, "what was queued is committed");
    }

    #[test]
    fn connect_info_reports_profile_and_membership() {
        let fx = Fixture::new();
        let member = fx.admin.create_user("ann", "Ann", "Lee").unwrap();
        let outsider = fx.user("bob");
        let sleeper = fx.user("cat");
        let conv = fx.admin.create_conversation(&[member, sleeper]).unwrap();
        fx.admin.set_user_active(sleeper, false).unwrap();
        let (sink, _) = recording_sink();
        let (handle, worker) = start(&fx.path, 16, sink).unwrap();

        let rt = runtime();
        let info = |user| rt.block_on(handle.connect_info(user, conv)).unwrap();
        assert_eq!(
            info(member),
            ConnectInfo {
                user: Some(UserProfile {
                    id: member,
                    username: "ann".into(),
                    first_name: "Ann".into(),
                    last_name: "Lee".into(),
                    is_active: true,
                }),
                is_participant: true,
            }
        );
        assert_eq!(
            info(9999),
            ConnectInfo {
                user: None,
                is_participant: false
            }
        );
        let inactive = info(sleeper);
        assert!(inactive.is_participant);
        assert!(!inactive.user.unwrap().is_active);
        let stranger = info(outsider);
        assert!(!stranger.is_participant);
        assert_eq!(stranger.user.unwrap().username, "bob");

        drop(handle);
        worker.join();
    }

    #[test]
    fn delete_is_per_user_checked_and_idempotent() {
        let fx = Fixture::new();
        let (a, b, outsider) = (fx.user("a"), fx.user("b"), fx.user("o"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let (sink, delivered) = recording_sink();
        let (handle, worker) = start(&fx.path, 16, sink).unwrap();
        let rt = runtime();
        rt.block_on(handle.insert(insert(conv, a, "hello", 0)))
            .unwrap();
        let id = stored(&wait_for_first(&delivered)).id;

        let delete = |msg, user| rt.block_on(handle.delete(msg, user));
        assert_eq!(delete(id + 1, a), Err(DeleteError::NotFound));
        assert_eq!(delete(id, outsider), Err(DeleteError::NotParticipant));
        assert_eq!(delete(id, b), Ok(()));
        assert_eq!(delete(id, b), Ok(()));

        let rows = fx.query(
            "SELECT COUNT(*) FROM chatapp_messagedeletion WHERE message_id = ?1 AND user_id = ?2",
            [id, b],
        );
        assert_eq!(rows, 1);
        assert_eq!(fx.messages(), 1, "the message row stays");
        drop(handle);
        worker.join();
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        fx.run_queued(16, vec![insert(conv, a, "kept", 0)]);
        let path = fx.path.clone();
        let Fixture { _dir, admin, .. } = fx;
        drop(admin);

        let reopened = Admin::open(&path).unwrap();
        assert_eq!(reopened.user_count().unwrap(), 2);
        let (content, unread): (String, i64) = reopened
            .connection()
            .query_row(
                "SELECT m.content, p.unread_count FROM chatapp_message m \
                 JOIN chatapp_conversationparticipant p \
                 ON p.conversation_id = m.conversation_id AND p.user_id = ?1",
                [b],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((content.as_str(), unread), ("kept", 1));
    }

    #[test]
    fn dropping_the_handle_finishes_queued_inserts_then_stops() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let (sink, delivered) = recording_sink();
        let (handle, worker) = start(&fx.path, 8, sink).unwrap();

        runtime().block_on(async {
            for i in 0..50 {
                handle
                    .insert(insert(conv, a, &i.to_string(), 0))
                    .await
                    .unwrap();
            }
        });
        drop(handle);
        worker.join();

        let outcomes: Vec<InsertOutcome> = take(delivered)
            .into_iter()
            .flat_map(|(_, outcomes)| outcomes)
            .collect();
        assert_eq!(outcomes.len(), 50);
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        assert_eq!(fx.messages(), 50);
        assert_eq!(fx.unread(conv, b), 50);
    }

    #[test]
    fn admin_rejects_unknown_ids_without_partial_writes() {
        let fx = Fixture::new();
        let a = fx.user("a");
        assert!(fx.admin.create_conversation(&[a, 4242]).is_err());
        let conversations = fx.query("SELECT COUNT(*) FROM chatapp_conversation", []);
        assert_eq!(conversations, 0);
        assert!(fx.admin.set_user_active(4242, false).is_err());
        assert!(fx.admin.delete_conversation(4242).is_err());
        assert!(
            fx.admin.create_user("a", "x", "y").is_err(),
            "username is unique"
        );
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        assert!(
            fx.admin.add_participant(conv, a).is_err(),
            "already a member"
        );
        assert_eq!(fx.admin.user_count().unwrap(), 1);

        let password: String = fx
            .admin
            .connection()
            .query_row("SELECT password FROM auth_user WHERE id = ?1", [a], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(password, "!");
    }

    #[test]
    fn ids_are_never_reused_after_a_delete() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let first = fx.admin.create_conversation(&[a]).unwrap();
        fx.admin.delete_conversation(first).unwrap();
        let second = fx.admin.create_conversation(&[a]).unwrap();
        assert!(second > first);
    }
}
