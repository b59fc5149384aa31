//! The "not migrated" rule of the embedded store: a statement that finds a
//! `chatgate_` table missing becomes [`V2Error::NotMigrated`] (or, for
//! reads, no positions and no reactions), with one warning per process.
//!
//! Must never: fail a v1 request because the v2 tables are missing, or
//! import the modules that use it.

use std::sync::atomic::{AtomicBool, Ordering};

use super::db_err;
use crate::store::requests::V2Error;

/// The error of a statement on a `chatgate_` table: [`V2Error::NotMigrated`]
/// (logged once) when the table is missing.
pub(super) fn v2_err(e: rusqlite::Error) -> V2Error {
    if is_missing_v2_table(&e) {
        warn_not_migrated();
        V2Error::NotMigrated
    } else {
        V2Error::Store(db_err(e))
    }
}

/// Whether `e` says a `chatgate_` table does not exist.
pub(super) fn is_missing_v2_table(e: &rusqlite::Error) -> bool {
    let msg = match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg,
        rusqlite::Error::SqlInputError { msg, .. } => msg,
        _ => return false,
    };
    msg.contains("no such table: chatgate_")
}

pub(super) fn warn_not_migrated() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "sqlite store: the chatgate_ tables are missing, read receipts, reactions and \
             idempotency keys are unavailable: run `chatgate migrate`"
        );
    }
}
