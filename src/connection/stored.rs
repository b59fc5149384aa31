//! The store-backed requests of a socket: history, mark_read, react
//! (docs/protocol.md §9.2–§9.4), and the participant lookup behind a call
//! signal to a user who is offline everywhere (§9.6).
//!
//! Owns the step from a request the session core let through to the store
//! and back: each takes a place in the socket's sequencer when it arrives,
//! asks the store in the background, and fills its place with what the
//! outcome means: a `history` reply to this socket, a `read_receipt` or
//! `reaction` event for every v2 socket of the conversation (on every
//! node), nothing when nothing changed, or the documented error.
//!
//! Must never: await on the session's path (requests run as their own
//! tasks), decide a rule the core owns (limits, ids that name no message,
//! the recipient rule), or send a v2 event to a v1 socket (the audience is
//! v2-only).

use std::rc::Rc;

use monoio::time::Instant;

use crate::frame::FrameBuf;
use crate::hub::{Audience, Effect, Peer};
use crate::membership::Member;
use crate::protocol::{self, ReplyError};
use crate::read_marks::{Next, Offered, Write};
use crate::sequencer::Ticket;
use crate::session::signal;
use crate::shard_ctx::ShardCtx;
use crate::store::requests::{ReadPosition, V2Error, V2Request};
use crate::store::{MessageId, StoreError, UserId};

use super::Session;

impl Session {
    /// `history`: a page of this conversation for this socket only.
    pub(super) fn history(&self, before: Option<MessageId>, limit: u32) {
        let (conversation_id, user_id) = (self.peer.conversation_id, self.peer.user_id);
        self.in_background(ReplyError::HistoryFailed, move |ctx| async move {
            let page = ctx
                .store()
                .v2(|reply| V2Request::History {
                    conversation_id,
                    user_id,
                    before,
                    limit,
                    reply,
                })
                .await;
            match page {
                Ok(page) => {
                    let mut f = FrameBuf::with_capacity(64 + 200 * page.items.len());
                    protocol::encode_history_reply(f.payload(), &page.items, page.has_more);
                    Some(Effect::Reply(f.finish_text()))
                }
                Err(e) => {
                    tracing::warn!(user_id, error = %e, "history not read");
                    Some(reply(&ctx, ReplyError::HistoryFailed))
                }
            }
        });
    }

    /// `mark_read`: the user's read position and unread count, written at
    /// most once per `read_marks::WRITE_INTERVAL` (highest value wins); a
    /// move is broadcast as `read_receipt`.
    pub(super) fn mark_read(&self, message_id: MessageId) {
        let place = self.peer.sequencer.borrow_mut().reserve();
        match self.peer.read_marks(|m| m.offer(message_id, place)) {
            Offered::StartWriter => {
                monoio::spawn(write_read_marks(self.ctx.clone(), self.peer.clone()));
            }
            Offered::Queued => {}
            Offered::Merged(place) => {
                self.ctx.metrics().mark_read_coalesced();
                self.ctx.fill_ordered(&self.peer, place, None);
            }
        }
    }

    /// `react`: adds or removes the user's reaction; a change is broadcast
    /// as `reaction`.
    pub(super) fn react(&self, member: &Member, message_id: MessageId, emoji: String, on: bool) {
        let (conversation_id, user_id) = (self.peer.conversation_id, self.peer.user_id);
        let username = member.username.clone();
        self.in_background(ReplyError::ReactFailed, move |ctx| async move {
            let changed = ctx
                .store()
                .v2(|reply| V2Request::React {
                    conversation_id,
                    user_id,
                    message_id,
                    emoji: emoji.clone(),
                    on,
                    reply,
                })
                .await;
            match changed {
                Ok(true) => {
                    let mut f = FrameBuf::with_capacity(160);
                    protocol::encode_reaction(
                        f.payload(),
                        message_id,
                        user_id,
                        &username,
                        &emoji,
                        on,
                    );
                    Some(Effect::Broadcast {
                        frame: f.finish_text(),
                        audience: Audience::V2,
                    })
                }
                Ok(false) => None,
                Err(V2Error::TooManyReactions) => Some(reply(&ctx, ReplyError::TooManyReactions)),
                Err(e) => {
                    log_failure(user_id, "react", &e);
                    Some(reply(&ctx, ReplyError::ReactFailed))
                }
            }
        });
    }

    /// A call signal's recipient is offline everywhere: the store tells a
    /// participant (`User not available`) from anyone else (`Invalid
    /// recipient`), in the signal's place.
    pub(super) fn recipient_offline(&self, to: UserId) {
        let ctx = self.ctx.clone();
        let peer = self.peer.clone();
        let place = peer.sequencer.borrow_mut().reserve();
        monoio::spawn(async move {
            let timeout = ctx.config().timeouts.store;
            let lookup = ctx.store().connect_info(to, peer.conversation_id);
            let participant = match monoio::time::timeout(timeout, lookup).await {
                Ok(Ok(info)) => info.is_participant && info.user.is_some(),
                // Not online in any case: nobody to ring.
                _ => true,
            };
            let refusal = signal::offline(participant);
            ctx.metrics().signal_refused(refusal.reason);
            ctx.fill_ordered(&peer, place, Some(reply(&ctx, refusal.error)));
        });
    }

