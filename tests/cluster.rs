//! Two gateway nodes sharing conversations over a real Redis: cross-node
//! delivery exactly once and in order, typing across nodes, subscriptions
//! only where members are, batching, and recovery from killed connections
//! and from a Redis that is missing at start.

#[macro_use]
#[allow(unused_macros)]
mod support;
mod redis_support;

use std::time::{Duration, Instant};

use chatgate::bridge::BridgeConfig;
use chatgate::{Config, Gateway};
use redis_support::{client_id, kill_client, numsub, Proxy, RedisEnv};
use serde_json::json;
use support::*;

/// Node A (a `TestGateway`) and node B (a second gateway on the same
/// database), both bridged through `bridge(node)`.
struct Cluster {
    a: TestGateway,
    b: Option<Gateway>,
}

impl Cluster {
    fn start(bridge: impl Fn(&str) -> BridgeConfig) -> Cluster {
        let a = TestGateway::start_with(|c| c.bridge = Some(bridge("a")));
        Self::beside(a, bridge)
    }

    /// Both nodes on `on`'s store (one database).
    fn start_on(on: Target, bridge: impl Fn(&str) -> BridgeConfig) -> Cluster {
        let a = TestGateway::start_on(on, |c| c.bridge = Some(bridge("a")));
        Self::beside(a, bridge)
    }

    /// Node B on node A's config and database.
    fn beside(a: TestGateway, bridge: impl Fn(&str) -> BridgeConfig) -> Cluster {
        let mut cfg_b: Config = a.config.clone();
        cfg_b.bridge = Some(bridge("b"));
        let b = Gateway::start(cfg_b).expect("node b starts");
        Cluster { a, b: Some(b) }
    }

    fn b(&self) -> &Gateway {
        self.b.as_ref().expect("node b runs")
    }

    /// A client on node B (the same protocol as `TestGateway::connect`).
    fn connect_b(&self, conv: i64, user: &User) -> Client {
        let stream = std::net::TcpStream::connect(self.b().local_addr()).expect("connect to b");
        self.a.connect_over(stream, conv, user)
    }

