//! A shard: one thread, one monoio runtime, its share of the conversations.
//!
//! Owns the shard thread and runtime (io_uring, or epoll as fallback or by
//! choice), the accept loop on this shard's SO_REUSEPORT listener, routing of
//! each accepted socket to the shard that owns its conversation (hand-off of
//! the fd plus the bytes already read), the shard's inbox (hand-offs, commit
//! outcomes, stats, shutdown) and the per-shard state every connection task
//! shares ([`ShardCtx`]).
//!
//! Must never: block its thread (no blocking I/O, no store call but through
//! channels, no std mutex), or own a socket of a conversation that
//! `shard_for` places elsewhere.

pub mod handoff;
mod live;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::{AsyncWriteRentExt, Canceller};
use monoio::net::TcpStream;
use monoio::time::Instant;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Verifier;
use crate::bridge::{Bridge, RemoteEvent, RemoteKind};
use crate::close::CloseReason;
use crate::config::{Config, IoDriver};
use crate::connection;
use crate::frame;
use crate::handshake::{self, Head, Rejection, Upgrade};
use crate::http_api;
use crate::hub::{Audience, Effect, Hub, Peer};
use crate::limits::{client_ip, Limits};
use crate::membership::MembershipCache;
use crate::metrics::ShardMetrics;
use crate::presence::Presence;
use crate::protocol::{self, Decoder, ReplyError};
use crate::routing::shard_for;
use crate::sequencer::Ticket;
use crate::store::{ConversationId, InsertOutcome, StoreHandle};
use crate::timers::Timers;
use crate::typing_state::TypingTable;
use crate::upload_throttle::UploadThrottle;
use crate::web;

/// Messages into a shard. The inbox is unbounded: hand-offs are bounded by
/// the accept rate, commit outcomes by the store's bounded request queue.
pub enum ShardMsg {
    /// A socket accepted by another shard for a conversation this shard owns.
    Handoff(Handoff),
    /// Outcomes of a store batch for this shard's senders, in commit order.
    Committed(Vec<InsertOutcome>),
    /// Report figures.
    Stats(oneshot::Sender<ShardStats>),
    /// An event another node published for a conversation this shard owns.
    Remote(RemoteEvent),
    /// Stop accepting, close every socket with 1001, drain, exit.
    Shutdown,
}

/// A socket in transit between shards.
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub upgrade: Upgrade,
    /// Bytes read after the request head (early WebSocket frames).
    pub leftover: Vec<u8>,
    /// When the handshake must be complete.
    pub deadline: std::time::Instant,
}

/// Figures one shard reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Open WebSocket sessions owned by the shard.
    pub connections: usize,
    /// Sockets received from other shards.
    pub handoffs_in: u64,
    /// Frames waiting in this shard's outbound queues.
    pub queued_frames: usize,
    /// Connection tasks alive (handshaking, open or closing).
    pub tasks: usize,
}

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
    /// Inboxes of all shards, indexed by shard id.
    pub inboxes: Vec<mpsc::UnboundedSender<ShardMsg>>,
}

/// Per-shard state shared by the shard's tasks (`Rc`, never crosses threads).
pub struct ShardCtx {
    pub id: usize,
    pub config: Arc<Config>,
    pub verifier: Arc<Verifier>,
    pub store: StoreHandle,
    pub limits: Arc<Limits>,
    pub bridge: Option<Bridge>,
    pub inboxes: Vec<mpsc::UnboundedSender<ShardMsg>>,
    pub metrics: ShardMetrics,
    pub hub: Hub,
    /// Every session's deadlines, on one timer task.
    pub timers: Rc<Timers>,
    /// Recent admissions (user, conversation) → member, for `membership_cache_ttl`.
    pub membership: MembershipCache,
    pub decoder: RefCell<Decoder>,
    /// Read buffers lent to sockets for one read each (idle sockets hold none).
    read_pool: RefCell<Vec<Vec<u8>>>,
    /// Pre-framed error replies, indexed by `ReplyError as usize`.
    error_frames: Vec<Bytes>,
    pub ping_frame: Bytes,
    pub established_frame: Bytes,
    pub shutting_down: Cell<bool>,
    /// Connection tasks alive.
    pub tasks: Cell<usize>,
    /// Inserts sent to the store whose outcome has not come back.
    pub pending_inserts: Cell<usize>,
    /// The last forwarded typing state per (conversation, user).
    pub typing: RefCell<TypingTable>,
    /// Who is online in this shard's conversations (`shard/live.rs` drives it).
    pub presence: RefCell<Presence>,
    /// Upload-progress relay slots; holds (conversation, uploader, frame).
    pub uploads: RefCell<UploadThrottle<(ConversationId, crate::store::UserId, Bytes)>>,
    /// Conversations whose other nodes' presence is being read (after this
    /// node started holding them), with the v2 sockets waiting for it to
    /// send their `presence_state`.
    pub presence_pending:
        RefCell<std::collections::HashMap<ConversationId, Vec<oneshot::Sender<()>>>>,
    /// Closed sockets whose sequencer still waits for the store: effects
    /// they caused are still sent, in order, when their places are decided.
    lingering: RefCell<std::collections::HashMap<u64, Rc<Peer>>>,
    handoffs_in: Cell<u64>,
}

