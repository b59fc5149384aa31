//! `chatgate migrate` online on a real PostgreSQL (`store/postgres/migrate.rs`,
//! deploy/OPERATIONS.md "Adopting chatgate on an existing database"):
//!
//! - on a Django database whose `chatapp_message` holds many rows
//!   (`CHATGATE_MIGRATE_ROWS`, default 200,000; `loadtest/migrate.sh` runs
//!   it with 2,000,000), with writers inserting through a gateway and
//!   through plain SQL the whole time, the worst write latency during the
//!   migration stays under 200 ms and the index is valid afterwards;
//! - a table whose locks are held by a long transaction waits at most the
//!   lock timeout each time (writers are not held up behind it) and is
//!   tried again until it gets them;
//! - a concurrent build cancelled mid-way (`pg_cancel_backend`) leaves an
//!   invalid index that `--check` reports and the next migrate rebuilds;
//! - `--print-sql` applied with `psql` gives the same schema as `migrate`
//!   (catalog dumps compared), on an empty and on a Django database;
//!   `--check` fails before and passes after; a second migrate runs nothing.
//!
//! Postgres unreachable: the tests fail under `CI`, skip otherwise.

mod pg_support;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatgate::store::postgres::{Admin, MigrateError, MigrateOptions};
use pg_support::{gateway_config, PgGateway, Schema, TestDb};

const PAGING_INDEX: &str = "chatgate_message_conversation_id_id";
/// The bound the issue sets on any write during a migration.
const WORST_WRITE: Duration = Duration::from_millis(200);
/// Well under the 1.5 s an open transaction holds its lock in
/// `a_table_waits_at_most_the_lock_timeout_and_is_tried_again`.
const LOCK_WAIT_BOUND: Duration = Duration::from_millis(1000);

