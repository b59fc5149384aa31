//! Shared harness of the integration tests: a real gateway on an ephemeral
//! port (2 shards, a temporary SQLite file by default, or a fresh Postgres
//! database of its own), provisioned users and conversations, a blocking
//! WebSocket client with read timeouts, and raw TCP / raw frame helpers for
//! the tests that must misbehave.
//!
//! Must never: reach into the gateway's internals. Everything a test checks
//! goes over a socket, through `Gateway::shard_stats`, or through the
//! database the gateway writes.
#![allow(dead_code)]

/// The Postgres test databases (one per gateway, dropped with it).
#[path = "../pg_support/mod.rs"]
pub mod pg_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chatgate::store::sqlite::Admin;
use chatgate::{Config, Gateway, IoDriver, ShardStats, StoreConfig};
use pg_support::{Schema, TestDb};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// The HS256 secret every test gateway verifies tokens with.
pub const SECRET: &str = "integration-test-secret";
/// How long any single read waits before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The header that asks for protocol v2.
pub const V2_PROTOCOL: (&str, &str) = ("Sec-WebSocket-Protocol", "chatgate.v2");

/// Expands each scenario `fn name(driver: IoDriver)` into
/// `uring::name` (io driver Auto: io_uring where the kernel allows it) and
/// `epoll::name` tests.
#[allow(unused_macros)] // files that run on one driver only do not use it
macro_rules! on_both_drivers {
    ($($name:ident),+ $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                super::$name(chatgate::IoDriver::Auto)
            })+
        }
        mod epoll {
            $(#[test]
            fn $name() {
                super::$name(chatgate::IoDriver::Epoll)
            })+
        }
    };
}

/// Expands each scenario `fn name(on: Target)` into `uring::name` and
/// `epoll::name` (SQLite, io driver Auto / Epoll), `postgres::name` (a fresh
/// Postgres database set up by chatgate's `migrate`) and `django::name` (a
/// fresh Postgres database holding only the DDL Django generated, no
/// `migrate`), both Postgres variants on the default io driver. A Postgres
/// variant prints why it skips and passes when Postgres is unreachable,
/// unless `CI` is set: then it fails.
#[allow(unused_macros)] // files that run on SQLite only do not use it
macro_rules! on_every_store {
    ($($name:ident),+ $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                super::$name(crate::support::Target::sqlite(chatgate::IoDriver::Auto))
            })+
        }
        mod epoll {
            $(#[test]
            fn $name() {
                super::$name(crate::support::Target::sqlite(chatgate::IoDriver::Epoll))
            })+
        }
        mod postgres {
            $(#[test]
            fn $name() {
                let test = concat!("postgres::", stringify!($name));
                if let Some(on) = crate::support::Target::postgres(test) {
                    super::$name(on)
                }
            })+
        }
        mod django {
            $(#[test]
            fn $name() {
                let test = concat!("django::", stringify!($name));
                if let Some(on) = crate::support::Target::django(test) {
                    super::$name(on)
                }
            })+
        }
    };
}

/// Which database a [`TestGateway`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh Postgres database set up by chatgate's `migrate`.
    Postgres,
    /// A fresh Postgres database holding the DDL Django generated
    /// (tests/fixtures/django-schema.sql), without `migrate`.
    PostgresDjango,
}

/// Where a scenario runs: the io driver and the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub driver: IoDriver,
    pub store: StoreKind,
}

impl Target {
    /// SQLite on `driver`.
    pub fn sqlite(driver: IoDriver) -> Self {
        Target {
            driver,
            store: StoreKind::Sqlite,
        }
    }

    /// Postgres (migrated) on the default io driver; `None` after printing
    /// why `test` skips when Postgres is unreachable outside CI (in CI it
    /// panics).
    pub fn postgres(test: &str) -> Option<Self> {
        Self::on_postgres(test, StoreKind::Postgres)
    }

    /// Postgres with Django's own schema, like [`Target::postgres`].
    pub fn django(test: &str) -> Option<Self> {
        Self::on_postgres(test, StoreKind::PostgresDjango)
    }

