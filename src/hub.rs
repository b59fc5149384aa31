//! A shard's conversations and their member sockets: the fan-out point.
//!
//! Owns, for one shard, the map conversation → member sockets and
//! connection id → socket. Broadcasting queues the same immutable frame
//! (`Bytes`, a refcount bump) on every member's [`Outbound`]; a member whose
//! queue overflows is marked for a 1013 close and skipped, never waited for.
//! Between `cork` and `uncork` (one turn of the shard's inbox) frames are
//! gathered per socket and each socket is flushed once: under load a turn
//! carries many messages and a socket gets them in one `sendmsg`.
//!
//! For conversations with a protocol v2 socket it also keeps the delivery
//! log (`delivery_log.rs`: which `new_message` ids went out, and when, in
//! the shard's coarse ticks) and each v2 socket's mark in it, and drops a
//! live `new_message` a v2 socket already got from a refill or replay.
//!
//! Must never: be shared across threads (`Rc`/`RefCell`, one per shard),
//! await, or do I/O. Every conversation here is owned by this shard
//! (`shard_for(conversation, shards) == shard`).

mod logs;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

pub use crate::audience::Audience;
use crate::close::CloseReason;
use crate::delivery_log::{DeliveryLog, Mark, Tick};
use crate::outbound::{Bounds, Deferred, Outbound};
use crate::protocol::Version;
use crate::read_marks::ReadMarker;
use crate::sequencer::{Sequencer, Ticket};
use crate::store::{ConversationId, UserId};

/// Something one socket caused, to be sent in the order the socket sent
/// its frames (see `sequencer.rs`).
#[derive(Debug)]
pub enum Effect {
    /// A frame for the causing socket only (an error, a delete's answer).
    Reply(Bytes),
    /// A frame for the conversation's sockets (local and on other nodes).
    Broadcast { frame: Bytes, audience: Audience },
    /// Close the causing socket (after everything it caused before).
    Close(CloseReason),
}

/// One WebSocket session as the rest of the shard sees it.
pub struct Peer {
    pub conn_id: u64,
    pub user_id: UserId,
    /// What the socket speaks: decides which events it is sent.
    pub version: Version,
    pub conversation_id: ConversationId,
    pub outbound: Outbound,
    /// This socket's messages still at the store, oldest first (outcomes
    /// come back in the order they were sent).
    pub inflight: RefCell<VecDeque<Inflight>>,
    /// The earliest deadline entry pending for this session in the shard's
    /// `Timers` (none while it is awake).
    pub timer_at: Cell<Option<monoio::time::Instant>>,
    /// This socket's effects in the order it sent their frames (docs/protocol.md §3, §9.9).
    pub sequencer: RefCell<Sequencer<Effect>>,
    /// While a v2 socket's initial state (replay, read state) is read,
    /// broadcasts to it are held here instead of queued (`resume.rs`).
    holding: Cell<bool>,
    held: RefCell<Vec<Bytes>>,
    /// `mark_read` values not yet written (`read_marks.rs`); boxed on first
    /// use, so sockets that never mark read pay one pointer.
    read_marks: RefCell<Option<Box<ReadMarker<Ticket>>>>,
    /// A v2 socket's standing in its conversation's delivery log (set when
    /// it joins; `None` for v1 sockets).
    mark: RefCell<Option<Box<Mark>>>,
}

impl Peer {
    /// Whether broadcasts to this socket are being held (initial sync or
    /// a refill in progress).
    pub fn is_holding(&self) -> bool {
        self.holding.get()
    }

    /// Runs `f` on this v2 socket's mark (`None` for a v1 socket).
    pub(crate) fn with_mark<R>(&self, f: impl FnOnce(&mut Mark) -> R) -> Option<R> {
        self.mark.borrow_mut().as_deref_mut().map(f)
    }

    /// Whether a live `new_message` `id` already reached this socket
    /// another way (a refill or a replay): it is not sent again.
    fn already_has(&self, id: Option<i64>) -> bool {
        match id {
            Some(id) => self.mark.borrow().as_ref().is_some_and(|m| m.has(id)),
            None => false,
        }
    }

