//! The bridge: cross-node conversations over Redis pub/sub (what
//! channels_redis did for the original backend).
//!
//! Owns, for one node: the subscription set (one Redis channel per
//! conversation, `{prefix}:conv:{id}`, subscribed while the node has a local
//! member in it, released after a linger), the outgoing queue of events for
//! other nodes (bounded; drops the oldest when full, and counts), the two
//! Redis connections and their health (heartbeat `PING`, reconnect with
//! backoff and jitter, resubscribe), and the [`BridgeState`] figures.
//!
//! Runs on the side tokio runtime as three tasks:
//! - the publisher (`bridge/publisher.rs`): everything queued when the
//!   previous pipeline returned goes out in the next pipeline (at most
//!   `batch_max` `PUBLISH`es, one round trip);
//! - the subscriber (`bridge/subscriber.rs`): applies subscribe/unsubscribe
//!   requests, receives pushes and hands other nodes' events to [`Deliver`];
//! - the janitor (`bridge/janitor.rs`): every heartbeat, removes the
//!   presence fields of nodes whose liveness key expired.
//!
//! Presence (`bridge/presence.rs`): a presence report is published like an
//! event (envelope flag bit 3) and, in the same pipeline, kept in the
//! conversation's Redis hash; every heartbeat refreshes the node's
//! liveness key (`presence_ttl`) and announces the node on
//! `{prefix}:nodes`; after subscribing a conversation the subscriber reads
//! the hash (live nodes only) and hands it to the shard as a snapshot; a
//! node that reported presence and is not heard for `presence_ttl` is
//! handed to every shard as gone; after a reconnect every held
//! conversation is read again and known nodes get a fresh TTL. The
//! janitor (`bridge/janitor.rs`) removes the presence a dead node left in
//! Redis, found through the nodes' registry and their liveness keys.
//!
//! Nodes of different releases share a cluster during a rolling upgrade:
//! the envelope (`bridge/envelope.rs`) is versioned, this build writes what
//! the previous release reads, and reads later releases in part; what it
//! cannot read is skipped, counted and logged once per reason.
//!
//! On a Redis Cluster (`--redis-cluster`, `bridge/cluster.rs`) the same two
//! tasks run over sharded pub/sub, with partitions, per-primary links and
//! lanes, and per-partition probes; everything above holds there too.
//!
//! After any loss of a subscription (either mode), the shards are told
//! (`bridge/gaps.rs`): a gap when it is noticed, a refill when the
//! subscription is back, so v2 sockets get what they missed from the store
//! (`shard_ctx/refill.rs`).
//!
//! Shards only call the non-blocking methods of [`Bridge`]: `publish`
//! (a short critical section on the queue, then a wake-up), `subscribe` and
//! `unsubscribe` (a send on an unbounded channel).
//!
//! Must never: block or await in a method a shard calls; deliver this node's
//! own events (the shard already fanned them out locally); hold a
//! subscription per socket (one per node per conversation); let the queue
//! grow past `queue_max`. Node ids must be unique among the nodes sharing a
//! prefix: events carrying this node's id are treated as its own.
//!
//! Delivery is at most once across a Redis outage (pub/sub keeps nothing for
//! a disconnected subscriber: clients catch up from the database), and once,
//! in publish order per (origin node, conversation), otherwise — including
//! when a publisher re-sends a pipeline that failed half-way (the envelope's
//! sequence number lets receivers drop the repeats).

pub mod cluster;
pub(crate) mod envelope;
mod gaps;
mod inbound;
mod janitor;
pub(crate) mod link;
pub mod presence;
mod publisher;
mod queue;
mod subscriber;
mod subscriptions;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};

pub use self::envelope::{Reads as EnvelopeReads, Skip as EnvelopeSkip};
use self::link::Clients;
use self::queue::PublishQueue;

