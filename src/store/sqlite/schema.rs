//! The SQLite schema: Django's five tables and the gateway's two v2 tables,
//! created idempotently.
//!
//! Owns `SCHEMA`: the tables as Django's SQLite backend creates them (column
//! types, NOT NULL flags, unique constraints, AUTOINCREMENT ids), plus the
//! indexes the worker's queries need under Django's index names;
//! `V2_SCHEMA`: the gateway's own `chatgate_readreceipt`,
//! `chatgate_reaction` (docs/protocol.md §9.11) and `chatgate_idempotency`
//! (the server API's idempotency keys, §10), with foreign keys to Django's tables
//! (`ON DELETE CASCADE`); and [`migrate`], which applies both in one
//! transaction, on databases created by any earlier version too.
//!
//! Paging a conversation's messages by id (history `before`, replay `since`)
//! needs an index on `chatapp_message (conversation_id, id)`. In SQLite that
//! is Django's own `conversation_id` index: `id` is the rowid, and every index
//! ends with the rowid, so its entries are ordered by (conversation_id, id).
//! A second index would only slow inserts down; a test checks the plan.
//!
//! Must never: alter or drop anything that exists (a database created by
//! Django is left as it is).

use rusqlite::Connection;

use super::{db_err, StoreError};

/// Django's tables as its SQLite backend creates them (AUTOINCREMENT: ids
/// are never reused), plus the indexes the worker's queries need, under
/// Django's index names. Foreign keys are immediate so a bad reference fails
/// its own statement, not the whole batch's COMMIT.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS "auth_user" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "password" varchar(128) NOT NULL,
    "last_login" datetime NULL,
    "is_superuser" bool NOT NULL,
    "username" varchar(150) NOT NULL UNIQUE,
    "first_name" varchar(150) NOT NULL,
    "last_name" varchar(150) NOT NULL,
    "email" varchar(254) NOT NULL,
    "is_staff" bool NOT NULL,
    "is_active" bool NOT NULL,
    "date_joined" datetime NOT NULL
);
CREATE TABLE IF NOT EXISTS "chatapp_conversation" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "created_at" datetime NOT NULL,
    "updated_at" datetime NOT NULL
);
CREATE TABLE IF NOT EXISTS "chatapp_conversationparticipant" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "unread_count" integer NOT NULL CHECK ("unread_count" >= 0),
    "joined_at" datetime NOT NULL,
    "conversation_id" bigint NOT NULL REFERENCES "chatapp_conversation" ("id"),
    "user_id" integer NOT NULL REFERENCES "auth_user" ("id"),
    UNIQUE ("conversation_id", "user_id")
);
CREATE TABLE IF NOT EXISTS "chatapp_message" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "content" text NOT NULL,
    "timestamp" datetime NOT NULL,
    "conversation_id" bigint NOT NULL REFERENCES "chatapp_conversation" ("id"),
    "sender_id" integer NOT NULL REFERENCES "auth_user" ("id")
);
CREATE TABLE IF NOT EXISTS "chatapp_messagedeletion" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "deleted_at" datetime NOT NULL,
    "message_id" bigint NOT NULL REFERENCES "chatapp_message" ("id"),
    "user_id" integer NOT NULL REFERENCES "auth_user" ("id"),
    UNIQUE ("message_id", "user_id")
);
CREATE INDEX IF NOT EXISTS "chatapp_conversationparticipant_user_id_4dc7efd6"
    ON "chatapp_conversationparticipant" ("user_id");
CREATE INDEX IF NOT EXISTS "chatapp_message_conversation_id_751b6c97"
    ON "chatapp_message" ("conversation_id");
CREATE INDEX IF NOT EXISTS "chatapp_messagedeletion_user_id_cae8a1e0"
    ON "chatapp_messagedeletion" ("user_id");
"#;

/// The gateway's v2 tables, in the style of Django's (a `chatgate migrate`
/// of a Django database adds these and nothing else). `emoji` holds at most
/// 16 code points, 64 bytes of UTF-8. The `user_id` indexes keep the cascade
/// of a deleted user cheap; the unique constraints serve every lookup by
/// conversation or message.
const V2_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS "chatgate_readreceipt" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "message_id" bigint NOT NULL,
    "read_at" datetime NOT NULL,
    "conversation_id" bigint NOT NULL
        REFERENCES "chatapp_conversation" ("id") ON DELETE CASCADE,
    "user_id" integer NOT NULL REFERENCES "auth_user" ("id") ON DELETE CASCADE,
    UNIQUE ("conversation_id", "user_id")
);
CREATE TABLE IF NOT EXISTS "chatgate_reaction" (
    "id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "emoji" varchar(64) NOT NULL,
    "created_at" datetime NOT NULL,
    "message_id" bigint NOT NULL REFERENCES "chatapp_message" ("id") ON DELETE CASCADE,
    "user_id" integer NOT NULL REFERENCES "auth_user" ("id") ON DELETE CASCADE,
    UNIQUE ("message_id", "user_id", "emoji")
);
CREATE INDEX IF NOT EXISTS "chatgate_readreceipt_user_id"
    ON "chatgate_readreceipt" ("user_id");
