//! docs/protocol.md §8 and §9.11 on the embedded store: the gateway's migrate creates
//! Django's tables (columns, NOT NULL, keys, uniques, the unread check) and
//! its own `chatgate_` tables beside them; the
//! rows it writes hold what it broadcast, in Django's datetime text; and it
//! runs on a database Django created, without its own migrate mattering.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use chatgate::IoDriver;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::json;
use support::*;

on_both_drivers!(
    rows_hold_what_was_broadcast,
    runs_on_a_database_created_by_django
);

/// `name → (declared type, NOT NULL, primary key)` of a table.
fn columns(gw: &TestGateway, table: &str) -> BTreeMap<String, (String, bool, bool)> {
    let mut st = gw
        .db()
        .prepare(&format!("PRAGMA table_info(\"{table}\")"))
        .unwrap();
    st.query_map([], |r| {
        let ty: String = r.get(2)?;
        Ok((
            r.get(1)?,
            (ty.to_lowercase(), r.get(3)?, r.get::<_, i64>(5)? > 0),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn unique_sets(gw: &TestGateway, table: &str) -> BTreeSet<Vec<String>> {
    let db = gw.db();
    let mut st = db
        .prepare(&format!("PRAGMA index_list(\"{table}\")"))
        .unwrap();
    let indexes: Vec<(String, bool)> = st
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    indexes
        .into_iter()
        .filter(|(_, unique)| *unique)
        .map(|(name, _)| {
            let mut info = db
                .prepare(&format!("PRAGMA index_info(\"{name}\")"))
                .unwrap();
            let cols = info.query_map([], |r| r.get(2)).unwrap();
            cols.map(Result::unwrap).collect()
        })
        .collect()
}

/// `(column, referenced table, referenced column)` of a table's foreign keys.
fn foreign_keys(gw: &TestGateway, table: &str) -> BTreeSet<(String, String, String)> {
    let mut st = gw
        .db()
        .prepare(&format!("PRAGMA foreign_key_list(\"{table}\")"))
        .unwrap();
    st.query_map([], |r| Ok((r.get(3)?, r.get(2)?, r.get(4)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn cols(spec: &[(&str, &str, bool)]) -> BTreeMap<String, (String, bool, bool)> {
    spec.iter()
        .map(|(n, t, not_null)| (n.to_string(), (t.to_string(), *not_null, *n == "id")))
        .collect()
}

fn fk(spec: &[(&str, &str)]) -> BTreeSet<(String, String, String)> {
    spec.iter()
        .map(|(c, t)| (c.to_string(), t.to_string(), "id".to_string()))
        .collect()
}

#[test]
fn migrate_creates_the_django_tables() {
    let gw = TestGateway::start();
    let mut st = gw
        .db()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        tables,
        [
            "auth_user",
            "chatapp_conversation",
            "chatapp_conversationparticipant",
            "chatapp_message",
            "chatapp_messagedeletion",
            "chatgate_idempotency",
            "chatgate_reaction",
            "chatgate_readreceipt"
        ]
    );
    assert_eq!(
        columns(&gw, "auth_user"),
        cols(&[
            ("id", "integer", true),
            ("password", "varchar(128)", true),
            ("last_login", "datetime", false),
            ("is_superuser", "bool", true),
            ("username", "varchar(150)", true),
            ("first_name", "varchar(150)", true),
            ("last_name", "varchar(150)", true),
            ("email", "varchar(254)", true),
            ("is_staff", "bool", true),
            ("is_active", "bool", true),
            ("date_joined", "datetime", true),
        ])
    );
    assert_eq!(
        columns(&gw, "chatapp_conversation"),
        cols(&[
            ("id", "integer", true),
            ("created_at", "datetime", true),
            ("updated_at", "datetime", true)
        ])
    );
    let mut participant = columns(&gw, "chatapp_conversationparticipant");
    // PositiveIntegerField: Django's SQLite backend says "integer unsigned";
    // both have INTEGER affinity.
    let unread_type = participant
        .get_mut("unread_count")
        .expect("unread_count")
        .0
        .clone();
    assert!(
        unread_type == "integer" || unread_type == "integer unsigned",
        "unread_count type {unread_type}"
    );
    participant.get_mut("unread_count").unwrap().0 = "integer".into();
    assert_eq!(
        participant,
        cols(&[
            ("id", "integer", true),
            ("conversation_id", "bigint", true),
            ("user_id", "integer", true),
            ("unread_count", "integer", true),
            ("joined_at", "datetime", true),
        ])
    );
    assert_eq!(
        columns(&gw, "chatapp_message"),
        cols(&[
            ("id", "integer", true),
            ("conversation_id", "bigint", true),
            ("sender_id", "integer", true),
            ("content", "text", true),
            ("timestamp", "datetime", true),
        ])
    );
    assert_eq!(
        columns(&gw, "chatapp_messagedeletion"),
        cols(&[
            ("id", "integer", true),
            ("message_id", "bigint", true),
            ("user_id", "integer", true),
            ("deleted_at", "datetime", true),
        ])
    );

    let set = |v: &[&[&str]]| -> BTreeSet<Vec<String>> {
        v.iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect()
    };
    assert_eq!(unique_sets(&gw, "auth_user"), set(&[&["username"]]));
    assert_eq!(unique_sets(&gw, "chatapp_conversation"), set(&[]));
    assert_eq!(
        unique_sets(&gw, "chatapp_conversationparticipant"),
        set(&[&["conversation_id", "user_id"]])
    );
    assert_eq!(unique_sets(&gw, "chatapp_message"), set(&[]));
    assert_eq!(
        unique_sets(&gw, "chatapp_messagedeletion"),
        set(&[&["message_id", "user_id"]])
    );

    assert_eq!(
        foreign_keys(&gw, "chatapp_conversationparticipant"),
        fk(&[
            ("conversation_id", "chatapp_conversation"),
            ("user_id", "auth_user")
        ])
    );
    assert_eq!(
        foreign_keys(&gw, "chatapp_message"),
        fk(&[
            ("conversation_id", "chatapp_conversation"),
            ("sender_id", "auth_user")
        ])
    );
    assert_eq!(
        foreign_keys(&gw, "chatapp_messagedeletion"),
        fk(&[("message_id", "chatapp_message"), ("user_id", "auth_user")])
    );

    // The gateway's own v2 tables, beside Django's (docs/protocol.md §9.11).
    assert_eq!(
        columns(&gw, "chatgate_readreceipt"),
        cols(&[
            ("id", "integer", true),
            ("conversation_id", "bigint", true),
            ("user_id", "integer", true),
            ("message_id", "bigint", true),
            ("read_at", "datetime", true),
        ])
    );
    assert_eq!(
        columns(&gw, "chatgate_reaction"),
        cols(&[
            ("id", "integer", true),
            ("message_id", "bigint", true),
            ("user_id", "integer", true),
            ("emoji", "varchar(64)", true),
            ("created_at", "datetime", true),
        ])
    );
    assert_eq!(
        unique_sets(&gw, "chatgate_readreceipt"),
        set(&[&["conversation_id", "user_id"]])
    );
    assert_eq!(
        unique_sets(&gw, "chatgate_reaction"),
        set(&[&["message_id", "user_id", "emoji"]])
    );
    assert_eq!(
        foreign_keys(&gw, "chatgate_readreceipt"),
        fk(&[
            ("conversation_id", "chatapp_conversation"),
            ("user_id", "auth_user")
        ])
    );
    assert_eq!(
        foreign_keys(&gw, "chatgate_reaction"),
        fk(&[("message_id", "chatapp_message"), ("user_id", "auth_user")])
    );
    // The server API's idempotency keys (docs/protocol.md §10).
    let mut keyed = cols(&[
        ("key", "varchar(64)", true),
        ("conversation_id", "bigint", true),
        ("message_id", "bigint", false),
        ("created_at", "datetime", true),
    ]);
    keyed.get_mut("key").unwrap().2 = true; // the primary key
    assert_eq!(columns(&gw, "chatgate_idempotency"), keyed);
    assert_eq!(unique_sets(&gw, "chatgate_idempotency"), set(&[&["key"]]));
    assert_eq!(
        foreign_keys(&gw, "chatgate_idempotency"),
        fk(&[
            ("conversation_id", "chatapp_conversation"),
            ("message_id", "chatapp_message")
        ])
    );

    // unread_count >= 0 is enforced.
    let alice = gw.user("alice");
    let conv = gw.conversation(&[&alice]);
    let negative = gw.db().execute(
        "UPDATE chatapp_conversationparticipant SET unread_count = -1 WHERE conversation_id = ?1",
        [conv],
    );
    assert!(negative.is_err(), "a negative unread_count was accepted");
    // The store runs in WAL mode.
    let mode: String = gw
        .db()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
}

/// Django's SQLite datetime text: `YYYY-MM-DD HH:MM:SS[.ffffff]`, UTC, naive.
fn parse_django_datetime(text: &str) -> DateTime<Utc> {
    let ok_shape = text.len() == 19 || (text.len() == 26 && text.as_bytes()[19] == b'.');
    assert!(
        ok_shape && text.as_bytes()[10] == b' ',
        "not Django's datetime text: {text:?}"
    );
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .and_utc()
}

fn rows_hold_what_was_broadcast(driver: IoDriver) {
    let gw = TestGateway::on(driver);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    let joined: String = gw
        .db()
        .query_row(
            "SELECT joined_at FROM chatapp_conversationparticipant WHERE user_id = ?1",
            [bob.id],
            |r| r.get(0),
        )
        .unwrap();
    let mut a = gw.connect(conv, &alice);
    a.chat("stored as sent");
    let m = a.recv_new_message();
    let id = assert_new_message(&m, &alice, "stored as sent");
    let (text, conversation, sender, content): (String, i64, i64, String) = gw
        .db()
        .query_row(
            "SELECT timestamp, conversation_id, sender_id, content FROM chatapp_message WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (conversation, sender, content.as_str()),
        (conv, alice.id, "stored as sent")
    );
    let broadcast: DateTime<Utc> = m["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        parse_django_datetime(&text),
        broadcast,
        "stored {text} vs broadcast {}",
        m["timestamp"]
    );

    a.send_json(json!({"type": "delete_message", "message_id": id}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "message_deleted", "message_id": id})
    );
    let deleted_at: String = gw
        .db()
        .query_row(
            "SELECT deleted_at FROM chatapp_messagedeletion WHERE message_id = ?1 AND user_id = ?2",
            [id, alice.id],
            |r| r.get(0),
        )
        .unwrap();
    let deleted_at = parse_django_datetime(&deleted_at);
    assert!(deleted_at >= broadcast && (Utc::now() - deleted_at).num_seconds() < 60);
    // Storing a message does not touch joined_at.
    let joined_after: String = gw
        .db()
        .query_row(
            "SELECT joined_at FROM chatapp_conversationparticipant WHERE user_id = ?1",
            [bob.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(joined_after, joined);
}

/// The tables as Django 4.2's SQLite backend creates them (deferred foreign
/// keys, no column defaults), and rows as Django writes them.
const DJANGO_SQLITE: &str = r#"
CREATE TABLE "auth_user" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "password" varchar(128) NOT NULL, "last_login" datetime NULL, "is_superuser" bool NOT NULL, "username" varchar(150) NOT NULL UNIQUE, "last_name" varchar(150) NOT NULL, "email" varchar(254) NOT NULL, "is_staff" bool NOT NULL, "is_active" bool NOT NULL, "date_joined" datetime NOT NULL, "first_name" varchar(150) NOT NULL);
CREATE TABLE "chatapp_conversation" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "created_at" datetime NOT NULL, "updated_at" datetime NOT NULL);
CREATE TABLE "chatapp_conversationparticipant" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "unread_count" integer unsigned NOT NULL CHECK ("unread_count" >= 0), "joined_at" datetime NOT NULL, "conversation_id" bigint NOT NULL REFERENCES "chatapp_conversation" ("id") DEFERRABLE INITIALLY DEFERRED, "user_id" integer NOT NULL REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE "chatapp_message" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "content" text NOT NULL, "timestamp" datetime NOT NULL, "conversation_id" bigint NOT NULL REFERENCES "chatapp_conversation" ("id") DEFERRABLE INITIALLY DEFERRED, "sender_id" integer NOT NULL REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE "chatapp_messagedeletion" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "deleted_at" datetime NOT NULL, "message_id" bigint NOT NULL REFERENCES "chatapp_message" ("id") DEFERRABLE INITIALLY DEFERRED, "user_id" integer NOT NULL REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE UNIQUE INDEX "chatapp_conversationparticipant_conversation_id_user_id_8f2d4c1e_uniq" ON "chatapp_conversationparticipant" ("conversation_id", "user_id");
CREATE INDEX "chatapp_conversationparticipant_conversation_id_0c7a1e4b" ON "chatapp_conversationparticipant" ("conversation_id");
CREATE INDEX "chatapp_conversationparticipant_user_id_4dc7efd6" ON "chatapp_conversationparticipant" ("user_id");
CREATE INDEX "chatapp_message_conversation_id_751b6c97" ON "chatapp_message" ("conversation_id");
CREATE INDEX "chatapp_message_sender_id_9f6b0c3a" ON "chatapp_message" ("sender_id");
CREATE UNIQUE INDEX "chatapp_messagedeletion_message_id_user_id_2b1e7d9f_uniq" ON "chatapp_messagedeletion" ("message_id", "user_id");
CREATE INDEX "chatapp_messagedeletion_message_id_5e3f8a2c" ON "chatapp_messagedeletion" ("message_id");
CREATE INDEX "chatapp_messagedeletion_user_id_cae8a1e0" ON "chatapp_messagedeletion" ("user_id");

INSERT INTO auth_user VALUES (1, 'pbkdf2_sha256$600000$x$y', NULL, 0, 'johndoe', 'Doe', 'john@example.com', 0, 1, '2025-01-02 03:04:05.678901', 'John');
INSERT INTO auth_user VALUES (2, 'pbkdf2_sha256$600000$x$y', '2025-02-01 10:00:00', 0, 'janedoe', 'Doe', 'jane@example.com', 0, 1, '2025-01-02 03:04:06', 'Jane');
INSERT INTO chatapp_conversation VALUES (41, '2025-03-01 12:00:00', '2025-03-01 12:00:00');
INSERT INTO chatapp_conversationparticipant VALUES (1, 0, '2025-03-01 12:00:00', 41, 1);
INSERT INTO chatapp_conversationparticipant VALUES (2, 3, '2025-03-01 12:00:00', 41, 2);
INSERT INTO chatapp_message VALUES (500, 'written by Django', '2025-03-01 12:00:01.000001', 41, 1);
"#;

fn runs_on_a_database_created_by_django(driver: IoDriver) {
    let gw = TestGateway::start_prepared(
        |db| db.execute_batch(DJANGO_SQLITE).expect("Django's DDL"),
        |c| c.io_driver = driver,
    );
    let john = gw.existing_user(1);
    let jane = gw.existing_user(2);
    let mut j = gw.connect(41, &john);
    let mut k = gw.connect(41, &jane);
    j.chat("hello from the gateway");
    let m = k.recv_new_message();
    let id = assert_new_message(&m, &john, "hello from the gateway");
    assert_eq!(
        m["sender"],
        json!({"id": 1, "username": "johndoe", "first_name": "John", "last_name": "Doe"})
    );
    assert!(id > 500, "new id {id} continues above Django's rows");
    assert_eq!(j.recv_new_message(), m);
    assert_eq!(gw.unread(41, &jane), 4, "Django's count of 3, plus one");
    assert_eq!(gw.unread(41, &john), 0);
    // Deleting Django's own message and the gateway's.
    for del in [500, id] {
        k.send_json(json!({"type": "delete_message", "message_id": del}));
        assert_eq!(
            k.recv_json(),
            json!({"type": "message_deleted", "message_id": del})
        );
        assert_eq!(gw.deletions(del, &jane), 1);
    }
    k.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        j.recv_json(),
        json!({"type": "typing", "user_id": 2, "username": "janedoe", "is_typing": true})
    );
    // The rows the gateway wrote are in Django's datetime text.
    let ts: String = gw
        .db()
        .query_row(
            "SELECT timestamp FROM chatapp_message WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    parse_django_datetime(&ts);
    assert_eq!(gw.messages_of(41).len(), 2);
}
