//! PostgreSQL backend: the Django app's own database, reached through a
//! deadpool-postgres pool on the side tokio runtime.
//!
//! Owns: the pool (NoTls, `RecyclingMethod::Fast`, connections created on
//! demand, so starting never needs the database), the readiness flag (set
//! by every query's outcome and by a one-second probe while not ready), the
//! classification of database errors ([`Failure`]), and the rule that a
//! connection whose query overran its deadline is discarded, never returned
//! to the pool (its state is unknown). The request dispatcher, its lanes
//! (batches of disjoint conversations in flight together) and the group
//! commit live in `postgres/dispatch.rs`, `postgres/lanes.rs` (with each
//! user's requests kept in order by `postgres/serial.rs`) and
//! `postgres/batch.rs` (unread increments summed in
//! `postgres/increments.rs`), connect
//! and delete lookups in `postgres/lookup.rs`, protocol v2 in
//! `postgres/requests.rs` (with `history.rs`, `replay.rs`, `receipts.rs`,
//! `reactions.rs`, sharing `rows.rs` and `tables.rs`), the schema in
//! `postgres/schema.rs` and its online migration in `postgres/migrate.rs`
//! (with the plan in `migrate/plan.rs`), the synchronous admin API in
//! `postgres/admin.rs`. At start, once the database answers, the store
//! logs once whether `chatgate migrate --check` would pass.
//!
//! Must never: run on a shard thread or block a runtime thread (everything
//! here is async on the side runtime, except [`Admin`] and
//! [`migrate_blocking`], which own a private current-thread runtime and are
//! for the CLI and tests); fail to start because the database is down; leave
//! an insert without exactly one outcome at the [`CommitSink`].

mod admin;
mod batch;
mod dispatch;
mod history;
mod idempotency;
mod increments;
mod lanes;
mod lookup;
mod migrate;
mod reactions;
mod receipts;
mod replay;
mod requests;
mod rows;
mod schema;
mod serial;
mod tables;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

pub use admin::Admin;
pub use migrate::plan::{Plan, Problem};
pub use migrate::{
    inspect, migrate, migrate_blocking, migrate_with, MigrateError, MigrateOptions, MigrateReport,
};

use super::{CommitSink, Readiness, StoreError, StoreHandle, StoreWorker, REQUEST_QUEUE};

/// How often a not-ready store tries to reach the database.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// What every task of the backend shares: the pool, the readiness flag, the
/// per-request deadline.
struct Shared {
    pool: Pool,
    ready: Readiness,
    /// Longest a request (a batch, a connect lookup, a delete) may take.
    timeout: Duration,
    /// Whether the v2 (`chatgate_`) tables were found missing.
    tables: tables::Tables,
    /// Conversations with a replay read running, and the replays queued
    /// behind it.
    replays: replay::Running,
}

/// Starts the Postgres store: builds the pool (no connection is opened
/// yet), then spawns the dispatcher and the readiness probe on `side`.
///
/// Fails only on an unusable `url`; an unreachable database is reported by
/// [`StoreHandle::is_ready`] and by each request's error until it appears.
/// A request not done within `timeout` fails with [`StoreError::Timeout`].
pub fn start(
    url: &str,
    pool_size: usize,
    batch_max: usize,
    timeout: Duration,
    sink: CommitSink,
    side: &tokio::runtime::Handle,
) -> Result<(StoreHandle, StoreWorker), StoreError> {
    let pool = build_pool(url, pool_size, timeout)?;
    let shared = Arc::new(Shared {
        pool,
        ready: Readiness::new(false),
        timeout,
        tables: tables::Tables::default(),
        replays: replay::Running::default(),
    });
    // Bounded: shards feel backpressure when the database falls behind.
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    // The dispatcher holds `done_tx` and drops it when it ends (or when the
    // runtime drops it), which is what `StoreWorker::join` waits for.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // `StoreWorker::join` closes the request channel through this.
    let (close_tx, close_rx) = tokio::sync::oneshot::channel();
    let probe = side.spawn(probe(shared.clone()));
    let lanes = lanes::lanes_for_pool(pool_size);
    let dispatcher =
        dispatch::Dispatcher::new(shared.clone(), rx, close_rx, batch_max, lanes, sink);
    let prune = side.spawn(idempotency::prune_forever(shared.clone()));
    let schema = side.spawn(log_schema_check(shared.clone()));
    side.spawn(async move {
        dispatcher.run().await;
        probe.abort();
        prune.abort();
        schema.abort();
        drop(done_tx);
    });
    let handle = StoreHandle::with_readiness(tx, shared.ready.clone());
    Ok((handle, StoreWorker::from_task(done_rx, close_tx)))
}

