//! A shard: one thread, one monoio runtime, its share of the conversations.
//!
//! Owns the shard thread and runtime (io_uring, or epoll as fallback or by
//! choice), the accept loop on this shard's SO_REUSEPORT listener, routing of
//! each accepted socket to the shard that owns its conversation (hand-off of
//! the fd plus the bytes already read), the shard's inbox (hand-offs, commit
//! outcomes, stats, shutdown) and the per-shard state every connection task
//! shares ([`ShardCtx`], in `shard/ctx.rs`; the accept side is
//! `shard/accept.rs`, the live half of v2 `shard/live.rs`).
//!
//! Must never: block its thread (no blocking I/O, no store call but through
//! channels, no std mutex), or own a socket of a conversation that
//! `shard_for` places elsewhere.

mod accept;
mod ctx;
pub mod handoff;
mod live;

pub use ctx::{ShardCtx, ShardParts};

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::Canceller;
use monoio::time::Instant;
use tokio::sync::{mpsc, oneshot};

use crate::bridge::{RemoteEvent, RemoteKind};
use crate::close::CloseReason;
use crate::config::IoDriver;
use crate::connection;
use crate::frame;
use crate::handshake::Upgrade;
use crate::routing::shard_for;
use crate::store::InsertOutcome;

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
    let accept = monoio::spawn(accept::accept_loop(
        ctx.clone(),
        listener,
        canceller.handle(),
    ));
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
