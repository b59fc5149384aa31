//! Per-user and per-IP limits on a real gateway: chat bursts (`Rate limit
//! exceeded`, the message dropped and not stored), typing as a state
//! (repeats coalesced, changes over the budget dropped silently), sustained
//! abuse (1008), sockets per user (the 33rd refused with 1008 after the
//! upgrade), handshakes per client IP (HTTP 429 before any JWT work), and
//! `X-Real-IP` believed only from a trusted proxy.
//!
//! Every test sets `rate_limits` explicitly (the test config raises them out
//! of the way). Sustained rates are 1/s where a test counts a burst, so a
//! slow machine cannot refill a token in the middle of it.

#[allow(unused_macros)]
mod support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chatgate::config::LimitsConfig;
use chatgate::shard_for;
use serde_json::{json, Value};
use support::*;
use tungstenite::Message;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// A second client address on loopback (all of 127/8 is local on Linux).
const OTHER_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn rate_limited() -> Value {
    json!({"type": "error", "message": "Rate limit exceeded"})
}

/// Sends every text in one write (one burst).
fn chat_json(content: &str) -> String {
    json!({"type": "chat_message", "content": content}).to_string()
}

/// What a sender reads back after a burst: the contents of its
/// `new_message`s and every other JSON message, until `n` have arrived.
fn read_replies(c: &mut Client, n: usize) -> (Vec<String>, Vec<Value>) {
    let (mut delivered, mut other) = (Vec::new(), Vec::new());
    while delivered.len() + other.len() < n {
        let v = c.recv_json();
        if v["type"] == "new_message" {
            delivered.push(v["message"]["content"].as_str().unwrap().to_owned());
        } else {
            other.push(v);
        }
    }
    (delivered, other)
}

/// The status line and head of an upgrade request for `path` sent from
/// local address `from`, with extra headers.
fn upgrade_from(
    from: IpAddr,
    gw: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = tcp_from(from, gw.addr());
    let extra: Vec<(&str, Option<&str>)> = headers.iter().map(|(k, v)| (*k, Some(*v))).collect();
    s.write_all(upgrade_request(path, &extra).as_bytes())
        .expect("write the upgrade request");
    let (head, _) = read_head(&mut s);
    (status_of(&head), head)
}

#[test]
fn the_21st_chat_message_of_a_burst_is_refused_and_not_stored() {
    let gw = TestGateway::start_with(|c| {
        c.rate_limits = LimitsConfig {
            chat_per_sec: 1,
            chat_burst: 20,
            ..LimitsConfig::default()
        }
    });
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);

    let contents: Vec<String> = (1..=21).map(|i| format!("burst {i}")).collect();
    send_burst(&mut a, contents.iter().map(|c| chat_json(c)));

    let (delivered, other) = read_replies(&mut a, 21);
    assert_eq!(delivered, contents[..20], "the sender's new_messages");
    assert_eq!(other, vec![rate_limited()], "exactly one refusal");
    let (to_bob, other) = read_replies(&mut b, 20);
    assert_eq!(to_bob, contents[..20]);
    assert!(other.is_empty(), "{other:?}");
    b.expect_silence(Duration::from_millis(300));
    // Not stored: the 21st never reached the database.
    let stored: Vec<String> = gw.messages_of(conv).into_iter().map(|(_, c)| c).collect();
    assert_eq!(stored, contents[..20]);
    // The refused message is only dropped: the socket stays open.
    a.expect_silence(Duration::from_millis(100));
}

/// The original React client sends `typing: true` on every keystroke:
/// 12 keys/s for 12.5 s draws no error, the others see about one event a
/// second, and the stop goes out at once (docs/protocol.md §3).
#[test]
fn typing_repeats_are_coalesced_to_one_a_second_without_errors() {
    let gw = TestGateway::start();
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);

    let typing = json!({"type": "typing", "is_typing": true});
    let start = Instant::now();
    for i in 0..150u32 {
        let at = start + Duration::from_millis(u64::from(i) * 1000 / 12);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        a.send_json(typing.clone());
    }
    let event = |on: bool| json!({"type": "typing", "user_id": alice.id, "username": "alice", "is_typing": on});
    let mut forwarded = 0;
    while let Some(v) = b.try_recv_json(Duration::from_millis(300)) {
        assert_eq!(v, event(true));
        forwarded += 1;
    }
    assert!(
        (11..=14).contains(&forwarded),
        "{forwarded} typing events for 12.5 s of keystrokes"
    );
    // The stop is a change of state: forwarded at once.
    let sent = Instant::now();
    a.send_json(json!({"type": "typing", "is_typing": false}));
    assert_eq!(b.recv_json(), event(false));
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "{:?}",
        sent.elapsed()
    );
    // No error, no close: the typist's socket still chats.
    a.chat("still here");
    assert_new_message(&a.recv_new_message(), &alice, "still here");
}