    /// Holds broadcasts to this socket until [`release`](Self::release).
    pub fn hold(&self) {
        self.holding.set(true);
    }

    /// Stops holding; returns what was held, in arrival order.
    pub fn release(&self) -> Vec<Bytes> {
        self.holding.set(false);
        self.held.take()
    }

    /// Frames held so far.
    pub fn held_len(&self) -> usize {
        self.held.borrow().len()
    }

    /// Runs `f` on this socket's unwritten read positions.
    pub fn read_marks<R>(&self, f: impl FnOnce(&mut ReadMarker<Ticket>) -> R) -> R {
        let mut marks = self.read_marks.borrow_mut();
        f(marks.get_or_insert_with(Box::default))
    }
}

/// A message of a socket's, handed to the store and not yet answered.
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    /// When it was received (for the broadcast-latency histogram).
    pub received: Instant,
    /// Its place among the socket's effects.
    pub place: Ticket,
}

/// Result of a broadcast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Sockets the frame was queued on.
    pub queued: usize,
    /// Sockets whose queue overflowed (closed with 1013).
    pub overflowed: usize,
}

/// The shard's membership table.
#[derive(Default)]
pub struct Hub {
    rooms: RefCell<HashMap<ConversationId, Vec<Rc<Peer>>>>,
    conns: RefCell<HashMap<u64, Rc<Peer>>>,
    next_conn: Cell<u64>,
    /// Between `cork` and `uncork`, broadcasts defer their frames and the
    /// sockets that got some are listed here, to be flushed once each.
    corked: Cell<bool>,
    dirty: RefCell<Vec<Rc<Peer>>>,
    /// Delivery logs of the conversations with a v2 socket here.
    logs: RefCell<HashMap<ConversationId, DeliveryLog>>,
    /// The shard's coarse clock (`delivery_log::Tick`), set by its chores
    /// every 100 ms so fan-out reads no clock.
    now: Cell<Tick>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new peer, not yet a member of any conversation.
    pub fn new_peer(
        &self,
        user_id: UserId,
        version: Version,
        conversation_id: ConversationId,
        bounds: Bounds,
    ) -> Rc<Peer> {
        let conn_id = self.next_conn.get() + 1;
        self.next_conn.set(conn_id);
        Rc::new(Peer {
            conn_id,
            user_id,
            version,
            conversation_id,
            outbound: Outbound::new(bounds),
            inflight: RefCell::new(VecDeque::new()),
            timer_at: Cell::new(None),
            sequencer: RefCell::new(Sequencer::new()),
            holding: Cell::new(false),
            held: RefCell::new(Vec::new()),
            read_marks: RefCell::new(None),
            mark: RefCell::new(None),
        })
    }

    /// Makes `peer` a member of its conversation (it then receives
    /// broadcasts). True when it is the conversation's first member here.
    pub fn join(&self, peer: &Rc<Peer>) -> bool {
        if peer.version == Version::V2 {
            let mut logs = self.logs.borrow_mut();
            let log = logs.entry(peer.conversation_id).or_default();
            *peer.mark.borrow_mut() = Some(Box::new(Mark::join(log)));
        }
        let mut rooms = self.rooms.borrow_mut();
        let members = rooms.entry(peer.conversation_id).or_default();
        members.push(peer.clone());
        self.conns.borrow_mut().insert(peer.conn_id, peer.clone());
        members.len() == 1
    }

    /// Removes `peer`; a conversation without members is forgotten. True
    /// when this removed the conversation's last member here.
    pub fn leave(&self, peer: &Rc<Peer>) -> bool {
        if self.conns.borrow_mut().remove(&peer.conn_id).is_none() {
            return false;
        }
        let mut rooms = self.rooms.borrow_mut();
        let Some(members) = rooms.get_mut(&peer.conversation_id) else {
            return false;
        };
        if let Some(i) = members.iter().position(|m| Rc::ptr_eq(m, peer)) {
            members.swap_remove(i);
        }
        let last = members.is_empty();
        if last {
            rooms.remove(&peer.conversation_id);
            self.logs.borrow_mut().remove(&peer.conversation_id);
        }
        last
    }

