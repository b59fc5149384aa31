//! What an online migration must do, decided from what the catalog holds.
//!
//! Owns [`plan`]: the schema's objects (`postgres/schema.rs`) against a
//! [`Catalog`] read from the database, giving the [`Plan`] — the tables to
//! create, the indexes to build (an invalid one, left by an interrupted
//! concurrent build, dropped first), the indexes another session is
//! building right now — and what it says in every form: the statements the
//! migration runs ([`Plan::statements`]), the same as a psql script for a
//! DBA (`--print-sql`, [`Plan::script`]), and the problems `--check`
//! reports ([`Plan::problems`]).
//!
//! Pure code: no database, the catalog comes in as data. Must never: plan a
//! statement that changes an object that exists and is valid, put an index
//! build under the short lock timeout (a concurrent build waits for older
//! transactions, which blocks no writer; cut short it would leave an invalid
//! index), or put a table under no lock timeout.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::super::schema::{Index, Table, INDEXES, TABLES};

/// What the catalog holds under one of the schema's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// A table (or any relation that is not an index: a view, say; the
    /// migration leaves it alone, as `CREATE TABLE IF NOT EXISTS` would).
    Relation,
    /// An index; `valid` is `pg_index.indisvalid`, `building` whether a
    /// session is building it now (`pg_stat_progress_create_index`).
    Index { valid: bool, building: bool },
}

/// The catalog, for the names the schema uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    found: HashMap<String, Found>,
}

impl Catalog {
    /// Records what `name` is.
    pub fn insert(&mut self, name: impl Into<String>, found: Found) {
        self.found.insert(name.into(), found);
    }

    fn get(&self, name: &str) -> Option<Found> {
        self.found.get(name).copied()
    }
}

/// Every name the schema uses (what the catalog is asked about).
pub fn names() -> Vec<&'static str> {
    TABLES
        .iter()
        .map(|t| t.name)
        .chain(INDEXES.iter().map(|i| i.name))
        .collect()
}

/// One thing the migration does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    CreateTable(&'static Table),
    /// Builds the index; `repair`: an invalid one is dropped first.
    BuildIndex {
        index: &'static Index,
        repair: bool,
    },
}

/// Something `chatgate migrate --check` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    MissingTable(&'static str),
    MissingIndex(&'static str),
    /// Left invalid by an interrupted `CREATE INDEX CONCURRENTLY`.
    InvalidIndex(&'static str),
    /// Being built by another session right now (not usable yet).
    IndexBuilding(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingTable(name) => write!(f, "missing table {name}"),
            Problem::MissingIndex(name) => write!(f, "missing index {name}"),
            Problem::InvalidIndex(name) => {
                write!(f, "invalid index {name} (an interrupted concurrent build)")
            }
            Problem::IndexBuilding(name) => {
                write!(f, "index {name} is being built by another session")
            }
        }
    }
}

/// How a statement is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A session setting.
    Setting,
    /// Takes locks that block writers: runs under the short lock timeout and
    /// is tried again, with backoff, when the lock was not granted in time.
    Locking,
    /// A concurrent index build or drop: blocks no writer, waits for older
    /// transactions as long as they last.
    Concurrent,
}

/// One statement of the migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub kind: Kind,
    /// The table or index it creates or drops (`None` for a setting).
    pub object: Option<&'static str>,
}

impl Statement {
    fn setting(sql: String) -> Self {
        Statement {
            sql,
            kind: Kind::Setting,
            object: None,
        }
    }
}

/// What the migration does on the database the catalog was read from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Indexes another session is building: left to it (the migration
    /// waits for it to end and looks again).
    pub building: Vec<&'static Index>,
}

/// The plan for `catalog`: every missing table (in creation order), then
/// every index that is missing or invalid.
pub fn plan(catalog: &Catalog) -> Plan {
    let mut plan = Plan::default();
    for table in &TABLES {
        if catalog.get(table.name).is_none() {
            plan.steps.push(Step::CreateTable(table));
        }
    }
    for index in &INDEXES {
        match catalog.get(index.name) {
            None => plan.steps.push(Step::BuildIndex {
                index,
                repair: false,
            }),
            Some(Found::Index { building: true, .. }) => plan.building.push(index),
            Some(Found::Index { valid: false, .. }) => plan.steps.push(Step::BuildIndex {
                index,
                repair: true,
            }),
            Some(_) => {}
        }
    }
    plan
}

