//! docs/protocol.md §3–§6 over real sockets: `chat_message`, `delete_message`,
//! `typing`, the error replies (the socket stays open), isolation between
//! conversations, ordering, and the close handshake.
//!
//! Every scenario runs on SQLite (both io drivers) and on Postgres, both on a
//! database chatgate migrated and on Django's own DDL (`on_every_store!`).

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

on_every_store!(
    new_message_reaches_every_socket_including_sender,
    content_is_stripped_like_python,
    empty_content_is_rejected,
    content_length_limit_counts_code_points,
    nul_or_non_string_content_is_invalid,
    stored_message_increments_unread_for_others,
    delete_replies_only_to_this_socket,
    delete_accepts_decimal_string_and_is_idempotent,
    delete_without_id_is_rejected,
    delete_of_bad_or_foreign_message_fails,
    any_participant_may_delete_for_themselves,
    typing_reaches_only_other_users,
    typing_defaults_to_false,
    typing_with_non_bool_is_invalid,
    invalid_json_keeps_socket_open,
    unknown_message_type_keeps_socket_open,
    binary_frame_is_rejected_and_socket_stays,
    conversations_are_isolated,
    two_hundred_messages_arrive_in_order,
    chat_then_typing_keeps_the_senders_order,
    errors_keep_the_senders_order,
    client_close_gets_1000_back,
);

/// A short wait for "nothing arrives" checks that have no sentinel.
const QUIET: Duration = Duration::from_millis(300);

struct Room {
    gw: TestGateway,
    alice: User,
    bob: User,
    conv: i64,
}

fn room(on: Target) -> Room {
    let gw = TestGateway::on_target(on);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    Room {
        gw,
        alice,
        bob,
        conv,
    }
}

fn error(msg: &str) -> Value {
    json!({"type": "error", "message": msg})
}

/// `from` sends `content`; every client in `all` must receive the same
/// `new_message`. Returns the message id.
fn chat_roundtrip(
    from: &User,
    sender: &mut Client,
    others: &mut [&mut Client],
    content: &str,
) -> i64 {
    sender.chat(content);
    let m = sender.recv_new_message();
    let id = assert_new_message(&m, from, content);
    for c in others.iter_mut() {
        assert_eq!(c.recv_new_message(), m);
    }
    id
}

fn new_message_reaches_every_socket_including_sender(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut a2 = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    a.chat("Hello world");
    let m = a.recv_json();
    assert_eq!(m["type"], "new_message", "{m}");
    assert_eq!(
        m.as_object().unwrap().len(),
        2,
        "exactly type and message: {m}"
    );
    let id = assert_new_message(&m["message"], &r.alice, "Hello world");
    assert_eq!(a2.recv_json(), m, "sender's second socket");
    assert_eq!(b.recv_json(), m, "other participant");
    assert_eq!(
        r.gw.message_row(id),
        Some((r.conv, r.alice.id, "Hello world".to_string()))
    );
    // bob answers; alice's sockets get it too.
    chat_roundtrip(&r.bob, &mut b, &mut [&mut a, &mut a2], "Hi Alice");
    // Extra fields (as older clients send) are ignored, as the consumer did.
    b.send_json(
        json!({"type": "chat_message", "content": "extra", "conversation_id": 999, "x": [1]}),
    );
    let m = b.recv_new_message();
    assert_new_message(&m, &r.bob, "extra");
    assert_eq!(a.recv_new_message(), m);
}

fn content_is_stripped_like_python(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    for (sent, stored) in [
        ("  hello  ", "hello"),
        ("\t\n\r\x0b\x0chello\n", "hello"),
        ("\u{3000}hello\u{3000}", "hello"),
        ("\u{a0}hello\u{a0}", "hello"),
        ("\u{1c}\u{1d}\u{1e}\u{1f}hello\u{1f}", "hello"),
        (
            "\u{85}\u{2028}\u{2029}hello\u{2000}\u{200a}\u{202f}\u{205f}",
            "hello",
        ),
        ("  two  words  ", "two  words"),
        // Not white space for Python: kept.
        ("\u{200b}hello\u{feff}", "\u{200b}hello\u{feff}"),
    ] {
        a.chat(sent);
        let m = a.recv_new_message();
        let id = assert_new_message(&m, &r.alice, stored);
        assert_eq!(b.recv_new_message(), m);
        assert_eq!(
            r.gw.message_row(id).unwrap().2,
            stored,
            "stored content of {sent:?}"
        );
    }
}

