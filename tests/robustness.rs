//! Misbehaving peers: garbage and truncated handshakes, oversized and
//! malformed frames, fragmentation, a storm of random frames next to a
//! well-behaved conversation, and the heartbeat / idle timeout (docs/protocol.md §7).

#[macro_use]
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chatgate::IoDriver;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::*;
use tungstenite::Message;

on_both_drivers!(
    garbage_instead_of_handshake_is_closed,
    truncated_handshake_is_closed_after_timeout,
    dribbled_handshake_is_closed_after_timeout,
    oversized_request_head_is_refused,
    frame_declaring_10_mib_closes_1009,
    message_of_70_kib_closes_1009,
    fragments_over_the_limit_close_1009,
    fragmented_message_is_reassembled,
    ping_gets_pong_with_same_payload,
    invalid_utf8_closes_1007,
    unmasked_frame_closes_1002,
    reserved_bits_and_opcodes_close_1002,
    random_frames_do_not_disturb_other_conversations,
    heartbeat_sends_json_ping_and_websocket_ping,
    silent_peer_is_closed_after_idle_timeout,
    peer_answering_pings_stays_open,
    slow_consumer_is_closed_1013_and_others_get_everything,
);

struct Room {
    gw: TestGateway,
    alice: User,
    bob: User,
    conv: i64,
}

fn room_with(adjust: impl FnOnce(&mut chatgate::Config)) -> Room {
    let gw = TestGateway::start_with(adjust);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    Room {
        gw,
        alice,
        bob,
        conv,
    }
}

fn room(driver: IoDriver) -> Room {
    room_with(|c| c.io_driver = driver)
}

impl Room {
    fn path(&self, user: &User) -> String {
        format!("/ws/chat/{}/?token={}", self.conv, user.token)
    }

    /// The gateway still serves: alice → bob round trip on fresh sockets.
    fn assert_still_serving(&self) {
        let mut a = self.gw.connect(self.conv, &self.alice);
        let mut b = self.gw.connect(self.conv, &self.bob);
        a.chat("still serving");
        assert_new_message(&b.recv_new_message(), &self.alice, "still serving");
    }
}

fn garbage_instead_of_handshake_is_closed(driver: IoDriver) {
    let r = room(driver);
    let mut rng = StdRng::seed_from_u64(7);
    let mut tls_like = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    tls_like.extend((0..500).map(|_| rng.random::<u8>()));
    let mut random: Vec<u8> = (0..2000).map(|_| rng.random::<u8>()).collect();
    random.extend_from_slice(b"\r\n\r\n");
    for garbage in [
        tls_like,
        random,
        b"GET\r\n\r\n".to_vec(),
        b"HELLO / WORLD\r\n\r\n".to_vec(),
        b"GET /ws/chat/1/ HTTP/9.9\r\n\r\n".to_vec(),
        // Leading empty lines may be skipped (RFC 9112 §2.2); what follows is junk.
        b"\r\n\r\nJUNK\r\n\r\n".to_vec(),
        vec![0; 100],
    ] {
        let mut s = r.gw.tcp();
        s.write_all(&garbage).expect("write garbage");
        let (closed, got) = wait_tcp_close(&mut s, Duration::from_secs(5));
        assert!(
            closed,
            "server kept a garbage connection open ({garbage:?})"
        );
        if !got.is_empty() {
            let head = String::from_utf8_lossy(&got);
            assert!(
                head.starts_with("HTTP/1.1 4"),
                "answer to garbage must be a 4xx: {head:?}"
            );
        }
    }
    r.assert_still_serving();
}

fn handshake_room(driver: IoDriver) -> Room {
    room_with(|c| {
        c.io_driver = driver;
        c.timeouts.handshake = Duration::from_secs(1);
    })
}

