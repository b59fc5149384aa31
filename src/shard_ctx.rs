//! The per-shard state every task of a shard shares ([`ShardCtx`]): the
//! hub of member sockets, timers, caches, the shard's tables (typing,
//! uploads, presence), pooled read buffers and pre-framed replies, and the
//! ordered way a socket's effects leave (its sequencer, then the hub or the
//! bridge). It sits below both the shard (`shard.rs`: thread, accept,
//! inbox) and the connections (`connection.rs`), which meet only here.
//!
//! Owns its fields privately: tasks read the node's services through
//! getters and change the shard's state only through the operations
//! below (join and leave, ordered sends, the counters, the session core's
//! [`Rules`]). The presence glue is `shard_ctx/presence.rs`, the inbox
//! types `shard_ctx/inbox.rs`, the refills after a bridge loss
//! `shard_ctx/refill.rs`.
//!
//! Must never: cross a thread (`Rc` and `RefCell` only), hold a `RefCell`
//! borrow across an await, or send a socket's effect around its sequencer.

mod inbox;
mod presence;
mod refill;

pub use inbox::{ApiCall, Handoff, ShardMsg, ShardStats};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Verifier;
use crate::bridge::{Bridge, RemoteEvent, RemoteKind};
use crate::channel_layer::ChannelLayer;
use crate::close::CloseReason;
use crate::config::Config;
use crate::frame;
use crate::hub::{Audience, Effect, Hub, Peer};
use crate::limits::Limits;
use crate::membership::{Member, MembershipCache};
use crate::metrics::ShardMetrics;
use crate::presence::Presence;
use crate::protocol::{self, Decoder, ReplyError, Version};
use crate::sequencer::Ticket;
use crate::session::{Action, HeldUpload, Rules};
use crate::store::{ConversationId, StoreHandle, UserId};
use crate::timers::Timers;
use crate::typing_state::TypingTable;
use crate::upload_throttle::UploadThrottle;

/// What every shard thread is started with (all `Send`).
#[derive(Clone)]
pub struct ShardParts {
    pub config: Arc<Config>,
    pub verifier: Arc<Verifier>,
    pub store: StoreHandle,
    /// Per-user and per-IP limits, shared by all shards (a user's sockets
    /// may live on several shards).
    pub limits: Arc<Limits>,
    /// Cross-node fan-out, when Redis is configured.
    pub bridge: Option<Bridge>,
    /// The Django app's Channels layer, when configured.
    pub layer: Option<ChannelLayer>,
    /// Inboxes of all shards, indexed by shard id.
    pub inboxes: Vec<mpsc::UnboundedSender<ShardMsg>>,
}

/// Per-shard state shared by the shard's tasks (`Rc`, never crosses threads).
pub struct ShardCtx {
    id: usize,
    config: Arc<Config>,
    verifier: Arc<Verifier>,
    store: StoreHandle,
    limits: Arc<Limits>,
    bridge: Option<Bridge>,
    layer: Option<ChannelLayer>,
    inboxes: Vec<mpsc::UnboundedSender<ShardMsg>>,
    metrics: ShardMetrics,
    hub: Hub,
    /// Every session's deadlines, on one timer task.
    timers: Rc<Timers>,
    /// Recent admissions (user, conversation) → member, for `membership_cache_ttl`.
    membership: MembershipCache,
    decoder: RefCell<Decoder>,
    /// Read buffers lent to sockets for one read each (idle sockets hold none).
    read_pool: RefCell<Vec<Vec<u8>>>,
    /// Pre-framed error replies, indexed by `ReplyError as usize`.
    error_frames: Vec<Bytes>,
    ping_frame: Bytes,
    established_frame: Bytes,
    shutting_down: Cell<bool>,
    /// Connection tasks alive.
    tasks: Cell<usize>,
    /// Inserts sent to the store whose outcome has not come back.
    pending_inserts: Cell<usize>,
    /// The last forwarded typing state per (conversation, user).
    typing: RefCell<TypingTable>,
    /// Who is online in this shard's conversations (`shard_ctx/presence.rs` drives it).
    presence: RefCell<Presence>,
    /// Upload-progress relay slots; holds (conversation, uploader, frame).
    uploads: RefCell<UploadThrottle<HeldUpload>>,
    /// Conversations whose other nodes' presence is being read (after this
    /// node started holding them), with the v2 sockets waiting for it to
    /// send their `presence_state`.
    presence_pending: RefCell<HashMap<ConversationId, Vec<oneshot::Sender<()>>>>,
    /// Closed sockets whose sequencer still waits for the store: effects
    /// they caused are still sent, in order, when their places are decided.
    lingering: RefCell<HashMap<u64, Rc<Peer>>>,
    handoffs_in: Cell<u64>,
}

