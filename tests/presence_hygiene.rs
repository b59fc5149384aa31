//! A dead node's presence leaves Redis (`bridge/janitor.rs`), on a real
//! Redis, with a short presence TTL (1 s) and heartbeat (200 ms):
//!
//! - a node with 1,000 users online in 100 conversations is killed with
//!   SIGKILL (its own process, the binary): within the TTL plus a
//!   heartbeat its fields are gone from every hash (HLEN), its index and
//!   registry entry too, the two survivors removed each field once between
//!   them, and neither reports any of its users online;
//! - two survivors cleaning the same dead node at the same moment remove
//!   each of its 20,000 fields exactly once between them.
//!
//! Redis unreachable: the tests fail under `CI`, skip otherwise.

#[macro_use]
#[allow(unused_macros)]
mod support;
mod redis_support;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatgate::bridge::{Bridge, BridgeConfig};
use chatgate::{Config, Gateway};
use redis::aio::MultiplexedConnection;
use redis_support::{inbox, numsub, RedisEnv};
use support::*;

const TTL: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_millis(200);

fn bridge(env: &RedisEnv, node: &str) -> BridgeConfig {
    let mut cfg = env.config(node);
    cfg.presence_ttl = TTL;
    cfg.heartbeat = HEARTBEAT;
    cfg
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
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

fn spawn_node(a: &TestGateway, env: &RedisEnv, node: &str) -> Node {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
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
        .args([
            "--handshakes-per-ip",
            "100000",
            "--handshake-ip-burst",
            "100000",
        ])
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

fn hash_key(env: &RedisEnv, conv: i64) -> String {
    format!("{}:presence:{conv}", env.prefix)
}

/// Fields of `users` left in the hashes of `convs`.
fn fields_of(env: &RedisEnv, convs: &[i64], users: &HashSet<i64>) -> usize {
    let mut admin = env.admin.clone();
    env.rt.block_on(async {
        let mut left = 0;
        for conv in convs {
            let keys: Vec<String> = redis::cmd("HKEYS")
                .arg(hash_key(env, *conv))
                .query_async(&mut admin)
                .await
                .expect("HKEYS");
            left += keys
                .iter()
                .filter_map(|k| k.split_once(':'))
                .filter(|(_, user)| user.parse().is_ok_and(|u: i64| users.contains(&u)))
                .count();
        }
        left
    })
}

fn hlen(env: &RedisEnv, conv: i64) -> i64 {
    let mut admin = env.admin.clone();
    env.rt.block_on(async {
        redis::cmd("HLEN")
            .arg(hash_key(env, conv))
            .query_async(&mut admin)
            .await
            .expect("HLEN")
    })
}

async fn keys(admin: &mut MultiplexedConnection, pattern: &str) -> BTreeSet<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async::<Vec<String>>(admin)
        .await
        .expect("KEYS")
        .into_iter()
        .collect()
}

async fn members(admin: &mut MultiplexedConnection, key: &str) -> BTreeSet<String> {
    redis::cmd("SMEMBERS")
        .arg(key)
        .query_async::<Vec<String>>(admin)
        .await
        .expect("SMEMBERS")
        .into_iter()
        .collect()
}

const CONVERSATIONS: usize = 100;
const PER_CONVERSATION: usize = 10;

#[test]
fn a_killed_nodes_presence_leaves_redis_within_the_ttl_and_a_heartbeat() {
    let Some(env) = RedisEnv::start("hygiene_kill") else {
        return;
    };
    // Two survivors (in-process), a third node as its own process.
    let a = TestGateway::start_with(|c| c.bridge = Some(bridge(&env, "a")));
    let mut cfg: Config = a.config.clone();
    cfg.bridge = Some(bridge(&env, "c"));
    let c = Gateway::start(cfg).expect("node c starts");
    let watch_a = a.user("watch_a");
    let watch_c = a.user("watch_c");
    let users: Vec<User> = (0..CONVERSATIONS * PER_CONVERSATION)
        .map(|i| a.user(&format!("u{i}")))
        .collect();
    let convs: Vec<i64> = users
        .chunks(PER_CONVERSATION)
        .map(|members| {
            let mut all: Vec<&User> = members.iter().collect();
            all.extend([&watch_a, &watch_c]);
            a.conversation(&all)
        })
        .collect();
    let b = spawn_node(&a, &env, "b");
    let mut admin = env.admin.clone();
    let nodes = format!("{}:nodes", env.prefix);
    wait_until(Duration::from_secs(10), "three nodes", || {
        env.rt.block_on(numsub(&mut admin, &nodes)) == 3
    });
    // Watchers (v2) on the survivors: A in conversations 0..10, C in 10..20.
    let mut watchers = Vec::new();
    for (i, conv) in convs.iter().enumerate().take(20) {
        let (user, addr) = match i < 10 {
            true => (&watch_a, a.addr()),
            false => (&watch_c, c.local_addr()),
        };
        watchers.push(a.connect_at(addr, *conv, user, true).0);
    }
    // 1,000 users online through node B.
    let connected = Instant::now();
    let sockets: Vec<Client> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            a.connect_at(b.addr, convs[i / PER_CONVERSATION], u, false)
                .0
        })
        .collect();
    let on_b: HashSet<i64> = users.iter().map(|u| u.id).collect();
    wait_until(Duration::from_secs(20), "B's 1,000 fields in Redis", || {
        fields_of(&env, &convs, &on_b) == users.len()
    });
    eprintln!(
        "{} sockets on node B, their fields in Redis after {:?}",
        sockets.len(),
        connected.elapsed()
    );
    let index_pattern = format!("{}:presence-index:*", env.prefix);
    let registry = format!("{}:presence-nodes", env.prefix);
    env.rt.block_on(async {
        assert_eq!(keys(&mut admin, &index_pattern).await.len(), 3);
        assert_eq!(members(&mut admin, &registry).await.len(), 3);
    });

    drop(b); // SIGKILL
    let killed = Instant::now();
    wait_until(TTL * 5, "B's fields gone", || {
        fields_of(&env, &convs, &on_b) == 0
    });
    let took = killed.elapsed();
    eprintln!("a killed node's 1,000 presence fields were gone from Redis {took:?} after SIGKILL");
    assert!(
        took <= TTL + HEARTBEAT + Duration::from_millis(300),
        "gone only after {took:?}"
    );
    for (i, conv) in convs.iter().enumerate() {
        let survivors = i64::from(i < 20);
        assert_eq!(hlen(&env, *conv), survivors, "conversation {i}");
    }
    let (state_a, state_c) = (
        a.gateway_ref().bridge_state().unwrap(),
        c.bridge_state().unwrap(),
    );
    eprintln!(
        "reaped by A: {} fields, by C: {} fields",
        state_a.presence_fields_reaped_total, state_c.presence_fields_reaped_total
    );
    assert_eq!(
        state_a.presence_fields_reaped_total + state_c.presence_fields_reaped_total,
        users.len() as u64,
        "each field removed once between the survivors"
    );
    assert_eq!(
        state_a.presence_nodes_reaped_total + state_c.presence_nodes_reaped_total,
        1
    );
    env.rt.block_on(async {
        assert_eq!(
            keys(&mut admin, &index_pattern).await.len(),
            2,
            "B's index gone"
        );
        assert_eq!(
            members(&mut admin, &registry).await.len(),
            2,
            "B unregistered"
        );
    });
    // No survivor reports any of B's users online: a new socket's
    // presence_state on each survivor, in watched and unwatched conversations.
    let probe = a.user("probe");
    for (i, conv) in [(0, convs[0]), (15, convs[15]), (50, convs[50])] {
        a.add_participant(conv, probe.id);
        for addr in [a.addr(), c.local_addr()] {
            let (_s, state) = a.connect_at(addr, conv, &probe, true);
            let online: BTreeSet<i64> = state["online"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["user_id"].as_i64().unwrap())
                .collect();
            assert!(
                online.iter().all(|u| !on_b.contains(u)),
                "conversation {i}: {state}"
            );
            assert!(online.contains(&probe.id), "{state}");
        }
    }
    drop(sockets);
    drop(watchers);
}

