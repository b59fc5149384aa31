//! Refills: after the bridge lost a subscription (a Redis restart, a
//! failover, a slot move, a probe that did not come back), the v2 sockets
//! of the affected conversations get what they missed from the store,
//! exactly once and in id order, without reconnecting. One implementation
//! for both bridge modes (one Redis, Redis Cluster).
//!
//! The bridge reports two things per conversation: a gap (`bridge_gap`:
//! nothing published after `good_at` is known to have arrived) as soon as
//! it notices, and the end of it (`bridge_refill`) once the subscription
//! is back. At the end, each v2 socket of the conversation is held (its
//! live events wait, as during its initial sync), the store is asked for
//! the messages after the socket's refill point (`delivery_log.rs` says
//! which, and why not simply after the highest id it saw), the ones it was
//! not sent go out in id order as replayed `new_message`s, then the events
//! held meanwhile minus those (`resume::after_replay`). A live copy that
//! arrives later is dropped by the hub. v1 sockets have no ids to go by:
//! they may miss what was published during the gap (counted).
//!
//! Must never: send a socket a message twice, refill a socket that is
//! still syncing (it is refilled after its sync instead), or block the
//! shard (the store read is a task of its own, bounded by the store
//! timeout).

use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ShardCtx;
use crate::delivery_log::{tick_of, ticks, Mark, Tick};
use crate::frame::FrameBuf;
use crate::hub::Peer;
use crate::ids::{ConversationId, MessageId};
use crate::protocol;
use crate::records::HistoryItem;
use crate::resume;
use crate::store::requests::V2Request;

impl ShardCtx {
    /// How far before the last good moment a refill looks (the longest a
    /// message takes from its id to its fan-out on another node: a store
    /// transaction and a bridge heartbeat), and how long the delivery logs
    /// keep entries (the lookback plus the time the bridge takes to notice
    /// a loss).
    pub(crate) fn refill_windows(&self) -> (Duration, Tick) {
        let heartbeat = self
            .config
            .bridge
            .as_ref()
            .map_or(Duration::from_secs(5), |b| b.heartbeat);
        let lookback = self.config.timeouts.store + heartbeat;
        (lookback, ticks(lookback + 3 * heartbeat))
    }

    /// The once-a-second part: forget what no refill can need any more.
    pub(super) fn prune_delivery_logs(&self) {
        self.hub.prune_logs(self.refill_windows().1);
    }

    fn refill_t0(&self, good_at: Instant) -> Tick {
        tick_of(good_at).saturating_sub(ticks(self.refill_windows().0))
    }

    /// The bridge may have lost `conv`'s events published after `good_at`.
    pub fn bridge_gap(&self, conv: ConversationId, good_at: Instant) {
        let v1 = self.hub.open_gap(conv, self.refill_t0(good_at));
        crate::metrics::refill::refill_v1_exposed(v1);
    }

    /// `conv`'s subscription is back: refill its v2 sockets.
    pub fn bridge_refill(self: &Rc<Self>, conv: ConversationId, good_at: Instant) {
        let t0 = self
            .hub
            .close_gap(conv)
            .unwrap_or_else(|| self.refill_t0(good_at));
        for peer in self.hub.v2_members(conv) {
            self.refill(peer, t0);
        }
    }

    /// Refills `peer` from `t0`, now or (while it syncs or refills) after.
    pub(crate) fn refill(self: &Rc<Self>, peer: Rc<Peer>, t0: Tick) {
        if peer.is_holding() {
            peer.with_mark(|m| m.defer(t0));
            return;
        }
        let Some((since, sent)) = self.hub.refill_plan(&peer, t0) else {
            return;
        };
        peer.hold();
        let ctx = self.clone();
        monoio::spawn(async move { ctx.run_refill(peer, since, sent).await });
    }

    /// A socket's sync or refill is done: run the refill deferred meanwhile.
    pub(crate) fn after_hold(self: &Rc<Self>, peer: &Rc<Peer>) {
        if let Some(t0) = peer.with_mark(Mark::take_deferred).flatten() {
            self.refill(peer.clone(), t0);
        }
    }

    async fn run_refill(
        self: Rc<Self>,
        peer: Rc<Peer>,
        since: MessageId,
        sent: HashSet<MessageId>,
    ) {
        let (conversation_id, user_id) = (peer.conversation_id, peer.user_id);
        let max = self.config.resume_max;
        let read = self.store.v2(|reply| V2Request::Replay {
            conversation_id,
            user_id,
            since,
            max,
            reply,
        });
        let items = match monoio::time::timeout(self.config.timeouts.store, read).await {
            Ok(Ok(replay)) => {
                if !replay.complete {
                    crate::metrics::refill::refill_short(true);
                }
                replay.items
            }
            outcome => {
                let timed_out = outcome.is_err();
                tracing::warn!(
                    user_id,
                    conversation_id,
                    timed_out,
                    "refill: the store did not answer"
                );
                crate::metrics::refill::refill_short(false);
                Vec::new()
            }
        };
        let held = peer.release();
        self.send_refill(&peer, &items, &sent, held);
        self.after_hold(&peer);
    }

    /// Sends `peer` the `items` it was not sent (in id order), then what
    /// was held meanwhile minus those.
    fn send_refill(
        &self,
        peer: &Peer,
        items: &[HistoryItem],
        sent: &HashSet<MessageId>,
        held: Vec<Bytes>,
    ) {
        let lookback = self.refill_windows().0;
        let now = self.hub.now();
        let mut out = Vec::new();
        let mut refilled = Vec::new();
        for item in items {
            let owed = peer.with_mark(|m| m.owes(item.timestamp, lookback)) == Some(true);
            if sent.contains(&item.id) || !owed {
                continue;
            }
            let mut f = FrameBuf::with_capacity(256 + item.content.len());
            protocol::encode_replayed(f.payload(), item);
            out.extend_from_slice(&f.finish_text());
            peer.with_mark(|m| m.sent_outside(item.id, now, false));
            refilled.push(item.id);
        }
        for frame in resume::after_replay(held, &refilled) {
            out.extend_from_slice(&frame);
        }
        if !out.is_empty() {
            peer.outbound.push_control(Bytes::from(out));
        }
        crate::metrics::refill::refilled(refilled.len());
    }
}