fn truncated_handshake_is_closed_after_timeout(driver: IoDriver) {
    let r = handshake_room(driver);
    let full = upgrade_request(&r.path(&r.alice), &[]);
    let mut s = r.gw.tcp();
    let started = Instant::now();
    s.write_all(&full.as_bytes()[..full.len() - 2]).unwrap(); // no final CRLF
    let (closed, got) = wait_tcp_close(&mut s, Duration::from_secs(4));
    assert!(
        closed,
        "a truncated handshake was kept open past the 1 s handshake timeout"
    );
    assert!(
        !String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"),
        "a truncated handshake must not be upgraded"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "closed after {took:?}, before the handshake timeout"
    );
    // A silent connection (no bytes at all) too.
    let mut s = r.gw.tcp();
    let (closed, _) = wait_tcp_close(&mut s, Duration::from_secs(4));
    assert!(
        closed,
        "a silent connection was kept open past the handshake timeout"
    );
    r.assert_still_serving();
}

fn dribbled_handshake_is_closed_after_timeout(driver: IoDriver) {
    let r = handshake_room(driver);
    let full = upgrade_request(&r.path(&r.alice), &[]);
    let mut s = r.gw.tcp();
    let started = Instant::now();
    // One byte every 100 ms: the timeout covers the whole handshake, not each read.
    for b in full.as_bytes().iter().take(40) {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let (closed, _) = wait_tcp_close(&mut s, Duration::from_secs(1));
    assert!(
        closed,
        "a handshake dribbled over {:?} was kept open (timeout 1 s)",
        started.elapsed()
    );
}

fn oversized_request_head_is_refused(driver: IoDriver) {
    let r = room(driver);
    let big = "x".repeat(16 * 1024);
    let req = upgrade_request(&r.path(&r.alice), &[("X-Padding", Some(&big))]);
    let mut s = r.gw.tcp();
    let _ = s.write_all(req.as_bytes()); // the server may stop reading early
    let (closed, got) = wait_tcp_close(&mut s, Duration::from_secs(5));
    assert!(closed, "an oversized request head left the connection open");
    let head = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || head.starts_with("HTTP/1.1 4"),
        "oversized head must get a 4xx or a close, got {head:?}"
    );
    r.assert_still_serving();
}

fn frame_declaring_10_mib_closes_1009(driver: IoDriver) {
    let r = room(driver);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut f = frame_header(true, 0, OP_TEXT, 10 * 1024 * 1024, Some([1, 2, 3, 4]));
    f.extend_from_slice(b"{\"type\":");
    a.send_raw_frame(&f);
    a.expect_close(1009);
    r.assert_still_serving();
}

fn message_of_70_kib_closes_1009(driver: IoDriver) {
    let r = room(driver);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let content = "a".repeat(70 * 1024);
    a.send_json(json!({"type": "chat_message", "content": content}));
    a.expect_close(1009);
    // Nothing was broadcast or stored.
    b.expect_silence(Duration::from_millis(300));
    assert!(r.gw.messages_of(r.conv).is_empty());
    // A message just under the limit is fine as a frame (then too long as content).
    let mut a = r.gw.connect(r.conv, &r.alice);
    a.send_json(json!({"type": "chat_message", "content": "b".repeat(60 * 1024)}));
    a.expect_error("Message too long");
}

fn fragments_over_the_limit_close_1009(driver: IoDriver) {
    let r = room(driver);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let part = vec![b'a'; 30 * 1024];
    a.send_raw_frame(&masked(false, OP_TEXT, &part));
    a.send_raw_frame(&masked(false, OP_CONT, &part));
    a.send_raw_frame(&masked(true, OP_CONT, &part));
    a.expect_close(1009);
    r.assert_still_serving();
}

