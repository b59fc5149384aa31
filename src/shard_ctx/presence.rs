//! The shard's live half of protocol v2 (docs/protocol.md §9.5, §9.7): presence
//! driven from socket joins and leaves and from other nodes' reports, and
//! held upload-progress values released at their slots.
//!
//! Across nodes: when what this node reports about a user changes (first /
//! last socket, first / last v2 socket), the report goes to the bridge,
//! which keeps it in Redis and publishes it on the conversation's channel.
//! Every node turns reports into cluster-wide transitions on its own, so
//! each node sends each event to its own sockets once. A conversation this
//! node starts holding waits for the bridge's read of the other nodes'
//! state (`presence_pending`) before its v2 sockets get `presence_state`.
//!
//! Owns the glue between the sans-IO [`Presence`](crate::presence::Presence)
//! table and the sockets: on a transition it frames one `presence` event for
//! the conversation's v2 sockets here (only when there is one, and only up
//! to `--presence-broadcast-max` users online), and builds a joining v2
//! socket's `presence_state`.
//!
//! Must never: build a frame for a conversation with no v2 socket on this
//! node, send a presence frame to a v1 socket, tell a socket about its own
//! arrival, or publish an offline report while the node shuts down (its
//! presence expires instead, so users who reconnect elsewhere never flap).

use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::ShardCtx;
use crate::bridge::presence::{self, Report, SnapshotEntry};
use crate::bridge::{RemoteEvent, RemoteKind};
use crate::frame::FrameBuf;
use crate::hub::{Audience, Peer};
use crate::presence::Change;
use crate::protocol::{self, Version};
use crate::store::{ConversationId, UserId};

impl ShardCtx {
    /// Presence events of a burst of joins and leaves (a reconnect storm)
    /// go out corked: the hub gathers frames per socket until the shard's
    /// other ready tasks had a turn, then each socket gets them in one
    /// `sendmsg` instead of one `send` per event. Recipients are still
    /// decided when each event is built.
    fn cork_for_presence(self: &Rc<Self>, conv: ConversationId) {
        if self.hub.is_corked() || !self.presence.borrow().watched(conv) {
            return;
        }
        self.hub.cork();
        let ctx = self.clone();
        monoio::spawn(async move {
            super::yield_now().await;
            ctx.metrics.gathered_writes(ctx.hub.uncork());
        });
    }

    /// An admitted socket joined: count it, announce a transition.
    pub(super) fn presence_join(self: &Rc<Self>, peer: &Rc<Peer>, username: &str) {
        let v2 = peer.version == Version::V2;
        let change =
            self.presence
                .borrow_mut()
                .join(peer.conversation_id, peer.user_id, username, v2);
        if change.node_edge {
            self.publish_report(peer.conversation_id, peer.user_id, username);
        }
        if change.transition {
            self.cork_for_presence(peer.conversation_id);
        }
        self.on_presence_change(peer.conversation_id, peer.user_id, username, true, change);
    }

    /// Tells the other nodes what this node now reports about `user`.
    fn publish_report(&self, conv: ConversationId, user: UserId, username: &str) {
        let Some(bridge) = &self.bridge else {
            return;
        };
        let report = Report::from_local(self.presence.borrow().local_report(conv, user));
        bridge.publish(RemoteEvent {
            conversation_id: conv,
            audience: Audience::ALL,
            payload: Bytes::from(presence::encode_report(report, user, username)),
            kind: RemoteKind::Presence { origin: 0 },
        });
    }

    /// Another node's report about a user.
    pub fn remote_presence(&self, conv: ConversationId, origin: u64, payload: &[u8]) {
        let Some((report, user, name)) = presence::decode_report(payload) else {
            return;
        };
        let change =
            self.presence
                .borrow_mut()
                .remote(conv, origin, user, name, report.as_remote());
        let online = report != Report::Offline;
        self.on_presence_change(conv, user, name, online, change);
    }

    /// The other nodes' state of a conversation. When this node just
    /// started holding it: applied without events (the sockets waiting for
    /// it get it in their `presence_state`), then they are released. Else
    /// (the bridge reconnected and read it again): users it brings back
    /// are announced as any transition.
    pub fn presence_snapshot(&self, conv: ConversationId, entries: Vec<SnapshotEntry>) {
        if self.presence_pending.borrow().contains_key(&conv) {
            {
                let mut p = self.presence.borrow_mut();
                for e in &entries {
                    p.remote(conv, e.node, e.user, &e.username, Some(e.v2));
                }
            }
            return self.presence_loaded(conv);
        }
        for e in &entries {
            let change =
                self.presence
                    .borrow_mut()
                    .remote(conv, e.node, e.user, &e.username, Some(e.v2));
            self.on_presence_change(conv, e.user, &e.username, true, change);
        }
    }

