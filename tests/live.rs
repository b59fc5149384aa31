//! PROTOCOL.md §6.5–6.7 and §6.9 on one node, over real sockets: presence
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