fn fragmented_message_is_reassembled(driver: IoDriver) {
    let r = room(driver);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let text =
        json!({"type": "chat_message", "content": "fragmented ünïcödé 𝄞 message"}).to_string();
    let bytes = text.as_bytes();
    // Split inside the multi-byte "𝄞" too: UTF-8 is checked on the whole message.
    let cut = text.find('𝄞').unwrap() + 2;
    a.send_raw_frame(&masked(false, OP_TEXT, &bytes[..10]));
    a.send_raw_frame(&masked(true, OP_PING, b"mid")); // control frames may interleave
    a.send_raw_frame(&masked(false, OP_CONT, &bytes[10..cut]));
    a.send_raw_frame(&masked(false, OP_CONT, &[]));
    a.send_raw_frame(&masked(true, OP_CONT, &bytes[cut..]));
    let m = b.recv_new_message();
    assert_new_message(&m, &r.alice, "fragmented ünïcödé 𝄞 message");
    // alice gets a Pong for her ping and the broadcast.
    let mut got_pong = false;
    loop {
        match a.next_message() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"mid");
                got_pong = true;
            }
            Message::Text(t) if parse(&t) == json!({"type": "ping"}) => {}
            Message::Text(t) => {
                assert_eq!(parse(&t), json!({"type": "new_message", "message": m}));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    if !got_pong {
        match a.next_message() {
            Message::Pong(p) => assert_eq!(&p[..], b"mid"),
            other => panic!("expected the Pong for the interleaved Ping, got {other:?}"),
        }
    }
}

fn ping_gets_pong_with_same_payload(driver: IoDriver) {
    let r = room(driver);
    let mut a = r.gw.connect(r.conv, &r.alice);
    a.send(Message::Ping(b"are you there".to_vec().into()));
    loop {
        match a.next_message() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Message::Ping(_) => {}
            Message::Text(t) if parse(&t) == json!({"type": "ping"}) => {}
            other => panic!("expected a Pong, got {other:?}"),
        }
    }
    // An unsolicited Pong is ignored.
    a.send(Message::Pong(b"unsolicited".to_vec().into()));
    a.expect_silence(Duration::from_millis(200));
    a.chat("after pong");
    assert_new_message(&a.recv_new_message(), &r.alice, "after pong");
}

fn invalid_utf8_closes_1007(driver: IoDriver) {
    let r = room(driver);
    let mut a = r.gw.connect(r.conv, &r.alice);
    a.send_raw_frame(&masked(
        true,
        OP_TEXT,
        b"{\"type\":\"chat_message\",\"content\":\"\xff\xfe\"}",
    ));
    a.expect_close(1007);
    // Invalid across fragments (a lone continuation byte starts the second).
    let mut a = r.gw.connect(r.conv, &r.alice);
    a.send_raw_frame(&masked(
        false,
        OP_TEXT,
        b"{\"type\":\"chat_message\",\"content\":\"\xc3",
    ));
    a.send_raw_frame(&masked(true, OP_CONT, b"\xc3\"}"));
    a.expect_close(1007);
    // A surrogate encoded in UTF-8 (CESU) is invalid as well.
    let mut a = r.gw.connect(r.conv, &r.alice);
    a.send_raw_frame(&masked(true, OP_TEXT, b"\"\xed\xa0\x80\""));
    a.expect_close(1007);
    assert!(r.gw.messages_of(r.conv).is_empty());
    r.assert_still_serving();
}

fn unmasked_frame_closes_1002(driver: IoDriver) {
    let r = room(driver);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let text = json!({"type": "chat_message", "content": "unmasked"}).to_string();
    a.send_raw_frame(&frame(true, OP_TEXT, text.as_bytes(), None));
    a.expect_close(1002);
    assert!(
        r.gw.messages_of(r.conv).is_empty(),
        "an unmasked frame must not be acted on"
    );
    r.assert_still_serving();
}

