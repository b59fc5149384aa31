//! One WebSocket session's I/O: from the verified upgrade to the closed
//! socket. It drives the session core (`session.rs`): the rules of the
//! socket's life and of its messages are there, sans I/O; this module
//! reads, decodes, asks the core with `now` and carries out what it says.
//!
//! Owns a socket's whole life on its owner shard: token and membership check
//! (4001 / 4003 after the 101), the read → decode → act loop over
//! tungstenite's `WebSocketContext` fed from memory, writing the socket's
//! outbound queue, waking for the core's deadlines (heartbeat, idle, token
//! expiry, close linger), and the close handshake.
//!
//! One task per socket owns the stream; it waits for readability (no buffer
//! pinned while idle) and then reads with a non-blocking `recv` into a
//! buffer borrowed from the shard's pool, so a read is never raced against
//! a timer and dropped. Its deadlines live in the shard's `Timers`, and
//! everything it awaits inline is small: an idle socket's task is about
//! 700 bytes (the `live` future; see loadtest/RESULTS.md).
//!
//! Must never: block the shard, hold a `RefCell` borrow across an await, or
//! broadcast a message the store has not committed.

mod actions;
mod admission;
mod stored;
mod sync;
mod websocket;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::Bytes;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use monoio::time::Instant;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use crate::close::CloseReason;
use crate::handshake::{self, Upgrade};
use crate::hub::Peer;
use crate::limits::ConnectionPermit;
use crate::membership::Member;
use crate::outbound::Bounds;
use crate::protocol::Version;
use crate::session::{Lifecycle, Tick};
use crate::shard_ctx::{ShardCtx, TaskGuard};
use crate::sockio;
use crate::store::{InsertRequest, MessageId};

use admission::{Admission, Granted};

/// tungstenite's read chunk. Small on purpose: its default (128 KiB) is
/// zero-filled per socket. Bigger frames still fit (the buffer grows).
const WS_READ_CHUNK: usize = 128;

fn bounds(ctx: &ShardCtx) -> Bounds {
    Bounds {
        max_frames: ctx.config().limits.outbound_max_frames,
        max_bytes: ctx.config().limits.outbound_max_bytes,
    }
}

/// Serves an upgrade request on the shard that owns its conversation.
pub async fn serve(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    peer_addr: SocketAddr,
    upgrade: Upgrade,
    leftover: Vec<u8>,
    deadline: Instant,
) {
    let opened = Box::pin(open(ctx, stream, peer_addr, upgrade, leftover, deadline)).await;
    if let Some((session, sync)) = opened {
        // The session runs as a task of its own, so an idle socket costs
        // only the session's state, not the handshake's.
        monoio::spawn(session.live(sync));
    }
}

/// What an admitted v2 socket is sent before live events; `None` for v1
/// and refused sockets. Boxed: an idle socket's task keeps the slot.
type Sync = Option<Box<V2Sync>>;

/// A v2 socket's initial sync plan.
struct V2Sync {
    /// `?since=`, if any.
    since: Option<MessageId>,
    /// Its `presence_state`, taken when it joined; `None` while the other
    /// nodes' presence is still being read (taken when it arrives).
    presence: Option<Bytes>,
}