/// Bridge settings. Build with [`BridgeConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// Redis URL: `redis://[user:pass@]host:port[/db]` or `redis+unix:///path`
    /// (TLS is not compiled in).
    pub url: String,
    /// This node's id, 1–255 bytes, unique among nodes sharing `prefix`.
    /// Default: 16 random hex digits.
    pub node_id: String,
    /// Channel prefix, so several deployments can share one Redis.
    /// Default: `chatgate`.
    pub prefix: String,
    /// Interval of the heartbeat `PING` on each connection; also the time
    /// box of every connect and command. Default: 5 s; at least 10 ms.
    pub heartbeat: Duration,
    /// Events waiting to be published, at most (oldest dropped beyond).
    /// Default: 100 000.
    pub queue_max: usize,
    /// `PUBLISH`es per pipeline, at most. Default: 1024.
    pub batch_max: usize,
    /// How long a conversation stays subscribed after its last local member
    /// left (a re-join meanwhile keeps the subscription). Default: 2 s.
    pub unsubscribe_linger: Duration,
    /// Longest delay between reconnect attempts. Default: 5 s.
    pub backoff_max: Duration,
    /// How long this node's presence (who is online through it) outlives
    /// its last heartbeat on the other nodes: a node that dies without
    /// closing its sockets has its users turned offline within this plus
    /// one heartbeat. At least twice the heartbeat. Default: 30 s.
    pub presence_ttl: Duration,
    /// Which bridge envelopes the node reads and writes
    /// (`bridge/envelope.rs`). Default: [`EnvelopeReads::CURRENT`]. The
    /// other values make the node behave like a node of an earlier release
    /// (reading and publishing only what that release knew), to test mixed
    /// clusters; never set them in production.
    pub envelopes: EnvelopeReads,
    /// Redis Cluster seed nodes (`redis://host:port`), any of them enough
    /// to find the rest; empty: one Redis at `url` (`url` must then be set,
    /// and must be empty otherwise). Default: empty.
    pub cluster: Vec<String>,
    /// Partitions of the conversations in cluster mode
    /// (`bridge/cluster/layout.rs`), 1 to 16,384; every node of a
    /// deployment must use the same. Default: 128.
    pub partitions: u16,
}

impl BridgeConfig {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "chatgate";

    /// Defaults for everything but the URL (see each field).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: format!("{:016x}", rand::random::<u64>()),
            prefix: Self::DEFAULT_PREFIX.to_string(),
            heartbeat: Duration::from_secs(5),
            queue_max: 100_000,
            batch_max: 1024,
            unsubscribe_linger: Duration::from_secs(2),
            backoff_max: Duration::from_secs(5),
            presence_ttl: Duration::from_secs(30),
            envelopes: EnvelopeReads::CURRENT,
            cluster: Vec::new(),
            partitions: cluster::layout::Layout::DEFAULT_PARTITIONS,
        }
    }

    /// Defaults for a Redis Cluster reached through `seeds`.
    pub fn for_cluster(seeds: Vec<String>) -> Self {
        Self {
            cluster: seeds,
            ..Self::new("")
        }
    }

    /// Whether the bridge runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// The Redis channel of a conversation: `{prefix}:conv:{id}`.
    pub fn channel(&self, conversation_id: i64) -> String {
        format!("{}{conversation_id}", self.channel_prefix())
    }

    /// The `CLIENT SETNAME` of this node's connections: `{prefix}:{node_id}:pub`
    /// and `…:sub` (spaces and control characters become `_`).
    pub fn client_name_base(&self) -> String {
        format!("{}:{}", self.prefix, self.node_id)
    }

    fn channel_prefix(&self) -> String {
        format!("{}:conv:", self.prefix)
    }

    /// Checks every setting (before anything starts).
    pub fn validate(&self) -> Result<(), BridgeError> {
        let problem = if self.is_cluster() && !self.url.is_empty() {
            "--redis-url and --redis-cluster are mutually exclusive"
        } else if self.is_cluster() && (self.prefix.contains('{') || self.prefix.contains('}')) {
            "with --redis-cluster the prefix must not contain { or }"
        } else if !(1..=cluster::slot::SLOTS).contains(&self.partitions) {
            "partitions must be between 1 and 16384"
        } else if self.node_id.is_empty() || self.node_id.len() > 255 {
            "node_id must be 1 to 255 bytes"
        } else if self.prefix.is_empty() {
            "prefix must not be empty"
        } else if self.heartbeat < Duration::from_millis(10) {
            "heartbeat must be at least 10 ms"
        } else if self.queue_max == 0 || self.batch_max == 0 {
            "queue_max and batch_max must be at least 1"
        } else if self.backoff_max.is_zero() {
            "backoff_max must be positive"
        } else if self.presence_ttl < 2 * self.heartbeat {
            "presence_ttl must be at least twice the heartbeat"
        } else {
            return Ok(());
        };
        Err(BridgeError::InvalidConfig(problem))
    }
}

