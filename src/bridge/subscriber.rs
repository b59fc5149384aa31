//! The subscriber task: holds the node's conversation channels on Redis and
//! hands other nodes' events to [`Deliver`].
//!
//! Owns the subscribing connection (a RESP3 `MultiplexedConnection`: pub/sub
//! messages arrive as pushes on an unbounded channel the redis driver feeds),
//! the [`Subscriptions`] set, and the [`Inbound`] filter. It applies the
//! shards' subscribe/unsubscribe requests (also while disconnected, so the
//! set is right when it reconnects), `UNSUBSCRIBE`s lingering channels when
//! due, pings on the heartbeat, and on any failure — a `Disconnection` push,
//! a failed command or heartbeat — reconnects with backoff and resubscribes
//! to the whole set. A loss is reported to the shards (`bridge/gaps.rs`) at
//! once, and its end after the resubscribe, so v2 sockets are refilled.
//!
//! Must never: call [`Deliver`] for this node's own events, or subscribe a
//! channel twice per node.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::inbound::{Inbound, Verdict};
use super::link::{bounded, Backoff, Clients, LinkError};
use super::presence::{self, NodeTtl, SnapshotEntry};
use super::subscriptions::Subscriptions;
use super::{stopped, Deliver, EnvelopeSkip, Shared, SubCommand};
use super::{RemoteEvent, RemoteKind};

/// Channels per `SUBSCRIBE` when resubscribing a large set.
const SUBSCRIBE_CHUNK: usize = 1000;

type Pushes = mpsc::UnboundedReceiver<PushInfo>;

/// Runs until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    clients: Arc<Clients>,
    commands: mpsc::UnboundedReceiver<SubCommand>,
    stop: watch::Receiver<bool>,
    deliver: Deliver,
) {
    let config = &shared.config;
    let mut subscriber = Subscriber {
        ttl: NodeTtl::new(config.presence_ttl),
        good_at: Instant::now(),
        gap: None,
        nodes_channel: presence::nodes_channel(&config.prefix),
        subs: Subscriptions::new(config.unsubscribe_linger),
        inbound: Inbound::new(&config.node_id, config.channel_prefix(), config.envelopes),
        skips_logged: Vec::new(),
        backoff: Backoff::new(config.backoff_max),
        shared: Arc::clone(&shared),
        clients,
        commands,
        stop,
        deliver,
    };
    subscriber.run().await;
}

struct Subscriber {
    shared: Arc<Shared>,
    clients: Arc<Clients>,
    commands: mpsc::UnboundedReceiver<SubCommand>,
    stop: watch::Receiver<bool>,
    deliver: Deliver,
    subs: Subscriptions,
    inbound: Inbound,
    backoff: Backoff,
    /// Which nodes that reported presence are still heard.
    ttl: NodeTtl,
    /// `{prefix}:nodes`, the heartbeat channel.
    nodes_channel: String,
    /// The skip reasons already logged (each is logged once, then counted).
    skips_logged: Vec<EnvelopeSkip>,
    /// When the subscribing connection was last known to work (its
    /// subscribe confirmed, or the send of its last answered heartbeat).
    good_at: Instant,
    /// A loss reported to the shards and not yet ended: its `good_at`.
    gap: Option<Instant>,
}

impl Subscriber {
    async fn run(&mut self) {
        let mut delay = Duration::ZERO;
        while let Some((mut conn, mut pushes)) = self.connect(delay).await {
            self.set_up(true);
            let since = Instant::now();
            let outcome = self.serve(&mut conn, &mut pushes).await;
            self.set_up(false);
            let Err(error) = outcome else { return };
            tracing::warn!(%error, "bridge: subscribing connection lost, reconnecting");
            if self.gap.is_none() {
                self.gap = Some(self.good_at);
                super::gaps::opened(&self.deliver, &self.subs.all(), self.good_at);
            }
            self.shared
                .stats
                .reconnects_total
                .fetch_add(1, Ordering::Relaxed);
            delay = self
                .backoff
                .after_loss(since.elapsed(), self.shared.config.heartbeat);
        }
    }