fn reserved_bits_and_opcodes_close_1002(driver: IoDriver) {
    let r = room(driver);
    let chat = json!({"type": "chat_message", "content": "x"}).to_string();
    let key = [9, 8, 7, 6];
    let masked_payload = |rsv: u8, op: u8, fin: bool, payload: &[u8]| {
        let mut f = frame_header(fin, rsv, op, payload.len() as u64, Some(key));
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    };
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "RSV1 without an extension",
            vec![masked_payload(4, OP_TEXT, true, chat.as_bytes())],
        ),
        (
            "RSV3",
            vec![masked_payload(1, OP_TEXT, true, chat.as_bytes())],
        ),
        ("opcode 3", vec![masked_payload(0, 3, true, b"x")]),
        ("opcode 0xB", vec![masked_payload(0, 0xB, true, b"x")]),
        (
            "continuation without a start",
            vec![masked_payload(0, OP_CONT, true, chat.as_bytes())],
        ),
        (
            "fragmented ping",
            vec![masked_payload(0, OP_PING, false, b"x")],
        ),
        (
            "ping over 125 bytes",
            vec![masked_payload(0, OP_PING, true, &[b'p'; 126])],
        ),
        (
            "new text frame inside a fragmented message",
            vec![
                masked_payload(0, OP_TEXT, false, b"{\"type\":"),
                masked_payload(0, OP_TEXT, true, chat.as_bytes()),
            ],
        ),
        (
            "close with a 1-byte payload",
            vec![masked_payload(0, OP_CLOSE, true, &[3])],
        ),
    ];
    for (what, frames) in cases {
        let mut a = r.gw.connect(r.conv, &r.alice);
        for f in &frames {
            a.send_raw_frame(f);
        }
        match a.ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1002, "{what}"),
            other => panic!("{what}: expected close 1002, got {other:?}"),
        }
    }
    assert!(
        r.gw.messages_of(r.conv).is_empty(),
        "no protocol-violating frame was acted on"
    );
    r.assert_still_serving();
}

/// A raw upgraded socket (no tungstenite) on `addr`.
fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(upgrade_request(path, &[]).as_bytes()).unwrap();
    let (head, _) = read_head(&mut s);
    assert_eq!(status_of(&head), 101, "{head}");
    s
}

/// Drains what the server sent without blocking; true when it closed (close
/// frame, EOF or error).
fn server_closed(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut chunk = [0u8; 8192];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    let mut saw_close = false;
    while let Some((_, op, _, used)) = parse_server_frame(buf) {
        saw_close |= op == OP_CLOSE;
        buf.drain(..used);
    }
    closed || saw_close
}

/// One random client frame: mostly masked, random opcode/FIN/RSV/length and
/// payload (random bytes, letters, or a valid chat message), sometimes cut short.
fn random_frame(rng: &mut StdRng) -> Vec<u8> {
    let opcode = match rng.random_range(0..12) {
        0..=4 => OP_TEXT,
        5 => OP_BINARY,
        6 => OP_CONT,
        7 => OP_PING,
        8 => OP_PONG,
        9 => OP_CLOSE,
        _ => rng.random_range(0..16),
    };
    let fin = rng.random_bool(0.85);
    let rsv = if rng.random_bool(0.05) {
        rng.random_range(1..8)
    } else {
        0
    };
    let mask = rng.random_bool(0.95).then(|| rng.random::<[u8; 4]>());
    let payload: Vec<u8> = match rng.random_range(0..4) {
        0 => {
            let len = if rng.random_bool(0.03) {
                rng.random_range(126..80_000)
            } else {
                rng.random_range(0..300)
            };
            (0..len).map(|_| rng.random()).collect()
        }
        1 => (0..rng.random_range(0..200))
            .map(|_| rng.random_range(b' '..b'~'))
            .collect(),
        _ => json!({"type": "chat_message", "content": format!("noise {}", rng.random::<u32>())})
            .to_string()
            .into_bytes(),
    };
    let mut f = frame_header(fin, rsv, opcode, payload.len() as u64, mask);
    match mask {
        Some(k) => f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4])),
        None => f.extend_from_slice(&payload),
    }
    if rng.random_bool(0.02) {
        let keep = rng.random_range(0..f.len());
        f.truncate(keep);
    }
    f
}

/// Sends `total` random frames, reconnecting whenever the server closes.
/// Returns the number of connections used.
fn misbehave(addr: SocketAddr, path: &str, seed: u64, total: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut sent, mut connections) = (0, 0);
    while sent < total {
        let mut s = raw_ws(addr, path);
        connections += 1;
        let mut buf = Vec::new();
        while sent < total {
            let f = random_frame(&mut rng);
            sent += 1;
            if s.write_all(&f).is_err() || server_closed(&mut s, &mut buf) {
                break;
            }
        }
    }
    connections
}

