//! The pub/sub layer (`--channel-layer-kind pubsub`,
//! `channels_redis.pubsub.RedisPubSubChannelLayer`, docs/protocol.md §11):
//! `SUBSCRIBE <prefix>__group__<group>` on the host the consistent hash
//! picks for that channel name while the node has sockets of the
//! conversation; Django's `group_send` arrives there; the node publishes its
//! chat messages and typing there for Daphne's consumers, with the extra
//! key `chatgate_node`, and drops every message carrying that key (its own
//! echo, and other gateway nodes' publishes: the bridge carried those).
//!
//! Owns [`Subscriptions`] (one RESP3 connection per host, its pushes, a
//! heartbeat `PING`; driven by the membership table of
//! `channel_layer/members.rs`) and the publisher task.
//!
//! Must never: deliver a message that carries `chatgate_node`; stop on a
//! bad value; keep a subscription on a connection it no longer trusts
//! (every lost connection makes the table subscribe everything again).

use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::events;
use super::seal::Codec;
use super::{names, Tasks};
use crate::bridge::link::{bounded, Backoff, LinkError};
use crate::ids::ConversationId;

/// Events published per pipeline, at most.
const BATCH_MAX: usize = 512;

/// The node's subscriptions, one connection per host.
pub(in crate::channel_layer) struct Subscriptions {
    conns: Vec<Option<MultiplexedConnection>>,
    /// Every connection's pushes, tagged with its host.
    pushes_tx: UnboundedSender<(usize, PushInfo)>,
    pushes: UnboundedReceiver<(usize, PushInfo)>,
    codec: Codec,
    /// The group channel name up to the conversation id, and after it.
    channel_head: String,
    channel_tail: String,
    /// The heartbeat's clock (made on the runtime, at the first wait).
    heartbeat: Option<tokio::time::Interval>,
    heartbeat_every: std::time::Duration,
}

impl Subscriptions {
    pub(super) fn new(tasks: &Tasks) -> Self {
        let c = &tasks.shared.config;
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        let template = names::pubsub_channel(&c.prefix, &c.group_template);
        let (head, tail) = template.split_once("{id}").unwrap_or((&template, ""));
        // The membership task's first flush sets it; nothing to receive yet.
        tasks
            .shared
            .stats
            .receiver_up
            .store(true, Ordering::Relaxed);
        Self {
            conns: vec![None; tasks.hosts.len()],
            pushes_tx,
            pushes,
            codec: c.pubsub_codec(),
            channel_head: head.to_string(),
            channel_tail: tail.to_string(),
            heartbeat: None,
            heartbeat_every: c.timeout,
        }
    }

    /// Subscribes `adds` and unsubscribes `removes`, each on its host.
    pub(super) async fn write(
        &mut self,
        tasks: &Tasks,
        adds: &[ConversationId],
        removes: &[ConversationId],
    ) -> Result<(), LinkError> {
        let result = self.write_inner(tasks, adds, removes).await;
        let up = result.is_ok();
        tasks.shared.stats.receiver_up.store(up, Ordering::Relaxed);
        tasks.shared.stats.members_up.store(up, Ordering::Relaxed);
        result
    }

