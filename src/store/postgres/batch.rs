//! Group commit: one transaction, one set-based statement per batch.
//!
//! Owns the batch SQL ([`INSERT_BATCH`]) and what happens around it: ids
//! allocated from the message sequence in input order (so they map back to
//! their messages exactly and increase in delivery order), rows whose
//! conversation or sender is missing filtered out and failed alone, the
//! `unread_count` increments of every other participant in the same
//! statement (summed per batch: one row update per participant of each
//! conversation in the batch, however many messages it carries; see
//! `postgres/increments.rs`), a whole-batch retry on deadlock or
//! serialization failure, and — when the batch fails as a whole on a
//! statement error (e.g. a deferred foreign key checked at COMMIT) — a retry
//! message by message so only the offending ones fail.
//!
//! Must never: give an insert zero or two outcomes; keep part of a failed
//! transaction; send COMMIT after the deadline (a batch cut short by the
//! deadline is rolled back by closing its connection). The one window it
//! cannot close: a COMMIT sent in time whose answer comes too late — the
//! senders are told it failed though it may be stored; that case is logged
//! as an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;

use super::increments::Increments;
use super::{Failure, Shared};
use crate::store::{InsertOutcome, InsertRequest, StoreError, StoredMessage};

/// A whole batch retried at most this often on deadlock or serialization failure.
const MAX_ATTEMPTS: usize = 3;

/// One statement for the whole batch. Parameters: `$1` conversation ids,
/// `$2` sender ids, `$3` contents (one element per message, in input
/// order), `$4` the commit timestamp, `$5`/`$6`/`$7` the batch's
/// [`Increments`] (conversation, sender, message count per group). Returns
/// one row per message, in input order: the id reserved for it, whether its
/// conversation exists, whether it was stored.
///
/// - `ids`: one `nextval` per message; the sequence is the column's own
///   (`pg_get_serial_sequence`, resolved once per statement, finds Django's
///   identity column and a plain `bigserial` alike). Sorted and numbered,
///   the n-th smallest id goes to the n-th message, whatever order
///   `nextval` ran in.
/// - `conversations`, `senders`: the referenced rows that exist, found by
///   primary key from the groups' distinct ids (never a scan of
///   `auth_user`).
/// - `inserted`: names every NOT NULL column (Django sets no database
///   defaults) and skips messages whose conversation or sender is gone.
/// - `groups`, `totals`: the groups whose references exist (a group is
///   stored all or nothing), summed per conversation with each sender's own
///   count kept beside it.
/// - `bumped`: each participant row of the batch's conversations updated
///   once, by the conversation's stored messages minus the participant's
///   own: the counts one increment per message per other participant would
///   give. No explicit row locks: batches in flight together never share a
///   conversation (`postgres/lanes.rs`), and a deadlock with another writer
///   is retried as a whole.
const INSERT_BATCH: &str = r#"
WITH input AS (
    SELECT t.conversation_id, t.sender_id, t.content, t.ord
    FROM unnest($1::bigint[], $2::bigint[], $3::text[])
         WITH ORDINALITY AS t(conversation_id, sender_id, content, ord)
),
ids AS MATERIALIZED (
    SELECT nextval(s.seq) AS id
    FROM (SELECT pg_get_serial_sequence('chatapp_message', 'id')::regclass AS seq) s,
         generate_series(1, cardinality($1::bigint[]))
),
numbered AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY id) AS ord FROM ids
),
conversations AS MATERIALIZED (
    SELECT c.id FROM chatapp_conversation c WHERE c.id = ANY($5::bigint[])
),
senders AS MATERIALIZED (
    SELECT u.id::bigint AS id FROM auth_user u WHERE u.id = ANY($6::bigint[])
),
checked AS MATERIALIZED (
    SELECT i.ord, n.id, i.conversation_id, i.sender_id, i.content,
           i.conversation_id IN (SELECT id FROM conversations) AS conversation_exists,
           i.sender_id IN (SELECT id FROM senders) AS sender_exists
    FROM input i JOIN numbered n ON n.ord = i.ord
),
inserted AS (
    INSERT INTO chatapp_message (id, content, "timestamp", conversation_id, sender_id)
    SELECT id, content, $4::timestamptz, conversation_id, sender_id
    FROM checked
    WHERE conversation_exists AND sender_exists
    ORDER BY ord
),
groups AS (
    SELECT g.conversation_id, g.sender_id, g.n
    FROM unnest($5::bigint[], $6::bigint[], $7::integer[]) AS g(conversation_id, sender_id, n)
    WHERE g.conversation_id IN (SELECT id FROM conversations)
      AND g.sender_id IN (SELECT id FROM senders)
),
totals AS MATERIALIZED (
    SELECT conversation_id, sum(n)::integer AS total,
           array_agg(sender_id) AS senders, array_agg(n) AS own
    FROM groups
    GROUP BY conversation_id
),
bumped AS (
    UPDATE chatapp_conversationparticipant p
    SET unread_count = p.unread_count + t.total
        - coalesce(t.own[array_position(t.senders, p.user_id::bigint)], 0)
    FROM totals t
    WHERE p.conversation_id = ANY($5::bigint[])
      AND p.conversation_id = t.conversation_id
      AND t.total > coalesce(t.own[array_position(t.senders, p.user_id::bigint)], 0)
)
SELECT id, conversation_exists, conversation_exists AND sender_exists AS stored
FROM checked
ORDER BY ord
"#;