impl Plan {
    /// Nothing to do and nothing in progress: `--check` passes.
    pub fn is_up_to_date(&self) -> bool {
        self.steps.is_empty() && self.building.is_empty()
    }

    /// What `--check` reports, one line each.
    pub fn problems(&self) -> Vec<Problem> {
        let steps = self.steps.iter().map(|step| match step {
            Step::CreateTable(t) => Problem::MissingTable(t.name),
            Step::BuildIndex {
                index,
                repair: false,
            } => Problem::MissingIndex(index.name),
            Step::BuildIndex {
                index,
                repair: true,
            } => Problem::InvalidIndex(index.name),
        });
        let building = self.building.iter().map(|i| Problem::IndexBuilding(i.name));
        steps.chain(building).collect()
    }

    /// The statements, in order, that carry the plan out. Tables run under
    /// `lock_timeout`; index builds under none (see the module header).
    pub fn statements(&self, lock_timeout: Duration) -> Vec<Statement> {
        if self.steps.is_empty() {
            return Vec::new();
        }
        let mut out = vec![Statement::setting("SET statement_timeout = 0".into())];
        let tables: Vec<&Table> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::CreateTable(t) => Some(*t),
                Step::BuildIndex { .. } => None,
            })
            .collect();
        if !tables.is_empty() {
            out.push(Statement::setting(format!(
                "SET lock_timeout = '{}ms'",
                lock_timeout.as_millis().max(1)
            )));
            out.extend(tables.iter().map(|t| Statement {
                sql: t.create.to_string(),
                kind: Kind::Locking,
                object: Some(t.name),
            }));
        }
        let mut indexes = self.steps.iter().filter_map(|s| match s {
            Step::BuildIndex { index, repair } => Some((*index, *repair)),
            Step::CreateTable(_) => None,
        });
        if let Some(first) = indexes.next() {
            out.push(Statement::setting("SET lock_timeout = 0".into()));
            for (index, repair) in std::iter::once(first).chain(indexes) {
                let concurrent = |sql| Statement {
                    sql,
                    kind: Kind::Concurrent,
                    object: Some(index.name),
                };
                if repair {
                    out.push(concurrent(index.drop()));
                }
                out.push(concurrent(index.create()));
            }
        }
        out
    }

    /// The statements as a psql script (`chatgate migrate --print-sql`),
    /// with what a DBA needs to know as comments.
    pub fn script(&self, lock_timeout: Duration) -> String {
        let mut out = String::from(
            "-- chatgate migrate: what `chatgate migrate` would run on this database now.\n",
        );
        for index in &self.building {
            out.push_str(&format!(
                "-- {} is being built by another session: run this again once it has ended.\n",
                index.name
            ));
        }
        if self.steps.is_empty() {
            out.push_str("-- Nothing to do: every table and index is there and valid.\n");
            return out;
        }
        out.push_str(SCRIPT_HELP);
        for statement in self.statements(lock_timeout) {
            if statement.sql.starts_with("DROP INDEX") {
                out.push_str(&format!(
                    "-- {} is INVALID (an interrupted build): dropped, then built again.\n",
                    statement.object.unwrap_or_default()
                ));
            }
            out.push_str(&statement.sql);
            out.push_str(";\n");
        }
        out
    }
}

