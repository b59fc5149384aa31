//! Protocol v2 on the Postgres store (see `store/requests.rs` for the
//! semantics): the entry point for the requests answered one by one.
//!
//! Owns how the pool answers each request: its `V2Backend` (the request
//! is taken apart once, in `store/requests.rs`), reached through
//! [`answer`]. History, mark read, read state and react are one task each;
//! replays are gathered by the dispatcher and answered per conversation in
//! `postgres/replay.rs`. The features live in `postgres/history.rs`,
//! `postgres/replay.rs`, `postgres/receipts.rs` and `postgres/reactions.rs`;
//! what their items are made of in `postgres/rows.rs`, whether the
//! `chatgate_` tables exist in `postgres/tables.rs`.
//!
//! Must never: hold a reply past the store timeout (every task carries its
//! deadline); fail a read because the v2 tables are missing (reads then
//! answer without reactions or positions).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;

use super::replay::ReplayWaiter;
use super::tables::store_error;
use super::Shared;
use crate::store::requests::{
    Claim, ClaimKey, FinishKey, HistoryPage, HistoryQuery, MarkRead, React, ReadPosition, Replay,
    ReplayQuery, Reply, V2Backend, V2Request,
};
use crate::store::ConversationId;

/// One request's answer, awaited by the task that waited for its turn on
/// the side runtime. Its deadline starts when it is first polled.
pub(super) type Answering = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Answers one v2 request (awaited on the side runtime). Replays normally
/// come gathered through `replay::answer_group`; one arriving here is a
/// group of one.
pub(super) fn answer(shared: Arc<Shared>, request: V2Request) -> Answering {
    request.answer_with(shared)
}

/// The store's pool answers on the side runtime, each request within its
/// deadline.
impl V2Backend for Arc<Shared> {
    type Done = Answering;

    fn history(self, q: HistoryQuery, reply: Reply<HistoryPage>) -> Answering {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let (conversation_id, user_id) = (q.conversation_id, q.user_id);
            let page =
                super::history::page(&self, conversation_id, user_id, q.before, q.limit, deadline);
            let _ = reply.send(page.await.map_err(store_error));
        })
    }

    fn replay(self, q: ReplayQuery, reply: Reply<Replay>) -> Answering {
        Box::pin(async move {
            let waiter = ReplayWaiter {
                user_id: q.user_id,
                since: q.since,
                max: q.max,
                reply,
            };
            super::replay::answer_group(self, q.conversation_id, vec![waiter]).await;
        })
    }

    fn mark_read(self, q: MarkRead, reply: Reply<Option<ReadPosition>>) -> Answering {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let (conversation_id, user_id) = (q.conversation_id, q.user_id);
            let moved =
                super::receipts::mark_read(&self, conversation_id, user_id, q.message_id, deadline);
            let _ = reply.send(moved.await);
        })
    }

    fn read_state(
        self,
        conversation_id: ConversationId,
        reply: Reply<Vec<ReadPosition>>,
    ) -> Answering {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let state = super::receipts::read_state(&self, conversation_id, deadline);
            let _ = reply.send(state.await.map_err(store_error));
        })
    }

    fn react(self, q: React, reply: Reply<bool>) -> Answering {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let changed = super::reactions::react(
                &self,
                q.conversation_id,
                q.user_id,
                q.message_id,
                &q.emoji,
                q.on,
                deadline,
            );
            let _ = reply.send(changed.await);
        })
    }

    fn claim_key(self, q: ClaimKey, reply: Reply<Claim>) -> Answering {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let claim = super::idempotency::claim(
                &self,
                &q.key,
                q.conversation_id,
                q.stale_after,
                deadline,
            );
            let _ = reply.send(claim.await);
        })
    }

    fn finish_key(self, q: FinishKey, reply: Reply<()>) -> Answering {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let done = super::idempotency::finish(&self, &q.key, q.message_id, deadline);
            let _ = reply.send(done.await);
        })
    }
}