fn random_frames_do_not_disturb_other_conversations(driver: IoDriver) {
    let r = room(driver);
    let mallory = r.gw.user("mallory");
    let victim = r.gw.user("victim");
    // Mallory's conversation on the same shard as alice and bob's.
    let noisy = loop {
        let c = r.gw.conversation(&[&mallory, &victim]);
        if chatgate::shard_for(c, 2) == chatgate::shard_for(r.conv, 2) {
            break c;
        }
    };
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let addr = r.gw.addr();
    let path = format!("/ws/chat/{noisy}/?token={}", mallory.token);
    let storm = std::thread::spawn(move || misbehave(addr, &path, 0x5eed, 10_000));
    let mut round_trips = 0;
    while !storm.is_finished() || round_trips < 20 {
        let content = format!("calm {round_trips}");
        let (from, to, sender) = if round_trips % 2 == 0 {
            (&mut a, &mut b, &r.alice)
        } else {
            (&mut b, &mut a, &r.bob)
        };
        from.chat(&content);
        let m = to.recv_new_message();
        assert_new_message(&m, sender, &content);
        assert_eq!(from.recv_new_message(), m);
        round_trips += 1;
    }
    let connections = storm.join().expect("misbehaving client thread");
    eprintln!("10000 random frames over {connections} connections; {round_trips} calm round trips");
    let stored: Vec<String> =
        r.gw.messages_of(r.conv)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
    let expected: Vec<String> = (0..round_trips).map(|i| format!("calm {i}")).collect();
    assert_eq!(
        stored, expected,
        "the calm conversation holds exactly its own messages"
    );
    // Every misbehaving session is gone; nothing is stuck in an outbound queue.
    let mut expected = vec![0, 0];
    expected[chatgate::shard_for(r.conv, 2)] = 2;
    eventually_eq(
        Duration::from_secs(10),
        "only the calm pair stays connected, on its owner shard",
        expected,
        || r.gw.connections(),
    );
    eventually_eq(
        Duration::from_secs(10),
        "no queued frames",
        vec![0, 0],
        || {
            r.gw.stats()
                .iter()
                .map(|s| s.queued_frames)
                .collect::<Vec<_>>()
        },
    );
    // The pair still talks.
    a.chat("after the storm");
    assert_new_message(&b.recv_new_message(), &r.alice, "after the storm");
}

