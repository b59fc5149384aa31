//! One server API connection and one request: hyper's HTTP/1.1 server with
//! the admin listener's settings, then the checks every request passes in
//! order — key (401), verb (405), method (404), content type (415), size
//! (413), a JSON object body (400) — the call, and the JSON answer.
//!
//! Owns: the request checks and their order, reading the body (capped at
//! [`MAX_BODY`], within [`REQUEST_TIMEOUT`]), the response (status, JSON
//! body, headers), and the API's metrics per request.
//!
//! Must never: read more than [`MAX_BODY`] bytes of a body, log a header
//! (keys travel in them), or keep a connection past the admin listener's
//! lifetime and timeouts.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::error::Refusal;
use super::{auth, methods, ApiState, MAX_BODY, REQUEST_TIMEOUT};
use crate::admin::serve::keep_alive_requested;
use crate::http_listener;

/// The path every method lives under.
const PREFIX: &str = "/api/";

/// Serves `stream` until the client or hyper closes it, the connection has
/// lived [`CONNECTION_LIFETIME`](http_listener::CONNECTION_LIFETIME), or `stop` fires; the last two let the
/// request in flight finish within [`REQUEST_TIMEOUT`].
pub(super) async fn serve(
    builder: &http1::Builder,
    stream: TcpStream,
    state: Arc<ApiState>,
    stop: watch::Receiver<()>,
) {
    let respond = move |request: Request<Incoming>| {
        let state = state.clone();
        async move { respond(request, &state).await }
    };
    http_listener::serve_connection(builder, stream, respond, stop, "server API").await
}

/// Answers one request and counts it.
async fn respond(request: Request<Incoming>, state: &ApiState) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let keep_alive = keep_alive_requested(request.headers());
    let label = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .and_then(methods::known)
        .unwrap_or("other");
    let (status, body) = match answer(request, state).await {
        Ok(Ok(result)) => (StatusCode::OK, json!({ "result": result })),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, json!({ "error": e.body() })),
        Err(refusal) => (refusal.status(), json!({ "error": refusal.body() })),
    };
    crate::metrics::api_request(label, status.as_u16(), started.elapsed());
    into_response(status, &body, keep_alive)
}

/// The checks in order, then the call.
async fn answer(
    request: Request<Incoming>,
    state: &ApiState,
) -> Result<Result<Value, super::error::ApiError>, Refusal> {
    if !auth::authorized(request.headers(), &state.keys) {
        return Err(Refusal::Unauthorized);
    }
    if request.method() != Method::POST {
        return Err(Refusal::MethodNotAllowed);
    }
    let method = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .and_then(methods::known)
        .ok_or(Refusal::UnknownMethod)?;
    if !is_json(request.headers()) {
        return Err(Refusal::UnsupportedMediaType);
    }
    let params = read_object(request).await?;
    Ok(methods::call(state, method, &params).await)
}

/// Whether `Content-Type` is `application/json` (parameters allowed).
pub(crate) fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The body as a JSON object: at most [`MAX_BODY`] bytes (a larger
/// `Content-Length` is refused before reading), within [`REQUEST_TIMEOUT`].
/// Generic over the body so the fuzz tests can feed it any (`src/fuzz.rs`).
pub(crate) async fn read_object<B>(request: Request<B>) -> Result<Map<String, Value>, Refusal>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Refusal::TooLarge);
    }
    let limited = Limited::new(request.into_body(), MAX_BODY);
    let collected = tokio::time::timeout(REQUEST_TIMEOUT, limited.collect())
        .await
        .map_err(|_| Refusal::BadBody("the body did not arrive in time"))?;
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadBody("the body could not be read")),
    };
    match serde_json::from_slice(&body) {
        Ok(Value::Object(params)) => Ok(params),
        _ => Err(Refusal::BadBody("the body must be a JSON object")),
    }
}

/// A JSON answer with the headers every answer carries.
fn into_response(status: StatusCode, body: &Value, keep_alive: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let connection = if keep_alive { "keep-alive" } else { "close" };
    headers.insert(header::CONNECTION, HeaderValue::from_static(connection));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("apikey"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let mut h = http::HeaderMap::new();
        assert!(!is_json(&h));
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&h), ok, "{value}");
        }
    }
}
