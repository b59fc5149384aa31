//! One WebSocket session: from the verified upgrade to the closed socket.
//!
//! Owns a socket's whole life on its owner shard: token and membership check
//! (4001 / 4003 after the 101), the read → decode → act loop over
//! tungstenite's `WebSocketContext` fed from memory, writing the socket's
//! outbound queue, heartbeats and the idle timeout, the close handshake, and
//! turning store commit outcomes into `new_message` broadcasts.
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

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use monoio::time::Instant;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use crate::auth::VerifiedToken;
use crate::close::CloseReason;
use crate::frame::FrameBuf;
use crate::handshake::{self, Upgrade};
use crate::hub::Peer;
use crate::limits::{ConnectionPermit, Verdict};
use crate::membership::Member;
use crate::outbound::Bounds;
use crate::protocol::{self, ClientMessage, ReplyError};
use crate::shard::{ShardCtx, TaskGuard};
use crate::sockio;
use crate::store::{InsertOutcome, InsertRequest, Origin, TryInsertError, UserId};

/// tungstenite's read chunk. Small on purpose: its default (128 KiB) is
/// zero-filled per socket. Bigger frames still fit (the buffer grows).
const WS_READ_CHUNK: usize = 128;

/// What an admitted socket holds for its whole life.
struct Granted {
    member: Rc<Member>,
    /// Counts against the user's socket limit until dropped.
    permit: ConnectionPermit,
    /// When the token expires (closed with 4001 then, if enforced).
    expires_at: Option<Instant>,
}

/// The result of checking the token, the membership and the limits.
enum Admission {
    Accept(Granted),
    Refuse(CloseReason),
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
    if let Some(session) = opened {
        // The session runs as a task of its own, so an idle socket costs
        // only the session's state, not the handshake's.
        monoio::spawn(session.live());
    }
}

/// The handshake: admission, the 101 answer, and the session to run
/// (`None` when the socket is already gone).
async fn open(
    ctx: Rc<ShardCtx>,
    mut stream: TcpStream,
    peer_addr: SocketAddr,
    upgrade: Upgrade,
    leftover: Vec<u8>,
    deadline: Instant,
) -> Option<Session> {
    let task = TaskGuard::new(&ctx);
    let admission = monoio::time::timeout_at(deadline, admit(&ctx, &upgrade, peer_addr))
        .await
        .unwrap_or(Admission::Refuse(CloseReason::Internal));
    let (granted, refusal) = match admission {
        Admission::Accept(g) => (Some(g), None),
        Admission::Refuse(r) => (None, Some(r)),
    };
    let user_id = granted.as_ref().map_or(0, |g| g.member.user_id);
    let peer = ctx
        .hub
        .new_peer(user_id, upgrade.conversation_id, bounds(&ctx));
    let mut head = handshake::switching_protocols(&upgrade.accept_key);
    drop(upgrade);
    if granted.is_some() {
        head.extend_from_slice(&ctx.established_frame);
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
            ctx.metrics.handshake_rejected(reason.code_label());
            session.begin_close(reason);
        }
        None if ctx.shutting_down.get() => session.begin_close(CloseReason::GoingAway),
        None => {
            ctx.metrics.connection_opened();
            // Deliveries may now go straight to the socket (see outbound.rs).
            session.peer.outbound.attach(session.stream.as_raw_fd());
            ctx.join_member(&session.peer);
        }
    }
    Some(session)
}

fn bounds(ctx: &ShardCtx) -> Bounds {
    Bounds {
        max_frames: ctx.config.limits.outbound_max_frames,
        max_bytes: ctx.config.limits.outbound_max_bytes,
    }
}

/// Checks the token, then asks the store who the user is and whether they
/// belong to the conversation.
async fn admit(ctx: &ShardCtx, upgrade: &Upgrade, peer: SocketAddr) -> Admission {
    let token = match ctx.verifier.verify(upgrade.token.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(%peer, reason = e.label(), "authentication failed");
            return Admission::Refuse(CloseReason::Unauthenticated);
        }
    };
    let now = std::time::Instant::now();
    let member = match ctx
        .membership
        .get(token.user_id, upgrade.conversation_id, now)
    {
        Some(m) => m,
        None => match lookup(ctx, &token, upgrade, peer, now).await {
            Ok(m) => m,
            Err(reason) => return Admission::Refuse(reason),
        },
    };
    let Some(permit) = ctx.limits.try_acquire_connection(member.user_id) else {
        tracing::warn!(%peer, user_id = member.user_id, "too many sockets for this user");
        return Admission::Refuse(CloseReason::Policy);
    };
    Admission::Accept(Granted {
        member,
        permit,
        expires_at: expiry(ctx, token.exp),
    })
}