/// A pool that opens connections lazily, each bounded by `timeout`.
fn build_pool(url: &str, pool_size: usize, timeout: Duration) -> Result<Pool, StoreError> {
    let config = parse_url(url)?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(pool_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(timeout))
        .build()
        .map_err(|e| StoreError::Database(format!("cannot build the connection pool: {e}")))
}

/// Parses a `postgres://` URL or a libpq key=value string; connecting is
/// bounded by the store timeout's caller, plus a connect timeout here so a
/// black-holed host does not hold a pool slot forever.
fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("chatgate");
    }
    Ok(config)
}

/// Every `PROBE_INTERVAL` while the store is not ready, tries `SELECT 1`.
/// Aborted by the dispatcher when it stops.
async fn probe(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.ready.is_ready() {
            continue;
        }
        let deadline = Instant::now() + shared.timeout.min(PROBE_INTERVAL);
        if let Err(e) = ping(&shared, deadline).await {
            tracing::debug!(error = %e, "postgres store: still unreachable");
        }
    }
}

/// Once the database answers, logs once what `chatgate migrate --check`
/// would report (a warning when it would fail). Aborted by the dispatcher
/// when it stops; gives up quietly if the catalog cannot be read.
async fn log_schema_check(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    let client = loop {
        tick.tick().await;
        let deadline = Instant::now() + shared.timeout;
        if let Ok(client) = shared.checkout(deadline).await {
            break client;
        }
    };
    match migrate::inspect(&client).await {
        Ok(plan) if plan.is_up_to_date() => {
            tracing::info!("postgres store: schema up to date (`chatgate migrate --check` passes)")
        }
        Ok(plan) => {
            let problems: Vec<String> = plan.problems().iter().map(|p| p.to_string()).collect();
            tracing::warn!(
                problems = %problems.join("; "),
                "postgres store: `chatgate migrate --check` would fail; run `chatgate migrate` \
                 (online, deploy/OPERATIONS.md) — until then receipts, reactions and idempotency \
                 keys may be off and history pages scan the conversation"
            );
        }
        Err(e) => tracing::debug!(error = %e, "postgres store: could not read the catalog"),
    }
}

async fn ping(shared: &Shared, deadline: Instant) -> Result<(), Failure> {
    let client = shared.checkout(deadline).await?;
    let result = tokio::time::timeout_at(deadline, client.simple_query("SELECT 1")).await;
    shared.settle(client, result).map(drop)
}

impl Shared {
    /// A pooled connection, waiting at most until `deadline`.
    async fn checkout(&self, deadline: Instant) -> Result<Object, Failure> {
        let got = tokio::time::timeout_at(deadline, self.pool.get()).await;
        let failure = match got {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => Failure::from_pool(e),
            Err(_) => Failure::Timeout,
        };
        self.observe(&failure);
        Err(failure)
    }

