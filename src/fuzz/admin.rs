//! Property tests of the admin listener's request handling: the routes
//! (any method, any path) against a reference model, and whole
//! connections — arbitrary bytes and mutated real requests (Prometheus,
//! kube-probe, curl: `tests/fixtures/fuzz/admin.txt`) — served by hyper
//! with the listener's own settings over an in-memory pipe.
//!
//! Properties: never panic; a connection ends once the client has sent
//! everything (no request waits for more); every answer is an HTTP/1.1
//! response whose status is one the listener or hyper gives; a route
//! answers what the model says; a head over `MAX_HEAD` and a body that
//! claims any length are refused or ignored without being read (the
//! length bombs).
//!
//! Must never: be compiled outside `cargo test`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{config, mutated};
use crate::admin::{routes, serve, AdminState, Readiness, MAX_HEAD};

/// Real admin requests; blocks separated by a line holding `---`.
const ADMIN: &str = include_str!("../../tests/fixtures/fuzz/admin.txt");

/// The seed requests, `\n` as `\r\n`, each ended by an empty line.
pub(super) fn admin_requests() -> Vec<Vec<u8>> {
    ADMIN
        .split("\n---\n")
        .map(|r| format!("{}\r\n\r\n", r.trim_end().replace('\n', "\r\n")).into_bytes())
        .collect()
}

fn state(ready: bool) -> AdminState {
    AdminState {
        metrics: crate::metrics::builder()
            .expect("recorder")
            .build_recorder()
            .handle(),
        readiness: Arc::new(move || Readiness {
            store: ready,
            bridge: None,
            draining: false,
        }),
    }
}

/// What the listener answers to `method path`, from the documentation.
fn model(method: &Method, path: &str, ready: bool) -> StatusCode {
    let known = ["/metrics", "/healthz", "/readyz"].contains(&path);
    let readable = *method == Method::GET || *method == Method::HEAD;
    match (known, readable, path) {
        (false, _, _) => StatusCode::NOT_FOUND,
        (true, false, _) => StatusCode::METHOD_NOT_ALLOWED,
        (true, true, "/readyz") if !ready => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

/// Serves `input` as one admin connection and returns every byte written
/// back; `None` if the connection did not end within two seconds.
pub(super) fn exchange(input: &[u8], ready: bool) -> Option<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let state = Arc::new(state(ready));
    let input = input.to_vec();
    rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let service = service_fn(move |request| {
            std::future::ready(Ok::<_, Infallible>(serve::respond(&request, &state)))
        });
        // The listener's settings, but for half-closes: this client shuts
        // its side down after the request (so no request can wait for more
        // bytes), and hyper's default would then drop the answer.
        let mut builder = serve::builder();
        builder.half_close(true);
        let connection = builder.serve_connection(TokioIo::new(server), service);
        let talk = async {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            out
        };
        let both = async { tokio::join!(connection, talk).1 };
        tokio::time::timeout(Duration::from_secs(2), both)
            .await
            .ok()
    })
}

/// The statuses of every response in `out`, found by their status lines
/// (no admin body holds `HTTP/1.`, and a `HEAD` answer has none).
pub(super) fn statuses(out: &[u8]) -> Vec<u16> {
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1."),
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(out)
    );
    (0..out.len())
        .filter(|&i| out[i..].starts_with(b"HTTP/1."))
        .map(|i| {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&out[i..]) {
                Ok(httparse::Status::Complete(_)) => response.code.expect("a status"),
                other => panic!("a bad response head at {i}: {other:?}"),
            }
        })
        .collect()
}

/// What any admin connection may answer: the routes' statuses, and
/// hyper's own refusals (malformed 400, target too long 414, head too
/// large 431, not implemented 501, version 505).
const STATUSES: [u16; 9] = [200, 404, 405, 503, 400, 414, 431, 501, 505];

fn check_connection(input: &[u8]) -> Result<(), TestCaseError> {
    let out = exchange(input, true);
    prop_assert!(out.is_some(), "the connection did not end");
    for status in statuses(&out.unwrap_or_default()) {
        prop_assert!(STATUSES.contains(&status), "status {}", status);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn admin_routes_match_the_model(
        method in "[A-Z]{1,10}",
        path in prop_oneof![
            Just("/metrics".to_string()),
            Just("/healthz".to_string()),
            Just("/readyz".to_string()),
            "/[a-z/]{0,12}",
            ".{0,40}",
        ],
        ready in any::<bool>(),
    ) {
        let method = Method::from_bytes(method.as_bytes()).expect("a token is a method");
        let reply = routes::answer(&method, &path, &state(ready));
        prop_assert_eq!(reply.status, model(&method, &path, ready));
    }

    #[test]
    fn any_bytes_on_the_admin_listener(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        check_connection(&bytes)?;
    }

    #[test]
    fn mutated_admin_requests(bytes in mutated(admin_requests())) {
        check_connection(&bytes)?;
    }
}

#[test]
fn the_seed_requests_get_the_answers_they_ask_for() {
    let seeds = admin_requests();
    let answers: Vec<Vec<u16>> = seeds
        .iter()
        .map(|s| statuses(&exchange(s, true).expect("ends")))
        .collect();
    assert_eq!(answers[0], [200], "Prometheus scrape");
    assert_eq!(answers[1], [200], "kube-probe");
    assert_eq!(answers[2], [200], "HEAD /readyz");
    assert_eq!(answers[3], [200], "query ignored");
    assert_eq!(answers[4][0], 405, "POST /metrics");
    assert_eq!(answers[5], [200], "HTTP/1.0");
    assert_eq!(answers[6][0], 404, "unknown path");
    let not_ready = statuses(&exchange(&seeds[2], false).expect("ends"));
    assert_eq!(not_ready, [503]);
}

#[test]
fn admin_length_bombs_are_not_read() {
    // A head far over the limit: refused with 431 once MAX_HEAD is passed.
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    while head.len() < 8 * MAX_HEAD {
        head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    head.extend_from_slice(b"\r\n");
    assert_eq!(statuses(&exchange(&head, true).expect("ends")), [431]);
    // Bodies claiming any length: never read (the admin paths take none),
    // so the answer comes without waiting for the bytes — 405 from the
    // route, or hyper's own refusal of the claim (u64::MAX: 431).
    for claim in [
        "18446744073709551615",
        "99999999999999999999999",
        "-1",
        "1e9",
    ] {
        let request =
            format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {claim}\r\n\r\nab");
        let got = statuses(&exchange(request.as_bytes(), true).expect("ends"));
        assert!(
            [[405], [400], [431]].contains(&[got[0]]) && got.len() == 1,
            "{claim}: {got:?}"
        );
    }
    let chunked = b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
    let got = statuses(&exchange(chunked, true).expect("ends"));
    assert!(got == [200] || got == [400], "{got:?}");
}
