//! The reference side of the Django interop tests, alone: the small Django
//! Channels project of `tests/django_app/` under Daphne speaks the protocol
//! of docs/protocol.md §1–5 on a database made from Django's DDL, with
//! tokens minted by chatgate, and its channel layer carries `group_send`s
//! from a separate `manage.py` process. Once per pinned stack
//! (channels_redis 4.1 and 4.3) and layer kind (core, pub/sub), with
//! encryption keys and the JSON serializer in some variants.
//!
//! No chatgate runs here: these tests prove the reference right, so that
//! interop tests against it prove the gateway right.

mod django_support;
mod pg_support;

use std::time::Duration;

use bytes::Bytes;
use chatgate::store::UserProfile;
use django_support::{
    group_send_all, layer_info, redis_reachable, Daphne, DjangoSettings, FlushOnDrop, Format,
    LayerKind, Stack, Venv,
};
use pg_support::{Read, Schema, TestDb, WsClient};
use serde_json::{json, Value};
use tungstenite::Message;

/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(300);

/// The users and conversation of one scenario.
struct Cast {
    alice: i64,
    bob: i64,
    /// Not a participant of `conversation`.
    eve: i64,
    conversation: i64,
}

fn cast(db: &TestDb) -> Cast {
    let alice = db.user("alice");
    let bob = db.user("bob");
    let eve = db.user("eve");
    let conversation = db
        .admin()
        .create_conversation(&[alice, bob])
        .expect("create the conversation");
    Cast {
        alice,
        bob,
        eve,
        conversation,
    }
}

/// Everything of one stack and layer: the layer Django builds, the socket
/// protocol, and group_sends from another process.
fn scenario(test: &str, stack: Stack, configure: impl FnOnce(DjangoSettings) -> DjangoSettings) {
    let Some(venv) = Venv::find(stack, test) else {
        return;
    };
    if !redis_reachable(test) {
        return;
    }
    let Some(db) = TestDb::create(test, Schema::Django) else {
        return;
    };
    let cast = cast(&db);
    let settings = configure(DjangoSettings::new(&venv, &db.name));
    let _flush = FlushOnDrop(settings.clone());
    check_layer(&settings);
    let daphne = Daphne::start(&settings);

    refusals(&daphne, &db, &cast);
    let mut alice = daphne.connect(cast.conversation, cast.alice);
    let mut alice2 = daphne.connect(cast.conversation, cast.alice);
    let mut bob = daphne.connect(cast.conversation, cast.bob);

    chat_both_ways(&db, &cast, &mut alice, &mut alice2, &mut bob);
    typing_skips_the_typist(&cast, &mut alice, &mut alice2, &mut bob);
    reply_errors(&mut alice, &mut bob);
    delete_for_one_user(&db, &cast, &mut alice, &mut bob);
    django_group_send(&settings, &cast, &mut alice, &mut alice2, &mut bob);
}

/// The settings reached channels_redis.
fn check_layer(settings: &DjangoSettings) {
    let info = layer_info(settings);
    let backend = match settings.kind {
        LayerKind::Core => "channels_redis.core.RedisChannelLayer",
        LayerKind::PubSub => "channels_redis.pubsub.RedisPubSubChannelLayer",
    };
    assert_eq!(info["backend"], backend, "{info}");
    assert_eq!(
        info["channels_redis"],
        format!("{}.0", settings.venv.stack.version()),
        "{info}"
    );
    assert_eq!(info["config"]["prefix"], settings.prefix, "{info}");
    assert_eq!(info["config"]["hosts"], json!(settings.hosts), "{info}");
    assert_eq!(info["encrypted"], !settings.keys.is_empty(), "{info}");
    if !settings.keys.is_empty() {
        assert_eq!(
            info["config"]["symmetric_encryption_keys"],
            settings.keys.len(),
            "{info}"
        );
    }
    let format = settings.format.map(|f| match f {
        Format::Msgpack => "msgpack",
        Format::Json => "json",
    });
    assert_eq!(
        info["config"]
            .get("serializer_format")
            .and_then(Value::as_str),
        format,
        "{info}"
    );
    // redis-py 8 breaks idle consumers (TECH-NOTES §10): its default
    // socket_timeout (5 s) equals channels_redis's BZPOPMIN timeout (5 s),
    // so a consumer's read races the server's empty answer. A race no short
    // test catches reliably: the pin is checked instead.
    let redis_major: u32 = info["redis"].as_str().unwrap_or("")[..1]
        .parse()
        .expect("redis-py version");
    assert!((5..=7).contains(&redis_major), "{info}");
}