    /// Turns the outcome of a query run on `client` under a deadline into a
    /// result, updates readiness, and discards the connection if the
    /// deadline cut the query short (its transaction state is unknown; the
    /// server rolls back what it had not committed when the socket closes).
    fn settle<T>(
        &self,
        client: Object,
        result: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, Failure> {
        let outcome = match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Failure::from_pg(&e)),
            Err(_) => {
                drop(Object::take(client));
                Err(Failure::Timeout)
            }
        };
        match &outcome {
            Ok(_) => self.mark_ready(),
            Err(failure) => self.observe(failure),
        }
        outcome
    }

    fn mark_ready(&self) {
        if !self.ready.set(true) {
            tracing::info!("postgres store: database reachable, ready");
        }
    }

    /// A lost connection or an overrun deadline makes the store not ready
    /// until the probe (or any query) succeeds; a refused statement does not.
    fn observe(&self, failure: &Failure) {
        if failure.is_unavailable() && self.ready.set(false) {
            tracing::warn!(error = %failure, "postgres store: database unreachable, not ready");
        }
    }
}

/// Why a database operation failed, by what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum Failure {
    /// The deadline passed first.
    #[error("timed out")]
    Timeout,
    /// No usable connection: the database is unreachable, restarting, or the
    /// connection broke. Retrying on another connection is pointless now.
    #[error("{0}")]
    Unavailable(String),
    /// The database refused a statement; other statements may succeed.
    #[error("{message}")]
    Statement { code: SqlState, message: String },
}

impl Failure {
    fn from_pg(e: &tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if !is_connection_state(db.code()) => Failure::Statement {
                code: db.code().clone(),
                message: db.message().to_string(),
            },
            Some(db) => Failure::Unavailable(db.message().to_string()),
            None => Failure::Unavailable(describe(e)),
        }
    }

    fn from_pool(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => Failure::from_pg(&e),
            PoolError::Timeout(_) => Failure::Timeout,
            other => Failure::Unavailable(other.to_string()),
        }
    }

    fn is_unavailable(&self) -> bool {
        matches!(self, Failure::Timeout | Failure::Unavailable(_))
    }

    /// A deadlock or serialization failure: the same work may succeed when
    /// run again.
    fn is_transient(&self) -> bool {
        matches!(self, Failure::Statement { code, .. }
            if *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::T_R_SERIALIZATION_FAILURE)
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Timeout => StoreError::Timeout,
            Failure::Unavailable(m) | Failure::Statement { message: m, .. } => {
                StoreError::Database(m)
            }
        }
    }
}

/// SQLSTATE classes 08 (connection exception) and 57P (operator
/// intervention: shutdown, crash, cannot connect now) mean the server, not
/// the statement, is the problem.
fn is_connection_state(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08") || c.starts_with("57P")
}

/// The server's message for a statement error (tokio-postgres' `Display`
/// says only "db error"), else the error with its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match (e.as_db_error(), e.source()) {
        (Some(db), _) => db.message().to_string(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

/// Now, at the microsecond precision Postgres keeps.
fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_sqlstates() {
        assert!(is_connection_state(&SqlState::ADMIN_SHUTDOWN));
        assert!(is_connection_state(&SqlState::CANNOT_CONNECT_NOW));
        assert!(is_connection_state(&SqlState::CONNECTION_FAILURE));
        assert!(!is_connection_state(&SqlState::FOREIGN_KEY_VIOLATION));
        let deadlock = Failure::Statement {
            code: SqlState::T_R_DEADLOCK_DETECTED,
            message: "deadlock".into(),
        };
        assert!(deadlock.is_transient() && !deadlock.is_unavailable());
        assert!(Failure::Timeout.is_unavailable());
        assert_eq!(StoreError::from(Failure::Timeout), StoreError::Timeout);
        assert_eq!(
            StoreError::from(Failure::Unavailable("gone".into())),
            StoreError::Database("gone".into())
        );
    }

    #[test]
    fn accepts_urls_and_key_value_strings_and_rejects_garbage() {
        let c = parse_url("postgres://u@db.example:6543/chat").unwrap();
        assert_eq!(c.get_dbname(), Some("chat"));
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(10)));
        let c = parse_url("host=localhost user=postgres dbname=x connect_timeout=2").unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert!(parse_url("postgres://u@h:notaport/x").is_err());
    }

    #[test]
    fn timestamps_have_microsecond_precision() {
        assert_eq!(now().timestamp_subsec_nanos() % 1_000, 0);
    }
}
