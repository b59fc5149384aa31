//! The scenarios against a real gateway on an ephemeral port (embedded
//! store in a temporary directory), on both client io drivers.

use std::time::Duration;

use chatgate::config::{Config, JwtConfig};
use chatgate::Gateway;
use chatgate_bench::conns::{self, ConnsSpec};
use chatgate_bench::fanout::{self, FanoutSpec};
use chatgate_bench::net::Target;
use chatgate_bench::plan::{prepare, Plan, PrepareSpec, StoreTarget};
use chatgate_bench::runner::{ClientDriver, ConnectOptions};
use chatgate_bench::storm::{self, StormSpec};
use chatgate_bench::BenchError;

const SECRET: &str = "loadgen-test";

/// A gateway with a plan of `conversations` × `members`.
fn setup(conversations: usize, members: usize) -> (tempfile::TempDir, Gateway, Plan) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lg.db");
    let spec = PrepareSpec {
        conversations,
        members,
        prefix: "lt".into(),
        ttl: Duration::from_secs(600),
        url_base: "ws://unused".into(),
    };
    let plan = prepare(
        &StoreTarget::Sqlite(db.clone()),
        &JwtConfig::new(SECRET),
        &spec,
    )
    .unwrap();
    let gateway = Gateway::start(Config::for_tests(SECRET, db)).unwrap();
    (dir, gateway, plan)
}

fn options(gw: &Gateway, driver: ClientDriver) -> ConnectOptions {
    ConnectOptions {
        targets: vec![Target::parse(&format!("ws://{}", gw.local_addr())).unwrap()],
        source_ips: vec![],
        threads: 1,
        concurrency: 16,
        timeout: Duration::from_secs(5),
        phase_timeout: Duration::from_secs(20),
        driver,
        v2: false,
    }
}

fn fanout_spec() -> FanoutSpec {
    FanoutSpec {
        senders_per_conv: 2,
        rate: 300.0,
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(600),
        drain: Duration::from_secs(3),
        content_bytes: 40,
        gateway_pids: vec![std::process::id()],
        progress: false,
    }
}

#[test]
fn fanout_counts_every_delivery_on_both_drivers() {
    let (_dir, gw, plan) = setup(3, 4);
    for driver in [ClientDriver::Epoll, ClientDriver::Uring] {
        let r = fanout::run(&plan, options(&gw, driver), fanout_spec()).unwrap();
        assert!(r.ok, "{driver:?}: {}", r.text());
        assert_eq!(r.sockets, 12);
        assert_eq!(r.senders, 6);
        assert!(r.sent > 100, "{}", r.text());
        assert_eq!(r.committed, r.sent);
        assert_eq!(r.expected_deliveries, r.sent * 4);
        assert_eq!(r.deliveries, r.expected_deliveries);
        assert_eq!(r.deliveries_total, r.expected_total);
        assert_eq!(r.latency.count, r.deliveries);
        assert!(r.gateway_rss[0].after_bytes.is_some());
    }
    gw.shutdown();
}

#[test]
fn conns_hold_and_storm_handshakes() {
    let (_dir, gw, plan) = setup(2, 5);
    let spec = ConnsSpec {
        count: 25,
        hold: Duration::from_millis(300),
        expect_ping_interval: None,
        gateway_pids: vec![],
        progress: false,
    };
    let r = conns::run(&plan, options(&gw, ClientDriver::Epoll), spec).unwrap();
    assert!(r.ok, "{}", r.text());
    assert_eq!(r.established, 25);
    assert_eq!(r.sockets_per_user_max, 3);
    // The same over protocol v2 (read_state, presence_state, presence events).
    let spec = ConnsSpec {
        count: 25,
        hold: Duration::from_millis(300),
        expect_ping_interval: None,
        gateway_pids: vec![],
        progress: false,
    };
    let v2 = ConnectOptions {
        v2: true,
        ..options(&gw, ClientDriver::Epoll)
    };
    let r = conns::run(&plan, v2, spec).unwrap();
    assert!(r.ok, "{}", r.text());
    assert_eq!(r.established, 25);
    let spec = StormSpec {
        count: 60,
        concurrency: 4,
    };
    let r = storm::run(&plan, options(&gw, ClientDriver::Uring), spec).unwrap();
    assert!(r.ok, "{}", r.text());
    assert_eq!(r.succeeded, 60);
    assert_eq!(r.latency.count, 60);
    gw.shutdown();
}

#[test]
fn refused_sockets_are_reported_with_their_close_code() {
    let (_dir, gw, mut plan) = setup(1, 2);
    plan.conversations[0].members[1].token = "not-a-token".into();
    let spec = StormSpec {
        count: 4,
        concurrency: 1,
    };
    let r = storm::run(&plan, options(&gw, ClientDriver::Epoll), spec).unwrap();
    assert!(!r.ok);
    assert_eq!(r.succeeded, 2);
    assert_eq!(r.failures.get("closed with 4001"), Some(&2), "{}", r.text());
    let err = fanout::run(&plan, options(&gw, ClientDriver::Epoll), fanout_spec()).unwrap_err();
    assert!(
        matches!(&err, BenchError::Connect { total: 2, established: 1, reasons } if reasons.contains("4001")),
        "{err}"
    );
    gw.shutdown();
}