fn empty_content_is_rejected(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    for msg in [
        json!({"type": "chat_message", "content": ""}),
        json!({"type": "chat_message", "content": "   "}),
        json!({"type": "chat_message", "content": "\u{3000}\u{1c}\u{a0}\n"}),
        json!({"type": "chat_message"}),
    ] {
        a.send_json(msg.clone());
        assert_eq!(a.recv_json(), error("Empty message"), "for {msg}");
    }
    assert!(r.gw.messages_of(r.conv).is_empty(), "nothing stored");
    // bob saw none of it: his next frame is the next real message.
    let id = chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "after empties");
    assert_eq!(
        r.gw.messages_of(r.conv),
        vec![(id, "after empties".to_string())]
    );
}

fn content_length_limit_counts_code_points(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    for ch in ["a", "é", "€", "𝄞"] {
        let ok = ch.repeat(5000);
        chat_roundtrip(&r.alice, &mut a, &mut [&mut b], &ok);
        // White space around does not count.
        a.chat(&format!("  \u{3000}{ok}\u{3000}  "));
        assert_new_message(&a.recv_new_message(), &r.alice, &ok);
        b.recv_new_message();
        a.chat(&ch.repeat(5001));
        assert_eq!(a.recv_json(), error("Message too long"), "5001 × {ch:?}");
    }
    a.chat(&format!("{}b", "a".repeat(5000)));
    assert_eq!(a.recv_json(), error("Message too long"));
    assert_eq!(
        r.gw.messages_of(r.conv).len(),
        8,
        "only the 5000-character messages were stored"
    );
    // bob got nothing for the rejected ones.
    chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "short");
}

fn nul_or_non_string_content_is_invalid(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    for msg in [
        json!({"type": "chat_message", "content": "a\u{0}b"}),
        json!({"type": "chat_message", "content": "\u{0}"}),
        json!({"type": "chat_message", "content": 42}),
        json!({"type": "chat_message", "content": true}),
        json!({"type": "chat_message", "content": ["hi"]}),
        json!({"type": "chat_message", "content": {"text": "hi"}}),
    ] {
        a.send_json(msg.clone());
        assert_eq!(a.recv_json(), error("Invalid message format"), "for {msg}");
    }
    assert!(r.gw.messages_of(r.conv).is_empty(), "nothing stored");
    chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "still open");
}

fn stored_message_increments_unread_for_others(on: Target) {
    let r = room(on);
    let carol = r.gw.user("carol");
    let outsider = r.gw.user("dave");
    let conv = r.gw.conversation(&[&r.alice, &r.bob, &carol]);
    let other = r.gw.conversation(&[&r.alice, &outsider]);
    let mut a = r.gw.connect(conv, &r.alice);
    let mut b = r.gw.connect(conv, &r.bob);
    let unread = |u: &User| r.gw.unread(conv, u);
    assert_eq!(
        (unread(&r.alice), unread(&r.bob), unread(&carol)),
        (0, 0, 0)
    );

    let id = chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "one");
    assert_eq!(
        r.gw.message_row(id),
        Some((conv, r.alice.id, "one".to_string()))
    );
    assert_eq!(
        (unread(&r.alice), unread(&r.bob), unread(&carol)),
        (0, 1, 1)
    );

    chat_roundtrip(&r.bob, &mut b, &mut [&mut a], "two");
    assert_eq!(
        (unread(&r.alice), unread(&r.bob), unread(&carol)),
        (1, 1, 2)
    );
    chat_roundtrip(&r.bob, &mut b, &mut [&mut a], "three");
    assert_eq!(
        (unread(&r.alice), unread(&r.bob), unread(&carol)),
        (2, 1, 3)
    );
    // Another conversation's counters are untouched.
    assert_eq!(
        (r.gw.unread(other, &r.alice), r.gw.unread(other, &outsider)),
        (0, 0)
    );
    // The room of the fixture (alice + bob) too.
    assert_eq!(
        (r.gw.unread(r.conv, &r.alice), r.gw.unread(r.conv, &r.bob)),
        (0, 0)
    );
}

fn delete_replies_only_to_this_socket(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut a2 = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let id = chat_roundtrip(&r.alice, &mut a, &mut [&mut a2, &mut b], "delete me");

    a.send_json(json!({"type": "delete_message", "message_id": id}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "message_deleted", "message_id": id})
    );
    assert_eq!(r.gw.deletions(id, &r.alice), 1);
    assert_eq!(r.gw.deletions(id, &r.bob), 0);
    assert!(r.gw.message_row(id).is_some(), "the message row stays");
    // Neither alice's other socket nor bob saw the deletion: their next
    // frame is the next message.
    chat_roundtrip(&r.alice, &mut a, &mut [&mut a2, &mut b], "sentinel");
    a2.expect_silence(QUIET);
    b.expect_silence(QUIET);
}

