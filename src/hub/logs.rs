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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameBuf;
    use crate::outbound::Bounds;
    use crate::protocol;
    use bytes::Bytes;

    fn new_message(id: i64) -> Bytes {
        let mut f = FrameBuf::with_capacity(200);
        protocol::encode_new_message(
            f.payload(),
            id,
            br#"{"id":1,"username":"a","first_name":"","last_name":""}"#,
            "hi",
            chrono::Utc::now(),
        );
        f.finish_text()
    }

    fn bounds() -> Bounds {
        Bounds {
            max_frames: 100,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn v2_sockets_are_logged_refilled_ids_are_not_sent_twice() {
        let hub = Hub::new();
        hub.set_now(10);
        let v1 = hub.new_peer(1, Version::V1, 7, bounds());
        let v2 = hub.new_peer(2, Version::V2, 7, bounds());
        hub.join(&v1);
        hub.join(&v2);
        hub.broadcast(7, &new_message(100));
        hub.set_now(20);
        hub.broadcast(7, &new_message(120));
        // The bridge lost the subscription at tick 15: refill from 100.
        assert_eq!(hub.open_gap(7, 15), 1, "one v1 socket exposed");
        let t0 = hub.close_gap(7).expect("a gap");
        let (since, sent) = hub.refill_plan(&v2, t0).expect("a v2 socket");
        assert_eq!(since, 100);
        assert_eq!(sent, HashSet::from([120]));
        // 118 came from the store; its live copy arrives late.
        v2.with_mark(|m| m.sent_outside(118, 20, false));
        hub.broadcast(7, &new_message(118));
        assert_eq!((v1.outbound.len(), v2.outbound.len()), (3, 2));
        assert_eq!(hub.v2_members(7).len(), 1);
        assert!(
            hub.refill_plan(&v1, t0).is_none(),
            "v1 sockets have no mark"
        );
    }
}
