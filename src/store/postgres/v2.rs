//! Protocol v2 on the Postgres store (see `store/v2.rs` for the semantics):
//! the entry point for the requests answered one by one, what history and
//! replay items are made of, and whether the `chatgate_` tables exist.
//!
//! Owns: [`answer`] (history, mark read, read state, react: one task each;
//! replays are gathered by the dispatcher and answered per conversation in
//! `postgres/replay.rs`), the item row shape shared by history and replay
//! ([`ITEM_COLUMNS`], [`ItemRow`]), and [`Tables`]: the per-store memory
//! that `chatgate migrate` has not run, so a Django database without the
//! v2 tables is told once, in the log, what to do. The features live in
//! `postgres/history.rs`, `postgres/replay.rs`, `postgres/receipts.rs` and
//! `postgres/reactions.rs`.
//!
//! Must never: hold a reply past the store timeout (every task carries its
//! deadline); fail a read because the v2 tables are missing (reads then
//! answer without reactions or positions); remember the tables as missing
//! for good (writes always try, reads re-check after [`RECHECK`], so
//! running `chatgate migrate` later needs no restart).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use super::{Failure, Shared};
use crate::store::v2::{HistoryItem, ReactionGroup, V2Error, V2Request};
use crate::store::{MessageId, UserProfile};

/// How long reads skip the `chatgate_` tables after finding them missing.
pub(super) const RECHECK: Duration = Duration::from_secs(10);

/// The columns of a history or replay item, for `chatapp_message m JOIN
/// auth_user u ON u.id = m.sender_id` (read by [`ItemRow::from_row`]).
pub(super) const ITEM_COLUMNS: &str = r#"m.id, m.content, m."timestamp",
       u.id, u.username, u.first_name, u.last_name, u.is_active"#;

/// Answers one v2 request (spawned on the side runtime). Replays normally
/// come gathered through `replay::answer_group`; one arriving here is a
/// group of one.
pub(super) async fn answer(shared: Arc<Shared>, request: V2Request) {
    let deadline = Instant::now() + shared.timeout;
    match request {
        V2Request::History {
            conversation_id,
            user_id,
            before,
            limit,
            reply,
        } => {
            let page =
                super::history::page(&shared, conversation_id, user_id, before, limit, deadline);
            let _ = reply.send(page.await.map_err(store_error));
        }
        V2Request::Replay {
            conversation_id,
            user_id,
            since,
            max,
            reply,
        } => {
            let waiter = super::replay::ReplayWaiter {
                user_id,
                since,
                max,
                reply,
            };
            super::replay::answer_group(shared, conversation_id, vec![waiter]).await;
        }
        V2Request::MarkRead {
            conversation_id,
            user_id,
            message_id,
            reply,
        } => {
            let moved =
                super::receipts::mark_read(&shared, conversation_id, user_id, message_id, deadline);
            let _ = reply.send(moved.await);
        }
        V2Request::ReadState {
            conversation_id,
            reply,
        } => {
            let state = super::receipts::read_state(&shared, conversation_id, deadline);
            let _ = reply.send(state.await.map_err(store_error));
        }
        V2Request::React {
            conversation_id,
            user_id,
            message_id,
            emoji,
            on,
            reply,
        } => {
            let changed = super::reactions::react(
                &shared,
                conversation_id,
                user_id,
                message_id,
                &emoji,
                on,
                deadline,
            );
            let _ = reply.send(changed.await);
        }
    }
}

/// A read failure as the requester sees it (logged here, once per request).
pub(super) fn store_error(failure: Failure) -> V2Error {
    tracing::warn!(error = %failure, "postgres store: v2 read failed");
    V2Error::Store(failure.into())
}

/// A write failure: [`V2Error::NotMigrated`] when a `chatgate_` table is
/// missing (and [`Tables`] learns it), else the store error.
pub(super) fn write_error(shared: &Shared, failure: Failure) -> V2Error {
    if is_undefined_table(&failure) {
        shared.tables.missing();
        return V2Error::NotMigrated;
    }
    tracing::warn!(error = %failure, "postgres store: v2 write failed");
    V2Error::Store(failure.into())
}

