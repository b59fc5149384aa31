//! Protocol v2 on the embedded store (`store/requests.rs` has the
//! semantics): where the worker hands a [`V2Request`].
//!
//! Owns how the worker's connection answers each request: its `V2Backend`
//! (the request is taken apart once, in `store/requests.rs`), reached
//! through [`answer`]. History, read positions and reactions are answered
//! at once; replays are handed back to the worker, which gathers the ones
//! waiting together and answers them per conversation with
//! [`answer_replays`], one group read each. The features live in
//! `sqlite/history.rs`, `sqlite/receipts.rs` and `sqlite/reactions.rs`; the
//! statement counter and the id lists they share in `sqlite/statements.rs`,
//! the "not migrated" rule in `sqlite/tables.rs`.
//!
//! Must never: answer a replay group with a number of statements that grows
//! with the group.

use rusqlite::Connection;

use super::history::ReplayRequest;
use super::statements::Statements;
use super::{history, idempotency, reactions, receipts};
use crate::store::requests::{
    Claim, ClaimKey, FinishKey, HistoryPage, HistoryQuery, MarkRead, React, ReadPosition, Replay,
    ReplayQuery, Reply, V2Backend, V2Request,
};
use crate::store::ConversationId;

/// Answers one v2 request on the worker's connection, except a replay,
/// which is handed back to be answered with the others waiting for the same
/// conversation ([`answer_replays`]).
pub(super) fn answer(conn: &Connection, request: V2Request) -> Option<ReplayRequest> {
    request.answer_with(conn)
}

/// The worker's connection answers at once; a replay comes back as the
/// [`ReplayRequest`] the worker gathers.
impl V2Backend for &Connection {
    type Done = Option<ReplayRequest>;

    fn history(self, q: HistoryQuery, reply: Reply<HistoryPage>) -> Self::Done {
        let page = history::history(self, q.conversation_id, q.user_id, q.before, q.limit);
        let _ = reply.send(page);
        None
    }

    fn replay(self, q: ReplayQuery, reply: Reply<Replay>) -> Self::Done {
        Some(ReplayRequest {
            conversation_id: q.conversation_id,
            user_id: q.user_id,
            since: q.since,
            max: q.max,
            reply,
        })
    }

    fn mark_read(self, q: MarkRead, reply: Reply<Option<ReadPosition>>) -> Self::Done {
        let moved = receipts::mark_read(self, q.conversation_id, q.user_id, q.message_id);
        let _ = reply.send(moved);
        None
    }

    fn read_state(
        self,
        conversation_id: ConversationId,
        reply: Reply<Vec<ReadPosition>>,
    ) -> Self::Done {
        let _ = reply.send(receipts::read_state(self, conversation_id));
        None
    }

    fn react(self, q: React, reply: Reply<bool>) -> Self::Done {
        let changed = reactions::react(
            self,
            q.conversation_id,
            q.user_id,
            q.message_id,
            &q.emoji,
            q.on,
        );
        let _ = reply.send(changed);
        None
    }

    fn claim_key(self, q: ClaimKey, reply: Reply<Claim>) -> Self::Done {
        let claim = idempotency::claim(self, &q.key, q.conversation_id, q.stale_after);
        let _ = reply.send(claim);
        None
    }

    fn finish_key(self, q: FinishKey, reply: Reply<()>) -> Self::Done {
        let _ = reply.send(idempotency::finish(self, &q.key, q.message_id));
        None
    }
}