/// §1/§5: refused tokens close with 4001, non-participants with 4003, both
/// after the upgrade.
fn refusals(daphne: &Daphne, db: &TestDb, cast: &Cast) {
    let settings = &daphne.settings;
    let foreign = settings.clone().secret("another-secret").token(cast.alice);
    let inactive = db.user("inactive");
    db.admin()
        .set_user_active(inactive, false)
        .expect("deactivate");
    let refused = [
        ("no token", format!("/ws/chat/{}/", cast.conversation)),
        (
            "another secret",
            format!("/ws/chat/{}/?token={foreign}", cast.conversation),
        ),
        (
            "garbage",
            format!("/ws/chat/{}/?token=not.a.jwt", cast.conversation),
        ),
        (
            "unknown user",
            format!(
                "/ws/chat/{}/?token={}",
                cast.conversation,
                settings.token(999_999)
            ),
        ),
        (
            "inactive user",
            format!(
                "/ws/chat/{}/?token={}",
                cast.conversation,
                settings.token(inactive)
            ),
        ),
    ];
    for (why, path) in &refused {
        let mut client = daphne.try_open(path).unwrap_or_else(|e| {
            panic!("{why}: the upgrade must be accepted before the close: {e}")
        });
        assert_close(&mut client, 4001, why);
    }
    let not_member = daphne.open(cast.conversation, &settings.token(cast.eve));
    let no_conversation = daphne.open(cast.conversation + 1000, &settings.token(cast.alice));
    for (mut client, why) in [
        (not_member, "not a participant"),
        (no_conversation, "no such conversation"),
    ] {
        assert_close(&mut client, 4003, why);
    }
}

fn assert_close(client: &mut WsClient, code: u16, why: &str) {
    match client.read(pg_support::READ_TIMEOUT) {
        Read::Closed(Some(got)) => assert_eq!(got, code, "{why}"),
        other => panic!("{why}: expected close {code}, got {other:?}"),
    }
}

/// §2/§3: chat both ways; every socket of the conversation, the sender's
/// included, gets the same message object; it is the row in
/// chatapp_message, and exactly what chatgate encodes for that row.
fn chat_both_ways(
    db: &TestDb,
    cast: &Cast,
    alice: &mut WsClient,
    alice2: &mut WsClient,
    bob: &mut WsClient,
) {
    alice.send_json(json!({"type": "chat_message", "content": "  Hello Bob \u{3000}"}));
    let sent = alice.recv_new_message();
    assert_eq!(alice2.recv_new_message(), sent);
    assert_eq!(bob.recv_new_message(), sent);
    assert_eq!(sent["content"], "Hello Bob", "Python str.strip() semantics");
    assert_row_matches(db, cast, cast.alice, &sent);

    bob.send_json(json!({"type": "chat_message", "content": "Hi Alice ✓"}));
    let reply = bob.recv_new_message();
    assert_eq!(alice.recv_new_message(), reply);
    assert_eq!(alice2.recv_new_message(), reply);
    assert_row_matches(db, cast, cast.bob, &reply);
    assert!(reply["id"].as_i64() > sent["id"].as_i64());

    assert_eq!(db.messages(), 2);
    assert_eq!(db.unread(cast.conversation, cast.alice), 1);
    assert_eq!(db.unread(cast.conversation, cast.bob), 1);
}

