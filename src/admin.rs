//! The admin listener: a tiny HTTP/1.1 server on the side runtime for
//! operators and Prometheus, apart from the public port.
//!
//! Owns: `GET /metrics` (the Prometheus text exposition rendered from the
//! recorder's handle), `GET /healthz` (the process answers), `GET /readyz`
//! (200 only when the store is reachable, the bridge — if configured — is
//! connected and the node is not draining; 503 naming what is wrong), and the
//! recorder's periodic upkeep (`run_upkeep` every [`UPKEEP_INTERVAL`]).
//!
//! Serves one request per connection (`Connection: close`), reads at most
//! [`MAX_HEAD`] bytes of head within [`REQUEST_TIMEOUT`], and at most
//! [`MAX_CLIENTS`] connections at once (more are dropped unanswered).
//!
//! Must never: run on a shard, block the side runtime for longer than one
//! render, serve anything but these three read-only paths, or expose it on a
//! public address (bind it to loopback or a private network).

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Time allowed to read a request and write its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted, bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once.
pub const MAX_CLIENTS: usize = 64;
/// How often the recorder's upkeep runs (drains histogram buckets).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Most headers a request may have.
const MAX_HEADERS: usize = 32;

/// What `/readyz` looks at, as reported by the gateway when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The store answers.
    pub store: bool,
    /// `None`: no bridge configured; `Some(connected)` otherwise.
    pub bridge: Option<bool>,
    /// The node got SIGTERM and is draining.
    pub draining: bool,
}

impl Readiness {
    /// Whether the node should receive new connections.
    pub fn is_ready(&self) -> bool {
        self.store && self.bridge != Some(false) && !self.draining
    }

    /// A one-line answer for `/readyz`, e.g. `not ready: draining`.
    pub fn describe(&self) -> String {
        if self.is_ready() {
            return "ready\n".to_owned();
        }
        let problems: Vec<&str> = [
            (!self.store).then_some("store unreachable"),
            (self.bridge == Some(false)).then_some("bridge disconnected"),
            self.draining.then_some("draining"),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("not ready: {}\n", problems.join(", "))
    }
}

/// Asked on every `/readyz`: must be cheap and never block (read flags).
pub type ReadinessProbe = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// What the admin listener serves.
#[derive(Clone)]
pub struct AdminState {
    /// Renders `/metrics` (from [`crate::metrics::install`]).
    pub metrics: PrometheusHandle,
    /// Answers `/readyz`.
    pub readiness: ReadinessProbe,
}

/// The running admin listener. Dropping it stops it too.
pub struct AdminServer {
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl AdminServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and stops the upkeep; requests in flight finish
    /// within [`REQUEST_TIMEOUT`].
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.upkeep.abort();
    }
}

/// Binds `addr` (errors surface here, before anything is spawned), then
/// serves on `handle` (the side runtime) until stopped.
pub fn start(addr: SocketAddr, handle: &Handle, state: AdminState) -> std::io::Result<AdminServer> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local_addr = std_listener.local_addr()?;
    let listener = {
        let _rt = handle.enter();
        TcpListener::from_std(std_listener)?
    };
    let upkeep = handle.spawn(upkeep_loop(state.metrics.clone()));
    let accept = handle.spawn(accept_loop(listener, Arc::new(state)));
    tracing::info!(%local_addr, "admin listener started");
    Ok(AdminServer {
        local_addr,
        accept,
        upkeep,
    })
}

async fn upkeep_loop(metrics: PrometheusHandle) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        metrics.run_upkeep();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<AdminState>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "admin listener busy; connection dropped");
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    serve(stream, &state).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a request got no regular answer.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    /// The client sent something that is not an HTTP/1.x request head.
    #[error("malformed request")]
    Malformed,
    /// The head exceeds [`MAX_HEAD`].
    #[error("request head too large")]
    TooLarge,
    /// The client closed before a complete head.
    #[error("connection closed early")]
    Closed,
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

async fn serve(mut stream: TcpStream, state: &AdminState) {
    let exchange = async {
        let response = match read_request(&mut stream).await {
            Ok(request) => answer(&request, state),
            Err(RequestError::Malformed) => Response::text(400, "Bad Request", "bad request\n"),
            Err(RequestError::TooLarge) => Response::text(
                431,
                "Request Header Fields Too Large",
                "request head too large\n",
            ),
            Err(e @ (RequestError::Closed | RequestError::Io(_))) => {
                tracing::debug!(error = %e, "admin request not read");
                return;
            }
        };
        let _ = stream.write_all(&response.encode()).await;
        let _ = stream.shutdown().await;
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .is_err()
    {
        tracing::debug!("admin request timed out");
    }
}

/// The parts of a request the answer depends on.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

async fn read_request(stream: &mut TcpStream) -> Result<Request, RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(RequestError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(request) = parse(&buf)? {
            return Ok(request);
        }
        if buf.len() >= MAX_HEAD {
            return Err(RequestError::TooLarge);
        }
    }
}

/// `Ok(None)`: the head is not complete yet.
fn parse(buf: &[u8]) -> Result<Option<Request>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooLarge),
        Err(_) => return Err(RequestError::Malformed),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(RequestError::Malformed);
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
    }))
}

/// A complete answer (always `Connection: close`).
#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn answer(request: &Request, state: &AdminState) -> Response {
    let known = matches!(request.path.as_str(), "/metrics" | "/healthz" | "/readyz");
    let head_only = request.method == "HEAD";
    if !known {
        return Response::text(404, "Not Found", "not found\n");
    }
    if request.method != "GET" && !head_only {
        return Response::text(405, "Method Not Allowed", "method not allowed\n");
    }
    let mut response = match request.path.as_str() {
        "/metrics" => Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            ..Response::text(200, "OK", state.metrics.render())
        },
        "/healthz" => Response::text(200, "OK", "ok\n"),
        _ => readyz((state.readiness)()),
    };
    response.head_only = head_only;
    response
}

fn readyz(readiness: Readiness) -> Response {
    if readiness.is_ready() {
        Response::text(200, "OK", readiness.describe())
    } else {
        Response::text(503, "Service Unavailable", readiness.describe())
    }
}