    /// The member socket with this connection id, if still connected.
    pub fn peer(&self, conn_id: u64) -> Option<Rc<Peer>> {
        self.conns.borrow().get(&conn_id).cloned()
    }

    /// Queues `frame` on every member socket of the conversation.
    pub fn broadcast(&self, conversation_id: ConversationId, frame: &Bytes) -> Delivery {
        self.broadcast_to(conversation_id, Audience::ALL, frame)
    }

    /// Queues `frame` on every member socket whose user is not `except`.
    pub fn broadcast_except_user(
        &self,
        conversation_id: ConversationId,
        except: UserId,
        frame: &Bytes,
    ) -> Delivery {
        self.broadcast_to(conversation_id, Audience::except_user(except), frame)
    }

    /// Queues `frame` on every member socket of the conversation in `audience`.
    pub fn broadcast_to(
        &self,
        conversation_id: ConversationId,
        audience: Audience,
        frame: &Bytes,
    ) -> Delivery {
        let rooms = self.rooms.borrow();
        let mut d = Delivery::default();
        let id = self.note_delivery(conversation_id, frame);
        for peer in rooms.get(&conversation_id).into_iter().flatten() {
            if !audience.includes_socket(peer.user_id, peer.version, peer.conn_id) {
                continue;
            }
            if peer.version == Version::V2 && peer.already_has(id) {
                continue;
            }
            if peer.holding.get() {
                peer.held.borrow_mut().push(frame.clone());
                d.queued += 1;
                continue;
            }
            let pushed = if self.corked.get() {
                match peer.outbound.push_deferred(frame.clone()) {
                    Ok(Deferred::First) => {
                        self.dirty.borrow_mut().push(peer.clone());
                        Ok(())
                    }
                    Ok(Deferred::Queued) => Ok(()),
                    Err(e) => Err(e),
                }
            } else {
                peer.outbound.push(frame.clone())
            };
            match pushed {
                Ok(()) => d.queued += 1,
                Err(_) => d.overflowed += 1,
            }
        }
        d
    }

    /// Records a `new_message` in the conversation's delivery log (only
    /// kept while it has a v2 socket here); returns its id then.
    fn note_delivery(&self, conversation_id: ConversationId, frame: &Bytes) -> Option<i64> {
        let mut logs = self.logs.borrow_mut();
        if logs.is_empty() {
            return None;
        }
        let log = logs.get_mut(&conversation_id)?;
        let id = crate::resume::new_message_id(frame)?;
        log.note(id, self.now.get());
        Some(id)
    }

    /// Starts a turn: broadcasts until [`uncork`](Self::uncork) gather
    /// their frames per socket instead of sending each at once.
    pub fn cork(&self) {
        self.corked.set(true);
    }

    /// Whether broadcasts are being gathered (between `cork` and `uncork`).
    pub fn is_corked(&self) -> bool {
        self.corked.get()
    }

    /// Ends the turn: every socket that got frames sends them with one
    /// `sendmsg` (the rest is left to its task). Returns the sockets flushed.
    pub fn uncork(&self) -> usize {
        self.corked.set(false);
        let mut dirty = self.dirty.take();
        let flushed = dirty.len();
        for peer in dirty.drain(..) {
            peer.outbound.flush_deferred();
        }
        // Keep the list's allocation for the next turn.
        *self.dirty.borrow_mut() = dirty;
        flushed
    }