/// State changes over the typing budget are dropped silently: never an
/// error, never counted towards 1008; chat has its own budget.
#[test]
fn typing_changes_over_the_budget_are_dropped_silently() {
    let gw = TestGateway::start_with(|c| {
        c.rate_limits = LimitsConfig {
            typing_per_sec: 1,
            typing_burst: 10,
            abuse_rejections: 5,
            ..LimitsConfig::default()
        }
    });
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);

    let flips = (0..30).map(|i| json!({"type": "typing", "is_typing": i % 2 == 0}).to_string());
    send_burst(&mut a, flips);
    for i in 0..10 {
        let v = b.recv_json();
        assert_eq!(v["type"], "typing", "event {}", i + 1);
        assert_eq!(v["is_typing"], i % 2 == 0, "event {}", i + 1);
    }
    b.expect_silence(Duration::from_millis(300));
    a.expect_silence(Duration::from_millis(100));
    a.chat("typing is limited, chat is not");
    let m = a.recv_new_message();
    assert_new_message(&m, &alice, "typing is limited, chat is not");
    assert_eq!(b.recv_new_message(), m);
}

#[test]
fn a_user_who_keeps_hitting_the_limit_is_closed_with_1008() {
    let gw = TestGateway::start_with(|c| {
        c.rate_limits = LimitsConfig {
            chat_per_sec: 1,
            chat_burst: 20,
            abuse_rejections: 50,
            abuse_window: Duration::from_secs(10),
            ..LimitsConfig::default()
        }
    });
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);

    // 20 pass, 49 are refused, the 50th refusal within the window closes.
    let contents: Vec<String> = (1..=70).map(|i| format!("flood {i}")).collect();
    send_burst(&mut a, contents.iter().map(|c| chat_json(c)));
    let mut refusals = 0;
    let mut delivered = Vec::new();
    loop {
        match a.next_message() {
            Message::Text(t) => {
                let v = parse(&t);
                if v == rate_limited() {
                    refusals += 1;
                } else if v["type"] == "new_message" {
                    delivered.push(v["message"]["content"].as_str().unwrap().to_owned());
                } else {
                    assert_eq!(v, json!({"type": "ping"}), "unexpected message");
                }
            }
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1008, "close code");
                break;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected replies then close 1008, got {other:?}"),
        }
    }
    assert_eq!(refusals, 49, "refusals before the close");
    // Messages that committed before the close may or may not reach the
    // closing socket; those that do are the admitted ones, in order.
    assert_eq!(delivered, contents[..delivered.len()]);
    let _ = a.ws.flush();
    let (closed, _) = wait_tcp_close(a.ws.get_mut(), Duration::from_secs(5));
    assert!(closed, "the abusive socket stayed open");

    // Only the abuser's socket is closed; what was admitted is stored.
    let (to_bob, other) = read_replies(&mut b, 20);
    assert_eq!(to_bob, contents[..20]);
    assert!(other.is_empty(), "{other:?}");
    let stored: Vec<String> = gw.messages_of(conv).into_iter().map(|(_, c)| c).collect();
    assert_eq!(stored, contents[..20]);
    b.chat("bob is still here");
    assert_new_message(&b.recv_new_message(), &bob, "bob is still here");
}

/// Two conversations of alice and bob owned by different shards (a user's
/// sockets can live on several cores; the limits are per user, node-wide).
fn conversations_on_two_shards(gw: &TestGateway, alice: &User, bob: &User) -> (i64, i64) {
    let first = gw.conversation(&[alice, bob]);
    let shards = gw.config.shards;
    for _ in 0..64 {
        let c = gw.conversation(&[alice, bob]);
        if shard_for(c, shards) != shard_for(first, shards) {
            return (first, c);
        }
    }
    panic!("no conversation on another shard");
}

