//! `chatgate migrate` on PostgreSQL, online: safe to run against a busy
//! production database that Django writes to.
//!
//! Owns the migration's I/O: reading the catalog for the schema's names
//! ([`inspect`]: exists, `pg_index.indisvalid`, built by another session
//! now), carrying the plan out ([`migrate_with`], `migrate/plan.rs` decides
//! what), one statement at a time in autocommit mode:
//! - tables (with their constraints) under a short `lock_timeout`: a
//!   `CREATE TABLE` with foreign keys takes a lock on the referenced tables
//!   that Django's writers queue behind, so it may wait for it only that
//!   long; refused, it is tried again after a backoff, a bounded number of
//!   times ([`MigrateOptions`]);
//! - indexes with `CREATE INDEX CONCURRENTLY IF NOT EXISTS` under no lock
//!   timeout (it blocks no writer); one left INVALID by an interrupted build
//!   is dropped `CONCURRENTLY` and built again; one another session is
//!   building is waited for, never dropped;
//! - one migration at a time per database: a session advisory lock, taken
//!   with `pg_try_advisory_lock` in a polling loop (a blocking
//!   `pg_advisory_lock` would hold a snapshot that a concurrent index
//!   build waits for: a deadlock the server would break by cancelling one).
//!
//! Must never: run a statement inside a transaction block, hold a lock
//! writers wait for longer than the lock timeout, alter or drop an object
//! that exists and is valid, or wait without a bound.

pub mod plan;

use std::time::{Duration, Instant};

use rand::Rng;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use self::plan::{Catalog, Found, Kind, Plan, Statement};
use super::describe;
use crate::store::StoreError;

/// The advisory lock key of chatgate migrations (the same key the
/// transaction-scoped lock of earlier releases used, so an old and a new
/// `chatgate migrate` never run together).
const LOCK_KEY: i64 = 7210836301549961227;

/// How often a waiting migration looks again (advisory lock, another
/// session's index build).
const POLL: Duration = Duration::from_millis(250);

/// First and longest backoff between attempts at a table.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How a migration behaves on a busy database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Longest a table's statement waits for its locks (while it waits,
    /// writers of the referenced tables wait behind it). Default: 100 ms.
    pub lock_timeout: Duration,
    /// Attempts at one table before giving up. Default: 30 (with backoff
    /// from 50 ms to 2 s between them: about a minute in all).
    pub attempts: u32,
    /// Longest wait for another migration's advisory lock, or for an index
    /// another session is building. Default: 1 hour.
    pub wait: Duration,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_millis(100),
            attempts: 30,
            wait: Duration::from_secs(3600),
        }
    }
}

/// What a migration did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// The statements run, in order (settings included); empty when the
    /// schema was up to date.
    pub executed: Vec<String>,
    /// Table statements refused by the lock timeout and tried again.
    pub retries: u32,
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Database(String),
    #[error(
        "could not lock the tables {object} references within the lock timeout in {attempts} \
         attempts (writers waited at most that long each time): run it again when the database \
         is quieter, or give a longer --lock-timeout"
    )]
    LockTimeout { object: &'static str, attempts: u32 },
    #[error(
        "building index {index} failed: {message}. It is left invalid; the next \
         `chatgate migrate` drops it and builds it again"
    )]
    IndexBuild {
        index: &'static str,
        message: String,
    },
    #[error("another `chatgate migrate` still held the database's migration lock after {0:?}")]
    Busy(Duration),
    #[error("index {0} was still being built by another session after {1:?}")]
    StillBuilding(&'static str, Duration),
}

impl From<MigrateError> for StoreError {
    fn from(e: MigrateError) -> Self {
        StoreError::Database(format!("migrating: {e}"))
    }
}

fn db(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(describe(&e))
}

/// Reads the catalog for the schema's names and plans the migration.
pub async fn inspect(client: &Client) -> Result<Plan, MigrateError> {
    const CATALOG: &str = "\
        SELECT n.name, c.relkind = 'i', coalesce(i.indisvalid, true), \
               EXISTS (SELECT 1 FROM pg_stat_progress_create_index p \
                       WHERE p.index_relid = c.oid) \
        FROM unnest($1::text[]) AS n(name) \
        JOIN pg_class c ON c.oid = to_regclass(n.name) \
        LEFT JOIN pg_index i ON i.indexrelid = c.oid";
    let names = plan::names();
    let rows = client.query(CATALOG, &[&names]).await.map_err(db)?;
    let mut catalog = Catalog::default();
    for row in rows {
        let name: String = row.get(0);
        let found = match row.get::<_, bool>(1) {
            true => Found::Index {
                valid: row.get(2),
                building: row.get(3),
            },
            false => Found::Relation,
        };
        catalog.insert(name, found);
    }
    Ok(plan::plan(&catalog))
}

/// [`migrate_with`] with the default options, for callers that only need
/// to know it worked (tests, the embedded path of the CLI).
pub async fn migrate(client: &Client) -> Result<(), StoreError> {
    migrate_with(client, &MigrateOptions::default())
        .await
        .map(drop)
        .map_err(StoreError::from)
}

/// [`migrate`] for synchronous callers: connects to `url` on a private
/// current-thread runtime. Never call it from inside a runtime.
pub fn migrate_blocking(url: &str) -> Result<(), StoreError> {
    super::Admin::connect(url)?.migrate()
}

