//! The admin listener over real sockets: paths, status codes, headers,
//! limits and timeouts as a client sees them.
//!
//! Must never: reach a public address or depend on the global recorder
//! except where a test installs it on purpose.

use super::*;
use crate::http_listener::MAX_CLIENTS;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

struct Fixture {
    _rt: tokio::runtime::Runtime,
    server: AdminServer,
    draining: Arc<AtomicBool>,
}

fn start_with(metrics: PrometheusHandle, bridge: Option<bool>) -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let draining = Arc::new(AtomicBool::new(false));
    let flag = draining.clone();
    let state = AdminState {
        metrics,
        readiness: Arc::new(move || Readiness {
            store: true,
            bridge,
            draining: flag.load(Ordering::Relaxed),
        }),
    };
    let server = start("127.0.0.1:0".parse().unwrap(), rt.handle(), state).unwrap();
    Fixture {
        _rt: rt,
        server,
        draining,
    }
}

fn local_handle() -> PrometheusHandle {
    crate::metrics::builder().unwrap().build_recorder().handle()
}

/// Sends `raw`, returns (status, headers, body).
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

#[test]
fn healthz_answers_ok() {
    let f = start_with(local_handle(), None);
    let (status, head, body) = get(f.server.local_addr(), "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(head.contains("Connection: close"), "{head}");
    assert!(head.contains("Content-Length: 3"), "{head}");
}

#[test]
fn readyz_follows_the_probe() {
    let f = start_with(local_handle(), None);
    let addr = f.server.local_addr();
    let (status, _, body) = get(addr, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    f.draining.store(true, Ordering::Relaxed);
    let (status, _, body) = get(addr, "/readyz");
    assert_eq!((status, body.as_str()), (503, "not ready: draining\n"));
}

#[test]
fn readyz_names_every_problem() {
    let all_bad = Readiness {
        store: false,
        bridge: Some(false),
        draining: true,
    };
    assert!(!all_bad.is_ready());
    assert_eq!(
        all_bad.describe(),
        "not ready: store unreachable, bridge disconnected, draining\n"
    );
    let no_bridge = Readiness {
        store: true,
        bridge: None,
        draining: false,
    };
    assert!(no_bridge.is_ready());
    assert!(Readiness {
        bridge: Some(true),
        ..no_bridge
    }
    .is_ready());
    let f = start_with(local_handle(), Some(false));
    let (status, _, body) = get(f.server.local_addr(), "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: bridge disconnected\n")
    );
}

#[test]
fn metrics_renders_the_handle() {
    let recorder = crate::metrics::builder().unwrap().build_recorder();
    let f = start_with(recorder.handle(), None);
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("chatgate_admin_test_total", "shard" => "0").increment(3);
    });
    let (status, head, body) = get(f.server.local_addr(), "/metrics?x=1");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("chatgate_admin_test_total{shard=\"0\"} 3\n"),
        "{body}"
    );
}

#[test]
fn other_paths_methods_and_garbage() {
    let f = start_with(local_handle(), None);
    let addr = f.server.local_addr();
    assert_eq!(get(addr, "/").0, 404);
    assert_eq!(get(addr, "/metrics/x").0, 404);
    let (status, head, _) = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"));
    let (status, _, body) = exchange(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(exchange(addr, b"\x16\x03\x01 not http\r\n\r\n").0, 400);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(MAX_HEAD)
    );
    assert_eq!(exchange(addr, huge.as_bytes()).0, 431);
    // Pipelined requests: only the first is answered.
    let (status, _, body) = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn a_silent_client_does_not_block_others() {
    let f = start_with(local_handle(), None);
    let addr = f.server.local_addr();
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    let (status, _, _) = get(addr, "/healthz");
    assert_eq!(status, 200);
}

#[test]
fn bind_errors_surface_and_stop_closes_the_port() {
    let f = start_with(local_handle(), None);
    let addr = f.server.local_addr();
    let state = AdminState {
        metrics: local_handle(),
        readiness: Arc::new(|| Readiness {
            store: true,
            bridge: None,
            draining: false,
        }),
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = start(taken.local_addr().unwrap(), f._rt.handle(), state);
    assert!(busy.is_err());
    f.server.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `promtool check metrics` accepts the exposition of the real recorder.
/// Skipped where promtool is missing, except in CI (CI set), where it fails.
#[test]
fn promtool_accepts_the_exposition() {
    let handle = crate::metrics::install();
    let shard = crate::metrics::ShardMetrics::new(0);
    shard.message_received("chat_message");
    shard.connection_opened();
    shard.set_open_connections(1);
    shard.broadcast_latency(Duration::from_micros(250));
    shard.flush();
    crate::metrics::store_batch(4, Duration::from_millis(3), 1);
    crate::metrics::bridge_connected(false);
    let f = start_with(handle, None);
    let (status, _, body) = get(f.server.local_addr(), "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("chatgate_messages_received_total{shard=\"0\",type=\"chat_message\"}"),
        "{body}"
    );
    let Some(promtool) = find_promtool() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (apt-get install prometheus)"
        );
        eprintln!("skipped: promtool not found (apt-get install prometheus)");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}\n--- body ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find_promtool() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

/// A connection for several requests (keep-alive), with the same timeouts as
/// [`exchange`].
fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response (head, then `Content-Length` bytes of body) and leaves
/// the connection open; returns (status, head, body).
fn read_response(s: &mut std::net::TcpStream) -> (u16, String, String) {
    read_answer(s, false)
}

/// [`read_response`] for a `HEAD`: no body follows the head.
fn read_head_answer(s: &mut std::net::TcpStream) -> (u16, String, String) {
    read_answer(s, true)
}

fn read_answer(s: &mut std::net::TcpStream, head_only: bool) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; if head_only { 0 } else { length }];
    s.read_exact(&mut body).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

/// What is left on `s` until the server closes it (an abortive close counts
/// as closed), and how long that took.
fn read_until_closed(s: &mut std::net::TcpStream) -> (Vec<u8>, Duration) {
    let since = std::time::Instant::now();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed: {e}"),
    }
    (rest, since.elapsed())
}

