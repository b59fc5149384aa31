//! What a socket's `call_signal` and `upload_progress` frames do
//! (docs/protocol.md §9.6, §9.7): relayed, never stored.
//!
//! Owns the recipient rules of a call signal — `Invalid recipient` for the
//! sender itself or a non-participant, `User not available` for a
//! participant with no v2 socket in the conversation on any node (decided
//! from presence; only when the target is offline everywhere does the store
//! tell the two apart) — its own rate limit, and the hand-off of upload
//! progress to the shard's throttle.
//!
//! Must never: re-serialise a signal's payload (the frame was built from
//! its text), answer `Rate limit exceeded` to upload progress, or send an
//! effect around the socket's sequencer (a held upload value aside, which
//! goes at its slot).

use bytes::Bytes;

use crate::hub::{Audience, Effect};
use crate::membership::Member;
use crate::protocol::{ReplyError, SignalKind};
use crate::store::UserId;
use crate::upload_throttle::Offer;

use super::Session;

impl Session {
    /// A valid call signal to `to`; `frame` is the relayed event.
    pub(super) fn call_signal(
        &mut self,
        member: &Member,
        to: UserId,
        kind: SignalKind,
        frame: Bytes,
    ) {
        let ctx = self.ctx.clone();
        let verdict = ctx.limits.check_signal(member.user_id);
        if !self.admitted(verdict, member.user_id, "signal") {
            ctx.metrics.signal_refused("rate_limited");
            return;
        }
        let conv = self.peer.conversation_id;
        if to == member.user_id {
            ctx.metrics.signal_refused("recipient");
            return self.reply(ReplyError::InvalidRecipient);
        }
        let (reachable, online) = {
            let presence = ctx.presence.borrow();
            (
                presence.reachable_v2(conv, to),
                presence.is_online(conv, to),
            )
        };
        if reachable {
            ctx.metrics.signal_relayed();
            if kind.tells_own_tabs() {
                let own = Audience {
                    except_conn: Some(self.peer.conn_id),
                    ..Audience::v2_of(member.user_id)
                };
                let effect = Effect::Broadcast {
                    frame: frame.clone(),
                    audience: own,
                };
                ctx.send_ordered(&self.peer, effect);
            }
            let effect = Effect::Broadcast {
                frame,
                audience: Audience::v2_of(to),
            };
            return ctx.send_ordered(&self.peer, effect);
        }
        if online {
            // A participant (admitted), but only on v1 sockets.
            ctx.metrics.signal_refused("unavailable");
            return self.reply(ReplyError::UserNotAvailable);
        }
        self.recipient_offline(to);
    }

    /// The target is offline everywhere: the store tells a participant
    /// (`User not available`) from anyone else (`Invalid recipient`).
    fn recipient_offline(&self, to: UserId) {
        let ctx = self.ctx.clone();
        let peer = self.peer.clone();
        let place = peer.sequencer.borrow_mut().reserve();
        monoio::spawn(async move {
            let timeout = ctx.config.timeouts.store;
            let lookup = ctx.store.connect_info(to, peer.conversation_id);
            let participant = match monoio::time::timeout(timeout, lookup).await {
                Ok(Ok(info)) => info.is_participant && info.user.is_some(),
                // Not online in any case: nobody to ring.
                _ => true,
            };
            let e = if participant {
                ctx.metrics.signal_refused("unavailable");
                ReplyError::UserNotAvailable
            } else {
                ctx.metrics.signal_refused("recipient");
                ReplyError::InvalidRecipient
            };
            ctx.metrics.error_sent(e);
            ctx.fill_ordered(&peer, place, Some(Effect::Reply(ctx.error_frame(e))));
        });
    }

    /// A valid upload-progress value: relayed to the other users' v2
    /// sockets now, or held for its slot.
    pub(super) fn upload_progress(
        &self,
        member: &Member,
        upload_id: Box<str>,
        percent: u8,
        frame: Bytes,
    ) {
        let ctx = &self.ctx;
        let conv = self.peer.conversation_id;
        let key = (conv, member.user_id, upload_id);
        let now = std::time::Instant::now();
        let offer = {
            let mut uploads = ctx.uploads.borrow_mut();
            if percent == 100 && uploads.holds(&key) {
                ctx.metrics.upload_progress_dropped();
            }
            uploads.offer(key, percent, (conv, member.user_id, frame), now)
        };
        match offer {
            Offer::Send((_, user, frame)) => {
                let effect = Effect::Broadcast {
                    frame,
                    audience: Audience::v2_except_user(user),
                };
                ctx.send_ordered(&self.peer, effect);
            }
            Offer::Held {
                at,
                new_slot,
                replaced,
            } => {
                if replaced {
                    ctx.metrics.upload_progress_dropped();
                }
                if new_slot {
                    ctx.release_uploads_at(at);
                }
            }
        }
    }
}