    fn wait_connected(&self) {
        wait_until(Duration::from_secs(10), "both bridges connected", || {
            self.a
                .gateway_ref()
                .bridge_state()
                .is_some_and(|s| s.connected)
                && self.b().bridge_state().is_some_and(|s| s.connected)
        });
    }
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `n` nodes hold a subscription for `conv`'s channel.
fn wait_subscribers(env: &RedisEnv, conv: i64, n: i64, limit: Duration) {
    let mut admin = env.admin.clone();
    let channel = env.channel(conv);
    wait_until(limit, &format!("{n} subscription(s) to {channel}"), || {
        env.rt.block_on(numsub(&mut admin, &channel)) == n
    });
}

fn env(test: &str) -> Option<RedisEnv> {
    RedisEnv::start(test)
}

/// Sends one chat message on `from` and checks every client sees it once.
fn round_trip(from: &mut Client, clients: &mut [&mut Client], content: &str) -> i64 {
    from.chat(content);
    let mine = from.recv_new_message();
    assert_eq!(mine["content"], json!(content));
    for c in clients.iter_mut() {
        let m = c.recv_new_message();
        assert_eq!(m, mine, "every socket gets the same new_message");
    }
    mine["id"].as_i64().expect("id")
}

/// docs/protocol.md §3 (order) across nodes: 500 rounds of chat-then-typing on node A; members
/// on node B see each `new_message` before the typing that followed it.
#[test]
fn chat_then_typing_keeps_the_senders_order_across_nodes() {
    let Some(env) = env("cluster_order") else {
        return;
    };
    let cluster = Cluster::start(|n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let carol = cluster.a.user("carol");
    let conv = cluster.a.conversation(&[&alice, &bob, &carol]);
    let mut a = cluster.a.connect(conv, &alice);
    let mut b_local = cluster.a.connect(conv, &bob);
    let mut b_remote = cluster.connect_b(conv, &bob);
    let mut c_remote = cluster.connect_b(conv, &carol);
    wait_subscribers(&env, conv, 2, Duration::from_secs(5));
    send_chat_then_typing(&mut a, 500);
    let ids = expect_chat_then_typing(&mut b_local, &alice, 500);
    assert_eq!(expect_chat_then_typing(&mut b_remote, &alice, 500), ids);
    assert_eq!(expect_chat_then_typing(&mut c_remote, &alice, 500), ids);
}

/// docs/protocol.md §9.0–§9.4 across nodes: receipts and reactions reach the v2
/// sockets of the other node (never a v1 socket), and a v2 client resumes
/// on the other node than the one it left, exactly once.
#[test]
fn v2_events_and_resume_cross_nodes() {
    let Some(env) = env("cluster_v2") else {
        return;
    };
    let cluster = Cluster::start(|n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let carol = cluster.a.user("carol");
    let conv = cluster.a.conversation(&[&alice, &bob, &carol]);
    let v2 = [V2_PROTOCOL];
    let path = |u: &User| format!("/ws/chat/{conv}/?token={}", u.token);
    let connect_b_v2 = |u: &User, query: &str| {
        let stream = std::net::TcpStream::connect(cluster.b().local_addr()).unwrap();
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}{}{query}",
            cluster.b().local_addr(),
            path(u)
        ))
        .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "chatgate.v2".parse().unwrap());
        let (ws, _) = tungstenite::client::client(req, stream).expect("v2 upgrade on b");
        let mut c = Client { ws };
        c.expect_established();
        c
    };
    let mut a = cluster.a.connect_path(&path(&alice), &v2);
    assert_eq!(a.recv_json()["type"], "read_state");
    let mut b = connect_b_v2(&bob, "");
    assert_eq!(b.recv_json()["type"], "read_state");
    let mut old = cluster.connect_b(conv, &carol);
    wait_subscribers(&env, conv, 2, Duration::from_secs(5));
    a.chat("hello");
    let id = a.recv_new_message()["id"].as_i64().unwrap();
    assert_eq!(b.recv_new_message()["id"], id);
    assert_eq!(old.recv_new_message()["id"], id);
    b.send_json(json!({"type": "mark_read", "message_id": id}));
    for c in [&mut b, &mut a] {
        let r = c.recv_json();
        assert_eq!(
            (r["type"].as_str(), r["user_id"].as_i64()),
            (Some("read_receipt"), Some(bob.id)),
            "{r}"
        );
    }
    a.send_json(json!({"type": "react", "message_id": id, "emoji": "🎉"}));
    for c in [&mut a, &mut b] {
        let r = c.recv_json();
        assert_eq!(
            (r["type"].as_str(), r["emoji"].as_str()),
            (Some("reaction"), Some("🎉")),
            "{r}"
        );
    }
    // bob leaves node B, misses 20 messages, resumes on node A.
    drop(b);
    let missed: Vec<i64> = (0..20)
        .map(|i| {
            a.chat(&format!("missed {i}"));
            a.recv_new_message()["id"].as_i64().unwrap()
        })
        .collect();
    let mut back = cluster
        .a
        .connect_path(&format!("{}&since={id}", path(&bob)), &v2);
    let got: Vec<i64> = (0..20)
        .map(|_| back.recv_new_message()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, missed);
    assert_eq!(
        back.recv_json(),
        json!({"type": "resumed", "last_id": missed[19], "complete": true})
    );
    // The v1 socket on B saw the messages only.
    for m in &missed {
        assert_eq!(old.recv_new_message()["id"], *m);
    }
    old.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_message_reaches_every_socket_on_both_nodes_once_and_in_order() {
    let Some(env) = env("cluster_once") else {
        return;
    };
    let cluster = Cluster::start(|n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let conv = cluster.a.conversation(&[&alice, &bob]);
    let mut a1 = cluster.a.connect(conv, &alice);
    let mut a2 = cluster.a.connect(conv, &bob);
    let mut b1 = cluster.connect_b(conv, &bob);
    let mut b2 = cluster.connect_b(conv, &alice);
    // B's subscription is asynchronous: wait until both nodes hold one.
    wait_subscribers(&env, conv, 2, Duration::from_secs(5));
    let mut last = 0;
    for i in 0..20 {
        let id = round_trip(
            &mut a1,
            &mut [&mut a2, &mut b1, &mut b2],
            &format!("from a {i}"),
        );
        assert!(id > last, "ids increase in delivery order");
        last = id;
    }
    let id = round_trip(&mut b1, &mut [&mut b2, &mut a1, &mut a2], "from b");
    assert!(id > last);
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        c.expect_silence(Duration::from_millis(300));
    }
}

