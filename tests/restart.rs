//! Graceful shutdown and restart: every socket gets close 1001, what was
//! accepted is committed, and a new gateway on the same database file keeps
//! the history and continues the ids above it.

#[macro_use]
mod support;

use std::io::Write;
use std::time::Duration;

use chatgate::{shard_for, IoDriver};
use serde_json::json;
use support::*;
use tungstenite::Message;

on_both_drivers!(
    messages_survive_a_restart_and_ids_continue,
    shutdown_commits_a_gapless_prefix
);

/// Shuts the gateway down on another thread while `clients` read their close frames.
fn shutdown_expecting_1001(gw: &mut TestGateway, clients: &mut [&mut Client]) {
    let gateway = gw.take_gateway();
    std::thread::scope(|s| {
        let stopping = s.spawn(move || gateway.shutdown());
        for c in clients.iter_mut() {
            c.expect_close(1001);
        }
        stopping.join().expect("shutdown");
    });
    for c in clients.iter_mut() {
        let (closed, _) = wait_tcp_close(c.ws.get_mut(), Duration::from_secs(5));
        assert!(closed, "a socket stayed open after shutdown");
    }
}

fn messages_survive_a_restart_and_ids_continue(driver: IoDriver) {
    let mut gw = TestGateway::on(driver);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    // A second conversation on the other shard: both shards must say 1001.
    let other = loop {
        let c = gw.conversation(&[&alice, &bob]);
        if shard_for(c, 2) != shard_for(conv, 2) {
            break c;
        }
    };
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);
    let mut o = gw.connect(other, &bob);
    let mut before = Vec::new();
    for i in 0..5 {
        let content = format!("before restart {i}");
        a.chat(&content);
        let m = b.recv_new_message();
        before.push((assert_new_message(&m, &alice, &content), content));
        assert_eq!(a.recv_new_message(), m);
    }
    shutdown_expecting_1001(&mut gw, &mut [&mut a, &mut b, &mut o]);
    assert_eq!(gw.messages_of(conv), before, "stored before the restart");

    gw.start_again();
    assert_eq!(
        gw.messages_of(conv),
        before,
        "still stored after the restart"
    );
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);
    b.chat("after restart");
    let m = a.recv_new_message();
    let id = assert_new_message(&m, &bob, "after restart");
    let last_before = before.last().unwrap().0;
    assert!(
        id > last_before,
        "new id {id} must be above the old ones (last {last_before})"
    );
    assert_eq!(b.recv_new_message(), m);
    assert_eq!(gw.messages_of(conv).len(), 6);
    assert_eq!((gw.unread(conv, &bob), gw.unread(conv, &alice)), (5, 1));
}

fn shutdown_commits_a_gapless_prefix(driver: IoDriver) {
    let mut gw = TestGateway::on(driver);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    let mut b = gw.connect(conv, &bob);
    // alice writes a burst of raw frames on a socket she never reads.
    let (mut a, _) = gw.raw_upgrade(&format!("/ws/chat/{conv}/?token={}", alice.token));
    let sent: Vec<String> = (0..500).map(|i| format!("in flight {i}")).collect();
    let burst: Vec<u8> = sent
        .iter()
        .flat_map(|c| {
            masked(
                true,
                OP_TEXT,
                json!({"type": "chat_message", "content": c})
                    .to_string()
                    .as_bytes(),
            )
        })
        .collect();
    a.write_all(&burst).expect("write burst");
    // Shut down as soon as the first message is broadcast; bob reads what
    // follows until his close 1001.
    let mut received = vec![b.recv_new_message()];
    let gateway = gw.take_gateway();
    std::thread::scope(|s| {
        let stopping = s.spawn(move || gateway.shutdown());
        loop {
            match b.next_message() {
                Message::Text(t) => {
                    let v = parse(&t);
                    if v["type"] == "new_message" {
                        received.push(v["message"].clone());
                    } else {
                        assert_eq!(v, json!({"type": "ping"}));
                    }
                }
                Message::Close(Some(f)) => {
                    assert_eq!(u16::from(f.code), 1001, "close code on shutdown");
                    break;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected messages then close 1001, got {other:?}"),
            }
        }
        stopping.join().expect("shutdown");
    });
    let stored = gw.messages_of(conv);
    eprintln!(
        "{} of 500 stored, {} delivered before 1001",
        stored.len(),
        received.len()
    );
    // What is stored is the first k messages sent, in order: no gap.
    let contents: Vec<&str> = stored.iter().map(|(_, c)| c.as_str()).collect();
    let prefix: Vec<&str> = sent[..stored.len()].iter().map(String::as_str).collect();
    assert_eq!(
        contents, prefix,
        "stored messages are a gapless prefix of what was sent"
    );
    // Everything delivered is stored, with the same id, in the same order.
    assert!(received.len() <= stored.len());
    for (m, (id, content)) in received.iter().zip(&stored) {
        assert_eq!(m["id"].as_i64(), Some(*id));
        assert_new_message(m, &alice, content);
    }
    // And the unread counter matches the stored rows exactly.
    assert_eq!(gw.unread(conv, &bob), stored.len() as i64);
    assert_eq!(gw.unread(conv, &alice), 0);
}
