//! A real nginx, configured with `deploy/nginx/chatgate.conf` (ports and
//! paths rewritten for the test), in front of a real gateway: a WebSocket
//! session works end to end, the rest of the site goes to the Django app,
//! the access log never holds the token, and the gateway counts each client
//! by the address nginx puts in `X-Real-IP`.
//!
//! Needs the `nginx` binary (`apt-get install nginx`): without it the tests
//! are skipped, except in CI (`CI` set), where they fail.

mod nginx_support;
#[allow(unused_macros)]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use chatgate::config::LimitsConfig;
use nginx_support::Nginx;
use serde_json::json;
use support::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// A second client address on loopback (all of 127/8 is local on Linux).
const OTHER_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The deploy site config, node 1 being `gateway`, node 2 a port nobody
/// listens on (a node that is down), the Django app `django`. `None` when
/// nginx is not installed (outside CI).
fn start_nginx(gateway: SocketAddr, django: SocketAddr) -> Option<Nginx> {
    Nginx::start(
        "chatgate.conf",
        &[
            ("server 127.0.0.1:8000 ", format!("server {gateway} ")),
            (
                "server 127.0.0.1:8001 ",
                format!("server 127.0.0.1:{} ", free_port()),
            ),
            ("server 127.0.0.1:8080;", format!("server {django};")),
        ],
    )
}

/// What these tests do through nginx.
trait Through {
    fn ws_access_log(&self) -> String;
    fn ws(&self, from: IpAddr, path: &str) -> Result<Client, tungstenite::Error>;
    fn upgrade_status(&self, from: IpAddr, path: &str, headers: &[(&str, &str)]) -> u16;
}

impl Through for Nginx {
    /// The access log of `/ws/` (the `chatgate_no_query` format).
    fn ws_access_log(&self) -> String {
        self.log("chatgate_access.log")
    }

    /// A WebSocket through nginx from local address `from`.
    fn ws(&self, from: IpAddr, path: &str) -> Result<Client, tungstenite::Error> {
        ws_handshake(tcp_from(from, self.addr), self.addr, path, &[])
    }

    /// A raw upgrade request through nginx from `from`: the answer's status.
    fn upgrade_status(&self, from: IpAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut s = tcp_from(from, self.addr);
        let extra: Vec<(&str, Option<&str>)> =
            headers.iter().map(|(k, v)| (*k, Some(*v))).collect();
        s.write_all(upgrade_request(path, &extra).as_bytes())
            .unwrap();
        let (head, _) = read_head(&mut s);
        let status = status_of(&head);
        assert_ne!(status, 0, "no answer through nginx:\n{}", self.error_log());
        status
    }
}

/// A stand-in for the Django app: answers every request with
/// `200 django <path>` and closes.
fn fake_django() -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            let (head, _) = read_head(&mut s);
            let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
            let body = format!("django {path}");
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// A plain HTTP GET through nginx: `(status, body)`.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status_of(head), body.to_owned())
}

#[test]
fn a_websocket_session_works_end_to_end_through_nginx() {
    let gw = TestGateway::start_with(|c| c.trusted_proxies = vec![LOCALHOST]);
    let Some(nginx) = start_nginx(gw.addr(), fake_django()) else {
        return;
    };
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    let connect = |from, user: &User| {
        let mut c = nginx
            .ws(from, &chat_path(conv, &user.token))
            .unwrap_or_else(|e| panic!("upgrade through nginx: {e:?}\n{}", nginx.error_log()));
        c.expect_established();
        c
    };
    let mut a = connect(OTHER_LOCAL, &alice);
    let mut b = connect(LOCALHOST, &bob);

    a.chat("through nginx");
    let m = a.recv_new_message();
    let id = assert_new_message(&m, &alice, "through nginx");
    assert_eq!(b.recv_new_message(), m);
    assert_eq!(
        gw.message_row(id),
        Some((conv, alice.id, "through nginx".to_owned()))
    );
    b.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "typing", "user_id": bob.id, "username": "bob", "is_typing": true})
    );
    a.send_text("{not json");
    a.expect_error("Invalid JSON");
    // The gateway's close frames pass through too (4001 after the upgrade).
    let mut bad = nginx
        .ws(LOCALHOST, &chat_path(conv, "not-a-jwt"))
        .expect("101 through nginx");
    bad.expect_close(4001);
    a.close(1000);
    a.expect_close(1000);

    // /ws/ without an upgrade still reaches the gateway (400), and the rest
    // of the site goes to the Django app.
    assert_eq!(get(nginx.addr, &format!("/ws/chat/{conv}/")).0, 400);
    assert_eq!(
        get(nginx.addr, "/api/conversations/"),
        (200, "django /api/conversations/".to_owned())
    );

    // nginx logs /ws/ requests without the query string: never the token.
    let line = format!("\"GET /ws/chat/{conv}/ HTTP/1.1\" 101");
    eventually(
        Duration::from_secs(5),
        "alice's session in the access log",
        || {
            nginx
                .ws_access_log()
                .lines()
                .any(|l| l.starts_with("127.0.0.2 ") && l.contains(&line))
        },
    );
    let log = nginx.ws_access_log();
    for token in [&alice.token, &bob.token] {
        assert!(
            !log.contains(token.as_str()),
            "a token in the access log:\n{log}"
        );
    }
    assert!(
        !log.contains("token="),
        "a query string in the access log:\n{log}"
    );
}