    /// Asks every member socket to close (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for peer in self.conns.borrow().values() {
            peer.outbound.request_close(reason);
        }
    }

    /// Asks the sockets of `user` (in `conversation`, or in every
    /// conversation) to close with `reason`; returns how many were asked.
    pub fn close_user(
        &self,
        user: UserId,
        conversation: Option<ConversationId>,
        reason: CloseReason,
    ) -> usize {
        let mut asked = 0;
        let mut close = |peer: &Rc<Peer>| {
            if peer.user_id == user {
                peer.outbound.request_close(reason);
                asked += 1;
            }
        };
        match conversation {
            Some(conv) => self
                .rooms
                .borrow()
                .get(&conv)
                .into_iter()
                .flatten()
                .for_each(&mut close),
            None => self.conns.borrow().values().for_each(&mut close),
        }
        asked
    }

    /// Member sockets on this shard.
    pub fn connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Whether the conversation has a member socket on this shard.
    pub fn holds(&self, conversation: ConversationId) -> bool {
        self.rooms.borrow().contains_key(&conversation)
    }

    /// Conversations with at least one member on this shard.
    pub fn conversations(&self) -> usize {
        self.rooms.borrow().len()
    }

    /// Frames waiting in member sockets' queues.
    pub fn queued_frames(&self) -> usize {
        self.conns.borrow().values().map(|p| p.outbound.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            max_frames: 2,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn broadcast_reaches_members_of_that_conversation_only() {
        let hub = Hub::new();
        let a = hub.new_peer(1, Version::V1, 10, bounds());
        let b = hub.new_peer(2, Version::V1, 10, bounds());
        let c = hub.new_peer(3, Version::V1, 11, bounds());
        for p in [&a, &b, &c] {
            hub.join(p);
        }
        let f = Bytes::from_static(b"x");
        assert_eq!(hub.broadcast(10, &f).queued, 2);
        assert_eq!(
            (a.outbound.len(), b.outbound.len(), c.outbound.len()),
            (1, 1, 0)
        );
        assert_eq!(hub.broadcast_except_user(10, 1, &f).queued, 1);
        assert_eq!((a.outbound.len(), b.outbound.len()), (1, 2));
        assert_eq!(hub.queued_frames(), 3);
    }

    #[test]
    fn overflow_marks_only_the_slow_member() {
        let hub = Hub::new();
        let slow = hub.new_peer(1, Version::V1, 10, bounds());
        let fast = hub.new_peer(2, Version::V1, 10, bounds());
        hub.join(&slow);
        hub.join(&fast);
        let f = Bytes::from_static(b"x");
        hub.broadcast(10, &f);
        hub.broadcast(10, &f);
        let mut sink = Vec::new();
        fast.outbound.drain_into(&mut sink);
        let d = hub.broadcast(10, &f);
        assert_eq!(
            d,
            Delivery {
                queued: 1,
                overflowed: 1
            }
        );
        assert_eq!(
            slow.outbound.take_close_request(),
            Some(CloseReason::SlowConsumer)
        );
        assert!(!fast.outbound.close_requested());
    }

    #[test]
    fn leave_forgets_empty_conversations() {
        let hub = Hub::new();
        let a = hub.new_peer(1, Version::V1, 10, bounds());
        let b = hub.new_peer(2, Version::V1, 10, bounds());
        assert!(hub.join(&a));
        assert!(!hub.join(&b));
        assert!(!hub.leave(&b));
        assert_eq!((hub.connections(), hub.conversations()), (1, 1));
        assert!(hub.peer(a.conn_id).is_some());
        assert!(hub.leave(&a));
        assert!(!hub.leave(&a));
        assert_eq!((hub.connections(), hub.conversations()), (0, 0));
        assert!(hub.peer(a.conn_id).is_none());
    }

    #[test]
    fn a_corked_turn_sends_each_socket_its_frames_once_at_uncork() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = Hub::new();
        let mut sockets = Vec::new();
        for user in 1..=2 {
            let tx = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (rx, _) = listener.accept().unwrap();
            let p = hub.new_peer(user, Version::V1, 10, bounds());
            p.outbound.attach(tx.as_raw_fd());
            hub.join(&p);
            sockets.push((p, tx, rx));
        }
        hub.cork();
        hub.broadcast(10, &Bytes::from_static(b"ab"));
        hub.broadcast(10, &Bytes::from_static(b"cd"));
        assert!(sockets.iter().all(|(p, ..)| p.outbound.len() == 2));
        assert_eq!(hub.uncork(), 2, "each socket flushed once");
        for (p, _tx, rx) in &mut sockets {
            assert!(p.outbound.is_empty());
            let mut got = [0u8; 4];
            rx.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"abcd");
        }
        assert_eq!(hub.uncork(), 0);
        hub.broadcast(10, &Bytes::from_static(b"ef"));
        assert!(
            sockets.iter().all(|(p, ..)| p.outbound.is_empty()),
            "uncorked: sent at once"
        );
    }
}