fn delete_accepts_decimal_string_and_is_idempotent(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let id = chat_roundtrip(&r.alice, &mut a, &mut [], "twice");
    a.send_json(json!({"type": "delete_message", "message_id": id.to_string()}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "message_deleted", "message_id": id})
    );
    a.send_json(json!({"type": "delete_message", "message_id": id}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "message_deleted", "message_id": id})
    );
    a.send_json(json!({"type": "delete_message", "message_id": format!("00{id}")}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "message_deleted", "message_id": id})
    );
    assert_eq!(r.gw.deletions(id, &r.alice), 1, "one deletion row");
}

fn delete_without_id_is_rejected(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let id = chat_roundtrip(&r.alice, &mut a, &mut [], "keep");
    for msg in [
        json!({"type": "delete_message"}),
        json!({"type": "delete_message", "message_id": null}),
        json!({"type": "delete_message", "message_id": 0}),
        json!({"type": "delete_message", "message_id": ""}),
    ] {
        a.send_json(msg.clone());
        assert_eq!(a.recv_json(), error("Message ID required"), "for {msg}");
    }
    assert_eq!(r.gw.deletions(id, &r.alice), 0);
    chat_roundtrip(&r.alice, &mut a, &mut [], "still open");
}

fn delete_of_bad_or_foreign_message_fails(on: Target) {
    let r = room(on);
    let carol = r.gw.user("carol");
    let dave = r.gw.user("dave");
    let foreign_conv = r.gw.conversation(&[&carol, &dave]);
    let mut c = r.gw.connect(foreign_conv, &carol);
    let foreign = chat_roundtrip(&carol, &mut c, &mut [], "not yours");
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let own = chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "mine");
    for id in [
        json!("abc"),
        json!(-1),
        json!("-1"),
        json!(1.5),
        json!(own + 1_000_000),
        json!((own + 1_000_000).to_string()),
        json!(foreign),
        json!(foreign.to_string()),
        json!([own]),
        json!({"id": own}),
    ] {
        a.send_json(json!({"type": "delete_message", "message_id": id}));
        assert_eq!(
            a.recv_json(),
            error("Failed to delete message"),
            "message_id {id}"
        );
    }
    assert_eq!(r.gw.deletions(foreign, &r.alice), 0);
    assert_eq!(r.gw.deletions(own, &r.alice), 0);
    // bob saw none of the errors.
    chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "sentinel");
    // carol's own delete of her message works.
    c.send_json(json!({"type": "delete_message", "message_id": foreign}));
    assert_eq!(
        c.recv_json(),
        json!({"type": "message_deleted", "message_id": foreign})
    );
}

fn any_participant_may_delete_for_themselves(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let id = chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "alice's words");
    b.send_json(json!({"type": "delete_message", "message_id": id}));
    assert_eq!(
        b.recv_json(),
        json!({"type": "message_deleted", "message_id": id})
    );
    assert_eq!(
        (r.gw.deletions(id, &r.bob), r.gw.deletions(id, &r.alice)),
        (1, 0)
    );
    a.send_json(json!({"type": "delete_message", "message_id": id}));
    assert_eq!(
        a.recv_json(),
        json!({"type": "message_deleted", "message_id": id})
    );
    assert_eq!(
        (r.gw.deletions(id, &r.bob), r.gw.deletions(id, &r.alice)),
        (1, 1)
    );
    b.expect_silence(QUIET);
}

fn typing(user: &User, is_typing: bool) -> Value {
    json!({"type": "typing", "user_id": user.id, "username": user.username, "is_typing": is_typing})
}

/// docs/protocol.md §3 (order): 500 rounds of chat-then-typing from one socket: every other
/// member sees each `new_message` before the typing that followed it; the
/// sender's other socket sees the messages only, in order.
fn chat_then_typing_keeps_the_senders_order(on: Target) {
    let r = room(on);
    let carol = r.gw.user("carol");
    r.gw.add_participant(r.conv, carol.id);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut a2 = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let mut c = r.gw.connect(r.conv, &carol);
    send_chat_then_typing(&mut a, 500);
    let ids = expect_chat_then_typing(&mut b, &r.alice, 500);
    assert_eq!(expect_chat_then_typing(&mut c, &r.alice, 500), ids);
    for own in [&mut a, &mut a2] {
        let got: Vec<i64> = (0..500)
            .map(|_| own.recv_new_message()["id"].as_i64().unwrap())
            .collect();
        assert_eq!(got, ids, "the sender's sockets see the messages in order");
        own.expect_silence(QUIET);
    }
}