#[test]
fn typing_crosses_nodes_and_skips_the_typists_sockets_everywhere() {
    let Some(env) = env("cluster_typing") else {
        return;
    };
    let cluster = Cluster::start(|n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let conv = cluster.a.conversation(&[&alice, &bob]);
    let mut alice_a = cluster.a.connect(conv, &alice);
    let mut alice_b = cluster.connect_b(conv, &alice);
    let mut bob_b = cluster.connect_b(conv, &bob);
    wait_subscribers(&env, conv, 2, Duration::from_secs(5));
    alice_a.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        bob_b.recv_json(),
        json!({"type": "typing", "user_id": alice.id, "username": "alice", "is_typing": true})
    );
    alice_a.expect_silence(Duration::from_millis(300));
    alice_b.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_conversation_with_members_only_on_a_has_no_subscription_on_b() {
    let Some(env) = env("cluster_nosub") else {
        return;
    };
    let cluster = Cluster::start(|n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let conv = cluster.a.conversation(&[&alice, &bob]);
    let mut a1 = cluster.a.connect(conv, &alice);
    let mut a2 = cluster.a.connect(conv, &bob);
    wait_subscribers(&env, conv, 1, Duration::from_secs(5));
    round_trip(&mut a1, &mut [&mut a2], "local only");
    std::thread::sleep(Duration::from_millis(300));
    let mut admin = env.admin.clone();
    assert_eq!(
        env.rt.block_on(numsub(&mut admin, &env.channel(conv))),
        1,
        "only node a subscribes"
    );
    assert_eq!(cluster.b().bridge_state().unwrap().subscriptions, 0);
    assert_eq!(cluster.b().bridge_state().unwrap().received_total, 0);
}

#[test]
fn a_thousand_messages_cross_in_order_in_few_round_trips() {
    let Some(env) = env("cluster_burst") else {
        return;
    };
    let cluster = Cluster::start(|n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let conv = cluster.a.conversation(&[&alice, &bob]);
    let mut sender = cluster.a.connect(conv, &alice);
    let mut remote = cluster.connect_b(conv, &bob);
    wait_subscribers(&env, conv, 2, Duration::from_secs(5));
    let before = cluster.a.gateway_ref().bridge_state().unwrap();
    const N: usize = 1000;
    for i in 0..N {
        sender.chat(&format!("m{i}"));
    }
    let mut last = 0;
    for i in 0..N {
        let m = remote.recv_new_message();
        assert_eq!(m["content"], json!(format!("m{i}")), "order on node b");
        let id = m["id"].as_i64().unwrap();
        assert!(id > last);
        last = id;
    }
    // The publisher counts a pipeline when Redis answers it, which may be
    // after node B has already delivered its events.
    wait_until(Duration::from_secs(5), "the last pipeline counted", || {
        let now = cluster.a.gateway_ref().bridge_state().unwrap();
        now.published_total - before.published_total >= N as u64
    });
    let after = cluster.a.gateway_ref().bridge_state().unwrap();
    let published = after.published_total - before.published_total;
    let round_trips = after.batches_total - before.batches_total;
    assert_eq!(published, N as u64);
    assert!(
        round_trips < N as u64 / 4,
        "{round_trips} pipelines for {N} events"
    );
    assert!(after.max_batch_size > 1);
    eprintln!(
        "1000 events in {round_trips} pipelines, largest {}",
        after.max_batch_size
    );
}

#[test]
fn killed_redis_connections_are_noticed_and_delivery_resumes() {
    let Some(env) = env("cluster_kill") else {
        return;
    };
    let cluster = Cluster::start(|n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let conv = cluster.a.conversation(&[&alice, &bob]);
    let mut sender = cluster.a.connect(conv, &alice);
    let mut remote = cluster.connect_b(conv, &bob);
    let mut admin = env.admin.clone();
    wait_subscribers(&env, conv, 2, Duration::from_secs(5));
    round_trip(&mut sender, &mut [&mut remote], "before");
    let base = format!("{}:", env.prefix);
    for name in [format!("{base}b:sub"), format!("{base}a:pub")] {
        let id = env
            .rt
            .block_on(client_id(&mut admin, &name))
            .unwrap_or_else(|| panic!("client {name}"));
        assert_eq!(
            env.rt.block_on(kill_client(&mut admin, id, None)),
            1,
            "killed {name}"
        );
    }
    wait_subscribers(&env, conv, 2, Duration::from_secs(10));
    cluster.wait_connected();
    round_trip(&mut sender, &mut [&mut remote], "after");
    assert!(cluster.b().bridge_state().unwrap().reconnects_total >= 1);
}

#[test]
fn a_node_serves_locally_while_redis_is_missing_and_bridges_once_it_appears() {
    let Some(env) = env("cluster_late") else {
        return;
    };
    let proxy = env.rt.block_on(async { Proxy::start(&env.url).await });
    let url = proxy.url();
    let cluster = Cluster::start(|n| {
        let mut c = env.config(n);
        c.url = url.clone();
        c
    });
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let conv = cluster.a.conversation(&[&alice, &bob]);
    let mut a1 = cluster.a.connect(conv, &alice);
    let mut a2 = cluster.a.connect(conv, &bob);
    assert!(!cluster.a.gateway_ref().bridge_state().unwrap().connected);
    round_trip(&mut a1, &mut [&mut a2], "local while redis is away");
    proxy.forward();
    cluster.wait_connected();
    let mut remote = cluster.connect_b(conv, &bob);
    wait_subscribers(&env, conv, 2, Duration::from_secs(10));
    round_trip(&mut a1, &mut [&mut a2, &mut remote], "bridged");
}

/// docs/protocol.md §9.4 with two sockets of one user on two nodes: each toggles
/// one reaction 200 times (on, off, …, off) at the same time. Each node
/// keeps its socket's order, the last request to arrive wins (an `off`),
/// and every socket on either node sees the same number of changes.
fn one_users_reactions_on_two_nodes(on: Target, test: &str) {
    let Some(env) = env(test) else {
        return;
    };
    let cluster = Cluster::start_on(on, |n| env.config(n));
    cluster.wait_connected();
    let alice = cluster.a.user("alice");
    let bob = cluster.a.user("bob");
    let conv = cluster.a.conversation(&[&alice, &bob]);
    let b_addr = cluster.b().local_addr();
    let mut a1 = cluster.a.connect_v2(conv, &alice);
    let mut watch_a = cluster.a.connect_v2(conv, &bob);
    let (mut a2, _) = cluster.a.connect_at(b_addr, conv, &alice, true);
    let (mut watch_b, _) = cluster.a.connect_at(b_addr, conv, &bob, true);
    wait_subscribers(&env, conv, 2, Duration::from_secs(5));
    a1.chat("target");
    let id = a1.recv_new_message()["id"].as_i64().unwrap();
    for c in [&mut a2, &mut watch_a, &mut watch_b] {
        assert_eq!(c.recv_new_message()["id"], id);
    }
    let toggles = || {
        (0..200usize).map(|i| {
            json!({"type": "react", "message_id": id, "emoji": "👍", "on": i.is_multiple_of(2)})
                .to_string()
        })
    };
    send_burst(&mut a1, toggles());
    send_burst(&mut a2, toggles());
    let migrated = cluster.a.store_kind() != StoreKind::PostgresDjango;
    let mut counts = Vec::new();
    for c in [&mut a1, &mut a2, &mut watch_a, &mut watch_b] {
        let mut n = 0;
        while let Some(event) = c.try_recv_json(Duration::from_millis(1500)) {
            if event["type"] == "error" {
                assert!(!migrated, "{event}");
                assert_eq!(event["message"], "Failed to react");
                continue;
            }
            assert_eq!(
                (
                    event["type"].as_str(),
                    event["user_id"].as_i64(),
                    event["message_id"].as_i64()
                ),
                (Some("reaction"), Some(alice.id), Some(id)),
                "{event}"
            );
            n += 1;
        }
        counts.push(n);
    }
    assert!(
        counts.iter().all(|&n| n == counts[0]),
        "events per socket: {counts:?}"
    );
    if !migrated {
        assert_eq!(counts[0], 0);
        return;
    }
    assert!(counts[0] >= 2, "events per socket: {counts:?}");
    // The last request of each socket was a removal: nothing is stored, so
    // adding now is a change that every socket hears of.
    a2.send_json(json!({"type": "react", "message_id": id, "emoji": "👍", "on": true}));
    for c in [&mut a1, &mut a2, &mut watch_a, &mut watch_b] {
        let event = c.recv_json();
        assert_eq!(
            (event["type"].as_str(), event["on"].as_bool()),
            (Some("reaction"), Some(true)),
            "{event}"
        );
    }
}

#[test]
fn one_users_reactions_on_two_nodes_sqlite() {
    one_users_reactions_on_two_nodes(Target::sqlite(chatgate::IoDriver::Auto), "cluster_react");
}

#[test]
fn one_users_reactions_on_two_nodes_postgres() {
    if let Some(on) = Target::postgres("cluster::one_users_reactions_on_two_nodes_postgres") {
        one_users_reactions_on_two_nodes(on, "cluster_react_pg");
    }
}

#[test]
fn one_users_reactions_on_two_nodes_django() {
    if let Some(on) = Target::django("cluster::one_users_reactions_on_two_nodes_django") {
        one_users_reactions_on_two_nodes(on, "cluster_react_dj");
    }
}
