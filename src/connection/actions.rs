//! Carries out what a socket's text frames cause.
//!
//! Owns the driving of the session core's message rules
//! (`session/dispatch.rs`): decode with the shard's decoder, ask the core
//! with `now`, then perform each [`Step`] it returns — an error reply or a
//! broadcast in the socket's sequencer, a chat message to the store (its
//! `new_message` leaves once committed), a delete or a v2 request in the
//! background (`connection/stored.rs`), the 1008 close of sustained abuse,
//! the metrics. Every effect takes its place in the socket's sequencer, so
//! recipients get them in the order the socket sent the frames
//! (docs/protocol.md §3, §9.9).
//!
//! Must never: decide a rule itself (the core does), await (a message the
//! full store queue cannot take is handed back and parked by the session),
//! or send an effect around the sequencer.

use crate::close::CloseReason;
use crate::frame::FrameBuf;
use crate::hub::{Effect, Inflight};
use crate::membership::Member;
use crate::metrics::ShardMetrics;
use crate::protocol::{self, ReplyError};
use crate::session::{self, Metric, Step, Who};
use crate::store::{InsertRequest, Origin, TryInsertError};

use super::{Blocked, Session};

impl Session {
    /// Acts on one text message; `Err` hands back a chat message the store
    /// queue had no room for.
    pub(super) fn on_text(&mut self, payload: &[u8]) -> Result<(), InsertRequest> {
        let Some(member) = self.member.clone() else {
            return Ok(()); // not admitted: input is ignored while closing
        };
        if !self.life.takes_messages() {
            return Ok(());
        }
        let action = self.ctx.decode(payload, self.peer.version, &member);
        let ctx = self.ctx.clone();
        let who = Who {
            member: &member,
            conversation_id: self.peer.conversation_id,
            conn_id: self.peer.conn_id,
        };
        let mut blocked = None;
        let now = std::time::Instant::now();
        session::decide(action, &who, now, &ctx.rules(), &mut |step| {
            if let Err(request) = self.perform(&member, step) {
                blocked = Some(request);
            }
        });
        blocked.map_or(Ok(()), Err)
    }

    /// Carries out one step of the core; `Err` hands back a chat message
    /// the store queue had no room for.
    fn perform(&mut self, member: &Member, step: Step) -> Result<(), InsertRequest> {
        match step {
            Step::Metric(metric) => count(self.ctx.metrics(), metric),
            Step::Error(e) => self.reply(e),
            Step::Broadcast { frame, audience } => self
                .ctx
                .send_ordered(&self.peer, Effect::Broadcast { frame, audience }),
            Step::CloseForAbuse { kind } => {
                tracing::warn!(peer = %self.addr, user_id = member.user_id, kind, "rate-limit abuse, closing");
                self.life.queue_close();
                self.ctx
                    .send_ordered(&self.peer, Effect::Close(CloseReason::Policy));
            }
            Step::Store(content) => return self.store(member, content),
            Step::Delete(id) => self.delete(id),
            Step::History { before, limit } => self.history(before, limit),
            Step::MarkRead(id) => self.mark_read(id),
            Step::React {
                message_id,
                emoji,
                on,
            } => self.react(member, message_id, emoji, on),
            Step::AskRecipient(to) => self.recipient_offline(to),
            Step::ReleaseUploadsAt(at) => self.ctx.release_uploads_at(at),
        }
        Ok(())
    }

    /// Hands a message to the store; its outcome comes back through the
    /// shard inbox and takes the place reserved here. `Err` hands it back
    /// when the store queue is full.
    fn store(&mut self, member: &Member, content: String) -> Result<(), InsertRequest> {
        let req = InsertRequest {
            conversation_id: self.peer.conversation_id,
            sender_id: member.user_id,
            content,
            origin: Origin {
                shard: self.ctx.id(),
                conn: self.peer.conn_id,
                sender_json: member.sender_json.clone(),
                reply: None,
            },
        };
        let ctx = &self.ctx;
        ctx.insert_sent();
        let place = self.peer.sequencer.borrow_mut().reserve();
        self.peer.inflight.borrow_mut().push_back(Inflight {
            received: std::time::Instant::now(),
            place,
        });
        match ctx.store().try_insert(req) {
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
    pub(super) async fn unblock(&mut self, blocked: Blocked) {
        let ctx = &self.ctx;
        let wait = ctx.store().insert(blocked.request);
        if !matches!(
            monoio::time::timeout(ctx.config().timeouts.store, wait).await,
            Ok(Ok(()))
        ) {
            self.store_failed();
        }
        self.process_input(&blocked.rest);
    }

    /// The message just counted as pending never reached the store: its
    /// place becomes `Failed to send message`.
    fn store_failed(&mut self) {
        self.abandon_last_insert(Some(ReplyError::SendFailed));
    }

    /// Forgets the newest pending insert (it never reached the store); its
    /// place gets `reply`, or nothing.
    pub(super) fn abandon_last_insert(&mut self, reply: Option<ReplyError>) {
        let ctx = &self.ctx;
        ctx.insert_abandoned();
        let Some(inflight) = self.peer.inflight.borrow_mut().pop_back() else {
            return;
        };
        let effect = reply.map(|e| {
            ctx.metrics().error_sent(e);
            Effect::Reply(ctx.error_frame(e))
        });
        ctx.fill_ordered(&self.peer, inflight.place, effect);
    }

    /// Deletes in the background; the answer goes to this socket only, in
    /// its place.
    fn delete(&self, message_id: i64) {
        let ctx = self.ctx.clone();
        let peer = self.peer.clone();
        let place = peer.sequencer.borrow_mut().reserve();
        monoio::spawn(async move {
            let timeout = ctx.config().timeouts.store;
            let res =
                monoio::time::timeout(timeout, ctx.store().delete(message_id, peer.user_id)).await;
            let frame = match res {
                Ok(Ok(())) => {
                    let mut f = FrameBuf::with_capacity(48);
                    protocol::encode_message_deleted(f.payload(), message_id);
                    f.finish_text()
                }
                _ => ctx.error_frame(ReplyError::DeleteFailed),
            };
            ctx.fill_ordered(&peer, place, Some(Effect::Reply(frame)));
        });
    }

    /// An error reply to this socket, in its place.
    pub(super) fn reply(&self, e: ReplyError) {
        self.ctx.metrics().error_sent(e);
        self.ctx
            .send_ordered(&self.peer, Effect::Reply(self.ctx.error_frame(e)));
    }
}

/// Counts a metric event of the core.
fn count(metrics: &ShardMetrics, metric: Metric) {
    match metric {
        Metric::Received(kind) => metrics.message_received(kind),
        Metric::RateLimited(kind) => metrics.rate_limited(kind),
        Metric::TypingCoalesced => metrics.typing_coalesced(),
        Metric::SignalRelayed => metrics.signal_relayed(),
        Metric::SignalRefused(reason) => metrics.signal_refused(reason),
        Metric::UploadDropped => metrics.upload_progress_dropped(),
    }
}
