//! The Django Channels layer (docs/protocol.md §11): with `--channel-layer`
//! the node is a member of the same Channels groups as the Django app, so
//! Django code's `group_send` reaches this node's sockets and this node's
//! chat messages and typing reach the consumers still on Daphne.
//!
//! Owns, for one node: the groups it is a member of (one member per
//! conversation while it has sockets of it, `channel_layer/members.rs`),
//! the reader of its process channel (`channel_layer/receiver.rs`), the
//! group sends to foreign members (`channel_layer/sender.rs`), the pub/sub
//! variant of all three (`channel_layer/pubsub.rs`), the Redis connection
//! per host (`channel_layer/hosts.rs`) and the figures
//! ([`ChannelLayerState`], metrics `chatgate_channel_layer_*`). The bytes —
//! channels_redis's serializer, msgpack, Fernet, the consistent hash, the
//! event dicts — are the pure modules `wire`, `seal`, `names`, `events`.
//!
//! Runs on the side tokio runtime. Shards only call the non-blocking
//! methods of [`ChannelLayer`]: `join` / `leave` (a send on an unbounded
//! channel) and `offer` (a prefix check; for a chat message or typing, a
//! short critical section on the send queue and a wake-up).
//!
//! Must never: block or await in a method a shard calls; re-publish an
//! event that came from the layer (on the bridge or the layer: every
//! gateway node is a member and gets its own copy); write to Redis for a
//! group without foreign members; hold a member per socket; let one bad
//! value stop the reader. Delivery is at most once, as Channels' own
//! `group_send` is (capacity and expiry drop silently).

pub(crate) mod events;
mod hosts;
mod members;
pub(crate) mod names;
mod pubsub;
mod receiver;
pub(crate) mod seal;
mod sender;
pub(crate) mod wire;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};

use crate::audience::Audience;
use crate::bridge::link::{Backoff, LinkError};
use crate::bridge::{Deliver, RemoteEvent, RemoteKind};
use crate::ids::ConversationId;

use self::events::{DropReason, LayerEvent};

