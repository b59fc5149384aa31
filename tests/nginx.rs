//! A real nginx, configured with `deploy/nginx/chatgate.conf` (ports and
//! paths rewritten for the test), in front of a real gateway: a WebSocket
//! session works end to end, the rest of the site goes to the Django app,
//! the access log never holds the token, and the gateway counts each client
//! by the address nginx puts in `X-Real-IP`.
//!
//! Needs the `nginx` binary (`apt-get install nginx`): without it the tests
//! are skipped, except in CI (`CI` set), where they fail.

#[allow(unused_macros)]
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatgate::config::LimitsConfig;
use serde_json::json;
use support::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// A second client address on loopback (all of 127/8 is local on Linux).
const OTHER_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// nginx running in the foreground (`daemon off; master_process off`) from a
/// temporary prefix; killed on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// Replaces `from` (which must occur exactly once) with `to`.
fn rewrite(conf: &mut String, from: &str, to: &str) {
    assert_eq!(
        conf.matches(from).count(),
        1,
        "deploy/nginx/chatgate.conf no longer has exactly one {from:?}: update this test"
    );
    *conf = conf.replacen(from, to, 1);
}

impl Nginx {
    /// Starts nginx with the deploy site config: node 1 is `gateway`, node 2
    /// a port nobody listens on (a node that is down), the Django app
    /// `django`. `None` when nginx is not installed (outside CI).
    fn start(gateway: SocketAddr, django: SocketAddr) -> Option<Self> {
        let Some(nginx) = find_tool("nginx") else {
            skip_or_fail("nginx", "apt-get install nginx");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let addr = SocketAddr::new(LOCALHOST, free_port());
        let site_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/chatgate.conf");
        let mut site = std::fs::read_to_string(site_path).expect("read the deploy nginx config");
        rewrite(
            &mut site,
            "server 127.0.0.1:8000 ",
            &format!("server {gateway} "),
        );
        rewrite(
            &mut site,
            "server 127.0.0.1:8001 ",
            &format!("server 127.0.0.1:{} ", free_port()),
        );
        rewrite(
            &mut site,
            "server 127.0.0.1:8080;",
            &format!("server {django};"),
        );
        rewrite(&mut site, "listen 80;", &format!("listen {addr};"));
        rewrite(&mut site, "listen [::]:80;", "");
        rewrite(
            &mut site,
            "/var/log/nginx/chatgate_access.log",
            &format!("{d}/ws_access.log"),
        );
        assert!(!site.contains("/var/"), "a system path is left:\n{site}");
        std::fs::write(dir.path().join("chatgate.conf"), &site).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let main = format!(
            "daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/tmp/body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   include {d}/chatgate.conf;\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let args = |cmd: &mut Command| {
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-e")
                .arg(dir.path().join("error.log"));
        };
        // `nginx -t` accepts the deploy config as the operations guide says.
        let mut check = Command::new(&nginx);
        args(&mut check);
        let out = check.arg("-t").output().expect("run nginx -t");
        assert!(
            out.status.success(),
            "nginx -t rejects the config:\n{}\n--- site ---\n{site}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(&nginx);
        args(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", n.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {addr}:\n{}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(n)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.file("error.log")).unwrap_or_default()
    }

    /// The access log of `/ws/` (the `chatgate_no_query` format).
    fn ws_access_log(&self) -> String {
        std::fs::read_to_string(self.file("ws_access.log")).unwrap_or_default()
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

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let Some(nginx) = Nginx::start(gw.addr(), fake_django()) else {
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
    let nginx = Nginx::start(gw.addr(), fake_django()).expect("nginx");
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
