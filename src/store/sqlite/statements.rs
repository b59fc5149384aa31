//! What every v2 read of the embedded store shares: the statement counter
//! ([`Statements`], which the tests use to check what a request costs, with
//! the per-database log of group reads in `testing_log`) and the JSON array
//! that passes a list of ids as one parameter ([`json_ids`]).
//!
//! Must never: run a statement of its own, or import the modules that use it.

use std::cell::Cell;

use rusqlite::{CachedStatement, Connection};

/// Counts the statements a request runs (tests check what a group read costs).
#[derive(Default)]
pub(super) struct Statements(Cell<usize>);

impl Statements {
    pub(super) fn prepare<'c>(
        &self,
        conn: &'c Connection,
        sql: &str,
    ) -> rusqlite::Result<CachedStatement<'c>> {
        self.0.set(self.0.get() + 1);
        conn.prepare_cached(sql)
    }

    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.0.get()
    }
}

/// A JSON array of ids, for `IN (SELECT value FROM json_each(?))`: one
/// cached statement whatever the number of ids.
pub(super) fn json_ids(ids: impl IntoIterator<Item = i64>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    format!("[{}]", ids.join(","))
}

/// What each replay group read cost, per database (tests run in parallel).
#[cfg(test)]
pub(super) mod testing_log {
    use std::sync::Mutex;

    use rusqlite::Connection;

    use crate::store::ConversationId;

    /// (database path, conversation, requests, statements) per group read.
    static READS: Mutex<Vec<(String, ConversationId, usize, usize)>> = Mutex::new(Vec::new());

    pub(in crate::store::sqlite) fn record(
        conn: &Connection,
        conversation: ConversationId,
        requests: usize,
        statements: usize,
    ) {
        let path = conn.path().unwrap_or_default().to_owned();
        let entry = (path, conversation, requests, statements);
        READS.lock().unwrap().push(entry);
    }

    /// (conversation, requests, statements) of the group reads on `path`.
    pub(in crate::store::sqlite) fn reads_on(
        path: &std::path::Path,
    ) -> Vec<(ConversationId, usize, usize)> {
        let path = std::fs::canonicalize(path).unwrap();
        let reads = READS.lock().unwrap();
        let on_path = reads
            .iter()
            .filter(|(p, ..)| std::fs::canonicalize(p).is_ok_and(|p| p == path));
        on_path.map(|(_, c, r, s)| (*c, *r, *s)).collect()
    }
}
