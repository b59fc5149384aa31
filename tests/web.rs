//! The demo page and the client module on the WebSocket port: served with
//! their types and validators over a real socket, revalidated with 304,
//! gone with `--web off`, and never in the way of the chat path or the API.

#[macro_use]
mod support;

use std::io::{Read, Write};

use support::*;

/// The whole response (the gateway closes after answering).
fn request(gw: &TestGateway, raw: &str) -> String {
    let mut s = gw.tcp();
    s.write_all(raw.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    String::from_utf8(out).expect("utf-8")
}

fn get(gw: &TestGateway, path: &str, extra: &str) -> String {
    request(
        gw,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n"),
    )
}

#[test]
fn the_page_and_its_files_are_served_and_revalidated() {
    let gw = TestGateway::start();
    let page = get(&gw, "/", "");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(page.contains("Content-Security-Policy: default-src 'self'"));
    assert!(page.contains("data-testid=\"composer\""));
    // The fragment never reaches the server; a query string does not change the page.
    assert_eq!(get(&gw, "/?utm=x", ""), page);
    let js = get(&gw, "/static/chatgate.js", "");
    assert!(
        js.contains("Content-Type: text/javascript; charset=utf-8\r\n"),
        "{js}"
    );
    assert!(js.contains("export class ChatGate"));
    let etag = js
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("an ETag")
        .to_owned();
    let again = get(
        &gw,
        "/static/chatgate.js",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert!(
        again.starts_with("HTTP/1.1 304 Not Modified\r\n"),
        "{again}"
    );
    assert!(get(&gw, "/static/style.css", "").contains("Content-Type: text/css"));
    assert!(get(&gw, "/static/missing.js", "").starts_with("HTTP/1.1 404"));
    let head = request(&gw, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // The chat path and the history API are unaffected.
    let (alice, _, conv) = {
        let a = gw.user("alice");
        let b = gw.user("bob");
        let c = gw.conversation(&[&a, &b]);
        (a, b, c)
    };
    gw.connect(conv, &alice);
    let api = get(&gw, &format!("/api/conversations/{conv}/messages/"), "");
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
}

#[test]
fn web_off_answers_404() {
    let gw = TestGateway::start_with(|c| c.web = false);
    for path in ["/", "/index.html", "/static/chatgate.js"] {
        let r = get(&gw, path, "");
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
    }
}
