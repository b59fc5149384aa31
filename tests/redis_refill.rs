//! Issue 21 item 4 on one Redis: the Redis every node shares is killed
//! (SIGKILL) for 4 s under cross-node traffic and started again, empty.
//! Cross-node v1 delivery resumes within 5 s of its return, and every v2
//! socket ends with every stored message exactly once (each sender's in
//! order) without reconnecting: what was published while a node's
//! subscription was down is refilled from the store. No socket is closed.
//!
//! Runs its own `redis-server` on a free port (`tests/fault_support`), three
//! gateway nodes on Postgres (`tests/pg_support`). In CI a missing
//! `redis-server` or Postgres fails the test.

#[macro_use]
#[allow(unused_macros)]
mod support;
mod fault_support;

use std::time::{Duration, Instant};

use chatgate::bridge::BridgeConfig;
use fault_support::scene::Scene;
use fault_support::server::{redis_tools, RedisServer};
use support::Target;

const TEST: &str = "redis_refill::v2_sockets_end_complete_after_redis_was_killed_for_4s";

fn bridge(url: &str, node: &str) -> BridgeConfig {
    let mut cfg = BridgeConfig::new(url);
    cfg.node_id = node.to_string();
    cfg.prefix = "refill".into();
    cfg.heartbeat = Duration::from_millis(200);
    cfg.backoff_max = Duration::from_millis(200);
    cfg.presence_ttl = Duration::from_secs(30);
    cfg
}

#[test]
fn v2_sockets_end_complete_after_redis_was_killed_for_4s() {
    if !redis_tools(TEST) {
        return;
    }
    let Some(on) = Target::postgres(TEST) else {
        return;
    };
    let mut redis = RedisServer::start(&[]);
    let url = redis.url();
    let mut scene = Scene::start(on, 3, |node| bridge(&url, node));
    scene.wait_connected(Duration::from_secs(10));
    scene.conversations(4);
    let numsub = |conv: i64| {
        let out = redis.cli(&["PUBSUB", "NUMSUB", &format!("refill:conv:{conv}")]);
        out.lines()
            .nth(1)
            .and_then(|n| n.trim().parse::<i64>().ok())
            == Some(3)
    };
    let running = scene.run(Duration::from_millis(40), numsub);
    std::thread::sleep(Duration::from_millis(1500));
    redis.kill();
    std::thread::sleep(Duration::from_secs(4));
    redis.restart();
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let outcome = running.finish();
    let resumed = outcome.v1_resumed_after(&scene, back);
    eprintln!(
        "{} messages sent; cross-node v1 delivery resumed {resumed:?} after Redis came back",
        outcome.sent
    );
    assert!(resumed <= Duration::from_secs(5), "{resumed:?}");
    outcome.assert_v2_complete(&scene);
}