const SCRIPT_HELP: &str = "\
-- Apply it in autocommit mode (CREATE/DROP INDEX CONCURRENTLY refuse to run
-- inside a transaction, so no -1 / --single-transaction):
--   psql -v ON_ERROR_STOP=1 -f chatgate-migrate.sql \"$DATABASE_URL\"
-- A CREATE TABLE waits at most lock_timeout for its locks (writers queue
-- behind it only that long); if one fails with \"canceling statement due to
-- lock timeout\", run the file again. Index builds block no writer; they
-- wait for transactions older than themselves to end.
";

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(100);

    fn complete() -> Catalog {
        let mut c = Catalog::default();
        for t in &TABLES {
            c.insert(t.name, Found::Relation);
        }
        for i in &INDEXES {
            c.insert(
                i.name,
                Found::Index {
                    valid: true,
                    building: false,
                },
            );
        }
        c
    }

    const PAGING: &str = "chatgate_message_conversation_id_id";

    #[test]
    fn an_empty_database_gets_everything_tables_first() {
        let plan = plan(&Catalog::default());
        assert_eq!(plan.steps.len(), TABLES.len() + INDEXES.len());
        let sql = plan.statements(MS);
        let kinds: Vec<Kind> = sql.iter().map(|s| s.kind).collect();
        assert_eq!(kinds[..2], [Kind::Setting, Kind::Setting]);
        assert_eq!(sql[1].sql, "SET lock_timeout = '100ms'");
        assert!(kinds[2..2 + TABLES.len()]
            .iter()
            .all(|k| *k == Kind::Locking));
        assert_eq!(sql[2 + TABLES.len()].sql, "SET lock_timeout = 0");
        assert!(kinds[3 + TABLES.len()..]
            .iter()
            .all(|k| *k == Kind::Concurrent));
        assert_eq!(sql.len(), 3 + TABLES.len() + INDEXES.len());
        assert!(sql.iter().filter(|s| s.kind == Kind::Concurrent).all(|s| s
            .sql
            .starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS ")));
        assert_eq!(plan.problems().len(), TABLES.len() + INDEXES.len());
        assert!(!plan.is_up_to_date());
    }

    #[test]
    fn a_complete_database_needs_nothing() {
        let plan = plan(&complete());
        assert!(plan.is_up_to_date());
        assert!(plan.statements(MS).is_empty());
        assert!(plan.problems().is_empty());
        assert!(plan.script(MS).contains("Nothing to do"));
    }

    #[test]
    fn a_django_database_gets_chatgates_tables_and_indexes_only() {
        let mut c = complete();
        let ours: Vec<&str> = names()
            .into_iter()
            .filter(|n| n.starts_with("chatgate_"))
            .collect();
        c.found.retain(|name, _| !name.starts_with("chatgate_"));
        let plan = plan(&c);
        let planned: Vec<&str> = plan
            .statements(MS)
            .iter()
            .filter_map(|s| s.object)
            .collect();
        let mut sorted = planned.clone();
        sorted.sort_unstable();
        let mut expected = ours.clone();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
        // No setting is left out, no table waits without a timeout.
        assert!(plan.statements(MS)[1]
            .sql
            .starts_with("SET lock_timeout = '"));
    }

    #[test]
    fn an_invalid_index_is_dropped_then_built_again() {
        let mut c = complete();
        c.insert(
            PAGING,
            Found::Index {
                valid: false,
                building: false,
            },
        );
        let plan = plan(&c);
        assert_eq!(plan.problems(), [Problem::InvalidIndex(PAGING)]);
        let sql: Vec<String> = plan.statements(MS).into_iter().map(|s| s.sql).collect();
        assert_eq!(
            sql,
            [
                "SET statement_timeout = 0".to_string(),
                "SET lock_timeout = 0".into(),
                format!("DROP INDEX CONCURRENTLY IF EXISTS {PAGING}"),
                format!(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {PAGING} \
                     ON chatapp_message USING btree (conversation_id, id)"
                ),
            ]
        );
        let script = plan.script(MS);
        assert!(script.contains("is INVALID"), "{script}");
        assert!(script.ends_with("(conversation_id, id);\n"), "{script}");
    }

    #[test]
    fn an_index_another_session_builds_is_waited_for_not_dropped() {
        let mut c = complete();
        c.insert(
            PAGING,
            Found::Index {
                valid: false,
                building: true,
            },
        );
        let plan = plan(&c);
        assert!(plan.steps.is_empty() && !plan.is_up_to_date());
        assert_eq!(plan.problems(), [Problem::IndexBuilding(PAGING)]);
        assert!(plan.statements(MS).is_empty());
        assert!(plan.script(MS).contains("being built by another session"));
    }

    #[test]
    fn a_name_taken_by_another_kind_of_relation_is_left_alone() {
        let mut c = complete();
        c.insert(PAGING, Found::Relation);
        assert!(plan(&c).is_up_to_date());
    }

    #[test]
    fn problems_read_well() {
        assert_eq!(
            Problem::InvalidIndex("x").to_string(),
            "invalid index x (an interrupted concurrent build)"
        );
        assert_eq!(Problem::MissingTable("t").to_string(), "missing table t");
    }
}