    fn on_postgres(test: &str, store: StoreKind) -> Option<Self> {
        pg_support::reachable(test).then_some(Target {
            driver: IoDriver::default(),
            store,
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.store != StoreKind::Sqlite
    }
}

/// A provisioned user with a valid access token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub token: String,
}

impl User {
    /// The `sender` object of `new_message`.
    pub fn profile(&self) -> Value {
        json!({
            "id": self.id,
            "username": self.username,
            "first_name": self.first_name,
            "last_name": self.last_name,
        })
    }
}

/// The database of a [`TestGateway`], with a connection of the test's own.
enum Db {
    Sqlite(Admin),
    /// Dropped (with `DROP DATABASE`) when the gateway is.
    Postgres(TestDb),
}

/// A running gateway on its own temporary database.
pub struct TestGateway {
    gateway: Option<Gateway>,
    pub config: Config,
    /// The SQLite file (on Postgres: a path in the temporary directory that
    /// nothing uses).
    pub db_path: PathBuf,
    store: StoreKind,
    /// Declared after `gateway`: the database outlives the gateway.
    database: Db,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// Default test config (2 shards, 127.0.0.1:0), io driver Auto.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Default test config on the given io driver.
    pub fn on(driver: IoDriver) -> Self {
        Self::start_with(|c| c.io_driver = driver)
    }

    /// Default test config, adjusted by `adjust` before the gateway starts.
    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_prepared(|_| {}, adjust)
    }

    /// Default test config on `on`'s io driver and store.
    pub fn on_target(on: Target) -> Self {
        Self::start_on(on, |_| {})
    }

    /// Like [`TestGateway::start_with`] on `on`'s store, with `on`'s io
    /// driver set before `adjust` runs. On Postgres: a fresh database of its
    /// own (named after the test thread), dropped with the gateway; returns
    /// once `/readyz` says ready (when the admin listener is enabled).
    pub fn start_on(on: Target, adjust: impl FnOnce(&mut Config)) -> Self {
        let schema = match on.store {
            StoreKind::Sqlite => {
                return Self::start_with(|c| {
                    c.io_driver = on.driver;
                    adjust(c)
                })
            }
            StoreKind::Postgres => Schema::Migrated,
            StoreKind::PostgresDjango => Schema::Django,
        };
        let test = std::thread::current()
            .name()
            .unwrap_or("gateway")
            .to_string();
        let db = TestDb::create(&test, schema)
            .unwrap_or_else(|| panic!("{test}: Postgres is unreachable (see above)"));
        let url = db.url.clone();
        let dir = tempfile::tempdir().expect("tempdir");
        let unused = dir.path().join("unused.sqlite3");
        let gw = Self::launch(dir, unused, on.store, Some(Db::Postgres(db)), |c| {
            c.io_driver = on.driver;
            c.store = StoreConfig::Postgres { url, pool_size: 4 };
            adjust(c)
        });
        if let Some(admin) = gw.gateway().admin_addr() {
            eventually_eq(
                Duration::from_secs(10),
                "/readyz on a gateway on Postgres",
                200,
                || http_get(admin, "/readyz").0,
            );
        }
        gw
    }

    /// Like [`TestGateway::start_with`], on a database file `prepare` has
    /// written to before the gateway first opens it.
    pub fn start_prepared(
        prepare: impl FnOnce(&rusqlite::Connection),
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_path = dir.path().join("chat.sqlite3");
        prepare(&rusqlite::Connection::open(&db_path).expect("create the database file"));
        Self::launch(dir, db_path, StoreKind::Sqlite, None, adjust)
    }

    /// Starts the gateway on the test config (SQLite at `db_path` unless
    /// `adjust` says otherwise) and checks its io drivers; `database` is the
    /// test's connection to it (`None`: open the SQLite file afterwards).
    fn launch(
        dir: tempfile::TempDir,
        db_path: PathBuf,
        store: StoreKind,
        database: Option<Db>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config::for_tests(SECRET, db_path.clone());
        adjust(&mut config);
        let gateway = Gateway::start(config.clone()).expect("gateway starts");
        let drivers = gateway.drivers().to_vec();
        assert_eq!(
            drivers.len(),
            config.shards,
            "one runtime per shard: {drivers:?}"
        );
        match config.io_driver {
            IoDriver::Epoll => assert!(drivers.iter().all(|d| *d == "epoll"), "{drivers:?}"),
            IoDriver::Uring => assert!(drivers.iter().all(|d| *d == "io_uring"), "{drivers:?}"),
            IoDriver::Auto => {}
        }
        let database = database.unwrap_or_else(|| {
            Db::Sqlite(Admin::open(&db_path).expect("admin opens the gateway's database"))
        });
        TestGateway {
            gateway: Some(gateway),
            config,
            db_path,
            store,
            database,
            _dir: dir,
        }
    }

    /// The running gateway (for figures such as `bridge_state`).
    pub fn gateway_ref(&self) -> &Gateway {
        self.gateway()
    }

    fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway is running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway().local_addr()
    }

    pub fn stats(&self) -> Vec<ShardStats> {
        self.gateway().shard_stats()
    }

    /// Open WebSocket sessions per shard.
    pub fn connections(&self) -> Vec<usize> {
        self.stats().iter().map(|s| s.connections).collect()
    }

    /// Takes the running gateway out (e.g. to shut it down on another thread).
    pub fn take_gateway(&mut self) -> Gateway {
        self.gateway.take().expect("gateway is running")
    }

    /// Starts a new gateway on the same database file and config.
    pub fn start_again(&mut self) {
        assert!(self.gateway.is_none(), "shut the old gateway down first");
        self.gateway = Some(Gateway::start(self.config.clone()).expect("gateway restarts"));
    }

    /// Graceful shutdown, on this thread.
    pub fn shutdown(&mut self) {
        self.take_gateway().shutdown();
    }

    // ---- provisioning -------------------------------------------------

    /// Which store this gateway runs on.
    pub fn store_kind(&self) -> StoreKind {
        self.store
    }

    /// A new active user `name` ("Name" "Tester") with a one-hour token.
    pub fn user(&self, name: &str) -> User {
        let mut first = name.to_string();
        first[..1].make_ascii_uppercase();
        let last = format!("{first}-Tester");
        let id = match &self.database {
            Db::Sqlite(admin) => admin.create_user(name, &first, &last),
            Db::Postgres(db) => db.admin().create_user(name, &first, &last),
        }
        .expect("create user");
        User {
            id,
            username: name.to_string(),
            first_name: first,
            last_name: last,
            token: self.token_for(id),
        }
    }

    /// A user already in `auth_user` (e.g. inserted with SQL), with a token.
    pub fn existing_user(&self, id: i64) -> User {
        let (username, first_name, last_name) = match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT username, first_name, last_name FROM auth_user WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .expect("auth_user row"),
            Db::Postgres(_) => {
                let r = self.pg_row(
                    "SELECT username::text, first_name::text, last_name::text \
                     FROM auth_user WHERE id = $1::bigint",
                    &[&id],
                );
                let r = r.expect("auth_user row");
                (r.get(0), r.get(1), r.get(2))
            }
        };
        User {
            id,
            username,
            first_name,
            last_name,
            token: self.token_for(id),
        }
    }

    /// A new conversation with these participants.
    pub fn conversation(&self, users: &[&User]) -> i64 {
        let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
        match &self.database {
            Db::Sqlite(admin) => admin.create_conversation(&ids),
            Db::Postgres(db) => db.admin().create_conversation(&ids),
        }
        .expect("create conversation")
    }

    /// Users `alice` and `bob` and a new conversation of the two.
    pub fn alice_and_bob(&self) -> (User, User, i64) {
        let alice = self.user("alice");
        let bob = self.user("bob");
        let conv = self.conversation(&[&alice, &bob]);
        (alice, bob, conv)
    }

    /// Activates or deactivates a user (on either store).
    pub fn set_user_active(&self, user_id: i64, active: bool) {
        match &self.database {
            Db::Sqlite(admin) => admin.set_user_active(user_id, active),
            Db::Postgres(db) => db.admin().set_user_active(user_id, active),
        }
        .unwrap_or_else(|e| panic!("set user {user_id} active={active}: {e}"))
    }

    /// Adds a participant with no unread messages (on either store).
    pub fn add_participant(&self, conversation: i64, user_id: i64) {
        match &self.database {
            Db::Sqlite(admin) => admin.add_participant(conversation, user_id),
            Db::Postgres(db) => db.admin().add_participant(conversation, user_id),
        }
        .unwrap_or_else(|e| panic!("add user {user_id} to conversation {conversation}: {e}"))
    }

    /// Deletes a conversation with its participants, messages and deletions
    /// (on either store).
    pub fn delete_conversation(&self, conversation: i64) {
        match &self.database {
            Db::Sqlite(admin) => admin.delete_conversation(conversation),
            Db::Postgres(db) => db.admin().delete_conversation(conversation),
        }
        .unwrap_or_else(|e| panic!("delete conversation {conversation}: {e}"))
    }

    /// A valid one-hour access token minted by the gateway's own code.
    pub fn token_for(&self, user_id: i64) -> String {
        chatgate::auth::mint_token(&self.config.jwt, user_id, Duration::from_secs(3600))
    }

    /// The SQLite admin; panics on Postgres (use [`TestGateway::pg_admin`],
    /// or the store-neutral helpers such as [`TestGateway::set_user_active`]).
    pub fn admin(&self) -> &Admin {
        match &self.database {
            Db::Sqlite(admin) => admin,
            Db::Postgres(_) => panic!("admin(): this gateway runs on Postgres, not SQLite"),
        }
    }

    /// The Postgres admin of this gateway's database; panics on SQLite.
    pub fn pg_admin(&self) -> &chatgate::store::postgres::Admin {
        self.pg_db().admin()
    }

    /// This gateway's Postgres test database; panics on SQLite.
    pub fn pg_db(&self) -> &TestDb {
        match &self.database {
            Db::Postgres(db) => db,
            Db::Sqlite(_) => panic!("pg_db(): this gateway runs on SQLite, not Postgres"),
        }
    }

    /// The SQLite connection; panics on Postgres.
    pub fn db(&self) -> &rusqlite::Connection {
        self.admin().connection()
    }

    /// At most one row of a query on this gateway's Postgres database.
    fn pg_row(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Option<tokio_postgres::Row> {
        let admin = self.pg_admin();
        admin
            .block_on(admin.client().query_opt(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// Every row of a query on this gateway's Postgres database.
    fn pg_rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        let admin = self.pg_admin();
        admin
            .block_on(admin.client().query(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// `(conversation_id, sender_id, content)` of a stored message.
    pub fn message_row(&self, id: i64) -> Option<(i64, i64, String)> {
        use rusqlite::OptionalExtension;
        match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT conversation_id, sender_id, content FROM chatapp_message WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .expect("query chatapp_message"),
            Db::Postgres(_) => self
                .pg_row(
                    "SELECT conversation_id::bigint, sender_id::bigint, content \
                     FROM chatapp_message WHERE id = $1::bigint",
                    &[&id],
                )
                .map(|r| (r.get(0), r.get(1), r.get(2))),
        }
    }

    /// `(id, content)` of every stored message of a conversation, by id.
    pub fn messages_of(&self, conversation: i64) -> Vec<(i64, String)> {
        match &self.database {
            Db::Sqlite(admin) => {
                let mut st = admin
                    .connection()
                    .prepare(
                        "SELECT id, content FROM chatapp_message WHERE conversation_id = ?1 ORDER BY id",
                    )
                    .expect("prepare");
                st.query_map([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
            Db::Postgres(_) => self
                .pg_rows(
                    "SELECT id::bigint, content FROM chatapp_message \
                     WHERE conversation_id = $1::bigint ORDER BY id",
                    &[&conversation],
                )
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }

    pub fn unread(&self, conversation: i64, user: &User) -> i64 {
        match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT unread_count FROM chatapp_conversationparticipant \
                     WHERE conversation_id = ?1 AND user_id = ?2",
                    [conversation, user.id],
                    |r| r.get(0),
                )
                .expect("participant row"),
            Db::Postgres(_) => self
                .pg_row(
                    "SELECT unread_count::bigint FROM chatapp_conversationparticipant \
                     WHERE conversation_id = $1::bigint AND user_id = $2::bigint",
                    &[&conversation, &user.id],
                )
                .expect("participant row")
                .get(0),
        }
    }

    /// Number of `chatapp_messagedeletion` rows for (message, user).
    pub fn deletions(&self, message_id: i64, user: &User) -> i64 {
        match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT COUNT(*) FROM chatapp_messagedeletion WHERE message_id = ?1 AND user_id = ?2",
                    [message_id, user.id],
                    |r| r.get(0),
                )
                .expect("count deletions"),
            Db::Postgres(_) => self
                .pg_row(
                    "SELECT count(*)::bigint FROM chatapp_messagedeletion \
                     WHERE message_id = $1::bigint AND user_id = $2::bigint",
                    &[&message_id, &user.id],
                )
                .expect("a count")
                .get(0),
        }
    }

    // ---- WebSocket clients --------------------------------------------

    /// A TCP connection to the gateway with read/write timeouts.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("tcp connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A TCP connection whose receive buffer is set to `rcvbuf` bytes before
    /// connecting (a slow reader fills up fast).
    pub fn tcp_small_rcvbuf(&self, rcvbuf: usize) -> TcpStream {
        let addr = self.addr();
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        sock.connect(&addr.into()).expect("tcp connect");
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        s
    }

    /// `user` joins `conversation` over an already connected `stream`.
    pub fn connect_over(&self, stream: TcpStream, conversation: i64, user: &User) -> Client {
        let url = format!(
            "ws://{}/ws/chat/{conversation}/?token={}",
            self.addr(),
            user.token
        );
        let (ws, _) = tungstenite::client::client(url, stream).expect("upgrade");
        let mut c = Client { ws };
        c.expect_established();
        c
    }

    /// A WebSocket handshake on `path` (e.g. `/ws/chat/7/?token=..`) with
    /// extra headers; the error when the server does not answer 101.
    pub fn try_open(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut req = format!("ws://{}{}", self.addr(), path)
            .into_client_request()
            .expect("request");
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        match tungstenite::client::client(req, self.tcp()) {
            Ok((ws, _response)) => Ok(Client { ws }),
            Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                panic!("handshake on {path} timed out")
            }
        }
    }

    /// A socket of `user` in `conversation` on the gateway at `addr` (another
    /// node of a cluster on this test's database), after
    /// `connection_established`; v2 sockets also after `read_state` and
    /// `presence_state`, which is returned (`Null` for v1).
    pub fn connect_at(
        &self,
        addr: std::net::SocketAddr,
        conversation: i64,
        user: &User,
        v2: bool,
    ) -> (Client, Value) {
        let mut req = format!("ws://{addr}/ws/chat/{conversation}/?token={}", user.token)
            .into_client_request()
            .expect("request");
        if v2 {
            req.headers_mut().append(
                HeaderName::from_static("sec-websocket-protocol"),
                HeaderValue::from_static("chatgate.v2"),
            );
        }
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let (ws, _) = tungstenite::client::client(req, stream).expect("upgrade");
        let mut c = Client { ws };
        c.expect_established();
        if !v2 {
            return (c, Value::Null);
        }
        let state = c.recv_all_json();
        assert_eq!(state["type"], "read_state", "{state}");
        let presence = c.recv_all_json();
        assert_eq!(presence["type"], "presence_state", "{presence}");
        (c, presence)
    }

    /// A completed upgrade (101) on `path`; nothing read yet.
    pub fn open(&self, path: &str, headers: &[(&str, &str)]) -> Client {
        self.try_open(path, headers)
            .unwrap_or_else(|e| panic!("upgrade on {path} failed: {e:?}"))
    }

    /// Upgrade on `path` and assert the first frame is `connection_established`.
    pub fn connect_path(&self, path: &str, headers: &[(&str, &str)]) -> Client {
        let mut c = self.open(path, headers);
        c.expect_established();
        c
    }

    /// `user` joins `conversation` with a query token.
    pub fn connect(&self, conversation: i64, user: &User) -> Client {
        self.connect_path(
            &format!("/ws/chat/{conversation}/?token={}", user.token),
            &[],
        )
    }

    /// A protocol v2 socket of `user` (`query` is appended to the token,
    /// e.g. `&since=5`), after `connection_established`; what follows
    /// (replay, `resumed`, `read_state`) is left unread.
    pub fn open_v2(&self, conversation: i64, user: &User, query: &str) -> Client {
        self.connect_path(
            &format!("/ws/chat/{conversation}/?token={}{query}", user.token),
            &[V2_PROTOCOL],
        )
    }

    /// A protocol v2 socket of `user`, after `connection_established`,
    /// `read_state` and `presence_state`; returns it and the `read_state` receipts.
    pub fn connect_v2_state(&self, conversation: i64, user: &User) -> (Client, Value) {
        let (c, receipts, _) = self.connect_v2_presence(conversation, user);
        (c, receipts)
    }

    /// As [`connect_v2_state`](Self::connect_v2_state), also returning the
    /// `presence_state` frame.
    pub fn connect_v2_presence(&self, conversation: i64, user: &User) -> (Client, Value, Value) {
        let mut c = self.open_v2(conversation, user, "");
        let state = c.recv_all_json();
        assert_eq!(
            state["type"], "read_state",
            "after connection_established: {state}"
        );
        let presence = c.recv_all_json();
        assert_eq!(
            presence["type"], "presence_state",
            "after read_state: {presence}"
        );
        (c, state["receipts"].clone(), presence)
    }

    /// A protocol v2 socket of `user`, ready for live events.
    pub fn connect_v2(&self, conversation: i64, user: &User) -> Client {
        self.connect_v2_state(conversation, user).0
    }

    /// Upgrade on `path`, then assert the server closes with `code`.
    pub fn expect_rejected(&self, path: &str, headers: &[(&str, &str)], code: u16) {
        let mut c = self.open(path, headers);
        c.expect_close(code);
    }

    // ---- raw HTTP -------------------------------------------------------

    /// Sends `request` bytes and returns the response head (up to the blank
    /// line, or whatever arrived before the server closed).
    pub fn raw_request(&self, request: &[u8]) -> String {
        let mut s = self.tcp();
        s.write_all(request).expect("write request");
        read_head(&mut s).0
    }

    /// Status code the gateway answers an upgrade request on `path` with,
    /// after applying header overrides (`None` removes a default header).
    pub fn upgrade_status(&self, path: &str, overrides: &[(&str, Option<&str>)]) -> u16 {
        let head = self.raw_request(upgrade_request(path, overrides).as_bytes());
        status_of(&head)
    }

    /// A raw upgraded socket on `path`: the 101 head is consumed; returns the
    /// socket and any bytes read past the head.
    pub fn raw_upgrade(&self, path: &str) -> (TcpStream, Vec<u8>) {
        let mut s = self.tcp();
        s.write_all(upgrade_request(path, &[]).as_bytes()).unwrap();
        let (head, rest) = read_head(&mut s);
        assert_eq!(status_of(&head), 101, "raw upgrade on {path}: {head}");
        (s, rest)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            if std::thread::panicking() {
                // A failed test: do not risk a second panic in shutdown.
                drop(g);
            } else {
                g.shutdown();
            }
        }
    }
}

/// A blocking WebSocket client (tungstenite) with a 5 s read timeout. It
/// answers WebSocket Pings by itself whenever it reads.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    /// The next message of any kind (pings included); panics on errors.
    pub fn next_message(&mut self) -> Message {
        match self.ws.read() {
            Ok(m) => m,
            Err(e) => panic!("reading from the gateway failed: {e:?}"),
        }
    }

    /// The very next frame must be `connection_established`.
    pub fn expect_established(&mut self) {
        match self.next_message() {
            Message::Text(t) => assert_eq!(
                parse(&t),
                json!({"type": "connection_established", "message": "Connected to chat"}),
                "first frame"
            ),
            other => panic!("first frame must be connection_established, got {other:?}"),
        }
    }

    /// The next JSON text message, skipping `{"type":"ping"}`, presence
    /// frames (`presence_state`, `presence`: see [`recv_all_json`](Self::recv_all_json))
    /// and WebSocket Ping/Pong.
    pub fn recv_json(&mut self) -> Value {
        loop {
            let v = self.recv_all_json();
            if !is_presence(&v) {
                return v;
            }
        }
    }

    /// The next JSON text message, presence frames included (pings skipped).
    pub fn recv_all_json(&mut self) -> Value {
        loop {
            match self.next_message() {
                Message::Text(t) => {
                    let v = parse(&t);
                    if v != json!({"type": "ping"}) {
                        return v;
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a JSON text message, got {other:?}"),
            }
        }
    }

    /// The next message must be exactly `{"type":"error","message":msg}`.
    pub fn expect_error(&mut self, msg: &str) {
        assert_eq!(self.recv_json(), json!({"type": "error", "message": msg}));
    }

    /// The next message must be a `new_message`; returns its `message` object.
    pub fn recv_new_message(&mut self) -> Value {
        let v = self.recv_json();
        assert_eq!(v["type"], "new_message", "expected new_message, got {v}");
        v["message"].clone()
    }

    /// Reads until a close frame arrives; asserts its code. Returns the reason.
    pub fn expect_close(&mut self, code: u16) -> String {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => {
                    assert_eq!(
                        u16::from(f.code),
                        code,
                        "close code (reason {:?})",
                        f.reason
                    );
                    let _ = self.ws.flush(); // send our close reply
                    return f.reason.to_string();
                }
                Ok(Message::Close(None)) => {
                    panic!("expected close {code}, got a close frame without code")
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(Message::Text(t)) if parse(&t) == json!({"type": "ping"}) => {}
                Ok(other) => panic!("expected close {code}, got {other:?}"),
                Err(e) => panic!("expected close {code}, the connection ended without it: {e:?}"),
            }
        }
    }

    /// The next JSON text message (pings skipped) if one arrives within `d`.
    pub fn try_recv_json(&mut self, d: Duration) -> Option<Value> {
        let deadline = Instant::now() + d;
        let got = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(t))
                    if parse(&t) != json!({"type": "ping"}) && !is_presence(&parse(&t)) =>
                {
                    break Some(parse(&t))
                }
                Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("expected a JSON text message, got {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    break None
                }
                Err(e) => panic!("reading from the gateway failed: {e:?}"),
            }
        };
        self.ws
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        got
    }

    /// Asserts nothing but pings and presence frames arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        self.silence(d, true)
    }

    /// Asserts nothing but pings arrives for `d` (presence frames included).
    pub fn expect_quiet(&mut self, d: Duration) {
        self.silence(d, false)
    }

    fn silence(&mut self, d: Duration, skip_presence: bool) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(Message::Text(t)) if parse(&t) == json!({"type": "ping"}) => {}
                Ok(Message::Text(t)) if skip_presence && is_presence(&parse(&t)) => {}
                Ok(other) => panic!("expected silence, got {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("expected silence, the connection failed: {e:?}"),
            }
        }
        self.ws
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
    }

    pub fn send(&mut self, m: Message) {
        self.ws.send(m).expect("send");
    }

    pub fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string());
    }

    pub fn send_text(&mut self, s: &str) {
        self.send(Message::text(s));
    }

    /// `{"type":"chat_message","content":content}`.
    pub fn chat(&mut self, content: &str) {
        self.send_json(json!({"type": "chat_message", "content": content}));
    }

    /// Writes bytes straight to the socket, bypassing tungstenite's framing.
    pub fn send_raw_frame(&mut self, bytes: &[u8]) {
        self.ws.flush().expect("flush");
        self.ws.get_mut().write_all(bytes).expect("raw write");
    }

    pub fn close(&mut self, code: u16) {
        self.ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            }))
            .expect("send close");
    }
}

