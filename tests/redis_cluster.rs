//! Issue 21 on a real Redis Cluster (six `redis-server`s of the test's own:
//! three primaries, three replicas; `tests/fault_support/cluster.rs`):
//!
//! - under steady traffic in a dozen conversations with senders on three
//!   gateway nodes (Postgres) and a v1 and a v2 reader per node: a graceful
//!   `CLUSTER FAILOVER`, a `kill -9` of a primary until its replica is
//!   promoted, and one busy slot moved with `CLUSTER SETSLOT`. After each,
//!   cross-node v1 delivery resumes within 5 s; at the end every v2 socket
//!   holds every stored message exactly once (each sender's in order) and
//!   no socket was closed;
//! - presence, call signals, upload progress, the server API's presence
//!   read and `disconnect` across three nodes in cluster mode;
//! - the partitions spread channels and presence keys over the primaries
//!   within 1.5× of each other.
//!
//! In CI a missing `redis-server` / `redis-cli` or Postgres fails the tests.

#[macro_use]
#[allow(unused_macros)]
mod support;
mod fault_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chatgate::bridge::cluster::layout::{Group, Layout};
use chatgate::bridge::presence::{encode_report, Report};
use chatgate::bridge::{Bridge, BridgeConfig, Deliver, RemoteEvent, RemoteKind};
use chatgate::{Config, Gateway};
use fault_support::cluster::RedisCluster;
use fault_support::scene::Scene;
use fault_support::server::redis_tools;
use serde_json::json;
use support::*;

const PREFIX: &str = "cg";

fn bridge(seeds: &[String], node: &str) -> BridgeConfig {
    let mut cfg = BridgeConfig::for_cluster(seeds.to_vec());
    cfg.node_id = node.to_string();
    cfg.prefix = PREFIX.into();
    cfg.heartbeat = Duration::from_millis(200);
    cfg.backoff_max = Duration::from_millis(200);
    cfg.unsubscribe_linger = Duration::from_millis(400);
    cfg.presence_ttl = Duration::from_secs(30);
    cfg
}

/// Whether every one of `n` nodes holds `conv`'s sharded channel.
fn shard_subscribers(cluster: &RedisCluster, layout: &Layout, conv: i64, n: usize) -> bool {
    let slot = layout.slot(layout.group_of(conv));
    let out = cluster.server(cluster.owner_of(slot)).cli(&[
        "PUBSUB",
        "SHARDNUMSUB",
        &layout.channel(conv),
    ]);
    out.lines().nth(1).map(str::trim) == Some(n.to_string().as_str())
}