fn heartbeat_sends_json_ping_and_websocket_ping(driver: IoDriver) {
    let r = room_with(|c| {
        c.io_driver = driver;
        c.timeouts.ping_interval = Duration::from_millis(200);
    });
    let mut a = r.gw.connect(r.conv, &r.alice);
    let (mut json_pings, mut ws_pings) = (0, 0);
    let started = Instant::now();
    while json_pings < 3 || ws_pings < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "with a 200 ms interval, 3 s gave {json_pings} JSON pings and {ws_pings} WebSocket Pings"
        );
        match a.next_message() {
            Message::Text(t) => {
                let v = parse(&t);
                if v == json!({"type": "ping"}) {
                    json_pings += 1;
                    // A busy socket gets pings too: chat after each one.
                    a.chat("busy");
                } else {
                    assert_eq!(v["type"], "new_message", "{v}");
                    assert_new_message(&v["message"], &r.alice, "busy");
                }
            }
            Message::Ping(_) => ws_pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn silent_peer_is_closed_after_idle_timeout(driver: IoDriver) {
    let r = room_with(|c| {
        c.io_driver = driver;
        c.timeouts.idle = Duration::from_secs(1);
        c.timeouts.ping_interval = Duration::from_millis(200);
        c.timeouts.close_linger = Duration::from_millis(500);
    });
    let started = Instant::now();
    let mut s = raw_ws(r.gw.addr(), &r.path(&r.alice));
    // Never answer anything; just watch for the end.
    let (closed, got) = wait_tcp_close(&mut s, Duration::from_secs(6));
    let took = started.elapsed();
    assert!(
        closed,
        "a peer silent for {took:?} was not closed (idle timeout 1 s)"
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the idle timeout"
    );
    // It was pinged before being given up on.
    let mut buf = got;
    let mut ops = Vec::new();
    while let Some((_, op, _, used)) = parse_server_frame(&buf) {
        ops.push(op);
        buf.drain(..used);
    }
    assert!(
        ops.contains(&OP_PING),
        "no WebSocket Ping before the idle close: opcodes {ops:?}"
    );
    eventually_eq(
        Duration::from_secs(5),
        "the idle session is gone",
        vec![0, 0],
        || r.gw.connections(),
    );
}

fn peer_answering_pings_stays_open(driver: IoDriver) {
    let r = room_with(|c| {
        c.io_driver = driver;
        c.timeouts.idle = Duration::from_secs(1);
        c.timeouts.ping_interval = Duration::from_millis(200);
    });
    let mut a = r.gw.connect(r.conv, &r.alice);
    // tungstenite answers each Ping while reading; alice sends nothing else.
    a.expect_silence(Duration::from_millis(2500));
    a.chat("still here");
    assert_new_message(&a.recv_new_message(), &r.alice, "still here");
}

fn slow_consumer_is_closed_1013_and_others_get_everything(driver: IoDriver) {
    let r = room_with(|c| {
        c.io_driver = driver;
        c.timeouts.write_stall = Duration::from_secs(60);
    });
    let carol = r.gw.user("carol");
    let conv = r.gw.conversation(&[&r.alice, &r.bob, &carol]);
    let mut a = r.gw.connect(conv, &r.alice);
    let mut c = r.gw.connect(conv, &carol);
    // bob's socket has a tiny receive buffer and he does not read for now.
    let mut b = r.gw.connect_over(r.gw.tcp_small_rcvbuf(4096), conv, &r.bob);
    const N: usize = 3000;
    let body = "z".repeat(4000);
    let contents: Vec<String> = (0..N).map(|i| format!("{i:05} {body}")).collect();
    std::thread::scope(|s| {
        // carol reads everything, in order, while it is sent.
        let reader = s.spawn(|| {
            let mut last = 0;
            for content in &contents {
                let m = c.recv_new_message();
                let id = assert_new_message(&m, &r.alice, content);
                assert!(id > last, "ids increase for carol");
                last = id;
            }
        });
        for batch in contents.chunks(100) {
            for content in batch {
                a.chat(content);
            }
            for content in batch {
                assert_new_message(&a.recv_new_message(), &r.alice, content);
            }
        }
        reader.join().expect("carol's reader");
    });
    // bob now reads: an in-order prefix of the messages, then close 1013.
    let mut got = 0;
    loop {
        match b.next_message() {
            Message::Text(t) => {
                let v = parse(&t);
                if v == json!({"type": "ping"}) {
                    continue;
                }
                assert_eq!(v["type"], "new_message", "{v}");
                assert_new_message(&v["message"], &r.alice, &contents[got]);
                got += 1;
            }
            Message::Close(Some(f)) => {
                assert_eq!(
                    u16::from(f.code),
                    1013,
                    "slow consumer close code after {got} messages"
                );
                break;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected messages then close 1013, got {other:?} after {got}"),
        }
    }
    assert!(
        got < N,
        "bob read all {N} messages: the queue never overflowed"
    );
    eprintln!("slow consumer got {got} of {N} before 1013");
    // Only bob is gone; alice and carol keep chatting.
    let mut expected = vec![0, 0];
    expected[chatgate::shard_for(conv, 2)] = 2;
    eventually_eq(
        Duration::from_secs(5),
        "alice and carol remain",
        expected,
        || r.gw.connections(),
    );
    a.chat("after bob");
    assert_new_message(&c.recv_new_message(), &r.alice, "after bob");
    eventually_eq(
        Duration::from_secs(5),
        "no queued frames",
        vec![0, 0],
        || {
            r.gw.stats()
                .iter()
                .map(|s| s.queued_frames)
                .collect::<Vec<_>>()
        },
    );
}