/// Whether a statement failed because a table does not exist.
pub(super) fn is_undefined_table(failure: &Failure) -> bool {
    matches!(failure, Failure::Statement { code, .. } if *code == SqlState::UNDEFINED_TABLE)
}

/// A message row of [`ITEM_COLUMNS`], before its reactions are known.
pub(super) struct ItemRow {
    pub id: MessageId,
    pub sender: UserProfile,
    pub content: String,
    pub timestamp: DateTime<Utc>,
}

impl ItemRow {
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(ItemRow {
            id: row.try_get(0)?,
            content: row.try_get(1)?,
            timestamp: row.try_get(2)?,
            sender: UserProfile {
                id: i64::from(row.try_get::<_, i32>(3)?),
                username: row.try_get(4)?,
                first_name: row.try_get(5)?,
                last_name: row.try_get(6)?,
                is_active: row.try_get(7)?,
            },
        })
    }

    /// The item, the row kept (a replay row may go to several requesters).
    pub(super) fn to_item(&self, reactions: Vec<ReactionGroup>) -> HistoryItem {
        HistoryItem {
            id: self.id,
            sender: self.sender.clone(),
            content: self.content.clone(),
            timestamp: self.timestamp,
            reactions,
        }
    }

    pub(super) fn into_item(self, reactions: Vec<ReactionGroup>) -> HistoryItem {
        HistoryItem {
            id: self.id,
            sender: self.sender,
            content: self.content,
            timestamp: self.timestamp,
            reactions,
        }
    }
}

/// Whether the `chatgate_` tables were found missing, per store (each
/// store has its own database). Set by any statement that hits
/// `UNDEFINED_TABLE`, cleared by any that uses them successfully.
#[derive(Debug)]
pub(super) struct Tables {
    /// The last statement touching a `chatgate_` table found it missing.
    missing: AtomicBool,
    /// When that was, in milliseconds since `epoch`.
    checked_ms: AtomicU64,
    epoch: std::time::Instant,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            missing: AtomicBool::new(false),
            checked_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }
}

impl Tables {
    /// Whether a read should act as if the tables were missing, without
    /// asking the database: they were missing less than [`RECHECK`] ago.
    pub(super) fn skip_reads(&self) -> bool {
        self.missing.load(Ordering::Acquire)
            && self
                .elapsed_ms()
                .saturating_sub(self.checked_ms.load(Ordering::Acquire))
                < RECHECK.as_millis() as u64
    }

    /// A statement found a `chatgate_` table missing; logs the first time.
    pub(super) fn missing(&self) {
        self.checked_ms.store(self.elapsed_ms(), Ordering::Release);
        if !self.missing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "postgres store: the chatgate_ tables are missing (a Django database): \
                 read receipts and reactions are off until `chatgate migrate` runs"
            );
        }
    }

    /// A statement used the `chatgate_` tables.
    pub(super) fn present(&self) {
        if self.missing.swap(false, Ordering::AcqRel) {
            tracing::info!(
                "postgres store: the chatgate_ tables exist now, receipts and reactions are on"
            );
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tables_are_remembered_then_rechecked() {
        let tables = Tables::default();
        assert!(!tables.skip_reads());
        tables.missing();
        assert!(tables.skip_reads());
        // A check long ago.
        let long_ago = Tables {
            epoch: std::time::Instant::now() - RECHECK - Duration::from_secs(1),
            ..Tables::default()
        };
        long_ago.missing.store(true, Ordering::Release);
        assert!(!long_ago.skip_reads(), "re-checked after RECHECK");
        tables.present();
        assert!(!tables.skip_reads());
        let undefined = Failure::Statement {
            code: SqlState::UNDEFINED_TABLE,
            message: "relation \"chatgate_reaction\" does not exist".into(),
        };
        assert!(is_undefined_table(&undefined));
        assert!(!is_undefined_table(&Failure::Timeout));
    }
}