/// The handshake: admission, the 101 answer, and the session to run with
/// its initial sync (`None` when the socket is already gone).
async fn open(
    ctx: Rc<ShardCtx>,
    mut stream: TcpStream,
    peer_addr: SocketAddr,
    upgrade: Upgrade,
    leftover: Vec<u8>,
    deadline: Instant,
) -> Option<(Session, Sync)> {
    let task = TaskGuard::new(&ctx);
    let admission = monoio::time::timeout_at(deadline, admission::admit(&ctx, &upgrade, peer_addr))
        .await
        .unwrap_or(Admission::Refuse(CloseReason::Internal));
    let (granted, refusal) = match admission {
        Admission::Accept(g) => (Some(g), None),
        Admission::Refuse(r) => (None, Some(r)),
    };
    let user_id = granted.as_ref().map_or(0, |g| g.member.user_id);
    let peer = ctx.hub().new_peer(
        user_id,
        upgrade.version,
        upgrade.conversation_id,
        bounds(&ctx),
    );
    let mut head = handshake::switching_protocols(&upgrade.accept_key, upgrade.version);
    let (version, since) = (upgrade.version, upgrade.since);
    drop(upgrade);
    let mut sync = None;
    if granted.is_some() {
        head.extend_from_slice(ctx.established_frame());
    }
    let (res, _) = stream.write_all(head).await;
    res.ok()?;
    let mut session = Session::new(
        ctx.clone(),
        stream,
        peer_addr,
        peer,
        granted,
        leftover,
        task,
    );
    match refusal {
        Some(reason) => {
            ctx.metrics().handshake_rejected(reason.code_label());
            session.begin_close(reason);
        }
        None if ctx.is_shutting_down() => session.begin_close(CloseReason::GoingAway),
        None => {
            ctx.metrics().connection_opened();
            // Deliveries may now go straight to the socket (see outbound.rs).
            session.peer.outbound.attach(session.stream.as_raw_fd());
            if version == Version::V2 {
                // Held from before anything is read: nothing missed (sync.rs).
                session.peer.hold();
            }
            let username = session.member.as_ref().map_or("", |m| &m.username);
            ctx.join_member(&session.peer, username);
            if version == Version::V2 {
                let conv = session.peer.conversation_id;
                let pending = ctx.presence_loading(conv);
                let presence = (!pending).then(|| ctx.presence_state_frame(conv));
                sync = Some(Box::new(V2Sync { since, presence }));
            }
        }
    }
    Some((session, sync))
}

struct Session {
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    /// The client's address (for logs).
    addr: SocketAddr,
    ws: WebSocketContext,
    peer: Rc<Peer>,
    /// Who is on the socket; `None` while refusing (4001/4003/1008).
    member: Option<Rc<Member>>,
    _permit: Option<ConnectionPermit>,
    /// The phase, the deadlines and the close code (the session core).
    life: Lifecycle,
    /// A message the store had no room for, and the input behind it: the
    /// socket is not read until the store takes it (backpressure). Boxed:
    /// rare, and an idle socket should not pay for it.
    blocked: Option<Box<Blocked>>,
    /// Counts this socket among the shard's live tasks (shutdown waits for them).
    _task: TaskGuard,
}

/// Input processing stopped at a message the store queue had no room for.
struct Blocked {
    request: InsertRequest,
    /// Bytes read after that message, not yet given to tungstenite.
    rest: Vec<u8>,
}