/// Parses a text frame as JSON; panics with the text when it is not.
/// Queues every text and sends them in one flush (a burst).
pub fn send_burst(c: &mut Client, texts: impl IntoIterator<Item = String>) {
    for t in texts {
        c.ws.write(Message::text(t)).expect("queue a frame");
    }
    c.ws.flush().expect("flush the burst");
}

/// docs/protocol.md §3 (order): `rounds` × (`chat_message` "round i", then `typing`
/// alternating true/false, so that every typing frame is a change of
/// state), sent as one burst.
pub fn send_chat_then_typing(c: &mut Client, rounds: usize) {
    send_burst(
        c,
        (0..rounds).flat_map(|i| {
            [
                json!({"type": "chat_message", "content": format!("round {i}")}).to_string(),
                json!({"type": "typing", "is_typing": i % 2 == 0}).to_string(),
            ]
        }),
    );
}

/// What another user's socket must see of [`send_chat_then_typing`]: each
/// round's `new_message`, then the typing that followed it, never the other
/// way round. Returns the message ids, which must increase.
pub fn expect_chat_then_typing(c: &mut Client, typist: &User, rounds: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let m = c.recv_json();
        assert_eq!(
            m["type"], "new_message",
            "round {i}: expected the message first, got {m}"
        );
        assert_eq!(m["message"]["content"], format!("round {i}"), "round {i}");
        let t = c.recv_json();
        assert_eq!(
            t,
            json!({"type": "typing", "user_id": typist.id, "username": typist.username, "is_typing": i % 2 == 0}),
            "round {i}: the typing that followed the message"
        );
        let id = m["message"]["id"].as_i64().expect("id");
        assert!(ids.last().is_none_or(|&last| id > last), "ids increase");
        ids.push(id);
    }
    ids
}

pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("server sent invalid JSON {text:?}: {e}"))
}

// ---- raw frames -----------------------------------------------------------

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A frame header: FIN, RSV bits (3 bits), opcode, declared payload length, mask key.
pub fn frame_header(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut h = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0xF)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        h.push(m | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(m | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(m | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(k) = mask {
        h.extend_from_slice(&k);
    }
    h
}

/// A complete frame; the payload is masked with `mask` when given.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = frame_header(fin, 0, opcode, payload.len() as u64, mask);
    match mask {
        Some(k) => f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4])),
        None => f.extend_from_slice(payload),
    }
    f
}

/// A masked client frame (the only kind a client may send).
pub fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// Parses one server (unmasked) frame from `buf`: `(fin, opcode, payload, consumed)`.
pub fn parse_server_frame(buf: &[u8]) -> Option<(bool, u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (fin, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x0F);
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Some((fin, opcode, payload, at))
}

// ---- raw HTTP ---------------------------------------------------------------

/// An upgrade request for `path` with the standard headers; `overrides`
/// replace (`Some`) or remove (`None`) a header, or add a new one.
pub fn upgrade_request(path: &str, overrides: &[(&str, Option<&str>)]) -> String {
    let mut headers: Vec<(String, String)> = [
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        if let Some(v) = v {
            headers.push((k.to_string(), v.to_string()));
        }
    }
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Reads up to the end of an HTTP response head (or EOF / timeout). Returns
/// the head and the bytes after it.
pub fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), Vec::new()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The status code of an HTTP response head; 0 when there is none.
pub fn status_of(head: &str) -> u16 {
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Reads until the peer closes the TCP connection (EOF or reset) or
/// `within` passes. Returns whether it closed, and everything read.
pub fn wait_tcp_close(s: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, got);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (false, got)
            }
            Err(_) => return (true, got),
        }
    }
}

