//! Whether the `chatgate_` tables exist, and what a failure means because
//! of it (`chatgate migrate` not run on a Django database).
//!
//! Owns [`Tables`]: the per-store memory that the tables were found
//! missing, so such a database is told once, in the log, what to do; and
//! the mapping of a v2 failure to what the requester sees ([`store_error`]
//! for reads, [`write_error`] for writes, [`is_undefined_table`]). Shared by
//! `postgres/history.rs`, `postgres/replay.rs`, `postgres/receipts.rs` and
//! `postgres/reactions.rs`.
//!
//! Must never: remember the tables as missing for good (writes always try,
//! reads re-check after [`RECHECK`], so running `chatgate migrate` later
//! needs no restart), or import the modules that use it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::{Failure, Shared};
use crate::store::requests::V2Error;

/// How long reads skip the `chatgate_` tables after finding them missing.
pub(super) const RECHECK: Duration = Duration::from_secs(10);

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
                 read receipts, reactions and idempotency keys are off until `chatgate migrate` runs"
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