/// Size of one pooled read buffer.
const READ_BUF: usize = 16 * 1024;
/// Read buffers kept in the pool.
const READ_POOL_MAX: usize = 64;

impl ShardCtx {
    pub fn new(id: usize, parts: ShardParts) -> Self {
        let ttl = parts.config.membership_cache_ttl;
        let error_frames = ReplyError::ALL
            .iter()
            .map(|e| {
                let mut f = frame::FrameBuf::with_capacity(64);
                e.encode(f.payload());
                f.finish_text()
            })
            .collect();
        Self {
            id,
            config: parts.config,
            verifier: parts.verifier,
            store: parts.store,
            limits: parts.limits,
            bridge: parts.bridge,
            layer: parts.layer,
            inboxes: parts.inboxes,
            metrics: ShardMetrics::new(id),
            hub: Hub::new(),
            timers: Rc::new(Timers::new()),
            membership: MembershipCache::new(ttl),
            decoder: RefCell::new(Decoder::new()),
            read_pool: RefCell::new(Vec::new()),
            error_frames,
            ping_frame: frame::text(protocol::PING),
            established_frame: frame::text(protocol::CONNECTION_ESTABLISHED),
            shutting_down: Cell::new(false),
            tasks: Cell::new(0),
            pending_inserts: Cell::new(0),
            typing: RefCell::new(TypingTable::new()),
            presence: RefCell::new(Presence::new()),
            uploads: RefCell::new(UploadThrottle::new()),
            presence_pending: RefCell::new(HashMap::new()),
            lingering: RefCell::new(HashMap::new()),
            handoffs_in: Cell::new(0),
        }
    }

    /// This shard's id (its index among the node's shards).
    pub fn id(&self) -> usize {
        self.id
    }

    /// How many shards the node runs (`shard_for`'s modulus).
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// The conversations' member sockets (fan-out).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Every session's deadlines.
    pub fn timers(&self) -> &Rc<Timers> {
        &self.timers
    }

    /// Recent admissions (user, conversation) → member.
    pub fn membership(&self) -> &MembershipCache {
        &self.membership
    }

    /// The framed `{"type":"ping"}`.
    pub fn ping_frame(&self) -> Bytes {
        self.ping_frame.clone()
    }

    /// The framed `connection_established`.
    pub fn established_frame(&self) -> &Bytes {
        &self.established_frame
    }

    /// Decodes a text frame of a `version` socket of `member` with the
    /// shard's decoder (its buffers are reused).
    pub fn decode(&self, payload: &[u8], version: Version, member: &Member) -> Action {
        Action::decode(&mut self.decoder.borrow_mut(), payload, version, member)
    }

