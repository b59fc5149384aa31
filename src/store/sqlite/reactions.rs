//! Reactions (docs/protocol.md §9.4): `chatgate_reaction` rows, added and removed
//! idempotently, and grouped per message for history and replay items.
//!
//! Owns the react transaction (the message must be in the conversation; at
//! most [`MAX_EMOJI_PER_MESSAGE`] distinct emoji per message, checked in the
//! same transaction as the insert) and [`attach`], which reads the reactions
//! of a whole page in one statement and orders them: emoji by first use on
//! the message, user ids by reaction (the row id is the order of arrival).
//!
//! Must never: count a repeated reaction as a change; let a 21st distinct
//! emoji in; fail a page because the table is missing (no reactions then).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::statements::{json_ids, Statements};
use super::tables::{is_missing_v2_table, v2_err, warn_not_migrated};
use super::{db_err, format_timestamp, now};
use crate::store::requests::{HistoryItem, ReactionGroup, V2Error, MAX_EMOJI_PER_MESSAGE};
use crate::store::{ConversationId, MessageId, UserId};

/// The reactions of the messages of the JSON array `?1`, in arrival order.
const REACTIONS_OF: &str = "SELECT message_id, emoji, user_id FROM chatgate_reaction \
     WHERE message_id IN (SELECT value FROM json_each(?1)) ORDER BY message_id, id";

/// Whether message `?1` is in conversation `?2`.
pub(super) const MESSAGE_IN_CONVERSATION: &str =
    "SELECT EXISTS (SELECT 1 FROM chatapp_message WHERE id = ?1 AND conversation_id = ?2)";

/// (already there, distinct emoji on the message, this emoji among them).
const REACTION_STATE: &str = "SELECT \
     EXISTS (SELECT 1 FROM chatgate_reaction WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3), \
     (SELECT COUNT(DISTINCT emoji) FROM chatgate_reaction WHERE message_id = ?1), \
     EXISTS (SELECT 1 FROM chatgate_reaction WHERE message_id = ?1 AND emoji = ?3)";

const INSERT_REACTION: &str =
    "INSERT INTO chatgate_reaction (emoji, created_at, message_id, user_id) \
     VALUES (?1, ?2, ?3, ?4)";

const DELETE_REACTION: &str =
    "DELETE FROM chatgate_reaction WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3";

