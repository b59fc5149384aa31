//! Provisioning (users, conversations, participants) and reads of a
//! [`TestGateway`]'s database, the same on SQLite and Postgres.

use std::time::Duration;

use chatgate::store::sqlite::Admin;
use serde_json::{json, Value};

use super::gateway::Db;
use super::pg_support::TestDb;
use super::{StoreKind, TestGateway};

/// A provisioned user with a valid access token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub token: String,
}

impl User {
    /// The `sender` object of `new_message`.
    pub fn profile(&self) -> Value {
        json!({
            "id": self.id,
            "username": self.username,
            "first_name": self.first_name,
            "last_name": self.last_name,
        })
    }
}

/// Provisioning and database reads, on either store.
impl TestGateway {
    /// Which store this gateway runs on.
    pub fn store_kind(&self) -> StoreKind {
        self.store
    }

    /// A new active user `name` ("Name" "Tester") with a one-hour token.
    pub fn user(&self, name: &str) -> User {
        let mut first = name.to_string();
        first[..1].make_ascii_uppercase();
        let last = format!("{first}-Tester");
        let id = match &self.database {
            Db::Sqlite(admin) => admin.create_user(name, &first, &last),
            Db::Postgres(db) => db.admin().create_user(name, &first, &last),
        }
        .expect("create user");
        User {
            id,
            username: name.to_string(),
            first_name: first,
            last_name: last,
            token: self.token_for(id),
        }
    }