#[test]
fn the_chat_budget_is_per_user_across_shards() {
    let gw = TestGateway::start_with(|c| {
        c.rate_limits = LimitsConfig {
            chat_per_sec: 1,
            chat_burst: 20,
            ..LimitsConfig::default()
        }
    });
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let (one, two) = conversations_on_two_shards(&gw, &alice, &bob);
    let mut a1 = gw.connect(one, &alice);
    let mut a2 = gw.connect(two, &alice);

    let first: Vec<String> = (1..=10).map(|i| format!("shard A {i}")).collect();
    send_burst(&mut a1, first.iter().map(|c| chat_json(c)));
    assert_eq!(read_replies(&mut a1, 10), (first, vec![]));
    // 10 left in alice's budget, whichever shard her socket is on.
    let second: Vec<String> = (1..=11).map(|i| format!("shard B {i}")).collect();
    send_burst(&mut a2, second.iter().map(|c| chat_json(c)));
    let (delivered, other) = read_replies(&mut a2, 11);
    assert_eq!(delivered, second[..10]);
    assert_eq!(other, vec![rate_limited()]);
    assert_eq!(gw.messages_of(two).len(), 10);
}

#[test]
fn the_33rd_socket_of_a_user_is_refused_with_1008_after_the_upgrade() {
    let gw = TestGateway::start_with(|c| {
        c.rate_limits = LimitsConfig {
            max_conns_per_user: 32,
            // Not what this test is about: far away.
            handshakes_per_ip_per_sec: 10_000,
            handshake_ip_burst: 10_000,
            ..LimitsConfig::default()
        }
    });
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    // 16 sockets on each of two shards: the count is per user, node-wide.
    let (one, two) = conversations_on_two_shards(&gw, &alice, &bob);
    let mut sockets: Vec<Client> = (0..32)
        .map(|i| gw.connect(if i % 2 == 0 { one } else { two }, &alice))
        .collect();

    // The 33rd, on either shard: 101, then close 1008 (no connection_established).
    let path_one = chat_path(one, &alice.token);
    let path_two = chat_path(two, &alice.token);
    gw.expect_rejected(&path_one, &[], 1008);
    gw.expect_rejected(&path_two, &[], 1008);

    // The 32 others stay open and keep receiving; another user is not affected.
    let mut b1 = gw.connect(one, &bob);
    let mut b2 = gw.connect(two, &bob);
    b1.chat("to the 16 on one");
    let m1 = b1.recv_new_message();
    assert_new_message(&m1, &bob, "to the 16 on one");
    b2.chat("to the 16 on two");
    let m2 = b2.recv_new_message();
    assert_new_message(&m2, &bob, "to the 16 on two");
    for (i, s) in sockets.iter_mut().enumerate() {
        let m = if i % 2 == 0 { &m1 } else { &m2 };
        assert_eq!(&s.recv_new_message(), m, "socket {i}");
    }

    // Closing one frees its slot (once the gateway has finished with it).
    let mut gone = sockets.pop().unwrap();
    gone.close(1000);
    gone.expect_close(1000);
    let mut again = None;
    eventually(Duration::from_secs(5), "a slot is released", || {
        let mut c = gw.open(&path_one, &[]);
        match c.next_message() {
            Message::Text(_) => {
                again = Some(c);
                true
            }
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1008);
                false
            }
            other => panic!("expected connection_established or 1008, got {other:?}"),
        }
    });
    let mut again = again.unwrap();
    b1.chat("the new socket is in");
    let m = b1.recv_new_message();
    assert_eq!(again.recv_new_message(), m);
    // And the 33rd is refused again.
    gw.expect_rejected(&path_two, &[], 1008);
}