/// Size of one pooled read buffer.
const READ_BUF: usize = 16 * 1024;
/// Read buffers kept in the pool.
const READ_POOL_MAX: usize = 64;

impl ShardCtx {
    fn new(id: usize, parts: ShardParts) -> Self {
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
            presence_pending: RefCell::new(std::collections::HashMap::new()),
            lingering: RefCell::new(std::collections::HashMap::new()),
            handoffs_in: Cell::new(0),
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

    /// Queues an event on every local member socket in `audience` and
    /// publishes it for the other nodes unless it came from one.
    pub fn fan_out(
        &self,
        conversation_id: ConversationId,
        audience: Audience,
        frame: Bytes,
        publish: bool,
    ) {
        let d = self.hub.broadcast_to(conversation_id, audience, &frame);
        self.metrics.delivered(d.queued);
        if let (true, Some(b)) = (publish, &self.bridge) {
            b.publish(RemoteEvent {
                conversation_id,
                audience: audience.remote(),
                payload: frame::payload_of(&frame),
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

    fn stats(&self) -> ShardStats {
        ShardStats {
            connections: self.hub.connections(),
            handoffs_in: self.handoffs_in.get(),
            queued_frames: self.hub.queued_frames(),
            tasks: self.tasks.get(),
        }
    }
}

/// Starts shard `id` on its own thread; `ready` gets the driver name or the error.
pub fn spawn(
    id: usize,
    parts: ShardParts,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<ShardMsg>,
    ready: std::sync::mpsc::Sender<std::io::Result<&'static str>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let driver = parts.config.io_driver;
    std::thread::Builder::new()
        .name(format!("chatgate-shard-{id}"))
        .spawn(move || {
            let ready_main = ready.clone();
            let main = move |name: &'static str| {
                let _ = ready_main.send(Ok(name));
                shard_main(id, parts, listener, inbox)
            };
            if let Err(e) = run_runtime(driver, main) {
                tracing::error!(shard = id, error = %e, "shard runtime failed to start");
                let _ = ready.send(Err(e));
            }
        })
}

/// Builds the runtime for `driver` and runs `main(driver_name)` on it.
fn run_runtime<F, Fut>(driver: IoDriver, main: F) -> std::io::Result<()>
where
    F: FnOnce(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const ENTRIES: u32 = 1024;
    match driver {
        IoDriver::Auto => {
            let name = if monoio::utils::detect_uring() {
                "io_uring"
            } else {
                "epoll"
            };
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(ENTRIES)
                .enable_timer()
                .build()?;
            rt.block_on(main(name));
        }
        IoDriver::Uring => {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(ENTRIES)
                .enable_timer()
                .build()?;
            rt.block_on(main("io_uring"));
        }
        IoDriver::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?;
            rt.block_on(main("epoll"));
        }
    }
    Ok(())
}

async fn shard_main(
    id: usize,
    parts: ShardParts,
    listener: std::net::TcpListener,
    mut inbox: mpsc::UnboundedReceiver<ShardMsg>,
) {
    let ctx = Rc::new(ShardCtx::new(id, parts));
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|_| monoio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = id, error = %e, "cannot register listener");
            return;
        }
    };
    let canceller = Canceller::new();
    let accept = monoio::spawn(accept_loop(ctx.clone(), listener, canceller.handle()));
    let chores = monoio::spawn(housekeeping(ctx.clone()));
    // Ends with the runtime; closing sessions need it until the very end.
    monoio::spawn(ctx.timers.clone().run());
    while let Some(msg) = inbox.recv().await {
        if run_turn(&ctx, msg, &mut inbox) == Turn::Shutdown {
            break;
        }
        // Let the sockets' tasks write what did not fit before the next
        // turn queues more behind it (the queue bound is per turn).
        yield_now().await;
    }
    ctx.shutting_down.set(true);
    canceller.cancel();
    accept.await;
    drain(&ctx, &mut inbox).await;
    chores.await;
    if ctx.tasks.get() > 0 {
        tracing::warn!(
            shard = id,
            tasks = ctx.tasks.get(),
            "connections still closing at exit"
        );
    }
    tracing::debug!(
        shard = id,
        strong = Rc::strong_count(&ctx),
        "shard context references at exit"
    );
    ctx.metrics.set_open_connections(ctx.hub.connections());
    ctx.metrics.flush();
    tracing::debug!(shard = id, "shard stopped");
}

