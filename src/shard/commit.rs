//! Store outcomes back to the conversation.
//!
//! Owns the step from a committed (or failed) store batch to what the
//! sockets see: a committed message becomes one `new_message` frame, framed
//! once, broadcast to the conversation (and the other nodes); a failed one
//! becomes `Failed to send message` for its sender only. Either takes the
//! place the sender's socket reserved for it, so it leaves in the order of
//! the sender's frames.
//!
//! Must never: broadcast a message that did not commit, or reorder one
//! socket's outcomes (they come back in the order they were sent).

use crate::frame::FrameBuf;
use crate::hub::{Audience, Effect};
use crate::protocol::{self, ReplyError};
use crate::shard_ctx::ShardCtx;
use crate::store::InsertOutcome;

/// Turns a store batch's outcomes into broadcasts (committed) or error
/// replies to their senders (failed), in commit order.
pub(super) fn deliver_committed(ctx: &ShardCtx, outcomes: Vec<InsertOutcome>) {
    ctx.inserts_answered(outcomes.len());
    for outcome in outcomes {
        let req = &outcome.request;
        let sender = ctx.sender(req.origin.conn);
        let inflight = sender
            .as_ref()
            .and_then(|p| p.inflight.borrow_mut().pop_front());
        let committed = outcome.result.is_ok();
        let effect = match outcome.result {
            Ok(stored) => {
                let mut f = FrameBuf::with_capacity(160 + req.content.len());
                protocol::encode_new_message(
                    f.payload(),
                    stored.id,
                    &req.origin.sender_json,
                    &req.content,
                    stored.timestamp,
                );
                Effect::Broadcast {
                    frame: f.finish_text(),
                    audience: Audience::ALL,
                }
            }
            Err(e) => {
                tracing::warn!(user_id = req.sender_id, error = %e, "message not stored");
                Effect::Reply(ctx.error_frame(ReplyError::SendFailed))
            }
        };
        match (sender, inflight) {
            (Some(peer), Some(inflight)) => {
                ctx.fill_ordered(&peer, inflight.place, Some(effect));
                if committed {
                    ctx.metrics().broadcast_latency(inflight.received.elapsed());
                }
            }
            // The sender's socket is long gone: a committed message is
            // still everyone else's.
            _ => {
                if let Effect::Broadcast { frame, audience } = effect {
                    ctx.fan_out(req.conversation_id, audience, frame, true);
                }
            }
        }
    }
}