/// An event crossing nodes: a server→client JSON payload for a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEvent {
    pub conversation_id: i64,
    /// Which sockets get it, on every node.
    pub audience: crate::audience::Audience,
    /// The server→client JSON text, exactly as sent to sockets (for
    /// [`RemoteKind::Presence`]: the report, `bridge/presence.rs`).
    pub payload: Bytes,
    /// What the event is.
    pub kind: RemoteKind,
}

/// What a [`RemoteEvent`] carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteKind {
    /// A frame for the audience's sockets.
    Frame,
    /// A presence report (`payload`) of the node instance `origin`
    /// (ignored when publishing: the bridge fills in its own).
    Presence { origin: u64 },
    /// Who the other nodes report online in the conversation, read from
    /// Redis when this node started holding it (in order with the
    /// conversation's events: read after subscribing).
    Snapshot(Vec<presence::SnapshotEntry>),
    /// The node instance `origin` was not heard for the presence TTL: its
    /// users are offline (every shard; `conversation_id` is 0).
    NodeGone { origin: u64 },
    /// A server API disconnect (docs/protocol.md §10): close `user_id`'s
    /// sockets in the conversation (`conversation_id` 0: in every one) with
    /// close code `code`. Travels on the heartbeat channel to every node
    /// (`bridge/envelope.rs`, flag bit 4).
    Disconnect { user_id: i64, code: u16 },
    /// The bridge lost the conversation's subscription: what other nodes
    /// published after `good_at` may be missing (`shard_ctx/refill.rs`).
    /// Never crosses Redis.
    Gap { good_at: std::time::Instant },
    /// The conversation's subscription is back (after a [`RemoteKind::Gap`]
    /// with the same `good_at`): its v2 sockets are refilled from the
    /// store. Never crosses Redis.
    Refill { good_at: std::time::Instant },
}

impl RemoteEvent {
    /// The envelope header it is published with by `node_id`'s bridge
    /// `instance` (sequence 0: the publisher sets it).
    fn header<'a>(&self, node_id: &'a [u8], instance: u64) -> envelope::Header<'a> {
        envelope::Header {
            node_id,
            instance,
            seq: 0,
            conversation_id: self.conversation_id,
            audience: self.audience,
            presence: matches!(self.kind, RemoteKind::Presence { .. }),
            disconnect: matches!(self.kind, RemoteKind::Disconnect { .. }),
        }
    }
}

/// Receives every event published by ANOTHER node on a subscribed
/// conversation, in publish order per (origin node, conversation). Called on
/// the side runtime; must not block (forward to the owning shard's inbox).
pub type Deliver = Arc<dyn Fn(RemoteEvent) + Send + Sync>;

/// A snapshot of the bridge's figures (for metrics and `/readyz`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeState {
    /// Both the publishing and the subscribing connection are up.
    pub connected: bool,
    /// Events waiting to be published.
    pub queue_depth: usize,
    /// Events dropped because the queue was full.
    pub dropped_total: u64,
    /// Events published (their pipeline succeeded).
    pub published_total: u64,
    /// Pipelines that succeeded (Redis round trips for publishing).
    pub batches_total: u64,
    /// Events in the last successful pipeline.
    pub last_batch_size: usize,
    /// Events in the largest successful pipeline so far.
    pub max_batch_size: usize,
    /// Events from other nodes handed to [`Deliver`].
    pub received_total: u64,
    /// Messages on our channels that were not valid envelopes (dropped).
    pub malformed_total: u64,
    /// Envelopes of other releases skipped whole or in part, by reason
    /// (`chatgate_bridge_skipped_total{reason}`).
    pub skipped: Skipped,
    /// Presence hash fields of dead nodes this node removed from Redis.
    pub presence_fields_reaped_total: u64,
    /// Dead nodes whose presence this node removed from Redis.
    pub presence_nodes_reaped_total: u64,
    /// Conversations the node holds a subscription for (including those
    /// lingering after their last member left).
    pub subscriptions: usize,
    /// Connections lost and re-opened (both connections counted).
    pub reconnects_total: u64,
}