    /// Whether the shard stopped accepting (shutdown began).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
    }

    /// Connection tasks alive (handshaking, open or closing).
    pub fn tasks(&self) -> usize {
        self.tasks.get()
    }

    /// Inserts sent to the store whose outcome has not come back.
    pub fn pending_inserts(&self) -> usize {
        self.pending_inserts.get()
    }

    /// An insert was handed to the store.
    pub fn insert_sent(&self) {
        self.pending_inserts.set(self.pending_inserts.get() + 1);
    }

    /// The newest insert never reached the store.
    pub fn insert_abandoned(&self) {
        self.pending_inserts.set(self.pending_inserts.get() - 1);
    }

    /// `n` outcomes came back from the store.
    pub fn inserts_answered(&self, n: usize) {
        let done = n.min(self.pending_inserts.get());
        self.pending_inserts.set(self.pending_inserts.get() - done);
    }

    /// A socket arrived from another shard.
    pub fn handoff_received(&self) {
        self.handoffs_in.set(self.handoffs_in.get() + 1);
    }

    /// Sends `msg` to shard `shard`'s inbox; false when that shard is gone
    /// (shutting down: the message, and any socket in it, is dropped).
    pub fn send_to_shard(&self, shard: usize, msg: ShardMsg) -> bool {
        self.inboxes[shard].send(msg).is_ok()
    }

    /// Whether `conv`'s presence on the other nodes is still being read
    /// (its v2 sockets wait for it before their `presence_state`).
    pub fn presence_loading(&self, conv: ConversationId) -> bool {
        self.presence_pending.borrow().contains_key(&conv)
    }

    /// The once-a-second chores: prune the caches and tables, publish the
    /// gauges and flush the counters.
    pub fn chores(&self, now: std::time::Instant) {
        self.membership.prune(now);
        self.typing.borrow_mut().prune(now);
        self.uploads.borrow_mut().prune(now);
        self.prune_delivery_logs();
        self.metrics
            .set_online(self.presence.borrow().online_pairs());
        self.metrics.set_open_connections(self.hub.connections());
        self.metrics.flush();
    }

    /// Closes `user`'s sockets on this shard (of `conversation`, or all)
    /// with `reason`, after forgetting their cached admissions so a
    /// reconnect asks the store again (a participant just removed in the
    /// database is refused). Returns the sockets asked to close.
    pub fn disconnect_user(
        &self,
        user: UserId,
        conversation: Option<ConversationId>,
        reason: CloseReason,
    ) -> usize {
        self.membership.forget(user, conversation);
        self.hub.close_user(user, conversation, reason)
    }

    /// The tables and limits the session core's message rules consult.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            limits: &self.limits,
            typing: &self.typing,
            uploads: &self.uploads,
            presence: &self.presence,
        }
    }

    /// The framed `{"type":"error",...}` reply for `e`.
    pub fn error_frame(&self, e: ReplyError) -> Bytes {
        self.error_frames[e as usize].clone()
    }

    /// Makes `peer` a member of its conversation; the node subscribes to the
    /// conversation's cross-node channel with its first local member.
    pub fn join_member(self: &Rc<Self>, peer: &Rc<Peer>, username: &str) {
        let first = self.hub.join(peer);
        if first && self.bridge.as_ref().is_some_and(Bridge::is_connected) {
            // The bridge reads the other nodes' presence after subscribing
            // (with Redis down there is nothing to wait for).
            self.presence_pending
                .borrow_mut()
                .insert(peer.conversation_id, Vec::new());
        }
        self.presence_join(peer, username);
        if first {
            if let Some(b) = &self.bridge {
                b.subscribe(peer.conversation_id);
            }
            if let Some(l) = &self.layer {
                l.join(peer.conversation_id);
            }
        }
    }

    /// Removes `peer`; the node unsubscribes (after the bridge's linger) when
    /// the conversation has no local member left.
    /// While the store still owes the socket answers, it stays findable (as
    /// lingering) so what it caused still goes out in order.
    pub fn leave_member(self: &Rc<Self>, peer: &Rc<Peer>) {
        if self.hub.peer(peer.conn_id).is_some() {
            self.presence_leave(peer);
        }
        if self.hub.leave(peer) {
            self.presence_loaded(peer.conversation_id);
            if let Some(b) = &self.bridge {
                b.unsubscribe(peer.conversation_id);
            }
            if let Some(l) = &self.layer {
                l.leave(peer.conversation_id);
            }
        }
        if !peer.sequencer.borrow().is_idle() {
            self.lingering
                .borrow_mut()
                .insert(peer.conn_id, peer.clone());
        }
    }

    /// The socket with this connection id: a member, or a closed one the
    /// store still owes answers.
    pub fn sender(&self, conn_id: u64) -> Option<Rc<Peer>> {
        self.hub
            .peer(conn_id)
            .or_else(|| self.lingering.borrow().get(&conn_id).cloned())
    }

    /// Sends an effect of `peer`'s now, or keeps it behind the effects its
    /// earlier frames still wait for.
    pub fn send_ordered(&self, peer: &Peer, effect: Effect) {
        let now = peer.sequencer.borrow_mut().push(effect);
        if let Some(e) = now {
            self.emit(peer, e);
        }
    }

    /// Decides `peer`'s reserved place and sends everything that may now
    /// leave, in order.
    pub fn fill_ordered(&self, peer: &Peer, ticket: Ticket, effect: Option<Effect>) {
        // `emit` never touches a sequencer, so it may run under the borrow
        // (and nothing is collected on the per-message path).
        peer.sequencer
            .borrow_mut()
            .fill(ticket, effect, |e| self.emit(peer, e));
        if peer.sequencer.borrow().is_idle() {
            self.lingering.borrow_mut().remove(&peer.conn_id);
        }
    }

    /// Carries out one effect of `peer`'s.
    fn emit(&self, peer: &Peer, effect: Effect) {
        match effect {
            Effect::Reply(frame) => {
                let _ = peer.outbound.push(frame);
            }
            Effect::Broadcast { frame, audience } => {
                self.fan_out(peer.conversation_id, audience, frame, true)
            }
            Effect::Close(reason) => peer.outbound.request_close(reason),
        }
    }

    /// Queues an event on every local member socket in `audience` and,
    /// unless it came from another node or the Channels layer (`publish`
    /// false), publishes it for the other nodes and offers it to the layer
    /// (which sends on chat messages and typing only).
    pub fn fan_out(
        &self,
        conversation_id: ConversationId,
        audience: Audience,
        frame: Bytes,
        publish: bool,
    ) {
        let d = self.hub.broadcast_to(conversation_id, audience, &frame);
        self.metrics.delivered(d.queued);
        if !publish || (self.bridge.is_none() && self.layer.is_none()) {
            return;
        }
        let payload = frame::payload_of(&frame);
        if let Some(l) = &self.layer {
            l.offer(conversation_id, &payload);
        }
        if let Some(b) = &self.bridge {
            b.publish(RemoteEvent {
                conversation_id,
                audience: audience.remote(),
                payload,
                kind: RemoteKind::Frame,
            });
        }
    }

    /// Borrows a read buffer (`READ_BUF` bytes) for one read.
    pub fn take_read_buf(&self) -> Vec<u8> {
        self.read_pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0; READ_BUF])
    }

    /// Returns a read buffer to the pool.
    pub fn give_read_buf(&self, buf: Vec<u8>) {
        let mut pool = self.read_pool.borrow_mut();
        if pool.len() < READ_POOL_MAX && buf.len() == READ_BUF {
            pool.push(buf);
        }
    }

    pub fn stats(&self) -> ShardStats {
        ShardStats {
            connections: self.hub.connections(),
            conversations: self.hub.conversations(),
            handoffs_in: self.handoffs_in.get(),
            queued_frames: self.hub.queued_frames(),
            tasks: self.tasks.get(),
        }
    }
}

/// Counts a live connection task on its shard.
pub struct TaskGuard {
    ctx: Rc<ShardCtx>,
}

impl TaskGuard {
    pub fn new(ctx: &Rc<ShardCtx>) -> Self {
        ctx.tasks.set(ctx.tasks.get() + 1);
        Self { ctx: ctx.clone() }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.ctx.tasks.set(self.ctx.tasks.get() - 1);
    }
}

/// Gives every other ready task on this shard a turn.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