/// When a token that expires at `exp` (seconds since the epoch) stops being
/// valid, as a monoio instant; `None` when expiry is not enforced.
fn expiry(ctx: &ShardCtx, exp: u64) -> Option<Instant> {
    if !ctx.config.enforce_token_expiry {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let left = Duration::from_secs(exp.saturating_sub(now)) + ctx.config.jwt.leeway;
    Some(Instant::now() + left)
}

/// Asks the store who the user is and whether they belong; caches a yes.
async fn lookup(
    ctx: &ShardCtx,
    token: &VerifiedToken,
    upgrade: &Upgrade,
    peer: SocketAddr,
    now: std::time::Instant,
) -> Result<Rc<Member>, CloseReason> {
    let info = match ctx
        .store
        .connect_info(token.user_id, upgrade.conversation_id)
        .await
    {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(%peer, user_id = token.user_id, error = %e, "membership lookup failed");
            return Err(CloseReason::Internal);
        }
    };
    match info.user {
        Some(u) if u.is_active && info.is_participant => {
            let m = Member::from_profile(&u);
            ctx.membership.insert(upgrade.conversation_id, &m, now);
            Ok(m)
        }
        Some(u) if u.is_active => {
            tracing::info!(%peer, user_id = u.id, conversation = upgrade.conversation_id, "not a participant");
            Err(CloseReason::Forbidden)
        }
        _ => {
            tracing::info!(%peer, user_id = token.user_id, "unknown or inactive user");
            Err(CloseReason::Unauthenticated)
        }
    }
}

/// tungstenite's I/O: reads come from bytes already received, writes go to a
/// buffer that is then queued on the socket's outbound queue.
struct MemIo<'a> {
    rd: &'a [u8],
    wr: Vec<u8>,
}

impl Read for MemIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rd.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Read::read(&mut self.rd, buf)
    }
}

impl Write for MemIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wr.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// We sent a close frame; waiting for the peer's until the deadline.
    Closing {
        deadline: Instant,
        parse_input: bool,
    },
    /// Done: flush and drop the socket.
    Done,
}

/// What one decoded message asks for, owned (no borrow of the decoder).
enum Action {
    Reply(ReplyError),
    Store(String),
    Delete(i64),
    Typing(bool),
}

impl Action {
    /// The message-type label for metrics.
    fn kind(&self) -> &'static str {
        match self {
            Self::Reply(_) => "invalid",
            Self::Store(_) => "chat_message",
            Self::Delete(_) => "delete_message",
            Self::Typing(_) => "typing",
        }
    }
}

