//! One socket's stored v2 requests take effect in the order it sent them
//! (docs/protocol.md §9.9 with §9.4): a reaction toggled on then off ends off with
//! an event for each change, reactions, deletes and history pages sent back
//! to back see each other's writes, on SQLite (both io drivers), on
//! Postgres after `chatgate migrate`, and on Django's own DDL (where
//! reactions answer their error, still in order).

#[macro_use]
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

on_every_store!(
    a_reaction_toggled_on_then_off_ends_off,
    two_hundred_toggles_with_chat_and_typing_keep_order,
    history_sees_the_reactions_and_deletes_sent_before_it,
);

const QUIET: Duration = Duration::from_millis(300);
const EMOJI: &str = "👍";

/// Whether the `chatgate_` tables exist (not on Django's bare DDL).
fn migrated(gw: &TestGateway) -> bool {
    gw.store_kind() != StoreKind::PostgresDjango
}

/// `(user_id, emoji)` of every stored reaction on `message_id`, read from
/// the database itself (none on Django's DDL, which has no such table).
fn stored_reactions(gw: &TestGateway, message_id: i64) -> Vec<(i64, String)> {
    const SQL: &str =
        "SELECT user_id, emoji FROM chatgate_reaction WHERE message_id = $1 ORDER BY id";
    match gw.store_kind() {
        StoreKind::PostgresDjango => Vec::new(),
        StoreKind::Postgres => {
            let admin = gw.pg_admin();
            let sql = SQL
                .replace("$1", "$1::bigint")
                .replace("SELECT user_id", "SELECT user_id::bigint");
            admin
                .block_on(admin.client().query(&sql, &[&message_id]))
                .expect("read chatgate_reaction")
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
                .collect()
        }
        StoreKind::Sqlite => {
            let mut st = gw.db().prepare(&SQL.replace("$1", "?1")).expect("prepare");
            st.query_map([message_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("read chatgate_reaction")
                .collect::<Result<_, _>>()
                .expect("rows")
        }
    }
}

fn react(message_id: i64, on: bool) -> String {
    json!({"type": "react", "message_id": message_id, "emoji": EMOJI, "on": on}).to_string()
}

fn reaction(message_id: i64, user: &User, on: bool) -> Value {
    json!({"type": "reaction", "message_id": message_id, "user_id": user.id,
           "username": user.username, "emoji": EMOJI, "on": on})
}

/// The two-frame reproduction of the lost removal: `react on` then `react
/// off` sent without waiting (a double tap), on ten messages. Both sockets
/// see the add then the removal, and no row is left.
fn a_reaction_toggled_on_then_off_ends_off(on: Target) {
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    for round in 0..10 {
        a.chat(&format!("m{round}"));
        let id = a.recv_new_message()["id"].as_i64().unwrap();
        b.recv_new_message();
        send_burst(&mut a, [react(id, true), react(id, false)]);
        if migrated(&gw) {
            for c in [&mut a, &mut b] {
                assert_eq!(c.recv_json(), reaction(id, &alice, true), "m{round}");
                assert_eq!(c.recv_json(), reaction(id, &alice, false), "m{round}");
            }
        } else {
            a.expect_error("Failed to react");
            a.expect_error("Failed to react");
        }
        assert_eq!(stored_reactions(&gw, id), [], "m{round}");
    }
    a.expect_quiet(QUIET);
    b.expect_quiet(QUIET);
}

/// 200 rounds of `chat_message`, `typing` (alternating) and `react`
/// (alternating on/off on one message) sent as one burst: every event in
/// the sender's order on both sockets, and the stored row as the last
/// request left it.
fn two_hundred_toggles_with_chat_and_typing_keep_order(on: Target) {
    const ROUNDS: usize = 200;
    let gw = TestGateway::on_target(on);
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    a.chat("target");
    let id = a.recv_new_message()["id"].as_i64().unwrap();
    b.recv_new_message();
    send_burst(
        &mut a,
        (0..ROUNDS).flat_map(|i| {
            [
                json!({"type": "chat_message", "content": format!("round {i}")}).to_string(),
                json!({"type": "typing", "is_typing": i.is_multiple_of(2)}).to_string(),
                react(id, i.is_multiple_of(2)),
            ]
        }),
    );
    let typing = |i: usize| json!({"type": "typing", "user_id": alice.id, "username": alice.username, "is_typing": i.is_multiple_of(2)});
    for i in 0..ROUNDS {
        let mine = a.recv_new_message();
        assert_eq!(mine["content"], format!("round {i}"), "round {i}");
        assert_eq!(b.recv_new_message(), mine, "round {i}");
        assert_eq!(b.recv_json(), typing(i), "round {i}");
        if migrated(&gw) {
            let event = reaction(id, &alice, i.is_multiple_of(2));
            assert_eq!(a.recv_json(), event, "round {i}");
            assert_eq!(b.recv_json(), event, "round {i}");
        } else {
            a.expect_error("Failed to react");
        }
    }
    a.expect_quiet(QUIET);
    b.expect_quiet(QUIET);
    // The last request (round 199) was a removal.
    assert_eq!(stored_reactions(&gw, id), []);
    a.send_text(&react(id, true));
    if migrated(&gw) {
        assert_eq!(a.recv_json(), reaction(id, &alice, true));
        assert_eq!(stored_reactions(&gw, id), [(alice.id, EMOJI.to_string())]);
    }
}

/// Reactions, deletes and history pages of one socket, back to back: each
/// page shows the reaction state and the deletions asked for before it.
fn history_sees_the_reactions_and_deletes_sent_before_it(on: Target) {
    const ROUNDS: usize = 20;
    let gw = TestGateway::on_target(on);
    let (alice, _, conv) = gw.alice_and_bob();
    let mut a = gw.connect_v2(conv, &alice);
    send_burst(
        &mut a,
        (0..ROUNDS)
            .map(|i| json!({"type": "chat_message", "content": format!("m {i}")}).to_string()),
    );
    let ids: Vec<i64> = (0..ROUNDS)
        .map(|_| a.recv_new_message()["id"].as_i64().unwrap())
        .collect();
    let page_at = |id: i64| json!({"type": "history", "before": id + 1, "limit": 1}).to_string();
    send_burst(
        &mut a,
        (1..ROUNDS).flat_map(|i| {
            [
                react(ids[0], !i.is_multiple_of(2)),
                json!({"type": "delete_message", "message_id": ids[i]}).to_string(),
                page_at(ids[0]),
                page_at(ids[i]),
            ]
        }),
    );
    for i in 1..ROUNDS {
        let on = !i.is_multiple_of(2);
        if migrated(&gw) {
            assert_eq!(a.recv_json(), reaction(ids[0], &alice, on), "round {i}");
        } else {
            a.expect_error("Failed to react");
        }
        assert_eq!(
            a.recv_json(),
            json!({"type": "message_deleted", "message_id": ids[i]}),
            "round {i}"
        );
        let first = a.recv_json();
        assert_eq!(first["messages"][0]["id"], ids[0], "round {i}: {first}");
        let expected = if on && migrated(&gw) {
            json!([{"emoji": EMOJI, "user_ids": [alice.id]}])
        } else {
            json!([])
        };
        assert_eq!(first["messages"][0]["reactions"], expected, "round {i}");
        // The page ending at the message just deleted skips every deleted
        // one (ids[1..=i]) down to the first.
        let page = a.recv_json();
        assert_eq!(page["messages"][0]["id"], ids[0], "round {i}: {page}");
    }
    a.expect_quiet(QUIET);
    assert_eq!(gw.deletions(ids[ROUNDS - 1], &alice), 1);
}