CREATE INDEX IF NOT EXISTS "chatgate_reaction_user_id"
    ON "chatgate_reaction" ("user_id");
CREATE TABLE IF NOT EXISTS "chatgate_idempotency" (
    "key" varchar(64) NOT NULL PRIMARY KEY,
    "conversation_id" bigint NOT NULL
        REFERENCES "chatapp_conversation" ("id") ON DELETE CASCADE,
    "message_id" bigint NULL REFERENCES "chatapp_message" ("id") ON DELETE CASCADE,
    "created_at" datetime NOT NULL
);
CREATE INDEX IF NOT EXISTS "chatgate_idempotency_created_at"
    ON "chatgate_idempotency" ("created_at");
CREATE INDEX IF NOT EXISTS "chatgate_idempotency_message_id"
    ON "chatgate_idempotency" ("message_id");
CREATE INDEX IF NOT EXISTS "chatgate_idempotency_conversation_id"
    ON "chatgate_idempotency" ("conversation_id");
"#;

/// Creates Django's tables, the worker's indexes and the gateway's v2
/// tables if they are missing (idempotent).
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    tx.execute_batch(SCHEMA).map_err(db_err)?;
    tx.execute_batch(V2_SCHEMA).map_err(db_err)?;
    tx.commit().map_err(db_err)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::sqlite::testing::{names, Fixture};
    use crate::store::sqlite::Admin;

    fn table_columns(conn: &Connection, table: &str) -> Vec<(String, bool)> {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info(\"{table}\")"))
            .unwrap();
        let rows = stmt.query_map([], |row| Ok((row.get(1)?, row.get(3)?)));
        rows.unwrap().map(Result::unwrap).collect()
    }

    fn unique_column_sets(conn: &Connection, table: &str) -> BTreeSet<Vec<String>> {
        let mut list = conn
            .prepare(&format!("PRAGMA index_list(\"{table}\")"))
            .unwrap();
        let indexes: Vec<(String, bool)> = list
            .query_map([], |row| Ok((row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let unique = indexes.into_iter().filter(|(_, unique)| *unique);
        unique
            .map(|(name, _)| {
                let mut info = conn
                    .prepare(&format!("PRAGMA index_info(\"{name}\")"))
                    .unwrap();
                let cols = info.query_map([], |row| row.get(2)).unwrap();
                cols.map(Result::unwrap).collect()
            })
            .collect()
    }

    #[test]
    fn migrate_is_idempotent_and_creates_djangos_tables() {
        let fx = Fixture::new();
        let conn = fx.admin.connection();
        migrate(conn).unwrap();
        migrate(conn).unwrap();
        drop(Admin::open(&fx.path).unwrap());

        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .unwrap();
        let tables: BTreeSet<String> = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected_tables = [
            "auth_user",
            "chatapp_conversation",
            "chatapp_conversationparticipant",
            "chatapp_message",
            "chatapp_messagedeletion",
            "chatgate_idempotency",
            "chatgate_reaction",
            "chatgate_readreceipt",
        ];
        assert_eq!(
            tables,
            expected_tables.iter().map(|t| t.to_string()).collect()
        );

        let nn = |cols: &[(&str, bool)]| -> Vec<(String, bool)> {
            cols.iter().map(|(c, n)| (c.to_string(), *n)).collect()
        };
        assert_eq!(
            table_columns(conn, "auth_user"),
            nn(&[
                ("id", true),
                ("password", true),
                ("last_login", false),
                ("is_superuser", true),
                ("username", true),
                ("first_name", true),
                ("last_name", true),
                ("email", true),
                ("is_staff", true),
                ("is_active", true),
                ("date_joined", true),
            ])
        );
        assert_eq!(
            table_columns(conn, "chatapp_conversation"),
            nn(&[("id", true), ("created_at", true), ("updated_at", true)])
        );
        assert_eq!(
            table_columns(conn, "chatapp_conversationparticipant"),
            nn(&[
                ("id", true),
                ("unread_count", true),
                ("joined_at", true),
                ("conversation_id", true),
                ("user_id", true),
            ])
        );
        assert_eq!(
            table_columns(conn, "chatapp_message"),
            nn(&[
                ("id", true),
                ("content", true),
                ("timestamp", true),
                ("conversation_id", true),
                ("sender_id", true),
            ])
        );
        assert_eq!(
            table_columns(conn, "chatapp_messagedeletion"),
            nn(&[
                ("id", true),
                ("deleted_at", true),
                ("message_id", true),
                ("user_id", true),
            ])
        );

        let uniques = |sets: &[&[&str]]| -> BTreeSet<Vec<String>> {
            sets.iter().map(|cols| names(cols)).collect()
        };
        assert_eq!(
            unique_column_sets(conn, "auth_user"),
            uniques(&[&["username"]])
        );
        assert_eq!(
            unique_column_sets(conn, "chatapp_conversationparticipant"),
            uniques(&[&["conversation_id", "user_id"]])
        );
        assert_eq!(
            unique_column_sets(conn, "chatapp_messagedeletion"),
            uniques(&[&["message_id", "user_id"]])
        );
        assert!(unique_column_sets(conn, "chatapp_message").is_empty());
    }

    /// (column, referenced table, ON DELETE) of a table's foreign keys.
    fn foreign_keys(conn: &Connection, table: &str) -> BTreeSet<(String, String, String)> {
        let mut stmt = conn
            .prepare(&format!("PRAGMA foreign_key_list(\"{table}\")"))
            .unwrap();
        let rows = stmt.query_map([], |row| Ok((row.get(3)?, row.get(2)?, row.get(6)?)));
        rows.unwrap().map(Result::unwrap).collect()
    }

    fn cascades(spec: &[(&str, &str)]) -> BTreeSet<(String, String, String)> {
        let row = |(c, t): &(&str, &str)| (c.to_string(), t.to_string(), "CASCADE".to_string());
        spec.iter().map(row).collect()
    }

    #[test]
    fn migrate_creates_the_chatgate_tables_with_cascading_keys() {
        let fx = Fixture::new();
        let conn = fx.admin.connection();
        let nn = |cols: &[&str]| -> Vec<(String, bool)> {
            cols.iter().map(|c| (c.to_string(), true)).collect()
        };
        assert_eq!(
            table_columns(conn, "chatgate_readreceipt"),
            nn(&["id", "message_id", "read_at", "conversation_id", "user_id"])
        );
        assert_eq!(
            table_columns(conn, "chatgate_reaction"),
            nn(&["id", "emoji", "created_at", "message_id", "user_id"])
        );
        assert_eq!(
            unique_column_sets(conn, "chatgate_readreceipt"),
            [names(&["conversation_id", "user_id"])].into()
        );
        assert_eq!(
            unique_column_sets(conn, "chatgate_reaction"),
            [names(&["message_id", "user_id", "emoji"])].into()
        );
        assert_eq!(
            foreign_keys(conn, "chatgate_readreceipt"),
            cascades(&[
                ("conversation_id", "chatapp_conversation"),
                ("user_id", "auth_user")
            ])
        );
        assert_eq!(
            foreign_keys(conn, "chatgate_reaction"),
            cascades(&[("message_id", "chatapp_message"), ("user_id", "auth_user")])
        );
        assert_eq!(
            unique_column_sets(conn, "chatgate_idempotency"),
            [names(&["key"])].into()
        );
        assert_eq!(
            foreign_keys(conn, "chatgate_idempotency"),
            cascades(&[
                ("conversation_id", "chatapp_conversation"),
                ("message_id", "chatapp_message")
            ])
        );
    }

    #[test]
    fn migrate_adds_the_chatgate_tables_to_an_older_database_and_keeps_its_rows() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        fx.write_messages(conv, a, 3);
        let conn = fx.admin.connection();
        conn.execute_batch(
            "DROP TABLE chatgate_readreceipt; DROP TABLE chatgate_reaction; \
             DROP TABLE chatgate_idempotency;",
        )
        .unwrap();

        migrate(conn).unwrap();
        assert_eq!(fx.messages(), 3);
        let v2_tables = fx.query(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'chatgate_%'",
            [],
        );
        assert_eq!(v2_tables, 3);
    }

    #[test]
    fn deleting_a_conversation_cascades_to_its_receipts_and_reactions() {
        let fx = Fixture::new();
        let a = fx.user("a");
        let conv = fx.admin.create_conversation(&[a]).unwrap();
        let m = fx.write_messages(conv, a, 1)[0];
        let conn = fx.admin.connection();
        conn.execute(
            "INSERT INTO chatgate_readreceipt (message_id, read_at, conversation_id, user_id) \
             VALUES (?1, '2025-01-01 00:00:00.000000', ?2, ?3)",
            [m, conv, a],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO chatgate_reaction (emoji, created_at, message_id, user_id) \
             VALUES ('👍', '2025-01-01 00:00:00.000000', ?1, ?2)",
            [m, a],
        )
        .unwrap();

        fx.admin.delete_conversation(conv).unwrap();
        let left = fx.query(
            "SELECT (SELECT COUNT(*) FROM chatgate_readreceipt) + \
             (SELECT COUNT(*) FROM chatgate_reaction)",
            [],
        );
        assert_eq!(left, 0);
    }
}
