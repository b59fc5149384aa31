//! The server API (docs/protocol.md §10, docs/server-api.md) against real
//! gateways over real HTTP: every status and error code, keys and their
//! rotation, the refusal to start without a key, `info`, `publish`,
//! `send_message` on every store (with and without `idempotency_key`, the
//! same key on two nodes at once on one Postgres), `disconnect` and
//! `presence` across two nodes on a real Redis, `batch`, a flood of bad
//! keys and a slow-loris.
//! Every answer's envelope is checked against the shapes of
//! docs/server-api.openapi.json (`support::check_shape`).

#[macro_use]
#[allow(unused_macros)]
mod support;
mod redis_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chatgate::{Config, Gateway};
use serde_json::{json, Value};
use support::*;

fn api_gateway() -> TestGateway {
    TestGateway::start_with(with_api)
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    http_json(addr, "POST", path, headers, body.as_bytes())
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn key_header(i: usize) -> String {
    format!("apikey {}", API_KEYS[i])
}

#[test]
fn keys_rotation_and_every_refusal() {
    let gw = api_gateway();
    let api = gw.api_addr();
    let old = key_header(0);
    let new = key_header(1);
    // Both configured keys work (rotation), either header.
    for auth in [&old, &new] {
        let (s, b) = post(api, "/api/info", &[("Authorization", auth), JSON], "{}");
        assert_eq!(s, 200, "{b}");
    }
    let (s, _) = post(api, "/api/info", &[("X-API-Key", API_KEYS[1]), JSON], "{}");
    assert_eq!(s, 200);
    // 401: missing, wrong, another scheme, an empty key.
    for headers in [
        vec![JSON],
        vec![("Authorization", "apikey wrong"), JSON],
        vec![("Authorization", "Bearer test-key-old"), JSON],
        vec![("X-API-Key", "test-key-ol"), JSON],
        vec![("Authorization", "apikey "), JSON],
    ] {
        let (s, b) = post(api, "/api/info", &headers, "{}");
        assert_eq!(s, 401, "{headers:?}");
        assert_eq!(b["error"]["code"], "unauthorized");
        assert!(!b.to_string().contains("test-key"), "never echoes a key");
    }
    let auth = ("Authorization", old.as_str());
    // 405: another verb.
    let (s, b) = http_json(api, "GET", "/api/info", &[auth], b"");
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // 404: unknown method, or outside /api/.
    for path in ["/api/nope", "/api/", "/info", "/api/info/x"] {
        let (s, b) = post(api, path, &[auth, JSON], "{}");
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    // 415: not declared JSON.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![auth];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        let (s, b) = post(api, "/api/info", &headers, "{}");
        assert_eq!(s, 415, "{ct:?}");
        assert_eq!(b["error"]["code"], "unsupported_media_type");
    }
    let (s, _) = post(
        api,
        "/api/info",
        &[auth, ("Content-Type", "application/json; charset=utf-8")],
        "{}",
    );
    assert_eq!(s, 200);
    // 413: declared too large (refused before reading), and a chunked body
    // that grows past the limit (the read is capped).
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(1024 * 1024));
    let (s, b) = post(api, "/api/info", &[auth, JSON], &big);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let mut chunked = format!(
        "POST /api/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {old}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..17 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (s, _, body) = http_raw(api, &chunked);
    assert_eq!(s, 413, "{body}");
    // 400: a body that is not a JSON object.
    for body in ["[]", "\"x\"", "{", "", "null"] {
        let (s, b) = post(api, "/api/info", &[auth, JSON], body);
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{body:?}"
        );
    }
    // 400 bad_request naming a missing or mistyped parameter.
    let (s, b) = api_call(api, "publish", json!({"event": {"type": "x"}}));
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "bad_request");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conversation_id"),
        "{b}"
    );
    for params in [
        json!({"conversation_id": "1", "event": {"type": "x"}}),
        json!({"conversation_id": 0, "event": {"type": "x"}}),
        json!({"conversation_id": 1, "event": {"kind": "x"}}),
        json!({"conversation_id": 1, "event": {"type": 5}}),
        json!({"conversation_id": 1, "event": [1]}),
        json!({"conversation_id": 1, "event": {"type": "x"}, "v2_only": "yes"}),
        json!({"conversation_id": 1, "event": {"type": "x", "pad": "a".repeat(64 * 1024)}}),
    ] {
        assert_eq!(
            api_refused(api, "publish", params.clone()),
            "bad_request",
            "{params}"
        );
    }
    assert_eq!(api_refused(api, "presence", json!({})), "bad_request");
    assert_eq!(
        api_refused(api, "disconnect", json!({"user_id": 1, "code": 1000})),
        "bad_request"
    );
    // Counted per method and status.
    let (_, metrics) = http_get(gw.admin_addr(), "/metrics");
    for line in [
        "chatgate_api_requests_total{method=\"info\",status=\"401\"}",
        "chatgate_api_requests_total{method=\"info\",status=\"200\"}",
        "chatgate_api_requests_total{method=\"other\",status=\"404\"}",
        "chatgate_api_requests_total{method=\"publish\",status=\"400\"}",
        "chatgate_api_request_duration_seconds_bucket{method=\"info\"",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[test]
fn api_listen_without_a_key_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_chatgate"))
        .env_clear()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--api-listen", "127.0.0.1:0"])
        .arg("--database")
        .arg(dir.path().join("db.sqlite3"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run chatgate");
    assert_eq!(
        status.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("--api-key"), "{stderr}");
}

/// The binary reads several keys from `CHATGATE_API_KEY` (comma-separated)
/// and serves the API with each of them.
#[test]
fn the_binary_takes_keys_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatgate"))
        .env_clear()
        .env("CHATGATE_API_KEY", "first-key,second-key")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--demo",
            "false",
        ])
        .args(["--api-listen", &api.to_string()])
        .arg("--database")
        .arg(dir.path().join("db.sqlite3"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chatgate");
    let started = Instant::now();
    while TcpStream::connect(api).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the API never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (key, status) in [
        ("first-key", 200),
        ("second-key", 200),
        ("first-key,second-key", 401),
    ] {
        let (s, _) = post(api, "/api/info", &[("X-API-Key", key), JSON], "{}");
        assert_eq!(s, status, "{key}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn info_counts_sockets_and_conversations() {
    let gw = api_gateway();
    let api = gw.api_addr();
    let info = api_ok(api, "info", json!({}));
    assert_eq!(info["sockets"], 0);
    assert_eq!(info["conversations"], 0);
    assert!(info["node_id"].as_str().is_some_and(|n| !n.is_empty()));
    let (alice, bob, c1) = gw.alice_and_bob();
    let c2 = gw.conversation(&[&alice, &bob]);
    let _a = gw.connect(c1, &alice);
    let _b = gw.connect(c1, &bob);
    let _c = gw.connect(c2, &alice);
    let info = api_ok(api, "info", json!({}));
    assert_eq!(
        (info["sockets"].as_u64(), info["conversations"].as_u64()),
        (Some(3), Some(2))
    );
}

#[test]
fn batch_answers_in_order_and_one_failure_does_not_stop_the_rest() {
    let gw = api_gateway();
    let api = gw.api_addr();
    let (alice, _bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let result = api_ok(
        api,
        "batch",
        json!({"commands": [
            {"method": "publish", "params": {"conversation_id": conv, "event": {"type": "one"}}},
            {"method": "nope", "params": {}},
            {"method": "publish", "params": {"conversation_id": "x"}},
            {"method": "info"},
            {"method": "batch", "params": {"commands": []}},
            {"method": "publish", "params": {"conversation_id": conv, "event": {"type": "two"}}},
            "not an object",
        ]}),
    );
    let replies = result["replies"].as_array().expect("replies");
    assert_eq!(replies.len(), 7);
    assert_eq!(replies[0], json!({"result": {}}));
    assert_eq!(replies[1]["error"]["code"], "not_found");
    assert_eq!(replies[2]["error"]["code"], "bad_request");
    assert_eq!(replies[3]["result"]["sockets"], 1);
    assert_eq!(replies[4]["error"]["code"], "bad_request");
    assert_eq!(replies[5], json!({"result": {}}));
    assert_eq!(replies[6]["error"]["code"], "bad_request");
    for r in replies {
        assert_eq!(r.as_object().unwrap().len(), 1, "{r}");
        if let Some(e) = r.get("error") {
            check_error(e);
        }
    }
    assert_eq!(a.recv_json(), json!({"type": "one"}));
    assert_eq!(a.recv_json(), json!({"type": "two"}));
    let too_many: Vec<Value> = (0..101).map(|_| json!({"method": "info"})).collect();
    assert_eq!(
        api_refused(api, "batch", json!({"commands": too_many})),
        "bad_request"
    );
    assert_eq!(
        api_refused(api, "batch", json!({"commands": {}})),
        "bad_request"
    );
}

/// `send_message` stores, counts unread and broadcasts exactly what a
/// socket's `chat_message` would; the refusals of §2.
fn send_message_is_a_socket_message(on: Target) {
    let gw = TestGateway::start_on(on, with_api);
    let api = gw.api_addr();
    let (alice, bob, conv) = gw.alice_and_bob();
    let outsider = gw.user("eve");
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    // A socket's message, for the shape.
    a.chat("from the socket");
    let socket_msg = a.recv_new_message();
    assert_eq!(b.recv_new_message(), socket_msg);
    let unread_before = gw.unread(conv, &bob);
    let result = api_ok(
        api,
        "send_message",
        json!({"conversation_id": conv, "sender_id": alice.id, "content": "  from the API \n"}),
    );
    let message = result["message"].clone();
    assert_eq!(result.as_object().unwrap().len(), 1);
    // Both sockets (v1 and v2, the sender's too) get the same new_message.
    assert_eq!(a.recv_new_message(), message);
    assert_eq!(b.recv_new_message(), message);
    assert_eq!(message["content"], "from the API");
    assert_eq!(message["sender"], socket_msg["sender"]);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&message), keys(&socket_msg));
    assert!(message["id"].as_i64() > socket_msg["id"].as_i64());
    // Stored, with the unread increments.
    let id = message["id"].as_i64().unwrap();
    let (row_conv, row_sender, row_content) = gw.message_row(id).expect("row");
    assert_eq!(
        (row_conv, row_sender, row_content.as_str()),
        (conv, alice.id, "from the API")
    );
    assert_eq!(gw.unread(conv, &bob), unread_before + 1);
    // Refusals.
    let send = |sender: i64, content: &str| {
        api_refused(
            api,
            "send_message",
            json!({"conversation_id": conv, "sender_id": sender, "content": content}),
        )
    };
    assert_eq!(send(outsider.id, "hi"), "not_participant");
    assert_eq!(send(999_999, "hi"), "not_found");
    assert_eq!(
        api_refused(
            api,
            "send_message",
            json!({"conversation_id": 987_654, "sender_id": alice.id, "content": "hi"})
        ),
        "not_found"
    );
    assert_eq!(send(alice.id, " \t\n"), "empty_message");
    assert_eq!(send(alice.id, &"x".repeat(5001)), "message_too_long");
    assert_eq!(send(alice.id, "a\u{0}b"), "bad_request");
    assert_eq!(
        api_refused(
            api,
            "send_message",
            json!({"conversation_id": conv, "sender_id": alice.id})
        ),
        "bad_request"
    );
    // Nothing of the refused ones was stored or shown.
    assert_eq!(gw.messages_of(conv).len(), 2);
    a.expect_silence(Duration::from_millis(200));
}

/// The raw body of a `send_message` (to compare answers byte for byte).
fn send_raw(api: SocketAddr, params: Value) -> (u16, String) {
    let body = params.to_string();
    let request = format!(
        "POST /api/send_message HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\
         Authorization: apikey {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        API_KEYS[0],
        body.len()
    );
    let (status, _, body) = http_raw(api, request.as_bytes());
    (status, body)
}

/// Rows of `chatgate_idempotency` and of them those without a message.
fn key_rows(gw: &TestGateway) -> (i64, i64) {
    let sql = "SELECT count(*), count(*) - count(message_id) FROM chatgate_idempotency";
    match gw.store_kind() {
        StoreKind::Sqlite => gw
            .db()
            .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap(),
        _ => (
            gw.pg_db()
                .scalar("SELECT count(*) FROM chatgate_idempotency", &[]),
            gw.pg_db().scalar(
                "SELECT count(*) FROM chatgate_idempotency WHERE message_id IS NULL",
                &[],
            ),
        ),
    }
}

/// Moves every idempotency key's `created_at` 25 hours back.
fn age_keys(gw: &TestGateway) {
    match gw.store_kind() {
        StoreKind::Sqlite => {
            gw.db()
                .execute_batch(
                    "UPDATE chatgate_idempotency SET created_at = \
                     strftime('%Y-%m-%d %H:%M:%f000', created_at, '-25 hours')",
                )
                .unwrap();
        }
        _ => gw.pg_db().execute_batch(
            "UPDATE chatgate_idempotency SET created_at = created_at - interval '25 hours'",
        ),
    }
}

/// `send_message` with an `idempotency_key`: the same key answers the
/// first message, byte for byte, stores and broadcasts nothing; an expired
/// key stores a new one; a key over 64 characters is refused; on Django's
/// bare tables a keyed call is `unavailable` (run `chatgate migrate`)
/// while an unkeyed one works.
fn send_message_with_an_idempotency_key(on: Target) {
    let django = on.store == StoreKind::PostgresDjango;
    let gw = TestGateway::start_on(on, with_api);
    let api = gw.api_addr();
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut b = gw.connect(conv, &bob);
    let keyed = |key: &str, content: &str| json!({"conversation_id": conv, "sender_id": alice.id, "content": content, "idempotency_key": key});
    if django {
        let (status, body) = api_call(api, "send_message", keyed("order-1", "hi"));
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("chatgate migrate"), "{message}");
        assert!(gw.messages_of(conv).is_empty());
        let unkeyed = json!({"conversation_id": conv, "sender_id": alice.id, "content": "plain"});
        let sent = api_ok(api, "send_message", unkeyed);
        assert_eq!(b.recv_new_message(), sent["message"]);
        assert_eq!(gw.messages_of(conv).len(), 1);
        return;
    }
    let (status, first) = send_raw(api, keyed("order-1", "shipped"));
    assert_eq!(status, 200, "{first}");
    let shown = b.recv_new_message();
    let first_json: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first_json["result"]["message"], shown);
    // The same key again, even with other content: the same bytes, nothing stored or shown.
    for content in ["shipped", "something else"] {
        let (status, again) = send_raw(api, keyed("order-1", content));
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, first);
    }
    b.expect_silence(Duration::from_millis(300));
    assert_eq!(gw.messages_of(conv).len(), 1);
    assert_eq!(key_rows(&gw), (1, 0));
    // Another key is another message; 64 characters (not bytes) is the limit.
    let long = "é".repeat(64);
    let other = api_ok(api, "send_message", keyed(&long, "second"));
    assert_eq!(b.recv_new_message(), other["message"]);
    assert_ne!(other["message"]["id"], shown["id"]);
    for bad in ["x".repeat(65), String::new()] {
        assert_eq!(
            api_refused(api, "send_message", keyed(&bad, "third")),
            "bad_request"
        );
    }
    assert_eq!(gw.messages_of(conv).len(), 2);
    // After 24 h the key stores a new message.
    age_keys(&gw);
    let renewed = api_ok(api, "send_message", keyed("order-1", "shipped again"));
    assert_eq!(b.recv_new_message(), renewed["message"]);
    assert_ne!(renewed["message"], shown);
    assert_eq!(renewed["message"]["content"], "shipped again");
    assert_eq!(gw.messages_of(conv).len(), 3);
    assert_eq!(key_rows(&gw), (2, 0));
    let (_, again) = send_raw(api, keyed("order-1", "shipped"));
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["result"], renewed);
    b.expect_silence(Duration::from_millis(200));
}