#[test]
fn failover_kill_and_slot_move_under_traffic_lose_nothing_for_v2() {
    const TEST: &str =
        "redis_cluster::failover_kill_and_slot_move_under_traffic_lose_nothing_for_v2";
    if !redis_tools(TEST) {
        return;
    }
    let Some(on) = Target::postgres(TEST) else {
        return;
    };
    let started = Instant::now();
    let mut cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let mut scene = Scene::start(on, 3, |n| bridge(&seeds, n));
    scene.wait_connected(Duration::from_secs(15));
    scene.conversations(12);
    let layout = Layout::new(PREFIX, Layout::DEFAULT_PARTITIONS);
    let running = scene.run(Duration::from_millis(100), |conv| {
        shard_subscribers(&cluster, &layout, conv, 3)
    });
    let slot_of = |ci: usize| layout.slot(layout.group_of(scene.convs[ci].id));
    let on_primary = |cluster: &RedisCluster, port: u16| -> Vec<usize> {
        (0..scene.convs.len())
            .filter(|ci| cluster.owner_of(slot_of(*ci)) == port)
            .collect()
    };
    std::thread::sleep(Duration::from_millis(1500));
    let mut faults = Vec::new();

    // 1. A graceful failover of conversation 0's primary.
    let first = cluster.owner_of(slot_of(0));
    let hit = on_primary(&cluster, first);
    let at = Instant::now();
    let promoted = cluster.failover(first);
    faults.push(("CLUSTER FAILOVER", hit, at, Instant::now(), scene.max_id()));
    std::thread::sleep(Duration::from_secs(3));

    // 2. kill -9 of another primary (not the one just promoted).
    let victim = cluster
        .primaries()
        .into_iter()
        .map(|p| p.port)
        .find(|p| *p != promoted && !on_primary(&cluster, *p).is_empty())
        .expect("a primary with conversations");
    let hit = on_primary(&cluster, victim);
    let at = Instant::now();
    cluster.kill_primary(victim);
    faults.push((
        "kill -9 of a primary",
        hit,
        at,
        Instant::now(),
        scene.max_id(),
    ));
    std::thread::sleep(Duration::from_secs(3));

    // 3. One busy slot moved to another primary.
    let ci = (0..scene.convs.len())
        .find(|ci| cluster.owner_of(slot_of(*ci)) != promoted)
        .unwrap_or(0);
    let (slot, from) = (slot_of(ci), cluster.owner_of(slot_of(ci)));
    let to = cluster
        .primaries()
        .into_iter()
        .map(|p| p.port)
        .find(|p| *p != from)
        .expect("another primary");
    let hit: Vec<usize> = (0..scene.convs.len())
        .filter(|c| slot_of(*c) == slot)
        .collect();
    let at = Instant::now();
    cluster.move_slot(slot, from, to);
    faults.push((
        "slot moved with CLUSTER SETSLOT",
        hit,
        at,
        Instant::now(),
        scene.max_id(),
    ));
    std::thread::sleep(Duration::from_secs(3));

    let outcome = running.finish();
    // Resumed: from when the cluster serves the slots again (a killed
    // primary's replica is promoted after the node timeout, ~3.5 s) to the
    // first message stored after that arriving from another node.
    for (what, hit, at, done, above) in &faults {
        let resumed = outcome.v1_recovery(&scene, hit, *above, *done);
        let silence = outcome.v1_longest_silence(&scene, hit, *at, *done + Duration::from_secs(2));
        eprintln!(
            "{what}: the cluster took {:?}; cross-node v1 delivery resumed {resumed:?} after \
             that; longest silence of a v1 reader {silence:?} ({} conversation(s) hit)",
            done.duration_since(*at),
            hit.len()
        );
        assert!(resumed <= Duration::from_secs(5), "{what}: {resumed:?}");
    }
    eprintln!(
        "{} messages sent, {} v1 deliveries; test took {:?}",
        outcome.sent,
        outcome.v1_received(),
        started.elapsed()
    );
    outcome.assert_v2_complete(&scene);
    scene.wait_connected(Duration::from_secs(5));
    let (_, metrics) = http_get(scene.first.admin_addr(), "/metrics");
    for name in [
        "chatgate_bridge_resubscribes_total",
        "chatgate_bridge_refills_total",
        "chatgate_refill_sockets_total",
        "chatgate_bridge_up",
    ] {
        assert!(metrics.contains(name), "{name} in /metrics");
    }
}

