//! docs/protocol.md §1, the upgrade: path forms, where the token comes from, the
//! Origin check, and the HTTP answers (404 / 403 / 400) when there is no upgrade.

#[macro_use]
mod support;

use chatgate::IoDriver;
use support::*;

on_both_drivers!(
    path_with_trailing_slash_connects,
    path_without_trailing_slash_connects,
    leading_zeros_denote_the_same_conversation,
    largest_conversation_id_is_a_valid_path,
    wrong_paths_get_404_without_upgrade,
    token_in_authorization_header_connects,
    query_token_wins_over_header,
    disallowed_origin_gets_403,
    allowed_or_absent_origin_upgrades,
    star_allows_every_origin,
    domain_pattern_allows_subdomains,
    missing_or_bad_key_gets_400,
    wrong_or_missing_version_gets_400,
    no_upgrade_header_gets_400,
    browser_style_headers_upgrade,
);

/// alice and bob in one conversation.
fn pair(gw: &TestGateway) -> (User, User, i64) {
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    (alice, bob, conv)
}

fn path_with_trailing_slash_connects(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    gw.connect_path(&format!("/ws/chat/{conv}/?token={}", alice.token), &[]);
}

fn path_without_trailing_slash_connects(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, bob, conv) = pair(&gw);
    let mut a = gw.connect_path(&format!("/ws/chat/{conv}?token={}", alice.token), &[]);
    let mut b = gw.connect(conv, &bob);
    a.chat("no slash");
    assert_new_message(&b.recv_new_message(), &alice, "no slash");
    assert_new_message(&a.recv_new_message(), &alice, "no slash");
}

fn leading_zeros_denote_the_same_conversation(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, bob, conv) = pair(&gw);
    let carol = gw.user("carol");
    let mut a = gw.connect_path(&format!("/ws/chat/00{conv}/?token={}", alice.token), &[]);
    let mut b = gw.connect_path(&format!("/ws/chat/{conv}?token={}", bob.token), &[]);
    // More digits than i64 can hold, but still conversation `conv`.
    let mut a2 = gw.connect_path(
        &format!("/ws/chat/{}{conv}/?token={}", "0".repeat(25), alice.token),
        &[],
    );
    b.chat("same room");
    let m = b.recv_new_message();
    let id = assert_new_message(&m, &bob, "same room");
    assert_eq!(a.recv_new_message(), m);
    assert_eq!(a2.recv_new_message(), m);
    assert_eq!(gw.message_row(id).unwrap().0, conv);
    // A leading-zero path of a conversation carol is not in still says 4003.
    gw.expect_rejected(
        &format!("/ws/chat/0{conv}/?token={}", carol.token),
        &[],
        4003,
    );
}

fn largest_conversation_id_is_a_valid_path(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, _) = pair(&gw);
    // 2^63-1 is in range: upgraded, then 4003 (no such conversation).
    gw.expect_rejected(
        &format!("/ws/chat/9223372036854775807/?token={}", alice.token),
        &[],
        4003,
    );
}

fn wrong_paths_get_404_without_upgrade(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    let t = &alice.token;
    for path in [
        format!("/ws/chat/abc/?token={t}"),
        format!("/ws/chat/0/?token={t}"),
        format!("/ws/chat/000/?token={t}"),
        format!("/ws/chat/-1/?token={t}"),
        format!("/ws/chat/+{conv}/?token={t}"),
        format!("/ws/chat/9223372036854775808/?token={t}"),
        format!("/ws/chat/18446744073709551616/?token={t}"),
        format!("/ws/chat/?token={t}"),
        format!("/ws/chat//?token={t}"),
        format!("/ws/chat/{conv}//?token={t}"),
        format!("/ws/chat/{conv}/x/?token={t}"),
        format!("/ws/chat/{conv}x/?token={t}"),
        format!("/ws/chats/{conv}/?token={t}"),
        format!("/ws/chat/{conv}.0/?token={t}"),
        format!("/other/?token={t}"),
        format!("/?token={t}"),
        "/other/".to_string(),
    ] {
        assert_eq!(gw.upgrade_status(&path, &[]), 404, "path {path}");
    }
    // The gateway still serves the right path afterwards.
    gw.connect(conv, &alice);
}

fn token_in_authorization_header_connects(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, bob, conv) = pair(&gw);
    let bearer = format!("Bearer {}", alice.token);
    let mut a = gw.connect_path(&format!("/ws/chat/{conv}/"), &[("Authorization", &bearer)]);
    let mut b = gw.connect(conv, &bob);
    a.chat("via header");
    // The header's user is the sender.
    assert_new_message(&b.recv_new_message(), &alice, "via header");
    a.recv_new_message();
    // A bad bearer token alone is rejected.
    gw.expect_rejected(
        &format!("/ws/chat/{conv}/"),
        &[("Authorization", "Bearer nope.nope.nope")],
        4001,
    );
}

