//! docs/protocol.md §9.0–§9.4: protocol v2's stored half over real sockets —
//! negotiation, v1 isolation, history, resume without gap or duplicate,
//! read receipts and reactions — on SQLite (both io drivers), on Postgres
//! after `chatgate migrate`, and on Django's own DDL (where the `chatgate_`
//! tables are missing and receipts and reactions answer their errors).

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

on_every_store!(
    v2_is_chosen_by_the_subprotocol_only,
    v2_requests_on_a_v1_socket_are_unknown,
    v1_sockets_never_see_v2_frames,
    history_pages_visit_every_message_once,
    a_page_asked_for_right_after_a_message_includes_it,
    resume_replays_what_was_missed_exactly_once,
    resume_after_a_restart_of_the_gateway,
    resume_max_sends_the_newest_and_history_reaches_the_rest,
    mark_read_moves_the_position_and_tells_v2_sockets,
    mark_read_is_a_state_written_a_few_times_a_second,
    reactions_are_stored_once_and_broadcast,
);

const QUIET: Duration = Duration::from_millis(300);

/// Whether the `chatgate_` tables exist (not on Django's bare DDL).
fn migrated(gw: &TestGateway) -> bool {
    gw.store_kind() != StoreKind::PostgresDjango
}

/// `from` sends `n` messages `"{prefix} i"`; returns their ids.
fn send_messages(from: &mut Client, prefix: &str, n: usize) -> Vec<i64> {
    send_burst(
        from,
        (0..n).map(|i| {
            json!({"type": "chat_message", "content": format!("{prefix} {i}")}).to_string()
        }),
    );
    (0..n)
        .map(|i| {
            let m = from.recv_new_message();
            assert_eq!(m["content"], format!("{prefix} {i}"));
            m["id"].as_i64().unwrap()
        })
        .collect()
}

fn head_of(gw: &TestGateway, path: &str, protocol: Option<&str>) -> String {
    gw.raw_request(upgrade_request(path, &[("Sec-WebSocket-Protocol", protocol)]).as_bytes())
}

fn v2_is_chosen_by_the_subprotocol_only(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, _, conv) = gw.alice_and_bob();
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    let named = |head: &str| {
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: chatgate.v2")
    };
    for offered in ["chatgate.v2", "other, chatgate.v2"] {
        let head = head_of(&gw, &path, Some(offered));
        assert_eq!(status_of(&head), 101, "{head}");
        assert!(named(&head), "{offered}: {head}");
    }
    for offered in [None, Some("other"), Some("chatgate.v1")] {
        let head = head_of(&gw, &path, offered);
        assert_eq!(status_of(&head), 101, "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
            "{offered:?}: {head}"
        );
    }
    // A malformed `since` is refused before the upgrade, on either version.
    for since in ["", "-1", "abc", "1.5", "9223372036854775808"] {
        let bad = format!("{path}&since={since}");
        for offered in [None, Some("chatgate.v2")] {
            assert_eq!(
                status_of(&head_of(&gw, &bad, offered)),
                400,
                "since={since:?} {offered:?}"
            );
        }
    }
    // A valid one on v1 is ignored: the socket is a plain v1 socket.
    let mut v1 = gw.connect_path(&format!("{path}&since=0"), &[]);
    v1.chat("hi");
    assert_eq!(v1.recv_new_message()["content"], "hi");
}

fn v2_requests_on_a_v1_socket_are_unknown(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, _, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    for frame in [
        json!({"type": "history"}),
        json!({"type": "mark_read", "message_id": 1}),
        json!({"type": "react", "message_id": 1, "emoji": "👍"}),
        json!({"type": "call_signal", "to_user_id": 2, "call_id": "c", "kind": "ring"}),
        json!({"type": "upload_progress", "upload_id": "u", "file_name": "f", "percent": 1}),
    ] {
        a.send_json(frame);
        a.expect_error("Unknown message type");
    }
}

fn v1_sockets_never_see_v2_frames(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut old = gw.connect(conv, &bob);
    let mut a = gw.connect_v2(conv, &alice);
    let ids = send_messages(&mut a, "m", 3);
    // v2 sockets resume, page, mark read and react around the v1 socket.
    let mut resumed = gw.open_v2(conv, &bob, "&since=0");
    for _ in 0..3 {
        resumed.recv_new_message();
    }
    a.send_json(json!({"type": "history", "limit": 2}));
    a.send_json(json!({"type": "mark_read", "message_id": ids[2]}));
    a.send_json(json!({"type": "react", "message_id": ids[0], "emoji": "👍"}));
    a.send_json(json!({"type": "react", "message_id": ids[0], "emoji": "👍", "on": false}));
    a.chat("last");
    for id in &ids {
        assert_eq!(old.recv_new_message()["id"], *id);
    }
    assert_eq!(
        old.recv_new_message()["content"],
        "last",
        "nothing but v1 frames"
    );
    old.expect_silence(QUIET);
}

