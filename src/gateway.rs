//! The gateway: binds the port, starts the store and the shards, stops them.
//!
//! Owns process-level assembly: validating the config, binding one
//! SO_REUSEPORT listener per shard on the same address (refusing an address
//! another process already listens on), wiring the store's commit sink to
//! the shards' inboxes, and the shutdown order (shards drain and close their
//! sockets with 1001, then the store commits what is queued and stops).
//!
//! Must never: run on a shard thread, or hold a store handle after the
//! shards are gone (that would keep the store from finishing).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::sync::{mpsc, oneshot};

use crate::admin::{self, AdminServer, AdminState, Readiness, ReadinessProbe};
use crate::auth::Verifier;
use crate::bridge::{Bridge, BridgeConfig, BridgeState, Deliver, RemoteEvent, RemoteKind};
use crate::channel_layer::{ChannelLayer, ChannelLayerConfig, ChannelLayerState};
use crate::config::{Config, ConfigError};
use crate::limits::{Limits, PRUNE_INTERVAL};
use crate::routing::shard_for;
use crate::server_api::{self, ApiServer, ApiState};
pub use crate::shard::ShardStats;
use crate::shard::{self, ShardMsg, ShardParts};
use crate::side::SideRuntime;
use crate::store::{self, CommitSink, StoreError, StoreWorker};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the side runtime failed to start: {0}")]
    SideRuntime(std::io::Error),
    #[error("shard {shard} failed to start: {source}")]
    Shard {
        shard: usize,
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct Gateway {
    /// Dropped last: the store, the bridge and the admin listener run on it.
    side: Option<SideRuntime>,
    addr: SocketAddr,
    admin: Option<AdminServer>,
    api: Option<ApiServer>,
    drivers: Vec<&'static str>,
    shutdown: ShutdownHandle,
    threads: Vec<std::thread::JoinHandle<()>>,
    store: Option<StoreWorker>,
    bridge: Option<Bridge>,
    layer: Option<ChannelLayer>,
}

/// Triggers a graceful shutdown from anywhere (signal handler, tests):
/// `/readyz` turns 503 at once; after the drain grace every shard stops
/// accepting, closes its sockets with 1001 and exits.
#[derive(Clone)]
pub struct ShutdownHandle {
    inboxes: Vec<mpsc::UnboundedSender<ShardMsg>>,
    draining: Arc<AtomicBool>,
    grace: Duration,
}

impl ShutdownHandle {
    /// Starts the drain (idempotent); returns at once.
    pub fn trigger(&self) {
        if self.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        let inboxes = self.inboxes.clone();
        let grace = self.grace;
        let stop = move || {
            std::thread::sleep(grace);
            for inbox in &inboxes {
                let _ = inbox.send(ShardMsg::Shutdown);
            }
        };
        if grace.is_zero() {
            stop();
        } else if std::thread::Builder::new()
            .name("chatgate-drain".into())
            .spawn(stop)
            .is_err()
        {
            for inbox in &self.inboxes {
                let _ = inbox.send(ShardMsg::Shutdown);
            }
        }
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

impl Gateway {
    /// Validates `config`, binds, starts the store, the admin listener and
    /// the shards; returns once every shard is running.
    pub fn start(config: Config) -> Result<Self, GatewayError> {
        config.validate()?;
        // The refills' coarse clock starts here (`delivery_log.rs`).
        let _ = crate::delivery_log::now_tick();
        let listeners = bind_listeners(config.listen, config.shards)?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| GatewayError::Bind {
                addr: config.listen,
                source,
            })?;
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..config.shards)
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let prometheus = crate::metrics::install();
        let side = SideRuntime::start(config.store_threads).map_err(GatewayError::SideRuntime)?;
        let (store, worker) = store::start(
            &config.store,
            config.store_batch_max,
            config.timeouts.store,
            commit_sink(&inboxes),
            &side.handle(),
        )?;
        let limits = Arc::new(
            Limits::new(&config.rate_limits)
                .map_err(|e| GatewayError::Config(ConfigError(format!("limits: {e}"))))?,
        );
        Limits::spawn_pruner(limits.clone(), &side.handle(), PRUNE_INTERVAL);
        let bridge = match &config.bridge {
            Some(cfg) => Some(start_bridge(cfg.clone(), &side, &inboxes)?),
            None => None,
        };
        let layer = match &config.channel_layer {
            Some(cfg) => Some(start_channel_layer(cfg.clone(), &side, &inboxes)?),
            None => None,
        };
        let shutdown = ShutdownHandle {
            inboxes: inboxes.clone(),
            draining: Arc::new(AtomicBool::new(false)),
            grace: config.drain_grace,
        };
        let admin = match config.admin_listen {
            Some(admin_addr) => {
                let state = AdminState {
                    metrics: prometheus,
                    readiness: readiness_probe(
                        store.readiness(),
                        bridge.clone(),
                        shutdown.draining.clone(),
                    ),
                };
                let server = admin::start(admin_addr, &side.handle(), state).map_err(|source| {
                    GatewayError::Bind {
                        addr: admin_addr,
                        source,
                    }
                })?;
                Some(server)
            }
            None => None,
        };
        let api = match config.api_listen {
            Some(api_addr) => {
                let node_id = match &bridge {
                    Some(b) => b.config().node_id.clone(),
                    None => server_api::local_node_id(addr),
                };
                let state = ApiState::new(
                    config.api_keys.clone(),
                    inboxes.clone(),
                    store.clone(),
                    bridge.clone(),
                    node_id,
                    config.timeouts.store,
                );
                let server =
                    server_api::start(api_addr, &side.handle(), state).map_err(|source| {
                        GatewayError::Bind {
                            addr: api_addr,
                            source,
                        }
                    })?;
                Some(server)
            }
            None => None,
        };
        let parts = ShardParts {
            verifier: Arc::new(Verifier::new(&config.jwt)),
            config: Arc::new(config),
            store,
            limits,
            bridge: bridge.clone(),
            layer: layer.clone(),
            inboxes,
        };
        let mut gw = Self {
            side: Some(side),
            addr,
            admin,
            api,
            drivers: Vec::new(),
            shutdown,
            threads: Vec::new(),
            store: Some(worker),
            bridge,
            layer,
        };
        for (id, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            if let Err(e) = gw.start_shard(id, parts.clone(), listener, inbox) {
                drop(parts);
                gw.stop();
                return Err(e);
            }
        }
        tracing::info!(%addr, admin = ?gw.admin_addr(), api = ?gw.api_addr(), shards = gw.threads.len(), drivers = ?gw.drivers, "chatgate listening");
        Ok(gw)
    }

    fn start_shard(
        &mut self,
        id: usize,
        parts: ShardParts,
        listener: std::net::TcpListener,
        inbox: mpsc::UnboundedReceiver<ShardMsg>,
    ) -> Result<(), GatewayError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = shard::spawn(id, parts, listener, inbox, ready_tx)
            .map_err(|source| GatewayError::Shard { shard: id, source })?;
        self.threads.push(thread);
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| Err(std::io::Error::other("shard did not start")));
        let driver = ready.map_err(|source| GatewayError::Shard { shard: id, source })?;
        tracing::info!(shard = id, driver, "shard running");
        self.drivers.push(driver);
        Ok(())
    }

    /// The address the public listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The io driver each shard runs (`io_uring` or `epoll`).
    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    /// The admin listener's address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// The server API listener's address, when enabled.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(ApiServer::local_addr)
    }

    /// The Redis bridge's figures, when a bridge is configured.
    pub fn bridge_state(&self) -> Option<BridgeState> {
        self.bridge.as_ref().map(Bridge::state)
    }

    /// The Channels layer's figures, when it is configured.
    pub fn channel_layer_state(&self) -> Option<ChannelLayerState> {
        self.layer.as_ref().map(ChannelLayer::state)
    }

    /// A handle that triggers shutdown from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Per-shard figures (asks each shard; call from outside the shards).
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        let replies: Vec<_> = self
            .shutdown
            .inboxes
            .iter()
            .map(|inbox| {
                let (tx, rx) = oneshot::channel();
                let _ = inbox.send(ShardMsg::Stats(tx));
                rx
            })
            .collect();
        replies
            .into_iter()
            .map(|rx| rx.blocking_recv().unwrap_or_default())
            .collect()
    }

    /// Graceful shutdown: sockets get 1001, queued messages commit, threads end.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Waits until a [`ShutdownHandle`] has stopped the gateway.
    pub fn wait(mut self) {
        self.join();
    }

    fn stop(&mut self) {
        self.shutdown_handle().trigger();
        self.join();
    }

    fn join(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.shutdown.inboxes.clear();
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(api) = self.api.take() {
            api.stop();
        }
        if let Some(layer) = self.layer.take() {
            layer.shutdown();
        }
        if let Some(bridge) = self.bridge.take() {
            bridge.shutdown();
        }
        if let Some(store) = self.store.take() {
            store.join();
        }
        if let Some(side) = self.side.take() {
            side.shutdown(Duration::from_secs(5));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// `/readyz`: the store answers, the bridge (if any) is connected, and the
/// node is not draining.
fn readiness_probe(
    store: store::Readiness,
    bridge: Option<Bridge>,
    draining: Arc<AtomicBool>,
) -> ReadinessProbe {
    Arc::new(move || Readiness {
        store: store.is_ready(),
        bridge: bridge.as_ref().map(|b| b.state().connected),
        draining: draining.load(Ordering::SeqCst),
    })
}

/// Starts the Redis bridge: events from other nodes go to the inbox of the
/// shard that owns their conversation; its state is published as metrics.
fn start_bridge(
    cfg: BridgeConfig,
    side: &SideRuntime,
    inboxes: &[mpsc::UnboundedSender<ShardMsg>],
) -> Result<Bridge, GatewayError> {
    let bridge = Bridge::start(cfg, &side.handle(), to_shards(inboxes))
        .map_err(|e| GatewayError::Config(ConfigError(e.to_string())))?;
    let watched = bridge.clone();
    side.handle().spawn(async move {
        let mut dropped = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let s = watched.state();
            crate::metrics::bridge_connected(s.connected);
            crate::metrics::bridge_queue_depth(s.queue_depth);
            crate::metrics::bridge_dropped(s.dropped_total.saturating_sub(dropped) as usize);
            dropped = s.dropped_total;
        }
    });
    Ok(bridge)
}

/// Starts the Channels layer: its events go to the inbox of the shard that
/// owns their conversation; its figures are published as metrics.
fn start_channel_layer(
    cfg: ChannelLayerConfig,
    side: &SideRuntime,
    inboxes: &[mpsc::UnboundedSender<ShardMsg>],
) -> Result<ChannelLayer, GatewayError> {
    let layer = ChannelLayer::start(cfg, &side.handle(), to_shards(inboxes))
        .map_err(|e| GatewayError::Config(ConfigError(e.to_string())))?;
    let watched = layer.clone();
    side.handle().spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last = ChannelLayerState::default();
        loop {
            tick.tick().await;
            let now = watched.state();
            crate::metrics::channel_layer(now.since(&last));
            last = now;
        }
    });
    Ok(layer)
}