    /// One `SUBSCRIBE` and one `UNSUBSCRIBE` per host, each naming all of
    /// that host's channels (a reconnect re-subscribes thousands at once).
    async fn write_inner(
        &mut self,
        tasks: &Tasks,
        adds: &[ConversationId],
        removes: &[ConversationId],
    ) -> Result<(), LinkError> {
        let timeout = tasks.hosts.timeout();
        for (subscribe, convs) in [(true, adds), (false, removes)] {
            let mut per_host: Vec<Vec<String>> = vec![Vec::new(); self.conns.len()];
            for &conv in convs {
                let channel = self.channel(conv);
                per_host[tasks.hosts.index_of(&channel)].push(channel);
            }
            for (i, channels) in per_host.into_iter().enumerate() {
                if channels.is_empty() {
                    continue;
                }
                let conn = self.conn(tasks, i).await?;
                let done = if subscribe {
                    bounded(timeout, "SUBSCRIBE", conn.subscribe(&channels)).await
                } else {
                    bounded(timeout, "UNSUBSCRIBE", conn.unsubscribe(&channels)).await
                };
                if let Err(e) = done {
                    self.conns[i] = None;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The connection to host `i`, opened (with its push forwarder) if needed.
    async fn conn(
        &mut self,
        tasks: &Tasks,
        i: usize,
    ) -> Result<&mut MultiplexedConnection, LinkError> {
        if self.conns[i].is_none() {
            let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
            let conn = tasks.hosts.subscriber(i, tx).await?;
            let all = self.pushes_tx.clone();
            // Ends when the connection is dropped (its sender with it).
            tokio::spawn(async move {
                while let Some(push) = rx.recv().await {
                    if all.send((i, push)).is_err() {
                        break;
                    }
                }
            });
            self.conns[i] = Some(conn);
        }
        Ok(self.conns[i].as_mut().expect("opened above"))
    }

    /// Waits for a push or the heartbeat; handles it. True when a
    /// connection was lost (everything must be subscribed again).
    pub(super) async fn event(&mut self, tasks: &Tasks) -> bool {
        let every = self.heartbeat_every;
        let heartbeat = self.heartbeat.get_or_insert_with(|| {
            let mut h = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            h.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            h
        });
        tokio::select! {
            push = self.pushes.recv() => match push {
                Some((i, push)) => self.on_push(tasks, i, push),
                None => false,
            },
            _ = heartbeat.tick() => self.ping_all(tasks).await,
        }
    }

    fn on_push(&mut self, tasks: &Tasks, i: usize, push: PushInfo) -> bool {
        match push.kind {
            PushKind::Message => {
                self.on_message(tasks, push.data);
                false
            }
            PushKind::Disconnection => {
                self.lost(tasks, i);
                true
            }
            _ => false, // (un)subscribe confirmations
        }
    }

    fn on_message(&self, tasks: &Tasks, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(raw))) =
            (data.next(), data.next())
        else {
            return;
        };
        let Some(conv) = self.conversation_of(&channel) else {
            return;
        };
        match events::decode_pubsub(&self.codec, &raw) {
            Ok(Some(event)) => tasks.shared.deliver([conv], &event),
            Ok(None) => {} // a gateway node's own publish
            Err(reason) => tasks.shared.dropped(reason),
        }
    }

    /// Opens (if needed) and pings the connection of every host.
    pub(super) async fn ping_hosts(&mut self, tasks: &Tasks) -> Result<(), LinkError> {
        let timeout = tasks.hosts.timeout();
        for i in 0..self.conns.len() {
            let conn = self.conn(tasks, i).await?;
            let ping = redis::cmd("PING");
            if let Err(e) = bounded(timeout, "PING", ping.query_async::<Value>(conn)).await {
                self.lost(tasks, i);
                return Err(e);
            }
        }
        tasks
            .shared
            .stats
            .receiver_up
            .store(true, Ordering::Relaxed);
        Ok(())
    }

    /// One `PING` per open connection; a failed one is dropped.
    async fn ping_all(&mut self, tasks: &Tasks) -> bool {
        let timeout = tasks.hosts.timeout();
        let mut lost = false;
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            let ping = redis::cmd("PING");
            if bounded(timeout, "PING", ping.query_async::<Value>(conn))
                .await
                .is_err()
            {
                self.lost(tasks, i);
                lost = true;
            }
        }
        lost
    }

    fn lost(&mut self, tasks: &Tasks, i: usize) {
        self.conns[i] = None;
        if tasks
            .shared
            .stats
            .receiver_up
            .swap(false, Ordering::Relaxed)
        {
            tracing::warn!(
                host = i,
                "channel layer: pub/sub connection lost; subscribing again"
            );
        }
    }

    fn channel(&self, conv: ConversationId) -> String {
        format!("{}{conv}{}", self.channel_head, self.channel_tail)
    }

    /// The conversation of a group channel this node subscribed.
    fn conversation_of(&self, channel: &[u8]) -> Option<ConversationId> {
        let channel = std::str::from_utf8(channel).ok()?;
        let id = channel
            .strip_prefix(self.channel_head.as_str())?
            .strip_suffix(self.channel_tail.as_str())?;
        id.parse().ok()
    }
}

/// The publisher task: the node's chat messages and typing, with
/// `chatgate_node`, on each conversation's group channel (one pipeline per
/// host and round).
pub(super) async fn run_publisher(tasks: Tasks) {
    let c = tasks.shared.config.clone();
    let codec = c.pubsub_codec();
    let mut links = tasks.hosts.links("pub", c.timeout);
    let mut backoff = Backoff::new(c.timeout);
    let node = tasks.shared.node.clone();
    let subs_template = names::pubsub_channel(&c.prefix, &c.group_template);
    tasks.shared.stats.sender_up.store(true, Ordering::Relaxed);
    while let Some(batch) = super::next_batch(&tasks, &mut links, &mut backoff, BATCH_MAX).await {
        let hosts = links.hosts().len();
        let mut pipes: Vec<(redis::Pipeline, u64)> =
            (0..hosts).map(|_| (redis::pipe(), 0)).collect();
        for (conv, payload) in batch {
            let Some((_, dict)) = events::outgoing_dict(&payload) else {
                continue;
            };
            let channel = subs_template.replace("{id}", &conv.to_string());
            let sealed = codec.seal(&events::with_node(&dict, &node));
            let (pipe, n) = &mut pipes[links.hosts().index_of(&channel)];
            pipe.cmd("PUBLISH").arg(channel).arg(sealed).ignore();
            *n += 1;
        }
        let mut result = Ok(());
        for (i, (pipe, n)) in pipes.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            match links.run::<()>(i, pipe).await {
                Ok(()) => {
                    tasks.shared.stats.sent.fetch_add(*n, Ordering::Relaxed);
                }
                Err(e) => result = Err(e),
            }
        }
        if !super::round_done(&tasks, &mut backoff, result).await {
            break;
        }
    }
}