/// Envelopes skipped, by [`EnvelopeSkip`] reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Of a version this node does not frame (nodes emulating a version-1 release only).
    pub version: u64,
    /// Version 1 with a flag this node does not know.
    pub flags: u64,
    /// Version 2 or later with a required flag this node does not know.
    pub required: u64,
    /// Delivered without an optional part this node does not know.
    pub optional: u64,
}

impl Skipped {
    /// The count of `reason`.
    pub fn get(&self, reason: EnvelopeSkip) -> u64 {
        match reason {
            EnvelopeSkip::Version => self.version,
            EnvelopeSkip::Flags => self.flags,
            EnvelopeSkip::Required => self.required,
            EnvelopeSkip::Optional => self.optional,
        }
    }
}

/// Why the bridge could not start. Redis being down is not one of them.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The URL does not parse (operator's fault).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    /// A setting is out of range (operator's fault).
    #[error("invalid bridge configuration: {0}")]
    InvalidConfig(&'static str),
}

/// The node's handle on the bridge: `Send + Sync`, cheap to clone; every
/// shard holds one.
#[derive(Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("node_id", &self.shared.config.node_id)
            .field("prefix", &self.shared.config.prefix)
            .finish_non_exhaustive()
    }
}

/// A request from a shard to the subscriber task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubCommand {
    Subscribe(i64),
    Unsubscribe(i64),
}

/// Longest time `shutdown` spends publishing what is queued.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