/// The message object equals its row, encoded by chatgate's own encoder
/// (field order, sender object, DRF's timestamp text).
fn assert_row_matches(db: &TestDb, cast: &Cast, sender: i64, message: &Value) {
    let id = message["id"].as_i64().expect("a numeric id");
    let admin = db.admin();
    let row = admin
        .block_on(admin.client().query_one(
            "SELECT m.content, m.timestamp, m.conversation_id, m.sender_id::bigint, \
                    u.username, u.first_name, u.last_name \
             FROM chatapp_message m JOIN auth_user u ON u.id = m.sender_id WHERE m.id = $1",
            &[&id],
        ))
        .unwrap_or_else(|e| panic!("message {id} is not stored: {e}"));
    assert_eq!(row.get::<_, i64>(2), cast.conversation);
    assert_eq!(row.get::<_, i64>(3), sender);
    let profile = UserProfile {
        id: sender,
        username: row.get(4),
        first_name: row.get(5),
        last_name: row.get(6),
        is_active: true,
    };
    let mut frame = Vec::new();
    chatgate::protocol::encode_new_message(
        &mut frame,
        id,
        &chatgate::protocol::sender_json(&profile),
        row.get::<_, &str>(0),
        row.get(1),
    );
    let ours = chatgate::protocol::new_message_object(&Bytes::from(frame));
    let ours: Value = serde_json::from_slice(&ours).expect("chatgate's message object");
    assert_eq!(message, &ours, "Django's message object vs chatgate's");
    let keys: Vec<&str> = message
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{message}");
}

/// §2: typing reaches the other users' sockets, never the typist's own.
fn typing_skips_the_typist(
    cast: &Cast,
    alice: &mut WsClient,
    alice2: &mut WsClient,
    bob: &mut WsClient,
) {
    alice.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        bob.recv_json(),
        json!({"type": "typing", "user_id": cast.alice, "username": "alice", "is_typing": true})
    );
    bob.send_json(json!({"type": "typing"}));
    let bob_typing =
        json!({"type": "typing", "user_id": cast.bob, "username": "bob", "is_typing": false});
    assert_eq!(alice.recv_json(), bob_typing);
    assert_eq!(alice2.recv_json(), bob_typing);
    // Group events reach a socket in the order they were sent: a chat
    // message after the typing proves no typing frame is queued for alice.
    alice.send_json(json!({"type": "chat_message", "content": "after typing"}));
    for socket in [&mut *alice, &mut *alice2, &mut *bob] {
        assert_eq!(socket.recv_new_message()["content"], "after typing");
    }
    bob.expect_silence(QUIET);
}