const KEEP_ALIVE_GET: &str = "HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let f = start_with(local_handle(), None);
    let mut s = connect(f.server.local_addr());
    write!(s, "GET /healthz {KEEP_ALIVE_GET}").unwrap();
    let (status, head, body) = read_response(&mut s);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(head.contains("Connection: keep-alive"), "{head}");
    // Pipelined on the kept-alive connection: answered in order.
    write!(
        s,
        "GET /readyz {KEEP_ALIVE_GET}HEAD /healthz {KEEP_ALIVE_GET}"
    )
    .unwrap();
    assert_eq!(read_response(&mut s).2, "ready\n");
    let (status, head, body) = read_head_answer(&mut s);
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(head.contains("Content-Length: 3"), "{head}");
    // The last request does not ask to keep the connection: it closes.
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, head, _) = read_response(&mut s);
    assert_eq!(status, 200);
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(read_until_closed(&mut s).0, b"");
}

#[test]
fn http_1_0_keep_alive_is_honoured() {
    let f = start_with(local_handle(), None);
    let mut s = connect(f.server.local_addr());
    for _ in 0..2 {
        write!(s, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let (status, head, body) = read_response(&mut s);
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert!(head.contains("Connection: keep-alive"), "{head}");
    }
}

#[test]
fn too_many_headers_is_431() {
    let f = start_with(local_handle(), None);
    let headers: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
    let raw = format!("GET /healthz HTTP/1.1\r\n{headers}\r\n");
    assert_eq!(exchange(f.server.local_addr(), raw.as_bytes()).0, 431);
}

/// A silent client and an idle kept-alive connection are both closed once
/// [`REQUEST_TIMEOUT`] passes without a complete request head.
#[test]
fn silent_and_idle_connections_are_closed_after_the_request_timeout() {
    let f = start_with(local_handle(), None);
    let addr = f.server.local_addr();
    let mut silent = connect(addr);
    let mut idle = connect(addr);
    write!(idle, "GET /healthz {KEEP_ALIVE_GET}").unwrap();
    assert_eq!(read_response(&mut idle).0, 200);
    let slack = Duration::from_secs(3);
    for s in [&mut silent, &mut idle] {
        let (rest, after) = read_until_closed(s);
        assert_eq!(rest, b"");
        assert!(after < REQUEST_TIMEOUT + slack, "closed after {after:?}");
    }
}

#[test]
fn connections_past_the_limit_are_dropped_unanswered() {
    let f = start_with(local_handle(), None);
    let addr = f.server.local_addr();
    let since = std::time::Instant::now();
    // Each answered once, so each holds a slot (idle, for REQUEST_TIMEOUT).
    let mut held: Vec<_> = (0..MAX_CLIENTS)
        .map(|_| {
            let mut s = connect(addr);
            write!(s, "GET /healthz {KEEP_ALIVE_GET}").unwrap();
            assert_eq!(read_response(&mut s).0, 200);
            s
        })
        .collect();
    let (answer, _) = read_until_closed(&mut connect(addr));
    assert!(
        since.elapsed() < REQUEST_TIMEOUT,
        "too slow to test: held connections may have timed out"
    );
    assert_eq!(answer, b"", "one past the limit got an answer");
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(addr);
        write!(s, "GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        if read_until_closed(&mut s).0.starts_with(b"HTTP/1.1 200 OK") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot not freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stop_closes_kept_alive_connections() {
    let f = start_with(local_handle(), None);
    let mut s = connect(f.server.local_addr());
    write!(s, "GET /healthz {KEEP_ALIVE_GET}").unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    f.server.stop();
    let (rest, after) = read_until_closed(&mut s);
    assert_eq!(rest, b"");
    assert!(after < Duration::from_secs(2), "closed after {after:?}");
}
