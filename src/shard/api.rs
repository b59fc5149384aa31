//! The server API's calls as a shard carries them out (docs/protocol.md
//! §10): a publish fanned out like a socket's broadcast, a user's sockets
//! asked to close, the presence table of one conversation read.
//!
//! Owns: turning one [`ApiCall`] into hub and presence operations on this
//! shard, and the close codes a disconnect may use.
//!
//! Must never: await (a call is answered within the inbox turn that
//! carries it), or touch a conversation this shard does not own (a publish
//! and a presence read arrive at the owner; a disconnect walks only this
//! shard's own sockets).

use crate::close::CloseReason;
use crate::routing::shard_for;
use crate::shard_ctx::{ApiCall, ShardCtx};

/// Carries out `call` on this shard; a reply whose asker gave up is dropped.
pub(super) fn answer(ctx: &ShardCtx, call: ApiCall) {
    match call {
        ApiCall::Publish {
            conversation_id,
            audience,
            frame,
        } => {
            debug_assert_eq!(shard_for(conversation_id, ctx.shards()), ctx.id());
            ctx.fan_out(conversation_id, audience, frame, true);
        }
        ApiCall::Disconnect {
            user_id,
            conversation_id,
            reason,
            reply,
        } => {
            let _ = reply.send(ctx.disconnect_user(user_id, conversation_id, reason));
        }
        ApiCall::Presence {
            conversation_id,
            reply,
        } => {
            let _ = reply.send(ctx.online_users(conversation_id));
        }
    }
}

/// The close reason of a disconnect's code: 4001 or 4003 only.
pub(crate) fn disconnect_reason(code: u16) -> Option<CloseReason> {
    match code {
        4001 => Some(CloseReason::Unauthenticated),
        4003 => Some(CloseReason::Forbidden),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_4001_and_4003_disconnect() {
        assert_eq!(disconnect_reason(4001), Some(CloseReason::Unauthenticated));
        assert_eq!(disconnect_reason(4003), Some(CloseReason::Forbidden));
        for code in [0, 1000, 1001, 4000, 4002, 4004] {
            assert_eq!(disconnect_reason(code), None);
        }
    }
}