fn history_pages_visit_every_message_once(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let ids = send_messages(&mut a, "h", 260);
    let mut b = gw.connect_v2(conv, &bob);
    // bob deletes every 13th message for himself.
    let deleted: Vec<i64> = ids.iter().copied().step_by(13).collect();
    for id in &deleted {
        b.send_json(json!({"type": "delete_message", "message_id": id}));
        assert_eq!(
            b.recv_json(),
            json!({"type": "message_deleted", "message_id": id})
        );
    }
    let expected: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !deleted.contains(id))
        .collect();
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut req = json!({"type": "history", "limit": 50});
        if let Some(b4) = before {
            req["before"] = json!(b4);
        }
        b.send_json(req);
        let page = b.recv_json();
        assert_eq!(page["type"], "history", "{page}");
        let items = page["messages"].as_array().unwrap();
        let page_ids: Vec<i64> = items.iter().map(|m| m["id"].as_i64().unwrap()).collect();
        assert!(
            page_ids.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {page_ids:?}"
        );
        for m in items {
            assert_eq!(m["reactions"], json!([]));
            assert_eq!(m["sender"]["username"], "alice");
        }
        seen.splice(0..0, page_ids.iter().copied());
        let more = page["has_more"].as_bool().unwrap();
        assert_eq!(
            more,
            seen.len() < expected.len(),
            "has_more after {} of {}",
            seen.len(),
            expected.len()
        );
        if !more {
            break;
        }
        assert_eq!(items.len(), 50);
        before = page_ids.first().copied();
    }
    assert_eq!(seen, expected, "every message not deleted, once, in order");
    // Bad parameters.
    for bad in [
        json!({"type": "history", "limit": 0}),
        json!({"type": "history", "limit": 101}),
        json!({"type": "history", "before": "x"}),
    ] {
        b.send_json(bad);
        b.expect_error("Invalid message format");
    }
}

fn a_page_asked_for_right_after_a_message_includes_it(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let _b = gw.connect(conv, &bob);
    for round in 0..20 {
        let content = format!("fresh {round}");
        send_burst(
            &mut a,
            [
                json!({"type": "chat_message", "content": content}).to_string(),
                json!({"type": "history", "limit": 3}).to_string(),
            ],
        );
        let id = a.recv_new_message()["id"].as_i64().unwrap();
        let page = a.recv_json();
        assert_eq!(page["type"], "history", "{page}");
        let newest = &page["messages"].as_array().unwrap().last().unwrap();
        assert_eq!(
            (newest["id"].as_i64(), newest["content"].as_str()),
            (Some(id), Some(content.as_str()))
        );
    }
}

