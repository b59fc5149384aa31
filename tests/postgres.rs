//! The Postgres store against the real server: group commit, connect
//! lookups, deletes and shutdown through a real `StoreHandle`; the schema
//! (`migrate` and Django's own DDL); and a gateway on Postgres end to end.
//!
//! Each test creates its own database (see `pg_support`); without a
//! reachable Postgres the tests skip with a printed reason, or fail in CI.

mod pg_support;

use std::collections::BTreeMap;
use std::time::Duration;

use chatgate::store::{
    ConnectInfo, DeleteError, InsertOutcome, StoreError, StoredMessage, UserProfile,
};
use pg_support::{insert, take, wait_for_outcomes, Blocker, PgGateway, Schema, TestDb, TestStore};
use serde_json::json;

const STORE_TIMEOUT: Duration = Duration::from_secs(10);

fn stored(o: &InsertOutcome) -> StoredMessage {
    o.result
        .clone()
        .unwrap_or_else(|e| panic!("{:?} not stored: {e}", o.request.content))
}

fn contents(outcomes: &[InsertOutcome]) -> Vec<&str> {
    outcomes
        .iter()
        .map(|o| o.request.content.as_str())
        .collect()
}

/// A store with one lane (pool of 2): every queued insert, whatever its
/// conversation, waits for the batch in flight and joins the next one.
/// Batches of several lanes are tested in `postgres_batching.rs`.
fn one_lane_store(db: &TestDb) -> TestStore {
    TestStore::with_pool(&db.url, 2, 64, STORE_TIMEOUT)
}

/// Commits `first` alone (blocked), queues `rest` meanwhile, releases: the
/// rest is committed as one batch. Returns every sink call.
fn commit_as_one_batch(
    db: &TestDb,
    store: &TestStore,
    first: chatgate::store::InsertRequest,
    rest: Vec<chatgate::store::InsertRequest>,
) -> Vec<(usize, Vec<InsertOutcome>)> {
    let total = 1 + rest.len();
    let blocker = Blocker::hold(db);
    store.queue(vec![first]);
    blocker.wait_until_blocked(db);
    store.queue(rest);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pg_support::outcome_count(&store.delivered), 0);
    blocker.release();
    wait_for_outcomes(&store.delivered, total, STORE_TIMEOUT);
    take(&store.delivered)
}

#[test]
fn group_commit_maps_ids_in_input_order_with_one_timestamp_and_bumps_unread() {
    let Some(db) = TestDb::create("group_commit", Schema::Migrated) else {
        return;
    };
    let (a, b, c) = (db.user("a"), db.user("b"), db.user("c"));
    let conv = db.admin().create_conversation(&[a, b, c]).unwrap();
    let other = db.admin().create_conversation(&[a, b]).unwrap();
    let store = one_lane_store(&db);

    let before = chrono::Utc::now();
    let calls = commit_as_one_batch(
        &db,
        &store,
        insert(conv, a, "first", 0),
        vec![
            insert(conv, a, "one", 0),
            insert(conv, b, "two", 1),
            insert(conv, a, "three", 0),
            insert(other, b, "elsewhere", 1),
        ],
    );

    // Batch 1: "first"; batch 2: one sink call per shard, in commit order.
    let shape: Vec<(usize, Vec<&str>)> = calls.iter().map(|(s, o)| (*s, contents(o))).collect();
    assert_eq!(
        shape,
        vec![
            (0, vec!["first"]),
            (0, vec!["one", "three"]),
            (1, vec!["two", "elsewhere"]),
        ]
    );
    let by_content: BTreeMap<&str, StoredMessage> = calls
        .iter()
        .flat_map(|(_, o)| o.iter().map(|o| (o.request.content.as_str(), stored(o))))
        .collect();
    let ids: Vec<i64> = ["first", "one", "two", "three", "elsewhere"]
        .iter()
        .map(|c| by_content[c].id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "input order: {ids:?}");
    let second = by_content["one"].timestamp;
    assert!(["two", "three", "elsewhere"]
        .iter()
        .all(|c| by_content[c].timestamp == second));
    assert!(before <= by_content["first"].timestamp && by_content["first"].timestamp <= second);
    assert_eq!(second.timestamp_subsec_nanos() % 1_000, 0);

    // Each id is exactly its message's row, with the returned timestamp.
    for (content, msg) in &by_content {
        let admin = db.admin();
        let row = admin
            .block_on(admin.client().query_one(
                "SELECT content, \"timestamp\" FROM chatapp_message WHERE id = $1",
                &[&msg.id],
            ))
            .unwrap();
        assert_eq!(row.get::<_, String>(0), *content);
        assert_eq!(
            row.get::<_, chrono::DateTime<chrono::Utc>>(1),
            msg.timestamp
        );
    }
    assert_eq!(db.unread(conv, a), 1);
    assert_eq!(db.unread(conv, b), 3);
    assert_eq!(db.unread(conv, c), 4);
    assert_eq!((db.unread(other, a), db.unread(other, b)), (1, 0));
}

