//! docs/protocol.md §9.5–§9.7 across nodes on a real Redis (two and three
//! nodes): presence state and events between nodes (a second tab or a v1 socket elsewhere is no
//! transition), call signals and upload progress crossing nodes byte for
//! byte, a `kill -9`ed node's users going offline on the survivor within
//! the presence TTL plus a heartbeat (and nobody else flapping), and a
//! graceful restart within the TTL flapping nobody, and presence read
//! again after a lost subscribing connection.

#[macro_use]
#[allow(unused_macros)]
mod support;
mod redis_support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatgate::bridge::BridgeConfig;
use chatgate::{Config, Gateway};
use redis_support::{numsub, RedisEnv};
use serde_json::{json, Value};
use support::*;

const QUIET: Duration = Duration::from_millis(400);
const TTL: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_millis(200);

fn bridge(env: &RedisEnv, node: &str) -> BridgeConfig {
    bridge_ttl(env, node, TTL)
}

fn bridge_ttl(env: &RedisEnv, node: &str, ttl: Duration) -> BridgeConfig {
    let mut cfg = env.config(node);
    cfg.presence_ttl = ttl;
    cfg.heartbeat = HEARTBEAT;
    cfg
}

fn presence(user: &User, status: &str) -> Value {
    json!({"type":"presence","user_id":user.id,"username":user.username,"status":status})
}

fn ids(state: &Value) -> (Vec<i64>, i64) {
    let mut ids: Vec<i64> = state["online"]
        .as_array()
        .expect("online")
        .iter()
        .map(|e| e["user_id"].as_i64().expect("user_id"))
        .collect();
    ids.sort();
    (ids, state["count"].as_i64().expect("count"))
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `n` bridges listen on the heartbeat channel.
fn wait_nodes(env: &RedisEnv, n: i64) {
    let mut admin = env.admin.clone();
    let channel = format!("{}:nodes", env.prefix);
    wait_until(Duration::from_secs(10), "nodes on the bridge", || {
        env.rt.block_on(numsub(&mut admin, &channel)) == n
    });
}

/// Node A (in-process, the test's database) and node B, in-process.
fn two_nodes(env: &RedisEnv) -> (TestGateway, Gateway) {
    two_nodes_ttl(env, TTL)
}

fn two_nodes_ttl(env: &RedisEnv, ttl: Duration) -> (TestGateway, Gateway) {
    let a = TestGateway::start_with(|c| c.bridge = Some(bridge_ttl(env, "a", ttl)));
    let mut cfg_b: Config = a.config.clone();
    cfg_b.bridge = Some(bridge_ttl(env, "b", ttl));
    let b = Gateway::start(cfg_b).expect("node b starts");
    wait_nodes(env, 2);
    (a, b)
}

#[test]
fn presence_crosses_nodes_and_tabs_elsewhere_are_no_transition() {
    let Some(env) = RedisEnv::start("presence_cluster") else {
        return;
    };
    let (a, b) = two_nodes(&env);
    let alice = a.user("alice");
    let bob = a.user("bob");
    let carol = a.user("carol");
    let conv = a.conversation(&[&alice, &bob, &carol]);
    let (mut a1, state) = a.connect_at(a.addr(), conv, &alice, true);
    assert_eq!(ids(&state), (vec![alice.id], 1));
    // Bob on node B sees Alice (node A) in his state; Alice gets an event.
    let (mut b1, state) = a.connect_at(b.local_addr(), conv, &bob, true);
    assert_eq!(ids(&state), (vec![alice.id, bob.id], 2));
    assert_eq!(a1.recv_all_json(), presence(&bob, "online"));
    // Bob's second tab on node A, Carol on v1 on node B.
    let (mut b2, state) = a.connect_at(a.addr(), conv, &bob, true);
    assert_eq!(ids(&state).1, 2);
    let (mut c1, _) = a.connect_at(b.local_addr(), conv, &carol, false);
    assert_eq!(a1.recv_all_json(), presence(&carol, "online"));
    assert_eq!(b1.recv_all_json(), presence(&carol, "online"));
    assert_eq!(b2.recv_all_json(), presence(&carol, "online"));
    c1.expect_quiet(QUIET);
    a1.expect_quiet(QUIET);
    // Carol is online on node B, but on v1 only: no call can reach her.
    a1.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"c-1","kind":"ring"}}"#,
        carol.id
    ));
    a1.expect_error("User not available");
    // Bob's tab on B closes while the one on A stays: no transition.
    b1.close(1000);
    a1.expect_quiet(QUIET);
    b2.close(1000);
    assert_eq!(a1.recv_all_json(), presence(&bob, "offline"));
    c1.close(1000);
    assert_eq!(a1.recv_all_json(), presence(&carol, "offline"));
    // Call signals and upload progress cross nodes too.
    let (mut b3, _) = a.connect_at(b.local_addr(), conv, &bob, true);
    assert_eq!(a1.recv_all_json(), presence(&bob, "online"));
    let payload = r#"{"sdp" : "o=- 4 2 IN IP4 127.0.0.1\r\n",  "x":[1.0e2]}"#;
    a1.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"c-9","kind":"offer","payload":{payload}}}"#,
        bob.id
    ));
    let got = text_of(&mut b3);
    assert!(
        got.ends_with(&format!(r#","payload":{payload}}}"#)),
        "{got}"
    );
    b3.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"c-9","kind":"hangup"}}"#,
        alice.id
    ));
    assert_eq!(a1.recv_json()["kind"], "hangup");
    a1.send_json(
        json!({"type":"upload_progress","upload_id":"u","file_name":"f.txt","percent":100}),
    );
    assert_eq!(b3.recv_json()["percent"], 100);
    a1.expect_silence(QUIET);
    drop(b);
}