impl Bridge {
    /// Validates `cfg` and starts the publisher and subscriber tasks on
    /// `side`. Connects in the background: fails only on a bad URL or
    /// setting, never because Redis is down.
    pub fn start(
        cfg: BridgeConfig,
        side: &tokio::runtime::Handle,
        deliver: Deliver,
    ) -> Result<Bridge, BridgeError> {
        cfg.validate()?;
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            instance: rand::random(),
            queue: Mutex::new(PublishQueue::new(cfg.queue_max)),
            config: cfg,
            wake: Notify::new(),
            commands: commands_tx,
            stats: Stats::default(),
            stop: stop_tx,
            flushed: (Mutex::new(false), Condvar::new()),
        });
        if shared.config.is_cluster() {
            cluster::start(Arc::clone(&shared), side, commands_rx, stop_rx, deliver)?;
            return Ok(Bridge { shared });
        }
        let config = &shared.config;
        let clients = Clients::new(&config.url, &config.client_name_base(), config.heartbeat)
            .map_err(BridgeError::InvalidUrl)?;
        let clients = Arc::new(clients);
        side.spawn(publisher::run(
            Arc::clone(&shared),
            Arc::clone(&clients),
            stop_rx.clone(),
        ));
        side.spawn(janitor::run(
            Arc::clone(&shared),
            Arc::clone(&clients),
            stop_rx.clone(),
        ));
        side.spawn(subscriber::run(
            Arc::clone(&shared),
            clients,
            commands_rx,
            stop_rx,
            deliver,
        ));
        Ok(Bridge { shared })
    }

    /// Queues `event` for the other nodes. Never blocks or awaits; when the
    /// queue is full the oldest queued event is dropped and counted. (A node
    /// emulating an earlier release drops what that release never wrote.)
    pub fn publish(&self, event: RemoteEvent) {
        let envelopes = self.shared.config.envelopes;
        if envelopes != EnvelopeReads::CURRENT && !envelopes.can_write(&event.header(b"-", 0)) {
            return;
        }
        lock(&self.shared.queue).push(event);
        self.shared.wake.notify_one();
    }

    /// Queues a disconnect order for every other node (server API): close
    /// `user_id`'s sockets in `conversation_id` (0: in every conversation)
    /// with `code`. Never blocks, like [`publish`](Self::publish).
    pub fn publish_disconnect(&self, user_id: i64, conversation_id: i64, code: u16) {
        self.publish(RemoteEvent {
            conversation_id,
            audience: crate::audience::Audience {
                only_user: Some(user_id),
                ..crate::audience::Audience::ALL
            },
            payload: Bytes::copy_from_slice(&code.to_be_bytes()),
            kind: RemoteKind::Disconnect { user_id, code },
        });
    }

    /// The node has its first local member in `conversation_id`: hold its
    /// channel (no effect if already held or lingering).
    pub fn subscribe(&self, conversation_id: i64) {
        self.command(SubCommand::Subscribe(conversation_id));
    }

    /// The node's last local member left `conversation_id`: release the
    /// channel after `unsubscribe_linger`, unless `subscribe` comes again.
    pub fn unsubscribe(&self, conversation_id: i64) {
        self.command(SubCommand::Unsubscribe(conversation_id));
    }

    /// Whether both Redis connections are up (cheap: two atomic loads).
    pub fn is_connected(&self) -> bool {
        let stats = &self.shared.stats;
        stats.publisher_up.load(Ordering::Relaxed) && stats.subscriber_up.load(Ordering::Relaxed)
    }

    /// A snapshot of the figures.
    pub fn state(&self) -> BridgeState {
        let (queue_depth, dropped_total) = {
            let queue = lock(&self.shared.queue);
            (queue.len(), queue.dropped())
        };
        self.shared.stats.snapshot(queue_depth, dropped_total)
    }

    /// The settings the bridge runs with (node id included).
    pub fn config(&self) -> &BridgeConfig {
        &self.shared.config
    }

    /// Stops both tasks; the publisher first publishes what is queued, for at
    /// most about 1 s. Called from outside any tokio runtime (the gateway's
    /// shutdown path), it waits for that flush, so the side runtime may be
    /// shut down right after; called from inside a runtime it only signals.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        self.shared.wake.notify_one();
        if tokio::runtime::Handle::try_current().is_err() {
            self.shared
                .wait_flushed(FLUSH_GRACE + Duration::from_millis(250));
        }
    }

    fn command(&self, command: SubCommand) {
        // Fails only once the subscriber task has stopped (shutdown).
        let _ = self.shared.commands.send(command);
    }
}

/// State shared by the [`Bridge`] handles and the two tasks.
struct Shared {
    config: BridgeConfig,
    /// Random per start: lets receivers tell a restarted node's sequence
    /// numbers from the previous run's.
    instance: u64,
    /// The outgoing queue. A std mutex: held only to push one event or take
    /// one batch, never across an await. Holders: every shard (`publish`),
    /// the publisher task, `state()`.
    queue: Mutex<PublishQueue>,
    /// Wakes the publisher task when an event is queued (or on shutdown).
    wake: Notify,
    /// Shards → subscriber task. Unbounded on purpose: a request is 16
    /// bytes, comes at most once per first-join / last-leave of a
    /// conversation, and is consumed even while Redis is down; a bounded
    /// channel would make `subscribe` either block a shard or lose a request.
    commands: mpsc::UnboundedSender<SubCommand>,
    stats: Stats,
    /// Set once by `shutdown`; both tasks watch it.
    stop: watch::Sender<bool>,
    /// Set by the publisher task when it has finished (flushed or given up),
    /// for `shutdown` to wait on. Never held across an await.
    flushed: (Mutex<bool>, Condvar),
}

impl Shared {
    fn mark_flushed(&self) {
        *lock(&self.flushed.0) = true;
        self.flushed.1.notify_all();
    }

    fn wait_flushed(&self, limit: Duration) {
        let guard = lock(&self.flushed.0);
        let _ = self
            .flushed
            .1
            .wait_timeout_while(guard, limit, |done| !*done);
    }
}

