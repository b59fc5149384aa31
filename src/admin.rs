//! The admin listener: a small HTTP/1.1 server (hyper) on the side runtime
//! for operators and Prometheus, apart from the public port.
//!
//! Owns: binding the admin address, the accept loop and its limit of
//! [`MAX_CLIENTS`](crate::http_listener::MAX_CLIENTS) connections at once (more are dropped unanswered), the
//! listener's lifetime ([`AdminServer`]), what `/readyz` looks at
//! ([`Readiness`]), and the recorder's periodic upkeep (`run_upkeep` every
//! [`UPKEEP_INTERVAL`]). What each path answers lives in `admin/routes.rs`;
//! how one connection is served (timeouts, head limits, keep-alive) in
//! `admin/serve.rs`, on hyper's HTTP/1.1 server.
//!
//! Paths: `GET /metrics` (the Prometheus text exposition rendered from the
//! recorder's handle), `GET /healthz` (the process answers), `GET /readyz`
//! (200 only when the store is reachable, the bridge — if configured — is
//! connected and the node is not draining; 503 naming what is wrong).
//!
//! Must never: run on a shard, block the side runtime for longer than one
//! render, serve anything but these three read-only paths, or expose it on a
//! public address (bind it to loopback or a private network).

pub(crate) mod routes;
pub(crate) mod serve;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http_listener::REQUEST_TIMEOUT;

/// Largest request head accepted, bytes (larger: 431).
pub const MAX_HEAD: usize = 8 * 1024;
/// How often the recorder's upkeep runs (drains histogram buckets).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Most headers a request may have (more: 431).
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
    /// Never sent on: dropping it tells every open connection (each holds a
    /// receiver) to finish its request in flight and close.
    _stop: watch::Sender<()>,
}

impl AdminServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and stops the upkeep; open connections finish their
    /// request in flight (within [`REQUEST_TIMEOUT`]) and close.
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
    let (local_addr, listener) = crate::http_listener::bind(addr, handle)?;
    let (stop, stopped) = watch::channel(());
    let upkeep = handle.spawn(upkeep_loop(state.metrics.clone()));
    let accept = handle.spawn(accept_loop(listener, Arc::new(state), stopped));
    tracing::info!(%local_addr, "admin listener started");
    Ok(AdminServer {
        local_addr,
        accept,
        upkeep,
        _stop: stop,
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

/// Accepts until aborted (at most [`MAX_CLIENTS`](crate::http_listener::MAX_CLIENTS) connections at once).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    stopped: watch::Receiver<()>,
) {
    let http = Arc::new(serve::builder());
    crate::http_listener::accept_loop(listener, "admin", move |stream| {
        let (http, state, stopped) = (http.clone(), state.clone(), stopped.clone());
        async move { serve::serve(&http, stream, state, stopped).await }
    })
    .await
}