/// §4: reply errors go to the offending socket only, which stays open.
fn reply_errors(alice: &mut WsClient, bob: &mut WsClient) {
    let cases: [(Message, &str); 10] = [
        (Message::text("not json"), "Invalid JSON"),
        (Message::text("[1, 2]"), "Unknown message type"),
        (Message::text(r#"{"content": "x"}"#), "Unknown message type"),
        (
            Message::text(r#"{"type": "shout"}"#),
            "Unknown message type",
        ),
        (
            Message::text(r#"{"type": "chat_message", "content": 5}"#),
            "Invalid message format",
        ),
        (
            Message::text(r#"{"type": "chat_message", "content": " \n\t "}"#),
            "Empty message",
        ),
        (
            Message::text(json!({"type": "chat_message", "content": "x".repeat(5001)}).to_string()),
            "Message too long",
        ),
        (
            Message::text(r#"{"type": "typing", "is_typing": "yes"}"#),
            "Invalid message format",
        ),
        (
            Message::text(r#"{"type": "delete_message"}"#),
            "Message ID required",
        ),
        (
            Message::binary(&b"\x01\x02"[..]),
            "Binary frames are not supported",
        ),
    ];
    for (frame, error) in cases {
        let shown = format!("{frame:?}");
        alice.ws.send(frame).expect("send a frame");
        assert_eq!(
            alice.recv_json(),
            json!({"type": "error", "message": error}),
            "{}",
            &shown[..shown.len().min(80)]
        );
    }
    bob.expect_silence(QUIET);
}

/// §2: delete_message is per user: a row in chatapp_messagedeletion, the
/// reply to this socket only, the message row stays.
fn delete_for_one_user(db: &TestDb, cast: &Cast, alice: &mut WsClient, bob: &mut WsClient) {
    let first = db.scalar("SELECT min(id) FROM chatapp_message", &[]);
    for id in [json!(first), json!(first.to_string())] {
        alice.send_json(json!({"type": "delete_message", "message_id": id}));
        assert_eq!(
            alice.recv_json(),
            json!({"type": "message_deleted", "message_id": first})
        );
    }
    for bad in [json!(-1), json!("1.5"), json!(first + 10_000)] {
        alice.send_json(json!({"type": "delete_message", "message_id": bad}));
        assert_eq!(
            alice.recv_json(),
            json!({"type": "error", "message": "Failed to delete message"}),
            "{bad}"
        );
    }
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM chatapp_messagedeletion WHERE message_id = $1 AND user_id = $2::bigint",
            &[&first, &cast.alice]
        ),
        1
    );
    assert_eq!(db.messages(), 3);
    bob.expect_silence(QUIET);
}

/// §8's event types from another Django process: chat_message_broadcast
/// reaches every socket as new_message with that object as it is;
/// typing_indicator skips its user; the gateway's chatgate.send and
/// chatgate.disconnect do not crash the consumers.
fn django_group_send(
    settings: &DjangoSettings,
    cast: &Cast,
    alice: &mut WsClient,
    alice2: &mut WsClient,
    bob: &mut WsClient,
) {
    let message = json!({
        "id": 9_007_199_254_740_991_i64,
        "sender": {"id": cast.bob, "username": "bob", "first_name": "Bób", "last_name": ""},
        "content": "from a Celery task ✓",
        "timestamp": "2025-12-11T10:30:00Z",
    });
    let group = format!("chat_{}", cast.conversation);
    group_send_all(
        settings,
        &group,
        &[
            json!({"type": "chat_message_broadcast", "message": message}),
            json!({"type": "typing_indicator", "user_id": cast.alice, "username": "alice", "is_typing": true}),
            json!({"type": "chatgate.send", "event": {"type": "custom", "n": 1}}),
            json!({"type": "chatgate.send", "event": {"type": "v2"}, "v2_only": true}),
            json!({"type": "chatgate.disconnect", "user_id": cast.bob, "code": 4003}),
        ],
    );
    for socket in [&mut *alice, &mut *alice2, &mut *bob] {
        assert_eq!(
            socket.recv_json(),
            json!({"type": "new_message", "message": message})
        );
    }
    assert_eq!(
        bob.recv_json(),
        json!({"type": "typing", "user_id": cast.alice, "username": "alice", "is_typing": true})
    );
    for socket in [&mut *alice, &mut *alice2, &mut *bob] {
        assert_eq!(socket.recv_json(), json!({"type": "custom", "n": 1}));
    }
    assert_close(bob, 4003, "chatgate.disconnect of bob");
    // alice's consumers survived all of it.
    alice.send_json(json!({"type": "chat_message", "content": "still here"}));
    assert_eq!(alice.recv_new_message()["content"], "still here");
    assert_eq!(alice2.recv_new_message()["content"], "still here");
}

#[test]
fn stack_4_1_core() {
    scenario("dj41_core", Stack::V4_1, |s| s);
}

#[test]
fn stack_4_1_core_encrypted() {
    scenario("dj41_core_keys", Stack::V4_1, |s| {
        s.keys(&["first-key", "second-key"])
            .expiry(30)
            .group_expiry(600)
            .capacity(50)
    });
}

#[test]
fn stack_4_1_pubsub() {
    scenario("dj41_pubsub", Stack::V4_1, |s| s.kind(LayerKind::PubSub));
}

#[test]
fn stack_4_3_core_json_encrypted() {
    scenario("dj43_core_json", Stack::V4_3, |s| {
        s.keys(&["first-key", "second-key"])
            .format(Format::Json)
            .random_prefix_length(8)
    });
}

#[test]
fn stack_4_3_pubsub_encrypted() {
    scenario("dj43_pubsub_keys", Stack::V4_3, |s| {
        s.kind(LayerKind::PubSub).keys(&["pubsub-key"])
    });
}
