//! The shard's live half of protocol v2 (PROTOCOL.md §6.5, §6.7): presence
//! driven from socket joins and leaves, and held upload-progress values
//! released at their slots.
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

use super::ShardCtx;
use crate::frame::FrameBuf;
use crate::hub::{Audience, Peer};
use crate::presence::Change;
use crate::protocol::{self, Version};
use crate::store::{ConversationId, UserId};

impl ShardCtx {
    /// An admitted socket joined: count it, announce a transition.
    pub(super) fn presence_join(&self, peer: &Rc<Peer>, username: &str) {
        let v2 = peer.version == Version::V2;
        let change =
            self.presence
                .borrow_mut()
                .join(peer.conversation_id, peer.user_id, username, v2);
        self.on_presence_change(peer.conversation_id, peer.user_id, username, true, change);
    }

    /// A joined socket left.
    pub(super) fn presence_leave(&self, peer: &Rc<Peer>) {
        let (conv, user) = (peer.conversation_id, peer.user_id);
        let name = self.presence.borrow().username(conv, user);
        let v2 = peer.version == Version::V2;
        let change = self.presence.borrow_mut().leave(conv, user, v2);
        if self.shutting_down.get() {
            // Graceful restart: other nodes let this node's presence expire.
            return;
        }
        if let Some(name) = name {
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
        let big = change.online.max(change.online + usize::from(!online))
            > self.config.presence_broadcast_max;
        if big || !self.presence.borrow().watched(conv) {
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
}
