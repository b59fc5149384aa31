//! A cluster in the middle of a rolling upgrade, on a real Redis
//! (`bridge/envelope.rs`, deploy/OPERATIONS.md "Upgrading a running
//! cluster"):
//!
//! - a node of an earlier release (one built before call signals and
//!   presence, emulated with `BridgeConfig::envelopes`) beside a current
//!   node: v1 chat and typing cross both ways; what the old node cannot
//!   read (presence reports, call signals) is skipped and counted there
//!   (`chatgate_bridge_skipped_total{reason="flags"}`), nothing else;
//! - everything a current node publishes decodes with the frozen decoder
//!   of the previous release (tests/fixtures/envelope_release1.rs), as a
//!   node of that release reads it;
//! - envelopes of a later release (hand-built version 3): a plain frame
//!   with an optional part is delivered, one with a required bit this
//!   build does not know is skipped and counted, and the old node skips
//!   both; nothing crashes, chat goes on.

#[macro_use]
#[allow(unused_macros)]
mod support;
mod redis_support;
#[path = "fixtures/envelope_release1.rs"]
mod release1;

use std::time::{Duration, Instant};

use chatgate::bridge::{BridgeConfig, EnvelopeReads};
use chatgate::{Config, Gateway};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use redis_support::{numsub, RedisEnv};
use serde_json::json;
use support::*;

const QUIET: Duration = Duration::from_millis(400);

fn bridge(env: &RedisEnv, node: &str, envelopes: EnvelopeReads) -> BridgeConfig {
    let mut cfg = env.config(node);
    cfg.envelopes = envelopes;
    cfg
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_subscribers(env: &RedisEnv, conv: i64, n: i64) {
    let mut admin = env.admin.clone();
    let channel = env.channel(conv);
    wait_until(Duration::from_secs(10), "subscriptions", || {
        env.rt.block_on(numsub(&mut admin, &channel)) == n
    });
}

/// An old node (`TestGateway`, emulating `old`) and a current node on
/// its database.
fn mixed(env: &RedisEnv, old: EnvelopeReads) -> (TestGateway, Gateway) {
    let a = TestGateway::start_with(|c| c.bridge = Some(bridge(env, "old", old)));
    let mut cfg: Config = a.config.clone();
    cfg.bridge = Some(bridge(env, "new", EnvelopeReads::CURRENT));
    let b = Gateway::start(cfg).expect("the current node starts");
    wait_until(Duration::from_secs(10), "both bridges connected", || {
        a.gateway_ref().bridge_state().is_some_and(|s| s.connected)
            && b.bridge_state().is_some_and(|s| s.connected)
    });
    (a, b)
}

fn metric_line(gw: &TestGateway, prefix: &str) -> Option<String> {
    let (_, body) = http_get(gw.admin_addr(), "/metrics");
    body.lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

#[test]
fn v1_chat_and_typing_cross_a_mixed_cluster_both_ways_and_the_rest_is_skipped_and_counted() {
    let Some(env) = RedisEnv::start("rolling_mixed") else {
        return;
    };
    let (old, new) = mixed(&env, EnvelopeReads::BEFORE_PRESENCE);
    let alice = old.user("alice");
    let bob = old.user("bob");
    let carol = old.user("carol");
    let erin = old.user("erin");
    let conv = old.conversation(&[&alice, &bob, &carol, &erin]);
    let (mut alice_old, _) = old.connect_at(old.addr(), conv, &alice, false);
    let (mut bob_new, _) = old.connect_at(new.local_addr(), conv, &bob, false);
    wait_subscribers(&env, conv, 2);

    // v1 chat, both ways.
    alice_old.chat("from the old node");
    let m = alice_old.recv_new_message();
    assert_eq!(bob_new.recv_new_message(), m);
    bob_new.chat("from the new node");
    let m = bob_new.recv_new_message();
    assert_eq!(alice_old.recv_new_message(), m);
    // Typing, both ways (all but the typist: flag bit 0).
    alice_old.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        bob_new.recv_json(),
        json!({"type": "typing", "user_id": alice.id, "username": "alice", "is_typing": true})
    );
    bob_new.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        alice_old.recv_json(),
        json!({"type": "typing", "user_id": bob.id, "username": "bob", "is_typing": true})
    );

    // v2 users on the new node: their presence reports (bit 3) and a call
    // signal (bit 2) reach the old node, which cannot read them.
    let (mut carol_new, _) = old.connect_at(new.local_addr(), conv, &carol, true);
    let (mut erin_new, _) = old.connect_at(new.local_addr(), conv, &erin, true);
    assert_eq!(carol_new.recv_all_json()["type"], "presence");
    carol_new.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"c","kind":"ring"}}"#,
        erin.id
    ));
    assert_eq!(erin_new.recv_json()["kind"], "ring");
    wait_until(Duration::from_secs(5), "the old node's skips", || {
        old.gateway_ref().bridge_state().unwrap().skipped.flags >= 3
    });
    let skipped = old.gateway_ref().bridge_state().unwrap().skipped;
    assert_eq!(
        (skipped.version, skipped.required, skipped.optional),
        (0, 0, 0)
    );
    let line = metric_line(&old, r#"chatgate_bridge_skipped_total{reason="flags"}"#)
        .expect("the skip counter is exported");
    let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= 3, "{line}");
    // The v1 sockets saw none of it; the new node skipped nothing.
    alice_old.expect_silence(QUIET);
    bob_new.expect_silence(Duration::ZERO);
    let state = new.bridge_state().unwrap();
    assert_eq!(state.skipped, Default::default());
    assert_eq!(state.malformed_total, 0);
    assert_eq!(old.gateway_ref().bridge_state().unwrap().malformed_total, 0);

    // Nothing broke: chat goes on both ways, v2 sockets get it too.
    bob_new.chat("still fine");
    let m = bob_new.recv_new_message();
    assert_eq!(alice_old.recv_new_message(), m);
    assert_eq!(carol_new.recv_new_message(), m);
    assert_eq!(erin_new.recv_new_message(), m);
    alice_old.chat("and back");
    let m = alice_old.recv_new_message();
    assert_eq!(bob_new.recv_new_message(), m);
    assert_eq!(carol_new.recv_new_message(), m);
    assert_eq!(erin_new.recv_new_message(), m);
    drop(new);
}