    /// A user already in `auth_user` (e.g. inserted with SQL), with a token.
    pub fn existing_user(&self, id: i64) -> User {
        let (username, first_name, last_name) = match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT username, first_name, last_name FROM auth_user WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .expect("auth_user row"),
            Db::Postgres(_) => {
                let r = self.pg_row(
                    "SELECT username::text, first_name::text, last_name::text \
                     FROM auth_user WHERE id = $1::bigint",
                    &[&id],
                );
                let r = r.expect("auth_user row");
                (r.get(0), r.get(1), r.get(2))
            }
        };
        User {
            id,
            username,
            first_name,
            last_name,
            token: self.token_for(id),
        }
    }

    /// A new conversation with these participants.
    pub fn conversation(&self, users: &[&User]) -> i64 {
        let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
        match &self.database {
            Db::Sqlite(admin) => admin.create_conversation(&ids),
            Db::Postgres(db) => db.admin().create_conversation(&ids),
        }
        .expect("create conversation")
    }

    /// Users `alice` and `bob` and a new conversation of the two.
    pub fn alice_and_bob(&self) -> (User, User, i64) {
        let alice = self.user("alice");
        let bob = self.user("bob");
        let conv = self.conversation(&[&alice, &bob]);
        (alice, bob, conv)
    }

    /// Activates or deactivates a user (on either store).
    pub fn set_user_active(&self, user_id: i64, active: bool) {
        match &self.database {
            Db::Sqlite(admin) => admin.set_user_active(user_id, active),
            Db::Postgres(db) => db.admin().set_user_active(user_id, active),
        }
        .unwrap_or_else(|e| panic!("set user {user_id} active={active}: {e}"))
    }

    /// Adds a participant with no unread messages (on either store).
    pub fn add_participant(&self, conversation: i64, user_id: i64) {
        match &self.database {
            Db::Sqlite(admin) => admin.add_participant(conversation, user_id),
            Db::Postgres(db) => db.admin().add_participant(conversation, user_id),
        }
        .unwrap_or_else(|e| panic!("add user {user_id} to conversation {conversation}: {e}"))
    }

    /// Deletes a conversation with its participants, messages and deletions
    /// (on either store).
    pub fn delete_conversation(&self, conversation: i64) {
        match &self.database {
            Db::Sqlite(admin) => admin.delete_conversation(conversation),
            Db::Postgres(db) => db.admin().delete_conversation(conversation),
        }
        .unwrap_or_else(|e| panic!("delete conversation {conversation}: {e}"))
    }

    /// A valid one-hour access token minted by the gateway's own code.
    pub fn token_for(&self, user_id: i64) -> String {
        chatgate::auth::mint_token(&self.config.jwt, user_id, Duration::from_secs(3600))
    }

    /// The SQLite admin; panics on Postgres (use [`TestGateway::pg_admin`],
    /// or the store-neutral helpers such as [`TestGateway::set_user_active`]).
    pub fn admin(&self) -> &Admin {
        match &self.database {
            Db::Sqlite(admin) => admin,
            Db::Postgres(_) => panic!("admin(): this gateway runs on Postgres, not SQLite"),
        }
    }

    /// The Postgres admin of this gateway's database; panics on SQLite.
    pub fn pg_admin(&self) -> &chatgate::store::postgres::Admin {
        self.pg_db().admin()
    }

    /// This gateway's Postgres test database; panics on SQLite.
    pub fn pg_db(&self) -> &TestDb {
        match &self.database {
            Db::Postgres(db) => db,
            Db::Sqlite(_) => panic!("pg_db(): this gateway runs on SQLite, not Postgres"),
        }
    }

    /// The SQLite connection; panics on Postgres.
    pub fn db(&self) -> &rusqlite::Connection {
        self.admin().connection()
    }

    /// At most one row of a query on this gateway's Postgres database.
    fn pg_row(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Option<tokio_postgres::Row> {
        let admin = self.pg_admin();
        admin
            .block_on(admin.client().query_opt(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// Every row of a query on this gateway's Postgres database.
    fn pg_rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        let admin = self.pg_admin();
        admin
            .block_on(admin.client().query(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// `(conversation_id, sender_id, content)` of a stored message.
    pub fn message_row(&self, id: i64) -> Option<(i64, i64, String)> {
        use rusqlite::OptionalExtension;
        match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT conversation_id, sender_id, content FROM chatapp_message WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .expect("query chatapp_message"),
            Db::Postgres(_) => self
                .pg_row(
                    "SELECT conversation_id::bigint, sender_id::bigint, content \
                     FROM chatapp_message WHERE id = $1::bigint",
                    &[&id],
                )
                .map(|r| (r.get(0), r.get(1), r.get(2))),
        }
    }

    /// `(id, content)` of every stored message of a conversation, by id.
    pub fn messages_of(&self, conversation: i64) -> Vec<(i64, String)> {
        match &self.database {
            Db::Sqlite(admin) => {
                let mut st = admin
                    .connection()
                    .prepare(
                        "SELECT id, content FROM chatapp_message WHERE conversation_id = ?1 ORDER BY id",
                    )
                    .expect("prepare");
                st.query_map([conversation], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
            Db::Postgres(_) => self
                .pg_rows(
                    "SELECT id::bigint, content FROM chatapp_message \
                     WHERE conversation_id = $1::bigint ORDER BY id",
                    &[&conversation],
                )
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }

    pub fn unread(&self, conversation: i64, user: &User) -> i64 {
        match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT unread_count FROM chatapp_conversationparticipant \
                     WHERE conversation_id = ?1 AND user_id = ?2",
                    [conversation, user.id],
                    |r| r.get(0),
                )
                .expect("participant row"),
            Db::Postgres(_) => self
                .pg_row(
                    "SELECT unread_count::bigint FROM chatapp_conversationparticipant \
                     WHERE conversation_id = $1::bigint AND user_id = $2::bigint",
                    &[&conversation, &user.id],
                )
                .expect("participant row")
                .get(0),
        }
    }

    /// Number of `chatapp_messagedeletion` rows for (message, user).
    pub fn deletions(&self, message_id: i64, user: &User) -> i64 {
        match &self.database {
            Db::Sqlite(admin) => admin
                .connection()
                .query_row(
                    "SELECT COUNT(*) FROM chatapp_messagedeletion WHERE message_id = ?1 AND user_id = ?2",
                    [message_id, user.id],
                    |r| r.get(0),
                )
                .expect("count deletions"),
            Db::Postgres(_) => self
                .pg_row(
                    "SELECT count(*)::bigint FROM chatapp_messagedeletion \
                     WHERE message_id = $1::bigint AND user_id = $2::bigint",
                    &[&message_id, &user.id],
                )
                .expect("a count")
                .get(0),
        }
    }
}