/// Hands an event from another node or the Channels layer to the inbox of
/// the shard that owns its conversation (every shard for a node's end or
/// a disconnect in every conversation).
fn to_shards(inboxes: &[mpsc::UnboundedSender<ShardMsg>]) -> Deliver {
    let inboxes = inboxes.to_vec();
    Arc::new(move |event: RemoteEvent| {
        let everywhere = match event.kind {
            RemoteKind::NodeGone { .. } => true,
            RemoteKind::Disconnect { .. } => event.conversation_id == 0,
            _ => false,
        };
        if everywhere {
            // Every shard may hold users that node reported, or sockets of
            // the user to disconnect.
            for inbox in &inboxes {
                let _ = inbox.send(ShardMsg::Remote(event.clone()));
            }
            return;
        }
        let shard = shard_for(event.conversation_id, inboxes.len());
        let _ = inboxes[shard].send(ShardMsg::Remote(event));
    })
}

/// Delivers store outcomes to the inbox of the shard that sent them.
fn commit_sink(inboxes: &[mpsc::UnboundedSender<ShardMsg>]) -> CommitSink {
    let inboxes = inboxes.to_vec();
    Arc::new(move |shard, outcomes| {
        if let Some(inbox) = inboxes.get(shard) {
            let _ = inbox.send(ShardMsg::Committed(outcomes));
        }
    })
}

/// One listener per shard on the same address (SO_REUSEPORT). A fixed port
/// that another socket already listens on is refused, even one that also
/// set SO_REUSEPORT: the probe bind below does not set it.
fn bind_listeners(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, GatewayError> {
    let err = |source| GatewayError::Bind { addr, source };
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr).map_err(err)?);
    }
    let first = reuseport_listener(addr).map_err(err)?;
    let actual = first.local_addr().map_err(err)?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(reuseport_listener(actual).map_err(err)?);
    }
    Ok(all)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
