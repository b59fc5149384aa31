//! Connect-time reads and per-user deletes, answered by the worker between
//! batches (before the inserts it gathered are committed).
//!
//! Owns the connect query (the user's profile and membership in one
//! lookup: no row means no such user) and the delete: a membership check on
//! the message's own conversation, then the idempotent
//! `chatapp_messagedeletion` insert.
//!
//! Must never: delete a `chatapp_message` row (deletion is per user), or let
//! a non-participant's delete through.

use rusqlite::{params, Connection, OptionalExtension};

use super::{db_err, format_timestamp, now};
use crate::store::{
    ConnectInfo, ConversationId, DeleteError, MessageId, StoreError, UserId, UserProfile,
};

/// The user's profile and membership, in one lookup (no row: unknown user).
const CONNECT_QUERY: &str = "SELECT u.id, u.username, u.first_name, u.last_name, u.is_active, \
     EXISTS (SELECT 1 FROM chatapp_conversationparticipant p \
             WHERE p.conversation_id = ?2 AND p.user_id = u.id), \
     EXISTS (SELECT 1 FROM chatapp_conversation c WHERE c.id = ?2) \
     FROM auth_user u WHERE u.id = ?1";

/// `None`: no such message; `Some(member)`: whether the user belongs to its conversation.
const DELETE_CHECK: &str = "SELECT EXISTS (SELECT 1 FROM chatapp_conversationparticipant p \
     WHERE p.conversation_id = m.conversation_id AND p.user_id = ?2) \
     FROM chatapp_message m WHERE m.id = ?1";

const INSERT_DELETION: &str =
    "INSERT INTO chatapp_messagedeletion (deleted_at, message_id, user_id) VALUES (?1, ?2, ?3) \
     ON CONFLICT (message_id, user_id) DO NOTHING";

pub(super) fn connect_info(
    conn: &Connection,
    user_id: UserId,
    conversation_id: ConversationId,
) -> Result<ConnectInfo, StoreError> {
    let found = conn
        .prepare_cached(CONNECT_QUERY)
        .and_then(|mut stmt| {
            stmt.query_row(params![user_id, conversation_id], |row| {
                let user = UserProfile {
                    id: row.get(0)?,
                    username: row.get(1)?,
                    first_name: row.get(2)?,
                    last_name: row.get(3)?,
                    is_active: row.get(4)?,
                };
                Ok(ConnectInfo {
                    user: Some(user),
                    is_participant: row.get(5)?,
                    conversation_exists: row.get(6)?,
                })
            })
            .optional()
        })
        .map_err(db_err)?;
    Ok(found.unwrap_or(ConnectInfo {
        user: None,
        is_participant: false,
        conversation_exists: false,
    }))
}

pub(super) fn delete_message(
    conn: &Connection,
    message_id: MessageId,
    user_id: UserId,
) -> Result<(), DeleteError> {
    let member: Option<bool> = conn
        .prepare_cached(DELETE_CHECK)
        .and_then(|mut stmt| {
            stmt.query_row(params![message_id, user_id], |row| row.get(0))
                .optional()
        })
        .map_err(db_err)?;
    match member {
        None => Err(DeleteError::NotFound),
        Some(false) => Err(DeleteError::NotParticipant),
        Some(true) => {
            let now = format_timestamp(now());
            conn.prepare_cached(INSERT_DELETION)
                .and_then(|mut stmt| stmt.execute(params![now, message_id, user_id]))
                .map_err(db_err)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::start;
    use crate::store::sqlite::testing::{
        insert, recording_sink, runtime, stored, wait_for_first, Fixture,
    };

    #[test]
    fn connect_info_reports_profile_and_membership() {
        let fx = Fixture::new();
        let member = fx.admin.create_user("ann", "Ann", "Lee").unwrap();
        let outsider = fx.user("bob");
        let sleeper = fx.user("cat");
        let conv = fx.admin.create_conversation(&[member, sleeper]).unwrap();
        fx.admin.set_user_active(sleeper, false).unwrap();
        let (sink, _) = recording_sink();
        let (handle, worker) = start(&fx.path, 16, sink).unwrap();

        let rt = runtime();
        let info = |user| rt.block_on(handle.connect_info(user, conv)).unwrap();
        assert_eq!(
            info(member),
            ConnectInfo {
                user: Some(UserProfile {
                    id: member,
                    username: "ann".into(),
                    first_name: "Ann".into(),
                    last_name: "Lee".into(),
                    is_active: true,
                }),
                is_participant: true,
                conversation_exists: true,
            }
        );
        assert_eq!(
            info(9999),
            ConnectInfo {
                user: None,
                is_participant: false,
                conversation_exists: false,
            }
        );
        let inactive = info(sleeper);
        assert!(inactive.is_participant);
        assert!(!inactive.user.unwrap().is_active);
        let stranger = info(outsider);
        assert!(!stranger.is_participant);
        assert_eq!(stranger.user.unwrap().username, "bob");

        drop(handle);
        worker.join();
    }

    #[test]
    fn delete_is_per_user_checked_and_idempotent() {
        let fx = Fixture::new();
        let (a, b, outsider) = (fx.user("a"), fx.user("b"), fx.user("o"));
        let conv = fx.admin.create_conversation(&[a, b]).unwrap();
        let (sink, delivered) = recording_sink();
        let (handle, worker) = start(&fx.path, 16, sink).unwrap();
        let rt = runtime();
        rt.block_on(handle.insert(insert(conv, a, "hello", 0)))
            .unwrap();
        let id = stored(&wait_for_first(&delivered)).id;

        let delete = |msg, user| rt.block_on(handle.delete(msg, user));
        assert_eq!(delete(id + 1, a), Err(DeleteError::NotFound));
        assert_eq!(delete(id, outsider), Err(DeleteError::NotParticipant));
        assert_eq!(delete(id, b), Ok(()));
        assert_eq!(delete(id, b), Ok(()));

        let rows = fx.query(
            "SELECT COUNT(*) FROM chatapp_messagedeletion WHERE message_id = ?1 AND user_id = ?2",
            [id, b],
        );
        assert_eq!(rows, 1);
        assert_eq!(fx.messages(), 1, "the message row stays");
        drop(handle);
        worker.join();
    }
}
