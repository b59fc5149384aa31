//! Synchronous administration of a Postgres store, mirroring
//! `sqlite::Admin`: migrate (and its plan), users, conversations,
//! participants.
//!
//! Owns a private current-thread tokio runtime and one connection driven by
//! it (the connection task runs whenever a call blocks on the runtime).
//! Every write is a single statement, so it is atomic without an explicit
//! transaction and an unknown id (a foreign key, deferred or not) fails the
//! whole call.
//!
//! Must never: be used from a shard or from inside another runtime (every
//! call blocks the calling thread until the database answers).

use std::future::Future;

use tokio_postgres::types::ToSql;

use super::{
    describe, now, parse_url, MigrateError, MigrateOptions, MigrateReport, Plan, StoreError,
};
use crate::store::{ConversationId, UserId};

const CREATE_USER: &str = "INSERT INTO auth_user (password, last_login, is_superuser, username, \
     first_name, last_name, email, is_staff, is_active, date_joined) \
     VALUES ('!', NULL, false, $1, $2, $3, '', false, true, $4) RETURNING id";

const CREATE_CONVERSATION: &str = r#"
WITH conversation AS (
    INSERT INTO chatapp_conversation (created_at, updated_at) VALUES ($1, $1) RETURNING id
),
members AS (
    INSERT INTO chatapp_conversationparticipant (unread_count, joined_at, conversation_id, user_id)
    SELECT 0, $1, c.id, m.user_id
    FROM conversation c, unnest($2::bigint[]) WITH ORDINALITY AS m(user_id, ord)
    ORDER BY m.ord
)
SELECT id FROM conversation
"#;

const ADD_PARTICIPANT: &str = "INSERT INTO chatapp_conversationparticipant \
     (unread_count, joined_at, conversation_id, user_id) VALUES (0, $1, $2::bigint, $3::bigint)";

const DELETE_CONVERSATION: &str = r#"
WITH deletions AS (
    DELETE FROM chatapp_messagedeletion
    WHERE message_id IN (SELECT id FROM chatapp_message WHERE conversation_id = $1::bigint)
),
messages AS (
    DELETE FROM chatapp_message WHERE conversation_id = $1::bigint
),
participants AS (
    DELETE FROM chatapp_conversationparticipant WHERE conversation_id = $1::bigint
)
DELETE FROM chatapp_conversation WHERE id = $1::bigint
"#;

/// A blocking connection for the CLI and tests.
pub struct Admin {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Connects to `url` (a `postgres://` URL or libpq key=value string).
    /// Does not migrate: a database owned by Django already has its tables.
    pub fn connect(url: &str) -> Result<Admin, StoreError> {
        let config = parse_url(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start a runtime: {e}")))?;
        let (client, connection) = rt
            .block_on(config.connect(tokio_postgres::NoTls))
            .map_err(db_err)?;
        rt.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres admin connection ended");
            }
        });
        Ok(Admin { rt, client })
    }

    /// Creates the tables and indexes where missing, online (idempotent;
    /// `postgres/migrate.rs`), with the default options.
    pub fn migrate(&self) -> Result<(), StoreError> {
        self.rt.block_on(super::migrate(&self.client))
    }

    /// [`Admin::migrate`] with `options`; says what it ran.
    pub fn migrate_with(&self, options: &MigrateOptions) -> Result<MigrateReport, MigrateError> {
        self.rt.block_on(super::migrate_with(&self.client, options))
    }

    /// What a migration would do now (`--print-sql`, `--check`).
    pub fn migration_plan(&self) -> Result<Plan, MigrateError> {
        self.rt.block_on(super::inspect(&self.client))
    }

    /// Adds an active user with an unusable password (`!`) and no e-mail.
    pub fn create_user(
        &self,
        username: &str,
        first_name: &str,
        last_name: &str,
    ) -> Result<UserId, StoreError> {
        let at = now();
        let id: i32 = self.query_one(CREATE_USER, &[&username, &first_name, &last_name, &at])?;
        Ok(i64::from(id))
    }

    /// Activates or deactivates a user; an unknown id is an error.
    pub fn set_user_active(&self, id: UserId, active: bool) -> Result<(), StoreError> {
        let changed = self.execute(
            "UPDATE auth_user SET is_active = $2 WHERE id = $1::bigint",
            &[&id, &active],
        )?;
        expect_one(changed, "user", id)
    }

    /// Creates a conversation with `members` as participants, atomically; an
    /// unknown user id fails the whole call.
    pub fn create_conversation(&self, members: &[UserId]) -> Result<ConversationId, StoreError> {
        let at = now();
        self.query_one(CREATE_CONVERSATION, &[&at, &members])
    }

    /// Adds a participant with no unread messages.
    pub fn add_participant(&self, conv: ConversationId, user: UserId) -> Result<(), StoreError> {
        let at = now();
        self.execute(ADD_PARTICIPANT, &[&at, &conv, &user])
            .map(drop)
    }

    /// Deletes a conversation with its participants, messages and deletions.
    pub fn delete_conversation(&self, conv: ConversationId) -> Result<(), StoreError> {
        let deleted = self.execute(DELETE_CONVERSATION, &[&conv])?;
        expect_one(deleted, "conversation", conv)
    }

    /// Number of rows in `auth_user`.
    pub fn user_count(&self) -> Result<i64, StoreError> {
        self.query_one("SELECT count(*) FROM auth_user", &[])
    }

    /// The underlying connection (tests read rows directly); drive its
    /// futures with [`Admin::block_on`].
    pub fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// Runs `future` on the admin's runtime (which also drives the connection).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    fn query_one<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<T, StoreError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let row = self
            .rt
            .block_on(self.client.query_one(sql, params))
            .map_err(db_err)?;
        row.try_get(0).map_err(db_err)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.rt
            .block_on(self.client.execute(sql, params))
            .map_err(db_err)
    }
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Database(describe(&e))
}

fn expect_one(changed: u64, what: &str, id: i64) -> Result<(), StoreError> {
    match changed {
        0 => Err(StoreError::Database(format!("no {what} with id {id}"))),
        _ => Ok(()),
    }
}
