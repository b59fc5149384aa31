//! Protocol v2 on the embedded store (`store/v2.rs` has the semantics):
//! where the worker hands a [`V2Request`] and what every v2 part shares.
//!
//! Owns the dispatch ([`answer`]: history, read positions and reactions are
//! answered at once; replays are handed back to the worker, which gathers
//! the ones waiting together and answers them per conversation with
//! [`answer_replays`]: one group read each), the "not migrated" rule (a
//! statement that finds a `chatgate_` table missing becomes
//! [`V2Error::NotMigrated`], or no positions and no reactions for reads,
//! and one warning per process), and the statement counter the tests use
//! to check what a request costs.
//!
//! Must never: answer a replay group with a number of statements that grows
//! with the group; fail a v1 request because the v2 tables are missing.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{CachedStatement, Connection};
use tokio::sync::oneshot;

use super::{db_err, history, reactions, receipts};
use crate::store::v2::{Replay, V2Error, V2Request};
use crate::store::{ConversationId, MessageId, UserId};

/// A replay waiting for its conversation's group read.
#[derive(Debug)]
pub(super) struct ReplayRequest {
    pub(super) conversation_id: ConversationId,
    pub(super) user_id: UserId,
    pub(super) since: MessageId,
    pub(super) max: u32,
    pub(super) reply: oneshot::Sender<Result<Replay, V2Error>>,
}

/// Answers one v2 request on the worker's connection, except a replay,
/// which is handed back to be answered with the others waiting for the same
/// conversation ([`answer_replays`]).
pub(super) fn answer(conn: &Connection, request: V2Request) -> Option<ReplayRequest> {
    // A failed `send` means the requester stopped waiting: nothing to do.
    match request {
        V2Request::History {
            conversation_id,
            user_id,
            before,
            limit,
            reply,
        } => {
            let page = history::history(conn, conversation_id, user_id, before, limit);
            let _ = reply.send(page);
        }
        V2Request::Replay {
            conversation_id,
            user_id,
            since,
            max,
            reply,
        } => {
            return Some(ReplayRequest {
                conversation_id,
                user_id,
                since,
                max,
                reply,
            })
        }
        V2Request::MarkRead {
            conversation_id,
            user_id,
            message_id,
            reply,
        } => {
            let _ = reply.send(receipts::mark_read(
                conn,
                conversation_id,
                user_id,
                message_id,
            ));
        }
        V2Request::ReadState {
            conversation_id,
            reply,
        } => {
            let _ = reply.send(receipts::read_state(conn, conversation_id));
        }
        V2Request::React {
            conversation_id,
            user_id,
            message_id,
            emoji,
            on,
            reply,
        } => {
            let changed = reactions::react(conn, conversation_id, user_id, message_id, &emoji, on);
            let _ = reply.send(changed);
        }
    }
    None
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
        testing_log::record(conn, conversation_id, group.len(), statements.count());
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

/// Counts the statements a request runs (tests check what a group read costs).
#[derive(Default)]
pub(super) struct Statements(Cell<usize>);

impl Statements {
    pub(super) fn prepare<'c>(
        &self,
        conn: &'c Connection,
        sql: &str,
    ) -> rusqlite::Result<CachedStatement<'c>> {
        self.0.set(self.0.get() + 1);
        conn.prepare_cached(sql)
    }

    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.0.get()
    }
}

/// The error of a statement on a `chatgate_` table: [`V2Error::NotMigrated`]
/// (logged once) when the table is missing.
pub(super) fn v2_err(e: rusqlite::Error) -> V2Error {
    if is_missing_v2_table(&e) {
        warn_not_migrated();
        V2Error::NotMigrated
    } else {
        V2Error::Store(db_err(e))
    }
}

/// Whether `e` says a `chatgate_` table does not exist.
pub(super) fn is_missing_v2_table(e: &rusqlite::Error) -> bool {
    let msg = match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg,
        rusqlite::Error::SqlInputError { msg, .. } => msg,
        _ => return false,
    };
    msg.contains("no such table: chatgate_")
}

pub(super) fn warn_not_migrated() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "sqlite store: the chatgate_ tables are missing, read receipts and reactions \
             are unavailable: run `chatgate migrate`"
        );
    }
}

/// A JSON array of ids, for `IN (SELECT value FROM json_each(?))`: one
/// cached statement whatever the number of ids.
pub(super) fn json_ids(ids: impl IntoIterator<Item = i64>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    format!("[{}]", ids.join(","))
}

/// What each replay group read cost, per database (tests run in parallel).
#[cfg(test)]
pub(super) mod testing_log {
    use std::sync::Mutex;

    use rusqlite::Connection;

    use crate::store::ConversationId;

    /// (database path, conversation, requests, statements) per group read.
    static READS: Mutex<Vec<(String, ConversationId, usize, usize)>> = Mutex::new(Vec::new());

    pub(in crate::store::sqlite) fn record(
        conn: &Connection,
        conversation: ConversationId,
        requests: usize,
        statements: usize,
    ) {
        let path = conn.path().unwrap_or_default().to_owned();
        let entry = (path, conversation, requests, statements);
        READS.lock().unwrap().push(entry);
    }

    /// (conversation, requests, statements) of the group reads on `path`.
    pub(in crate::store::sqlite) fn reads_on(
        path: &std::path::Path,
    ) -> Vec<(ConversationId, usize, usize)> {
        let path = std::fs::canonicalize(path).unwrap();
        let reads = READS.lock().unwrap();
        let on_path = reads
            .iter()
            .filter(|(p, ..)| std::fs::canonicalize(p).is_ok_and(|p| p == path));
        on_path.map(|(_, c, r, s)| (*c, *r, *s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::lookup::delete_message;
    use crate::store::sqlite::testing::Fixture;

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