/// Counters written by the tasks, read by `state()`.
#[derive(Default)]
struct Stats {
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    published_total: AtomicU64,
    batches_total: AtomicU64,
    last_batch_size: AtomicUsize,
    max_batch_size: AtomicUsize,
    received_total: AtomicU64,
    malformed_total: AtomicU64,
    /// By [`EnvelopeSkip`], in the order of `EnvelopeSkip::ALL`.
    skipped: [AtomicU64; 4],
    fields_reaped_total: AtomicU64,
    nodes_reaped_total: AtomicU64,
    subscriptions: AtomicUsize,
    reconnects_total: AtomicU64,
}

impl Stats {
    fn record_batch(&self, size: usize) {
        self.published_total
            .fetch_add(size as u64, Ordering::Relaxed);
        self.batches_total.fetch_add(1, Ordering::Relaxed);
        self.last_batch_size.store(size, Ordering::Relaxed);
        self.max_batch_size.fetch_max(size, Ordering::Relaxed);
    }

    fn record_skip(&self, reason: EnvelopeSkip) {
        let i = EnvelopeSkip::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.skipped[i].fetch_add(1, Ordering::Relaxed);
        crate::metrics::bridge_skipped(reason.label());
    }

    /// `fields` of a dead node removed; `node`: this node also dropped it
    /// from the registry (so each dead node is counted once).
    fn record_reaped(&self, fields: u64, node: bool) {
        self.fields_reaped_total
            .fetch_add(fields, Ordering::Relaxed);
        self.nodes_reaped_total
            .fetch_add(u64::from(node), Ordering::Relaxed);
        crate::metrics::presence_reaped(fields, node);
    }

    fn snapshot(&self, queue_depth: usize, dropped_total: u64) -> BridgeState {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let [version, flags, required, optional] = self.skipped.each_ref().map(get);
        BridgeState {
            connected: self.publisher_up.load(Ordering::Relaxed)
                && self.subscriber_up.load(Ordering::Relaxed),
            queue_depth,
            dropped_total,
            published_total: get(&self.published_total),
            batches_total: get(&self.batches_total),
            last_batch_size: self.last_batch_size.load(Ordering::Relaxed),
            max_batch_size: self.max_batch_size.load(Ordering::Relaxed),
            received_total: get(&self.received_total),
            malformed_total: get(&self.malformed_total),
            skipped: Skipped {
                version,
                flags,
                required,
                optional,
            },
            presence_fields_reaped_total: get(&self.fields_reaped_total),
            presence_nodes_reaped_total: get(&self.nodes_reaped_total),
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            reconnects_total: get(&self.reconnects_total),
        }
    }
}

/// Locks a std mutex; a poisoned lock is still used (every critical section
/// here leaves the data consistent even if it panics half-way).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves once `shutdown` was called (or every handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let cfg = BridgeConfig::new("redis://127.0.0.1/");
        assert_eq!(cfg.prefix, "chatgate");
        assert_eq!(cfg.heartbeat, Duration::from_secs(5));
        assert_eq!(cfg.queue_max, 100_000);
        assert_eq!(cfg.batch_max, 1024);
        assert_eq!(cfg.unsubscribe_linger, Duration::from_secs(2));
        assert_eq!(cfg.backoff_max, Duration::from_secs(5));
        assert_eq!(cfg.node_id.len(), 16);
        assert_ne!(cfg.node_id, BridgeConfig::new("redis://x/").node_id);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn channel_names_carry_prefix_and_conversation() {
        let mut cfg = BridgeConfig::new("redis://127.0.0.1/");
        cfg.prefix = "prod".into();
        assert_eq!(cfg.channel(42), "prod:conv:42");
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        let base = BridgeConfig::new("redis://127.0.0.1/");
        let bad: [fn(&mut BridgeConfig); 5] = [
            |c| c.node_id.clear(),
            |c| c.node_id = "x".repeat(256),
            |c| c.prefix.clear(),
            |c| c.heartbeat = Duration::from_millis(1),
            |c| c.batch_max = 0,
        ];
        for change in bad {
            let mut cfg = base.clone();
            change(&mut cfg);
            assert!(matches!(cfg.validate(), Err(BridgeError::InvalidConfig(_))));
        }
    }

    #[test]
    fn bridge_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Bridge>();
    }
}
