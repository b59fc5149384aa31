//! The Redis bridge against a real Redis: two bridges (node A, node B) on
//! one test runtime, each test on its own channel prefix.
//!
//! Covers: delivery once, in order, never back to the origin; one
//! subscription per node and conversation, released after the linger;
//! batched pipelines; recovery from killed connections (heartbeat,
//! reconnect, resubscribe); Redis down at start; queue overflow while down;
//! flush on shutdown. If Redis is unreachable the tests fail under `CI` and
//! skip (with a printed reason) otherwise.

mod redis_support;

use std::time::Duration;

use bytes::Bytes;
use chatgate::bridge::{Bridge, BridgeConfig, BridgeError, RemoteEvent};
use redis_support::{
    channels, client_id, eventually, inbox, kill_client, numsub, Inbox, Proxy, RedisEnv,
};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);

fn event(conversation_id: i64, n: usize) -> RemoteEvent {
    RemoteEvent {
        conversation_id,
        audience: chatgate::audience::Audience {
            except_user: n.is_multiple_of(2).then_some(7),
            v2_only: n.is_multiple_of(3),
            ..chatgate::audience::Audience::ALL
        },
        payload: Bytes::from(format!(r#"{{"type":"test","n":{n}}}"#)),
        kind: chatgate::bridge::RemoteKind::Frame,
    }
}

fn numbers(events: &[RemoteEvent]) -> Vec<usize> {
    events
        .iter()
        .map(|e| {
            let text = std::str::from_utf8(&e.payload).expect("utf-8 payload");
            let n = text.rsplit(':').next().expect("n field");
            n.trim_end_matches('}').parse().expect("number")
        })
        .collect()
}

fn start(env: &RedisEnv, cfg: BridgeConfig) -> (Bridge, Inbox) {
    let (deliver, inbox) = inbox();
    let bridge = Bridge::start(cfg, env.rt.handle(), deliver).expect("bridge starts");
    (bridge, inbox)
}

/// Waits until `n` nodes hold the channel of `conversation_id`.
async fn await_numsub(env: &RedisEnv, conversation_id: i64, n: i64) {
    let channel = env.channel(conversation_id);
    let mut admin = env.admin.clone();
    eventually(WAIT, &format!("{n} subscriber(s) on {channel}"), || {
        let (mut admin, channel) = (admin.clone(), channel.clone());
        async move { numsub(&mut admin, &channel).await == n }
    })
    .await;
    assert_eq!(numsub(&mut admin, &channel).await, n);
}

async fn await_connected(bridge: &Bridge) {
    eventually(WAIT, "bridge connected", || async {
        bridge.state().connected
    })
    .await;
}

#[test]
fn events_cross_once_in_order_and_never_come_back() {
    let Some(env) = RedisEnv::start("cross") else {
        return;
    };
    let (a, mut a_inbox) = start(&env, env.config("node-a"));
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        a.subscribe(1);
        b.subscribe(1);
        await_numsub(&env, 1, 2).await;
        await_connected(&a).await;

        let sent: Vec<RemoteEvent> = (0..50).map(|n| event(1, n)).collect();
        for e in &sent {
            a.publish(e.clone());
        }
        assert_eq!(b_inbox.take(50, WAIT).await, sent, "once, in order, intact");
        b_inbox.expect_nothing(QUIET).await;
        a_inbox.expect_nothing(Duration::ZERO).await;

        b.publish(event(1, 99));
        assert_eq!(numbers(&a_inbox.take(1, WAIT).await), vec![99]);
        b_inbox.expect_nothing(QUIET).await;

        let (sa, sb) = (a.state(), b.state());
        assert_eq!((sa.published_total, sa.received_total), (50, 1));
        assert_eq!((sb.published_total, sb.received_total), (1, 50));
        assert_eq!((sa.malformed_total, sb.malformed_total), (0, 0));
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_conversation_never_subscribed_has_no_subscription_and_no_delivery() {
    let Some(env) = RedisEnv::start("unsubscribed") else {
        return;
    };
    let (a, _a_inbox) = start(&env, env.config("node-a"));
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        b.subscribe(1);
        b.subscribe(1); // a second local member: still one subscription
        await_numsub(&env, 1, 1).await;
        await_connected(&a).await;

        a.publish(event(2, 1));
        a.publish(event(1, 2));
        let got = b_inbox.take(1, WAIT).await;
        assert_eq!((got[0].conversation_id, numbers(&got)), (1, vec![2]));
        b_inbox.expect_nothing(QUIET).await;

        let mut admin = env.admin.clone();
        assert_eq!(numsub(&mut admin, &env.channel(2)).await, 0);
        let pattern = format!("{}:conv:*", env.prefix);
        assert_eq!(channels(&mut admin, &pattern).await, vec![env.channel(1)]);
        assert_eq!(b.state().subscriptions, 1);
        assert_eq!(a.state().subscriptions, 0);
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn unsubscribe_lingers_then_releases_the_channel() {
    let Some(env) = RedisEnv::start("linger") else {
        return;
    };
    let mut b_cfg = env.config("node-b");
    b_cfg.unsubscribe_linger = Duration::from_secs(1);
    let (a, _a_inbox) = start(&env, env.config("node-a"));
    let (b, mut b_inbox) = start(&env, b_cfg);
    env.rt.block_on(async {
        b.subscribe(1);
        await_numsub(&env, 1, 1).await;
        await_connected(&a).await;

        b.unsubscribe(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            numsub(&mut env.admin.clone(), &env.channel(1)).await,
            1,
            "lingering"
        );
        assert_eq!(b.state().subscriptions, 1);

        await_numsub(&env, 1, 0).await;
        // The figure follows Redis's reply to the UNSUBSCRIBE.
        eventually(WAIT, "the subscription released", || async {
            b.state().subscriptions == 0
        })
        .await;
        a.publish(event(1, 1));
        b_inbox.expect_nothing(QUIET).await;
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn subscribing_again_within_the_linger_keeps_the_subscription() {
    let Some(env) = RedisEnv::start("relink") else {
        return;
    };
    let (a, _a_inbox) = start(&env, env.config("node-a"));
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        b.subscribe(1);
        await_numsub(&env, 1, 1).await;
        await_connected(&a).await;

        b.unsubscribe(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.subscribe(1);
        tokio::time::sleep(Duration::from_millis(800)).await; // twice the linger
        assert_eq!(numsub(&mut env.admin.clone(), &env.channel(1)).await, 1);

        a.publish(event(1, 5));
        assert_eq!(numbers(&b_inbox.take(1, WAIT).await), vec![5]);
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_burst_of_1000_goes_out_in_few_pipelines() {
    let Some(env) = RedisEnv::start("burst") else {
        return;
    };
    let (a, _a_inbox) = start(&env, env.config("node-a"));
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        b.subscribe(1);
        await_numsub(&env, 1, 1).await;
        await_connected(&a).await;

        for n in 0..1000 {
            a.publish(event(1, n));
        }
        let got = b_inbox.take(1000, WAIT).await;
        assert_eq!(numbers(&got), (0..1000).collect::<Vec<_>>(), "in order");

        let s = a.state();
        eprintln!(
            "1000 events: {} pipelines, largest {}, last {}",
            s.batches_total, s.max_batch_size, s.last_batch_size
        );
        assert_eq!(s.published_total, 1000);
        assert!(s.batches_total < 200, "{} round trips", s.batches_total);
        assert!(s.max_batch_size > 1);
        assert_eq!(s.queue_depth, 0);
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn killed_connections_are_noticed_and_restored() {
    let Some(env) = RedisEnv::start("kill") else {
        return;
    };
    let (a_cfg, b_cfg) = (env.config("node-a"), env.config("node-b"));
    let a_pub = format!("{}:pub", a_cfg.client_name_base());
    let b_sub = format!("{}:sub", b_cfg.client_name_base());
    let (a, _a_inbox) = start(&env, a_cfg);
    let (b, mut b_inbox) = start(&env, b_cfg);
    env.rt.block_on(async {
        let mut admin = env.admin.clone();
        b.subscribe(1);
        await_numsub(&env, 1, 1).await;
        await_connected(&a).await;
        a.publish(event(1, 0));
        assert_eq!(numbers(&b_inbox.take(1, WAIT).await), vec![0]);

        let sub_id = client_id(&mut admin, &b_sub).await.expect("B's subscriber");
        let pub_id = client_id(&mut admin, &a_pub).await.expect("A's publisher");
        assert_eq!(kill_client(&mut admin, sub_id, Some("pubsub")).await, 1);
        assert_eq!(kill_client(&mut admin, pub_id, None).await, 1);

        // A's publisher is idle: only its heartbeat can notice.
        eventually(WAIT, "both bridges reconnected", || async {
            a.state().reconnects_total >= 1 && b.state().reconnects_total >= 1
        })
        .await;
        await_connected(&a).await;
        await_connected(&b).await;
        await_numsub(&env, 1, 1).await; // resubscribed
        let new_sub = client_id(&mut admin, &b_sub).await.expect("new subscriber");
        let new_pub = client_id(&mut admin, &a_pub).await.expect("new publisher");
        assert_ne!((new_sub, new_pub), (sub_id, pub_id));

        a.publish(event(1, 1));
        assert_eq!(numbers(&b_inbox.take(1, WAIT).await), vec![1]);
        b_inbox.expect_nothing(QUIET).await;
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn events_published_into_a_dead_connection_are_kept_and_sent_once() {
    let Some(env) = RedisEnv::start("retry") else {
        return;
    };
    let a_cfg = env.config("node-a");
    let a_pub = format!("{}:pub", a_cfg.client_name_base());
    let (a, _a_inbox) = start(&env, a_cfg);
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        let mut admin = env.admin.clone();
        b.subscribe(1);
        await_numsub(&env, 1, 1).await;
        await_connected(&a).await;
        let pub_id = client_id(&mut admin, &a_pub).await.expect("A's publisher");
        assert_eq!(kill_client(&mut admin, pub_id, None).await, 1);

        // The first pipeline meets the dead connection: it must be re-sent
        // after the reconnect, once, in order.
        for n in 0..100 {
            a.publish(event(1, n));
        }
        let got = b_inbox.take(100, WAIT).await;
        assert_eq!(numbers(&got), (0..100).collect::<Vec<_>>());
        b_inbox.expect_nothing(QUIET).await;
        let s = a.state();
        assert!(s.reconnects_total >= 1);
        assert_eq!((s.published_total, s.dropped_total), (100, 0));
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn redis_unreachable_at_start_then_connects_and_delivers() {
    let Some(env) = RedisEnv::start("late") else {
        return;
    };
    let proxy = env.rt.block_on(Proxy::start(&env.url));
    let mut a_cfg = env.config("node-a");
    a_cfg.url = proxy.url();
    let (a, mut a_inbox) = start(&env, a_cfg);
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        a.subscribe(1);
        b.subscribe(1);
        await_numsub(&env, 1, 1).await; // B only
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = a.state();
        assert!(!s.connected, "connected through a refusing proxy");
        assert_eq!(s.subscriptions, 1, "wanted while down");
        for n in 0..3 {
            a.publish(event(1, n));
        }
        assert_eq!(a.state().queue_depth, 3);

        proxy.forward();
        await_connected(&a).await;
        assert_eq!(numbers(&b_inbox.take(3, WAIT).await), vec![0, 1, 2]);
        await_numsub(&env, 1, 2).await; // A subscribed once connected
        b.publish(event(1, 9));
        assert_eq!(numbers(&a_inbox.take(1, WAIT).await), vec![9]);
        assert_eq!(a.state().queue_depth, 0);
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn queue_overflow_while_down_drops_the_oldest_and_counts() {
    let Some(env) = RedisEnv::start("overflow") else {
        return;
    };
    let proxy = env.rt.block_on(Proxy::start(&env.url));
    let mut a_cfg = env.config("node-a");
    a_cfg.url = proxy.url();
    a_cfg.queue_max = 10;
    let (a, _a_inbox) = start(&env, a_cfg);
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        b.subscribe(1);
        await_numsub(&env, 1, 1).await;
        for n in 0..25 {
            a.publish(event(1, n));
        }
        let s = a.state();
        assert!(!s.connected);
        assert_eq!((s.queue_depth, s.dropped_total), (10, 15));

        proxy.forward();
        let got = b_inbox.take(10, WAIT).await;
        assert_eq!(
            numbers(&got),
            (15..25).collect::<Vec<_>>(),
            "the newest, in order"
        );
        b_inbox.expect_nothing(QUIET).await;
        assert_eq!(a.state().dropped_total, 15);
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn shutdown_publishes_what_is_queued() {
    let Some(env) = RedisEnv::start("flush") else {
        return;
    };
    let (a, _a_inbox) = start(&env, env.config("node-a"));
    let (b, mut b_inbox) = start(&env, env.config("node-b"));
    env.rt.block_on(async {
        b.subscribe(1);
        await_numsub(&env, 1, 1).await;
        await_connected(&a).await;
    });
    for n in 0..20 {
        a.publish(event(1, n));
    }
    a.shutdown(); // outside the runtime: waits for the flush
    env.rt.block_on(async {
        let got = b_inbox.take(20, WAIT).await;
        assert_eq!(numbers(&got), (0..20).collect::<Vec<_>>());
        assert!(!a.state().connected);
    });
    b.shutdown();
}

#[test]
fn start_fails_on_a_bad_url_but_not_on_a_dead_redis() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (deliver, _inbox) = inbox();
    let bad = Bridge::start(
        BridgeConfig::new("http://nope/"),
        rt.handle(),
        deliver.clone(),
    );
    assert!(matches!(bad, Err(BridgeError::InvalidUrl(_))));

    let mut dead = BridgeConfig::new("redis://127.0.0.1:1/");
    dead.backoff_max = Duration::from_millis(50);
    let bridge = Bridge::start(dead, rt.handle(), deliver).expect("starts while Redis is down");
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    bridge.publish(event(1, 0));
    let s = bridge.state();
    assert!(!s.connected);
    assert_eq!(s.queue_depth, 1);
    bridge.shutdown();
}