/// Which channels_redis layer the Django app runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `channels_redis.core.RedisChannelLayer` (groups as sorted sets,
    /// messages in per-process sorted sets).
    Core,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer` (groups as Redis
    /// pub/sub channels).
    PubSub,
}

/// Serializer format (Django's `serializer_format`).
pub use self::seal::Format as SerializerFormat;

/// The channel layer's settings: Django's `CHANNEL_LAYERS` names and
/// defaults. Build with [`ChannelLayerConfig::new`] and adjust fields.
/// `Debug` shows how many encryption keys there are, never the keys.
#[derive(Clone)]
pub struct ChannelLayerConfig {
    /// Redis URLs in Django's `hosts` order (the consistent hash depends on it).
    pub hosts: Vec<String>,
    pub kind: LayerKind,
    /// Django's `prefix`. Default `asgi`.
    pub prefix: String,
    /// Django's `expiry`: a message older than this is dropped. Default 60 s.
    pub expiry: Duration,
    /// Django's `group_expiry`: a member not re-added for this long is
    /// dropped by `group_send`. Default 86 400 s.
    pub group_expiry: Duration,
    /// Django's `capacity`: messages waiting per channel, at most. Default 100.
    pub capacity: usize,
    /// Django's `symmetric_encryption_keys` (Django encrypts with the first,
    /// decrypts with any). Default none.
    pub encryption_keys: Vec<String>,
    /// Django's `serializer_format`. Default msgpack.
    pub format: SerializerFormat,
    /// Django's `random_prefix_length`. Default 12.
    pub random_prefix_length: usize,
    /// The group of a conversation, `{id}` replaced by its id. Default `chat_{id}`.
    pub group_template: String,
    /// This node's id (its member names are `chatgate.<id>!<conversation>`,
    /// with the id reduced to `[A-Za-z0-9_.-]`). Unique among gateway nodes.
    pub node_id: String,
    /// How often every membership is re-added (a Django `flush()` or an
    /// expired group is repaired within it). Default 10 s, at most 30 s.
    pub refresh: Duration,
    /// How long a membership outlives the node's last socket of the
    /// conversation. Default 3 s.
    pub leave_linger: Duration,
    /// Time box of each connect and command; also the longest reconnect
    /// delay. Default 5 s.
    pub timeout: Duration,
    /// Chat messages and typing events waiting to be sent, at most (oldest
    /// dropped beyond). Default 100 000.
    pub queue_max: usize,
}

impl std::fmt::Debug for ChannelLayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelLayerConfig")
            .field("hosts", &self.hosts.len())
            .field("kind", &self.kind)
            .field("prefix", &self.prefix)
            .field("expiry", &self.expiry)
            .field("group_expiry", &self.group_expiry)
            .field("capacity", &self.capacity)
            .field("encryption_keys", &self.encryption_keys.len())
            .field("format", &self.format)
            .field("group_template", &self.group_template)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl ChannelLayerConfig {
    /// Django's defaults, for `hosts` and the node `node_id`.
    pub fn new(hosts: Vec<String>, node_id: impl Into<String>) -> Self {
        Self {
            hosts,
            kind: LayerKind::Core,
            prefix: "asgi".into(),
            expiry: Duration::from_secs(60),
            group_expiry: Duration::from_secs(86_400),
            capacity: 100,
            encryption_keys: Vec::new(),
            format: SerializerFormat::Msgpack,
            random_prefix_length: 12,
            group_template: names::DEFAULT_GROUP_TEMPLATE.into(),
            node_id: node_id.into(),
            refresh: Duration::from_secs(10),
            leave_linger: Duration::from_secs(3),
            timeout: Duration::from_secs(5),
            queue_max: 100_000,
        }
    }

    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), ChannelLayerError> {
        let problem = if self.hosts.is_empty() {
            "at least one --channel-layer host is needed"
        } else if self.prefix.is_empty() {
            "the prefix must not be empty"
        } else if !self.group_template.contains("{id}") {
            "the group template must contain {id}"
        } else if !names::is_valid_group_name(&self.group(i64::MIN)) {
            "the group template gives names Channels refuses (A-Z a-z 0-9 _ . - only, under 100 characters)"
        } else if self.expiry.as_secs() == 0 || self.group_expiry.as_secs() == 0 {
            "expiry and group expiry must be at least one second"
        } else if self.capacity == 0 || self.queue_max == 0 {
            "capacity and queue size must be at least 1"
        } else if self.refresh.is_zero() || self.refresh > Duration::from_secs(30) {
            "the membership refresh must be between 0 and 30 s"
        } else if self.timeout < Duration::from_millis(10) {
            "the Redis timeout must be at least 10 ms"
        } else if names::member_name(&names::node_token(&self.node_id), i64::MIN).len()
            >= names::MAX_NAME_LENGTH
        {
            "the node id makes member names of 100 characters or more"
        } else if self.kind == LayerKind::PubSub && self.random_prefix_length != 12 {
            // The pub/sub layer has no random prefix; a changed value is a
            // sign the operator copied the wrong CHANNEL_LAYERS entry.
            "random_prefix_length applies to the core layer only"
        } else {
            return Ok(());
        };
        Err(ChannelLayerError::InvalidConfig(problem))
    }

    /// The group of `conversation_id`.
    pub fn group(&self, conversation_id: ConversationId) -> String {
        names::group_name(&self.group_template, conversation_id)
    }

    /// The serializer of the core layer (random prefix, decrypt TTL expiry + 10 s).
    fn core_codec(&self) -> seal::Codec {
        seal::Codec::new(
            self.format,
            &self.encryption_keys,
            self.random_prefix_length,
            Some(self.expiry + Duration::from_secs(10)),
        )
    }

    /// The serializer of the pub/sub layer (no prefix, no TTL).
    fn pubsub_codec(&self) -> seal::Codec {
        seal::Codec::new(self.format, &self.encryption_keys, 0, None)
    }
}

/// Why the layer could not start. Redis being down is not one of them.
#[derive(Debug, thiserror::Error)]
pub enum ChannelLayerError {
    #[error("invalid channel layer host URL {url}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("invalid channel layer configuration: {0}")]
    InvalidConfig(&'static str),
}

/// A snapshot of the layer's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelLayerState {
    /// Every connection the layer needs is up.
    pub up: bool,
    /// Values taken from the layer and delivered to this node's sockets.
    pub received_total: u64,
    /// Entries written for foreign members (one per channel key) or
    /// messages published (pub/sub).
    pub sent_total: u64,
    /// Values dropped, all reasons (the queue's included).
    pub dropped_total: u64,
    /// Chat messages and typing events dropped because the send queue was full.
    pub queue_dropped_total: u64,
    /// Entries not written because the channel was at capacity.
    pub over_capacity_total: u64,
    /// Conversations the node is a member of.
    pub memberships: usize,
    /// Chat messages and typing events waiting to be sent.
    pub queue_depth: usize,
}

impl ChannelLayerState {
    /// What grew since `last`, for the metrics.
    pub fn since(&self, last: &ChannelLayerState) -> crate::metrics::LayerReport {
        let grew = |a: u64, b: u64| a.saturating_sub(b);
        crate::metrics::LayerReport {
            up: self.up,
            memberships: self.memberships,
            received: grew(self.received_total, last.received_total),
            sent: grew(self.sent_total, last.sent_total),
            over_capacity: grew(self.over_capacity_total, last.over_capacity_total),
            queue_dropped: grew(self.queue_dropped_total, last.queue_dropped_total),
        }
    }
}

/// The node's handle on the layer: `Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct ChannelLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ChannelLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelLayer")
            .field("hosts", &self.shared.config.hosts.len())
            .field("kind", &self.shared.config.kind)
            .finish_non_exhaustive()
    }
}