#[test]
fn two_survivors_cleaning_the_same_dead_node_at_once_remove_each_field_once() {
    let Some(env) = RedisEnv::start("hygiene_race") else {
        return;
    };
    const FIELDS: usize = 20_000;
    const HASHES: i64 = 200;
    // A dead node as it leaves Redis: registered, fields and index, no
    // liveness key.
    let dead = "00000000deadbeef";
    let mut admin = env.admin.clone();
    let registry = format!("{}:presence-nodes", env.prefix);
    let index = format!("{}:presence-index:{dead}", env.prefix);
    env.rt.block_on(async {
        let mut pipe = redis::pipe();
        pipe.sadd(&registry, dead).ignore();
        for i in 0..FIELDS as i64 {
            let (conv, user) = (i % HASHES + 1, i + 1);
            pipe.hset(hash_key(&env, conv), format!("{dead}:{user}"), "0name")
                .ignore();
            pipe.sadd(&index, format!("{conv}:{user}")).ignore();
        }
        pipe.query_async::<()>(&mut admin).await.expect("seed");
    });
    // Two bridges start together: their janitors sweep at once.
    let (deliver, _inbox) = inbox();
    let start = |node: &str| Bridge::start(bridge(&env, node), env.rt.handle(), deliver.clone());
    let (x, y) = (start("x").unwrap(), start("y").unwrap());
    wait_until(
        Duration::from_secs(10),
        "the dead node's fields gone",
        || (1..=HASHES).all(|conv| hlen(&env, conv) == 0),
    );
    wait_until(Duration::from_secs(5), "the dead node unregistered", || {
        let (sx, sy) = (x.state(), y.state());
        sx.presence_nodes_reaped_total + sy.presence_nodes_reaped_total == 1
    });
    let (sx, sy) = (x.state(), y.state());
    eprintln!(
        "two janitors at once: x removed {} fields, y {}",
        sx.presence_fields_reaped_total, sy.presence_fields_reaped_total
    );
    assert_eq!(
        sx.presence_fields_reaped_total + sy.presence_fields_reaped_total,
        FIELDS as u64
    );
    env.rt.block_on(async {
        let registered = members(&mut admin, &registry).await;
        assert!(!registered.contains(dead), "{registered:?}");
        assert!(keys(&mut admin, &index).await.is_empty());
    });
    x.shutdown();
    y.shutdown();
}