#[test]
fn presence_call_signals_and_disconnect_cross_nodes_on_the_cluster() {
    const TEST: &str =
        "redis_cluster::presence_call_signals_and_disconnect_cross_nodes_on_the_cluster";
    if !redis_tools(TEST) {
        return;
    }
    let cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let a = TestGateway::start_with(|c| {
        c.bridge = Some(bridge(&seeds, "a"));
        with_api(c);
    });
    let start = |node: &str| {
        let mut cfg: Config = a.config.clone();
        cfg.bridge = Some(bridge(&seeds, node));
        Gateway::start(cfg).expect("node starts")
    };
    let (b, c) = (start("b"), start("c"));
    let gateways = [a.gateway_ref(), &b, &c];
    eventually(Duration::from_secs(15), "bridges connected", || {
        gateways
            .iter()
            .all(|g| g.bridge_state().is_some_and(|s| s.connected))
    });
    let alice = a.user("alice");
    let bob = a.user("bob");
    let carol = a.user("carol");
    let conv = a.conversation(&[&alice, &bob, &carol]);
    let other = a.conversation(&[&alice, &bob]);
    let presence = |u: &User, status: &str| json!({"type":"presence","user_id":u.id,"username":u.username,"status":status});
    let (mut a1, state) = a.connect_at(a.addr(), conv, &alice, true);
    assert_eq!(state["count"], 1);
    let (mut b1, state) = a.connect_at(b.local_addr(), conv, &bob, true);
    assert_eq!(state["count"], 2, "bob on B sees alice on A: {state}");
    assert_eq!(a1.recv_all_json(), presence(&bob, "online"));
    let (mut c1, _) = a.connect_at(c.local_addr(), conv, &carol, false);
    assert_eq!(a1.recv_all_json(), presence(&carol, "online"));
    assert_eq!(b1.recv_all_json(), presence(&carol, "online"));
    // A call from A rings bob on B; his hangup reaches A.
    a1.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"c-1","kind":"offer","payload":{{"sdp":"x"}}}}"#,
        bob.id
    ));
    let offer = b1.recv_json();
    assert_eq!(
        (offer["kind"].as_str(), offer["from_user_id"].as_i64()),
        (Some("offer"), Some(alice.id))
    );
    b1.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"c-1","kind":"hangup"}}"#,
        alice.id
    ));
    assert_eq!(a1.recv_json()["kind"], "hangup");
    a1.send_json(json!({"type":"upload_progress","upload_id":"u","file_name":"f","percent":100}));
    assert_eq!(b1.recv_json()["percent"], 100);
    // Chat from the v1 socket on C reaches A and B.
    c1.chat("from c");
    for s in [&mut a1, &mut b1, &mut c1] {
        assert_eq!(s.recv_new_message()["content"], "from c");
    }
    // The server API of a node that holds no socket of `other` reads its
    // presence from the cluster.
    let (_alone, _) = a.connect_at(a.addr(), other, &alice, false);
    eventually(
        Duration::from_secs(5),
        "presence read from the cluster",
        || {
            let r = api_ok(
                b.api_addr().expect("api on b"),
                "presence",
                json!({"conversation_id": other}),
            );
            r["online"] == json!([{"user_id": alice.id, "username": "alice"}])
        },
    );
    // A disconnect asked of node A closes bob's socket on node B.
    let r = api_ok(
        a.api_addr(),
        "disconnect",
        json!({"user_id": bob.id, "conversation_id": conv}),
    );
    assert_eq!(r, json!({"closed": 0}));
    b1.expect_close(4003);
    assert_eq!(a1.recv_all_json(), presence(&bob, "offline"));
    // Node B held `conv` for bob only: after the linger it lets the channel
    // go (a confirmed SUNSUBSCRIBE, no loss), A and C keep it.
    let layout = Layout::new(PREFIX, Layout::DEFAULT_PARTITIONS);
    eventually(Duration::from_secs(5), "node B unsubscribed", || {
        shard_subscribers(&cluster, &layout, conv, 2)
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(b.bridge_state().unwrap().connected);
    assert_eq!(b.bridge_state().unwrap().subscriptions, 0);
    c1.chat("still there");
    assert_eq!(a1.recv_new_message()["content"], "still there");
}

#[test]
fn partitions_spread_channels_and_presence_keys_over_the_primaries() {
    const TEST: &str =
        "redis_cluster::partitions_spread_channels_and_presence_keys_over_the_primaries";
    if !redis_tools(TEST) {
        return;
    }
    let cluster = RedisCluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let deliver: Deliver = std::sync::Arc::new(|_: RemoteEvent| {});
    let node =
        Bridge::start(bridge(&cluster.seeds(), "spread"), rt.handle(), deliver).expect("bridge");
    const N: i64 = 600;
    for conv in 1..=N {
        node.subscribe(conv);
        node.publish(RemoteEvent {
            conversation_id: conv,
            audience: chatgate::audience::Audience::ALL,
            payload: encode_report(Report::Online(true), conv, "u").into(),
            kind: RemoteKind::Presence { origin: 0 },
        });
    }
    let count = |port: u16| {
        let server = cluster.server(port);
        let keys = server.cli(&["--scan", "--pattern", &format!("{PREFIX}:presence:*")]);
        let channels = server.cli(&["PUBSUB", "SHARDCHANNELS", &format!("{PREFIX}:conv:*")]);
        let lines = |s: &str| s.lines().filter(|l| !l.is_empty()).count();
        (lines(&keys), lines(&channels))
    };
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    let mut per: HashMap<u16, (usize, usize)> = HashMap::new();
    eventually(
        Duration::from_secs(20),
        "every channel and key in place",
        || {
            per = primaries.iter().map(|p| (*p, count(*p))).collect();
            let (k, c) = per.values().fold((0, 0), |(k, c), (a, b)| (k + a, c + b));
            k == N as usize && c == N as usize
        },
    );
    eprintln!("presence keys and channels per primary: {per:?}");
    for pick in [|v: &(usize, usize)| v.0, |v: &(usize, usize)| v.1] {
        let min = per.values().map(pick).min().unwrap();
        let max = per.values().map(pick).max().unwrap();
        assert!(max * 2 <= min * 3, "{per:?}");
    }
    let nodes = Layout::new(PREFIX, Layout::DEFAULT_PARTITIONS).slot(Group::Nodes);
    assert!(primaries.contains(&cluster.owner_of(nodes)));
    node.shutdown();
}
