//! Store outcomes back to the conversation.
//!
//! Owns the step from a committed (or failed) store batch to what the
//! sockets see: a committed message becomes one `new_message` frame, framed
//! once, broadcast to the conversation (and the other nodes); a failed one
//! becomes `Failed to send message` for its sender only. Either takes the
//! place the sender's socket reserved for it, so it leaves in the order of
//! the sender's frames. A server API message (docs/protocol.md §10) has no
//! socket: it is broadcast to everyone and its outcome answers the API.
//!
//! Must never: broadcast a message that did not commit, reorder one
//! socket's outcomes (they come back in the order they were sent), or log a
//! failed message above debug (the store logs its failures, an outage
//! once: a full disk must not write a line per message).

use crate::frame::{self, FrameBuf};
use crate::hub::{Audience, Effect};
use crate::protocol::{self, ReplyError};
use crate::shard_ctx::ShardCtx;
use crate::store::{InsertOutcome, InsertReply, InsertRequest, StoredMessage};
use bytes::Bytes;

/// Turns a store batch's outcomes into broadcasts (committed) or error
/// replies to their senders (failed), in commit order.
pub(super) fn deliver_committed(ctx: &ShardCtx, outcomes: Vec<InsertOutcome>) {
    let from_api = outcomes.iter().filter(|o| o.request.origin.reply.is_some());
    ctx.inserts_answered(outcomes.len() - from_api.count());
    for mut outcome in outcomes {
        if let Some(reply) = outcome.request.origin.reply.take() {
            deliver_api(ctx, outcome, reply);
            continue;
        }
        let req = &outcome.request;
        let sender = ctx.sender(req.origin.conn);
        let inflight = sender
            .as_ref()
            .and_then(|p| p.inflight.borrow_mut().pop_front());
        let committed = outcome.result.is_ok();
        let effect = match outcome.result {
            Ok(stored) => Effect::Broadcast {
                frame: new_message_frame(req, &stored),
                audience: Audience::ALL,
            },
            Err(e) => {
                // The store logs its failures (an outage once); per message
                // only at debug, or a full disk floods the log.
                tracing::debug!(user_id = req.sender_id, error = %e, "message not stored");
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

/// A server API message: committed, it is broadcast to everyone (there is
/// no sender socket whose order to keep) and its message object answers
/// the API; failed, the API gets the error.
fn deliver_api(ctx: &ShardCtx, outcome: InsertOutcome, reply: InsertReply) {
    let req = &outcome.request;
    let answer = outcome.result.map(|stored| {
        let frame = new_message_frame(req, &stored);
        let message = protocol::new_message_object(&frame::payload_of(&frame));
        ctx.fan_out(req.conversation_id, Audience::ALL, frame, true);
        message
    });
    if let Err(e) = &answer {
        tracing::debug!(user_id = req.sender_id, error = %e, "server API message not stored");
    }
    let _ = reply.send(answer);
}

/// The `new_message` of a committed insert, framed once.
fn new_message_frame(req: &InsertRequest, stored: &StoredMessage) -> Bytes {
    let mut f = FrameBuf::with_capacity(160 + req.content.len());
    protocol::encode_new_message(
        f.payload(),
        stored.id,
        &req.origin.sender_json,
        &req.content,
        stored.timestamp,
    );
    f.finish_text()
}
