//! Protocol v2 on the Postgres store (see `store/requests.rs` for the semantics):
//! the entry point for the requests answered one by one.
//!
//! Owns [`answer`] (history, mark read, read state, react: one task each;
//! replays are gathered by the dispatcher and answered per conversation in
//! `postgres/replay.rs`). The features live in `postgres/history.rs`,
//! `postgres/replay.rs`, `postgres/receipts.rs` and `postgres/reactions.rs`;
//! what their items are made of in `postgres/rows.rs`, whether the
//! `chatgate_` tables exist in `postgres/tables.rs`.
//!
//! Must never: hold a reply past the store timeout (every task carries its
//! deadline); fail a read because the v2 tables are missing (reads then
//! answer without reactions or positions).

use std::sync::Arc;

use tokio::time::Instant;

use super::tables::store_error;
use super::Shared;
use crate::store::requests::V2Request;

/// Answers one v2 request (spawned on the side runtime). Replays normally
/// come gathered through `replay::answer_group`; one arriving here is a
/// group of one.
pub(super) async fn answer(shared: Arc<Shared>, request: V2Request) {
    let deadline = Instant::now() + shared.timeout;
    match request {
        V2Request::History {
            conversation_id,
            user_id,
            before,
            limit,
            reply,
        } => {
            let page =
                super::history::page(&shared, conversation_id, user_id, before, limit, deadline);
            let _ = reply.send(page.await.map_err(store_error));
        }
        V2Request::Replay {
            conversation_id,
            user_id,
            since,
            max,
            reply,
        } => {
            let waiter = super::replay::ReplayWaiter {
                user_id,
                since,
                max,
                reply,
            };
            super::replay::answer_group(shared, conversation_id, vec![waiter]).await;
        }
        V2Request::MarkRead {
            conversation_id,
            user_id,
            message_id,
            reply,
        } => {
            let moved =
                super::receipts::mark_read(&shared, conversation_id, user_id, message_id, deadline);
            let _ = reply.send(moved.await);
        }
        V2Request::ReadState {
            conversation_id,
            reply,
        } => {
            let state = super::receipts::read_state(&shared, conversation_id, deadline);
            let _ = reply.send(state.await.map_err(store_error));
        }
        V2Request::React {
            conversation_id,
            user_id,
            message_id,
            emoji,
            on,
            reply,
        } => {
            let changed = super::reactions::react(
                &shared,
                conversation_id,
                user_id,
                message_id,
                &emoji,
                on,
                deadline,
            );
            let _ = reply.send(changed.await);
        }
    }
}