fn query_token_wins_over_header(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, bob, conv) = pair(&gw);
    let good_header = format!("Bearer {}", alice.token);
    gw.expect_rejected(
        &format!("/ws/chat/{conv}/?token=not-a-token"),
        &[("Authorization", &good_header)],
        4001,
    );
    // Good query + header of another user: the query's user is the sender.
    let mut b = gw.connect(conv, &bob);
    let bob_header = format!("Bearer {}", bob.token);
    let mut a = gw.connect_path(
        &format!("/ws/chat/{conv}/?token={}", alice.token),
        &[("Authorization", &bob_header)],
    );
    a.chat("who am I");
    assert_new_message(&b.recv_new_message(), &alice, "who am I");
    // Good query + garbage header also connects.
    gw.connect_path(
        &format!("/ws/chat/{conv}/?token={}", alice.token),
        &[("Authorization", "Bearer garbage")],
    );
}

fn disallowed_origin_gets_403(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    for origin in [
        "http://evil.example",
        "https://evil.example:443",
        "http://localhost.evil.example",
        "http://evillocalhost",
        "http://127.0.0.2",
    ] {
        assert_eq!(
            gw.upgrade_status(&path, &[("Origin", Some(origin))]),
            403,
            "origin {origin}"
        );
    }
}

fn allowed_or_absent_origin_upgrades(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    for origin in [
        "http://localhost:3000",
        "http://localhost",
        "https://127.0.0.1:8443",
        "http://[::1]:3000",
    ] {
        gw.connect_path(&path, &[("Origin", origin)]);
    }
    gw.connect_path(&path, &[]);
}

fn star_allows_every_origin(driver: IoDriver) {
    let gw = TestGateway::start_with(|c| {
        c.io_driver = driver;
        c.allowed_origins = vec!["*".into()];
    });
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    gw.connect_path(&path, &[("Origin", "http://evil.example")]);
    gw.connect_path(&path, &[("Origin", "https://anything.test:1234")]);
}

fn domain_pattern_allows_subdomains(driver: IoDriver) {
    let gw = TestGateway::start_with(|c| {
        c.io_driver = driver;
        c.allowed_origins = vec![".example.com".into()];
    });
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    gw.connect_path(&path, &[("Origin", "https://example.com")]);
    gw.connect_path(&path, &[("Origin", "https://chat.example.com:8443")]);
    for origin in ["https://badexample.com", "http://localhost:3000"] {
        assert_eq!(
            gw.upgrade_status(&path, &[("Origin", Some(origin))]),
            403,
            "origin {origin}"
        );
    }
}

fn missing_or_bad_key_gets_400(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    assert_eq!(
        gw.upgrade_status(&path, &[("Sec-WebSocket-Key", None)]),
        400,
        "missing key"
    );
    for key in [
        "",
        "not base64!",
        "AAAAAAAAAAA=",
        "dGhlIHNhbXBsZSBub25jZQ==dGhl",
    ] {
        assert_eq!(
            gw.upgrade_status(&path, &[("Sec-WebSocket-Key", Some(key))]),
            400,
            "key {key:?}"
        );
    }
}

fn wrong_or_missing_version_gets_400(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    for v in [Some("8"), Some("12"), Some("14"), Some("thirteen"), None] {
        assert_eq!(
            gw.upgrade_status(&path, &[("Sec-WebSocket-Version", v)]),
            400,
            "version {v:?}"
        );
    }
}

fn no_upgrade_header_gets_400(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    assert_eq!(
        gw.upgrade_status(&path, &[("Upgrade", None)]),
        400,
        "no Upgrade"
    );
    assert_eq!(
        gw.upgrade_status(&path, &[("Upgrade", Some("h2c"))]),
        400,
        "Upgrade: h2c"
    );
    assert_eq!(
        gw.upgrade_status(&path, &[("Connection", Some("keep-alive"))]),
        400,
        "no Connection: upgrade"
    );
    // A plain GET without any WebSocket header.
    let plain = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(
        status_of(&gw.raw_request(plain.as_bytes())),
        400,
        "plain GET"
    );
}

fn browser_style_headers_upgrade(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let (alice, _, conv) = pair(&gw);
    let path = format!("/ws/chat/{conv}/?token={}", alice.token);
    // Firefox sends `Connection: keep-alive, Upgrade`; header names and the
    // `websocket` token are case-insensitive.
    let (mut s, rest) = {
        let mut s = gw.tcp();
        let req = upgrade_request(
            &path,
            &[
                ("Connection", Some("keep-alive, Upgrade")),
                ("Upgrade", Some("WebSocket")),
                ("Origin", Some("http://localhost:3000")),
                ("user-agent", Some("Mozilla/5.0")),
            ],
        );
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let (head, rest) = read_head(&mut s);
        assert_eq!(status_of(&head), 101, "{head}");
        let accept = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("sec-websocket-accept")
                    .then(|| v.trim().to_string())
            })
            .expect("Sec-WebSocket-Accept header");
        // RFC 6455's own example key → accept pair.
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        (s, rest)
    };
    // The first frame is connection_established.
    let mut buf = rest;
    let mut chunk = [0u8; 1024];
    let (_, opcode, payload, _) = loop {
        if let Some(f) = parse_server_frame(&buf) {
            break f;
        }
        let n = std::io::Read::read(&mut s, &mut chunk).expect("read first frame");
        assert!(n > 0, "closed before the first frame");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(opcode, OP_TEXT);
    assert_eq!(
        parse(std::str::from_utf8(&payload).unwrap()),
        serde_json::json!({"type": "connection_established", "message": "Connected to chat"})
    );
}