#[derive(PartialEq, Eq)]
enum Turn {
    Continue,
    Shutdown,
}

/// One turn of the inbox: `first` and whatever else is already waiting, up
/// to `store_batch_max` deliveries, with fan-out corked so each socket gets
/// the turn's frames in one `sendmsg`. Under load the inbox holds several
/// batches and the per-socket gathering grows with it; at light load a turn
/// is one message, sent at once.
fn run_turn(
    ctx: &Rc<ShardCtx>,
    first: ShardMsg,
    inbox: &mut mpsc::UnboundedReceiver<ShardMsg>,
) -> Turn {
    ctx.hub.cork();
    let mut budget = ctx.config.store_batch_max;
    let mut next = Some(first);
    let mut turn = Turn::Continue;
    while let Some(msg) = next.take() {
        match msg {
            ShardMsg::Handoff(h) => receive_handoff(ctx, h),
            ShardMsg::Committed(outcomes) => {
                budget = budget.saturating_sub(outcomes.len());
                connection::deliver_committed(ctx, outcomes);
            }
            ShardMsg::Remote(event) => {
                budget = budget.saturating_sub(1);
                deliver_remote(ctx, event);
            }
            ShardMsg::Stats(reply) => {
                let _ = reply.send(ctx.stats());
            }
            ShardMsg::Shutdown => {
                turn = Turn::Shutdown;
                break;
            }
        }
        if budget > 0 {
            next = inbox.try_recv().ok();
        }
    }
    ctx.metrics.gathered_writes(ctx.hub.uncork());
    turn
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

/// Periodic per-shard chores, once a second until shutdown (checked every
/// 100 ms so the shard stops promptly).
async fn housekeeping(ctx: Rc<ShardCtx>) {
    let mut ticks = 0u32;
    while !ctx.shutting_down.get() {
        monoio::time::sleep(Duration::from_millis(100)).await;
        ticks += 1;
        if ticks.is_multiple_of(10) {
            let now = std::time::Instant::now();
            ctx.membership.prune(now);
            ctx.typing.borrow_mut().prune(now);
            ctx.uploads.borrow_mut().prune(now);
            ctx.metrics.set_online(ctx.presence.borrow().online_pairs());
            ctx.metrics.set_open_connections(ctx.hub.connections());
            ctx.metrics.flush();
        }
    }
}

/// Shutdown: let in-flight inserts commit and be delivered, close every
/// socket with 1001, wait for the connection tasks (bounded by the grace).
async fn drain(ctx: &Rc<ShardCtx>, inbox: &mut mpsc::UnboundedReceiver<ShardMsg>) {
    let store_deadline = Instant::now() + ctx.config.timeouts.store;
    while ctx.pending_inserts.get() > 0 && Instant::now() < store_deadline {
        match monoio::time::timeout_at(store_deadline, inbox.recv()).await {
            Ok(Some(ShardMsg::Committed(outcomes))) => connection::deliver_committed(ctx, outcomes),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    ctx.hub.close_all(CloseReason::GoingAway);
    let grace = Instant::now() + ctx.config.timeouts.shutdown_grace;
    while ctx.tasks.get() > 0 && Instant::now() < grace {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn accept_loop(
    ctx: Rc<ShardCtx>,
    listener: monoio::net::TcpListener,
    cancel: monoio::io::CancelHandle,
) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(accept_one(ctx.clone(), stream, peer));
            }
            Err(_) if ctx.shutting_down.get() => return,
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(shard = ctx.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Reads and checks the request head, then serves the socket here or hands
/// it to the owner shard.
async fn accept_one(ctx: Rc<ShardCtx>, mut stream: TcpStream, peer: SocketAddr) {
    let _task = TaskGuard::new(&ctx);
    let deadline = Instant::now() + ctx.config.timeouts.handshake;
    let head = monoio::time::timeout_at(deadline, read_head(&ctx, &mut stream)).await;
    let (upgrade, leftover) = match head {
        Ok(Ok(Some((Head::Upgrade(upgrade), leftover)))) => (upgrade, leftover),
        Ok(Ok(Some((Head::Api(request), _)))) => {
            if !ctx.limits.check_handshake(peer.ip()) {
                return reject(&ctx, &mut stream, peer, Rejection::TooManyRequests).await;
            }
            return http_api::serve(&ctx, stream, peer, request).await;
        }
        Ok(Ok(Some((Head::Web(request), _)))) => {
            if !ctx.limits.check_handshake(peer.ip()) {
                return reject(&ctx, &mut stream, peer, Rejection::TooManyRequests).await;
            }
            let bytes = web::response(&request, ctx.config.web);
            let _ = monoio::time::timeout(ctx.config.timeouts.write_stall, stream.write_all(bytes))
                .await;
            return;
        }
        Ok(Ok(None)) => return, // peer went away
        Ok(Err(rejection)) => return reject(&ctx, &mut stream, peer, rejection).await,
        Err(_) => {
            ctx.metrics.handshake_rejected("timeout");
            tracing::info!(%peer, "handshake timed out");
            return;
        }
    };
    let client_ip = client_ip(
        peer,
        upgrade.forwarded_for.as_deref(),
        &ctx.config.trusted_proxies,
    );
    // From here on, logs name the client (behind a trusted proxy: its real address).
    let peer = SocketAddr::new(client_ip, peer.port());
    if !ctx.limits.check_handshake(client_ip) {
        return reject(&ctx, &mut stream, peer, Rejection::TooManyRequests).await;
    }
    let owner = shard_for(upgrade.conversation_id, ctx.inboxes.len());
    if owner == ctx.id {
        drop(_task);
        // A task of its own: this accept task's state is freed now.
        monoio::spawn(connection::serve(
            ctx, stream, peer, upgrade, leftover, deadline,
        ));
        return;
    }
    let msg = ShardMsg::Handoff(Handoff {
        stream: handoff::detach(stream),
        peer,
        upgrade,
        leftover,
        deadline: deadline.into_std(),
    });
    // If the owner is gone (shutting down) the message is dropped and the socket closed.
    let _ = ctx.inboxes[owner].send(msg);
}

/// Fans an event from another node out to this shard's member sockets.
fn deliver_remote(ctx: &ShardCtx, event: RemoteEvent) {
    match event.kind {
        RemoteKind::Frame => {}
        RemoteKind::Presence { origin } => {
            return ctx.remote_presence(event.conversation_id, origin, &event.payload)
        }
        RemoteKind::Snapshot(entries) => {
            return ctx.presence_snapshot(event.conversation_id, entries)
        }
        RemoteKind::NodeGone { origin } => return ctx.node_gone(origin),
    }
    debug_assert_eq!(shard_for(event.conversation_id, ctx.inboxes.len()), ctx.id);
    let mut f = frame::FrameBuf::with_capacity(event.payload.len());
    f.payload().extend_from_slice(&event.payload);
    ctx.fan_out(
        event.conversation_id,
        event.audience,
        f.finish_text(),
        false,
    );
}

fn receive_handoff(ctx: &Rc<ShardCtx>, h: Handoff) {
    ctx.handoffs_in.set(ctx.handoffs_in.get() + 1);
    ctx.metrics.handoff();
    debug_assert_eq!(
        shard_for(h.upgrade.conversation_id, ctx.inboxes.len()),
        ctx.id
    );
    match handoff::attach(h.stream) {
        Ok(stream) => {
            let deadline = Instant::from_std(h.deadline);
            monoio::spawn(connection::serve(
                ctx.clone(),
                stream,
                h.peer,
                h.upgrade,
                h.leftover,
                deadline,
            ));
        }
        Err(e) => tracing::warn!(shard = ctx.id, error = %e, "cannot attach handed-off socket"),
    }
}

/// Reads until a complete head. `Ok(None)`: the peer closed first.
async fn read_head(
    ctx: &ShardCtx,
    stream: &mut TcpStream,
) -> Result<Option<(Head, Vec<u8>)>, Rejection> {
    use monoio::io::AsyncReadRent;
    let max = ctx.config.limits.max_request_head_bytes;
    let mut acc: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let buf = Vec::with_capacity(max.saturating_sub(acc.len()).clamp(1, 4096));
        let (res, buf) = stream.read(buf).await;
        match res {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => acc.extend_from_slice(&buf),
        }
        match handshake::parse_head(&acc, &ctx.config.allowed_origins)? {
            Some((head_len, head)) => return Ok(Some((head, acc.split_off(head_len)))),
            None if acc.len() >= max => return Err(Rejection::HeadTooLarge),
            None => {}
        }
    }
}

async fn reject(ctx: &ShardCtx, stream: &mut TcpStream, peer: SocketAddr, rejection: Rejection) {
    ctx.metrics.handshake_rejected(rejection.label());
    tracing::info!(%peer, status = rejection.status(), reason = %rejection, "handshake rejected");
    let _ = monoio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(rejection.response()),
    )
    .await;
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