/// A RESP3 subscriber that records every raw message on `channels`.
struct RawSubscriber {
    pushes: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
    _conn: redis::aio::MultiplexedConnection,
}

impl RawSubscriber {
    fn start(env: &RedisEnv, channels: &[String]) -> RawSubscriber {
        let url = format!("{}/?protocol=resp3", env.url.trim_end_matches('/'));
        let client = redis::Client::open(url).expect("redis url");
        let (tx, pushes) = tokio::sync::mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new().set_push_sender(tx);
        let conn = env.rt.block_on(async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .expect("connect");
            for c in channels {
                conn.subscribe(c).await.expect("subscribe");
            }
            conn
        });
        RawSubscriber {
            pushes,
            _conn: conn,
        }
    }

    /// (channel, message) of every message received so far.
    fn drain(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while let Ok(push) = self.pushes.try_recv() {
            if push.kind != PushKind::Message {
                continue;
            }
            if let [Value::BulkString(channel), Value::BulkString(message)] = &push.data[..] {
                out.push((
                    String::from_utf8_lossy(channel).into_owned(),
                    message.clone(),
                ));
            }
        }
        out
    }
}

#[test]
fn the_previous_release_decodes_everything_a_current_node_publishes() {
    let Some(env) = RedisEnv::start("rolling_release1") else {
        return;
    };
    let node =
        TestGateway::start_with(|c| c.bridge = Some(bridge(&env, "new", EnvelopeReads::CURRENT)));
    let alice = node.user("alice");
    let carol = node.user("carol");
    let erin = node.user("erin");
    let conv = node.conversation(&[&alice, &carol, &erin]);
    let nodes = format!("{}:nodes", env.prefix);
    let mut raw = RawSubscriber::start(&env, &[env.channel(conv), nodes.clone()]);

    let mut alice_v1 = node.connect(conv, &alice);
    let (mut carol_v2, _) = node.connect_at(node.addr(), conv, &carol, true);
    let (mut erin_v2, _) = node.connect_at(node.addr(), conv, &erin, true);
    alice_v1.chat("hello");
    let m = alice_v1.recv_new_message();
    let id = m["id"].as_i64().unwrap();
    alice_v1.send_json(json!({"type": "typing", "is_typing": true}));
    carol_v2.send_json(json!({"type": "react", "message_id": id, "emoji": "👍"}));
    carol_v2.send_json(json!({"type": "mark_read", "message_id": id}));
    carol_v2.send_text(&format!(
        r#"{{"type":"call_signal","to_user_id":{},"call_id":"c","kind":"ring"}}"#,
        erin.id
    ));
    assert_eq!(erin_v2.recv_json()["type"], "new_message");
    erin_v2.close(1000);
    std::thread::sleep(Duration::from_millis(800));

    let got = raw.drain();
    let mut seen = std::collections::BTreeSet::new();
    let mut heartbeats = 0;
    for (channel, message) in &got {
        if *channel == nodes {
            assert_eq!(message.len(), 8, "a heartbeat is the instance, 8 bytes");
            heartbeats += 1;
            continue;
        }
        let (header, at) = release1::decode(message)
            .unwrap_or_else(|e| panic!("the previous release refuses {message:?}: {e:?}"));
        assert_eq!(header.node_id, b"new");
        assert_eq!(header.conversation_id, conv);
        let kind = match header {
            h if h.presence => "presence report",
            h if h.audience.only_user.is_some() => "call signal",
            h if h.audience.v2_only => "v2 only",
            h if h.audience.except_user.is_some() => "all but a user",
            _ => "all",
        };
        if kind != "presence report" {
            serde_json::from_slice::<serde_json::Value>(&message[at..]).expect("a JSON frame");
        }
        seen.insert(kind);
    }
    assert!(heartbeats >= 1, "{got:?}");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "all",
            "all but a user",
            "call signal",
            "presence report",
            "v2 only"
        ]
    );
}