/// Creates what is missing, online (see the module header). Idempotent: on
/// an up-to-date database it runs nothing. Leaves the session's settings
/// as it found them and releases the advisory lock, also on failure.
pub async fn migrate_with(
    client: &Client,
    options: &MigrateOptions,
) -> Result<MigrateReport, MigrateError> {
    take_lock(client, options.wait).await?;
    let outcome = run(client, options).await;
    // Both are session state; a failure here leaves them to the session's end.
    let _ = client
        .batch_execute("RESET lock_timeout; RESET statement_timeout")
        .await;
    let _ = client
        .query("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    outcome
}

async fn run(client: &Client, options: &MigrateOptions) -> Result<MigrateReport, MigrateError> {
    let plan = settled_plan(client, options.wait).await?;
    let mut report = MigrateReport::default();
    for statement in plan.statements(options.lock_timeout) {
        let started = Instant::now();
        match statement.kind {
            Kind::Setting => client.batch_execute(&statement.sql).await.map_err(db)?,
            Kind::Locking => report.retries += create_table(client, &statement, options).await?,
            Kind::Concurrent => concurrently(client, &statement).await?,
        }
        if let Some(object) = statement.object {
            tracing::info!(
                object,
                took_ms = started.elapsed().as_millis() as u64,
                "migrate: {}",
                first_words(&statement.sql)
            );
        }
        report.executed.push(statement.sql);
    }
    Ok(report)
}

/// The plan once no other session is building one of the schema's
/// indexes (its build is waited for, then the catalog read again).
async fn settled_plan(client: &Client, wait: Duration) -> Result<Plan, MigrateError> {
    let started = Instant::now();
    loop {
        let plan = inspect(client).await?;
        let Some(index) = plan.building.first() else {
            return Ok(plan);
        };
        if started.elapsed() >= wait {
            return Err(MigrateError::StillBuilding(index.name, wait));
        }
        if started.elapsed() < POLL {
            tracing::info!(
                index = index.name,
                "migrate: another session is building this index; waiting for it"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Takes the migration lock, polling; gives up after `wait`.
async fn take_lock(client: &Client, wait: Duration) -> Result<(), MigrateError> {
    let started = Instant::now();
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(db)?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        if started.elapsed() >= wait {
            return Err(MigrateError::Busy(wait));
        }
        if started.elapsed() < POLL {
            tracing::info!("migrate: another `chatgate migrate` is running; waiting for it");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs a table's statement, again after a backoff each time the lock
/// timeout (or a deadlock) refused it; returns how many retries it took.
async fn create_table(
    client: &Client,
    statement: &Statement,
    options: &MigrateOptions,
) -> Result<u32, MigrateError> {
    let object = statement.object.unwrap_or_default();
    let attempts = options.attempts.max(1);
    for attempt in 0..attempts {
        match client.batch_execute(&statement.sql).await {
            Ok(()) => return Ok(attempt),
            Err(e) if is_lock_refusal(&e) && attempt + 1 < attempts => {
                let delay = backoff(attempt);
                tracing::info!(
                    object,
                    attempt = attempt + 1,
                    retry_in_ms = delay.as_millis() as u64,
                    "migrate: lock not granted within the lock timeout; trying again"
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) if is_lock_refusal(&e) => break,
            Err(e) => return Err(db(e)),
        }
    }
    Err(MigrateError::LockTimeout { object, attempts })
}

/// Runs a concurrent index statement once.
async fn concurrently(client: &Client, statement: &Statement) -> Result<(), MigrateError> {
    client
        .batch_execute(&statement.sql)
        .await
        .map_err(|e| MigrateError::IndexBuild {
            index: statement.object.unwrap_or_default(),
            message: describe(&e),
        })
}

/// A lock timeout or a deadlock: the same statement may succeed later.
fn is_lock_refusal(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Attempt `k` waits a random time in `[d/2, d]`, `d = min(50 ms · 2^k, 2 s)`.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(10))
        .min(BACKOFF_MAX);
    let floor = ceiling / 2;
    floor + (ceiling - floor).mul_f64(rand::rng().random::<f64>())
}

/// `CREATE TABLE`, `CREATE INDEX`, `DROP INDEX`: what a log line says.
fn first_words(sql: &str) -> String {
    sql.split_whitespace()
        .filter(|w| w.chars().all(|c| c.is_ascii_uppercase()))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let first = backoff(0);
        assert!(first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST);
        for k in 1..40 {
            let d = backoff(k);
            let ceiling = (BACKOFF_FIRST * (1 << k.min(10))).min(BACKOFF_MAX);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {k}: {d:?}");
        }
    }

    #[test]
    fn defaults_keep_writers_waiting_a_fraction_of_a_second() {
        let o = MigrateOptions::default();
        assert_eq!(o.lock_timeout, Duration::from_millis(100));
        assert_eq!(o.attempts, 30);
        let total: Duration = (0..o.attempts).map(|k| backoff(k) * 2).sum();
        assert!(total < Duration::from_secs(120), "{total:?}");
    }

    #[test]
    fn log_lines_name_the_statement() {
        assert_eq!(
            first_words("CREATE INDEX CONCURRENTLY IF NOT EXISTS x ON t"),
            "create index"
        );
        assert_eq!(
            first_words("CREATE TABLE IF NOT EXISTS t ("),
            "create table"
        );
    }
}