    /// Waits `delay` (applying requests meanwhile), then connects and
    /// subscribes the whole set, retrying with backoff; `None` on stop.
    async fn connect(&mut self, mut delay: Duration) -> Option<(MultiplexedConnection, Pushes)> {
        loop {
            if !self.wait_offline(delay).await {
                return None;
            }
            match self.open().await {
                Ok(link) => {
                    tracing::info!(
                        channels = self.subs.len(),
                        "bridge: subscribing connection up"
                    );
                    return Some(link);
                }
                Err(error) => {
                    tracing::debug!(%error, "bridge: subscriber connect failed");
                    delay = self.backoff.next_delay();
                }
            }
        }
    }

    /// Sleeps `delay` while keeping the set up to date; false on stop.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let wake_at = tokio::time::Instant::now() + delay;
        loop {
            let due = self.subs.next_deadline();
            tokio::select! {
                _ = stopped(&mut self.stop) => return false,
                command = self.commands.recv() => match command {
                    Some(command) => { self.apply(command); }
                    None => return false,
                },
                _ = sleep_until(due) => { self.take_due(); }
                _ = tokio::time::sleep_until(wake_at) => return true,
            }
        }
    }

    async fn open(&mut self) -> Result<(MultiplexedConnection, Pushes), LinkError> {
        let (tx, pushes) = mpsc::unbounded_channel();
        let mut conn = self.clients.subscriber(tx).await?;
        self.subscribe(&mut conn, &self.subs.all()).await?;
        let timeout = self.clients.timeout();
        let nodes = self.nodes_channel.clone();
        bounded(timeout, "SUBSCRIBE", conn.subscribe(nodes)).await?;
        Ok((conn, pushes))
    }

    /// Serves until the connection fails (`Err`) or shutdown (`Ok`).
    async fn serve(
        &mut self,
        conn: &mut MultiplexedConnection,
        pushes: &mut Pushes,
    ) -> Result<(), LinkError> {
        // (Re)connected: other nodes may have been expired while Redis was
        // away, and reports may have been missed: read every held
        // conversation's presence again (it also answers shards that
        // started holding one while Redis was down).
        self.ttl.restart_all(Instant::now());
        self.good_at = Instant::now();
        if let Some(good_at) = self.gap.take() {
            super::gaps::closed(&self.deliver, &self.subs.all(), good_at, "all");
        }
        for id in self.subs.all() {
            self.snapshot(conn, id).await?;
        }
        let period = self.shared.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let due = self.subs.next_deadline();
            tokio::select! {
                _ = stopped(&mut self.stop) => return Ok(()),
                push = pushes.recv() => self.on_push(push.ok_or(LinkError::Closed)?)?,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_commands(conn, command).await?,
                    None => return Ok(()),
                },
                _ = sleep_until(due) => {
                    let gone = self.take_due();
                    self.unsubscribe(conn, &gone).await?;
                }
                _ = heartbeat.tick() => {
                    let sent = Instant::now();
                    self.clients.ping(conn).await?;
                    self.good_at = sent;
                    self.expire_nodes();
                }
            }
        }
    }

    /// One push from the driver: a message, a confirmation, or the end.
    fn on_push(&mut self, push: PushInfo) -> Result<(), LinkError> {
        match push.kind {
            PushKind::Message => self.on_message(push.data),
            PushKind::Disconnection => return Err(LinkError::Closed),
            _ => {} // (un)subscribe confirmations
        }
        Ok(())
    }

    fn on_message(&mut self, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(message))) =
            (data.next(), data.next())
        else {
            self.shared
                .stats
                .malformed_total
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let verdict = if channel == self.nodes_channel.as_bytes() {
            if let Ok(instance) = <[u8; 8]>::try_from(message.as_slice()) {
                self.ttl.heard(u64::from_be_bytes(instance), Instant::now());
                return;
            }
            self.inbound.accept_control(&message)
        } else {
            self.inbound.accept(&channel, message)
        };
        match verdict {
            Verdict::Partial(event) => {
                self.skipped(EnvelopeSkip::Optional, None, None);
                self.deliver_event(event);
            }
            Verdict::Deliver(event) => self.deliver_event(event),
            Verdict::Skipped {
                reason,
                version,
                node,
            } => self.skipped(reason, Some(version), node),
            Verdict::Own | Verdict::Duplicate => {}
            Verdict::Malformed(why) => {
                tracing::debug!(%why, "bridge: dropped a malformed message");
                self.shared
                    .stats
                    .malformed_total
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts an envelope skipped whole or in part; logs the first of
    /// each reason (a mixed cluster would otherwise log every event).
    fn skipped(&mut self, reason: EnvelopeSkip, version: Option<u8>, node: Option<String>) {
        self.shared.stats.record_skip(reason);
        if self.skips_logged.contains(&reason) {
            return;
        }
        self.skips_logged.push(reason);
        tracing::warn!(
            reason = reason.label(),
            version,
            node = node.as_deref().unwrap_or("?"),
            "bridge: an envelope from a node of another release was {}; further ones are \
             only counted (chatgate_bridge_skipped_total; rolling upgrades: deploy/OPERATIONS.md)",
            match reason {
                EnvelopeSkip::Optional => "delivered without a part this node does not know",
                _ => "skipped: this node cannot read it",
            }
        );
    }

    /// Hands another node's event on (a presence report starts tracking
    /// its node's liveness).
    fn deliver_event(&mut self, event: RemoteEvent) {
        if let RemoteKind::Presence { origin } = event.kind {
            self.ttl.track(origin, Instant::now());
        }
        self.shared
            .stats
            .received_total
            .fetch_add(1, Ordering::Relaxed);
        (self.deliver)(event);
    }

    /// Applies `first` and every request already waiting, then subscribes
    /// the new channels in one command.
    async fn on_commands(
        &mut self,
        conn: &mut MultiplexedConnection,
        first: SubCommand,
    ) -> Result<(), LinkError> {
        let mut new = Vec::new();
        let mut wanted = Vec::new();
        let mut commands = vec![first];
        while let Ok(command) = self.commands.try_recv() {
            commands.push(command);
        }
        for command in commands {
            if let SubCommand::Subscribe(id) = command {
                wanted.push(id);
            }
            new.extend(self.apply(command));
        }
        self.subscribe(conn, &new).await?;
        // Read after subscribing: what changes from now on arrives as events.
        for id in wanted {
            self.snapshot(conn, id).await?;
        }
        Ok(())
    }

    /// Reads who the other live nodes report online in `conversation` and
    /// hands it to the shard; fields of dead nodes are deleted.
    async fn snapshot(
        &mut self,
        conn: &mut MultiplexedConnection,
        conversation: i64,
    ) -> Result<(), LinkError> {
        let config = &self.shared.config;
        let timeout = self.clients.timeout();
        let key = presence::hash_key(&config.prefix, conversation);
        let mut cmd = redis::cmd("HGETALL");
        let hgetall = cmd.arg(&key).query_async(conn);
        let raw: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            bounded(timeout, "HGETALL", hgetall).await?;
        let own = self.shared.instance;
        let mut entries: Vec<(Vec<u8>, SnapshotEntry)> = raw
            .into_iter()
            .filter_map(|(f, v)| presence::parse_entry(&f, &v).map(|e| (f, e)))
            .filter(|(_, e)| e.node != own)
            .collect();
        let mut nodes: Vec<u64> = entries.iter().map(|(_, e)| e.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        if !nodes.is_empty() {
            let keys: Vec<String> = nodes
                .iter()
                .map(|n| presence::node_key(&config.prefix, *n))
                .collect();
            let mut cmd = redis::cmd("MGET");
            let mget = cmd.arg(&keys).query_async(conn);
            let alive: Vec<Option<Vec<u8>>> = bounded(timeout, "MGET", mget).await?;
            let dead: Vec<u64> = nodes
                .iter()
                .zip(&alive)
                .filter(|(_, a)| a.is_none())
                .map(|(n, _)| *n)
                .collect();
            let (gone, kept): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .partition(|(_, e)| dead.contains(&e.node));
            entries = kept;
            if !gone.is_empty() {
                let fields: Vec<Vec<u8>> = gone.into_iter().map(|(f, _)| f).collect();
                let mut cmd = redis::cmd("HDEL");
                let hdel = cmd.arg(&key).arg(fields).query_async::<()>(conn);
                bounded(timeout, "HDEL", hdel).await?;
            }
            let now = Instant::now();
            for n in nodes.iter().filter(|n| !dead.contains(n)) {
                self.ttl.track(*n, now);
            }
        }
        (self.deliver)(RemoteEvent {
            conversation_id: conversation,
            audience: crate::audience::Audience::ALL,
            payload: bytes::Bytes::new(),
            kind: RemoteKind::Snapshot(entries.into_iter().map(|(_, e)| e).collect()),
        });
        Ok(())
    }

    /// Nodes silent for the presence TTL: their users go offline.
    fn expire_nodes(&mut self) {
        for origin in self.ttl.expired(Instant::now()) {
            tracing::info!(
                instance = format!("{origin:016x}"),
                "bridge: a node's presence expired"
            );
            (self.deliver)(RemoteEvent {
                conversation_id: 0,
                audience: crate::audience::Audience::ALL,
                payload: bytes::Bytes::new(),
                kind: RemoteKind::NodeGone { origin },
            });
        }
    }

    /// Updates the set; returns a conversation that needs a `SUBSCRIBE`.
    fn apply(&mut self, command: SubCommand) -> Option<i64> {
        let new = match command {
            SubCommand::Subscribe(id) => self.subs.want(id).then_some(id),
            SubCommand::Unsubscribe(id) => {
                self.subs.release(id, Instant::now());
                None
            }
        };
        self.count();
        new
    }

    /// Removes the conversations whose linger ended; returns them.
    fn take_due(&mut self) -> Vec<i64> {
        let gone = self.subs.due(Instant::now());
        self.count();
        gone
    }

    async fn subscribe(
        &self,
        conn: &mut MultiplexedConnection,
        ids: &[i64],
    ) -> Result<(), LinkError> {
        self.change(conn, ids, true).await
    }

    async fn unsubscribe(
        &self,
        conn: &mut MultiplexedConnection,
        ids: &[i64],
    ) -> Result<(), LinkError> {
        self.change(conn, ids, false).await
    }

    /// (Un)subscribes `ids`' channels, `SUBSCRIBE_CHUNK` per command, each
    /// command bounded by the timeout.
    async fn change(
        &self,
        conn: &mut MultiplexedConnection,
        ids: &[i64],
        subscribe: bool,
    ) -> Result<(), LinkError> {
        let timeout = self.clients.timeout();
        for chunk in ids.chunks(SUBSCRIBE_CHUNK) {
            let channels = self.channels(chunk);
            if subscribe {
                bounded(timeout, "SUBSCRIBE", conn.subscribe(channels)).await?;
            } else {
                bounded(timeout, "UNSUBSCRIBE", conn.unsubscribe(channels)).await?;
            }
        }
        Ok(())
    }

    fn channels(&self, ids: &[i64]) -> Vec<String> {
        ids.iter()
            .map(|id| self.shared.config.channel(*id))
            .collect()
    }

    fn count(&self) {
        self.shared
            .stats
            .subscriptions
            .store(self.subs.len(), Ordering::Relaxed);
    }

    fn set_up(&self, up: bool) {
        self.shared.stats.subscriber_up.store(up, Ordering::Relaxed);
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
