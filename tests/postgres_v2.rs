//! Protocol v2's stored half (`store/requests.rs`) on the Postgres store against
//! the real server: history paging, replays (alone and as one grouped read
//! in a reconnect storm), read receipts, reactions, the v2 schema, and a
//! Django database before and after `chatgate migrate`.
//!
//! Each test creates its own database (see `pg_support`); without a
//! reachable Postgres the tests skip with a printed reason, or fail in CI.
//! The replay metrics are process-wide, so tests that replay hold
//! [`REPLAYS`] while they do.

mod pg_support;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use chatgate::store::postgres::Admin;
use chatgate::store::requests::{
    HistoryItem, HistoryPage, ReactionGroup, ReadPosition, Replay, V2Error, V2Request,
};
use chatgate::store::{MessageId, StoreError, UserId};
use pg_support::{Schema, TestDb, TestStore};

const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Held by tests that replay, so metric deltas are their own.
static REPLAYS: Mutex<()> = Mutex::new(());

fn replays_lock() -> std::sync::MutexGuard<'static, ()> {
    REPLAYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` messages in `conv`, senders taking turns; their ids, ascending.
fn add_messages(db: &TestDb, conv: i64, senders: &[UserId], n: usize) -> Vec<MessageId> {
    let admin = db.admin();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let row = admin
            .block_on(admin.client().query_one(
                "INSERT INTO chatapp_message (content, \"timestamp\", conversation_id, sender_id) \
                 VALUES ($1, now(), $2, $3::bigint::integer) RETURNING id",
                &[&format!("m{i}"), &conv, &senders[i % senders.len()]],
            ))
            .expect("insert a message");
        ids.push(row.get(0));
    }
    ids
}

fn ids(items: &[HistoryItem]) -> Vec<MessageId> {
    items.iter().map(|i| i.id).collect()
}

fn history(
    store: &TestStore,
    conversation_id: i64,
    user_id: UserId,
    before: Option<MessageId>,
    limit: u32,
) -> Result<HistoryPage, V2Error> {
    store
        .client_rt
        .block_on(store.handle().v2(|reply| V2Request::History {
            conversation_id,
            user_id,
            before,
            limit,
            reply,
        }))
}

fn replay(
    store: &TestStore,
    conversation_id: i64,
    user_id: UserId,
    since: MessageId,
    max: u32,
) -> Result<Replay, V2Error> {
    store
        .client_rt
        .block_on(store.handle().v2(|reply| V2Request::Replay {
            conversation_id,
            user_id,
            since,
            max,
            reply,
        }))
}

fn mark_read(
    store: &TestStore,
    conversation_id: i64,
    user_id: UserId,
    message_id: MessageId,
) -> Result<Option<ReadPosition>, V2Error> {
    store
        .client_rt
        .block_on(store.handle().v2(|reply| V2Request::MarkRead {
            conversation_id,
            user_id,
            message_id,
            reply,
        }))
}

fn read_state(store: &TestStore, conversation_id: i64) -> Result<Vec<ReadPosition>, V2Error> {
    store
        .client_rt
        .block_on(store.handle().v2(|reply| V2Request::ReadState {
            conversation_id,
            reply,
        }))
}

fn react(
    store: &TestStore,
    conversation_id: i64,
    user_id: UserId,
    message_id: MessageId,
    emoji: &str,
    on: bool,
) -> Result<bool, V2Error> {
    store
        .client_rt
        .block_on(store.handle().v2(|reply| V2Request::React {
            conversation_id,
            user_id,
            message_id,
            emoji: emoji.to_string(),
            on,
            reply,
        }))
}

fn delete(store: &TestStore, message_id: MessageId, user_id: UserId) {
    store
        .client_rt
        .block_on(store.handle().delete(message_id, user_id))
        .expect("delete");
}

/// What a replay must answer: the newest `max` of `all` above `since`
/// not in `deleted`, oldest first, and whether that is all of them.
fn expected_replay(
    all: &[MessageId],
    deleted: &BTreeSet<MessageId>,
    since: MessageId,
    max: u32,
) -> (Vec<MessageId>, bool) {
    let missed: Vec<MessageId> = all
        .iter()
        .copied()
        .filter(|id| *id > since && !deleted.contains(id))
        .collect();
    let keep = missed.len().min(max as usize);
    (
        missed[missed.len() - keep..].to_vec(),
        missed.len() <= max as usize,
    )
}

/// The value of a counter in the exposition (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

fn replay_counters() -> (u64, u64) {
    let text = chatgate::metrics::install().render();
    (
        counter(&text, "chatgate_store_replay_reads_total"),
        counter(&text, "chatgate_store_replays_total"),
    )
}

fn groups(items: &[HistoryItem], id: MessageId) -> Vec<(String, Vec<UserId>)> {
    items
        .iter()
        .find(|i| i.id == id)
        .expect("the message is there")
        .reactions
        .iter()
        .map(|ReactionGroup { emoji, user_ids }| (emoji.clone(), user_ids.clone()))
        .collect()
}

#[test]
fn history_pages_newest_first_each_message_once_without_deleted_ones() {
    let Some(db) = TestDb::create("v2_history", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("ann"), db.user("bob"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let other = db.admin().create_conversation(&[a, b]).unwrap();
    let mut all = Vec::new();
    for _ in 0..5 {
        all.extend(add_messages(&db, conv, &[a, b], 50));
        add_messages(&db, other, &[b], 3);
    }
    assert_eq!(all.len(), 250);
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);
    let deleted: BTreeSet<MessageId> = [0, 1, 49, 50, 120, 199, 249]
        .iter()
        .map(|&i| all[i])
        .collect();
    for &id in &deleted {
        delete(&store, id, a);
    }

    for (user, hidden) in [(a, deleted.clone()), (b, BTreeSet::new())] {
        let visible: Vec<MessageId> = all
            .iter()
            .copied()
            .filter(|id| !hidden.contains(id))
            .collect();
        let mut seen = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let page = history(&store, conv, user, before, 50).unwrap();
            pages += 1;
            let got = ids(&page.items);
            assert!(got.windows(2).all(|w| w[0] < w[1]), "oldest first: {got:?}");
            let end = visible.len() - seen.len();
            let start = end.saturating_sub(50);
            assert_eq!(got, visible[start..end], "page {pages} of user {user}");
            assert_eq!(
                page.has_more,
                start > 0,
                "has_more is exact on page {pages}"
            );
            seen.splice(0..0, got.iter().copied());
            if !page.has_more {
                break;
            }
            before = got.first().copied();
        }
        assert_eq!(seen, visible, "every message once");
        let expected_pages = visible.len().div_ceil(50);
        assert_eq!(pages, expected_pages);
    }

    // Items carry the sender's profile and the content; limits and `before`.
    let page = history(&store, conv, b, Some(all[2]), 100).unwrap();
    assert_eq!(ids(&page.items), all[..2]);
    assert!(!page.has_more);
    let first = &page.items[0];
    assert_eq!(
        (first.sender.id, first.sender.username.as_str()),
        (a, "ann")
    );
    assert_eq!(
        (
            first.sender.first_name.as_str(),
            first.sender.last_name.as_str()
        ),
        ("ann-first", "ann-last")
    );
    assert_eq!(first.content, "m0");
    assert!(first.reactions.is_empty());
    let one = history(&store, conv, b, None, 1).unwrap();
    assert_eq!((ids(&one.items), one.has_more), (vec![all[249]], true));
    let none = history(&store, conv, b, Some(all[0]), 50).unwrap();
    assert_eq!(none, HistoryPage::default());
    let nowhere = history(&store, 9_999_999, a, None, 50).unwrap();
    assert_eq!(nowhere, HistoryPage::default());
}

#[test]
fn replay_sends_the_newest_missed_and_says_whether_that_was_all() {
    let _replays = replays_lock();
    let Some(db) = TestDb::create("v2_replay", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("ann"), db.user("bob"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let all = add_messages(&db, conv, &[a, b], 30);
    add_messages(&db, db.admin().create_conversation(&[a]).unwrap(), &[a], 5);
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);
    let deleted: BTreeSet<MessageId> = [all[25], all[28]].into();
    for &id in &deleted {
        delete(&store, id, a);
    }
    let (reads, answered) = replay_counters();

    let check = |user, since, max, hidden: &BTreeSet<MessageId>| {
        let got = replay(&store, conv, user, since, max).unwrap();
        let (want, complete) = expected_replay(&all, hidden, since, max);
        assert_eq!(ids(&got.items), want, "since {since} max {max}");
        assert_eq!(got.complete, complete, "since {since} max {max}");
    };
    let none = BTreeSet::new();
    check(b, 0, 1000, &none);
    check(b, 0, 10, &none);
    check(b, all[19], 10, &none); // exactly max missed: complete
    check(b, all[18], 10, &none); // one more: not
    check(a, all[17], 10, &deleted); // 12 missed, 2 deleted: complete
    check(a, all[16], 10, &deleted);
    check(a, 0, 1, &deleted);
    check(a, all[29], 10, &deleted); // nothing missed
    let got = replay(&store, conv, a, all[29], 10).unwrap();
    assert_eq!(
        got,
        Replay {
            items: vec![],
            complete: true
        }
    );
    let all_of_b = replay(&store, conv, b, 0, 1000).unwrap();
    assert_eq!(all_of_b.items[3].sender.username, "bob");
    assert_eq!(all_of_b.items[3].content, "m3");

    let (reads_after, answered_after) = replay_counters();
    assert_eq!((reads_after - reads, answered_after - answered), (10, 10));
}

#[test]
fn a_reconnect_storm_is_one_read_per_conversation_and_each_answer_exact() {
    let _replays = replays_lock();
    let Some(db) = TestDb::create("v2_storm", Schema::Migrated) else {
        return;
    };
    let users: Vec<UserId> = (0..6).map(|i| db.user(&format!("u{i}"))).collect();
    let conv = db.admin().create_conversation(&users).unwrap();
    let quiet = db.admin().create_conversation(&users[..2]).unwrap();
    let all = add_messages(&db, conv, &users, 120);
    let quiet_all = add_messages(&db, quiet, &users[..2], 4);
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);
    // Users 0–2 deleted different messages, some in the newest stretch.
    let mut deleted: Vec<BTreeSet<MessageId>> = vec![BTreeSet::new(); users.len()];
    for (u, picks) in [
        (0, vec![119, 118, 117, 60]),
        (1, vec![119, 5]),
        (2, (100..120).collect()),
    ] {
        for i in picks {
            delete(&store, all[i], users[u]);
            deleted[u].insert(all[i]);
        }
    }
    react(&store, conv, users[3], all[119], "👍", true).unwrap();
    // (user index, since, max)
    let requests: Vec<(usize, MessageId, u32)> = vec![
        (0, 0, 10),
        (0, all[110], 5),
        (1, all[100], 50),
        (1, 0, 1000),
        (2, all[90], 10),
        (2, all[95], 3),
        (3, all[119], 10),
        (4, all[0], 7),
        (5, all[117], 2),
        (5, all[116], 2),
    ];

    let (reads, answered) = replay_counters();
    // Hold the side runtime's only worker so every request is queued before
    // the dispatcher reads any: they arrive together, like a storm.
    let (started, running) = std::sync::mpsc::channel();
    store.side.spawn(async move {
        let _ = started.send(());
        std::thread::sleep(Duration::from_millis(500));
    });
    running.recv().unwrap();
    let answers = store.client_rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (n, &(u, since, max)) in requests.iter().enumerate() {
            let handle = store.handle().clone();
            let user_id = users[u];
            tasks.spawn(async move {
                let got = handle
                    .v2(|reply| V2Request::Replay {
                        conversation_id: conv,
                        user_id,
                        since,
                        max,
                        reply,
                    })
                    .await;
                (n, got)
            });
        }
        for user_id in [users[0], users[1]] {
            let handle = store.handle().clone();
            tasks.spawn(async move {
                let got = handle
                    .v2(|reply| V2Request::Replay {
                        conversation_id: quiet,
                        user_id,
                        since: 0,
                        max: 100,
                        reply,
                    })
                    .await;
                (usize::MAX, got)
            });
        }
        tasks.join_all().await
    });
    let (reads_after, answered_after) = replay_counters();
    assert_eq!(
        (reads_after - reads, answered_after - answered),
        (2, 12),
        "one read per conversation for the 12 replays"
    );

    for (n, got) in answers {
        let got = got.unwrap();
        if n == usize::MAX {
            assert_eq!((ids(&got.items), got.complete), (quiet_all.clone(), true));
            continue;
        }
        let (u, since, max) = requests[n];
        let (want, complete) = expected_replay(&all, &deleted[u], since, max);
        assert_eq!(ids(&got.items), want, "request {n}: {:?}", requests[n]);
        assert_eq!(got.complete, complete, "request {n}: {:?}", requests[n]);
        if let Some(last) = got.items.last().filter(|i| i.id == all[119]) {
            assert_eq!(
                last.reactions,
                [ReactionGroup {
                    emoji: "👍".into(),
                    user_ids: vec![users[3]]
                }]
            );
        }
    }
}

#[test]
fn a_replay_that_cannot_read_in_time_times_out() {
    let _replays = replays_lock();
    let Some(db) = TestDb::create("v2_timeout", Schema::Migrated) else {
        return;
    };
    let a = db.user("ann");
    let conv = db.admin().create_conversation(&[a]).unwrap();
    add_messages(&db, conv, &[a], 3);
    let store = TestStore::start(&db.url, 64, Duration::from_millis(800));
    assert_eq!(replay(&store, conv, a, 0, 10).unwrap().items.len(), 3);
    let blocker = Admin::connect(&db.url).unwrap();
    blocker
        .block_on(
            blocker
                .client()
                .batch_execute("BEGIN; LOCK TABLE chatapp_message IN ACCESS EXCLUSIVE MODE"),
        )
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        replay(&store, conv, a, 0, 10),
        Err(V2Error::Store(StoreError::Timeout))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    blocker
        .block_on(blocker.client().batch_execute("ROLLBACK"))
        .unwrap();
}

#[test]
fn mark_read_zeroes_unread_and_only_moves_up() {
    let Some(db) = TestDb::create("v2_mark_read", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("ann"), db.user("bob"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let other = db.admin().create_conversation(&[a, b]).unwrap();
    let m = add_messages(&db, conv, &[b], 5);
    let elsewhere = add_messages(&db, other, &[b], 1)[0];
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);
    let set_unread = |n: i64| {
        db.execute_batch(&format!(
            "UPDATE chatapp_conversationparticipant SET unread_count = {n} \
             WHERE conversation_id = {conv} AND user_id = {a}"
        ))
    };
    let position = || {
        db.scalar(
            "SELECT message_id FROM chatgate_readreceipt \
             WHERE conversation_id = $1 AND user_id = $2::bigint",
            &[&conv, &a],
        )
    };
    set_unread(5);

    let moved = mark_read(&store, conv, a, m[2]).unwrap().expect("moved");
    assert_eq!(
        (moved.user_id, moved.username.as_str(), moved.message_id),
        (a, "ann", m[2])
    );
    assert!((chrono::Utc::now() - moved.read_at).num_seconds().abs() < 60);
    assert_eq!((db.unread(conv, a), position()), (0, m[2]));

    set_unread(3);
    assert_eq!(mark_read(&store, conv, a, m[1]), Ok(None), "lower: no move");
    assert_eq!((db.unread(conv, a), position()), (0, m[2]), "still zeroed");
    assert_eq!(mark_read(&store, conv, a, m[2]), Ok(None), "same: no move");
    let up = mark_read(&store, conv, a, m[4]).unwrap().expect("moved up");
    assert_eq!(up.message_id, m[4]);
    assert!(up.read_at >= moved.read_at);
    assert_eq!(position(), m[4]);

    set_unread(2);
    assert_eq!(
        mark_read(&store, conv, a, elsewhere),
        Err(V2Error::NoSuchMessage)
    );
    assert_eq!(
        mark_read(&store, conv, a, 9_999_999),
        Err(V2Error::NoSuchMessage)
    );
    assert_eq!(db.unread(conv, a), 2, "a refused mark read changes nothing");
    assert_eq!(position(), m[4]);
    assert_eq!(db.unread(conv, b), 0);

    // Read state: every position, by user id, with usernames.
    assert_eq!(read_state(&store, other), Ok(vec![]));
    mark_read(&store, conv, b, m[0])
        .unwrap()
        .expect("bob moved");
    mark_read(&store, other, b, elsewhere)
        .unwrap()
        .expect("bob moved");
    let state = read_state(&store, conv).unwrap();
    let seen: Vec<(UserId, &str, MessageId)> = state
        .iter()
        .map(|p| (p.user_id, p.username.as_str(), p.message_id))
        .collect();
    assert_eq!(seen, [(a, "ann", m[4]), (b, "bob", m[0])]);
    assert_eq!(state[0].read_at, up.read_at);

    // Positions go with their conversation.
    db.admin().delete_conversation(conv).unwrap();
    assert_eq!(read_state(&store, conv), Ok(vec![]));
    assert_eq!(read_state(&store, other).unwrap().len(), 1);
}

#[test]
fn reactions_are_idempotent_grouped_in_order_and_limited_to_twenty_emoji() {
    let _replays = replays_lock();
    let Some(db) = TestDb::create("v2_reactions", Schema::Migrated) else {
        return;
    };
    let (a, b, c) = (db.user("ann"), db.user("bob"), db.user("cat"));
    let conv = db.admin().create_conversation(&[a, b, c]).unwrap();
    let other = db.admin().create_conversation(&[a]).unwrap();
    let m = add_messages(&db, conv, &[a], 3);
    let elsewhere = add_messages(&db, other, &[a], 1)[0];
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);

    // c (the highest id) reacts first: user ids are in reaction order.
    assert_eq!(react(&store, conv, c, m[0], "👍", true), Ok(true));
    assert_eq!(react(&store, conv, a, m[0], "❤️", true), Ok(true));
    assert_eq!(react(&store, conv, a, m[0], "👍", true), Ok(true));
    assert_eq!(react(&store, conv, a, m[0], "👍", true), Ok(false), "again");
    assert_eq!(react(&store, conv, b, m[0], "❤️", true), Ok(true));
    assert_eq!(react(&store, conv, b, m[1], "🎉", true), Ok(true));
    let page = history(&store, conv, a, None, 50).unwrap();
    let want = vec![
        ("👍".to_string(), vec![c, a]),
        ("❤️".to_string(), vec![a, b]),
    ];
    assert_eq!(groups(&page.items, m[0]), want);
    assert_eq!(groups(&page.items, m[1]), [("🎉".to_string(), vec![b])]);
    assert!(groups(&page.items, m[2]).is_empty());
    let replayed = replay(&store, conv, b, 0, 10).unwrap();
    assert_eq!(groups(&replayed.items, m[0]), want);

    // Removal. Order is that of the reactions still there: without c's
    // first 👍, a's ❤️ is the oldest reaction on the message.
    assert_eq!(react(&store, conv, c, m[0], "👍", false), Ok(true));
    assert_eq!(react(&store, conv, c, m[0], "👍", false), Ok(false), "gone");
    assert_eq!(react(&store, conv, c, m[2], "👍", false), Ok(false));
    let page = history(&store, conv, a, None, 50).unwrap();
    assert_eq!(
        groups(&page.items, m[0]),
        [("❤️".to_string(), vec![a, b]), ("👍".to_string(), vec![a])]
    );

    // Only messages of this conversation.
    for on in [true, false] {
        assert_eq!(
            react(&store, conv, a, elsewhere, "👍", on),
            Err(V2Error::NoSuchMessage)
        );
        assert_eq!(
            react(&store, conv, a, 9_999_999, "👍", on),
            Err(V2Error::NoSuchMessage)
        );
    }

    // Twenty distinct emoji per message; more users on one of them is fine.
    let emoji: Vec<String> = (0..21)
        .map(|i| char::from_u32(0x1F600 + i).unwrap().to_string())
        .collect();
    for e in &emoji[..20] {
        assert_eq!(react(&store, conv, a, m[2], e, true), Ok(true));
    }
    assert_eq!(
        react(&store, conv, b, m[2], &emoji[20], true),
        Err(V2Error::TooManyReactions)
    );
    assert_eq!(react(&store, conv, b, m[2], &emoji[3], true), Ok(true));
    assert_eq!(react(&store, conv, a, m[2], &emoji[3], true), Ok(false));
    assert_eq!(react(&store, conv, a, m[2], &emoji[5], false), Ok(true));
    assert_eq!(react(&store, conv, b, m[2], &emoji[20], true), Ok(true));
    assert_eq!(
        react(&store, conv, c, m[2], &emoji[5], true),
        Err(V2Error::TooManyReactions)
    );
    let page = history(&store, conv, c, None, 50).unwrap();
    let on_m2 = groups(&page.items, m[2]);
    assert_eq!(on_m2.len(), 20);
    assert_eq!(on_m2[3], (emoji[3].clone(), vec![a, b]));
    assert_eq!(on_m2[19], (emoji[20].clone(), vec![b]));
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM chatgate_reaction WHERE message_id = $1",
            &[&m[2]]
        ),
        21
    );

    // Reactions go with their message.
    db.admin().delete_conversation(conv).unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM chatgate_reaction", &[]), 0);
}

#[test]
fn migrate_adds_the_v2_tables_and_the_paging_index_to_a_django_database() {
    let Some(db) = TestDb::create("v2_schema", Schema::Django) else {
        return;
    };
    let tables = |db: &TestDb| {
        db.scalar(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name LIKE 'chatgate\\_%'",
            &[],
        )
    };
    assert_eq!(tables(&db), 0);
    db.admin().migrate().unwrap();
    db.admin().migrate().expect("idempotent");
    assert_eq!(tables(&db), 3);
    let admin = db.admin();
    let rows = admin
        .block_on(admin.client().query(
            "SELECT format('%s.%s %s(%s) nullable=%s identity=%s', table_name, column_name, \
             data_type, character_maximum_length, is_nullable, is_identity) \
             FROM information_schema.columns WHERE table_name LIKE 'chatgate\\_%' \
             ORDER BY table_name, ordinal_position",
            &[],
        ))
        .unwrap();
    let columns: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        columns,
        [
            "chatgate_idempotency.key character varying(64) nullable=NO identity=NO",
            "chatgate_idempotency.conversation_id bigint() nullable=NO identity=NO",
            "chatgate_idempotency.message_id bigint() nullable=YES identity=NO",
            "chatgate_idempotency.created_at timestamp with time zone() nullable=NO identity=NO",
            "chatgate_reaction.id bigint() nullable=NO identity=YES",
            "chatgate_reaction.message_id bigint() nullable=NO identity=NO",
            "chatgate_reaction.user_id integer() nullable=NO identity=NO",
            "chatgate_reaction.emoji character varying(64) nullable=NO identity=NO",
            "chatgate_reaction.created_at timestamp with time zone() nullable=NO identity=NO",
            "chatgate_readreceipt.id bigint() nullable=NO identity=YES",
            "chatgate_readreceipt.conversation_id bigint() nullable=NO identity=NO",
            "chatgate_readreceipt.user_id integer() nullable=NO identity=NO",
            "chatgate_readreceipt.message_id bigint() nullable=NO identity=NO",
            "chatgate_readreceipt.read_at timestamp with time zone() nullable=NO identity=NO",
        ]
    );
    let rows = admin
        .block_on(admin.client().query(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid::regclass::text LIKE 'chatgate\\_%' AND contype IN ('f', 'u') \
             ORDER BY conrelid::regclass::text, 1",
            &[],
        ))
        .unwrap();
    let constraints: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        constraints,
        [
            "FOREIGN KEY (conversation_id) REFERENCES chatapp_conversation(id) ON DELETE CASCADE",
            "FOREIGN KEY (message_id) REFERENCES chatapp_message(id) ON DELETE CASCADE",
            "FOREIGN KEY (message_id) REFERENCES chatapp_message(id) ON DELETE CASCADE",
            "FOREIGN KEY (user_id) REFERENCES auth_user(id) ON DELETE CASCADE",
            "UNIQUE (message_id, user_id, emoji)",
            "FOREIGN KEY (conversation_id) REFERENCES chatapp_conversation(id) ON DELETE CASCADE",
            "FOREIGN KEY (user_id) REFERENCES auth_user(id) ON DELETE CASCADE",
            "UNIQUE (conversation_id, user_id)",
        ]
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'chatapp_message' \
             AND indexdef LIKE '%(conversation_id, id)'",
            &[],
        ),
        1
    );
}

#[test]
fn a_django_database_serves_reads_until_migrate_enables_receipts_and_reactions() {
    let _replays = replays_lock();
    let Some(db) = TestDb::create("v2_django", Schema::Django) else {
        return;
    };
    let (a, b) = (db.user("ann"), db.user("bob"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let m = add_messages(&db, conv, &[b], 4);
    db.execute_batch(&format!(
        "UPDATE chatapp_conversationparticipant SET unread_count = 4 WHERE user_id = {a}"
    ));
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);

    for _ in 0..2 {
        // Writes answer NotMigrated (and change nothing); reads work.
        assert_eq!(
            react(&store, conv, a, m[0], "👍", true),
            Err(V2Error::NotMigrated)
        );
        assert_eq!(mark_read(&store, conv, a, m[3]), Err(V2Error::NotMigrated));
        assert_eq!(db.unread(conv, a), 4, "the transaction rolled back");
        assert_eq!(read_state(&store, conv), Ok(vec![]));
        let page = history(&store, conv, a, None, 3).unwrap();
        assert_eq!((ids(&page.items), page.has_more), (m[1..].to_vec(), true));
        assert!(page.items.iter().all(|i| i.reactions.is_empty()));
        let got = replay(&store, conv, a, m[0], 10).unwrap();
        assert_eq!((ids(&got.items), got.complete), (m[1..].to_vec(), true));
    }
    assert_eq!(
        mark_read(&store, conv, a, 9_999_999),
        Err(V2Error::NotMigrated)
    );

    // `chatgate migrate` while the store runs: no restart needed.
    db.admin().migrate().unwrap();
    assert_eq!(react(&store, conv, a, m[0], "👍", true), Ok(true));
    let page = history(&store, conv, b, None, 50).unwrap();
    assert_eq!(groups(&page.items, m[0]), [("👍".to_string(), vec![a])]);
    let got = replay(&store, conv, b, 0, 10).unwrap();
    assert_eq!(groups(&got.items, m[0]), [("👍".to_string(), vec![a])]);
    assert_eq!(
        mark_read(&store, conv, a, m[3])
            .unwrap()
            .map(|p| p.message_id),
        Some(m[3])
    );
    assert_eq!(db.unread(conv, a), 0);
    let state = read_state(&store, conv).unwrap();
    assert_eq!(
        state
            .iter()
            .map(|p| (p.user_id, p.message_id))
            .collect::<Vec<_>>(),
        [(a, m[3])]
    );
}
