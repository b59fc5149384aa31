//! The hub's part in refills (`shard_ctx/refill.rs`): its coarse clock,
//! the gaps of its conversations' delivery logs, and what a v2 socket was
//! sent since a moment (`delivery_log.rs` holds the rules).
//!
//! Must never: await, or touch a socket.

use std::collections::HashSet;
use std::rc::Rc;

use super::{Hub, Peer};
use crate::delivery_log::Tick;
use crate::ids::{ConversationId, MessageId};
use crate::protocol::Version;

impl Hub {
    /// Sets the shard's coarse clock (its chores, every 100 ms).
    pub fn set_now(&self, now: Tick) {
        self.now.set(now);
    }

    /// The shard's coarse clock.
    pub fn now(&self) -> Tick {
        self.now.get()
    }

    /// The bridge may have lost what other nodes fanned out in `conv`
    /// after `t0`: keep its log whole until the refill. Returns the v1
    /// sockets there (they may miss what was published meanwhile).
    pub(crate) fn open_gap(&self, conv: ConversationId, t0: Tick) -> usize {
        if let Some(log) = self.logs.borrow_mut().get_mut(&conv) {
            log.open_gap(t0);
        }
        self.rooms
            .borrow()
            .get(&conv)
            .map_or(0, |m| m.iter().filter(|p| p.version == Version::V1).count())
    }

    /// Ends `conv`'s gap; its earliest `t0`, if one was open.
    pub(crate) fn close_gap(&self, conv: ConversationId) -> Option<Tick> {
        self.logs.borrow_mut().get_mut(&conv)?.close_gap()
    }

    /// The v2 member sockets of `conv`.
    pub(crate) fn v2_members(&self, conv: ConversationId) -> Vec<Rc<Peer>> {
        self.rooms
            .borrow()
            .get(&conv)
            .into_iter()
            .flatten()
            .filter(|p| p.version == Version::V2)
            .cloned()
            .collect()
    }

    /// Where `peer`'s refill reads from (after the newest id it was sent
    /// at or before `t0`) and what it was sent above that.
    pub(crate) fn refill_plan(
        &self,
        peer: &Peer,
        t0: Tick,
    ) -> Option<(MessageId, HashSet<MessageId>)> {
        let logs = self.logs.borrow();
        let log = logs.get(&peer.conversation_id)?;
        let mark = peer.mark.borrow();
        let mark = mark.as_deref()?;
        let since = log.since(mark, t0);
        Some((since, log.sent_above(mark, since)))
    }

    /// Forgets log entries and refilled ids older than `retain`.
    pub(crate) fn prune_logs(&self, retain: Tick) {
        let now = self.now.get();
        for log in self.logs.borrow_mut().values_mut() {
            log.prune(now, retain);
        }
        for peer in self.conns.borrow().values() {
            if let Some(mark) = peer.mark.borrow_mut().as_deref_mut() {
                mark.prune(now, retain);
            }
        }
    }
}
