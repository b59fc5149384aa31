//! The Postgres store when the database is away: unreachable at start, lost
//! mid-run (connections closed), or black-holed (connections open, nothing
//! answers). A TCP proxy between the store and the real server is cut,
//! stalled and restored; assertions on rows go to the server directly.
//!
//! Each test creates its own database (see `pg_support`); without a
//! reachable Postgres the tests skip with a printed reason, or fail in CI.

mod pg_support;

use std::time::{Duration, Instant};

use chatgate::store::{InsertOutcome, StoreError};
use pg_support::proxy::{Mode, Proxy};
use pg_support::{
    gateway_config, insert, take, wait_for_outcomes, PgGateway, Read, Schema, TestDb, TestStore,
};
use serde_json::json;

/// The store timeout of these tests.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Scheduling slack on top of a timeout.
const SLACK: Duration = Duration::from_millis(700);

fn results(calls: Vec<(usize, Vec<InsertOutcome>)>) -> Vec<Result<i64, StoreError>> {
    calls
        .into_iter()
        .flat_map(|(_, o)| o)
        .map(|o| o.result.map(|m| m.id))
        .collect()
}

/// A gateway (store timeout [`TIMEOUT`]) on a fresh database reached
/// through a TCP proxy, users `a` and `b` in conversation `conv`. Fields
/// drop in order: the gateway stops before the database is dropped.
struct ProxiedGateway {
    gw: PgGateway,
    proxy: Proxy,
    db: TestDb,
    conv: i64,
    a: i64,
    b: i64,
}

impl ProxiedGateway {
    fn start(test: &str) -> Option<ProxiedGateway> {
        let db = TestDb::create(test, Schema::Migrated)?;
        let (a, b) = (db.user("a"), db.user("b"));
        let conv = db.admin().create_conversation(&[a, b]).unwrap();
        let proxy = Proxy::start(pg_support::server_addr(), Mode::Open);
        let mut config = gateway_config(&db.url_via(proxy.addr()));
        config.timeouts.store = TIMEOUT;
        let gw = PgGateway::start(config);
        Some(ProxiedGateway {
            gw,
            proxy,
            db,
            conv,
            a,
            b,
        })
    }
}

/// Queues one insert and returns its result and how long it took.
fn send_one(
    store: &TestStore,
    conv: i64,
    sender: i64,
    content: &str,
) -> (Result<i64, StoreError>, Duration) {
    let started = Instant::now();
    store.queue(vec![insert(conv, sender, content, 0)]);
    wait_for_outcomes(&store.delivered, 1, Duration::from_secs(15));
    let took = started.elapsed();
    let mut r = results(take(&store.delivered));
    assert_eq!(r.len(), 1);
    (r.remove(0), took)
}

