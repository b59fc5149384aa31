//! Idempotency keys of the server API's `send_message` in the embedded
//! store (`chatgate_idempotency`, docs/protocol.md §10).
//!
//! Owns claiming a key ([`claim`], the semantics of `requests::Claim`),
//! recording or giving up its message ([`finish`]) and deleting expired
//! keys ([`prune`], from the worker at most every [`PRUNE_EVERY`]).
//!
//! Must never: touch Django's tables but to read the key's message; claim
//! a key another request owns while its claim is fresh.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::history::item;
use super::tables::v2_err;
use super::{format_timestamp, now};
use crate::store::requests::{Claim, V2Error, IDEMPOTENCY_TTL};
use crate::store::{ConversationId, MessageId};

/// How often the worker deletes expired keys.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(300);

const CLAIM_NEW: &str = "INSERT INTO chatgate_idempotency \
     (key, conversation_id, message_id, created_at) VALUES (?1, ?2, NULL, ?3) \
     ON CONFLICT (key) DO NOTHING";

/// Takes over an expired key (`?4`) or an abandoned claim (`?5`).
const CLAIM_OLD: &str = "UPDATE chatgate_idempotency \
     SET conversation_id = ?2, message_id = NULL, created_at = ?3 \
     WHERE key = ?1 AND (created_at < ?4 OR (message_id IS NULL AND created_at < ?5))";

const KEY_MESSAGE: &str = "SELECT message_id FROM chatgate_idempotency WHERE key = ?1";

const MESSAGE: &str = "SELECT m.id, m.content, m.timestamp, \
     u.id, u.username, u.first_name, u.last_name, u.is_active \
     FROM chatapp_message m JOIN auth_user u ON u.id = m.sender_id WHERE m.id = ?1";

const COMPLETE: &str =
    "UPDATE chatgate_idempotency SET message_id = ?2 WHERE key = ?1 AND message_id IS NULL";

const RELEASE: &str = "DELETE FROM chatgate_idempotency WHERE key = ?1 AND message_id IS NULL";

const PRUNE: &str = "DELETE FROM chatgate_idempotency WHERE created_at < ?1";

/// Claims `key` for a message of `conversation_id` (see `requests::Claim`).
pub(super) fn claim(
    conn: &Connection,
    key: &str,
    conversation_id: ConversationId,
    stale_after: Duration,
) -> Result<Claim, V2Error> {
    let at = now();
    let created = format_timestamp(at);
    let run = || -> rusqlite::Result<Claim> {
        let inserted =
            conn.prepare_cached(CLAIM_NEW)?
                .execute(params![key, conversation_id, created])?;
        if inserted == 1 {
            return Ok(Claim::Owned);
        }
        let expired = format_timestamp(at - ttl(IDEMPOTENCY_TTL));
        let stale = format_timestamp(at - ttl(stale_after));
        let taken = conn.prepare_cached(CLAIM_OLD)?.execute(params![
            key,
            conversation_id,
            created,
            expired,
            stale
        ])?;
        if taken == 1 {
            return Ok(Claim::Owned);
        }
        let message: Option<Option<MessageId>> = conn
            .prepare_cached(KEY_MESSAGE)?
            .query_row([key], |row| row.get(0))
            .optional()?;
        let Some(Some(message_id)) = message else {
            return Ok(Claim::Pending);
        };
        let found = conn
            .prepare_cached(MESSAGE)?
            .query_row([message_id], item)
            .optional()?;
        Ok(found.map_or(Claim::Pending, Claim::Done))
    };
    run().map_err(v2_err)
}

/// Records the key's message (`Some`) or gives the claim up (`None`).
pub(super) fn finish(
    conn: &Connection,
    key: &str,
    message_id: Option<MessageId>,
) -> Result<(), V2Error> {
    let done = match message_id {
        Some(id) => conn
            .prepare_cached(COMPLETE)
            .and_then(|mut s| s.execute(params![key, id])),
        None => conn
            .prepare_cached(RELEASE)
            .and_then(|mut s| s.execute([key])),
    };
    done.map(drop).map_err(v2_err)
}

/// Deletes the keys older than [`IDEMPOTENCY_TTL`] (none on a database
/// without the table).
pub(super) fn prune(conn: &Connection) {
    let cutoff = format_timestamp(now() - ttl(IDEMPOTENCY_TTL));
    match conn
        .prepare_cached(PRUNE)
        .and_then(|mut s| s.execute([cutoff]))
    {
        Ok(n) if n > 0 => tracing::debug!(deleted = n, "sqlite store: expired idempotency keys"),
        Ok(_) => {}
        Err(e) if super::tables::is_missing_v2_table(&e) => {}
        Err(e) => tracing::warn!(error = %e, "sqlite store: pruning idempotency keys failed"),
    }
}

fn ttl(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(365))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::testing::Fixture;

    fn backdate(conn: &Connection, by: chrono::Duration) {
        conn.execute(
            "UPDATE chatgate_idempotency SET created_at = ?1",
            [format_timestamp(now() - by)],
        )
        .unwrap();
    }

    #[test]
    fn a_key_is_owned_pending_done_abandoned_and_expired() {
        let fx = Fixture::new();
        let conn = fx.admin.connection();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let stale = Duration::from_secs(10);
        let claim = |key| claim(conn, key, conv, stale).unwrap();
        assert_eq!(claim("k"), Claim::Owned);
        assert_eq!(claim("k"), Claim::Pending, "another request is storing it");
        // Abandoned (no message after `stale_after`): taken over.
        backdate(conn, chrono::Duration::seconds(11));
        assert_eq!(claim("k"), Claim::Owned);
        // Given up: free again.
        finish(conn, "k", None).unwrap();
        assert_eq!(claim("k"), Claim::Owned);
        let ids = fx.write_messages(conv, a, 1);
        finish(conn, "k", Some(ids[0])).unwrap();
        let Claim::Done(item) = claim("k") else {
            panic!("the key has its message");
        };
        assert_eq!((item.id, item.content.as_str()), (ids[0], "m0"));
        assert_eq!(item.sender.id, a);
        // Old, but with its message and within 24 h: still answered.
        backdate(conn, chrono::Duration::hours(23));
        assert!(matches!(claim("k"), Claim::Done(_)));
        // Expired: a new claim; pruning deletes expired keys only.
        backdate(conn, chrono::Duration::hours(25));
        assert_eq!(claim("k"), Claim::Owned);
        assert_eq!(claim("other"), Claim::Owned);
        backdate(conn, chrono::Duration::hours(25));
        finish(conn, "k", Some(ids[0])).unwrap();
        assert_eq!(claim("fresh"), Claim::Owned);
        prune(conn);
        assert_eq!(fx.query("SELECT count(*) FROM chatgate_idempotency", []), 1);
        // A deleted message takes its key with it.
        assert_eq!(claim("k"), Claim::Owned);
        finish(conn, "k", Some(ids[0])).unwrap();
        conn.execute("DELETE FROM chatapp_message WHERE id = ?1", [ids[0]])
            .unwrap();
        assert_eq!(fx.query("SELECT count(*) FROM chatgate_idempotency", []), 1);
    }
}
