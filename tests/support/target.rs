//! Where a scenario runs: the io driver and the store ([`Target`], the
//! argument of the `on_every_store!` scenarios).

use chatgate::IoDriver;

use super::pg_support;

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
