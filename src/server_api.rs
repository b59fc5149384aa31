//! The server API listener (docs/protocol.md §10): `POST /api/<method>` for
//! the backend — publish to a conversation, post a message as a user,
//! disconnect a user, ask who is online, the node's figures — on its own
//! hyper listener on the side runtime, behind API keys.
//!
//! Owns: binding the API address, the accept loop and its limit of
//! [`MAX_CLIENTS`](crate::http_listener::MAX_CLIENTS) connections at once (more are dropped unanswered, as on
//! the admin listener, whose connection settings and timeouts it shares),
//! the listener's lifetime ([`ApiServer`]) and what every request may reach
//! ([`ApiState`]: the shards' inboxes, the store handle, the bridge). How one
//! connection and one request are served is `server_api/serve.rs`, the key
//! check `server_api/auth.rs`, the methods `server_api/methods.rs`, their
//! parameters `server_api/params.rs`, the error codes
//! `server_api/error.rs`, the presence read from Redis
//! `server_api/redis_presence.rs`.
//!
//! Must never: run on a shard or touch a shard's state but through its
//! inbox, log or echo a key, listen without a key (the config refuses it),
//! or share the admin listener's socket.

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod methods;
pub(crate) mod params;
mod redis_presence;
pub(crate) mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::bridge::Bridge;
use crate::config::ApiKeys;
use crate::http_listener::REQUEST_TIMEOUT;
use crate::shard::ShardMsg;
use crate::store::StoreHandle;

/// Largest request body accepted, bytes (larger: 413).
pub const MAX_BODY: usize = 1024 * 1024;

/// What every API request may reach.
pub struct ApiState {
    /// The accepted keys (`server_api/auth.rs` compares in constant time).
    pub keys: ApiKeys,
    /// Inboxes of all shards, indexed by shard id.
    pub inboxes: Vec<mpsc::UnboundedSender<ShardMsg>>,
    /// The store, for `send_message`.
    pub store: StoreHandle,
    /// Cross-node delivery, when Redis is configured.
    pub bridge: Option<Bridge>,
    /// This node's id in `info` (the bridge's node id, else host and port).
    pub node_id: String,
    /// How long a shard or the store may take to answer (`--store-timeout`).
    pub timeout: Duration,
    /// The other nodes' presence read from Redis (with a bridge only).
    pub redis: Option<redis_presence::RedisPresence>,
}

impl ApiState {
    /// The state for a node; `redis_url` enables the cross-node presence read.
    pub fn new(
        keys: ApiKeys,
        inboxes: Vec<mpsc::UnboundedSender<ShardMsg>>,
        store: StoreHandle,
        bridge: Option<Bridge>,
        node_id: String,
        timeout: Duration,
    ) -> Self {
        let redis = bridge
            .as_ref()
            .and_then(|b| redis_presence::RedisPresence::for_bridge(b.config()));
        Self {
            keys,
            inboxes,
            store,
            bridge,
            node_id,
            timeout,
            redis,
        }
    }
}

/// The running API listener. Dropping it stops it too.
pub struct ApiServer {
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    /// Never sent on: dropping it tells every open connection to finish its
    /// request in flight and close.
    _stop: watch::Sender<()>,
}

impl ApiServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting; open connections finish their request in flight
    /// (within [`REQUEST_TIMEOUT`]) and close.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Binds `addr` (errors surface here, before anything is spawned), then
/// serves on `handle` (the side runtime) until stopped.
pub fn start(addr: SocketAddr, handle: &Handle, state: ApiState) -> std::io::Result<ApiServer> {
    let (local_addr, listener) = crate::http_listener::bind(addr, handle)?;
    let (stop, stopped) = watch::channel(());
    let accept = handle.spawn(accept_loop(listener, Arc::new(state), stopped));
    tracing::info!(%local_addr, "server API listener started");
    Ok(ApiServer {
        local_addr,
        accept,
        _stop: stop,
    })
}

/// Accepts until aborted (at most [`MAX_CLIENTS`](crate::http_listener::MAX_CLIENTS) connections at once).
async fn accept_loop(listener: TcpListener, state: Arc<ApiState>, stopped: watch::Receiver<()>) {
    let http = Arc::new(crate::admin::serve::builder());
    crate::http_listener::accept_loop(listener, "server API", move |stream| {
        let (http, state, stopped) = (http.clone(), state.clone(), stopped.clone());
        async move { serve::serve(&http, stream, state, stopped).await }
    })
    .await
}

/// The node id `info` reports without a bridge: the host name and the
/// public port (stable across restarts of the same deployment).
pub fn local_node_id(public: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "chatgate".to_owned());
    format!("{host}:{}", public.port())
}