    /// Releases the sockets waiting for `conv`'s presence.
    pub(super) fn presence_loaded(&self, conv: ConversationId) {
        let waiters = self.presence_pending.borrow_mut().remove(&conv);
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
        }
    }

    /// A wait for `conv`'s presence when it is still being read.
    pub fn presence_wait(&self, conv: ConversationId) -> Option<oneshot::Receiver<()>> {
        let mut pending = self.presence_pending.borrow_mut();
        let waiters = pending.get_mut(&conv)?;
        let (tx, rx) = oneshot::channel();
        waiters.push(tx);
        Some(rx)
    }

    /// Another node's presence expired: the users only it reported go
    /// offline here.
    pub fn node_gone(&self, origin: u64) {
        let gone = self.presence.borrow_mut().node_gone(origin);
        for (conv, user, name, before) in gone {
            let change = Change {
                transition: true,
                node_edge: false,
                online: before - 1,
            };
            self.on_presence_change(conv, user, &name, false, change);
        }
    }

    /// A joined socket left.
    pub(super) fn presence_leave(self: &Rc<Self>, peer: &Rc<Peer>) {
        let (conv, user) = (peer.conversation_id, peer.user_id);
        let name = self.presence.borrow().username(conv, user);
        let v2 = peer.version == Version::V2;
        let change = self.presence.borrow_mut().leave(conv, user, v2);
        if self.shutting_down.get() {
            // Graceful restart: other nodes let this node's presence expire.
            return;
        }
        if let Some(name) = name {
            if change.node_edge {
                self.publish_report(conv, user, &name);
            }
            if change.transition {
                self.cork_for_presence(conv);
            }
            self.on_presence_change(conv, user, &name, false, change);
        }
    }

    /// Sends the `presence` event a change caused, when it is one and
    /// someone here watches the conversation with v2.
    fn on_presence_change(
        &self,
        conv: ConversationId,
        user: UserId,
        username: &str,
        online: bool,
        change: Change,
    ) {
        if !change.transition {
            return;
        }
        self.metrics.presence_transition();
        let max = self.config.presence_broadcast_max;
        let loading = self.presence_pending.borrow().contains_key(&conv);
        let watched = self.presence.borrow().watched(conv);
        if !change.announced(online, max, loading, watched) {
            return;
        }
        let mut f = FrameBuf::with_capacity(80 + username.len());
        protocol::encode_presence(f.payload(), user, username, online);
        let d = self
            .hub
            .broadcast_to(conv, Audience::v2_except_user(user), &f.finish_text());
        self.metrics.delivered(d.queued);
    }

    /// Releases held upload-progress values when their slot comes (`at`):
    /// one short task per slot, only while values are held.
    pub fn release_uploads_at(self: &Rc<Self>, at: std::time::Instant) {
        let ctx = self.clone();
        monoio::spawn(async move {
            monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
            let due = ctx.uploads.borrow_mut().due(std::time::Instant::now());
            for (conv, user, frame) in due {
                ctx.fan_out(conv, Audience::v2_except_user(user), frame, true);
            }
        });
    }

    /// A v2 socket's `presence_state`, as of now (taken when it joins, so
    /// the events held for it meanwhile are exactly the later changes).
    pub fn presence_state_frame(&self, conv: ConversationId) -> Bytes {
        let (online, count) = self.presence.borrow().state(conv);
        let mut f = FrameBuf::with_capacity(48 + 40 * online.len());
        protocol::encode_presence_state(f.payload(), &online, count);
        f.finish_text()
    }

    /// Everyone online in `conv` as this shard's tables know it (its own
    /// sockets and the other nodes' reports); `None` when the shard holds
    /// no socket of `conv` and so keeps no table for it.
    pub fn online_users(&self, conv: ConversationId) -> Option<Vec<(UserId, String)>> {
        if !self.hub().holds(conv) {
            return None;
        }
        let online = self.presence.borrow().online(conv);
        Some(
            online
                .into_iter()
                .map(|(u, n)| (u, n.to_string()))
                .collect(),
        )
    }
}
