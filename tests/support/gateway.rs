//! [`TestGateway`]: a real gateway on an ephemeral port and its own
//! temporary database, started, restarted, shut down (on drop too).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatgate::store::sqlite::Admin;
use chatgate::{Config, Gateway, IoDriver, ShardStats, StoreConfig};

use super::pg_support::{Schema, TestDb};
use super::{eventually_eq, http_get, StoreKind, Target, SECRET};

/// The database of a [`TestGateway`], with a connection of the test's own.
pub(super) enum Db {
    Sqlite(Admin),
    /// Dropped (with `DROP DATABASE`) when the gateway is.
    Postgres(TestDb),
}

/// A running gateway on its own temporary database.
pub struct TestGateway {
    pub(super) gateway: Option<Gateway>,
    pub config: Config,
    /// The SQLite file (on Postgres: a path in the temporary directory that
    /// nothing uses).
    pub db_path: PathBuf,
    pub(super) store: StoreKind,
    /// Declared after `gateway`: the database outlives the gateway.
    pub(super) database: Db,
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

    /// Like [`TestGateway::start_with`], with the SQLite file in `dir`
    /// (a directory the test prepared, e.g. a small filesystem it mounted).
    pub fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> Self {
        let db_path = dir.path().join("chat.sqlite3");
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

    pub(super) fn gateway(&self) -> &Gateway {
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

/// Operations: the admin listener and the drain.
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
