//! docs/protocol.md §9.2 over HTTP: `GET /api/conversations/<id>/messages/` on
//! the WebSocket port — the same selection as the socket's `history`, every
//! status code with its DRF-shaped `{"detail":…}` body, and CORS by
//! `--allowed-origins` — on SQLite and on Postgres.

#[macro_use]
mod support;

use std::io::{Read, Write};

use serde_json::{json, Value};
use support::*;

on_every_store!(
    pages_match_the_socket_history,
    every_status_code_has_its_detail,
    cors_follows_the_allowed_origins,
);

/// Sends a raw HTTP request; returns (status, head, JSON body or Null).
fn call(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Value) {
    let mut s = gw.tcp();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("the server closes after answering");
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"))
    };
    (status_of(head), head.to_owned(), json)
}

fn bearer(user: &User) -> String {
    format!("Bearer {}", user.token)
}

fn pages_match_the_socket_history(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    for i in 0..120 {
        a.chat(&format!("m{i}"));
        a.recv_new_message();
    }
    let auth = bearer(&bob);
    let mut before: Option<i64> = None;
    let mut all = Vec::new();
    loop {
        let path = match before {
            Some(b) => format!("/api/conversations/{conv}/messages/?before={b}&limit=50"),
            None => format!("/api/conversations/{conv}/messages/?limit=50"),
        };
        let (status, head, body) = call(&gw, "GET", &path, &[("Authorization", &auth)]);
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let ids: Vec<i64> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect();
        // The same page over the socket (v2).
        let mut b = gw.connect_v2(conv, &bob);
        let mut req = json!({"type": "history", "limit": 50});
        if let Some(x) = before {
            req["before"] = json!(x);
        }
        b.send_json(req);
        let page = b.recv_json();
        assert_eq!(
            page["messages"], body["results"],
            "HTTP and socket pages agree"
        );
        assert_eq!(page["has_more"], body["has_more"]);
        all.splice(0..0, ids.iter().copied());
        if body["has_more"] == false {
            break;
        }
        before = ids.first().copied();
    }
    let stored: Vec<i64> = gw.messages_of(conv).into_iter().map(|(id, _)| id).collect();
    assert_eq!(all, stored);
}

fn every_status_code_has_its_detail(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, _, conv) = gw.alice_and_bob();
    let mallory = gw.user("mallory");
    let path = format!("/api/conversations/{conv}/messages/");
    let auth = bearer(&alice);
    let detail = |v: &Value| v["detail"].as_str().map(str::to_owned);
    let (s, _, b) = call(&gw, "GET", &path, &[]);
    assert_eq!((s, detail(&b).is_some()), (401, true), "no token");
    let (s, _, b) = call(&gw, "GET", &path, &[("Authorization", "Bearer garbage")]);
    assert_eq!((s, detail(&b).is_some()), (401, true), "bad token");
    let (s, _, b) = call(&gw, "GET", &path, &[("Authorization", &bearer(&mallory))]);
    assert_eq!((s, detail(&b).is_some()), (403, true), "not a participant");
    let other = format!("/api/conversations/{}/messages/", conv + 1000);
    let (s, _, _) = call(&gw, "GET", &other, &[("Authorization", &auth)]);
    assert_eq!(s, 403, "no such conversation");
    for bad in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?before=0",
        "?before=abc",
    ] {
        let (s, _, b) = call(
            &gw,
            "GET",
            &format!("{path}{bad}"),
            &[("Authorization", &auth)],
        );
        assert_eq!((s, detail(&b).is_some()), (400, true), "{bad}");
    }
    let (s, head, b) = call(&gw, "POST", &path, &[("Authorization", &auth)]);
    assert_eq!((s, detail(&b).is_some()), (405, true));
    assert!(head.contains("Allow: GET, OPTIONS"), "{head}");
    let (s, _, b) = call(
        &gw,
        "GET",
        "/api/nothing/here/",
        &[("Authorization", &auth)],
    );
    assert_eq!((s, detail(&b).is_some()), (404, true));
    let (s, _, b) = call(&gw, "GET", &path, &[("Authorization", &auth)]);
    assert_eq!((s, b), (200, json!({"results": [], "has_more": false})));
}

fn cors_follows_the_allowed_origins(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, _, conv) = gw.alice_and_bob();
    let path = format!("/api/conversations/{conv}/messages/");
    let auth = bearer(&alice);
    let (s, head, _) = call(
        &gw,
        "GET",
        &path,
        &[
            ("Authorization", &auth),
            ("Origin", "http://localhost:3000"),
        ],
    );
    assert_eq!(s, 200);
    assert!(
        head.contains("Access-Control-Allow-Origin: http://localhost:3000"),
        "{head}"
    );
    let (s, head, _) = call(
        &gw,
        "GET",
        &path,
        &[("Authorization", &auth), ("Origin", "http://evil.example")],
    );
    assert_eq!(s, 200);
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
    // A preflight needs no token.
    let (s, head, _) = call(
        &gw,
        "OPTIONS",
        &path,
        &[
            ("Origin", "http://localhost:3000"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    assert_eq!(s, 204, "{head}");
    assert!(
        head.contains("Access-Control-Allow-Origin: http://localhost:3000"),
        "{head}"
    );
    assert!(
        head.contains("Access-Control-Allow-Headers: authorization"),
        "{head}"
    );
}