/// Sent in each batch transaction, before [`INSERT_BATCH`]: with the
/// default (`auto`) Postgres plans the prepared statement anew on every
/// execution (its custom plans look cheaper than the generic one), which
/// at light load, one message a batch, is most of the statement's cost
/// (psql, `PREPARE` + `EXECUTE` of a one-message batch: 0.85 ms custom,
/// 0.30 ms generic). `SET LOCAL` ends with the transaction, so it is safe
/// behind PgBouncer's transaction pooling and touches no other statement.
/// (`plan_cache_mode` exists since PostgreSQL 12, the oldest Django 4.2
/// supports.)
const GENERIC_PLAN: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

/// An insert waiting for a batch, with the moment its sender stops waiting.
#[derive(Debug)]
pub(super) struct Queued {
    pub request: InsertRequest,
    pub deadline: Instant,
}

type InsertResult = Result<StoredMessage, StoreError>;

/// Commits `batch` and returns one outcome per insert, in input order.
/// Inserts whose deadline already passed fail with [`StoreError::Timeout`]
/// without being tried; the rest share the earliest remaining deadline.
pub(super) async fn commit(shared: Arc<Shared>, batch: Vec<Queued>) -> Vec<InsertOutcome> {
    let now = Instant::now();
    let (live, deadline) = live_inserts(&batch, now);
    let rows: Vec<&InsertRequest> = live.iter().map(|&i| &batch[i].request).collect();
    let mut stored = if rows.is_empty() {
        Vec::new()
    } else {
        commit_rows(&shared, &rows, deadline).await
    }
    .into_iter();
    let expired = batch.len() - live.len();
    if expired > 0 {
        // One line per batch: under overload there are thousands a second.
        tracing::warn!(
            expired,
            batch = batch.len(),
            "postgres store: messages waited past the store timeout"
        );
    }
    let mut live = live.into_iter().peekable();
    batch
        .into_iter()
        .enumerate()
        .map(|(i, queued)| {
            let result = if live.next_if_eq(&i).is_some() {
                stored.next().unwrap_or(Err(StoreError::Closed))
            } else {
                Err(StoreError::Timeout)
            };
            InsertOutcome {
                request: queued.request,
                result,
            }
        })
        .collect()
}

/// Indexes of the inserts still within their deadline, and the earliest of
/// those deadlines (the batch's).
fn live_inserts(batch: &[Queued], now: Instant) -> (Vec<usize>, Instant) {
    let live: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].deadline > now)
        .collect();
    let deadline = live.iter().map(|&i| batch[i].deadline).min().unwrap_or(now);
    (live, deadline)
}

/// All of `rows` in one transaction; on a statement failure of the whole
/// batch, one transaction per message.
async fn commit_rows(
    shared: &Shared,
    rows: &[&InsertRequest],
    deadline: Instant,
) -> Vec<InsertResult> {
    let timestamp = super::now();
    match commit_with_retry(shared, rows, timestamp, deadline).await {
        Ok(results) => results,
        Err(failure @ Failure::Statement { .. }) if rows.len() > 1 => {
            tracing::warn!(error = %failure, batch = rows.len(),
                "postgres store: batch refused, retrying message by message");
            one_by_one(shared, rows, timestamp, deadline).await
        }
        Err(failure) => {
            tracing::error!(error = %failure, batch = rows.len(),
                "postgres store: batch not committed");
            vec![Err(failure.into()); rows.len()]
        }
    }
}

/// Each message in its own transaction, in order: a statement error fails
/// that message only; losing the database fails it and every later one.
async fn one_by_one(
    shared: &Shared,
    rows: &[&InsertRequest],
    timestamp: DateTime<Utc>,
    deadline: Instant,
) -> Vec<InsertResult> {
    let mut results = Vec::with_capacity(rows.len());
    for row in rows {
        match commit_with_retry(shared, &[*row], timestamp, deadline).await {
            Ok(mut one) => results.push(one.pop().unwrap_or(Err(StoreError::Closed))),
            Err(failure @ Failure::Statement { .. }) => {
                let conversation_id = row.conversation_id;
                tracing::warn!(error = %failure, conversation_id, "postgres store: message not stored");
                results.push(Err(failure.into()));
            }
            Err(failure) => {
                let left = rows.len() - results.len();
                results.extend(std::iter::repeat_n(Err(failure.into()), left));
                break;
            }
        }
    }
    results
}