impl Session {
    fn new(
        ctx: Rc<ShardCtx>,
        stream: TcpStream,
        addr: SocketAddr,
        peer: Rc<Peer>,
        granted: Option<Granted>,
        leftover: Vec<u8>,
        task: TaskGuard,
    ) -> Self {
        let max = ctx.config().limits.max_message_bytes;
        let cfg = WebSocketConfig::default()
            .read_buffer_size(WS_READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let ws = WebSocketContext::from_partially_read(leftover, Role::Server, Some(cfg));
        ctx.timers().track(&peer);
        let (member, permit, expires_at) = match granted {
            Some(g) => (Some(g.member), Some(g.permit), g.expires_at),
            None => (None, None, None),
        };
        let life = Lifecycle::new(
            std::time::Instant::now(),
            &ctx.config().timeouts,
            expires_at.map(Instant::into_std),
        );
        Self {
            ctx,
            stream,
            addr,
            ws,
            peer,
            member,
            _permit: permit,
            life,
            blocked: None,
            _task: task,
        }
    }

    /// The socket's whole open life, then its removal from the shard.
    ///
    /// An async block, not an `async fn`: an `async fn` keeps its by-value
    /// argument twice in the future (the argument and the local it is moved
    /// to), which would double every idle socket's session state.
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    fn live(mut self, sync: Sync) -> impl std::future::Future<Output = ()> {
        async move {
            if let Some(plan) = sync {
                Box::pin(self.sync(plan.since, plan.presence)).await;
            }
            self.run().await;
            if let Some(blocked) = self.blocked.take() {
                // Never reached the store: nothing to send in its place.
                drop(blocked);
                self.abandon_last_insert(None);
            }
            self.ctx.leave_member(&self.peer);
            if self.member.is_some() {
                self.ctx
                    .metrics()
                    .connection_closed(self.life.close_code().unwrap_or(1006));
            }
        }
    }

    /// The session's loop. Everything it awaits inline is small (the flush
    /// and the wait for readiness); the rare, large waits are boxed, so an
    /// idle socket's task stays small.
    async fn run(&mut self) {
        // Frames that arrived together with the request head.
        self.process_input(&[]);
        while !self.life.is_done() {
            if let Some(blocked) = self.blocked.take() {
                Box::pin(self.unblock(*blocked)).await;
                continue;
            }
            if let Some(reason) = self.peer.outbound.take_close_request() {
                self.begin_close(reason);
            }
            if self.flush().await.is_err() {
                return;
            }
            if self.life.is_done() {
                break;
            }
            self.wait_and_act().await;
        }
        let _ = self.flush().await;
    }

    /// Waits for input, a queued frame or a deadline, and acts on it. The
    /// deadline is kept by the shard's [`Timers`](crate::timers::Timers):
    /// an idle socket holds no runtime timer of its own.
    async fn wait_and_act(&mut self) {
        let deadline = Instant::from_std(self.life.next_deadline(&self.ctx.config().timeouts));
        if Instant::now() < deadline {
            self.ctx.timers().schedule(&self.peer, deadline);
            let readable = monoio::select! {
                r = self.stream.readable(false) => Some(r),
                _ = self.peer.outbound.ready() => None,
            };
            match readable {
                Some(Ok(())) => self.read_and_process(),
                Some(Err(_)) => self.life.finish(),
                None => {}
            }
        }
        self.peer.outbound.take_timer_due();
        if Instant::now() >= deadline {
            self.on_timer();
        }
    }

    /// Carries out what the core says is due now.
    fn on_timer(&mut self) {
        let now = std::time::Instant::now();
        let tick = self.life.on_timeout(now, &self.ctx.config().timeouts);
        match tick {
            Tick::Ping => {
                if self.member.is_some() {
                    self.peer.outbound.push_control(self.ctx.ping_frame());
                }
                self.ws_send(Message::Ping(Bytes::new()));
            }
            Tick::Expired | Tick::Idle => {
                let why = if tick == Tick::Expired {
                    "token expired"
                } else {
                    "idle timeout"
                };
                tracing::info!(peer = %self.addr, user_id = self.peer.user_id, "{why}");
                if let Some(reason) = tick.close_reason() {
                    self.begin_close(reason);
                }
            }
            Tick::Nothing | Tick::LingerOver => {}
        }
    }

    /// One non-blocking read into a pooled buffer (the socket was reported
    /// readable), then everything it completes.
    fn read_and_process(&mut self) {
        let mut buf = self.ctx.take_read_buf();
        match sockio::try_recv(self.stream.as_raw_fd(), &mut buf) {
            Ok(0) => self.life.finish(),
            Ok(n) => {
                self.life.seen(std::time::Instant::now());
                self.process_input(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.life.finish(),
        }
        self.ctx.give_read_buf(buf);
    }

    /// Writes everything queued. A write that stalls past the timeout, or
    /// fails, ends the session.
    async fn flush(&mut self) -> io::Result<()> {
        let mut batch = Vec::new();
        loop {
            self.peer.outbound.drain_into(&mut batch);
            let buf = match batch.len() {
                0 => return Ok(()),
                1 => batch.pop().expect("one frame"),
                _ => concat(&mut batch),
            };
            let stall = self.ctx.config().timeouts.write_stall;
            self.peer.outbound.set_writing(true);
            // Boxed: direct sends make this path rare; keep it out of the
            // task's resident size.
            let res = Box::pin(monoio::time::timeout(stall, self.stream.write_all(buf))).await;
            self.peer.outbound.set_writing(false);
            match res {
                Ok((Ok(_), _)) => {}
                Ok((Err(e), _)) => {
                    self.life.finish();
                    return Err(e);
                }
                Err(_) => {
                    tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, "write stalled, closing");
                    self.life.finish();
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The stream is closed right after this: no direct send may use its fd.
        self.peer.outbound.detach();
        self.ctx.timers().untrack(self.peer.conn_id);
    }
}

/// Joins queued frames into one write.
fn concat(batch: &mut Vec<Bytes>) -> Bytes {
    let len = batch.iter().map(Bytes::len).sum();
    let mut v = Vec::with_capacity(len);
    for b in batch.drain(..) {
        v.extend_from_slice(&b);
    }
    Bytes::from(v)
}