on_every_store!(
    send_message_is_a_socket_message,
    send_message_with_an_idempotency_key
);

#[test]
fn a_flood_of_bad_keys_leaves_chat_working() {
    let gw = api_gateway();
    let api = gw.api_addr();
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..750 {
                    let key = format!("apikey guess-{t}-{i}");
                    let (s, _) = post(api, "/api/info", &[("Authorization", &key), JSON], "{}");
                    assert_eq!(s, 401);
                }
            })
        })
        .collect();
    // Chat keeps flowing meanwhile and after.
    for round in 0..20 {
        a.chat(&format!("during {round}"));
        assert_eq!(b.recv_new_message()["content"], format!("during {round}"));
        a.recv_new_message();
    }
    for t in threads {
        t.join().expect("flood thread");
    }
    a.chat("after");
    assert_eq!(b.recv_new_message()["content"], "after");
    assert_eq!(api_ok(api, "info", json!({}))["sockets"], 2);
}

#[test]
fn a_slow_loris_holds_at_most_the_connection_limit() {
    let gw = api_gateway();
    let api = gw.api_addr();
    // 64 connections (the limit) each send part of a head and stall.
    let slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(api).expect("connect");
            s.write_all(b"POST /api/info HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // One more is dropped unanswered while they hold every slot.
    let mut extra = TcpStream::connect(api).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = extra.write_all(b"POST /api/info HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(
        buf.is_empty(),
        "answered past the limit: {}",
        String::from_utf8_lossy(&buf)
    );
    // The stalled heads time out (5 s) and the listener answers again.
    let started = Instant::now();
    loop {
        let mut s = TcpStream::connect(api).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let req = format!(
            "POST /api/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
            key_header(0)
        );
        let _ = s.write_all(req.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "the listener stays stuck"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(slow);
}

// ---------------------------------------------------------------------------
// Two nodes on a real Redis
// ---------------------------------------------------------------------------

/// Node A (a `TestGateway`) and node B on the same database, both bridged
/// on the test's own Redis prefix, both with the server API.
struct Cluster {
    a: TestGateway,
    b: Gateway,
}

impl Cluster {
    fn start(env: &redis_support::RedisEnv) -> Cluster {
        Self::start_on(env, Target::sqlite(chatgate::IoDriver::Auto))
    }

    /// Both nodes on `on`'s store (one database).
    fn start_on(env: &redis_support::RedisEnv, on: Target) -> Cluster {
        let a = TestGateway::start_on(on, |c| {
            with_api(c);
            c.bridge = Some(env.config("a"));
        });
        let mut cfg_b: Config = a.config.clone();
        cfg_b.bridge = Some(env.config("b"));
        let b = Gateway::start(cfg_b).expect("node b starts");
        let cluster = Cluster { a, b };
        wait_until(Duration::from_secs(10), "both bridges connected", || {
            cluster
                .a
                .gateway_ref()
                .bridge_state()
                .is_some_and(|s| s.connected)
                && cluster.b.bridge_state().is_some_and(|s| s.connected)
        });
        cluster
    }

    fn api_b(&self) -> SocketAddr {
        self.b.api_addr().expect("node b has the API")
    }

    fn connect_b(&self, conv: i64, user: &User) -> Client {
        self.a.connect_at(self.b.local_addr(), conv, user, false).0
    }

    /// A completed upgrade on node B; nothing read yet.
    fn connect_b_raw(&self, path: &str) -> Client {
        use tungstenite::client::IntoClientRequest;
        let addr = self.b.local_addr();
        let request = format!("ws://{addr}{path}")
            .into_client_request()
            .expect("request");
        let stream = std::net::TcpStream::connect(addr).expect("connect to b");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (ws, _) = tungstenite::client::client(request, stream).expect("upgrade on b");
        Client { ws }
    }

    fn connect_b_v2(&self, conv: i64, user: &User) -> Client {
        self.a.connect_at(self.b.local_addr(), conv, user, true).0
    }

    /// Waits until both nodes hold `conv`'s channel.
    fn wait_subscribed(&self, env: &redis_support::RedisEnv, conv: i64) {
        let mut admin = env.admin.clone();
        let channel = env.channel(conv);
        wait_until(Duration::from_secs(5), "both nodes subscribed", || {
            env.rt.block_on(redis_support::numsub(&mut admin, &channel)) == 2
        });
    }
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The same key sent to both nodes (one Postgres database) at the same
/// instant, 100 keys: one message per key, both answers the same.
#[test]
fn the_same_key_on_two_nodes_at_once_stores_one_message() {
    let test = "server_api::the_same_key_on_two_nodes_at_once_stores_one_message";
    let Some(on) = Target::postgres(test) else {
        return;
    };
    let Some(env) = redis_support::RedisEnv::start("api_idempotency") else {
        return;
    };
    let cluster = Cluster::start_on(&env, on);
    let (alice, _bob, conv) = cluster.a.alice_and_bob();
    let nodes = [cluster.a.api_addr(), cluster.api_b()];
    const KEYS: usize = 100;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let answers: Vec<Vec<(u16, String)>> = std::thread::scope(|s| {
        let threads: Vec<_> = nodes
            .iter()
            .map(|&api| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    (0..KEYS)
                        .map(|i| {
                            barrier.wait();
                            send_raw(
                                api,
                                json!({"conversation_id": conv, "sender_id": alice.id,
                                       "content": format!("m{i}"), "idempotency_key": format!("key-{i}")}),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(answers[0].len(), KEYS);
    for (i, (a, b)) in answers[0].iter().zip(&answers[1]).enumerate() {
        assert_eq!(a.0, 200, "{}", a.1);
        assert_eq!(a, b, "key-{i}");
    }
    let stored = cluster.a.messages_of(conv);
    assert_eq!(stored.len(), KEYS);
    let mut contents: Vec<String> = stored.into_iter().map(|(_, c)| c).collect();
    contents.sort();
    let mut expected: Vec<String> = (0..KEYS).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(contents, expected);
    assert_eq!(key_rows(&cluster.a), (KEYS as i64, 0));
    let Cluster { a, b } = cluster;
    drop(b);
    drop(a);
}

#[test]
fn publish_reaches_every_socket_on_both_nodes_once() {
    let Some(env) = redis_support::RedisEnv::start("api_publish") else {
        return;
    };
    let cluster = Cluster::start(&env);
    let (alice, bob, conv) = cluster.a.alice_and_bob();
    let mut a_v1 = cluster.a.connect(conv, &alice);
    let mut a_v2 = cluster.a.connect_v2(conv, &bob);
    let mut b_v1 = cluster.connect_b(conv, &bob);
    let mut b_v2 = cluster.connect_b_v2(conv, &alice);
    cluster.wait_subscribed(&env, conv);
    let event = json!({"type": "order_shipped", "order": {"id": 7, "items": ["a", "é"]}});
    let r = api_ok(
        cluster.a.api_addr(),
        "publish",
        json!({"conversation_id": conv, "event": event}),
    );
    assert_eq!(r, json!({}));
    for c in [&mut a_v1, &mut a_v2, &mut b_v1, &mut b_v2] {
        assert_eq!(c.recv_json(), event);
    }
    // Through node B's API, v2 sockets only.
    let v2 = json!({"type": "v2_only_event"});
    api_ok(
        cluster.api_b(),
        "publish",
        json!({"conversation_id": conv, "event": v2, "v2_only": true}),
    );
    assert_eq!(a_v2.recv_json(), v2);
    assert_eq!(b_v2.recv_json(), v2);
    // Exactly once each, and nothing for the v1 sockets.
    for c in [&mut a_v1, &mut a_v2, &mut b_v1, &mut b_v2] {
        c.expect_silence(Duration::from_millis(400));
    }
}

#[test]
fn disconnect_closes_the_users_sockets_on_every_node() {
    let Some(env) = redis_support::RedisEnv::start("api_disconnect") else {
        return;
    };
    let cluster = Cluster::start(&env);
    let (alice, bob, c1) = cluster.a.alice_and_bob();
    let c2 = cluster.a.conversation(&[&alice, &bob]);
    let mut a1_here = cluster.a.connect(c1, &alice);
    let mut a1_there = cluster.connect_b(c1, &alice);
    let mut a2_here = cluster.a.connect(c2, &alice);
    let mut a2_there = cluster.connect_b(c2, &alice);
    let mut bob1 = cluster.a.connect(c1, &bob);
    let mut bob1_there = cluster.connect_b(c1, &bob);
    cluster.wait_subscribed(&env, c1);
    // One conversation: 4003 by default, on both nodes.
    let r = api_ok(
        cluster.a.api_addr(),
        "disconnect",
        json!({"user_id": alice.id, "conversation_id": c1}),
    );
    assert_eq!(r, json!({"closed": 1}));
    a1_here.expect_close(4003);
    a1_there.expect_close(4003);
    // Django removed her first: a reconnect, even within the membership
    // cache's TTL, is refused on both nodes.
    cluster
        .a
        .db()
        .execute(
            "DELETE FROM chatapp_conversationparticipant WHERE conversation_id = ?1 AND user_id = ?2",
            [c1, alice.id],
        )
        .expect("remove alice from c1");
    let path = chat_path(c1, &alice.token);
    cluster.a.expect_rejected(&path, &[], 4003);
    let mut again = cluster.connect_b_raw(&path);
    again.expect_close(4003);
    // Everything else stays open.
    for c in [&mut a2_here, &mut a2_there, &mut bob1, &mut bob1_there] {
        c.expect_silence(Duration::from_millis(300));
    }
    bob1.chat("still here");
    assert_eq!(bob1_there.recv_new_message()["content"], "still here");
    bob1.recv_new_message();
    // Every conversation: 4001 by default, asked on node B.
    let r = api_ok(cluster.api_b(), "disconnect", json!({"user_id": alice.id}));
    assert_eq!(r, json!({"closed": 1}));
    a2_here.expect_close(4001);
    a2_there.expect_close(4001);
    // An explicit code.
    let r = api_ok(
        cluster.a.api_addr(),
        "disconnect",
        json!({"user_id": bob.id, "code": 4003}),
    );
    assert_eq!(r, json!({"closed": 1}));
    bob1.expect_close(4003);
    bob1_there.expect_close(4003);
    assert_eq!(
        api_ok(cluster.a.api_addr(), "info", json!({}))["sockets"],
        0
    );
}

fn online(result: &Value) -> Vec<(i64, String)> {
    result["online"]
        .as_array()
        .expect("online")
        .iter()
        .map(|u| {
            assert_eq!(u.as_object().unwrap().len(), 2, "{u}");
            (
                u["user_id"].as_i64().unwrap(),
                u["username"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn presence_state_users(state: &Value) -> Vec<(i64, String)> {
    let mut users: Vec<(i64, String)> = state["online"]
        .as_array()
        .expect("presence_state online")
        .iter()
        .map(|u| {
            (
                u["user_id"].as_i64().unwrap(),
                u["username"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    users.sort();
    users
}

#[test]
fn presence_is_cluster_wide_as_a_v2_socket_sees_it() {
    let Some(env) = redis_support::RedisEnv::start("api_presence") else {
        return;
    };
    let cluster = Cluster::start(&env);
    let (alice, bob, conv) = cluster.a.alice_and_bob();
    let carol = cluster.a.user("carol");
    cluster.a.add_participant(conv, carol.id);
    let empty = api_ok(
        cluster.a.api_addr(),
        "presence",
        json!({"conversation_id": conv}),
    );
    assert_eq!(empty, json!({"online": []}));
    // Alice on node A, Bob on node B.
    let _a = cluster.a.connect(conv, &alice);
    let _b = cluster.connect_b(conv, &bob);
    cluster.wait_subscribed(&env, conv);
    let both = vec![
        (alice.id, alice.username.clone()),
        (bob.id, bob.username.clone()),
    ];
    // Asked on node A (which holds the conversation)...
    wait_until(Duration::from_secs(5), "presence on node A", || {
        online(&api_ok(
            cluster.a.api_addr(),
            "presence",
            json!({"conversation_id": conv}),
        )) == both
    });
    // ...and matching what a v2 socket's presence_state shows.
    let (_c, _, state) = cluster.a.connect_v2_presence(conv, &carol);
    let mut with_carol = both.clone();
    with_carol.push((carol.id, carol.username.clone()));
    assert_eq!(presence_state_users(&state), with_carol);
    let from_a = online(&api_ok(
        cluster.a.api_addr(),
        "presence",
        json!({"conversation_id": conv}),
    ));
    assert_eq!(from_a, presence_state_users(&state));
    wait_until(Duration::from_secs(5), "carol online on node B", || {
        online(&api_ok(
            cluster.api_b(),
            "presence",
            json!({"conversation_id": conv}),
        )) == with_carol
    });
    // A conversation node B holds no socket of: read from Redis.
    let c2 = cluster.a.conversation(&[&alice, &bob]);
    let _a2 = cluster.a.connect(c2, &alice);
    wait_until(
        Duration::from_secs(5),
        "presence of c2 from Redis on node B",
        || {
            online(&api_ok(
                cluster.api_b(),
                "presence",
                json!({"conversation_id": c2}),
            )) == vec![(alice.id, alice.username.clone())]
        },
    );
}

#[test]
fn the_openapi_check_refuses_a_wrong_shape() {
    for (path, status, body) in [
        (
            "/api/info",
            200,
            json!({"result": {"node_id": 1, "sockets": 0, "conversations": 0}}),
        ),
        (
            "/api/info",
            200,
            json!({"result": {"node_id": "n", "sockets": 0}}),
        ),
        ("/api/publish", 200, json!({"result": {"extra": true}})),
        (
            "/api/presence",
            401,
            json!({"error": {"code": "nope", "message": "x"}}),
        ),
    ] {
        let caught = std::panic::catch_unwind(|| check_against_openapi(path, status, &body));
        assert!(caught.is_err(), "{path} {status} {body} was accepted");
    }
    check_against_openapi("/api/disconnect", 200, &json!({"result": {"closed": 2}}));
}