/// One transaction, run again (up to [`MAX_ATTEMPTS`]) after a deadlock or
/// serialization failure.
async fn commit_with_retry(
    shared: &Shared,
    rows: &[&InsertRequest],
    timestamp: DateTime<Utc>,
    deadline: Instant,
) -> Result<Vec<InsertResult>, Failure> {
    let mut attempt = 1;
    loop {
        match commit_once(shared, rows, timestamp, deadline).await {
            Err(failure) if failure.is_transient() && attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %failure, attempt, "postgres store: batch retried");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// BEGIN, the batch statement, COMMIT on one pooled connection, all before
/// `deadline`.
async fn commit_once(
    shared: &Shared,
    rows: &[&InsertRequest],
    timestamp: DateTime<Utc>,
    deadline: Instant,
) -> Result<Vec<InsertResult>, Failure> {
    let mut client = shared.checkout(deadline).await?;
    let columns = Columns::of(rows);
    let increments = Increments::of(rows);
    let committing = AtomicBool::new(false);
    let run = run_transaction(&mut client, &columns, &increments, timestamp, &committing);
    let result = tokio::time::timeout_at(deadline, run).await;
    if result.is_err() && committing.load(Ordering::Acquire) {
        // COMMIT was sent but not answered in time: the batch may be stored
        // although its senders are told it failed. Unavoidable without a
        // second round trip after the deadline; made visible here.
        tracing::error!(
            batch = rows.len(),
            "postgres store: deadline passed during COMMIT, outcome unknown"
        );
    }
    let outcomes = shared.settle(client, result)?;
    let mut results: Vec<InsertResult> = outcomes
        .into_iter()
        .map(|o| o.into_result(timestamp))
        .collect();
    // The statement returns one row per input row; never leave one without.
    results.resize(rows.len(), Err(StoreError::Closed));
    Ok(results)
}

async fn run_transaction(
    client: &mut deadpool_postgres::Object,
    columns: &Columns<'_>,
    increments: &Increments,
    timestamp: DateTime<Utc>,
    committing: &AtomicBool,
) -> Result<Vec<RowOutcome>, tokio_postgres::Error> {
    let statement = client.prepare_cached(INSERT_BATCH).await?;
    let tx = client.transaction().await?;
    let params: [&(dyn ToSql + Sync); 7] = [
        &columns.conversations,
        &columns.senders,
        &columns.contents,
        &timestamp,
        &increments.conversations,
        &increments.senders,
        &increments.counts,
    ];
    // Pipelined: the SET goes out first, in the same round trip.
    let (_, rows) = tokio::try_join!(
        tx.batch_execute(GENERIC_PLAN),
        tx.query(&statement, &params)
    )?;
    committing.store(true, Ordering::Release);
    tx.commit().await?;
    rows.iter().map(RowOutcome::from_row).collect()
}

/// The batch as the statement's array parameters.
struct Columns<'a> {
    conversations: Vec<i64>,
    senders: Vec<i64>,
    contents: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(rows: &[&'a InsertRequest]) -> Self {
        Self {
            conversations: rows.iter().map(|r| r.conversation_id).collect(),
            senders: rows.iter().map(|r| r.sender_id).collect(),
            contents: rows.iter().map(|r| r.content.as_str()).collect(),
        }
    }
}

/// One result row of [`INSERT_BATCH`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RowOutcome {
    id: i64,
    conversation_exists: bool,
    stored: bool,
}

impl RowOutcome {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get(0)?,
            conversation_exists: row.try_get(1)?,
            stored: row.try_get(2)?,
        })
    }

    fn into_result(self, timestamp: DateTime<Utc>) -> InsertResult {
        match self {
            RowOutcome {
                stored: true, id, ..
            } => Ok(StoredMessage { id, timestamp }),
            RowOutcome {
                conversation_exists: false,
                ..
            } => Err(StoreError::Database("conversation not found".into())),
            _ => Err(StoreError::Database("sender not found".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::store::Origin;

    fn queued(deadline: Instant) -> Queued {
        Queued {
            request: InsertRequest {
                conversation_id: 1,
                sender_id: 1,
                content: "x".into(),
                origin: Origin {
                    shard: 0,
                    conn: 0,
                    sender_json: Bytes::new(),
                    reply: None,
                },
            },
            deadline,
        }
    }

    #[test]
    fn expired_inserts_are_left_out_and_the_earliest_live_deadline_wins() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let batch = vec![
            queued(now - s),
            queued(now + 3 * s),
            queued(now),
            queued(now + 2 * s),
        ];
        assert_eq!(live_inserts(&batch, now), (vec![1, 3], now + 2 * s));
        assert_eq!(live_inserts(&batch[..1], now), (vec![], now));
    }

    #[test]
    fn row_outcomes_name_the_missing_reference() {
        let at = Utc::now();
        let row = |id, conversation_exists, stored| RowOutcome {
            id,
            conversation_exists,
            stored,
        };
        assert_eq!(
            row(7, true, true).into_result(at),
            Ok(StoredMessage {
                id: 7,
                timestamp: at
            })
        );
        assert_eq!(
            row(8, false, false).into_result(at),
            Err(StoreError::Database("conversation not found".into()))
        );
        assert_eq!(
            row(9, true, false).into_result(at),
            Err(StoreError::Database("sender not found".into()))
        );
    }
}
