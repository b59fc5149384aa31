//! Admission: who is on a socket, and may they be.
//!
//! Owns the checks between the 101 answer and the first frame: the token
//! (4001), the store's word on the user and the conversation (4001 for an
//! unknown or inactive user, 4003 for a non-participant, 1011 when the
//! store does not answer), the per-user socket limit (1008), and the token's
//! expiry deadline.
//!
//! Must never: log the token, or admit without a positive store answer (a
//! cached one counts).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::time::Instant;

use crate::auth::VerifiedToken;
use crate::close::CloseReason;
use crate::handshake::Upgrade;
use crate::limits::ConnectionPermit;
use crate::membership::Member;
use crate::shard_ctx::ShardCtx;

/// What an admitted socket holds for its whole life.
pub(super) struct Granted {
    pub member: Rc<Member>,
    /// Counts against the user's socket limit until dropped.
    pub permit: ConnectionPermit,
    /// When the token expires (closed with 4001 then, if enforced).
    pub expires_at: Option<Instant>,
}

/// The result of checking the token, the membership and the limits.
pub(super) enum Admission {
    Accept(Granted),
    Refuse(CloseReason),
}

/// Checks the token, then asks the store who the user is and whether they
/// belong to the conversation.
pub(super) async fn admit(ctx: &ShardCtx, upgrade: &Upgrade, peer: SocketAddr) -> Admission {
    let token = match ctx.verifier().verify(upgrade.token.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(%peer, reason = e.label(), "authentication failed");
            return Admission::Refuse(CloseReason::Unauthenticated);
        }
    };
    let now = std::time::Instant::now();
    let member = match ctx
        .membership()
        .get(token.user_id, upgrade.conversation_id, now)
    {
        Some(m) => m,
        None => match lookup(ctx, &token, upgrade, peer, now).await {
            Ok(m) => m,
            Err(reason) => return Admission::Refuse(reason),
        },
    };
    let Some(permit) = ctx.limits().try_acquire_connection(member.user_id) else {
        tracing::warn!(%peer, user_id = member.user_id, "too many sockets for this user");
        return Admission::Refuse(CloseReason::Policy);
    };
    Admission::Accept(Granted {
        member,
        permit,
        expires_at: expiry(ctx, token.exp),
    })
}

/// When a token that expires at `exp` (seconds since the epoch) stops being
/// valid, as a monoio instant; `None` when expiry is not enforced.
fn expiry(ctx: &ShardCtx, exp: u64) -> Option<Instant> {
    if !ctx.config().enforce_token_expiry {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let left = Duration::from_secs(exp.saturating_sub(now)) + ctx.config().jwt.leeway;
    Some(Instant::now() + left)
}

/// Asks the store who the user is and whether they belong; caches a yes.
async fn lookup(
    ctx: &ShardCtx,
    token: &VerifiedToken,
    upgrade: &Upgrade,
    peer: SocketAddr,
    now: std::time::Instant,
) -> Result<Rc<Member>, CloseReason> {
    let info = match ctx
        .store()
        .connect_info(token.user_id, upgrade.conversation_id)
        .await
    {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(%peer, user_id = token.user_id, error = %e, "membership lookup failed");
            return Err(CloseReason::Internal);
        }
    };
    match info.user {
        Some(u) if u.is_active && info.is_participant => {
            let m = Member::from_profile(&u);
            ctx.membership().insert(upgrade.conversation_id, &m, now);
            Ok(m)
        }
        Some(u) if u.is_active => {
            tracing::info!(%peer, user_id = u.id, conversation = upgrade.conversation_id, "not a participant");
            Err(CloseReason::Forbidden)
        }
        _ => {
            tracing::info!(%peer, user_id = token.user_id, "unknown or inactive user");
            Err(CloseReason::Unauthenticated)
        }
    }
}