#[test]
fn a_message_for_a_deleted_conversation_or_unknown_sender_fails_alone() {
    let Some(db) = TestDb::create("fails_alone", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let kept = db.admin().create_conversation(&[a, b]).unwrap();
    let gone = db.admin().create_conversation(&[a, b]).unwrap();
    db.admin().delete_conversation(gone).unwrap();
    let store = one_lane_store(&db);

    let calls = commit_as_one_batch(
        &db,
        &store,
        insert(kept, a, "warm-up", 0),
        vec![
            insert(kept, a, "first", 0),
            insert(gone, a, "lost", 0),
            insert(kept, a, "second", 0),
            insert(kept, 999_999, "ghost sender", 0),
        ],
    );

    let outcomes = &calls[1].1;
    assert_eq!(
        contents(outcomes),
        ["first", "lost", "second", "ghost sender"]
    );
    assert!(stored(&outcomes[0]).id < stored(&outcomes[2]).id);
    assert_eq!(
        outcomes[1].result,
        Err(StoreError::Database("conversation not found".into()))
    );
    assert_eq!(
        outcomes[3].result,
        Err(StoreError::Database("sender not found".into()))
    );
    assert_eq!(db.messages(), 3);
    assert_eq!((db.unread(kept, a), db.unread(kept, b)), (0, 3));
}

#[test]
fn a_batch_refused_at_commit_is_retried_message_by_message() {
    let Some(db) = TestDb::create("commit_refused", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    // A deferred foreign key checked only at COMMIT, violated by "poison":
    // what a conversation deleted while the batch runs looks like.
    db.execute_batch(
        "CREATE TABLE trap (ref bigint REFERENCES chatapp_conversation (id) \
             DEFERRABLE INITIALLY DEFERRED);
         CREATE FUNCTION trap_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.content = 'poison' THEN INSERT INTO trap (ref) VALUES (-1); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER trap_poison AFTER INSERT ON chatapp_message
             FOR EACH ROW EXECUTE FUNCTION trap_poison();",
    );
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);

    let calls = commit_as_one_batch(
        &db,
        &store,
        insert(conv, a, "warm-up", 0),
        vec![
            insert(conv, a, "fine", 0),
            insert(conv, b, "poison", 0),
            insert(conv, a, "fine too", 0),
        ],
    );

    let outcomes = &calls[1].1;
    assert_eq!(contents(outcomes), ["fine", "poison", "fine too"]);
    assert!(stored(&outcomes[0]).id < stored(&outcomes[2]).id);
    match &outcomes[1].result {
        Err(StoreError::Database(m)) => assert!(m.contains("foreign key"), "{m}"),
        other => panic!("poison must fail alone: {other:?}"),
    }
    assert_eq!(db.messages(), 3);
    assert_eq!(db.unread(conv, b), 3);
    assert_eq!(db.unread(conv, a), 0);
}

#[test]
fn connect_info_reports_profile_and_membership_also_in_a_storm() {
    let Some(db) = TestDb::create("connect_info", Schema::Migrated) else {
        return;
    };
    let member = db.admin().create_user("ann", "Ann", "Lee").unwrap();
    let outsider = db.user("bob");
    let sleeper = db.user("cat");
    let conv = db.admin().create_conversation(&[member, sleeper]).unwrap();
    db.admin().set_user_active(sleeper, false).unwrap();
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);
    let info = |user| {
        store
            .client_rt
            .block_on(store.handle().connect_info(user, conv))
            .unwrap()
    };

    let ann = ConnectInfo {
        user: Some(UserProfile {
            id: member,
            username: "ann".into(),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
            is_active: true,
        }),
        is_participant: true,
        conversation_exists: true,
    };
    assert_eq!(info(member), ann);
    let nobody = ConnectInfo {
        user: None,
        is_participant: false,
        conversation_exists: false,
    };
    assert_eq!(info(9_999_999), nobody);
    assert_eq!(info(i64::MAX), nobody, "ids beyond auth_user's integer");
    let inactive = info(sleeper);
    assert!(inactive.is_participant && !inactive.user.unwrap().is_active);
    let stranger = info(outsider);
    assert!(!stranger.is_participant);
    assert_eq!(stranger.user.unwrap().username, "bob");
    assert!(store.handle().is_ready());

    // A reconnect storm: 300 lookups at once, each answered correctly.
    let answers = store.client_rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300usize {
            let handle = store.handle().clone();
            let user = [member, outsider, 9_999_999][i % 3];
            tasks.spawn(async move { (i, handle.connect_info(user, conv).await) });
        }
        tasks.join_all().await
    });
    assert_eq!(answers.len(), 300);
    for (i, answer) in answers {
        let answer = answer.unwrap();
        match i % 3 {
            0 => assert_eq!(answer, ann),
            1 => assert!(answer.user.is_some() && !answer.is_participant),
            _ => assert_eq!(answer, nobody),
        }
    }
}