/// The rate-limited kinds of message.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Typing,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Typing => "typing",
        }
    }
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
    expires_at: Option<Instant>,
    phase: Phase,
    /// The close code sent or received, for the closed-connections metric.
    close_code: Option<u16>,
    last_seen: Instant,
    next_ping: Instant,
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
        let max = ctx.config.limits.max_message_bytes;
        let cfg = WebSocketConfig::default()
            .read_buffer_size(WS_READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let ws = WebSocketContext::from_partially_read(leftover, Role::Server, Some(cfg));
        ctx.timers.track(&peer);
        let now = Instant::now();
        let next_ping = now + ctx.config.timeouts.ping_interval;
        let (member, permit, expires_at) = match granted {
            Some(g) => (Some(g.member), Some(g.permit), g.expires_at),
            None => (None, None, None),
        };
        Self {
            ctx,
            stream,
            addr,
            ws,
            peer,
            member,
            _permit: permit,
            expires_at,
            phase: Phase::Open,
            close_code: None,
            last_seen: now,
            next_ping,
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
    fn live(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            self.run().await;
            self.ctx.leave_member(&self.peer);
            if self.member.is_some() {
                self.ctx
                    .metrics
                    .connection_closed(self.close_code.unwrap_or(1006));
            }
        }
    }

    /// The session's loop. Everything it awaits inline is small (the flush
    /// and the wait for readiness); the rare, large waits are boxed, so an
    /// idle socket's task stays small.
    async fn run(&mut self) {
        // Frames that arrived together with the request head.
        self.process_input(&[]);
        while self.phase != Phase::Done {
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
            if self.phase == Phase::Done {
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
        let deadline = self.next_deadline();
        if Instant::now() < deadline {
            self.ctx.timers.schedule(&self.peer, deadline);
            let readable = monoio::select! {
                r = self.stream.readable(false) => Some(r),
                _ = self.peer.outbound.ready() => None,
            };
            match readable {
                Some(Ok(())) => self.read_and_process(),
                Some(Err(_)) => self.phase = Phase::Done,
                None => {}
            }
        }
        self.peer.outbound.take_timer_due();
        if Instant::now() >= deadline {
            self.on_timer();
        }
    }

    fn next_deadline(&self) -> Instant {
        match self.phase {
            Phase::Closing { deadline, .. } => deadline,
            _ => {
                let d = self
                    .next_ping
                    .min(self.last_seen + self.ctx.config.timeouts.idle);
                self.expires_at.map_or(d, |e| d.min(e))
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Closing { deadline, .. } if now >= deadline => self.phase = Phase::Done,
            Phase::Open if self.expires_at.is_some_and(|e| now >= e) => {
                tracing::info!(peer = %self.addr, user_id = self.peer.user_id, "token expired");
                self.begin_close(CloseReason::Unauthenticated);
            }
            Phase::Open if now >= self.last_seen + self.ctx.config.timeouts.idle => {
                tracing::info!(peer = %self.addr, user_id = self.peer.user_id, "idle timeout");
                self.begin_close(CloseReason::Normal);
            }
            Phase::Open if now >= self.next_ping => {
                self.next_ping = now + self.ctx.config.timeouts.ping_interval;
                if self.member.is_some() {
                    self.peer.outbound.push_control(self.ctx.ping_frame.clone());
                }
                self.ws_send(Message::Ping(Bytes::new()));
            }
            _ => {}
        }
    }

    /// One non-blocking read into a pooled buffer (the socket was reported
    /// readable), then everything it completes.
    fn read_and_process(&mut self) {
        let mut buf = self.ctx.take_read_buf();
        match sockio::try_recv(self.stream.as_raw_fd(), &mut buf) {
            Ok(0) => self.phase = Phase::Done,
            Ok(n) => {
                self.last_seen = Instant::now();
                self.process_input(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.phase = Phase::Done,
        }
        self.ctx.give_read_buf(buf);
    }

    /// Feeds bytes to tungstenite and acts on every complete message. Stops
    /// early, keeping the rest in `blocked`, when the store queue is full.
    fn process_input(&mut self, input: &[u8]) {
        if let Phase::Closing {
            parse_input: false, ..
        } = self.phase
        {
            return; // after a protocol error the rest of the input is discarded
        }
        let mut io = MemIo {
            rd: input,
            wr: Vec::new(),
        };
        loop {
            match self.ws.read(&mut io) {
                Ok(Message::Text(t)) => {
                    if let Err(request) = self.on_text(t.as_bytes()) {
                        self.blocked = Some(Box::new(Blocked {
                            request,
                            rest: io.rd.to_vec(),
                        }));
                        break;
                    }
                }
                Ok(Message::Binary(_)) => self.reply(ReplyError::BinaryNotSupported),
                Ok(Message::Close(frame)) => {
                    // tungstenite queued the reply; remember the peer's code.
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    self.close_code.get_or_insert(code);
                }
                Ok(_) => {} // ping (pong is queued by tungstenite), pong
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.phase = Phase::Done;
                    break;
                }
                Err(e) => {
                    self.ship(std::mem::take(&mut io.wr));
                    self.fail(&e);
                    return;
                }
            }
        }
        let _ = self.ws.flush(&mut io);
        self.ship(io.wr);
    }

    /// A protocol-level failure of the peer: close with the matching code
    /// and stop parsing its input.
    fn fail(&mut self, e: &WsError) {
        let reason = match e {
            WsError::Capacity(_) => CloseReason::TooBig,
            WsError::Utf8(_) => CloseReason::InvalidPayload,
            WsError::Protocol(_) => CloseReason::ProtocolError,
            _ => CloseReason::Internal,
        };
        tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, reason = reason.label(), error = %e, "closing on peer error");
        self.begin_close(reason);
        if let Phase::Closing { deadline, .. } = self.phase {
            self.phase = Phase::Closing {
                deadline,
                parse_input: false,
            };
        }
    }

    /// Acts on one text message; `Err` hands back a chat message the store
    /// queue had no room for.
    fn on_text(&mut self, payload: &[u8]) -> Result<(), InsertRequest> {
        let Some(member) = self.member.clone() else {
            return Ok(()); // not admitted: input is ignored while closing
        };
        if self.phase != Phase::Open {
            return Ok(());
        }
        let action = match self.ctx.decoder.borrow_mut().decode(payload) {
            Ok(ClientMessage::Chat { content }) => Action::Store(content.to_owned()),
            Ok(ClientMessage::Delete { message_id }) => Action::Delete(message_id),
            Ok(ClientMessage::Typing { is_typing }) => Action::Typing(is_typing),
            Err(e) => Action::Reply(e),
        };
        self.ctx.metrics.message_received(action.kind());
        match action {
            Action::Reply(e) => self.reply(e),
            Action::Store(content) => {
                if self.admitted_by_limit(Kind::Chat, member.user_id) {
                    return self.store(&member, content);
                }
            }
            Action::Delete(id) => self.delete(id),
            Action::Typing(is_typing) => {
                if self.admitted_by_limit(Kind::Typing, member.user_id) {
                    self.typing(&member, is_typing);
                }
            }
        }
        Ok(())
    }

    /// Applies the user's rate limit for `kind`: over it, the message is
    /// dropped with `Rate limit exceeded`; sustained abuse closes with 1008.
    fn admitted_by_limit(&mut self, kind: Kind, user: UserId) -> bool {
        let limits = &self.ctx.limits;
        let verdict = match kind {
            Kind::Chat => limits.check_chat(user),
            Kind::Typing => limits.check_typing(user),
        };
        match verdict {
            Verdict::Allowed => return true,
            Verdict::Limited => self.reply(ReplyError::RateLimited),
            Verdict::Abusive => {
                tracing::warn!(peer = %self.addr, user_id = user, kind = kind.label(), "rate-limit abuse, closing");
                self.begin_close(CloseReason::Policy);
            }
        }
        self.ctx.metrics.rate_limited(kind.label());
        false
    }

    fn typing(&self, member: &Member, is_typing: bool) {
        let mut f = FrameBuf::with_capacity(96);
        protocol::encode_typing(f.payload(), member.user_id, &member.username, is_typing);
        let frame = f.finish_text();
        self.ctx
            .fan_out(self.peer.conversation_id, Some(member.user_id), frame, true);
    }

    /// Hands a message to the store; its outcome comes back through the
    /// shard inbox. `Err` hands it back when the store queue is full.
    fn store(&mut self, member: &Member, content: String) -> Result<(), InsertRequest> {
        let req = InsertRequest {
            conversation_id: self.peer.conversation_id,
            sender_id: member.user_id,
            content,
            origin: Origin {
                shard: self.ctx.id,
                conn: self.peer.conn_id,
                sender_json: member.sender_json.clone(),
            },
        };
        let ctx = &self.ctx;
        ctx.pending_inserts.set(ctx.pending_inserts.get() + 1);
        self.peer
            .receipts
            .borrow_mut()
            .push_back(std::time::Instant::now());
        match ctx.store.try_insert(req) {
            Ok(()) => Ok(()),
            Err(TryInsertError::Full(req)) => Err(req),
            Err(TryInsertError::Closed) => {
                self.store_failed();
                Ok(())
            }
        }
    }

    /// Backpressure: waits (within the store timeout) for room for the
    /// blocked message, then processes the input read after it.
    async fn unblock(&mut self, blocked: Blocked) {
        let ctx = &self.ctx;
        let wait = ctx.store.insert(blocked.request);
        if !matches!(
            monoio::time::timeout(ctx.config.timeouts.store, wait).await,
            Ok(Ok(()))
        ) {
            self.store_failed();
        }
        self.process_input(&blocked.rest);
    }

    /// The message just counted as pending never reached the store.
    fn store_failed(&mut self) {
        let ctx = &self.ctx;
        ctx.pending_inserts.set(ctx.pending_inserts.get() - 1);
        self.peer.receipts.borrow_mut().pop_back();
        self.reply(ReplyError::SendFailed);
    }

    /// Deletes in the background; the answer goes to this socket only.
    fn delete(&self, message_id: i64) {
        let ctx = self.ctx.clone();
        let peer = self.peer.clone();
        monoio::spawn(async move {
            let timeout = ctx.config.timeouts.store;
            let res =
                monoio::time::timeout(timeout, ctx.store.delete(message_id, peer.user_id)).await;
            let frame = match res {
                Ok(Ok(())) => {
                    let mut f = FrameBuf::with_capacity(48);
                    protocol::encode_message_deleted(f.payload(), message_id);
                    f.finish_text()
                }
                _ => ctx.error_frame(ReplyError::DeleteFailed),
            };
            let _ = peer.outbound.push(frame);
        });
    }

    fn reply(&self, e: ReplyError) {
        self.ctx.metrics.error_sent(e);
        let _ = self.peer.outbound.push(self.ctx.error_frame(e));
    }

    /// Starts the close handshake with `reason` (once).
    fn begin_close(&mut self, reason: CloseReason) {
        if self.phase != Phase::Open {
            return;
        }
        if reason == CloseReason::SlowConsumer {
            self.peer.outbound.clear();
            self.ctx.metrics.slow_consumer();
            tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, "slow consumer closed");
        }
        self.close_code = Some(reason.code());
        self.ctx.leave_member(&self.peer);
        self.peer.outbound.seal();
        let frame = CloseFrame {
            code: CloseCode::from(reason.code()),
            reason: "".into(),
        };
        let mut io = MemIo {
            rd: &[],
            wr: Vec::new(),
        };
        let _ = self.ws.close(&mut io, Some(frame));
        let _ = self.ws.flush(&mut io);
        self.ship(io.wr);
        let deadline = Instant::now() + self.ctx.config.timeouts.close_linger;
        self.phase = Phase::Closing {
            deadline,
            parse_input: true,
        };
    }

    /// Sends a control message through tungstenite (keeps its state right).
    fn ws_send(&mut self, msg: Message) {
        let mut io = MemIo {
            rd: &[],
            wr: Vec::new(),
        };
        let _ = self.ws.write(&mut io, msg);
        let _ = self.ws.flush(&mut io);
        self.ship(io.wr);
    }

    /// Queues bytes tungstenite produced (pong, close) on this socket.
    fn ship(&self, wr: Vec<u8>) {
        if !wr.is_empty() {
            self.peer.outbound.push_control(Bytes::from(wr));
        }
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
            let stall = self.ctx.config.timeouts.write_stall;
            self.peer.outbound.set_writing(true);
            // Boxed: direct sends make this path rare; keep it out of the
            // task's resident size.
            let res = Box::pin(monoio::time::timeout(stall, self.stream.write_all(buf))).await;
            self.peer.outbound.set_writing(false);
            match res {
                Ok((Ok(_), _)) => {}
                Ok((Err(e), _)) => {
                    self.phase = Phase::Done;
                    return Err(e);
                }
                Err(_) => {
                    tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, "write stalled, closing");
                    self.phase = Phase::Done;
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
        self.ctx.timers.untrack(self.peer.conn_id);
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

/// Turns a store batch's outcomes into broadcasts (committed) or error
/// replies to their senders (failed), in commit order.
pub fn deliver_committed(ctx: &ShardCtx, outcomes: Vec<InsertOutcome>) {
    let done = outcomes.len().min(ctx.pending_inserts.get());
    ctx.pending_inserts.set(ctx.pending_inserts.get() - done);
    for outcome in outcomes {
        let req = &outcome.request;
        let sender = ctx.hub.peer(req.origin.conn);
        let received = sender
            .as_ref()
            .and_then(|p| p.receipts.borrow_mut().pop_front());
        match outcome.result {
            Ok(stored) => {
                let mut f = FrameBuf::with_capacity(160 + req.content.len());
                protocol::encode_new_message(
                    f.payload(),
                    stored.id,
                    &req.origin.sender_json,
                    &req.content,
                    stored.timestamp,
                );
                ctx.fan_out(req.conversation_id, None, f.finish_text(), true);
                if let Some(t) = received {
                    ctx.metrics.broadcast_latency(t.elapsed());
                }
            }
            Err(e) => {
                tracing::warn!(user_id = req.sender_id, error = %e, "message not stored");
                if let Some(peer) = sender {
                    let _ = peer.outbound.push(ctx.error_frame(ReplyError::SendFailed));
                }
            }
        }
    }
}