#[test]
fn a_handshake_flood_from_one_ip_gets_429_while_another_ip_connects() {
    let gw = TestGateway::start_with(|c| {
        c.rate_limits = LimitsConfig {
            handshakes_per_ip_per_sec: 1,
            handshake_ip_burst: 5,
            ..LimitsConfig::default()
        }
    });
    let (alice, bob, conv) = gw.alice_and_bob();
    let path = chat_path(conv, &alice.token);
    for i in 1..=5 {
        let (status, head) = upgrade_from(LOCALHOST, &gw, &path, &[]);
        assert_eq!(status, 101, "handshake {i} from 127.0.0.1: {head}");
    }
    // The 6th is refused before any JWT work: a garbage token gets 429, not 101 + 4001.
    let (status, head) = upgrade_from(LOCALHOST, &gw, &chat_path(conv, "garbage"), &[]);
    assert_eq!(status, 429, "{head}");
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n")
            && head.contains("Retry-After: 1\r\n"),
        "{head}"
    );

    // Another client address still connects, end to end.
    let stream = tcp_from(OTHER_LOCAL, gw.addr());
    let mut b = ws_handshake(stream, gw.addr(), &chat_path(conv, &bob.token), &[])
        .expect("127.0.0.2 is not limited by 127.0.0.1's flood");
    b.expect_established();
    b.chat("from 127.0.0.2");
    assert_new_message(&b.recv_new_message(), &bob, "from 127.0.0.2");
    // 127.0.0.1 is still over its budget.
    assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &[]).0, 429);
}

#[test]
fn x_real_ip_from_a_trusted_proxy_gets_its_own_budget() {
    let gw = TestGateway::start_with(|c| {
        c.trusted_proxies = vec![LOCALHOST];
        c.rate_limits = LimitsConfig {
            handshakes_per_ip_per_sec: 1,
            handshake_ip_burst: 3,
            ..LimitsConfig::default()
        }
    });
    let (alice, _bob, conv) = gw.alice_and_bob();
    let path = chat_path(conv, &alice.token);
    let first = [("X-Real-IP", "203.0.113.1")];
    for i in 1..=3 {
        assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &first).0, 101, "{i}");
    }
    assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &first).0, 429);
    // A different client behind the same proxy has its own budget...
    let second = [("X-Real-IP", "203.0.113.2")];
    assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &second).0, 101);
    // ...also when the proxy only sends X-Forwarded-For (first entry).
    let forwarded = [("X-Forwarded-For", "203.0.113.3, 10.9.9.9")];
    assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &forwarded).0, 101);
    // ...and so does the proxy's own address.
    assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &[]).0, 101);

    // A peer that is not a trusted proxy cannot pick its address: rotating
    // X-Real-IP from 127.0.0.2 still spends 127.0.0.2's budget.
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let (status, head) = upgrade_from(OTHER_LOCAL, &gw, &path, &[("X-Real-IP", ip)]);
        assert_eq!(status, 101, "{i}: {head}");
    }
    let spoof = [("X-Real-IP", "198.51.100.4")];
    assert_eq!(upgrade_from(OTHER_LOCAL, &gw, &path, &spoof).0, 429);
    // Nor borrow the budget of a client the proxy vouched for.
    let borrowed = [("X-Real-IP", "203.0.113.2")];
    assert_eq!(upgrade_from(OTHER_LOCAL, &gw, &path, &borrowed).0, 429);
}

#[test]
fn x_real_ip_from_an_untrusted_peer_shares_the_peer_budget() {
    let gw = TestGateway::start_with(|c| {
        c.trusted_proxies = Vec::new();
        c.rate_limits = LimitsConfig {
            handshakes_per_ip_per_sec: 1,
            handshake_ip_burst: 3,
            ..LimitsConfig::default()
        }
    });
    let (alice, _bob, conv) = gw.alice_and_bob();
    let path = chat_path(conv, &alice.token);
    let first = [("X-Real-IP", "203.0.113.1")];
    for i in 1..=3 {
        assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &first).0, 101, "{i}");
    }
    // Another X-Real-IP from the same peer: the same (spent) 127.0.0.1 budget.
    let second = [("X-Real-IP", "203.0.113.2")];
    assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &second).0, 429);
    assert_eq!(upgrade_from(LOCALHOST, &gw, &path, &[]).0, 429);
    // While 127.0.0.2 has its own.
    assert_eq!(upgrade_from(OTHER_LOCAL, &gw, &path, &second).0, 101);
}
