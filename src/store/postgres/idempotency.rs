//! Idempotency keys of the server API's `send_message` in Postgres
//! (`chatgate_idempotency`, docs/protocol.md §10).
//!
//! Owns claiming a key ([`claim`], the semantics of `requests::Claim`:
//! the primary key on `key` decides between two nodes claiming it at the
//! same instant), recording or giving up its message ([`finish`]) and the
//! background deletion of expired keys ([`prune_forever`]).
//!
//! Must never: touch Django's tables but to read the key's message; claim
//! a key another request owns while its claim is fresh.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::rows::{ItemRow, ITEM_COLUMNS};
use super::tables::{is_undefined_table, write_error};
use super::{Failure, Shared};
use crate::store::requests::{Claim, V2Error, IDEMPOTENCY_TTL};
use crate::store::{ConversationId, MessageId};

/// How often expired keys are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// `$1` key, `$2` conversation, `$3` now.
const CLAIM_NEW: &str = r#"
INSERT INTO chatgate_idempotency (key, conversation_id, message_id, created_at)
VALUES ($1, $2::bigint, NULL, $3::timestamptz)
ON CONFLICT (key) DO NOTHING
"#;

/// Takes over an expired key (older than `$4`) or an abandoned claim
/// (older than `$5`); a concurrent taker re-checks the row and finds it fresh.
const CLAIM_OLD: &str = r#"
UPDATE chatgate_idempotency
SET conversation_id = $2::bigint, message_id = NULL, created_at = $3::timestamptz
WHERE key = $1 AND (created_at < $4::timestamptz
    OR (message_id IS NULL AND created_at < $5::timestamptz))
"#;

const KEY_MESSAGE: &str = "SELECT message_id FROM chatgate_idempotency WHERE key = $1";

const COMPLETE: &str = "UPDATE chatgate_idempotency SET message_id = $2::bigint \
     WHERE key = $1 AND message_id IS NULL";

const RELEASE: &str = "DELETE FROM chatgate_idempotency WHERE key = $1 AND message_id IS NULL";

const PRUNE: &str = "DELETE FROM chatgate_idempotency WHERE created_at < $1::timestamptz";

/// Claims `key` for a message of `conversation_id` (see `requests::Claim`).
pub(super) async fn claim(
    shared: &Shared,
    key: &str,
    conversation_id: ConversationId,
    stale_after: Duration,
    deadline: Instant,
) -> Result<Claim, V2Error> {
    match run_claim(shared, key, conversation_id, stale_after, deadline).await {
        Ok(claim) => {
            shared.tables.present();
            Ok(claim)
        }
        Err(failure) => Err(write_error(shared, failure)),
    }
}

async fn run_claim(
    shared: &Shared,
    key: &str,
    conversation_id: ConversationId,
    stale_after: Duration,
    deadline: Instant,
) -> Result<Claim, Failure> {
    let client = shared.checkout(deadline).await?;
    let at = super::now();
    let expired = at - ttl(IDEMPOTENCY_TTL);
    let stale = at - ttl(stale_after);
    let run = async {
        let statement = client.prepare_cached(CLAIM_NEW).await?;
        if client
            .execute(&statement, &[&key, &conversation_id, &at])
            .await?
            == 1
        {
            return Ok(Claim::Owned);
        }
        let statement = client.prepare_cached(CLAIM_OLD).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&key, &conversation_id, &at, &expired, &stale];
        if client.execute(&statement, &params).await? == 1 {
            return Ok(Claim::Owned);
        }
        let statement = client.prepare_cached(KEY_MESSAGE).await?;
        let row = client.query_opt(&statement, &[&key]).await?;
        let Some(message_id) = row
            .map(|r| r.try_get::<_, Option<MessageId>>(0))
            .transpose()?
        else {
            return Ok(Claim::Pending);
        };
        let Some(message_id) = message_id else {
            return Ok(Claim::Pending);
        };
        let query = format!(
            "SELECT {ITEM_COLUMNS} FROM chatapp_message m \
             JOIN auth_user u ON u.id = m.sender_id WHERE m.id = $1::bigint"
        );
        let statement = client.prepare_cached(&query).await?;
        match client.query_opt(&statement, &[&message_id]).await? {
            Some(row) => Ok(Claim::Done(ItemRow::from_row(&row)?.into_item(Vec::new()))),
            None => Ok(Claim::Pending),
        }
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    shared.settle(client, result)
}

/// Records the key's message (`Some`) or gives the claim up (`None`).
pub(super) async fn finish(
    shared: &Shared,
    key: &str,
    message_id: Option<MessageId>,
    deadline: Instant,
) -> Result<(), V2Error> {
    let run = async {
        let client = shared.checkout(deadline).await?;
        let work = async {
            match message_id {
                Some(id) => {
                    let statement = client.prepare_cached(COMPLETE).await?;
                    client.execute(&statement, &[&key, &id]).await
                }
                None => {
                    let statement = client.prepare_cached(RELEASE).await?;
                    client.execute(&statement, &[&key]).await
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, work).await;
        shared.settle(client, result)
    };
    run.await.map(drop).map_err(|f| write_error(shared, f))
}

/// Deletes the keys older than [`IDEMPOTENCY_TTL`] every [`PRUNE_EVERY`],
/// until aborted (with the dispatcher).
pub(super) async fn prune_forever(shared: Arc<Shared>) {
    // The first run after one period, not at start (the store may not be up yet).
    let mut every = tokio::time::interval_at(Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let deadline = Instant::now() + shared.timeout;
        match prune(&shared, deadline).await {
            Ok(n) if n > 0 => {
                tracing::debug!(deleted = n, "postgres store: expired idempotency keys")
            }
            Ok(_) => {}
            Err(f) if is_undefined_table(&f) => {}
            Err(f) => {
                tracing::debug!(error = %f, "postgres store: pruning idempotency keys failed")
            }
        }
    }
}

async fn prune(shared: &Shared, deadline: Instant) -> Result<u64, Failure> {
    let client = shared.checkout(deadline).await?;
    let cutoff = super::now() - ttl(IDEMPOTENCY_TTL);
    let run = async {
        let statement = client.prepare_cached(PRUNE).await?;
        client.execute(&statement, &[&cutoff]).await
    };
    let result = tokio::time::timeout_at(deadline, run).await;
    shared.settle(client, result)
}

fn ttl(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(365))
}
