//! A reconnect storm (docs/protocol.md §9.1, issue 11): 2,000 v2 sockets in 20
//! conversations come back with `?since=` at once. Every replay is exact,
//! and the store answers them with far fewer reads than sockets (replays of
//! one conversation waiting together share one read), as the
//! `chatgate_store_replay_reads_total` metric shows. SQLite, then Postgres
//! (one test, run one after the other: the metric is process-wide).

#[macro_use]
#[allow(unused_macros)]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const CONVERSATIONS: usize = 20;
const SOCKETS_PER_CONVERSATION: usize = 100;
const MESSAGES: usize = 30;

#[test]
fn a_reconnect_storm_is_exact_and_batched() {
    storm(Target::sqlite(chatgate::IoDriver::Auto));
    if let Some(on) = Target::postgres("v2_storm::postgres") {
        storm(on);
    }
}

fn replay_reads(gw: &TestGateway) -> f64 {
    let (status, text) = http_get(gw.admin_addr(), "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| l.starts_with("chatgate_store_replay_reads_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn storm(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, _) = gw.alice_and_bob();
    // 20 conversations of alice and bob with 30 messages each.
    let mut convs = Vec::new();
    for c in 0..CONVERSATIONS {
        let conv = gw.conversation(&[&alice, &bob]);
        let mut a = gw.connect(conv, &alice);
        send_burst(
            &mut a,
            (0..MESSAGES).map(|i| {
                json!({"type": "chat_message", "content": format!("c{c} m{i}")}).to_string()
            }),
        );
        let ids: Vec<i64> = (0..MESSAGES)
            .map(|_| a.recv_new_message()["id"].as_i64().unwrap())
            .collect();
        convs.push((conv, ids));
    }
    let before = replay_reads(&gw);
    // Every upgrade request is written before any answer is read.
    let mut sockets: Vec<(TcpStream, usize, usize)> = Vec::new();
    for (c, (conv, ids)) in convs.iter().enumerate() {
        for s in 0..SOCKETS_PER_CONVERSATION {
            let seen = s % MESSAGES; // this socket saw the first `seen` messages
            let since = if seen == 0 { 0 } else { ids[seen - 1] };
            let path = format!("/ws/chat/{conv}/?token={}&since={since}", bob.token);
            let mut tcp = gw.tcp();
            tcp.write_all(
                upgrade_request(&path, &[("Sec-WebSocket-Protocol", Some("chatgate.v2"))])
                    .as_bytes(),
            )
            .unwrap();
            sockets.push((tcp, c, seen));
        }
    }
    let started = Instant::now();
    for (tcp, c, seen) in &mut sockets {
        let frames = read_until_read_state(tcp);
        let ids = &convs[*c].1;
        assert_eq!(
            frames[0],
            json!({"type": "connection_established", "message": "Connected to chat"})
        );
        let replayed: Vec<i64> = frames[1..frames.len() - 2]
            .iter()
            .map(|f| {
                assert_eq!(f["type"], "new_message", "{f}");
                f["message"]["id"].as_i64().unwrap()
            })
            .collect();
        assert_eq!(
            replayed,
            ids[*seen..],
            "conversation {c}, after {seen} seen"
        );
        assert_eq!(
            frames[frames.len() - 2],
            json!({"type": "resumed", "last_id": ids[MESSAGES - 1], "complete": true})
        );
    }
    let reads = replay_reads(&gw) - before;
    let n = (CONVERSATIONS * SOCKETS_PER_CONVERSATION) as f64;
    eprintln!(
        "{:?}: {n} resumed sockets in {:?}, {reads} replay reads",
        gw.store_kind(),
        started.elapsed()
    );
    assert!(
        reads >= CONVERSATIONS as f64,
        "at least one read per conversation"
    );
    assert!(reads <= n / 4.0, "{reads} replay reads for {n} sockets");
}

/// Reads the 101 head and every frame up to and including `read_state`.
fn read_until_read_state(tcp: &mut TcpStream) -> Vec<Value> {
    let (head, mut buf) = read_head(tcp);
    assert_eq!(status_of(&head), 101, "{head}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut frames = Vec::new();
    loop {
        while let Some((_, opcode, payload, used)) = parse_server_frame(&buf) {
            buf.drain(..used);
            if opcode == OP_TEXT {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                let done = v["type"] == "read_state";
                frames.push(v);
                if done {
                    return frames;
                }
            }
        }
        assert!(Instant::now() < deadline, "no read_state within 30 s");
        let mut chunk = [0u8; 16384];
        let n = tcp.read(&mut chunk).expect("read frames");
        assert!(n > 0, "closed before read_state");
        buf.extend_from_slice(&chunk[..n]);
    }
}
