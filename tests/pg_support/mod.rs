//! Shared harness of the Postgres tests: a fresh database per test on the
//! real server (dropped afterwards, also when the test panics), a store
//! started directly on it with a recording commit sink, a gateway on
//! Postgres, and a small blocking WebSocket client.
//!
//! Where Postgres is: `CHATGATE_TEST_POSTGRES` (a server URL without a
//! database name), default `postgres://postgres@127.0.0.1:5432`. When it is
//! unreachable a test fails if the environment variable `CI` is set (the
//! suite must run in CI), and otherwise prints why it skips and returns.
//!
//! Must never: touch a database it did not create.
#![allow(dead_code)]

pub mod proxy;

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatgate::store::postgres::Admin;
use chatgate::store::{
    self, CommitSink, InsertOutcome, InsertRequest, Origin, StoreHandle, StoreWorker,
};
use chatgate::{Config, Gateway, StoreConfig};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// The HS256 secret of the test gateways.
pub const SECRET: &str = "postgres-test-secret";
/// How long a single WebSocket read waits before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The Django DDL this project must work against without `migrate`.
pub const DJANGO_SCHEMA: &str = include_str!("../fixtures/django-schema.sql");

/// Base URL of the Postgres server (no database).
pub fn server_url() -> String {
    std::env::var("CHATGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The server's socket address (for the failure tests' proxy).
pub fn server_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let config: tokio_postgres::Config = server_url().parse().expect("server URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .expect("resolve the Postgres host")
        .next()
        .expect("an address for the Postgres host")
}

/// Logs to the test's output when `RUST_LOG` is set.
fn init_logging() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// What a fresh database starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Nothing.
    Empty,
    /// chatgate's own `migrate`.
    Migrated,
    /// The DDL Django generated (tests/fixtures/django-schema.sql), no migrate.
    Django,
}

/// A database created for one test and dropped when it ends.
pub struct TestDb {
    pub name: String,
    /// URL of this database.
    pub url: String,
    admin: Option<Admin>,
}

impl TestDb {
    /// A new database named after `test`; `None` (after printing the
    /// reason) when Postgres is unreachable outside CI.
    pub fn create(test: &str, schema: Schema) -> Option<TestDb> {
        init_logging();
        let server = connect_server(test)?;
        let name = unique_name(test);
        server
            .block_on(
                server
                    .client()
                    .batch_execute(&format!("CREATE DATABASE \"{name}\"")),
            )
            .expect("create the test database");
        let url = format!("{}/{name}", server_url());
        let db = TestDb {
            name,
            admin: Some(Admin::connect(&url).expect("connect to the test database")),
            url,
        };
        match schema {
            Schema::Empty => {}
            Schema::Migrated => db.admin().migrate().expect("migrate"),
            Schema::Django => db.execute_batch(DJANGO_SCHEMA),
        }
        Some(db)
    }

    /// This database's URL through a proxy listening on `addr`.
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let config: tokio_postgres::Config = server_url().parse().expect("server URL");
        let user = config.get_user().unwrap_or("postgres");
        format!("postgres://{user}@{addr}/{}", self.name)
    }

    pub fn admin(&self) -> &Admin {
        self.admin.as_ref().expect("admin connection")
    }

    /// Runs SQL statements (no parameters) on this database.
    pub fn execute_batch(&self, sql: &str) {
        let admin = self.admin();
        admin
            .block_on(admin.client().batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// The single `bigint` value a query returns (use `::bigint` casts).
    pub fn scalar(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        let admin = self.admin();
        let row = admin
            .block_on(admin.client().query_one(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        row.get(0)
    }

    /// Rows of `chatapp_message`.
    pub fn messages(&self) -> i64 {
        self.scalar("SELECT count(*) FROM chatapp_message", &[])
    }

    /// `content` of every `chatapp_message` row, by id.
    pub fn contents(&self) -> Vec<String> {
        let admin = self.admin();
        let sql = "SELECT content FROM chatapp_message ORDER BY id";
        let rows = admin
            .block_on(admin.client().query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// `unread_count` of a participant.
    pub fn unread(&self, conversation: i64, user: i64) -> i64 {
        self.scalar(
            "SELECT unread_count::bigint FROM chatapp_conversationparticipant \
             WHERE conversation_id = $1 AND user_id = $2::bigint",
            &[&conversation, &user],
        )
    }

    /// A new active user named `name`.
    pub fn user(&self, name: &str) -> i64 {
        self.admin()
            .create_user(name, &format!("{name}-first"), &format!("{name}-last"))
            .expect("create user")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop(self.admin.take());
        let dropped = Admin::connect(&format!("{}/postgres", server_url())).and_then(|server| {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            server
                .block_on(server.client().batch_execute(&sql))
                .map_err(|e| chatgate::store::StoreError::Database(e.to_string()))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A connection to the server's `postgres` database; `None` (after printing
/// why `test` skips) when Postgres is unreachable outside CI; a panic in CI.
fn connect_server(test: &str) -> Option<Admin> {
    match Admin::connect(&format!("{}/postgres", server_url())) {
        Ok(server) => Some(server),
        Err(e) if in_ci() => panic!("Postgres unreachable at {} in CI: {e}", server_url()),
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: Postgres unreachable at {} ({e}); set CI=true to make this a failure",
                server_url()
            );
            None
        }
    }
}

/// Whether Postgres answers: `false` (after printing why `test` skips)
/// outside CI, a panic in CI. For tests that must decide before creating
/// their database.
pub fn reachable(test: &str) -> bool {
    init_logging();
    connect_server(test).is_some()
}

/// A database name unique to this process and call. Postgres cuts names at
/// 63 bytes: the test part is short enough that the unique suffix survives.
fn unique_name(test: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let test: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    format!(
        "chatgate_test_{test}_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

// ---- the store, directly ----------------------------------------------

/// Every `(shard, outcomes)` call the store made to its sink.
pub type Delivered = Arc<Mutex<Vec<(usize, Vec<InsertOutcome>)>>>;

/// A sink that records every call.
pub fn recording_sink() -> (CommitSink, Delivered) {
    let delivered: Delivered = Arc::default();
    let log = delivered.clone();
    let sink: CommitSink = Arc::new(move |shard, outcomes| {
        log.lock().unwrap().push((shard, outcomes));
    });
    (sink, delivered)
}

/// Outcomes delivered so far, across calls, in delivery order.
pub fn outcome_count(delivered: &Delivered) -> usize {
    delivered.lock().unwrap().iter().map(|(_, o)| o.len()).sum()
}

/// Waits until at least `n` outcomes have been delivered (panics after `within`).
pub fn wait_for_outcomes(delivered: &Delivered, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while outcome_count(delivered) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} outcomes after {within:?}",
            outcome_count(delivered)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Takes everything delivered so far.
pub fn take(delivered: &Delivered) -> Vec<(usize, Vec<InsertOutcome>)> {
    std::mem::take(&mut *delivered.lock().unwrap())
}

/// An insert from `sender` into `conversation`, routed to `shard`.
pub fn insert(conversation: i64, sender: i64, content: &str, shard: usize) -> InsertRequest {
    InsertRequest {
        conversation_id: conversation,
        sender_id: sender,
        content: content.to_string(),
        origin: Origin {
            shard,
            conn: 1,
            sender_json: Bytes::from_static(b"{}"),
            reply: None,
        },
    }
}

/// A Postgres store running on its own side runtime.
pub struct TestStore {
    pub handle: Option<StoreHandle>,
    pub worker: Option<StoreWorker>,
    pub delivered: Delivered,
    /// The side runtime (multi-thread, 1 worker, like the gateway's).
    pub side: tokio::runtime::Runtime,
    /// Drives the handle's async calls from the test thread.
    pub client_rt: tokio::runtime::Runtime,
}

impl TestStore {
    /// A store with a pool of 4 (two lanes: batches of disjoint
    /// conversations commit two at a time).
    pub fn start(url: &str, batch_max: usize, timeout: Duration) -> TestStore {
        TestStore::with_pool(url, 4, batch_max, timeout)
    }

    /// A store with `pool_size` connections (lanes: half of them, 1 to 4).
    pub fn with_pool(
        url: &str,
        pool_size: usize,
        batch_max: usize,
        timeout: Duration,
    ) -> TestStore {
        let side = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("side runtime");
        let (sink, delivered) = recording_sink();
        let (handle, worker) =
            store::postgres::start(url, pool_size, batch_max, timeout, sink, side.handle())
                .expect("the store starts");
        let client_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        TestStore {
            handle: Some(handle),
            worker: Some(worker),
            delivered,
            side,
            client_rt,
        }
    }

    pub fn handle(&self) -> &StoreHandle {
        self.handle.as_ref().expect("store handle")
    }

    /// Queues inserts (returns once they are in the channel).
    pub fn queue(&self, inserts: Vec<InsertRequest>) {
        let handle = self.handle();
        self.client_rt.block_on(async {
            for i in inserts {
                handle.insert(i).await.expect("queue insert");
            }
        });
    }

    /// Waits until `within` for the store to become ready.
    pub fn wait_ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.handle().is_ready() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Drops the handle and waits for the store to finish its queue.
    pub fn stop(&mut self) {
        drop(self.handle.take());
        if let Some(worker) = self.worker.take() {
            worker.join();
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        drop(self.handle.take());
        if !std::thread::panicking() {
            if let Some(worker) = self.worker.take() {
                worker.join();
            }
        }
    }
}

/// Holds `LOCK TABLE chatapp_message` in an open transaction so the batch
/// in flight waits, and the inserts queued meanwhile form the next batch.
pub struct Blocker {
    admin: Admin,
}

impl Blocker {
    pub fn hold(db: &TestDb) -> Blocker {
        let admin = Admin::connect(&db.url).expect("blocker connects");
        admin
            .block_on(
                admin
                    .client()
                    .batch_execute("BEGIN; LOCK TABLE chatapp_message IN SHARE ROW EXCLUSIVE MODE"),
            )
            .expect("lock chatapp_message");
        Blocker { admin }
    }

    /// Waits until a store connection waits for the lock.
    pub fn wait_until_blocked(&self, db: &TestDb) {
        self.wait_until_waiting(db, 1);
    }

    /// Waits until `n` store connections wait for the lock. Polled from
    /// another connection: inside the blocker's transaction
    /// `pg_stat_activity` would be a snapshot taken at its first read.
    pub fn wait_until_waiting(&self, db: &TestDb, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'chatgate' AND wait_event_type = 'Lock'",
            &[],
        ) < n
        {
            assert!(
                Instant::now() < deadline,
                "the batch never waited for the lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn release(self) {
        self.admin
            .block_on(self.admin.client().batch_execute("COMMIT"))
            .expect("release the lock");
    }
}

// ---- a gateway on Postgres ----------------------------------------------

/// The shared test config (ephemeral ports, 2 shards, no drain grace) on
/// the Postgres database at `url`.
pub fn gateway_config(url: &str) -> Config {
    let mut config = Config::for_tests(SECRET, "unused.sqlite3".into());
    config.store = StoreConfig::Postgres {
        url: url.to_string(),
        pool_size: 4,
    };
    config
}

/// A running gateway, shut down when dropped.
pub struct PgGateway {
    pub gateway: Option<Gateway>,
    pub config: Config,
}

impl PgGateway {
    pub fn start(config: Config) -> PgGateway {
        let gateway = Gateway::start(config.clone()).expect("the gateway starts");
        PgGateway {
            gateway: Some(gateway),
            config,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.gateway.as_ref().expect("running").local_addr()
    }

    pub fn token(&self, user: i64) -> String {
        chatgate::auth::mint_token(&self.config.jwt, user, Duration::from_secs(3600))
    }

    /// Opens `/ws/chat/{conversation}/` as `user`; the upgrade must succeed.
    pub fn open(&self, conversation: i64, user: i64) -> WsClient {
        let url = format!(
            "ws://{}/ws/chat/{conversation}/?token={}",
            self.addr(),
            self.token(user)
        );
        let request = url.into_client_request().expect("request");
        let tcp = TcpStream::connect(self.addr()).expect("tcp connect");
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        match tungstenite::client::client(request, tcp) {
            Ok((ws, _)) => WsClient { ws },
            Err(e) => panic!("upgrade failed: {e:?}"),
        }
    }

    /// Opens and expects `connection_established`.
    pub fn connect(&self, conversation: i64, user: i64) -> WsClient {
        let mut c = self.open(conversation, user);
        assert_eq!(
            c.recv_json(),
            json!({"type": "connection_established", "message": "Connected to chat"})
        );
        c
    }
}

/// Longest a graceful gateway shutdown may take in a test.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);

impl Drop for PgGateway {
    /// Shuts down on a helper thread so a shutdown that hangs fails the
    /// test (and lets the test database be dropped) instead of hanging it.
    fn drop(&mut self) {
        let Some(gateway) = self.gateway.take() else {
            return;
        };
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            gateway.shutdown();
            let _ = done.send(());
        });
        if finished.recv_timeout(SHUTDOWN_LIMIT).is_err() && !std::thread::panicking() {
            panic!("the gateway did not shut down within {SHUTDOWN_LIMIT:?}");
        }
    }
}

/// A blocking WebSocket client.
pub struct WsClient {
    pub ws: WebSocket<TcpStream>,
}

/// What a read produced.
#[derive(Debug)]
pub enum Read {
    Json(Value),
    Closed(Option<u16>),
    TimedOut,
}

impl WsClient {
    pub fn send_json(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .expect("send a frame");
    }

    /// The next JSON message, skipping `{"type":"ping"}` and control frames.
    pub fn read(&mut self, timeout: Duration) -> Read {
        self.ws.get_ref().set_read_timeout(Some(timeout)).unwrap();
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON text frame");
                    if v != json!({"type": "ping"}) {
                        return Read::Json(v);
                    }
                }
                Ok(Message::Close(frame)) => return Read::Closed(frame.map(|f| u16::from(f.code))),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Read::TimedOut
                }
                Err(_) => return Read::Closed(None),
            }
        }
    }

    /// The next JSON message; panics on a close or after [`READ_TIMEOUT`].
    pub fn recv_json(&mut self) -> Value {
        match self.read(READ_TIMEOUT) {
            Read::Json(v) => v,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// The next message must be a `new_message`; returns its `message`.
    pub fn recv_new_message(&mut self) -> Value {
        let v = self.recv_json();
        assert_eq!(v["type"], "new_message", "expected new_message, got {v}");
        v["message"].clone()
    }

    /// Nothing but pings arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        match self.read(quiet) {
            Read::TimedOut => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

// ---- the catalog --------------------------------------------------------

/// Columns (types, lengths, NOT NULL, identity, defaults), constraints
/// (definition, deferrability, validated), indexes (definition, valid) and
/// sequences of the public schema, one line each, sorted: two databases
/// with equal descriptions have the same schema.
pub const SCHEMA_DESCRIPTION: &str = r#"
SELECT line FROM (
    SELECT format('column %s.%s %s(%s) nullable=%s identity=%s/%s default=%s',
                  table_name, column_name, data_type, character_maximum_length,
                  is_nullable, is_identity, identity_generation, column_default) AS line
    FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL
    SELECT format('constraint %s on %s: %s deferrable=%s deferred=%s validated=%s',
                  c.conname, c.conrelid::regclass, pg_get_constraintdef(c.oid),
                  c.condeferrable, c.condeferred, c.convalidated)
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname = 'public' AND c.contype <> 'n'
    UNION ALL
    SELECT format('index %s valid=%s', pg_get_indexdef(i.indexrelid), i.indisvalid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
    UNION ALL
    SELECT format('sequence %s', sequencename) FROM pg_sequences WHERE schemaname = 'public'
) d ORDER BY line
"#;

impl TestDb {
    /// [`SCHEMA_DESCRIPTION`] of this database.
    pub fn describe_schema(&self) -> Vec<String> {
        let admin = self.admin();
        let rows = admin
            .block_on(admin.client().query(SCHEMA_DESCRIPTION, &[]))
            .expect("describe the schema");
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// `pg_index.indisvalid` of the index `name`; `None` when there is none.
    pub fn index_valid(&self, name: &str) -> Option<bool> {
        let admin = self.admin();
        let row = admin
            .block_on(admin.client().query_opt(
                "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
                &[&name],
            ))
            .expect("read pg_index");
        row.map(|r| r.get(0))
    }
}