/// docs/protocol.md §3 (order): an error reply to a frame sent after a chat message arrives after
/// that message's `new_message` on the sender's socket.
fn errors_keep_the_senders_order(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    send_burst(
        &mut a,
        (0..50).flat_map(|i| {
            [
                json!({"type": "chat_message", "content": format!("m{i}")}).to_string(),
                "not json".to_string(),
            ]
        }),
    );
    for i in 0..50 {
        let m = a.recv_new_message();
        assert_eq!(m["content"], format!("m{i}"));
        assert_eq!(a.recv_json(), error("Invalid JSON"), "after m{i}");
    }
}

fn typing_reaches_only_other_users(on: Target) {
    let r = room(on);
    let carol = r.gw.user("carol");
    let conv = r.gw.conversation(&[&r.alice, &r.bob, &carol]);
    let mut a = r.gw.connect(conv, &r.alice);
    let mut a2 = r.gw.connect(conv, &r.alice);
    let mut b = r.gw.connect(conv, &r.bob);
    let mut b2 = r.gw.connect(conv, &r.bob);
    let mut c = r.gw.connect(conv, &carol);

    a.send_json(json!({"type": "typing", "is_typing": true}));
    for other in [&mut b, &mut b2, &mut c] {
        assert_eq!(other.recv_json(), typing(&r.alice, true));
    }
    a.send_json(json!({"type": "typing", "is_typing": false}));
    for other in [&mut b, &mut b2, &mut c] {
        assert_eq!(other.recv_json(), typing(&r.alice, false));
    }
    // alice's own sockets got neither: their next frame is the next message.
    chat_roundtrip(
        &r.alice,
        &mut a,
        &mut [&mut a2, &mut b, &mut b2, &mut c],
        "sentinel",
    );

    b2.send_json(json!({"type": "typing", "is_typing": true}));
    for other in [&mut a, &mut a2, &mut c] {
        assert_eq!(other.recv_json(), typing(&r.bob, true));
    }
    chat_roundtrip(
        &r.bob,
        &mut b,
        &mut [&mut b2, &mut a, &mut a2, &mut c],
        "sentinel 2",
    );
    for quiet in [&mut a, &mut a2, &mut b, &mut b2, &mut c] {
        quiet.expect_silence(QUIET);
    }
    assert_eq!(r.gw.messages_of(conv).len(), 2, "typing is not stored");
}

fn typing_defaults_to_false(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    a.send_json(json!({"type": "typing"}));
    assert_eq!(b.recv_json(), typing(&r.alice, false));
}

fn typing_with_non_bool_is_invalid(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    for v in [
        json!("yes"),
        json!("true"),
        json!(1),
        json!(0),
        json!([]),
        json!({}),
    ] {
        let msg = json!({"type": "typing", "is_typing": v});
        a.send_json(msg.clone());
        assert_eq!(a.recv_json(), error("Invalid message format"), "for {msg}");
    }
    // bob saw no typing event.
    chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "sentinel");
}

/// Sends each text; the sender must get exactly `error(msg)` and stay
/// usable; the other participant sees nothing but the sentinel.
fn each_text_gets_error(r: &Room, texts: &[&str], msg: &str) {
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    for (i, t) in texts.iter().enumerate() {
        a.send_text(t);
        assert_eq!(a.recv_json(), error(msg), "for {t:?}");
        chat_roundtrip(&r.alice, &mut a, &mut [&mut b], &format!("after error {i}"));
    }
}

fn invalid_json_keeps_socket_open(on: Target) {
    let r = room(on);
    each_text_gets_error(
        &r,
        &[
            "{bad",
            "",
            "not json",
            "{\"type\":\"chat_message\",}",
            "{\"type\": \"chat_message\", \"content\": \"x\"",
            "\u{feff}{}",
        ],
        "Invalid JSON",
    );
}

fn unknown_message_type_keeps_socket_open(on: Target) {
    let r = room(on);
    each_text_gets_error(
        &r,
        &[
            "[]",
            "{}",
            "{\"type\":\"nope\"}",
            "\"str\"",
            "42",
            "null",
            "true",
            "{\"type\":5}",
            "{\"type\":null,\"content\":\"x\"}",
            "{\"type\":\"CHAT_MESSAGE\",\"content\":\"x\"}",
            "{\"content\":\"x\"}",
            "[{\"type\":\"chat_message\",\"content\":\"x\"}]",
        ],
        "Unknown message type",
    );
}

