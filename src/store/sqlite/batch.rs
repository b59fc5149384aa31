//! Group commit: one `BEGIN IMMEDIATE` transaction per batch, one savepoint
//! per message.
//!
//! Owns the insert SQL and what happens around it: every message of a
//! batch gets the same timestamp (taken when the transaction starts); a
//! message whose conversation or sender is gone inserts nothing and fails
//! alone, named by which reference is missing; the `unread_count` bump of
//! every other participant happens in the message's savepoint, so a failed
//! bump takes only its own message back out; if the transaction itself
//! fails (BEGIN, a savepoint, COMMIT), every insert of the batch fails and
//! nothing is kept. Write failures (not a missing conversation or sender)
//! are reported to the store thread's [`Outage`], which logs an outage
//! once, not once per message.
//!
//! Must never: log every failed write of an outage; give an insert zero or two outcomes; return outcomes in
//! another order than the inserts arrived in.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, TransactionBehavior};

use super::outage::Outage;
use super::{db_err, format_timestamp, now, StoreError};
use crate::store::{ConversationId, InsertOutcome, InsertRequest, MessageId, StoredMessage};

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

/// Commits `inserts` in one transaction, each in its own savepoint, and
/// returns their outcomes in arrival order. If the transaction itself fails
/// (BEGIN, a savepoint, or COMMIT), every insert fails and nothing is kept.
/// `outage` learns how many writes failed.
pub(super) fn commit_batch(
    conn: &mut Connection,
    inserts: Vec<InsertRequest>,
    outage: &mut Outage,
) -> Vec<InsertOutcome> {
    let timestamp = now();
    let mut write_error = None;
    let results = insert_all(conn, &inserts, timestamp, &mut write_error).unwrap_or_else(|e| {
        let e = db_err(e);
        write_error = Some((inserts.len() as u64, e.to_string()));
        vec![Err(e); inserts.len()]
    });
    let (failed, error) = write_error.map_or((0, None), |(n, e)| (n, Some(e)));
    outage.record(failed, error.as_deref(), std::time::Instant::now());
    inserts
        .into_iter()
        .zip(results)
        .map(|(request, result)| InsertOutcome { request, result })
        .collect()
}

type InsertResult = Result<StoredMessage, StoreError>;

/// Failed writes of a batch (not counting missing references), and the last error.
type WriteError = Option<(u64, String)>;

fn insert_all(
    conn: &mut Connection,
    inserts: &[InsertRequest],
    timestamp: DateTime<Utc>,
    write_error: &mut WriteError,
) -> rusqlite::Result<Vec<InsertResult>> {
    let text = format_timestamp(timestamp);
    // IMMEDIATE: take the write lock up front (waiting up to the busy timeout)
    // rather than failing to upgrade a read lock halfway through the batch.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(inserts.len());
    for insert in inserts {
        let id = insert_in_savepoint(&tx, insert, &text, write_error)?;
        results.push(id.map(|id| StoredMessage { id, timestamp }));
    }
    tx.commit()?;
    Ok(results)
}

/// The outer error means the transaction is unusable (the batch fails); the
/// inner one means only this message failed and was rolled back. A failed
/// write (not a missing reference) is added to `write_error`.
fn insert_in_savepoint(
    conn: &Connection,
    insert: &InsertRequest,
    timestamp: &str,
    write_error: &mut WriteError,
) -> rusqlite::Result<Result<MessageId, StoreError>> {
    run_cached(conn, "SAVEPOINT chatgate_insert")?;
    let outcome = match insert_message(conn, insert, timestamp) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => {
            let e = missing_reference(conn, insert.conversation_id);
            let conversation_id = insert.conversation_id;
            tracing::warn!(error = %e, conversation_id, "sqlite store: message not stored");
            Err(e)
        }
        Err(e) => {
            let e = db_err(e);
            let failed = write_error.as_ref().map_or(0, |(n, _)| *n) + 1;
            *write_error = Some((failed, e.to_string()));
            Err(e)
        }
    };
    if outcome.is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::testing::{insert, stored, Fixture};

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
}
