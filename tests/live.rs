//! docs/protocol.md §9.5–§9.7 and §9.9 on one node, over real sockets: presence
//! (state on connect, events on transitions only, v1 sockets counted and
//! never told, big rooms), call signalling and upload progress.

#[macro_use]
#[allow(unused_macros)]
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const QUIET: Duration = Duration::from_millis(300);

fn presence(user: &User, status: &str) -> Value {
    json!({"type":"presence","user_id":user.id,"username":user.username,"status":status})
}

/// `presence_state`'s users as sorted ids, and its count.
fn state_ids(state: &Value) -> (Vec<i64>, i64) {
    let mut ids: Vec<i64> = state["online"]
        .as_array()
        .expect("online list")
        .iter()
        .map(|e| e["user_id"].as_i64().expect("user_id"))
        .collect();
    ids.sort();
    (ids, state["count"].as_i64().expect("count"))
}

#[test]
fn presence_state_and_transitions_on_one_node() {
    let gw = TestGateway::start();
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let carol = gw.user("carol");
    let dave = gw.user("dave");
    let conv = gw.conversation(&[&alice, &bob, &carol]);

    let (mut a, _, state) = gw.connect_v2_presence(conv, &alice);
    assert_eq!(state_ids(&state), (vec![alice.id], 1), "itself included");
    assert_eq!(state["online"][0]["username"], json!(alice.username));

    let (mut b, _, state) = gw.connect_v2_presence(conv, &bob);
    assert_eq!(state_ids(&state), (vec![alice.id, bob.id], 2));
    assert_eq!(a.recv_all_json(), presence(&bob, "online"));
    b.expect_quiet(QUIET); // nothing about its own arrival

    // A second tab is no transition.
    let (mut b2, _, state) = gw.connect_v2_presence(conv, &bob);
    assert_eq!(state_ids(&state).1, 2);
    // A v1 socket counts as online and is never sent a presence frame.
    let mut c = gw.connect(conv, &carol);
    for s in [&mut a, &mut b, &mut b2] {
        assert_eq!(s.recv_all_json(), presence(&carol, "online"));
    }
    c.expect_quiet(QUIET);
    a.expect_quiet(QUIET);

    // A refused connect (not a participant) is no transition.
    gw.expect_rejected(
        &format!("/ws/chat/{conv}/?token={}", dave.token),
        &[V2_PROTOCOL],
        4003,
    );
    b2.close(1000);
    a.expect_quiet(QUIET);
    c.close(1000);
    assert_eq!(a.recv_all_json(), presence(&carol, "offline"));
    assert_eq!(b.recv_all_json(), presence(&carol, "offline"));
    b.close(1000);
    assert_eq!(a.recv_all_json(), presence(&bob, "offline"));
    let (_a2, _, state) = gw.connect_v2_presence(conv, &alice);
    assert_eq!(state_ids(&state), (vec![alice.id], 1));
    a.expect_quiet(QUIET);
}

#[test]
fn big_rooms_send_no_per_user_events() {
    let gw = TestGateway::start_with(|c| c.presence_broadcast_max = 2);
    let users: Vec<User> = (0..4).map(|i| gw.user(&format!("u{i}"))).collect();
    let refs: Vec<&User> = users.iter().collect();
    let conv = gw.conversation(&refs);
    let mut a = gw.connect_v2(conv, &users[0]);
    let _b = gw.connect(conv, &users[1]);
    assert_eq!(a.recv_all_json(), presence(&users[1], "online"));
    let c = gw.connect(conv, &users[2]);
    a.expect_quiet(QUIET); // 3 online > 2
    let (_d, _, state) = gw.connect_v2_presence(conv, &users[3]);
    assert_eq!(state_ids(&state).1, 4);
    drop(c);
    a.expect_quiet(QUIET); // 4 → 3, still above
}

#[test]
fn presence_state_lists_at_most_a_thousand_users_and_counts_all() {
    let gw = TestGateway::start_with(|c| {
        c.presence_broadcast_max = 10;
        c.shards = 1;
    });
    let users: Vec<User> = (0..1003).map(|i| gw.user(&format!("m{i}"))).collect();
    let refs: Vec<&User> = users.iter().collect();
    let conv = gw.conversation(&refs);
    let _sockets: Vec<Client> = users[1..].iter().map(|u| gw.connect(conv, u)).collect();
    let (_a, _, state) = gw.connect_v2_presence(conv, &users[0]);
    let (ids, count) = state_ids(&state);
    assert_eq!((ids.len(), count), (1000, 1003));
}