/// What proves the gateway uses `X-Real-IP`: the gateway's TCP peer is
/// always nginx (127.0.0.1), so only the header can tell a client on
/// 127.0.0.2 from one on 127.0.0.1. With a per-IP handshake budget of 3, the
/// 127.0.0.2 client spends its budget (the 4th handshake gets 429 through
/// nginx) while a 127.0.0.1 client, also through nginx, still connects. The
/// control test below runs the same steps with nginx not trusted: then every
/// client shares nginx's budget and 127.0.0.1 is refused too.
fn spend_the_budget_of_127_0_0_2(trusted: bool) -> (TestGateway, Nginx, String) {
    let gw = TestGateway::start_with(|c| {
        c.trusted_proxies = if trusted { vec![LOCALHOST] } else { Vec::new() };
        c.rate_limits = LimitsConfig {
            handshakes_per_ip_per_sec: 1,
            handshake_ip_burst: 3,
            ..LimitsConfig::default()
        };
    });
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    let nginx = start_nginx(gw.addr(), fake_django()).expect("nginx");
    let path = chat_path(conv, &alice.token);
    for i in 1..=3 {
        assert_eq!(
            nginx.upgrade_status(OTHER_LOCAL, &path, &[]),
            101,
            "handshake {i} from 127.0.0.2"
        );
    }
    assert_eq!(nginx.upgrade_status(OTHER_LOCAL, &path, &[]), 429);
    (gw, nginx, path)
}

#[test]
fn the_gateway_limits_each_client_by_the_address_nginx_puts_in_x_real_ip() {
    if find_tool("nginx").is_none() {
        return skip_or_fail("nginx", "apt-get install nginx");
    }
    let (gw, nginx, path) = spend_the_budget_of_127_0_0_2(true);
    // A client cannot pick its address: nginx replaces X-Real-IP with the
    // address it sees (and the gateway prefers X-Real-IP to X-Forwarded-For,
    // to which nginx appends).
    let spoofed = [
        ("X-Real-IP", "198.51.100.7"),
        ("X-Forwarded-For", "198.51.100.7"),
    ];
    assert_eq!(nginx.upgrade_status(OTHER_LOCAL, &path, &spoofed), 429);
    // 127.0.0.1 has its own budget, though nginx connects from 127.0.0.1 either way.
    let mut c = nginx
        .ws(LOCALHOST, &path)
        .expect("127.0.0.1 is not limited by 127.0.0.2's handshakes");
    c.expect_established();
    c.chat("127.0.0.1 is in");
    assert_eq!(c.recv_new_message()["content"], "127.0.0.1 is in");
    drop(gw);
}

#[test]
fn without_trusting_nginx_every_client_shares_the_proxy_budget() {
    if find_tool("nginx").is_none() {
        return skip_or_fail("nginx", "apt-get install nginx");
    }
    let (_gw, nginx, path) = spend_the_budget_of_127_0_0_2(false);
    assert_eq!(
        nginx.upgrade_status(LOCALHOST, &path, &[]),
        429,
        "an untrusted proxy's X-Real-IP must be ignored"
    );
}
