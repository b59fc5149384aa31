//! Synchronous administration of a SQLite store (CLI and tests), mirrored
//! by `postgres::Admin`: users, conversations, participants.
//!
//! Owns its own connection to the database file (opened, configured and
//! migrated like the worker's). Calls that write more than one row do so in
//! one transaction, so an unknown id fails the whole call.
//!
//! Must never: be used from a shard (every call blocks on disk), or leave a
//! partial write behind.

use std::path::Path;

use rusqlite::{params, Connection};

use super::{db_err, format_timestamp, now, open, StoreError};
use crate::store::{ConversationId, UserId};

const INSERT_PARTICIPANT: &str = "INSERT INTO chatapp_conversationparticipant \
     (unread_count, joined_at, conversation_id, user_id) VALUES (0, ?1, ?2, ?3)";

/// Synchronous administration (CLI and tests): never use it from a shard.
#[derive(Debug)]
pub struct Admin {
    conn: Connection,
}

impl Admin {
    /// Opens (creating and migrating if needed) the database file.
    pub fn open(path: &Path) -> Result<Admin, StoreError> {
        open(path).map(|conn| Admin { conn })
    }

    /// Adds an active user with an unusable password (`!`) and no e-mail.
    pub fn create_user(
        &self,
        username: &str,
        first_name: &str,
        last_name: &str,
    ) -> Result<UserId, StoreError> {
        self.conn
            .execute(
                "INSERT INTO auth_user (password, last_login, is_superuser, username, \
                 first_name, last_name, email, is_staff, is_active, date_joined) \
                 VALUES ('!', NULL, 0, ?1, ?2, ?3, '', 0, 1, ?4)",
                params![username, first_name, last_name, format_timestamp(now())],
            )
            .map_err(db_err)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Activates or deactivates a user; an unknown id is an error.
    pub fn set_user_active(&self, id: UserId, active: bool) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE auth_user SET is_active = ?2 WHERE id = ?1",
                params![id, active],
            )
            .map_err(db_err)?;
        expect_one(changed, "user", id)
    }

    /// Creates a conversation with `members` as participants, atomically; an
    /// unknown user id fails the whole call.
    pub fn create_conversation(&self, members: &[UserId]) -> Result<ConversationId, StoreError> {
        let now = format_timestamp(now());
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO chatapp_conversation (created_at, updated_at) VALUES (?1, ?1)",
            [&now],
        )
        .map_err(db_err)?;
        let id = tx.last_insert_rowid();
        for user in members {
            tx.execute(INSERT_PARTICIPANT, params![now, id, user])
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(id)
    }

    /// Adds a participant with no unread messages.
    pub fn add_participant(&self, conv: ConversationId, user: UserId) -> Result<(), StoreError> {
        let now = format_timestamp(now());
        self.conn
            .execute(INSERT_PARTICIPANT, params![now, conv, user])
            .map_err(db_err)?;
        Ok(())
    }

    /// Deletes a conversation with its participants, messages and deletions.
    pub fn delete_conversation(&self, conv: ConversationId) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(db_err)?;
        for sql in [
            "DELETE FROM chatapp_messagedeletion WHERE message_id IN \
             (SELECT id FROM chatapp_message WHERE conversation_id = ?1)",
            "DELETE FROM chatapp_message WHERE conversation_id = ?1",
            "DELETE FROM chatapp_conversationparticipant WHERE conversation_id = ?1",
        ] {
            tx.execute(sql, [conv]).map_err(db_err)?;
        }
        let deleted = tx
            .execute("DELETE FROM chatapp_conversation WHERE id = ?1", [conv])
            .map_err(db_err)?;
        expect_one(deleted, "conversation", conv)?;
        tx.commit().map_err(db_err)
    }

    /// Number of rows in `auth_user`.
    pub fn user_count(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM auth_user", [], |row| row.get(0))
            .map_err(db_err)
    }

    /// The underlying connection (tests read rows directly).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn expect_one(changed: usize, what: &str, id: i64) -> Result<(), StoreError> {
    match changed {
        0 => Err(StoreError::Database(format!("no {what} with id {id}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sqlite::testing::Fixture;

    #[test]
    fn admin_rejects_unknown_ids_without_partial_writes() {
        let fx = Fixture::new();
        let a = fx.user("a");
        assert!(fx.admin.create_conversation(&[a, 4242]).is_err());
        let conversations = fx.query("SELECT COUNT(*) FROM chatapp_conversation", []);
        assert_eq!(conversations, 0);
        assert!(fx.admin.set_user_active(4242, false).is_err());
        assert!(fx.admin.delete_conversation(4242).is_err());
        assert!(
            fx.admin.create_user("a", "x", "y").is_err(),
            "username is unique"
        );
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        assert!(
            fx.admin.add_participant(conv, a).is_err(),
            "already a member"
        );
        assert_eq!(fx.admin.user_count().unwrap(), 1);

        let password: String = fx
            .admin
            .connection()
            .query_row("SELECT password FROM auth_user WHERE id = ?1", [a], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(password, "!");
    }

    #[test]
    fn ids_are_never_reused_after_a_delete() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let first = fx.admin.create_conversation(&[a]).unwrap();
        fx.admin.delete_conversation(first).unwrap();
        let second = fx.admin.create_conversation(&[a]).unwrap();
        assert!(second > first);
    }
}