/// A request from a shard to the membership task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberCommand {
    Join(ConversationId),
    Leave(ConversationId),
}

/// Longest time `shutdown` waits for the memberships to be removed.
const LEAVE_GRACE: Duration = Duration::from_secs(1);

impl ChannelLayer {
    /// Validates `cfg` and starts the layer's tasks on `side`; events for
    /// this node's sockets go to `deliver`. Connects in the background:
    /// fails only on a bad URL or setting, never because Redis is down.
    pub fn start(
        cfg: ChannelLayerConfig,
        side: &tokio::runtime::Handle,
        deliver: Deliver,
    ) -> Result<ChannelLayer, ChannelLayerError> {
        cfg.validate()?;
        let hosts = hosts::Hosts::parse(&cfg.hosts, &cfg.node_id, cfg.timeout)?;
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (stop_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            node: names::node_token(&cfg.node_id),
            config: cfg,
            queue: Mutex::new(SendQueue::default()),
            wake: Notify::new(),
            commands: commands_tx,
            stats: Stats::default(),
            stop: stop_tx,
            left: (Mutex::new(false), std::sync::Condvar::new()),
            deliver,
        });
        let tasks = Tasks {
            shared: shared.clone(),
            hosts,
        };
        for reason in DropReason::ALL {
            crate::metrics::channel_layer_dropped_seen(reason.label());
        }
        let timeout = shared.config.timeout;
        match shared.config.kind {
            LayerKind::Core => {
                let links = tasks.hosts.links("members", timeout);
                let backend = members::Backend::Core(links);
                side.spawn(members::run(tasks.clone(), commands_rx, backend));
                side.spawn(receiver::run(tasks.clone()));
                side.spawn(sender::run(tasks));
            }
            LayerKind::PubSub => {
                let subs = pubsub::Subscriptions::new(&tasks);
                let backend = members::Backend::PubSub(subs);
                side.spawn(members::run(tasks.clone(), commands_rx, backend));
                side.spawn(pubsub::run_publisher(tasks));
            }
        }
        Ok(ChannelLayer { shared })
    }

    /// The node has its first socket of `conversation_id`: be a member of
    /// its group (no effect if already one, or lingering).
    pub fn join(&self, conversation_id: ConversationId) {
        let _ = self
            .shared
            .commands
            .send(MemberCommand::Join(conversation_id));
    }

    /// The node's last socket of `conversation_id` left: stop being a
    /// member after the linger, unless `join` comes again.
    pub fn leave(&self, conversation_id: ConversationId) {
        let _ = self
            .shared
            .commands
            .send(MemberCommand::Leave(conversation_id));
    }

    /// A frame this node broadcast in `conversation_id` (not one that came
    /// from another node or from the layer): a chat message or a typing
    /// event is queued for the group's foreign members; anything else is
    /// ignored after a prefix check. Never blocks.
    pub fn offer(&self, conversation_id: ConversationId, payload: &Bytes) {
        if !events::is_outgoing(payload) {
            return;
        }
        lock(&self.shared.queue).push(
            conversation_id,
            payload.clone(),
            self.shared.config.queue_max,
        );
        self.shared.wake.notify_one();
    }

    /// A snapshot of the figures.
    pub fn state(&self) -> ChannelLayerState {
        let s = &self.shared.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let queue = lock(&self.shared.queue);
        ChannelLayerState {
            up: s.up(),
            received_total: get(&s.received),
            sent_total: get(&s.sent),
            dropped_total: get(&s.dropped) + queue.dropped,
            queue_dropped_total: queue.dropped,
            over_capacity_total: get(&s.over_capacity),
            memberships: get(&s.memberships) as usize,
            queue_depth: queue.items.len(),
        }
    }

    /// The settings the layer runs with.
    pub fn config(&self) -> &ChannelLayerConfig {
        &self.shared.config
    }

    /// Stops the tasks; the membership task first removes every membership
    /// (at drain: Django stops sending to this node). Called from outside
    /// any runtime it waits for that, at most about a second.
    pub fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        self.shared.wake.notify_one();
        if tokio::runtime::Handle::try_current().is_err() {
            let guard = lock(&self.shared.left.0);
            let _ = self.shared.left.1.wait_timeout_while(
                guard,
                LEAVE_GRACE + Duration::from_millis(250),
                |done| !*done,
            );
        }
    }
}