// ---- misc -------------------------------------------------------------------

/// Polls `cond` until it holds or `within` passes (for state with no socket
/// to read, such as `shard_stats`).
pub fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `get` until it returns `expected` or `within` passes; the failure
/// shows the last value seen.
pub fn eventually_eq<T: PartialEq + std::fmt::Debug>(
    within: Duration,
    what: &str,
    expected: T,
    mut get: impl FnMut() -> T,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = get();
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}: last {got:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts `ts` is `YYYY-MM-DDTHH:MM:SS(.ffffff)?Z` (microseconds only when
/// not zero) and within a minute of now.
pub fn assert_timestamp(ts: &str) {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let base = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let tail_ok = match b.len() {
        20 => b[19] == b'Z',
        27 => b[19] == b'.' && digits(20..26) && &ts[20..26] != "000000" && b[26] == b'Z',
        _ => false,
    };
    assert!(
        base && tail_ok,
        "timestamp {ts:?} is not YYYY-MM-DDTHH:MM:SS(.ffffff)?Z"
    );
    let t = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
    let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs();
    assert!(skew < 60, "timestamp {ts} is {skew} s away from now");
}

/// Asserts `m` (the `message` of a `new_message`) is exactly what `sender`
/// sending `content` must produce; returns its id.
pub fn assert_new_message(m: &Value, sender: &User, content: &str) -> i64 {
    let id = m["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("id must be an integer: {m}"));
    assert!(id > 0 && id < (1 << 53), "id {id} out of range");
    let ts = m["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("timestamp must be a string: {m}"));
    assert_timestamp(ts);
    assert_eq!(
        *m,
        json!({"id": id, "sender": sender.profile(), "content": content, "timestamp": ts})
    );
    id
}

/// Base64url without padding (for hand-made JWTs).
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Resident set size of this process (the gateway runs in it), bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

// ---- operations: admin listener, client addresses, ports ---------------------

impl TestGateway {
    /// The admin listener's address (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.gateway()
            .admin_addr()
            .expect("the test config enables the admin listener")
    }

    /// A handle that starts the drain (`/readyz` 503, then 1001 after the grace).
    pub fn shutdown_handle(&self) -> chatgate::gateway::ShutdownHandle {
        self.gateway().shutdown_handle()
    }
}

/// `GET path` on an HTTP/1.1 server that answers once and closes (the admin
/// listener): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(head), body.to_owned())
}

/// A TCP connection to `addr` from local address `from` (e.g. 127.0.0.2: a
/// second client IP on loopback), with the harness's timeouts.
pub fn tcp_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    sock.bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind to {from}: {e}"));
    sock.connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect from {from} to {addr}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A WebSocket handshake for `path` over `stream` to `addr` (a gateway or a
/// proxy in front of it) with extra headers; the error when the answer is
/// not 101.
pub fn ws_handshake(
    stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _response)) => Ok(Client { ws }),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("handshake on {path} via {addr} timed out")
        }
    }
}

/// The HTTP status a failed [`ws_handshake`] got (`None`: not an HTTP answer).
pub fn refused_status(e: &tungstenite::Error) -> Option<u16> {
    match e {
        tungstenite::Error::Http(r) => Some(r.status().as_u16()),
        _ => None,
    }
}

/// A port on 127.0.0.1 that nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The path of a conversation's WebSocket with a query token.
pub fn chat_path(conversation: i64, token: &str) -> String {
    format!("/ws/chat/{conversation}/?token={token}")
}

/// Whether a test may skip for a missing tool: never in CI (`CI` set).
pub fn skip_or_fail(tool: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is required in CI ({install})"
    );
    eprintln!("skipped: {tool} not found ({install})");
}

/// `name` on PATH (or in /usr/sbin, /usr/bin), if installed.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `v` is a presence frame (`presence_state` or `presence`, v2).
pub fn is_presence(v: &Value) -> bool {
    v["type"] == "presence" || v["type"] == "presence_state"
}
