//! Protocol v2's stored reads through the real store (request channel,
//! worker, SQL), on the embedded SQLite store and, when reachable, on
//! Postgres (`CHATGATE_BENCH_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; a scratch database is
//! created and dropped):
//!
//! - `history_page/<rows>`: one page of 50 in a conversation of 100 and of
//!   1,000,000 messages (newest page, and a page from the middle): paging
//!   uses the `(conversation_id, id)` index, so both should cost the same.
//! - `replay_1000`: a resume that missed 1,000 messages (what a socket
//!   waits for before `resumed`).
//!
//! `cargo bench --bench v2_store` (add `-- --quick` for a fast run).

use std::path::Path;
use std::sync::Arc;

use chatgate::store::requests::V2Request;
use chatgate::store::{self, StoreHandle, StoreWorker};
use chatgate::StoreConfig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SMALL: i64 = 100;
const BIG: i64 = 1_000_000;

/// A store with two conversations of users 1 and 2, of `SMALL` and `BIG`
/// messages: `(conversation id, last message id)` each.
struct Fixture {
    store: StoreHandle,
    _worker: StoreWorker,
    small: (i64, i64),
    big: (i64, i64),
    _side: tokio::runtime::Runtime,
    _dir: Option<tempfile::TempDir>,
}

fn sink() -> store::CommitSink {
    Arc::new(|_, _| {})
}

fn side() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Fills a conversation with `n` messages in one statement; returns its
/// first and last message id.
const FILL_SQLITE: &str =
    "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2) \
    INSERT INTO chatapp_message (content, timestamp, conversation_id, sender_id) \
    SELECT 'message ' || i, '2026-01-01 00:00:00.000000', ?1, 1 + (i % 2) FROM s";

fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let conn = store::sqlite::open(&path).unwrap();
    store::sqlite::migrate(&conn).unwrap();
    drop(conn);
    let admin = store::sqlite::Admin::open(&path).unwrap();
    let a = admin.create_user("alice", "", "").unwrap();
    let b = admin.create_user("bob", "", "").unwrap();
    let mut convs = Vec::new();
    for n in [SMALL, BIG] {
        let conv = admin.create_conversation(&[a, b]).unwrap();
        admin.connection().execute(FILL_SQLITE, [conv, n]).unwrap();
        let last: i64 = admin
            .connection()
            .query_row(
                "SELECT max(id) FROM chatapp_message WHERE conversation_id = ?1",
                [conv],
                |r| r.get(0),
            )
            .unwrap();
        convs.push((conv, last));
    }
    drop(admin);
    let (store, worker) = store::sqlite::start(Path::new(&path), 512, sink()).unwrap();
    Fixture {
        store,
        _worker: worker,
        small: convs[0],
        big: convs[1],
        _side: side(),
        _dir: Some(dir),
    }
}

fn postgres_fixture() -> Option<Fixture> {
    let server = std::env::var("CHATGATE_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let side = side();
    let db = format!("chatgate_bench_{}", std::process::id());
    let url = side.block_on(async {
        let (client, conn) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .ok()?;
        Some(format!("{}/{db}", server.rsplit_once('/').unwrap().0))
    });
    let Some(url) = url else {
        eprintln!("Postgres unreachable at {server}: Postgres benches skipped");
        return None;
    };
    store::postgres::migrate_blocking(&url).unwrap();
    let (small, big) = side.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        c.batch_execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) \
             VALUES ('!', false, 'alice', '', '', '', false, true, now()), ('!', false, 'bob', '', '', '', false, true, now())",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        for n in [SMALL, BIG] {
            let conv: i64 = c
                .query_one("INSERT INTO chatapp_conversation (created_at, updated_at) VALUES (now(), now()) RETURNING id", &[])
                .await
                .unwrap()
                .get(0);
            c.execute(
                "INSERT INTO chatapp_message (content, timestamp, conversation_id, sender_id) \
                 SELECT 'message ' || i, now(), $1, 1 + (i % 2) FROM generate_series(1, $2::bigint) i",
                &[&conv, &n],
            )
            .await
            .unwrap();
            let row = c
                .query_one("SELECT max(id) FROM chatapp_message WHERE conversation_id = $1", &[&conv])
                .await
                .unwrap();
            out.push((conv, row.get::<_, i64>(0)));
        }
        c.batch_execute("ANALYZE").await.unwrap();
        (out[0], out[1])
    });
    let cfg = StoreConfig::Postgres { url, pool_size: 4 };
    let (store, worker) = store::start(
        &cfg,
        512,
        std::time::Duration::from_secs(5),
        sink(),
        side.handle(),
    )
    .unwrap();
    Some(Fixture {
        store,
        _worker: worker,
        small,
        big,
        _side: side,
        _dir: None,
    })
}

fn history(
    rt: &tokio::runtime::Runtime,
    store: &StoreHandle,
    conv: i64,
    before: Option<i64>,
) -> usize {
    rt.block_on(store.v2(|reply| V2Request::History {
        conversation_id: conv,
        user_id: 2,
        before,
        limit: 50,
        reply,
    }))
    .unwrap()
    .items
    .len()
}

fn replay(rt: &tokio::runtime::Runtime, store: &StoreHandle, conv: i64, since: i64) -> usize {
    rt.block_on(store.v2(|reply| V2Request::Replay {
        conversation_id: conv,
        user_id: 2,
        since,
        max: 1000,
        reply,
    }))
    .unwrap()
    .items
    .len()
}

fn bench_store(c: &mut Criterion, name: &str, f: &Fixture) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group(format!("{name}/history_page"));
    for (rows, (conv, last)) in [(SMALL, f.small), (BIG, f.big)] {
        g.bench_with_input(BenchmarkId::new("newest", rows), &conv, |b, &conv| {
            b.iter(|| assert_eq!(history(&rt, &f.store, conv, None), 50))
        });
        // 50 older messages exist below the middle of either conversation.
        let middle = last - rows / 2 + 1;
        g.bench_with_input(BenchmarkId::new("middle", rows), &conv, |b, &conv| {
            b.iter(|| assert_eq!(history(&rt, &f.store, conv, Some(middle)), 50))
        });
    }
    g.finish();
    let (conv, last) = f.big;
    c.bench_function(&format!("{name}/replay_1000_missed"), |b| {
        b.iter(|| assert_eq!(replay(&rt, &f.store, conv, last - 1000), 1000))
    });
}

fn benches(c: &mut Criterion) {
    let sqlite = sqlite_fixture();
    bench_store(c, "sqlite", &sqlite);
    if let Some(pg) = postgres_fixture() {
        bench_store(c, "postgres", &pg);
        drop_scratch(pg);
    }
}

/// Stops the Postgres store and drops its scratch database.
fn drop_scratch(pg: Fixture) {
    let server = std::env::var("CHATGATE_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    drop(pg);
    let rt = side();
    rt.block_on(async {
        if let Ok((c, conn)) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            let db = format!("chatgate_bench_{}", std::process::id());
            let _ = c
                .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await;
        }
    });
}

criterion_group!(v2, benches);
criterion_main!(v2);
