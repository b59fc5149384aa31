//! The admin listener: a small HTTP/1.1 server (hyper) on the side runtime
//! for operators and Prometheus, apart from the public port.
//!
//! Owns: binding the admin address, the accept loop and its limit of
//! [`MAX_CLIENTS`] connections at once (more are dropped unanswered), the
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

mod routes;
pub(crate) mod serve;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// Time allowed to send a request head, counted from the accept and again
/// each time a kept-alive connection goes idle; also the time a request in
/// flight gets to finish once its connection is told to close.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is served; then it closes after the request in
/// flight (bounds a client that keeps a connection busy or reads slowly).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head accepted, bytes (larger: 431).
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once.
pub const MAX_CLIENTS: usize = 64;
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
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local_addr = std_listener.local_addr()?;
    let listener = {
        let _rt = handle.enter();
        TcpListener::from_std(std_listener)?
    };
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

/// Accepts until aborted; each connection holds one of [`MAX_CLIENTS`]
/// slots until `serve::serve` returns.
async fn accept_loop(listener: TcpListener, state: Arc<AdminState>, stopped: watch::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let http = Arc::new(serve::builder());
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "admin listener busy; connection dropped");
                    continue;
                };
                let (http, state, stopped) = (http.clone(), state.clone(), stopped.clone());
                tokio::spawn(async move {
                    serve::serve(&http, stream, state, stopped).await;
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