fn resume_replays_what_was_missed_exactly_once(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut b = gw.connect_v2(conv, &bob);
    let mut a = gw.connect(conv, &alice);
    a.chat("before");
    let seen_last = b.recv_new_message()["id"].as_i64().unwrap();
    a.recv_new_message();
    drop(b);
    // alice keeps sending while bob is away and while he comes back.
    let total = 600;
    let mut all = Vec::new();
    std::thread::scope(|s| {
        // Paced over ~1 s, so bob's replay read overlaps live traffic.
        let sender = s.spawn(|| {
            for chunk in 0..total / 20 {
                send_burst(
                    &mut a,
                    (0..20).map(|i| json!({"type": "chat_message", "content": format!("r {}", chunk * 20 + i)}).to_string()),
                );
                std::thread::sleep(Duration::from_millis(30));
            }
            (0..total)
                .map(|_| a.recv_new_message()["id"].as_i64().unwrap())
                .collect::<Vec<i64>>()
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut back = gw.open_v2(conv, &bob, &format!("&since={seen_last}"));
        let mut got = Vec::new();
        let mut resumed = None;
        while got.len() < total || resumed.is_none() {
            let v = back.recv_json();
            match v["type"].as_str() {
                Some("new_message") => {
                    let m = &v["message"];
                    if resumed.is_none() {
                        assert!(
                            m.get("reactions").is_some(),
                            "replayed items carry reactions: {m}"
                        );
                    }
                    got.push(m["id"].as_i64().unwrap());
                }
                Some("resumed") => {
                    assert_eq!(resumed, None, "one resumed");
                    assert_eq!(v["complete"], true);
                    assert_eq!(
                        v["last_id"].as_i64(),
                        Some(got.last().copied().unwrap_or(seen_last))
                    );
                    resumed = Some(got.len());
                    assert_eq!(
                        back.recv_json()["type"],
                        "read_state",
                        "read_state follows resumed"
                    );
                }
                _ => panic!("unexpected frame {v}"),
            }
        }
        let replayed = resumed.expect("resumed arrived");
        assert!(
            replayed > 0 && replayed < total,
            "replay ({replayed}) and live traffic overlap"
        );
        all = sender.join().unwrap();
        back.expect_silence(QUIET);
        assert_eq!(
            got, all,
            "every missed and live message exactly once, in id order"
        );
    });
    assert_eq!(all.len(), total);
}

fn resume_after_a_restart_of_the_gateway(on: Target) {
    let mut gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut b = gw.connect_v2(conv, &bob);
    let mut a = gw.connect(conv, &alice);
    let before = send_messages(&mut a, "before", 5);
    for id in &before {
        assert_eq!(b.recv_new_message()["id"].as_i64(), Some(*id));
    }
    gw.shutdown();
    b.expect_close(1001);
    gw.start_again();
    // alice is back first and sends; bob comes back with what he saw last.
    let mut a = gw.connect(conv, &alice);
    let after = send_messages(&mut a, "after", 30);
    let mut back = gw.open_v2(conv, &bob, &format!("&since={}", before[4]));
    let replayed: Vec<i64> = (0..30)
        .map(|_| back.recv_new_message()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(replayed, after, "what bob missed, once, in id order");
    assert_eq!(
        back.recv_json(),
        json!({"type": "resumed", "last_id": after[29], "complete": true})
    );
}

fn resume_max_sends_the_newest_and_history_reaches_the_rest(on: Target) {
    let gw = TestGateway::start_on(on, |c| c.resume_max = 10);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let ids = send_messages(&mut a, "x", 25);
    let mut b = gw.open_v2(conv, &bob, "&since=0");
    let replayed: Vec<i64> = (0..10)
        .map(|_| b.recv_new_message()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(replayed, ids[15..], "the newest 10");
    assert_eq!(
        b.recv_json(),
        json!({"type": "resumed", "last_id": ids[24], "complete": false})
    );
    assert_eq!(b.recv_json()["type"], "read_state");
    b.send_json(json!({"type": "history", "before": replayed[0], "limit": 100}));
    let page = b.recv_json();
    let older: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(older, ids[..15], "paging back reaches the rest with no gap");
    assert_eq!(page["has_more"], false);
    // Resuming from the newest id: nothing to replay.
    let mut c = gw.open_v2(conv, &bob, &format!("&since={}", ids[24]));
    assert_eq!(
        c.recv_json(),
        json!({"type": "resumed", "last_id": ids[24], "complete": true})
    );
}

fn mark_read_moves_the_position_and_tells_v2_sockets(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let carol = gw.user("carol");
    gw.add_participant(conv, carol.id);
    let mut old = gw.connect(conv, &carol);
    let mut a = gw.connect_v2(conv, &alice);
    let mut b1 = gw.connect_v2(conv, &bob);
    let mut b2 = gw.connect_v2(conv, &bob);
    let ids = send_messages(&mut a, "u", 3);
    for c in [&mut b1, &mut b2, &mut old] {
        for _ in 0..3 {
            c.recv_new_message();
        }
    }
    assert_eq!(gw.unread(conv, &bob), 3);
    b1.send_json(json!({"type": "mark_read", "message_id": ids[1]}));
    if !migrated(&gw) {
        b1.expect_error("Failed to mark read");
        let (_, receipts) = gw.connect_v2_state(conv, &bob);
        assert_eq!(receipts, json!([]));
        return;
    }
    let mut receipt = Value::Null;
    for c in [&mut b1, &mut b2, &mut a] {
        let r = c.recv_json();
        assert_eq!(r["type"], "read_receipt", "{r}");
        assert_eq!(
            (
                r["user_id"].as_i64(),
                r["username"].as_str(),
                r["message_id"].as_i64()
            ),
            (Some(bob.id), Some("bob"), Some(ids[1]))
        );
        assert_timestamp(r["read_at"].as_str().unwrap());
        receipt = r;
    }
    assert_eq!(gw.unread(conv, &bob), 0);
    // A lower position zeroes the count again but broadcasts nothing.
    a.chat("one more");
    a.recv_new_message();
    b1.recv_new_message();
    b2.recv_new_message();
    assert_eq!(gw.unread(conv, &bob), 1);
    b1.send_json(json!({"type": "mark_read", "message_id": ids[0]}));
    eventually(Duration::from_secs(5), "unread zeroed", || {
        gw.unread(conv, &bob) == 0
    });
    // Not a message of this conversation.
    b1.send_json(json!({"type": "mark_read", "message_id": ids[2] + 1000}));
    b1.expect_error("Failed to mark read");
    b1.send_json(json!({"type": "mark_read", "message_id": "x"}));
    b1.expect_error("Invalid message format");
    for c in [&mut a, &mut b2] {
        c.expect_silence(QUIET);
    }
    // State on connect.
    let (_, receipts) = gw.connect_v2_state(conv, &alice);
    assert_eq!(
        receipts,
        json!([{"user_id": bob.id, "message_id": ids[1], "read_at": receipt["read_at"]}])
    );
    // The v1 socket saw the messages only.
    old.recv_new_message();
    old.expect_silence(QUIET);
}

fn mark_read_is_a_state_written_a_few_times_a_second(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    let ids = send_messages(&mut a, "m", 200);
    for _ in &ids {
        b.recv_new_message();
    }
    if !migrated(&gw) {
        return;
    }
    // Bob's client marks every message it shows, at once, then one id that
    // is no message of this conversation, then writes.
    let last = *ids.last().unwrap();
    let marks = ids.iter().copied().chain([last + 1000]);
    send_burst(
        &mut b,
        marks.map(|id| json!({"type": "mark_read", "message_id": id}).to_string()),
    );
    b.chat("after marking");
    // Alice sees a few receipts, rising, ending at the last good id, and
    // all of them before bob's next message (docs/protocol.md §9.3, §9.9); never 200.
    let mut seen = Vec::new();
    loop {
        let f = a.recv_json();
        match f["type"].as_str() {
            Some("read_receipt") => seen.push(f["message_id"].as_i64().unwrap()),
            Some("new_message") => {
                assert_new_message(&f["message"], &bob, "after marking");
                break;
            }
            other => panic!("unexpected {other:?}: {f}"),
        }
    }
    assert_eq!(seen.last(), Some(&last), "receipts {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "receipts {seen:?}");
    assert!(seen.len() <= 10, "{} receipts for 200 marks", seen.len());
    // Bob: receipts as alice saw them, the bad id's error, then his message.
    let mut errors = 0;
    loop {
        let f = b.recv_json();
        match f["type"].as_str() {
            Some("read_receipt") => {}
            Some("error") => {
                assert_eq!(f["message"], "Failed to mark read");
                errors += 1;
            }
            Some("new_message") => break,
            other => panic!("unexpected {other:?}: {f}"),
        }
    }
    assert_eq!(errors, 1);
    assert_eq!(gw.unread(conv, &bob), 0);
    let (_, receipts) = gw.connect_v2_state(conv, &alice);
    assert_eq!(receipts[0]["message_id"], last);
}

fn reactions_are_stored_once_and_broadcast(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    let id = send_messages(&mut a, "r", 1)[0];
    b.recv_new_message();
    let react = |emoji: &str, on: bool| json!({"type": "react", "message_id": id, "emoji": emoji, "on": on});
    a.send_json(json!({"type": "react", "message_id": id, "emoji": "👍"}));
    if !migrated(&gw) {
        a.expect_error("Failed to react");
        return;
    }
    let event = |user: &User, emoji: &str, on: bool| json!({"type": "reaction", "message_id": id, "user_id": user.id, "username": user.username, "emoji": emoji, "on": on});
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv_json(), event(&alice, "👍", true));
    }
    // Adding again changes nothing and tells nobody.
    a.send_json(react("👍", true));
    b.send_json(react("👍", true));
    b.send_json(react("❤️", true));
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv_json(), event(&bob, "👍", true));
        assert_eq!(c.recv_json(), event(&bob, "❤️", true));
    }
    a.send_json(json!({"type": "history"}));
    let page = a.recv_json();
    assert_eq!(
        page["messages"][0]["reactions"],
        json!([{"emoji": "👍", "user_ids": [alice.id, bob.id]}, {"emoji": "❤️", "user_ids": [bob.id]}])
    );
    // Removing.
    b.send_json(react("❤️", false));
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv_json(), event(&bob, "❤️", false));
    }
    b.send_json(react("❤️", false));
    // Bad input and limits.
    for bad in ["", "a b", "\u{7}", "12345678901234567"] {
        a.send_json(react(bad, true));
        a.expect_error("Invalid message format");
    }
    a.send_json(json!({"type": "react", "message_id": id + 1000, "emoji": "👍"}));
    a.expect_error("Failed to react");
    for i in 0..19 {
        let emoji = char::from_u32(0x1F600 + i).unwrap().to_string();
        a.send_json(react(&emoji, true));
        assert_eq!(a.recv_json()["emoji"], emoji);
    }
    a.send_json(react("🦀", true));
    a.expect_error("Too many reactions");
}
