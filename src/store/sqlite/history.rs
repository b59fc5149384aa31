//! History pages and replays: a conversation's messages by id, without the
//! ones the asking user deleted, with their senders and reactions.
//!
//! Owns the paging SQL (`ORDER BY id DESC LIMIT n + 1` on Django's
//! `(conversation_id, id)` index, never OFFSET: a page costs the same on a
//! conversation of a million messages as on one of a hundred) and the group
//! read that answers every replay of a conversation waiting together with
//! three statements: the group's deletions above the lowest `since`, the
//! newest messages above it (enough for every requester), their reactions;
//! each requester's answer is then cut from those rows.
//!
//! Must never: return a message the asking user deleted; decide `has_more`
//! or `complete` from anything but a row that exists.

use std::collections::{HashMap, HashSet};

use rusqlite::types::Type;
use rusqlite::{params, Connection, Row};
use tokio::sync::oneshot;

use super::statements::{json_ids, Statements};
use super::{db_err, parse_timestamp, reactions};
use crate::store::requests::{HistoryItem, HistoryPage, Replay, V2Error};
use crate::store::{ConversationId, MessageId, UserId, UserProfile};

/// A replay waiting for its conversation's group read ([`replay_group`]).
#[derive(Debug)]
pub(in crate::store) struct ReplayRequest {
    pub(super) conversation_id: ConversationId,
    pub(super) user_id: UserId,
    pub(super) since: MessageId,
    pub(super) max: u32,
    pub(super) reply: oneshot::Sender<Result<Replay, V2Error>>,
}

/// A message with its sender: the columns `item` reads (a macro, so the
/// queries stay `&'static str` for the statement cache).
macro_rules! item_columns {
    () => {
        "m.id, m.content, m.timestamp, \
         u.id, u.username, u.first_name, u.last_name, u.is_active"
    };
}

/// The newest `?4` messages below `?2` that user `?3` has not deleted.
const HISTORY: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM chatapp_message m JOIN auth_user u ON u.id = m.sender_id \
     WHERE m.conversation_id = ?1 AND m.id < ?2 AND NOT EXISTS \
     (SELECT 1 FROM chatapp_messagedeletion d WHERE d.message_id = m.id AND d.user_id = ?3) \
     ORDER BY m.id DESC LIMIT ?4"
);

/// The deletions, by the users of the JSON array `?3`, of the messages above `?2`.
const GROUP_DELETIONS: &str = "SELECT d.user_id, d.message_id \
     FROM chatapp_messagedeletion d JOIN chatapp_message m ON m.id = d.message_id \
     WHERE m.conversation_id = ?1 AND m.id > ?2 \
     AND d.user_id IN (SELECT value FROM json_each(?3))";

/// The newest `?3` messages above `?2`, deleted or not.
const GROUP_MESSAGES: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM chatapp_message m JOIN auth_user u ON u.id = m.sender_id \
     WHERE m.conversation_id = ?1 AND m.id > ?2 ORDER BY m.id DESC LIMIT ?3"
);