/// Adds (`on`) or removes a reaction; `Ok(true)` when that changed anything.
pub(super) fn react(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
    message: MessageId,
    emoji: &str,
    on: bool,
) -> Result<bool, V2Error> {
    // IMMEDIATE: the limit check and the insert see the same rows.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db_err)?;
    if !message_in_conversation(&tx, message, conversation)? {
        return Err(V2Error::NoSuchMessage);
    }
    let changed = if on {
        let (present, distinct, emoji_used): (bool, usize, bool) = tx
            .prepare_cached(REACTION_STATE)
            .and_then(|mut stmt| {
                stmt.query_row(params![message, user, emoji], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
            })
            .map_err(v2_err)?;
        if present {
            false
        } else if distinct >= MAX_EMOJI_PER_MESSAGE && !emoji_used {
            return Err(V2Error::TooManyReactions);
        } else {
            let at = format_timestamp(now());
            tx.prepare_cached(INSERT_REACTION)
                .and_then(|mut stmt| stmt.execute(params![emoji, at, message, user]))
                .map_err(v2_err)?;
            true
        }
    } else {
        let deleted = tx
            .prepare_cached(DELETE_REACTION)
            .and_then(|mut stmt| stmt.execute(params![message, user, emoji]))
            .map_err(v2_err)?;
        deleted > 0
    };
    tx.commit().map_err(db_err)?;
    Ok(changed)
}

pub(super) fn message_in_conversation(
    conn: &Connection,
    message: MessageId,
    conversation: ConversationId,
) -> Result<bool, V2Error> {
    let found = conn
        .prepare_cached(MESSAGE_IN_CONVERSATION)
        .and_then(|mut stmt| stmt.query_row(params![message, conversation], |row| row.get(0)))
        .optional()
        .map_err(db_err)?;
    Ok(found.unwrap_or(false))
}

/// Fills in the reactions of `items` with one statement (none when `items`
/// is empty). Without the table every item keeps no reactions.
pub(super) fn attach(
    conn: &Connection,
    items: &mut [HistoryItem],
    statements: &Statements,
) -> Result<(), V2Error> {
    if items.is_empty() {
        return Ok(());
    }
    let ids = json_ids(items.iter().map(|item| item.id));
    let rows: rusqlite::Result<Vec<(MessageId, String, UserId)>> =
        statements.prepare(conn, REACTIONS_OF).and_then(|mut stmt| {
            let rows = stmt.query_map([ids], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect()
        });
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) if is_missing_v2_table(&e) => {
            warn_not_migrated();
            return Ok(());
        }
        Err(e) => return Err(db_err(e).into()),
    };
    let mut groups: HashMap<MessageId, Vec<ReactionGroup>> = HashMap::new();
    for (message, emoji, user) in rows {
        let groups = groups.entry(message).or_default();
        match groups.iter_mut().find(|g| g.emoji == emoji) {
            Some(group) => group.user_ids.push(user),
            None => groups.push(ReactionGroup {
                emoji,
                user_ids: vec![user],
            }),
        }
    }
    for item in items {
        item.reactions = groups.remove(&item.id).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::history::history;
    use crate::store::sqlite::testing::Fixture;

    fn reactions_of(fx: &Fixture, conv: ConversationId, message: MessageId) -> Vec<ReactionGroup> {
        let page = history(fx.admin.connection(), conv, 0, Some(message + 1), 1).unwrap();
        assert_eq!(page.items[0].id, message);
        page.items[0].reactions.clone()
    }

    fn group(emoji: &str, user_ids: &[UserId]) -> ReactionGroup {
        ReactionGroup {
            emoji: emoji.into(),
            user_ids: user_ids.to_vec(),
        }
    }

    #[test]
    fn reacting_is_idempotent_and_groups_keep_first_use_and_reaction_order() {
        let fx = Fixture::new();
        let (a, b, c) = (fx.user("a"), fx.user("b"), fx.user("c"));
        let conv = fx.admin.create_conversation(&[a, b, c]).unwrap();
        let m = fx.write_messages(conv, a, 2);
        let conn = fx.admin.connection();
        let react = |user, emoji, on| react(conn, conv, user, m[0], emoji, on);

        assert_eq!(react(c, "🔥", true), Ok(true));
        assert_eq!(react(a, "👍", true), Ok(true));
        assert_eq!(react(a, "🔥", true), Ok(true));
        assert_eq!(react(b, "🔥", true), Ok(true));
        assert_eq!(
            react(a, "🔥", true),
            Ok(false),
            "adding twice changes nothing"
        );
        assert_eq!(react(b, "❤️", true), Ok(true));
        assert_eq!(
            reactions_of(&fx, conv, m[0]),
            [
                group("🔥", &[c, a, b]),
                group("👍", &[a]),
                group("❤️", &[b])
            ]
        );
        assert!(reactions_of(&fx, conv, m[1]).is_empty());

        assert_eq!(react(c, "🔥", false), Ok(true));
        assert_eq!(
            react(c, "🔥", false),
            Ok(false),
            "removing twice changes nothing"
        );
        assert_eq!(react(b, "👍", false), Ok(false), "never added");
        // c comes back: last in the group; 👍 emptied and used again moves last.
        assert_eq!(react(c, "🔥", true), Ok(true));
        assert_eq!(react(a, "👍", false), Ok(true));
        assert_eq!(react(b, "👍", true), Ok(true));
        assert_eq!(
            reactions_of(&fx, conv, m[0]),
            [
                group("🔥", &[a, b, c]),
                group("❤️", &[b]),
                group("👍", &[b])
            ]
        );
    }

    #[test]
    fn a_message_holds_at_most_twenty_distinct_emoji() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let m = fx.write_messages(conv, a, 2);
        let conn = fx.admin.connection();
        let emoji: Vec<String> = (0..=MAX_EMOJI_PER_MESSAGE)
            .map(|i| char::from_u32(0x1F600 + i as u32).unwrap().to_string())
            .collect();
        for e in &emoji[..MAX_EMOJI_PER_MESSAGE] {
            assert_eq!(react(conn, conv, a, m[0], e, true), Ok(true));
        }
        let last = &emoji[MAX_EMOJI_PER_MESSAGE];
        assert_eq!(
            react(conn, conv, b, m[0], last, true),
            Err(V2Error::TooManyReactions)
        );
        // One of the twenty is still fine, by anyone; another message is not full.
        assert_eq!(react(conn, conv, b, m[0], &emoji[3], true), Ok(true));
        assert_eq!(react(conn, conv, a, m[1], last, true), Ok(true));
        // Removing one makes room.
        assert_eq!(react(conn, conv, a, m[0], &emoji[0], false), Ok(true));
        assert_eq!(react(conn, conv, b, m[0], last, true), Ok(true));
        assert_eq!(reactions_of(&fx, conv, m[0]).len(), MAX_EMOJI_PER_MESSAGE);
    }

    #[test]
    fn reacting_to_a_message_of_another_conversation_is_refused() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let other = fx.admin.create_conversation(&[a]).unwrap();
        let foreign = fx.write_messages(other, a, 1)[0];
        let conn = fx.admin.connection();
        for on in [true, false] {
            assert_eq!(
                react(conn, conv, a, foreign, "👍", on),
                Err(V2Error::NoSuchMessage)
            );
            assert_eq!(
                react(conn, conv, a, foreign + 1, "👍", on),
                Err(V2Error::NoSuchMessage)
            );
        }
        assert_eq!(fx.query("SELECT COUNT(*) FROM chatgate_reaction", []), 0);
    }
}
