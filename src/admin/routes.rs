//! What the admin listener answers: a method and a path in, a complete
//! [`Reply`] (status, content type, body) out.
//!
//! Owns: the three paths, the methods they accept, their bodies and content
//! types, and the `/readyz` verdict. Pure: no sockets, no hyper connection
//! state; [`super::serve`] turns a [`Reply`] into a response on the wire.
//!
//! Must never: read a request body, block for longer than one render of the
//! metrics handle, or answer anything but these three read-only paths.

use bytes::Bytes;
use http::{Method, StatusCode};

use super::{AdminState, Readiness};

/// Content type of the Prometheus text exposition format (0.0.4).
pub(super) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of every other answer.
pub(super) const PLAIN_TEXT: &str = "text/plain; charset=utf-8";
/// The `Allow` header of a 405: the methods every path accepts.
pub(super) const ALLOWED_METHODS: &str = "GET, HEAD";

/// A complete answer, before it meets the wire (`HEAD` drops the body there).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
}

impl Reply {
    fn text(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: PLAIN_TEXT,
            body: body.into(),
        }
    }
}

/// The answer to `method path` (`path` without query or fragment).
pub(crate) fn answer(method: &Method, path: &str, state: &AdminState) -> Reply {
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return Reply::text(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != Method::GET && method != Method::HEAD {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/metrics" => Reply {
            content_type: PROMETHEUS_TEXT,
            ..Reply::text(StatusCode::OK, state.metrics.render())
        },
        "/healthz" => Reply::text(StatusCode::OK, "ok\n"),
        _ => readyz((state.readiness)()),
    }
}

fn readyz(readiness: Readiness) -> Reply {
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Reply::text(status, readiness.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn state(ready: Readiness) -> AdminState {
        AdminState {
            metrics: crate::metrics::builder().unwrap().build_recorder().handle(),
            readiness: Arc::new(move || ready),
        }
    }

    const READY: Readiness = Readiness {
        store: true,
        bridge: None,
        draining: false,
    };

    #[test]
    fn the_three_paths_answer_get_and_head() {
        let s = state(READY);
        for method in [Method::GET, Method::HEAD] {
            let health = answer(&method, "/healthz", &s);
            assert_eq!(health, Reply::text(StatusCode::OK, "ok\n"));
            let ready = answer(&method, "/readyz", &s);
            assert_eq!(ready, Reply::text(StatusCode::OK, "ready\n"));
            let metrics = answer(&method, "/metrics", &s);
            assert_eq!(
                (metrics.status, metrics.content_type),
                (StatusCode::OK, PROMETHEUS_TEXT)
            );
        }
    }

    #[test]
    fn readyz_is_503_naming_the_problem() {
        let s = state(Readiness {
            draining: true,
            ..READY
        });
        assert_eq!(
            answer(&Method::GET, "/readyz", &s),
            Reply::text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
        );
    }

    #[test]
    fn unknown_paths_are_404_whatever_the_method() {
        let s = state(READY);
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/metrics/x"),
            (Method::POST, "/nope"),
            (Method::GET, "*"),
        ] {
            assert_eq!(
                answer(&method, path, &s),
                Reply::text(StatusCode::NOT_FOUND, "not found\n"),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn other_methods_on_known_paths_are_405() {
        let s = state(READY);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert_eq!(
                answer(&method, "/metrics", &s),
                Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
                "{method}"
            );
        }
    }
}
