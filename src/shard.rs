//! A shard: one thread, one monoio runtime, its share of the conversations.
//!
//! Owns the shard thread and runtime (io_uring, or epoll as fallback or by
//! choice), the accept loop on this shard's SO_REUSEPORT listener, routing of
//! each accepted socket to the shard that owns its conversation (hand-off of
//! the fd plus the bytes already read), the shard's inbox (hand-offs, commit
//! outcomes, stats, shutdown), turning commit outcomes into `new_message`
//! broadcasts (`shard/commit.rs`) and other nodes' events into deliveries,
//! carrying out the server API's calls (`shard/api.rs`),
//! and the shard's chores. The per-shard state every task shares
//! ([`ShardCtx`]) is the module below it, `shard_ctx.rs`; the accept side is
//! `shard/accept.rs`.
//!
//! Must never: block its thread (no blocking I/O, no store call but through
//! channels, no std mutex), or own a socket of a conversation that
//! `shard_for` places elsewhere.

mod accept;
mod api;
mod commit;
pub mod handoff;

pub use crate::shard_ctx::{Handoff, ShardCtx, ShardMsg, ShardParts, ShardStats};
pub(crate) use api::disconnect_reason;

use std::rc::Rc;
use std::time::Duration;

use monoio::io::Canceller;
use monoio::time::Instant;
use tokio::sync::mpsc;

use crate::bridge::{RemoteEvent, RemoteKind};
use crate::close::CloseReason;
use crate::config::IoDriver;
use crate::connection;
use crate::frame;
use crate::routing::shard_for;
use crate::shard_ctx::yield_now;

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
    ctx.hub().set_now(crate::delivery_log::now_tick());
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
    monoio::spawn(ctx.timers().clone().run());
    while let Some(msg) = inbox.recv().await {
        if run_turn(&ctx, msg, &mut inbox) == Turn::Shutdown {
            break;
        }
        // Let the sockets' tasks write what did not fit before the next
        // turn queues more behind it (the queue bound is per turn).
        yield_now().await;
    }
    ctx.begin_shutdown();
    canceller.cancel();
    accept.await;
    drain(&ctx, &mut inbox).await;
    chores.await;
    if ctx.tasks() > 0 {
        tracing::warn!(
            shard = id,
            tasks = ctx.tasks(),
            "connections still closing at exit"
        );
    }
    tracing::debug!(
        shard = id,
        strong = Rc::strong_count(&ctx),
        "shard context references at exit"
    );
    ctx.metrics().set_open_connections(ctx.hub().connections());
    ctx.metrics().flush();
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
    ctx.hub().cork();
    let mut budget = ctx.config().store_batch_max;
    let mut next = Some(first);
    let mut turn = Turn::Continue;
    while let Some(msg) = next.take() {
        match msg {
            ShardMsg::Handoff(h) => receive_handoff(ctx, h),
            ShardMsg::Committed(outcomes) => {
                budget = budget.saturating_sub(outcomes.len());
                commit::deliver_committed(ctx, outcomes);
            }
            ShardMsg::Remote(event) => {
                budget = budget.saturating_sub(1);
                deliver_remote(ctx, event);
            }
            ShardMsg::Api(call) => api::answer(ctx, call),
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
    ctx.metrics().gathered_writes(ctx.hub().uncork());
    turn
}

/// Periodic per-shard chores, once a second until shutdown (checked every
/// 100 ms so the shard stops promptly).
async fn housekeeping(ctx: Rc<ShardCtx>) {
    let mut ticks = 0u32;
    while !ctx.is_shutting_down() {
        monoio::time::sleep(Duration::from_millis(100)).await;
        ctx.hub().set_now(crate::delivery_log::now_tick());
        ticks += 1;
        if ticks.is_multiple_of(10) {
            ctx.chores(std::time::Instant::now());
        }
    }
}

/// Shutdown: let in-flight inserts commit and be delivered, close every
/// socket with 1001, wait for the connection tasks (bounded by the grace).
async fn drain(ctx: &Rc<ShardCtx>, inbox: &mut mpsc::UnboundedReceiver<ShardMsg>) {
    let store_deadline = Instant::now() + ctx.config().timeouts.store;
    while ctx.pending_inserts() > 0 && Instant::now() < store_deadline {
        match monoio::time::timeout_at(store_deadline, inbox.recv()).await {
            Ok(Some(ShardMsg::Committed(outcomes))) => commit::deliver_committed(ctx, outcomes),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    ctx.hub().close_all(CloseReason::GoingAway);
    let grace = Instant::now() + ctx.config().timeouts.shutdown_grace;
    while ctx.tasks() > 0 && Instant::now() < grace {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fans an event from another node out to this shard's member sockets.
fn deliver_remote(ctx: &Rc<ShardCtx>, event: RemoteEvent) {
    match event.kind {
        RemoteKind::Frame => {}
        RemoteKind::Presence { origin } => {
            return ctx.remote_presence(event.conversation_id, origin, &event.payload)
        }
        RemoteKind::Snapshot(entries) => {
            return ctx.presence_snapshot(event.conversation_id, entries)
        }
        RemoteKind::NodeGone { origin } => return ctx.node_gone(origin),
        RemoteKind::Gap { good_at } => return ctx.bridge_gap(event.conversation_id, good_at),
        RemoteKind::Refill { good_at } => return ctx.bridge_refill(event.conversation_id, good_at),
        RemoteKind::Disconnect { user_id, code } => {
            let conversation = Some(event.conversation_id).filter(|c| *c != 0);
            if let Some(reason) = api::disconnect_reason(code) {
                ctx.disconnect_user(user_id, conversation, reason);
            }
            return;
        }
    }
    debug_assert_eq!(shard_for(event.conversation_id, ctx.shards()), ctx.id());
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
    ctx.handoff_received();
    ctx.metrics().handoff();
    debug_assert_eq!(shard_for(h.upgrade.conversation_id, ctx.shards()), ctx.id());
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
        Err(e) => tracing::warn!(shard = ctx.id(), error = %e, "cannot attach handed-off socket"),
    }
}