#[test]
fn store_starts_without_postgres_and_becomes_ready_when_it_appears() {
    let Some(db) = TestDb::create("unreachable_at_start", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let proxy = Proxy::start(pg_support::server_addr(), Mode::Cut);

    let store = TestStore::start(&db.url_via(proxy.addr()), 64, TIMEOUT);
    assert!(!store.handle().is_ready());
    let started = Instant::now();
    let lookup = store
        .client_rt
        .block_on(store.handle().connect_info(a, conv));
    assert!(lookup.is_err(), "{lookup:?}");
    assert!(started.elapsed() < TIMEOUT + SLACK);
    let (sent, took) = send_one(&store, conv, a, "nobody home");
    assert!(sent.is_err() && took < TIMEOUT + SLACK, "{sent:?} {took:?}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!store.handle().is_ready(), "the probe keeps failing");

    proxy.open();
    assert!(
        store.wait_ready(Duration::from_secs(5)),
        "the probe finds Postgres within seconds"
    );
    let info = store
        .client_rt
        .block_on(store.handle().connect_info(a, conv))
        .expect("connect lookups work now");
    assert!(info.is_participant);
    let (sent, _) = send_one(&store, conv, a, "hello");
    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(db.messages(), 1);
}

#[test]
fn lost_postgres_fails_the_batch_keeps_nothing_and_recovers_without_restart() {
    let Some(db) = TestDb::create("lost_mid_run", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let proxy = Proxy::start(pg_support::server_addr(), Mode::Open);
    let store = TestStore::start(&db.url_via(proxy.addr()), 64, TIMEOUT);
    let (first, _) = send_one(&store, conv, a, "before");
    let first = first.expect("stored while Postgres is there");
    assert!(store.handle().is_ready());

    proxy.cut();
    let (lost, took) = send_one(&store, conv, a, "lost");
    assert!(lost.is_err(), "{lost:?}");
    assert!(took < TIMEOUT + SLACK, "{took:?}");
    assert!(!store.handle().is_ready());

    proxy.open();
    let (after, _) = send_one(&store, conv, a, "after");
    let after = after.expect("the next message goes through without a restart");
    assert!(after > first);
    assert_eq!(db.messages(), 2, "nothing of the failed batch was kept");
    assert_eq!(db.unread(conv, b), 2);
    assert!(store.wait_ready(Duration::from_secs(3)));
}

#[test]
fn stalled_postgres_fails_within_the_store_timeout_and_keeps_nothing() {
    let Some(db) = TestDb::create("stalled", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let proxy = Proxy::start(pg_support::server_addr(), Mode::Open);
    let store = TestStore::start(&db.url_via(proxy.addr()), 64, TIMEOUT);
    let (warm, _) = send_one(&store, conv, a, "before");
    warm.expect("stored while Postgres answers");

    proxy.stall();
    // Two senders, the second while the first's batch hangs: each hears
    // back within the store timeout of its own send.
    let started = Instant::now();
    store.queue(vec![insert(conv, a, "stuck 1", 0)]);
    std::thread::sleep(Duration::from_millis(400));
    let second_sent = Instant::now();
    store.queue(vec![insert(conv, b, "stuck 2", 0)]);
    wait_for_outcomes(&store.delivered, 1, TIMEOUT + SLACK);
    assert!(started.elapsed() < TIMEOUT + SLACK);
    wait_for_outcomes(&store.delivered, 2, TIMEOUT + SLACK);
    assert!(second_sent.elapsed() < TIMEOUT + SLACK);
    assert_eq!(
        results(take(&store.delivered)),
        vec![Err(StoreError::Timeout), Err(StoreError::Timeout)]
    );
    assert!(!store.handle().is_ready());

    proxy.open();
    let (after, _) = send_one(&store, conv, a, "after");
    after.expect("the next message goes through without a restart");
    std::thread::sleep(Duration::from_millis(300));
    let contents = db.contents();
    assert_eq!(contents, ["before", "after"], "no partial rows");
    assert_eq!(db.unread(conv, b), 2);
}

#[test]
fn gateway_starts_without_postgres_and_admits_clients_once_it_appears() {
    let Some(db) = TestDb::create("gateway_unreachable", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let proxy = Proxy::start(pg_support::server_addr(), Mode::Cut);
    let mut config = gateway_config(&db.url_via(proxy.addr()));
    config.timeouts.store = TIMEOUT;
    let gw = PgGateway::start(config);

    match gw.open(conv, a).read(Duration::from_secs(10)) {
        Read::Closed(Some(1011)) => {}
        other => panic!("without Postgres a connect is refused with 1011: {other:?}"),
    }

    proxy.open();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        let mut c = gw.open(conv, a);
        match c.read(Duration::from_secs(5)) {
            Read::Json(v) if v["type"] == "connection_established" => break c,
            other => assert!(
                Instant::now() < deadline,
                "still refused after Postgres came back: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    client.send_json(json!({"type": "chat_message", "content": "made it"}));
    assert_eq!(client.recv_new_message()["content"], "made it");
    assert_eq!(db.messages(), 1);
}

#[test]
fn gateway_reports_failed_send_while_postgres_is_lost_then_recovers() {
    let Some(t) = ProxiedGateway::start("gateway_lost") else {
        return;
    };
    let (gw, proxy, db, conv, a, b) = (&t.gw, &t.proxy, &t.db, t.conv, t.a, t.b);
    let mut alice = gw.connect(conv, a);
    let mut bob = gw.connect(conv, b);
    alice.send_json(json!({"type": "chat_message", "content": "before"}));
    assert_eq!(alice.recv_new_message()["content"], "before");
    assert_eq!(bob.recv_new_message()["content"], "before");

    proxy.cut();
    let started = Instant::now();
    alice.send_json(json!({"type": "chat_message", "content": "lost"}));
    assert_eq!(
        alice.recv_json(),
        json!({"type": "error", "message": "Failed to send message"})
    );
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "{:?}",
        started.elapsed()
    );
    bob.expect_silence(Duration::from_millis(500));

    proxy.open();
    alice.send_json(json!({"type": "chat_message", "content": "after"}));
    assert_eq!(alice.recv_new_message()["content"], "after");
    assert_eq!(bob.recv_new_message()["content"], "after");
    let contents = db.contents();
    assert_eq!(contents, ["before", "after"]);
    assert_eq!(db.unread(conv, b), 2);
}

#[test]
fn a_sender_blocked_on_a_full_store_queue_hears_back_about_every_message() {
    let Some(t) = ProxiedGateway::start("backpressure") else {
        return;
    };
    let (gw, proxy, db, conv, a) = (&t.gw, &t.proxy, &t.db, t.conv, t.a);
    let mut alice = gw.connect(conv, a);

    // Postgres stops answering: the batches in flight hang, the store queue
    // fills up and the session stops reading alice's socket until there is
    // room again (more than the queue plus every pooled connection's batch).
    proxy.stall();
    let sent = chatgate::store::REQUEST_QUEUE + 3000;
    for i in 0..sent {
        alice.send_json(json!({"type": "chat_message", "content": format!("m{i}")}));
    }
    std::thread::sleep(TIMEOUT * 2);
    proxy.open();

    let (mut stored, mut failed) = (0usize, 0usize);
    let mut last_stored = None;
    while stored + failed < sent {
        let v = alice.recv_json();
        if v["type"] == "new_message" {
            let n: usize = v["message"]["content"].as_str().unwrap()[1..]
                .parse()
                .unwrap();
            assert!(
                last_stored < Some(n),
                "stored out of order: m{n} after {last_stored:?}"
            );
            last_stored = Some(n);
            stored += 1;
        } else {
            assert_eq!(
                v,
                json!({"type": "error", "message": "Failed to send message"})
            );
            failed += 1;
        }
    }
    assert!(failed > 0, "the stalled batch failed");
    alice.send_json(json!({"type": "chat_message", "content": "after"}));
    assert_eq!(alice.recv_new_message()["content"], "after");
    assert_eq!(
        db.messages() as usize,
        stored + 1,
        "every new_message is a row"
    );
}

/// A sender parked on the full request channel whose task will never run
/// again (a shard's session once its runtime is gone) is handed a permit
/// when the dispatcher takes a message. Stopping the store must not wait
/// for that permit: it commits what is queued and ends.
#[test]
fn the_store_stops_although_a_parked_sender_will_never_send() {
    let Some(db) = TestDb::create("parked_sender", Schema::Migrated) else {
        return;
    };
    let a = db.user("a");
    let conv = db.admin().create_conversation(&[a]).unwrap();
    let proxy = Proxy::start(pg_support::server_addr(), Mode::Open);
    let mut store = TestStore::start(&db.url_via(proxy.addr()), 64, Duration::from_secs(10));
    let (warm, _) = send_one(&store, conv, a, "warm");
    warm.expect("stored while Postgres answers");

    proxy.stall();
    let mut queued = 0;
    while store
        .handle()
        .try_insert(insert(conv, a, "queued", 0))
        .is_ok()
    {
        queued += 1;
    }
    assert!(
        queued >= chatgate::store::REQUEST_QUEUE,
        "the channel filled up"
    );
    let parked = store.handle().clone();
    let mut send = Box::pin(async move { parked.insert(insert(conv, a, "parked", 0)).await });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let polled = std::future::Future::poll(send.as_mut(), &mut cx);
    assert!(polled.is_pending(), "the channel is full");
    std::mem::forget(send); // never polled again, never dropped
    proxy.open();
    // Once the dispatcher reads the channel again, the parked sender is
    // handed a permit it will never use.
    wait_for_outcomes(&store.delivered, 1000, Duration::from_secs(15));

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        store.stop();
        let _ = done_tx.send(store.delivered.clone());
    });
    let delivered = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the store stops");
    assert_eq!(
        pg_support::outcome_count(&delivered),
        queued,
        "every queued insert has its outcome"
    );
    assert_eq!(
        db.messages() as usize,
        queued + 1,
        "and was committed (with the first message)"
    );
}
