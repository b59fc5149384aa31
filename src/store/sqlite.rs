//! Embedded SQLite backend: one dedicated thread owns the database file.
//!
//! Owns: the connection settings ([`open`]: WAL, `synchronous=NORMAL`, busy
//! timeout, foreign keys), the entry point [`start`], and what every part of
//! the backend shares (Django's timestamp text, the error mapping). The
//! worker thread that answers connect and delete requests and group-commits
//! inserts lives in `sqlite/worker.rs`, the group commit itself in
//! `sqlite/batch.rs`, connect and delete lookups in `sqlite/lookup.rs`, the
//! schema ([`migrate`]: Django's five tables with their column types, NOT
//! NULL flags and unique constraints) in `sqlite/schema.rs`, the synchronous
//! [`Admin`] API for the CLI and tests in `sqlite/admin.rs`, protocol v2's
//! requests in `sqlite/requests.rs` (history and grouped replays in
//! `sqlite/history.rs`, read positions in `sqlite/receipts.rs`, reactions in
//! `sqlite/reactions.rs`, sharing `sqlite/statements.rs` and
//! `sqlite/tables.rs`) — the same parts as `postgres/`, whose dispatcher
//! task is this backend's worker thread.
//! Helpers shared by the unit tests are in `sqlite/testing.rs`.
//!
//! Must never: run on a shard thread or inside an async runtime — every
//! function here blocks on disk (the worker waits and commits on its own
//! `chatgate-sqlite` thread); hand an insert to the [`CommitSink`] before its
//! batch has committed; panic on what it reads — every SQLite failure
//! becomes [`StoreError::Database`].

mod admin;
mod batch;
mod history;
mod idempotency;
mod lookup;
mod outage;
mod reactions;
mod receipts;
mod requests;
mod schema;
mod statements;
mod tables;
#[cfg(test)]
mod testing;
mod worker;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use rusqlite::Connection;
use tokio::sync::mpsc;

pub use admin::Admin;
pub use schema::migrate;

use super::{CommitSink, StoreError, StoreHandle, StoreWorker, REQUEST_QUEUE};

/// How long a statement waits for another writer (e.g. the Django app).
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Django's SQLite datetime text: UTC, always six fractional digits.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

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
    let worker = worker::spawn_worker(conn, rx, batch_max, sink)?;
    Ok((StoreHandle::new(tx), worker))
}

/// Now, at the microsecond precision the database keeps.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format(TIMESTAMP_FORMAT).to_string()
}

/// Reads a datetime column: Django's text (fraction optional, as Django
/// writes whole seconds without one), or RFC 3339 (an offset written by
/// something else).
fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, StoreError> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|naive| naive.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc)))
        .map_err(|_| StoreError::Database(format!("unreadable datetime {text:?}")))
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::testing::{insert, Fixture};
    use super::*;

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
        assert_eq!(parse_timestamp(&format_timestamp(t)).unwrap(), t);
    }

    #[test]
    fn timestamps_written_by_django_or_others_are_read() {
        let whole = DateTime::from_timestamp(1_740_830_400, 0).unwrap();
        assert_eq!(parse_timestamp("2025-03-01 12:00:00").unwrap(), whole);
        assert_eq!(parse_timestamp("2025-03-01T13:00:00+01:00").unwrap(), whole);
        assert!(parse_timestamp("yesterday").is_err());
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
}