    /// Runs a store request as its own task; what it decides takes the
    /// place reserved now. Past the store timeout the place gets `failed`.
    fn in_background<F, Fut>(&self, failed: ReplyError, work: F)
    where
        F: FnOnce(Rc<ShardCtx>) -> Fut + 'static,
        Fut: std::future::Future<Output = Option<Effect>> + 'static,
    {
        let ctx = self.ctx.clone();
        let peer = self.peer.clone();
        let place = peer.sequencer.borrow_mut().reserve();
        monoio::spawn(run_in_place(ctx, peer, place, failed, work));
    }
}

async fn run_in_place<F, Fut>(
    ctx: Rc<ShardCtx>,
    peer: Rc<Peer>,
    place: Ticket,
    failed: ReplyError,
    work: F,
) where
    F: FnOnce(Rc<ShardCtx>) -> Fut,
    Fut: std::future::Future<Output = Option<Effect>>,
{
    let timeout = ctx.config().timeouts.store;
    let effect = match monoio::time::timeout(timeout, work(ctx.clone())).await {
        Ok(effect) => effect,
        Err(_) => Some(reply(&ctx, failed)),
    };
    ctx.fill_ordered(&peer, place, effect);
}

/// A socket's read-position writer: runs while values are held, one store
/// write per slot.
async fn write_read_marks(ctx: Rc<ShardCtx>, peer: Rc<Peer>) {
    loop {
        let next = peer.read_marks(|m| m.next(std::time::Instant::now()));
        match next {
            Next::Idle => return,
            Next::WaitUntil(at) => monoio::time::sleep_until(Instant::from_std(at)).await,
            Next::Write(write) => write_marks(&ctx, &peer, write).await,
        }
    }
}

/// Writes the highest held value; when it names no message, its frame gets
/// the error and the runner-up is written in its own place.
async fn write_marks(ctx: &Rc<ShardCtx>, peer: &Peer, write: Write<Ticket>) {
    let Write { top, runner_up } = write;
    let outcome = mark_read_once(ctx, peer, top.message_id).await;
    match (outcome, runner_up) {
        (Err(V2Error::NoSuchMessage), Some(second)) => {
            ctx.fill_ordered(
                peer,
                top.place,
                Some(reply(ctx, ReplyError::MarkReadFailed)),
            );
            let outcome = mark_read_once(ctx, peer, second.message_id).await;
            ctx.fill_ordered(peer, second.place, read_effect(ctx, peer, outcome));
        }
        (outcome, runner_up) => {
            ctx.fill_ordered(peer, top.place, read_effect(ctx, peer, outcome));
            if let Some(second) = runner_up {
                ctx.fill_ordered(peer, second.place, None);
            }
        }
    }
}

type MarkOutcome = Result<Option<ReadPosition>, V2Error>;

/// One `MarkRead` at the store, bounded by the store timeout.
async fn mark_read_once(ctx: &ShardCtx, peer: &Peer, message_id: MessageId) -> MarkOutcome {
    let (conversation_id, user_id) = (peer.conversation_id, peer.user_id);
    let request = ctx.store().v2(|reply| V2Request::MarkRead {
        conversation_id,
        user_id,
        message_id,
        reply,
    });
    monoio::time::timeout(ctx.config().timeouts.store, request)
        .await
        .unwrap_or(Err(V2Error::Store(StoreError::Timeout)))
}

/// What a `MarkRead` outcome sends: a `read_receipt` for a move, nothing
/// for none, else the error to the socket.
fn read_effect(ctx: &ShardCtx, peer: &Peer, outcome: MarkOutcome) -> Option<Effect> {
    match outcome {
        Ok(Some(position)) => {
            let mut f = FrameBuf::with_capacity(160);
            protocol::encode_read_receipt(f.payload(), &position);
            Some(Effect::Broadcast {
                frame: f.finish_text(),
                audience: Audience::V2,
            })
        }
        Ok(None) => None,
        Err(e) => {
            log_failure(peer.user_id, "mark_read", &e);
            Some(reply(ctx, ReplyError::MarkReadFailed))
        }
    }
}

fn reply(ctx: &ShardCtx, e: ReplyError) -> Effect {
    ctx.metrics().error_sent(e);
    Effect::Reply(ctx.error_frame(e))
}

fn log_failure(user_id: i64, what: &'static str, e: &V2Error) {
    match e {
        V2Error::NoSuchMessage => {}
        _ => tracing::warn!(user_id, request = what, error = %e, "v2 request failed"),
    }
}