/// State shared by the handles and the tasks.
struct Shared {
    config: ChannelLayerConfig,
    /// The node id as it appears in member names.
    node: String,
    queue: Mutex<SendQueue>,
    /// Wakes the sender when something is queued (or on shutdown).
    wake: Notify,
    /// Shards → membership task (unbounded: one 16-byte request per first
    /// join / last leave, consumed even while Redis is down).
    commands: mpsc::UnboundedSender<MemberCommand>,
    stats: Stats,
    stop: watch::Sender<bool>,
    /// Set when the membership task has removed the memberships at stop.
    left: (Mutex<bool>, std::sync::Condvar),
    deliver: Deliver,
}

impl Shared {
    /// Hands a decoded event to the shards of the conversations it names
    /// (this node's member names only).
    fn deliver(&self, conversations: impl IntoIterator<Item = ConversationId>, event: &LayerEvent) {
        for conversation_id in conversations {
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            (self.deliver)(remote_event(conversation_id, event));
        }
    }

    /// Counts a dropped value and logs its kind the first time.
    fn dropped(&self, reason: DropReason) {
        let label = reason.label();
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        crate::metrics::channel_layer_dropped(label);
        if lock(&self.stats.logged).insert(label) {
            tracing::warn!(
                reason = label,
                "channel layer: value dropped (logged once per kind; see chatgate_channel_layer_dropped_total)"
            );
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn mark_left(&self) {
        *lock(&self.left.0) = true;
        self.left.1.notify_all();
    }
}

/// What one event of the layer is for this node's sockets.
fn remote_event(conversation_id: ConversationId, event: &LayerEvent) -> RemoteEvent {
    let frame = |payload: &[u8], audience| RemoteEvent {
        conversation_id,
        audience,
        payload: Bytes::copy_from_slice(payload),
        kind: RemoteKind::Frame,
    };
    match event {
        LayerEvent::Chat { payload } => frame(payload, Audience::ALL),
        LayerEvent::Typing { user_id, payload } => frame(payload, Audience::except_user(*user_id)),
        LayerEvent::Send { payload, v2_only } => frame(
            payload,
            if *v2_only {
                Audience::V2
            } else {
                Audience::ALL
            },
        ),
        LayerEvent::Disconnect { user_id, code } => RemoteEvent {
            conversation_id,
            audience: Audience {
                only_user: Some(*user_id),
                ..Audience::ALL
            },
            payload: Bytes::new(),
            kind: RemoteKind::Disconnect {
                user_id: *user_id,
                code: *code,
            },
        },
    }
}

/// What each task gets: the shared state and the hosts.
#[derive(Clone)]
struct Tasks {
    shared: Arc<Shared>,
    hosts: hosts::Hosts,
}

impl Tasks {
    /// Resolves once `shutdown` was called (at once if it was).
    async fn stopped(&self) {
        let mut stop = self.shared.stop.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// The next batch of a sending task (sender or publisher), at most `max`
/// items; `None` once the layer stops with nothing queued. While nothing is
/// queued and the task's last write failed, it pings every host after its
/// backoff, so the layer reports itself up when Redis is back even if
/// nothing is sent.
async fn next_batch(
    tasks: &Tasks,
    links: &mut hosts::Links,
    backoff: &mut Backoff,
    max: usize,
) -> Option<Vec<(ConversationId, Bytes)>> {
    let stats = &tasks.shared.stats;
    loop {
        let batch = lock(&tasks.shared.queue).take(max);
        if !batch.is_empty() {
            return Some(batch);
        }
        if tasks.shared.stopping() {
            return None;
        }
        if stats.sender_up.load(Ordering::Relaxed) {
            tokio::select! {
                _ = tasks.shared.wake.notified() => {}
                _ = tasks.stopped() => {}
            }
            continue;
        }
        tokio::select! {
            _ = tasks.shared.wake.notified() => {}
            _ = tasks.stopped() => {}
            _ = tokio::time::sleep(backoff.next_delay()) => {
                if links.ping_all().await.is_ok() {
                    backoff.reset();
                    stats.sender_up.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The end of a sending round: up (backoff reset), or down (logged when it
/// goes down; what failed is dropped: at most once) and the backoff waited.
/// False when the task should stop.
async fn round_done(tasks: &Tasks, backoff: &mut Backoff, result: Result<(), LinkError>) -> bool {
    let stats = &tasks.shared.stats;
    match result {
        Ok(()) => {
            backoff.reset();
            stats.sender_up.store(true, Ordering::Relaxed);
            true
        }
        Err(e) => {
            if stats.sender_up.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %e, "channel layer: sends failed (at most once: dropped); retrying with backoff");
            }
            if tasks.shared.stopping() {
                return false;
            }
            tokio::time::sleep(backoff.next_delay()).await;
            true
        }
    }
}

/// Frames waiting for the sender, oldest first; bounded (oldest dropped).
#[derive(Default)]
struct SendQueue {
    items: VecDeque<(ConversationId, Bytes)>,
    dropped: u64,
}

impl SendQueue {
    fn push(&mut self, conversation_id: ConversationId, payload: Bytes, max: usize) {
        if self.items.len() >= max {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back((conversation_id, payload));
    }

    /// Up to `n` of the oldest items.
    fn take(&mut self, n: usize) -> Vec<(ConversationId, Bytes)> {
        let n = n.min(self.items.len());
        self.items.drain(..n).collect()
    }
}

/// Counters the tasks write and `state()` reads.
#[derive(Default)]
struct Stats {
    /// One flag per connection role; `up` when all the kind needs are up.
    members_up: AtomicBool,
    receiver_up: AtomicBool,
    sender_up: AtomicBool,
    received: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    over_capacity: AtomicU64,
    memberships: AtomicU64,
    /// Drop kinds already logged.
    logged: Mutex<std::collections::HashSet<&'static str>>,
}

impl Stats {
    fn up(&self) -> bool {
        self.members_up.load(Ordering::Relaxed)
            && self.receiver_up.load(Ordering::Relaxed)
            && self.sender_up.load(Ordering::Relaxed)
    }
}

/// Locks a std mutex; a poisoned lock is still used (each critical section
/// leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds since the epoch as Python's `time.time()` gives them.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_djangos() {
        let c = ChannelLayerConfig::new(vec!["redis://127.0.0.1/".into()], "n1");
        assert_eq!(c.prefix, "asgi");
        assert_eq!(c.expiry, Duration::from_secs(60));
        assert_eq!(c.group_expiry, Duration::from_secs(86_400));
        assert_eq!(c.capacity, 100);
        assert_eq!(c.random_prefix_length, 12);
        assert_eq!(c.format, SerializerFormat::Msgpack);
        assert_eq!(c.group(7), "chat_7");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = ChannelLayerConfig::new(vec!["redis://127.0.0.1/".into()], "n1");
        let bad: [fn(&mut ChannelLayerConfig); 6] = [
            |c| c.hosts.clear(),
            |c| c.prefix.clear(),
            |c| c.group_template = "chat".into(),
            |c| c.capacity = 0,
            |c| c.refresh = Duration::from_secs(31),
            |c| c.group_template = "chat {id}".into(),
        ];
        for change in bad {
            let mut c = base.clone();
            change(&mut c);
            assert!(matches!(
                c.validate(),
                Err(ChannelLayerError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn the_queue_drops_the_oldest_when_full() {
        let mut q = SendQueue::default();
        for i in 0..5 {
            q.push(i, Bytes::from_static(b"x"), 3);
        }
        assert_eq!(q.dropped, 2);
        let ids: Vec<_> = q.take(10).into_iter().map(|(c, _)| c).collect();
        assert_eq!(ids, [2, 3, 4]);
    }

    #[test]
    fn layer_events_keep_their_audiences() {
        let typing = remote_event(
            4,
            &LayerEvent::Typing {
                user_id: 9,
                payload: b"{}".to_vec(),
            },
        );
        assert_eq!(typing.audience, Audience::except_user(9));
        let v2 = remote_event(
            4,
            &LayerEvent::Send {
                payload: b"{}".to_vec(),
                v2_only: true,
            },
        );
        assert_eq!(v2.audience, Audience::V2);
        let gone = remote_event(
            4,
            &LayerEvent::Disconnect {
                user_id: 9,
                code: 4001,
            },
        );
        assert_eq!(
            gone.kind,
            RemoteKind::Disconnect {
                user_id: 9,
                code: 4001
            }
        );
        assert_eq!(gone.conversation_id, 4);
    }
}