#[test]
fn delete_is_per_user_checked_and_idempotent() {
    let Some(db) = TestDb::create("delete", Schema::Migrated) else {
        return;
    };
    let (a, b, outsider) = (db.user("a"), db.user("b"), db.user("o"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let store = TestStore::start(&db.url, 64, STORE_TIMEOUT);
    store.queue(vec![insert(conv, a, "hello", 0)]);
    wait_for_outcomes(&store.delivered, 1, STORE_TIMEOUT);
    let id = stored(&take(&store.delivered)[0].1[0]).id;

    let delete = |msg, user| store.client_rt.block_on(store.handle().delete(msg, user));
    assert_eq!(delete(id + 1000, a), Err(DeleteError::NotFound));
    assert_eq!(delete(id, outsider), Err(DeleteError::NotParticipant));
    assert_eq!(delete(id, b), Ok(()));
    assert_eq!(delete(id, b), Ok(()));
    assert_eq!(delete(id, a), Ok(()));

    let rows = |user: i64| {
        db.scalar(
            "SELECT count(*) FROM chatapp_messagedeletion WHERE message_id = $1 AND user_id = $2::bigint",
            &[&id, &user],
        )
    };
    assert_eq!((rows(a), rows(b), rows(outsider)), (1, 1, 0));
    assert_eq!(db.messages(), 1, "the message row stays");
}

#[test]
fn dropping_every_handle_commits_the_queue_then_stops() {
    let Some(db) = TestDb::create("drain", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let mut store = TestStore::start(&db.url, 8, STORE_TIMEOUT);

    store.queue(
        (0..300)
            .map(|i| insert(conv, a, &i.to_string(), i % 2))
            .collect(),
    );
    store.stop();

    let calls = take(&store.delivered);
    let outcomes: Vec<&InsertOutcome> = calls.iter().flat_map(|(_, o)| o).collect();
    assert_eq!(outcomes.len(), 300);
    assert!(
        calls.iter().all(|(_, o)| o.len() <= 8),
        "batch_max caps a batch"
    );
    // Per shard, delivery order is input order and ids increase with it.
    for shard in 0..2 {
        let mine: Vec<(i64, usize)> = outcomes
            .iter()
            .filter(|o| o.request.origin.shard == shard)
            .map(|o| (stored(o).id, o.request.content.parse().unwrap()))
            .collect();
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }
    assert_eq!(db.messages(), 300);
    assert_eq!(db.unread(conv, b), 300);
}

#[test]
fn join_commits_the_queue_and_stops_even_while_a_handle_survives() {
    let Some(db) = TestDb::create("join_closes", Schema::Migrated) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let mut store = TestStore::start(&db.url, 8, STORE_TIMEOUT);
    // A handle leaked by someone (e.g. a task that outlived its shard).
    let survivor = store.handle().clone();

    store.queue(
        (0..40)
            .map(|i| insert(conv, a, &i.to_string(), 0))
            .collect(),
    );
    store.stop();

    assert_eq!(pg_support::outcome_count(&store.delivered), 40);
    assert_eq!(db.messages(), 40);
    let late = store
        .client_rt
        .block_on(survivor.insert(insert(conv, a, "too late", 0)));
    assert_eq!(late, Err(StoreError::Closed));
}

#[test]
fn migrate_is_idempotent_and_creates_djangos_schema() {
    let Some(ours) = TestDb::create("migrate_ours", Schema::Migrated) else {
        return;
    };
    let Some(django) = TestDb::create("migrate_django", Schema::Django) else {
        return;
    };
    ours.admin()
        .migrate()
        .expect("a second migrate changes nothing");
    chatgate::store::postgres::migrate_blocking(&ours.url).expect("migrate_blocking");
    django
        .admin()
        .migrate()
        .expect("migrate on a Django database is a no-op");

    let describe = |db: &TestDb| -> Vec<String> {
        let admin = db.admin();
        let rows = admin
            .block_on(admin.client().query(SCHEMA_DESCRIPTION, &[]))
            .expect("describe the schema");
        rows.iter().map(|r| r.get(0)).collect()
    };
    let (mine, theirs) = (describe(&ours), describe(&django));
    assert!(mine.len() > 40, "{mine:#?}");
    assert_eq!(mine, theirs);
}

/// Columns (types, lengths, NOT NULL, identity, defaults), constraints
/// (definition, deferrability) and indexes of the public schema, one line
/// each, sorted.
const SCHEMA_DESCRIPTION: &str = r#"
SELECT line FROM (
    SELECT format('column %s.%s %s(%s) nullable=%s identity=%s/%s default=%s',
                  table_name, column_name, data_type, character_maximum_length,
                  is_nullable, is_identity, identity_generation, column_default) AS line
    FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL
    SELECT format('constraint %s on %s: %s deferrable=%s deferred=%s',
                  c.conname, c.conrelid::regclass, pg_get_constraintdef(c.oid),
                  c.condeferrable, c.condeferred)
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname = 'public' AND c.contype <> 'n'
    UNION ALL
    SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL
    SELECT format('sequence %s', sequencename) FROM pg_sequences WHERE schemaname = 'public'
) d ORDER BY line
"#;

#[test]
fn djangos_own_schema_works_without_migrate() {
    let Some(db) = TestDb::create("django_schema", Schema::Django) else {
        return;
    };
    let (a, b) = (db.user("a"), db.user("b"));
    let conv = db.admin().create_conversation(&[a, b]).unwrap();
    let gone = db.admin().create_conversation(&[a, b]).unwrap();
    db.admin().delete_conversation(gone).unwrap();
    let store = one_lane_store(&db);

    let info = store
        .client_rt
        .block_on(store.handle().connect_info(a, conv))
        .unwrap();
    assert!(info.is_participant && info.user.unwrap().is_active);
    let calls = commit_as_one_batch(
        &db,
        &store,
        insert(conv, a, "one", 0),
        vec![
            insert(conv, b, "two", 0),
            insert(gone, b, "lost", 0),
            insert(conv, a, "three", 0),
        ],
    );
    let outcomes: Vec<&InsertOutcome> = calls.iter().flat_map(|(_, o)| o).collect();
    let ids: Vec<i64> = [0, 1, 3].iter().map(|&i| stored(outcomes[i]).id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(outcomes[2].result.is_err());
    assert_eq!((db.unread(conv, a), db.unread(conv, b)), (1, 2));
    assert_eq!(
        store.client_rt.block_on(store.handle().delete(ids[1], a)),
        Ok(())
    );
    let row_ok = db.scalar(
        "SELECT count(*) FROM chatapp_message m JOIN chatapp_messagedeletion d \
         ON d.message_id = m.id WHERE m.id = $1 AND m.sender_id = $2::bigint \
         AND m.conversation_id = $3 AND d.user_id = $4::bigint",
        &[&ids[1], &b, &conv, &a],
    );
    assert_eq!(row_ok, 1);
}

fn gateway_end_to_end(schema: Schema, name: &str) {
    let Some(db) = TestDb::create(name, schema) else {
        return;
    };
    let alice = db.admin().create_user("alice", "Alice", "Liddell").unwrap();
    let bob = db.user("bob");
    let eve = db.user("eve");
    let conv = db.admin().create_conversation(&[alice, bob]).unwrap();
    let gw = PgGateway::start(pg_support::gateway_config(&db.url));

    let mut a = gw.connect(conv, alice);
    let mut b = gw.connect(conv, bob);
    match gw.open(conv, eve).read(Duration::from_secs(5)) {
        pg_support::Read::Closed(Some(4003)) => {}
        other => panic!("a non-participant must be refused with 4003: {other:?}"),
    }

    a.send_json(json!({"type": "chat_message", "content": "  hello postgres  "}));
    let seen_by_a = a.recv_new_message();
    let seen_by_b = b.recv_new_message();
    assert_eq!(seen_by_a, seen_by_b);
    assert_eq!(seen_by_a["content"], "hello postgres");
    assert_eq!(
        seen_by_a["sender"],
        json!({"id": alice, "username": "alice", "first_name": "Alice", "last_name": "Liddell"})
    );
    let id = seen_by_a["id"].as_i64().expect("integer id");
    let stamp = seen_by_a["timestamp"].as_str().unwrap().to_string();
    let admin = db.admin();
    let row = admin
        .block_on(admin.client().query_one(
            "SELECT content, sender_id::bigint, conversation_id, \"timestamp\" \
             FROM chatapp_message WHERE id = $1",
            &[&id],
        ))
        .expect("the broadcast message is stored");
    assert_eq!(row.get::<_, String>(0), "hello postgres");
    assert_eq!((row.get::<_, i64>(1), row.get::<_, i64>(2)), (alice, conv));
    let at: chrono::DateTime<chrono::Utc> = row.get(3);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&stamp).unwrap(),
        at,
        "{stamp}"
    );
    assert_eq!((db.unread(conv, alice), db.unread(conv, bob)), (0, 1));

    // A burst (within the rate limit): delivered in send order, ids increasing.
    for i in 0..15 {
        b.send_json(json!({"type": "chat_message", "content": format!("m{i}")}));
    }
    let mut last = id;
    for i in 0..15 {
        let m = a.recv_new_message();
        assert_eq!(m["content"], format!("m{i}"));
        let next = m["id"].as_i64().unwrap();
        assert!(next > last);
        last = next;
    }
    assert_eq!(db.messages(), 16);
    assert_eq!(db.unread(conv, alice), 15);

    b.send_json(json!({"type": "delete_message", "message_id": id}));
    loop {
        let v = b.recv_json();
        if v["type"] == "message_deleted" {
            assert_eq!(v, json!({"type": "message_deleted", "message_id": id}));
            break;
        }
        assert_eq!(v["type"], "new_message", "{v}");
    }
    let deletions = db.scalar(
        "SELECT count(*) FROM chatapp_messagedeletion WHERE message_id = $1 AND user_id = $2::bigint",
        &[&id, &bob],
    );
    assert_eq!(deletions, 1);
}

#[test]
fn gateway_on_postgres_end_to_end() {
    gateway_end_to_end(Schema::Migrated, "e2e_migrated");
}

#[test]
fn gateway_on_djangos_schema_end_to_end() {
    gateway_end_to_end(Schema::Django, "e2e_django");
}