/// Answers gathered replays: one group read per conversation (in the order
/// each conversation's first replay arrived), whatever the group's size.
pub(super) fn answer_replays(conn: &Connection, mut replays: Vec<ReplayRequest>) {
    while !replays.is_empty() {
        let conversation_id = replays[0].conversation_id;
        let (group, rest): (Vec<_>, Vec<_>) = replays
            .into_iter()
            .partition(|r| r.conversation_id == conversation_id);
        replays = rest;
        let statements = Statements::default();
        let answers = history::replay_group(conn, conversation_id, &group, &statements);
        crate::metrics::store_replay_read(group.len());
        #[cfg(test)]
        super::statements::testing_log::record(
            conn,
            conversation_id,
            group.len(),
            statements.count(),
        );
        match answers {
            Ok(answers) => {
                for (request, answer) in group.into_iter().zip(answers) {
                    let _ = request.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                for request in group {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::store::requests::V2Error;
    use crate::store::sqlite::lookup::delete_message;
    use crate::store::sqlite::testing::Fixture;
    use crate::store::MessageId;

    /// Answers `request` on `conn` like the worker (a replay as a group of one).
    fn ask<T>(
        conn: &Connection,
        request: impl FnOnce(oneshot::Sender<Result<T, V2Error>>) -> V2Request,
    ) -> Result<T, V2Error> {
        let (reply, mut rx) = oneshot::channel();
        if let Some(replay) = answer(conn, request(reply)) {
            answer_replays(conn, vec![replay]);
        }
        rx.try_recv().expect("answered")
    }

    #[test]
    fn without_the_chatgate_tables_writes_are_not_migrated_and_reads_are_empty() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let m = fx.write_messages(conv, a, 3);
        let conn = fx.admin.connection();
        reactions::react(conn, conv, a, m[0], "👍", true).unwrap();
        conn.execute_batch("DROP TABLE chatgate_readreceipt; DROP TABLE chatgate_reaction;")
            .unwrap();
        conn.execute(
            "UPDATE chatapp_conversationparticipant SET unread_count = 3",
            [],
        )
        .unwrap();

        let (conversation_id, message_id) = (conv, m[1]);
        let marked = ask(conn, |reply| V2Request::MarkRead {
            conversation_id,
            user_id: b,
            message_id,
            reply,
        });
        assert_eq!(marked, Err(V2Error::NotMigrated));
        assert_eq!(fx.unread(conv, b), 3, "the transaction was rolled back");
        let reacted = ask(conn, |reply| V2Request::React {
            conversation_id,
            user_id: b,
            message_id,
            emoji: "👍".into(),
            on: true,
            reply,
        });
        assert_eq!(reacted, Err(V2Error::NotMigrated));
        let state = ask(conn, |reply| V2Request::ReadState {
            conversation_id,
            reply,
        });
        assert_eq!(state, Ok(vec![]));
        let page = ask(conn, |reply| V2Request::History {
            conversation_id,
            user_id: b,
            before: None,
            limit: 10,
            reply,
        })
        .unwrap();
        assert_eq!(page.items.len(), 3);
        assert!(page.items.iter().all(|item| item.reactions.is_empty()));
        let replay = ask(conn, |reply| V2Request::Replay {
            conversation_id,
            user_id: b,
            since: m[0],
            max: 10,
            reply,
        })
        .unwrap();
        let replayed: Vec<MessageId> = replay.items.iter().map(|item| item.id).collect();
        assert_eq!((replayed, replay.complete), (m[1..].to_vec(), true));
        // v1 is untouched.
        assert_eq!(delete_message(conn, m[2], b), Ok(()));
    }

    #[test]
    fn v2_requests_reach_their_answers_through_the_dispatch() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let m = fx.write_messages(conv, a, 2);
        let conn = fx.admin.connection();
        let (conversation_id, message_id) = (conv, m[0]);
        let reacted = ask(conn, |reply| V2Request::React {
            conversation_id,
            user_id: a,
            message_id,
            emoji: "👍".into(),
            on: true,
            reply,
        });
        assert_eq!(reacted, Ok(true));
        let marked = ask(conn, |reply| V2Request::MarkRead {
            conversation_id,
            user_id: a,
            message_id,
            reply,
        });
        assert_eq!(marked.unwrap().unwrap().message_id, m[0]);
        let state = ask(conn, |reply| V2Request::ReadState {
            conversation_id,
            reply,
        });
        assert_eq!(state.unwrap().len(), 1);
        let page = ask(conn, |reply| V2Request::History {
            conversation_id,
            user_id: a,
            before: Some(m[1]),
            limit: 1,
            reply,
        })
        .unwrap();
        assert_eq!(page.items[0].reactions[0].user_ids, [a]);
        let replay = ask(conn, |reply| V2Request::Replay {
            conversation_id,
            user_id: a,
            since: 0,
            max: 1,
            reply,
        })
        .unwrap();
        assert_eq!((replay.items[0].id, replay.complete), (m[1], false));
    }
}
