//! Read positions (docs/protocol.md §9.3): `chatgate_readreceipt`, one row per
//! participant and conversation, only ever moving up.
//!
//! Owns the mark-read transaction (the participant's `unread_count` becomes
//! 0 and the position max(old, N), together; the answer says whether the
//! position moved) and the read state of a conversation.
//!
//! Must never: move a position down; zero the count without the position
//! being written in the same transaction.

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::reactions::message_in_conversation;
use super::tables::v2_err;
use super::{db_err, format_timestamp, now, parse_timestamp};
use crate::store::requests::{ReadPosition, V2Error};
use crate::store::{ConversationId, MessageId, UserId};

const ZERO_UNREAD: &str = "UPDATE chatapp_conversationparticipant SET unread_count = 0 \
     WHERE conversation_id = ?1 AND user_id = ?2";

/// Writes (and counts as a change) only a position above the stored one.
const RAISE_POSITION: &str =
    "INSERT INTO chatgate_readreceipt (message_id, read_at, conversation_id, user_id) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (conversation_id, user_id) DO UPDATE \
     SET message_id = excluded.message_id, read_at = excluded.read_at \
     WHERE excluded.message_id > chatgate_readreceipt.message_id";

const USERNAME: &str = "SELECT username FROM auth_user WHERE id = ?1";

/// The positions of the conversation's participants, by user id.
const READ_STATE: &str = "SELECT r.user_id, u.username, r.message_id, r.read_at \
     FROM chatgate_readreceipt r \
     JOIN chatapp_conversationparticipant p \
       ON p.conversation_id = r.conversation_id AND p.user_id = r.user_id \
     JOIN auth_user u ON u.id = r.user_id \
     WHERE r.conversation_id = ?1 ORDER BY r.user_id";

/// Zeroes the user's unread count and raises their position to `message`;
/// the new position when it moved.
pub(super) fn mark_read(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
    message: MessageId,
) -> Result<Option<ReadPosition>, V2Error> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db_err)?;
    if !message_in_conversation(&tx, message, conversation)? {
        return Err(V2Error::NoSuchMessage);
    }
    tx.prepare_cached(ZERO_UNREAD)
        .and_then(|mut stmt| stmt.execute(params![conversation, user]))
        .map_err(db_err)?;
    let read_at = now();
    let moved = tx
        .prepare_cached(RAISE_POSITION)
        .and_then(|mut stmt| {
            stmt.execute(params![
                message,
                format_timestamp(read_at),
                conversation,
                user
            ])
        })
        .map_err(v2_err)?
        > 0;
    let position = if moved {
        let username: String = tx
            .prepare_cached(USERNAME)
            .and_then(|mut stmt| stmt.query_row([user], |row| row.get(0)))
            .map_err(db_err)?;
        Some(ReadPosition {
            user_id: user,
            username,
            message_id: message,
            read_at,
        })
    } else {
        None
    };
    tx.commit().map_err(db_err)?;
    Ok(position)
}

/// Every participant's position (none without the table), by user id.
pub(super) fn read_state(
    conn: &Connection,
    conversation: ConversationId,
) -> Result<Vec<ReadPosition>, V2Error> {
    let rows: rusqlite::Result<Vec<(UserId, String, MessageId, String)>> =
        conn.prepare_cached(READ_STATE).and_then(|mut stmt| {
            let rows = stmt.query_map([conversation], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?;
            rows.collect()
        });
    let rows = match rows.map_err(v2_err) {
        Ok(rows) => rows,
        Err(V2Error::NotMigrated) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    rows.into_iter()
        .map(|(user_id, username, message_id, read_at)| {
            Ok(ReadPosition {
                user_id,
                username,
                message_id,
                read_at: parse_timestamp(&read_at)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::testing::Fixture;

    #[test]
    fn mark_read_zeroes_unread_and_moves_the_position_only_up() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("ann"), fx.user("bob"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let m = fx.write_messages(conv, a, 5);
        let conn = fx.admin.connection();
        let set_unread = |n: i64| {
            conn.execute(
                "UPDATE chatapp_conversationparticipant SET unread_count = ?1 WHERE user_id = ?2",
                [n, b],
            )
            .unwrap();
        };
        set_unread(5);

        let moved = mark_read(conn, conv, b, m[2]).unwrap().expect("moved");
        assert_eq!(
            (moved.user_id, moved.username.as_str(), moved.message_id),
            (b, "bob", m[2])
        );
        assert_eq!(moved.read_at.timestamp_subsec_nanos() % 1_000, 0);
        assert_eq!(fx.unread(conv, b), 0);
        assert_eq!(
            read_state(conn, conv).unwrap(),
            std::slice::from_ref(&moved)
        );

        // Lower or equal: the count still becomes 0, the position stays.
        set_unread(2);
        assert_eq!(mark_read(conn, conv, b, m[1]).unwrap(), None);
        assert_eq!(mark_read(conn, conv, b, m[2]).unwrap(), None);
        assert_eq!(fx.unread(conv, b), 0);
        assert_eq!(read_state(conn, conv).unwrap(), [moved]);

        let higher = mark_read(conn, conv, b, m[4]).unwrap().expect("moved");
        assert_eq!(higher.message_id, m[4]);
        assert_eq!(read_state(conn, conv).unwrap(), [higher]);
    }

    #[test]
    fn mark_read_refuses_foreign_and_missing_messages_and_changes_nothing() {
        let fx = Fixture::new();
        let (a, b) = (fx.user("a"), fx.user("b"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let other = fx.admin.create_conversation(&[a, b]).unwrap();
        let mine = fx.write_messages(conv, a, 1)[0];
        let foreign = fx.write_messages(other, a, 1)[0];
        let conn = fx.admin.connection();
        conn.execute(
            "UPDATE chatapp_conversationparticipant SET unread_count = 3",
            [],
        )
        .unwrap();

        for message in [foreign, foreign + 100, 0, -1] {
            let refused = mark_read(conn, conv, b, message);
            assert_eq!(refused, Err(V2Error::NoSuchMessage), "{message}");
        }
        assert_eq!(fx.unread(conv, b), 3);
        assert!(read_state(conn, conv).unwrap().is_empty());
        assert!(mark_read(conn, conv, b, mine).unwrap().is_some());
    }

    #[test]
    fn read_state_lists_the_participants_positions_by_user_id() {
        let fx = Fixture::new();
        let users: Vec<UserId> = ["c", "a", "b", "d"].map(|n| fx.user(n)).to_vec();
        let conv = fx.admin.create_conversation(&users).unwrap();
        let other = fx.admin.create_conversation(&users).unwrap();
        let m = fx.write_messages(conv, users[0], 3);
        let o = fx.write_messages(other, users[0], 1);
        let conn = fx.admin.connection();
        assert!(read_state(conn, conv).unwrap().is_empty());
        // Written out of user order; users[3] has no position here.
        mark_read(conn, conv, users[2], m[0]).unwrap();
        mark_read(conn, conv, users[0], m[2]).unwrap();
        mark_read(conn, conv, users[1], m[1]).unwrap();
        mark_read(conn, other, users[3], o[0]).unwrap();

        let state = read_state(conn, conv).unwrap();
        let rows: Vec<(UserId, &str, MessageId)> = state
            .iter()
            .map(|p| (p.user_id, p.username.as_str(), p.message_id))
            .collect();
        assert_eq!(
            rows,
            [
                (users[0], "c", m[2]),
                (users[1], "a", m[1]),
                (users[2], "b", m[0])
            ]
        );
    }
}