/// `chatgate migrate <args>` against `url`.
fn chatgate_migrate(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatgate"))
        .env_clear()
        .arg("migrate")
        .args(args)
        .env("DATABASE_URL", url)
        .env("CHATGATE_LOG", "warn")
        .output()
        .expect("run chatgate migrate")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `chatgate migrate --check`: its exit code and what it printed.
fn check(db: &TestDb) -> (i32, String) {
    let out = chatgate_migrate(&db.url, &["--check"]);
    (out.status.code().unwrap_or(-1), stdout(&out))
}

fn print_sql(db: &TestDb) -> String {
    let out = chatgate_migrate(&db.url, &["--print-sql"]);
    assert!(out.status.success(), "{out:?}");
    stdout(&out)
}

/// Applies `script` with psql, the way deploy/OPERATIONS.md tells a DBA to.
fn psql(db: &TestDb, script: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("chatgate-migrate.sql");
    std::fs::write(&file, script).expect("write the script");
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&file)
        .arg(&db.url)
        .output()
        .expect("run psql (postgresql-client)");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn print_sql_applied_with_psql_gives_what_migrate_gives_and_check_agrees() {
    for (schema, name) in [(Schema::Empty, "empty"), (Schema::Django, "django")] {
        let Some(by_dba) = TestDb::create(&format!("sql_dba_{name}"), schema) else {
            return;
        };
        let by_migrate = TestDb::create(&format!("sql_mig_{name}"), schema).unwrap();

        let (code, problems) = check(&by_dba);
        assert_eq!(code, 3, "--check before: {problems}");
        assert!(
            problems.contains(&format!("missing index {PAGING_INDEX}")),
            "{problems}"
        );
        let script = print_sql(&by_dba);
        assert!(script.contains("SET lock_timeout = '100ms';"), "{script}");
        assert!(
            !script.contains("CREATE INDEX IF"),
            "only CONCURRENTLY: {script}"
        );
        if schema == Schema::Django {
            assert!(
                !script.contains("TABLE IF NOT EXISTS auth_user"),
                "{script}"
            );
            assert_eq!(script.matches("CREATE TABLE IF").count(), 3, "{script}");
        }
        assert_eq!(problems.lines().count(), script.matches(";\n").count() - 3);
        psql(&by_dba, &script);
        assert_eq!(
            check(&by_dba),
            (0, "the Postgres database is up to date\n".into())
        );
        assert!(print_sql(&by_dba).contains("Nothing to do"));

        let out = chatgate_migrate(&by_migrate.url, &[]);
        assert!(out.status.success(), "{out:?}");
        let again = chatgate_migrate(&by_migrate.url, &[]);
        assert!(stdout(&again).contains("nothing to do"), "{again:?}");

        let (dba, migrated) = (by_dba.describe_schema(), by_migrate.describe_schema());
        assert!(dba.len() > 40, "{dba:#?}");
        assert_eq!(dba, migrated, "{name}: psql of --print-sql vs migrate");
        assert!(migrated.iter().all(|l| !l.contains("valid=false")));
    }
}

#[test]
fn check_and_print_sql_need_postgres() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--check", "--print-sql"] {
        let out = Command::new(env!("CARGO_BIN_EXE_chatgate"))
            .env_clear()
            .args(["migrate", flag, "--database"])
            .arg(dir.path().join("x.db"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{out:?}");
    }
}

/// Holds a transaction that inserted into `chatapp_message` (so it holds
/// the lock every writer takes) until released.
struct OpenWriter {
    admin: Admin,
}

impl OpenWriter {
    fn begin(db: &TestDb, conversation: i64, sender: i64) -> OpenWriter {
        let admin = Admin::connect(&db.url).expect("connect");
        admin
            .block_on(admin.client().batch_execute(&format!(
                "BEGIN; INSERT INTO chatapp_message (content, \"timestamp\", conversation_id, \
                 sender_id) VALUES ('open', now(), {conversation}, {sender})"
            )))
            .expect("open a writing transaction");
        OpenWriter { admin }
    }

    fn end(self) {
        self.admin
            .block_on(self.admin.client().batch_execute("ROLLBACK"))
            .expect("end it");
    }
}

#[test]
fn a_table_waits_at_most_the_lock_timeout_and_is_tried_again() {
    let Some(db) = TestDb::create("mig_lock_timeout", Schema::Django) else {
        return;
    };
    let (a, b) = (db.user("ann"), db.user("bob"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let open = OpenWriter::begin(&db, conv, a);
    let writer = SqlWriter::start(&db, conv, a);
    let url = db.url.clone();
    let migration = thread::spawn(move || {
        let options = MigrateOptions {
            lock_timeout: Duration::from_millis(50),
            ..MigrateOptions::default()
        };
        let started = Instant::now();
        let outcome = Admin::connect(&url).unwrap().migrate_with(&options);
        (outcome, started.elapsed())
    });
    // The first chatgate_ table references chatapp_message: it cannot have
    // its lock while the open transaction runs, and retries meanwhile.
    thread::sleep(Duration::from_millis(1500));
    assert!(!migration.is_finished());
    open.end();
    let (outcome, took) = migration.join().unwrap();
    let report = outcome.expect("migrates once the lock is free");
    let writes = writer.stop();
    assert!(report.retries >= 3, "{report:?}");
    assert_eq!(db.index_valid(PAGING_INDEX), Some(true));
    let worst = writes.worst_between(Instant::now() - took, Instant::now());
    eprintln!(
        "lock timeout 50 ms: {} retries over {took:?}; worst of {} SQL writes meanwhile: {worst:?}",
        report.retries,
        writes.len()
    );
    // A writer queued behind the migrate's lock request waits at most the
    // lock timeout plus its own commit; held for the open transaction
    // instead, it would wait the 1.5 s above. The bound is that line, not
    // a latency target (a loaded CI machine measured 243 ms here; the
    // figures are loadtest/migrate.sh's).
    assert!(worst < LOCK_WAIT_BOUND, "a writer waited {worst:?}");

    // Bounded: a lock that never comes free is given up.
    db.execute_batch("DROP TABLE chatgate_idempotency, chatgate_reaction");
    let open = OpenWriter::begin(&db, conv, a);
    let options = MigrateOptions {
        lock_timeout: Duration::from_millis(20),
        attempts: 3,
        ..MigrateOptions::default()
    };
    let err = Admin::connect(&db.url)
        .unwrap()
        .migrate_with(&options)
        .expect_err("gives up");
    assert!(
        matches!(err, MigrateError::LockTimeout { attempts: 3, .. }),
        "{err}"
    );
    open.end();
}

#[test]
fn a_cancelled_concurrent_build_is_reported_and_repaired_by_the_next_migrate() {
    let Some(db) = TestDb::create("mig_cancelled", Schema::Django) else {
        return;
    };
    let (a, b) = (db.user("ann"), db.user("bob"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    db.admin().migrate().unwrap();
    db.execute_batch(&format!("DROP INDEX {PAGING_INDEX}"));
    // A writer's open transaction keeps the build waiting (for writers
    // before build), when the index is already in the catalog, invalid.
    let open = OpenWriter::begin(&db, conv, a);
    let url = db.url.clone();
    let migration = thread::spawn(move || {
        Admin::connect(&url)
            .unwrap()
            .migrate_with(&MigrateOptions::default())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let pid = db.scalar(
            "SELECT coalesce(max(pid), 0)::bigint FROM pg_stat_progress_create_index \
             WHERE index_relid = to_regclass($1)",
            &[&PAGING_INDEX],
        );
        if pid != 0 {
            break pid;
        }
        assert!(Instant::now() < deadline, "the build never started");
        thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        db.scalar(
            "SELECT pg_cancel_backend($1::int)::int::bigint",
            &[&(pid as i32)]
        ),
        1
    );
    let err = migration
        .join()
        .unwrap()
        .expect_err("the build was cancelled");
    assert!(matches!(err, MigrateError::IndexBuild { .. }), "{err}");
    open.end();
    assert_eq!(db.index_valid(PAGING_INDEX), Some(false), "left invalid");

    let (code, problems) = check(&db);
    assert_eq!(
        (code, problems.as_str()),
        (
            3,
            "invalid index chatgate_message_conversation_id_id (an interrupted concurrent build)\n"
        )
    );
    let script = print_sql(&db);
    assert!(
        script.contains(&format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {PAGING_INDEX};"
        )),
        "{script}"
    );
    let report = db
        .admin()
        .migrate_with(&MigrateOptions::default())
        .expect("repairs");
    assert_eq!(report.executed.len(), 4, "{report:?}");
    assert_eq!(db.index_valid(PAGING_INDEX), Some(true));
    assert_eq!(check(&db).0, 0);
    let again = db.admin().migrate_with(&MigrateOptions::default()).unwrap();
    assert!(again.executed.is_empty(), "idempotent: {again:?}");
}

// ---- the online migration under writers ----------------------------------

/// Rows the big test loads (`CHATGATE_MIGRATE_ROWS`).
fn rows() -> i64 {
    std::env::var("CHATGATE_MIGRATE_ROWS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(200_000)
}

/// Writes with their start and duration.
#[derive(Default)]
struct Writes(Vec<(Instant, Duration)>);

impl Writes {
    /// The longest write that overlapped `[from, to]`.
    fn worst_between(&self, from: Instant, to: Instant) -> Duration {
        self.0
            .iter()
            .filter(|(at, took)| *at <= to && *at + *took >= from)
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    }

    fn count_between(&self, from: Instant, to: Instant) -> usize {
        self.0
            .iter()
            .filter(|(at, took)| *at <= to && *at + *took >= from)
            .count()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A thread writing like the Django app: a message, a login, a new
/// conversation, over and over, one autocommit statement at a time.
struct SqlWriter {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Writes>,
}

impl SqlWriter {
    fn start(db: &TestDb, conversation: i64, user: i64) -> SqlWriter {
        let admin = Admin::connect(&db.url).expect("writer connects");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let client = admin.client();
            let statements = [
                format!(
                    "INSERT INTO chatapp_message (content, \"timestamp\", conversation_id, \
                     sender_id) VALUES ('from django', now(), {conversation}, {user})"
                ),
                format!("UPDATE auth_user SET last_login = now() WHERE id = {user}"),
                "INSERT INTO chatapp_conversation (created_at, updated_at) VALUES (now(), now())"
                    .to_string(),
            ];
            let mut writes = Writes::default();
            let mut n = 0;
            while !stopped.load(Ordering::Relaxed) {
                let at = Instant::now();
                admin
                    .block_on(client.batch_execute(&statements[n % statements.len()]))
                    .expect("a Django write");
                writes.0.push((at, at.elapsed()));
                n += 1;
                thread::sleep(Duration::from_millis(2));
            }
            writes
        });
        SqlWriter { stop, thread }
    }

    fn stop(self) -> Writes {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("writer thread")
    }
}

/// A thread chatting through the gateway: each message is timed from the
/// send to its `new_message` (committed, then broadcast).
struct GatewayWriter {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Writes>,
}

impl GatewayWriter {
    fn start(gateway: &PgGateway, conversation: i64, user: i64) -> GatewayWriter {
        let mut client = gateway.connect(conversation, user);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut writes = Writes::default();
            let mut n = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let at = Instant::now();
                client.send_json(serde_json::json!({
                    "type": "chat_message",
                    "content": format!("through the gateway {n}")
                }));
                let m = client.recv_new_message();
                writes.0.push((at, at.elapsed()));
                assert_eq!(m["content"], format!("through the gateway {n}"));
                n += 1;
                thread::sleep(Duration::from_millis(2));
            }
            writes
        });
        GatewayWriter { stop, thread }
    }

    fn stop(self) -> Writes {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("gateway writer thread")
    }
}

/// Loads `rows` messages into a Django database, spread over 1,000
/// conversations and 100 senders (foreign-key triggers off for the load,
/// as a restore would), then vacuums and analyzes.
fn load(db: &TestDb, rows: i64) -> Duration {
    let started = Instant::now();
    db.execute_batch(&format!(
        "SET session_replication_role = replica;
         INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                                is_staff, is_active, date_joined)
             SELECT '!', false, 'bulk' || g, '', '', '', false, true, now()
             FROM generate_series(1, 100) g;
         INSERT INTO chatapp_conversation (created_at, updated_at)
             SELECT now(), now() FROM generate_series(1, 1000);
         INSERT INTO chatapp_message (content, \"timestamp\", conversation_id, sender_id)
             SELECT 'bulk message number ' || g, now() - (g || ' seconds')::interval,
                    1 + g % 1000, 1 + g % 100
             FROM generate_series(1, {rows}) g;
         RESET session_replication_role;"
    ));
    db.execute_batch("VACUUM ANALYZE chatapp_message");
    started.elapsed()
}

#[test]
fn migrate_online_under_writers_keeps_every_write_under_200_ms() {
    let Some(db) = TestDb::create("mig_online", Schema::Django) else {
        return;
    };
    let rows = rows();
    let loaded = load(&db, rows);
    let (a, b) = (db.user("ann"), db.user("bob"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let size = db.scalar(
        "SELECT pg_total_relation_size('chatapp_message')::bigint",
        &[],
    );
    let gateway = PgGateway::start(gateway_config(&db.url));
    let chat = GatewayWriter::start(&gateway, conv, a);
    let django = SqlWriter::start(&db, conv, b);
    thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let report = Admin::connect(&db.url)
        .unwrap()
        .migrate_with(&MigrateOptions::default())
        .expect("migrates online");
    let ended = Instant::now();
    thread::sleep(Duration::from_millis(300));
    let (chat, django) = (chat.stop(), django.stop());

    let took = ended - started;
    let worst_chat = chat.worst_between(started, ended);
    let worst_sql = django.worst_between(started, ended);
    eprintln!(
        "online migrate: {rows} rows ({} MiB with indexes, loaded in {loaded:?}): migrate took \
         {took:?} ({} statements, {} retries); during it {} gateway messages (worst \
         {worst_chat:?}) and {} SQL writes (worst {worst_sql:?})",
        size >> 20,
        report.executed.len(),
        report.retries,
        chat.count_between(started, ended),
        django.count_between(started, ended),
    );
    for (what, writes) in [("gateway", &chat), ("SQL", &django)] {
        for (at, took) in writes.0.iter().filter(|(_, t)| *t > WORST_WRITE / 4) {
            let at = at.saturating_duration_since(started);
            eprintln!("  slow {what} write: {took:?}, {at:?} after the migrate started");
        }
    }
    assert_eq!(db.index_valid(PAGING_INDEX), Some(true));
    assert!(chat.count_between(started, ended) > 0 && django.count_between(started, ended) > 0);
    assert!(
        worst_chat < WORST_WRITE,
        "a gateway message took {worst_chat:?}"
    );
    assert!(worst_sql < WORST_WRITE, "a SQL write took {worst_sql:?}");
    assert_eq!(check(&db).0, 0);
    // Every message the gateway confirmed is stored.
    let through_gateway = db.scalar(
        "SELECT count(*) FROM chatapp_message WHERE content LIKE 'through the gateway %'",
        &[],
    );
    assert_eq!(through_gateway as usize, chat.len());
}

/// The first stderr line of a gateway on `db` that contains `wanted`
/// (and every line before it); the gateway is killed afterwards.
fn gateway_log_until(db: &TestDb, wanted: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatgate"))
        .env_clear()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--shards",
            "1",
        ])
        .args(["--jwt-secret", "log-test", "--log-format", "text"])
        .env("DATABASE_URL", &db.url)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chatgate");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(wanted);
                lines.push(line);
                if found {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no log line with {wanted:?} within 20 s: {lines:#?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn a_gateway_on_postgres_logs_once_what_check_would_report() {
    let Some(db) = TestDb::create("mig_start_log", Schema::Django) else {
        return;
    };
    let lines = gateway_log_until(&db, "would fail");
    let line = lines.last().unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("missing index {PAGING_INDEX}"))
            && line.contains("missing table chatgate_reaction")
            && line.contains("run `chatgate migrate`"),
        "{line}"
    );
    assert_eq!(lines.iter().filter(|l| l.contains("would fail")).count(), 1);
    db.admin().migrate().unwrap();
    let lines = gateway_log_until(&db, "schema up to date");
    assert!(
        lines.iter().all(|l| !l.contains("would fail")),
        "{lines:#?}"
    );
}