// ---- a later release -----------------------------------------------------

const FIXTURE_INSTANCE: u64 = 0xfeed;

/// A version-1 envelope, byte by byte (the layout of bridge/envelope.rs).
fn v1(node: &str, seq: u64, conv: i64, flags: u8, users: &[i64], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![1, node.len() as u8];
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(&FIXTURE_INSTANCE.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&conv.to_be_bytes());
    out.push(flags);
    for u in users {
        out.extend_from_slice(&u.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// A version-3 envelope as a later release would write it: version 2's
/// framing, `required` and `optional` flags, `extra` field bytes after the
/// known ones.
fn v3(
    node: &str,
    seq: u64,
    conv: i64,
    required: u8,
    optional: u8,
    extra: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut out = vec![3, 0, 0, node.len() as u8];
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(&FIXTURE_INSTANCE.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&conv.to_be_bytes());
    out.push(required);
    out.push(optional);
    out.extend_from_slice(extra);
    let h = out.len() as u16;
    out[1..3].copy_from_slice(&h.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn a_later_release_is_read_in_part_and_what_is_skipped_is_counted() {
    let Some(env) = RedisEnv::start("rolling_later") else {
        return;
    };
    let (old, new) = mixed(&env, EnvelopeReads::PREVIOUS);
    let alice = old.user("alice");
    let bob = old.user("bob");
    let conv = old.conversation(&[&alice, &bob]);
    let (mut on_old, _) = old.connect_at(old.addr(), conv, &alice, false);
    let (mut on_new, _) = old.connect_at(new.local_addr(), conv, &bob, false);
    wait_subscribers(&env, conv, 2);

    let frame = |n: u32| format!(r#"{{"type":"fixture","n":{n}}}"#);
    let publish = |message: Vec<u8>| {
        let mut admin = env.admin.clone();
        env.rt.block_on(async {
            redis::cmd("PUBLISH")
                .arg(env.channel(conv))
                .arg(message)
                .query_async::<i64>(&mut admin)
                .await
                .expect("PUBLISH")
        })
    };
    let next = "next-release";
    // A plain frame with an optional part (bit 0, a 12-byte field).
    publish(v3(next, 1, conv, 0, 0b1, &[9; 12], frame(1).as_bytes()));
    // A frame with a required bit nobody here knows (bit 6).
    publish(v3(
        next,
        2,
        conv,
        0b100_0000,
        0,
        &[9; 8],
        frame(2).as_bytes(),
    ));
    // Version 3 with known bits only: all but alice.
    let mut except = alice.id.to_be_bytes().to_vec();
    except.extend_from_slice(&[1, 2, 3]);
    publish(v3(next, 3, conv, 0b1, 0, &except, frame(3).as_bytes()));
    // A plain version-1 frame: every release delivers it.
    publish(v1(next, 4, conv, 0, &[], frame(4).as_bytes()));

    let n = |v: serde_json::Value| v["n"].as_u64().unwrap();
    assert_eq!(n(on_new.recv_json()), 1);
    assert_eq!(n(on_new.recv_json()), 3);
    assert_eq!(n(on_new.recv_json()), 4);
    assert_eq!(
        n(on_old.recv_json()),
        4,
        "the previous release reads version 1 only"
    );
    on_new.expect_silence(QUIET);
    on_old.expect_silence(Duration::ZERO);

    let skipped = new.bridge_state().unwrap().skipped;
    assert_eq!(
        (
            skipped.version,
            skipped.flags,
            skipped.required,
            skipped.optional
        ),
        (0, 0, 1, 1)
    );
    let skipped = old.gateway_ref().bridge_state().unwrap().skipped;
    assert_eq!(
        (
            skipped.version,
            skipped.flags,
            skipped.required,
            skipped.optional
        ),
        (3, 0, 0, 0)
    );
    // Nothing crashed: chat goes on both ways.
    on_old.chat("after the fixtures");
    let m = on_old.recv_new_message();
    assert_eq!(on_new.recv_new_message(), m);
    drop(new);
}