/// The newest `limit` messages below `before` that `user` has not deleted,
/// oldest first; `has_more` when there is one more.
pub(super) fn history(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
    before: Option<MessageId>,
    limit: u32,
) -> Result<HistoryPage, V2Error> {
    let statements = Statements::default();
    let limit = limit as usize;
    let before = before.unwrap_or(MessageId::MAX);
    let mut items = statements
        .prepare(conn, HISTORY)
        .and_then(|mut stmt| {
            let rows = stmt.query_map(params![conversation, before, user, limit + 1], item)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    let has_more = items.len() > limit;
    items.truncate(limit);
    items.reverse();
    reactions::attach(conn, &mut items, &statements)?;
    Ok(HistoryPage { items, has_more })
}

/// Answers every replay of `group` (all of `conversation`), in order, with
/// one read: see the module doc.
pub(super) fn replay_group(
    conn: &Connection,
    conversation: ConversationId,
    group: &[ReplayRequest],
    statements: &Statements,
) -> Result<Vec<Replay>, V2Error> {
    let Some(lowest) = group.iter().map(|r| r.since).min() else {
        return Ok(Vec::new());
    };
    let users = json_ids(group.iter().map(|r| r.user_id));
    let deleted: HashSet<(UserId, MessageId)> = statements
        .prepare(conn, GROUP_DELETIONS)
        .and_then(|mut stmt| {
            let rows = stmt.query_map(params![conversation, lowest, users], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })
        .map_err(db_err)?;
    let mut deletions: HashMap<UserId, usize> = HashMap::new();
    for (user, _) in &deleted {
        *deletions.entry(*user).or_default() += 1;
    }
    // Enough rows for each requester to find `max` + 1 it has not deleted
    // (the one more tells `complete`), or every row above the lowest `since`.
    let needed = group
        .iter()
        .map(|r| r.max as usize + deletions.get(&r.user_id).copied().unwrap_or(0) + 1)
        .max()
        .unwrap_or(1);
    let newest_first = statements
        .prepare(conn, GROUP_MESSAGES)
        .and_then(|mut stmt| {
            let rows = stmt.query_map(params![conversation, lowest, needed], item)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;

    let mut picks: Vec<(Vec<usize>, bool)> = Vec::with_capacity(group.len());
    for request in group {
        let max = request.max as usize;
        let mut picked = Vec::with_capacity(max.min(newest_first.len()));
        let mut complete = true;
        for (i, message) in newest_first.iter().enumerate() {
            if message.id <= request.since {
                break;
            }
            if deleted.contains(&(request.user_id, message.id)) {
                continue;
            }
            if picked.len() == max {
                complete = false;
                break;
            }
            picked.push(i);
        }
        picked.reverse();
        picks.push((picked, complete));
    }

    // Reactions once, for the union of what is replayed.
    let mut used: Vec<usize> = picks.iter().flat_map(|(p, _)| p.iter().copied()).collect();
    used.sort_unstable();
    used.dedup();
    let mut with_reactions: Vec<HistoryItem> =
        used.iter().map(|&i| newest_first[i].clone()).collect();
    reactions::attach(conn, &mut with_reactions, statements)?;
    let by_row: HashMap<usize, &HistoryItem> = used.iter().copied().zip(&with_reactions).collect();
    let replays = picks
        .into_iter()
        .map(|(picked, complete)| Replay {
            items: picked.iter().map(|i| by_row[i].clone()).collect(),
            complete,
        })
        .collect();
    Ok(replays)
}

/// A row of `ITEM_COLUMNS`, without reactions yet.
pub(super) fn item(row: &Row<'_>) -> rusqlite::Result<HistoryItem> {
    let text: String = row.get(2)?;
    let timestamp = parse_timestamp(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, Box::new(e)))?;
    Ok(HistoryItem {
        id: row.get(0)?,
        sender: UserProfile {
            id: row.get(3)?,
            username: row.get(4)?,
            first_name: row.get(5)?,
            last_name: row.get(6)?,
            is_active: row.get(7)?,
        },
        content: row.get(1)?,
        timestamp,
        reactions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::store::requests::{ReactionGroup, V2Request};
    use crate::store::sqlite::reactions::react;
    use crate::store::sqlite::statements::testing_log;
    use crate::store::sqlite::testing::Fixture;

    fn ids(items: &[HistoryItem]) -> Vec<MessageId> {
        items.iter().map(|item| item.id).collect()
    }

    /// What a replay must answer, computed the slow way: every message of
    /// the conversation, filtered in Rust.
    fn expected_replay(
        fx: &Fixture,
        conv: ConversationId,
        user: UserId,
        since: MessageId,
        max: usize,
    ) -> (Vec<MessageId>, bool) {
        let conn = fx.admin.connection();
        let mut stmt = conn
            .prepare(
                "SELECT id FROM chatapp_message m WHERE conversation_id = ?1 AND id > ?2 \
                 AND id NOT IN (SELECT message_id FROM chatapp_messagedeletion WHERE user_id = ?3) \
                 ORDER BY id",
            )
            .unwrap();
        let all: Vec<MessageId> = stmt
            .query_map(params![conv, since, user], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let skip = all.len().saturating_sub(max);
        (all[skip..].to_vec(), skip == 0)
    }

    #[test]
    fn history_pages_visit_each_message_once_oldest_first_without_deletions() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let other = fx.admin.create_conversation(&[a, b]).unwrap();
        let written = fx.write_messages(conv, a, 250);
        fx.write_messages(other, a, 30);
        // b deletes 50 of them: 200 left, four full pages and nothing more.
        let deleted: Vec<MessageId> = written.iter().copied().step_by(5).collect();
        fx.delete_for(b, &deleted);
        let conn = fx.admin.connection();

        let mut seen = Vec::new();
        let mut before = None;
        let mut pages = Vec::new();
        loop {
            let page = history(conn, conv, b, before, 50).unwrap();
            let page_ids = ids(&page.items);
            assert!(page_ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
            assert!(page_ids.iter().all(|id| before.is_none_or(|b| *id < b)));
            pages.push((page_ids.len(), page.has_more));
            seen.splice(0..0, page_ids.iter().copied());
            if !page.has_more {
                break;
            }
            before = page_ids.first().copied();
        }
        assert_eq!(
            pages,
            [(50, true), (50, true), (50, true), (50, false)],
            "has_more is exact"
        );
        let visible: Vec<MessageId> = written
            .iter()
            .copied()
            .filter(|id| !deleted.contains(id))
            .collect();
        assert_eq!(seen, visible, "every message once, none deleted");

        // a deleted nothing: 250 over five pages, the last one partial.
        let first = history(conn, conv, a, None, 100).unwrap();
        assert_eq!(ids(&first.items), written[150..]);
        let last = history(conn, conv, a, Some(written[50]), 100).unwrap();
        assert_eq!(
            (ids(&last.items), last.has_more),
            (written[..50].to_vec(), false)
        );
        let empty = history(conn, conv, a, Some(written[0]), 10).unwrap();
        assert_eq!(empty, HistoryPage::default());
    }

    #[test]
    fn history_items_carry_sender_content_timestamp_and_reactions() {
        let fx = Fixture::new();
        let a = fx.admin.create_user("ann", "Ann", "Lee").unwrap();
        let b = fx.user("bob");
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let m = fx.write_messages(conv, a, 2);
        let conn = fx.admin.connection();
        assert!(react(conn, conv, b, m[1], "👍", true).unwrap());
        assert!(react(conn, conv, a, m[1], "❤️", true).unwrap());
        assert!(react(conn, conv, a, m[1], "👍", true).unwrap());

        let page = history(conn, conv, b, None, 50).unwrap();
        let item = &page.items[1];
        assert_eq!((item.id, item.content.as_str()), (m[1], "m1"));
        assert_eq!(item.sender.username, "ann");
        assert_eq!(
            (item.sender.first_name.as_str(), item.sender.id),
            ("Ann", a)
        );
        let age = chrono::Utc::now() - item.timestamp;
        assert!(age.num_seconds() < 60, "{}", item.timestamp);
        assert_eq!(
            item.reactions,
            [
                ReactionGroup {
                    emoji: "👍".into(),
                    user_ids: vec![b, a]
                },
                ReactionGroup {
                    emoji: "❤️".into(),
                    user_ids: vec![a]
                },
            ]
        );
        assert!(page.items[0].reactions.is_empty());
    }

    #[test]
    fn paging_uses_the_conversation_index_without_sorting_or_offset() {
        let fx = Fixture::new();
        let conn = fx.admin.connection();
        for sql in [HISTORY, GROUP_MESSAGES, GROUP_DELETIONS] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let ones = std::iter::repeat_n(1, stmt.parameter_count());
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(ones), |row| row.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join("\n");
            assert!(
                plan.contains(
                    "chatapp_message_conversation_id_751b6c97 (conversation_id=? AND rowid"
                ),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
            assert!(!sql.contains("OFFSET"));
        }
    }

    fn replay_request(
        conv: ConversationId,
        user: UserId,
        since: MessageId,
        max: u32,
    ) -> (ReplayRequest, oneshot::Receiver<Result<Replay, V2Error>>) {
        let (reply, rx) = oneshot::channel();
        let request = ReplayRequest {
            conversation_id: conv,
            user_id: user,
            since,
            max,
            reply,
        };
        (request, rx)
    }

    #[test]
    fn replay_sends_the_newest_max_oldest_first_and_says_whether_complete() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let m = fx.write_messages(conv, a, 20);
        fx.delete_for(b, &[m[18], m[12]]);
        let conn = fx.admin.connection();
        let one = |user, since, max| {
            let (request, _) = replay_request(conv, user, since, max);
            let statements = Statements::default();
            let mut answers = replay_group(conn, conv, &[request], &statements).unwrap();
            (ids(&answers[0].items), answers.remove(0).complete)
        };
        assert_eq!(one(a, m[9], 5), (m[15..].to_vec(), false));
        assert_eq!(one(a, m[14], 5), (m[15..].to_vec(), true));
        assert_eq!(one(a, m[19], 5), (vec![], true));
        assert_eq!(one(a, 0, 100), (m.clone(), true));
        // b deleted two: they are neither sent nor counted.
        assert_eq!(one(b, m[14], 4), (vec![m[15], m[16], m[17], m[19]], true));
        assert_eq!(one(b, m[11], 4), (vec![m[15], m[16], m[17], m[19]], false));
        assert_eq!(
            one(b, m[10], 5),
            (vec![m[14], m[15], m[16], m[17], m[19]], false)
        );
        assert_eq!(
            one(b, m[11], 6),
            (vec![m[13], m[14], m[15], m[16], m[17], m[19]], true)
        );
    }

    #[test]
    fn a_replay_group_is_answered_by_one_read_and_each_answer_is_exact() {
        let fx = Fixture::new();
        let users: Vec<UserId> = (0..5).map(|i| fx.user(&format!("u{i}"))).collect();
        let conv = fx.admin.create_conversation(&users).unwrap();
        let other = fx.admin.create_conversation(&users).unwrap();
        let m = fx.write_messages(conv, users[0], 60);
        fx.write_messages(other, users[1], 5);
        // Different deletions per user, some of them among the newest.
        fx.delete_for(users[1], &m[50..58]);
        fx.delete_for(users[2], &m[10..40]);
        fx.delete_for(users[3], &[m[59], m[0]]);
        let conn = fx.admin.connection();
        react(conn, conv, users[4], m[59], "🎉", true).unwrap();
        react(conn, conv, users[2], m[59], "🎉", true).unwrap();

        // (user, since, max): different starting points and limits.
        let asks = [
            (users[0], m[40], 10),
            (users[1], m[45], 5),
            (users[2], 0, 25),
            (users[3], m[55], 10),
            (users[4], m[59], 3),
            (users[1], 0, 100),
        ];
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        for &(user, since, max) in &asks {
            let (reply, rx) = oneshot::channel();
            requests.push(V2Request::Replay {
                conversation_id: conv,
                user_id: user,
                since,
                max,
                reply,
            });
            replies.push(rx);
        }
        let (reply, lone) = oneshot::channel();
        requests.insert(
            2,
            V2Request::Replay {
                conversation_id: other,
                user_id: users[0],
                since: 0,
                max: 3,
                reply,
            },
        );
        fx.run_queued_v2(requests);

        let reads = testing_log::reads_on(&fx.path);
        assert_eq!(
            reads,
            [(conv, 6, 3), (other, 1, 3)],
            "one read per conversation"
        );
        for (&(user, since, max), rx) in asks.iter().zip(replies) {
            let replay = rx.blocking_recv().unwrap().unwrap();
            let expected = expected_replay(&fx, conv, user, since, max as usize);
            assert_eq!(
                (ids(&replay.items), replay.complete),
                expected,
                "{user} {since}"
            );
            for item in &replay.items {
                let reacted = if item.id == m[59] { 1 } else { 0 };
                assert_eq!(item.reactions.len(), reacted);
            }
        }
        let lone = lone.blocking_recv().unwrap().unwrap();
        assert_eq!((lone.items.len(), lone.complete), (3, false));
        let m59 = history(conn, conv, users[4], None, 1).unwrap().items;
        assert_eq!(m59[0].reactions[0].user_ids, [users[4], users[2]]);
    }
}