fn binary_frame_is_rejected_and_socket_stays(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let json_bytes = json!({"type": "chat_message", "content": "binary"}).to_string();
    for payload in [
        json_bytes.as_bytes().to_vec(),
        vec![],
        vec![0xff, 0x00, 0x13],
    ] {
        a.send(tungstenite::Message::binary(payload));
        assert_eq!(a.recv_json(), error("Binary frames are not supported"));
    }
    assert!(
        r.gw.messages_of(r.conv).is_empty(),
        "the binary chat_message was not stored"
    );
    chat_roundtrip(&r.alice, &mut a, &mut [&mut b], "text still works");
}

fn conversations_are_isolated(on: Target) {
    let gw = TestGateway::on_target(on);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let carol = gw.user("carol");
    // Three conversations: with 2 shards two of them share a shard.
    let ab = gw.conversation(&[&alice, &bob]);
    let bc = gw.conversation(&[&bob, &carol]);
    let ac = gw.conversation(&[&alice, &carol]);
    let mut a_ab = gw.connect(ab, &alice);
    let mut b_ab = gw.connect(ab, &bob);
    let mut b_bc = gw.connect(bc, &bob);
    let mut c_bc = gw.connect(bc, &carol);
    let mut a_ac = gw.connect(ac, &alice);
    let mut c_ac = gw.connect(ac, &carol);

    let m1 = chat_roundtrip(&alice, &mut a_ab, &mut [&mut b_ab], "in ab");
    b_ab.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(a_ab.recv_json(), typing(&bob, true));
    let m2 = chat_roundtrip(&carol, &mut c_bc, &mut [&mut b_bc], "in bc");
    let m3 = chat_roundtrip(&alice, &mut a_ac, &mut [&mut c_ac], "in ac");
    // Each socket's next frame is its own conversation's next message.
    chat_roundtrip(&bob, &mut b_bc, &mut [&mut c_bc], "bc again");
    chat_roundtrip(&carol, &mut c_ac, &mut [&mut a_ac], "ac again");
    chat_roundtrip(&bob, &mut b_ab, &mut [&mut a_ab], "ab again");
    for c in [
        &mut a_ab, &mut b_ab, &mut b_bc, &mut c_bc, &mut a_ac, &mut c_ac,
    ] {
        c.expect_silence(QUIET);
    }
    assert_eq!(gw.message_row(m1).unwrap().0, ab);
    assert_eq!(gw.message_row(m2).unwrap().0, bc);
    assert_eq!(gw.message_row(m3).unwrap().0, ac);
    // A conversation-A message id cannot be deleted from conversation B's socket
    // by a non-participant of A.
    c_bc.send_json(json!({"type": "delete_message", "message_id": m1}));
    assert_eq!(c_bc.recv_json(), error("Failed to delete message"));
}

fn two_hundred_messages_arrive_in_order(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    let mut a2 = r.gw.connect(r.conv, &r.alice);
    let mut b = r.gw.connect(r.conv, &r.bob);
    let contents: Vec<String> = (0..200).map(|i| format!("message #{i}")).collect();
    for c in &contents {
        a.chat(c);
    }
    let mut seen: Vec<Vec<Value>> = Vec::new();
    for client in [&mut a, &mut a2, &mut b] {
        let got: Vec<Value> = (0..200).map(|_| client.recv_new_message()).collect();
        let mut last = 0;
        for (m, c) in got.iter().zip(&contents) {
            let id = assert_new_message(m, &r.alice, c);
            assert!(id > last, "ids must increase: {id} after {last}");
            last = id;
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "same frames on every socket");
    assert_eq!(seen[0], seen[2], "same frames on every socket");
    let stored = r.gw.messages_of(r.conv);
    let delivered: Vec<(i64, String)> = seen[0]
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        stored, delivered,
        "the database holds exactly what was delivered"
    );
    assert_eq!(r.gw.unread(r.conv, &r.bob), 200);
    assert_eq!(r.gw.unread(r.conv, &r.alice), 0);
}

fn client_close_gets_1000_back(on: Target) {
    let r = room(on);
    let mut a = r.gw.connect(r.conv, &r.alice);
    a.close(1000);
    a.expect_close(1000);
    // After the close handshake the server ends the TCP connection.
    let (closed, _) = wait_tcp_close(a.ws.get_mut(), Duration::from_secs(5));
    assert!(
        closed,
        "server kept the TCP connection open after the close handshake"
    );
    // The session is gone from the shard.
    eventually_eq(
        Duration::from_secs(5),
        "no sessions left",
        vec![0, 0],
        || r.gw.connections(),
    );
}