/// The next text frame that is not a ping or presence, as sent.
fn text_of(c: &mut Client) -> String {
    loop {
        if let tungstenite::Message::Text(t) = c.next_message() {
            if !t.contains(r#""type":"ping""#) && !t.contains(r#""type":"presence"#) {
                return t.to_string();
            }
        }
    }
}

/// A node started as its own process (so it can be killed with SIGKILL).
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn spawn_node(a: &TestGateway, env: &RedisEnv, node: &str) -> Node {
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_chatgate"))
        .env_clear()
        .arg("--listen")
        .arg(addr.to_string())
        .args(["--admin-listen", "off", "--shards", "2"])
        .arg("--database")
        .arg(&a.db_path)
        .args(["--jwt-secret", SECRET, "--redis-url", &env.url])
        .args(["--redis-prefix", &env.prefix, "--node-id", node])
        .args(["--redis-heartbeat", "200ms", "--presence-ttl", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chatgate");
    let node = Node { child, addr };
    wait_until(Duration::from_secs(20), "the node listens", || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    node
}

#[test]
fn a_killed_nodes_users_go_offline_within_ttl_and_a_heartbeat() {
    let Some(env) = RedisEnv::start("presence_kill") else {
        return;
    };
    let a = TestGateway::start_with(|c| c.bridge = Some(bridge(&env, "a")));
    // Users first: a binary on a database without users seeds demo ones.
    let alice = a.user("alice");
    let bob = a.user("bob");
    let carol = a.user("carol");
    let dave = a.user("dave");
    let conv = a.conversation(&[&alice, &bob, &carol, &dave]);
    let mut b = spawn_node(&a, &env, "b");
    wait_nodes(&env, 2);
    let (mut a1, _) = a.connect_at(a.addr(), conv, &alice, true);
    let (_d1, _) = a.connect_at(a.addr(), conv, &dave, false);
    assert_eq!(a1.recv_all_json(), presence(&dave, "online"));
    let (_b1, state) = a.connect_at(b.addr, conv, &bob, true);
    assert_eq!(ids(&state), (vec![alice.id, bob.id, dave.id], 3));
    let (_c1, _) = a.connect_at(b.addr, conv, &carol, false);
    // Dave also has a socket on B: he stays online through A.
    let (_d2, _) = a.connect_at(b.addr, conv, &dave, false);
    assert_eq!(a1.recv_all_json(), presence(&bob, "online"));
    assert_eq!(a1.recv_all_json(), presence(&carol, "online"));
    a1.expect_quiet(QUIET);
    b.child.kill().expect("SIGKILL node b");
    let killed = Instant::now();
    let mut off = Vec::new();
    for _ in 0..2 {
        off.push(a1.recv_all_json());
    }
    let took = killed.elapsed();
    off.sort_by_key(|v| v["user_id"].as_i64());
    assert_eq!(
        off,
        [presence(&bob, "offline"), presence(&carol, "offline")]
    );
    assert!(
        took <= TTL + 2 * HEARTBEAT + Duration::from_millis(300),
        "offline after {took:?}"
    );
    eprintln!("survivor marked the killed node's users offline after {took:?}");
    a1.expect_quiet(2 * TTL);
    let (_a2, state) = a.connect_at(a.addr(), conv, &alice, true);
    assert_eq!(ids(&state), (vec![alice.id, dave.id], 2));
}

#[test]
fn a_graceful_restart_within_the_ttl_flaps_nobody() {
    let Some(env) = RedisEnv::start("presence_restart") else {
        return;
    };
    let ttl = Duration::from_secs(3);
    let (a, b) = two_nodes_ttl(&env, ttl);
    let alice = a.user("alice");
    let bob = a.user("bob");
    let carol = a.user("carol");
    let conv = a.conversation(&[&alice, &bob, &carol]);
    let (mut a1, _) = a.connect_at(a.addr(), conv, &alice, true);
    let (mut b1, _) = a.connect_at(b.local_addr(), conv, &bob, true);
    let (_c1, _) = a.connect_at(b.local_addr(), conv, &carol, false);
    assert_eq!(a1.recv_all_json(), presence(&bob, "online"));
    assert_eq!(a1.recv_all_json(), presence(&carol, "online"));
    assert_eq!(b1.recv_all_json(), presence(&carol, "online"));
    // Node B shuts down (1001 to its sockets); Bob reconnects to node A
    // as soon as he is told, Carol does not come back.
    let stopping = std::thread::spawn(move || b.shutdown());
    b1.expect_close(1001);
    let (_b2, state) = a.connect_at(a.addr(), conv, &bob, true);
    let reconnected = Instant::now();
    assert!(ids(&state).0.contains(&bob.id), "{state}");
    stopping.join().expect("node b stops");
    // Only Carol goes offline, once node B's presence expired.
    assert_eq!(a1.recv_all_json(), presence(&carol, "offline"));
    let after = reconnected.elapsed();
    assert!(after >= ttl - Duration::from_secs(1), "{after:?}");
    a1.expect_quiet(Duration::from_secs(1));
}

/// A node whose subscribing connection drops reads presence again when it
/// is back: a report published meanwhile is not lost, nothing is told
/// twice and nobody flaps.
#[test]
fn presence_is_read_again_after_the_subscriber_reconnects() {
    let Some(env) = RedisEnv::start("presence_resub") else {
        return;
    };
    let (a, b) = two_nodes(&env);
    let alice = a.user("alice");
    let bob = a.user("bob");
    let carol = a.user("carol");
    let conv = a.conversation(&[&alice, &bob, &carol]);
    let (mut a1, _) = a.connect_at(a.addr(), conv, &alice, true);
    let (_b1, _) = a.connect_at(b.local_addr(), conv, &bob, true);
    assert_eq!(a1.recv_all_json(), presence(&bob, "online"));
    let mut admin = env.admin.clone();
    let name = format!("{}:a:sub", env.prefix);
    let id = env
        .rt
        .block_on(redis_support::client_id(&mut admin, &name))
        .expect("node a's subscriber");
    env.rt
        .block_on(redis_support::kill_client(&mut admin, id, None));
    // Published while node A's subscriber may be away.
    let (_c1, _) = a.connect_at(b.local_addr(), conv, &carol, false);
    assert_eq!(a1.recv_all_json(), presence(&carol, "online"));
    a1.expect_quiet(2 * TTL);
    let (_a2, state) = a.connect_at(a.addr(), conv, &alice, true);
    assert_eq!(ids(&state), (vec![alice.id, bob.id, carol.id], 3));
}

/// Three nodes: every node tells its own v2 sockets about users on the
/// other two, once; a user with tabs on two other nodes goes offline only
/// when the last one closes; a call reaches a user's tabs on two nodes.
#[test]
fn three_nodes_agree_on_presence() {
    let Some(env) = RedisEnv::start("presence_three") else {
        return;
    };
    let a = TestGateway::start_with(|c| c.bridge = Some(bridge(&env, "a")));
    let start = |node: &str| {
        let mut cfg: Config = a.config.clone();
        cfg.bridge = Some(bridge(&env, node));
        Gateway::start(cfg).expect("node starts")
    };
    let (b, c) = (start("b"), start("c"));
    wait_nodes(&env, 3);
    let alice = a.user("alice");
    let bob = a.user("bob");
    let carol = a.user("carol");
    let conv = a.conversation(&[&alice, &bob, &carol]);
    let (mut on_a, _) = a.connect_at(a.addr(), conv, &alice, true);
    let (mut on_b, state) = a.connect_at(b.local_addr(), conv, &bob, true);
    assert_eq!(ids(&state), (vec![alice.id, bob.id], 2));
    assert_eq!(on_a.recv_all_json(), presence(&bob, "online"));
    let (mut on_c, state) = a.connect_at(c.local_addr(), conv, &carol, true);
    assert_eq!(ids(&state), (vec![alice.id, bob.id, carol.id], 3));
    assert_eq!(on_a.recv_all_json(), presence(&carol, "online"));
    assert_eq!(on_b.recv_all_json(), presence(&carol, "online"));
    // Carol's second tab on node B: no transition anywhere.
    let (mut on_b_carol, _) = a.connect_at(b.local_addr(), conv, &carol, true);
    // A ring reaches both of Carol's tabs, on nodes B and C.
    on_a.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"x","kind":"ring","payload":[1, 2]}}"#,
        carol.id
    ));
    for s in [&mut on_c, &mut on_b_carol] {
        let got = s.recv_json();
        assert_eq!(
            (&got["kind"], &got["payload"]),
            (&json!("ring"), &json!([1, 2]))
        );
    }
    on_c.close(1000);
    for s in [&mut on_a, &mut on_b] {
        s.expect_quiet(QUIET);
    }
    on_b_carol.close(1000);
    assert_eq!(on_a.recv_all_json(), presence(&carol, "offline"));
    assert_eq!(on_b.recv_all_json(), presence(&carol, "offline"));
    on_a.expect_quiet(QUIET);
    on_b.expect_quiet(QUIET);
}
