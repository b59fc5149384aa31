//! One admin connection, served by hyper's HTTP/1.1 server: the limits on a
//! request head, the time a connection may take, and the keep-alive policy.
//!
//! Owns: the hyper builder settings, turning a [`Reply`] into a response (the
//! headers every answer carries), and one connection's life from the accepted
//! socket to its close.
//!
//! Must never: parse HTTP itself (hyper does; a malformed or oversized head
//! gets hyper's own 400 or 431), keep a connection past
//! [`CONNECTION_LIFETIME`](crate::http_listener::CONNECTION_LIFETIME) plus [`REQUEST_TIMEOUT`], or outlive a stop of the
//! listener by more than [`REQUEST_TIMEOUT`].

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::routes::{self, Reply, ALLOWED_METHODS};
use super::{AdminState, MAX_HEAD, MAX_HEADERS, REQUEST_TIMEOUT};
use crate::http_listener;

/// The settings every admin connection is served with (the server API
/// listener uses them too).
pub(crate) fn builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Runs from the accept, and again each time a kept-alive connection
        // goes idle: a silent, slow or idle client is closed after this.
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        // `Content-Length`, not `content-length`, as the listener always wrote.
        .title_case_headers(true);
    builder
}

/// Serves `stream` until the client or hyper closes it, the connection has
/// lived `CONNECTION_LIFETIME`, or `stop` fires (its sender is dropped).
/// The last two let the request in flight finish within [`REQUEST_TIMEOUT`].
pub(super) async fn serve(
    builder: &http1::Builder,
    stream: TcpStream,
    state: Arc<AdminState>,
    stop: watch::Receiver<()>,
) {
    let respond = move |request: Request<Incoming>| std::future::ready(respond(&request, &state));
    http_listener::serve_connection(builder, stream, respond, stop, "admin").await
}

/// The response to one request (also driven by the fuzz tests, `src/fuzz.rs`).
pub(crate) fn respond<B>(request: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    let reply = routes::answer(request.method(), request.uri().path(), state);
    into_response(reply, keep_alive_requested(request.headers()))
}

/// Keep-alive is the client's choice and off unless asked for: a request
/// without `Connection: keep-alive` gets `Connection: close` and the
/// connection closes after the answer (one request per connection, as
/// scrapers and probes that read to EOF expect). `close` wins over
/// `keep-alive`.
pub(crate) fn keep_alive_requested(headers: &HeaderMap) -> bool {
    let tokens = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim);
    let mut keep_alive = false;
    for token in tokens {
        if token.eq_ignore_ascii_case("close") {
            return false;
        }
        keep_alive |= token.eq_ignore_ascii_case("keep-alive");
    }
    keep_alive
}

/// `reply` with the headers every answer carries (hyper adds
/// `Content-Length` from the body and drops the body of a `HEAD`).
fn into_response(reply: Reply, keep_alive: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let connection = if keep_alive { "keep-alive" } else { "close" };
    headers.insert(header::CONNECTION, HeaderValue::from_static(connection));
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::routes::PLAIN_TEXT;

    fn connection(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CONNECTION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn keep_alive_only_when_asked_and_close_wins() {
        assert!(!keep_alive_requested(&connection(&[])));
        assert!(!keep_alive_requested(&connection(&["close"])));
        assert!(!keep_alive_requested(&connection(&["Upgrade"])));
        assert!(keep_alive_requested(&connection(&["keep-alive"])));
        assert!(keep_alive_requested(&connection(&["Keep-Alive"])));
        assert!(keep_alive_requested(&connection(&["te, keep-alive"])));
        assert!(!keep_alive_requested(&connection(&["keep-alive, close"])));
        assert!(!keep_alive_requested(&connection(&["keep-alive", "Close"])));
    }

    fn reply(status: StatusCode) -> Reply {
        Reply {
            status,
            content_type: PLAIN_TEXT,
            body: Bytes::from_static(b"x\n"),
        }
    }

    #[test]
    fn every_response_carries_type_cache_and_connection() {
        let response = into_response(reply(StatusCode::OK), false);
        let headers = response.headers();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], PLAIN_TEXT);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::CONNECTION], "close");
        assert!(!headers.contains_key(header::ALLOW));
        let kept = into_response(reply(StatusCode::OK), true);
        assert_eq!(kept.headers()[header::CONNECTION], "keep-alive");
    }

    #[test]
    fn a_405_names_the_allowed_methods() {
        let response = into_response(reply(StatusCode::METHOD_NOT_ALLOWED), false);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }
}