fn signal(to: i64, kind: &str, payload: Option<&str>) -> String {
    let payload = payload.map_or(String::new(), |p| format!(r#","payload":{p}"#));
    format!(
        r#"{{"type":"call_signal","to_user_id":{to},"call_id":"call-1","kind":"{kind}"{payload}}}"#
    )
}

/// The text a client receives, for byte-level checks.
fn recv_text(c: &mut Client) -> String {
    loop {
        match c.next_message() {
            tungstenite::Message::Text(t)
                if !t.contains(r#""type":"ping""#) && !t.contains(r#""type":"presence"#) =>
            {
                return t.to_string()
            }
            _ => {}
        }
    }
}

#[test]
fn call_signals_reach_the_targets_v2_sockets_byte_for_byte() {
    let gw = TestGateway::start();
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut a2 = gw.connect_v2(conv, &alice);
    let mut a_v1 = gw.connect(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    let mut b2 = gw.connect_v2(conv, &bob);
    let mut b_v1 = gw.connect(conv, &bob);
    // Odd spacing, escapes, a float with trailing zeros: relayed as written.
    let payload = r#"{ "sdp" : "v=0\r\no=- 1 \u00e9" ,"n":1.50, "c":[ ] }"#;
    a.send_text(&signal(bob.id, "offer", Some(payload)));
    let want = format!(
        r#"{{"type":"call_signal","from_user_id":{},"from_username":"{}","call_id":"call-1","kind":"offer","payload":{payload}}}"#,
        alice.id, alice.username
    );
    assert_eq!(recv_text(&mut b), want);
    assert_eq!(recv_text(&mut b2), want);
    // Bob answers from one tab: Alice's v2 sockets get it, and so does
    // Bob's other tab (it stops ringing); v1 sockets never do.
    b.send_text(&signal(alice.id, "answer", None));
    let answer = json!({"type":"call_signal","from_user_id":bob.id,"from_username":bob.username,
                        "call_id":"call-1","kind":"answer"});
    assert_eq!(a.recv_json(), answer);
    assert_eq!(a2.recv_json(), answer);
    assert_eq!(b2.recv_json(), answer);
    b.expect_silence(QUIET);
    // A candidate is not copied to the sender's other tabs.
    a.send_text(&signal(bob.id, "candidate", Some(r#"{"candidate":"x"}"#)));
    assert_eq!(b.recv_json()["kind"], "candidate");
    assert_eq!(b2.recv_json()["kind"], "candidate");
    a2.expect_silence(QUIET);
    a_v1.expect_silence(QUIET);
    b_v1.expect_silence(QUIET);
}

#[test]
fn call_signal_errors() {
    let gw = TestGateway::start();
    let (alice, bob, conv) = gw.alice_and_bob();
    let carol = gw.user("carol");
    let dave = gw.user("dave");
    let conv2 = gw.conversation(&[&alice, &bob, &carol, &dave]);
    let mut a = gw.connect_v2(conv, &alice);
    // Bob is a participant but offline: not available.
    a.send_text(&signal(bob.id, "ring", None));
    a.expect_error("User not available");
    // Carol is no participant of conv; nor is a user that does not exist.
    a.send_text(&signal(carol.id, "ring", None));
    a.expect_error("Invalid recipient");
    a.send_text(&signal(999_999, "ring", None));
    a.expect_error("Invalid recipient");
    a.send_text(&signal(alice.id, "ring", None));
    a.expect_error("Invalid recipient");
    // Online on a v1 socket only: not available.
    let _b_v1 = gw.connect(conv, &bob);
    a.send_text(&signal(bob.id, "ring", None));
    a.expect_error("User not available");
    // Carol online in another conversation only.
    let _c = gw.connect_v2(conv2, &carol);
    a.send_text(&signal(carol.id, "ring", None));
    a.expect_error("Invalid recipient");
    for bad in [
        r#"{"type":"call_signal","to_user_id":2,"call_id":"a b","kind":"ring"}"#,
        r#"{"type":"call_signal","to_user_id":2,"call_id":"c","kind":"dial"}"#,
        r#"{"type":"call_signal","to_user_id":"2","call_id":"c","kind":"ring"}"#,
        r#"{"type":"call_signal","call_id":"c","kind":"ring"}"#,
    ] {
        a.send_text(bad);
        a.expect_error("Invalid message format");
    }
    // 16 KiB of frame text at most (a v1 socket: unknown type).
    let mut b = gw.connect_v2(conv, &bob);
    let room = 16 * 1024 - signal(bob.id, "offer", Some(r#""""#)).len();
    let fits = signal(bob.id, "offer", Some(&format!("\"{}\"", "x".repeat(room))));
    assert_eq!(fits.len(), 16 * 1024);
    a.send_text(&fits);
    assert_eq!(b.recv_json()["kind"], "offer");
    let over = signal(
        bob.id,
        "offer",
        Some(&format!("\"{}\"", "x".repeat(room + 1))),
    );
    a.send_text(&over);
    a.expect_error("Message too long");
    let mut a_v1 = gw.connect(conv, &alice);
    a_v1.send_text(&signal(bob.id, "ring", None));
    a_v1.expect_error("Unknown message type");
    b.expect_silence(QUIET);
}

#[test]
fn call_signals_have_their_own_rate_limit() {
    let gw = TestGateway::start_with(|c| {
        c.rate_limits.signal_per_sec = 1;
        c.rate_limits.signal_burst = 5;
        c.rate_limits.chat_per_sec = 1;
        c.rate_limits.chat_burst = 1;
    });
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    a.chat("uses the chat quota");
    assert_eq!(a.recv_new_message()["content"], "uses the chat quota");
    b.recv_new_message();
    for i in 0..6 {
        a.send_text(&signal(bob.id, "candidate", Some(&i.to_string())));
    }
    for i in 0..5 {
        let got = b.recv_json();
        assert_eq!(got["payload"], json!(i), "{got}");
    }
    a.expect_error("Rate limit exceeded");
    b.expect_silence(QUIET);
}

fn progress(upload: &str, percent: i64) -> String {
    json!({"type":"upload_progress","upload_id":upload,"file_name":"cat.png","percent":percent})
        .to_string()
}

#[test]
fn upload_progress_is_throttled_and_reaches_other_users_v2_sockets() {
    let gw = TestGateway::start();
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut a2 = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    let mut b_v1 = gw.connect(conv, &bob);
    let start = std::time::Instant::now();
    for p in 0..=60 {
        a.send_text(&progress("up-1", p));
    }
    let first = b.recv_json();
    assert_eq!(
        first,
        json!({"type":"upload_progress","user_id":alice.id,"username":alice.username,
               "upload_id":"up-1","file_name":"cat.png","percent":0})
    );
    // The latest held value arrives at the next slot, nothing between.
    let held = b.recv_json();
    assert_eq!(held["percent"], 60, "{held}");
    assert!(start.elapsed() >= Duration::from_millis(200));
    b.expect_silence(QUIET);
    // 100 goes at once even within a slot, superseding what is held.
    a.send_text(&progress("up-1", 70));
    a.send_text(&progress("up-1", 80));
    a.send_text(&progress("up-1", 100));
    let got: Vec<i64> = (0..2)
        .map(|_| b.recv_json()["percent"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [70, 100]);
    b.expect_silence(QUIET);
    a2.expect_silence(QUIET);
    a.expect_silence(QUIET);
    b_v1.expect_silence(QUIET);
    // Invalid values answer the sender, never `Rate limit exceeded`.
    a.send_text(&progress("up-1", 101));
    a.expect_error("Invalid message format");
    b_v1.send_text(&progress("up-2", 5));
    b_v1.expect_error("Unknown message type");
}

/// docs/protocol.md §9.9: a socket's chat message, then its call signal and upload
/// progress, reach the other side in that order.
#[test]
fn chat_then_live_frames_keep_the_senders_order() {
    let gw = TestGateway::start();
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    for i in 0..50 {
        a.chat(&format!("m{i}"));
        a.send_text(&signal(bob.id, "candidate", Some(&i.to_string())));
        a.send_text(&progress(&format!("u{i}"), 0));
    }
    for i in 0..50 {
        let m = b.recv_json();
        assert_eq!(m["message"]["content"], format!("m{i}"), "{m}");
        let s = b.recv_json();
        assert_eq!(
            (&s["type"], &s["payload"]),
            (&json!("call_signal"), &json!(i))
        );
        let u = b.recv_json();
        assert_eq!(u["upload_id"], format!("u{i}"), "{u}");
    }
}
