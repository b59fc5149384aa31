//! The message rules without a socket: each reply error, limit, close and
//! relay rule that the integration tests reach only over the wire.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::clock::FakeRelativeClock;
use serde_json::{json, Value};

use super::*;
use crate::limits::LimitsConfig;

const CONV: ConversationId = 7;
const ALICE: UserId = 1;
const BOB: UserId = 2;
const CAROL: UserId = 3;
const CONN: u64 = 42;

/// The shard's tables and a node's limits for one test.
struct Bench {
    limits: Limits<FakeRelativeClock>,
    typing: RefCell<TypingTable>,
    uploads: RefCell<UploadThrottle<HeldUpload>>,
    presence: RefCell<Presence>,
    decoder: Decoder,
    alice: Member,
    t0: Instant,
}

impl Bench {
    fn new() -> Self {
        Self::with_limits(LimitsConfig::default())
    }

    fn with_limits(cfg: LimitsConfig) -> Self {
        Self {
            limits: Limits::with_clock(&cfg, FakeRelativeClock::default()).unwrap(),
            typing: RefCell::new(TypingTable::new()),
            uploads: RefCell::new(UploadThrottle::new()),
            presence: RefCell::new(Presence::new()),
            decoder: Decoder::new(),
            alice: Member {
                user_id: ALICE,
                username: "alice".into(),
                sender_json: Bytes::from_static(b"{}"),
            },
            t0: Instant::now(),
        }
    }

    /// The steps of `frame` sent by alice on a `version` socket, `ms`
    /// milliseconds into the test.
    fn steps_at(&mut self, frame: Value, version: Version, ms: u64) -> Vec<Step> {
        let text = frame.to_string();
        let action = Action::decode(&mut self.decoder, text.as_bytes(), version, &self.alice);
        let who = Who {
            member: &self.alice,
            conversation_id: CONV,
            conn_id: CONN,
        };
        let rules = Rules {
            limits: &self.limits,
            typing: &self.typing,
            uploads: &self.uploads,
            presence: &self.presence,
        };
        let mut steps = Vec::new();
        let now = self.t0 + Duration::from_millis(ms);
        decide(action, &who, now, &rules, &mut |s| steps.push(s));
        steps
    }

    fn v2(&mut self, frame: Value) -> Vec<Step> {
        self.steps_at(frame, Version::V2, 0)
    }

    /// The steps after the `Received` metric.
    fn effects(&mut self, frame: Value) -> Vec<Step> {
        let mut steps = self.v2(frame);
        assert!(matches!(steps[0], Step::Metric(Metric::Received(_))));
        steps.remove(0);
        steps
    }

    fn online(&self, user: UserId, v2: bool) {
        self.presence
            .borrow_mut()
            .join(CONV, user, &format!("user{user}"), v2);
    }
}

fn error(e: ReplyError) -> Vec<Step> {
    vec![Step::Error(e)]
}

fn text(step: &Step) -> String {
    match step {
        Step::Broadcast { frame, .. } => {
            String::from_utf8(crate::frame::payload_of(frame).to_vec()).unwrap()
        }
        other => panic!("not a broadcast: {other:?}"),
    }
}

fn audience(step: &Step) -> Audience {
    match step {
        Step::Broadcast { audience, .. } => *audience,
        other => panic!("not a broadcast: {other:?}"),
    }
}

#[test]
fn invalid_input_is_answered_with_its_error_only() {
    let mut b = Bench::new();
    for (frame, e) in [
        ("not json", ReplyError::InvalidJson),
        ("[1]", ReplyError::UnknownType),
        (r#"{"type":"nope"}"#, ReplyError::UnknownType),
        (
            r#"{"type":"chat_message","content":5}"#,
            ReplyError::InvalidFormat,
        ),
        (
            r#"{"type":"chat_message","content":"  "}"#,
            ReplyError::EmptyMessage,
        ),
        (
            r#"{"type":"delete_message"}"#,
            ReplyError::MessageIdRequired,
        ),
    ] {
        let action = Action::decode(&mut b.decoder, frame.as_bytes(), Version::V1, &b.alice);
        assert_eq!(action, Action::Reply(e), "{frame}");
        assert_eq!(action.kind(), "invalid");
    }
}

#[test]
fn v2_requests_on_a_v1_socket_are_unknown() {
    let mut b = Bench::new();
    for frame in [
        json!({"type": "history"}),
        json!({"type": "mark_read", "message_id": 1}),
        json!({"type": "react", "message_id": 1, "emoji": "👍"}),
        json!({"type": "call_signal", "to_user_id": 2, "call_id": "c", "kind": "ring"}),
        json!({"type": "upload_progress", "upload_id": "u", "file_name": "f", "percent": 1}),
    ] {
        let steps = b.steps_at(frame.clone(), Version::V1, 0);
        assert_eq!(
            steps,
            [
                Step::Metric(Metric::Received("invalid")),
                Step::Error(ReplyError::UnknownType)
            ],
            "{frame}"
        );
    }
}

#[test]
fn chat_is_stored_until_the_limit_then_refused_then_closed_for_abuse() {
    let mut b = Bench::with_limits(LimitsConfig {
        chat_burst: 2,
        abuse_rejections: 2,
        ..LimitsConfig::default()
    });
    let chat = || json!({"type": "chat_message", "content": " hi "});
    assert_eq!(
        b.v2(chat()),
        [
            Step::Metric(Metric::Received("chat_message")),
            Step::Store("hi".into())
        ]
    );
    assert_eq!(b.effects(chat()), [Step::Store("hi".into())]);
    let refused = [
        Step::Error(ReplyError::RateLimited),
        Step::Metric(Metric::RateLimited("chat")),
    ];
    assert_eq!(b.effects(chat()), refused);
    // Sustained rejections (past `abuse_rejections` in the window) close.
    let abuse = [
        Step::CloseForAbuse { kind: "chat" },
        Step::Metric(Metric::RateLimited("chat")),
    ];
    let mut tries = 0;
    while b.effects(chat()) != abuse {
        tries += 1;
        assert!(tries < 10, "never closed for abuse");
    }
}

#[test]
fn react_counts_against_the_chat_limit_and_needs_a_message_id() {
    let mut b = Bench::with_limits(LimitsConfig {
        chat_burst: 2,
        ..LimitsConfig::default()
    });
    assert_eq!(
        b.effects(json!({"type": "react", "message_id": 5, "emoji": "👍", "on": false})),
        [Step::React {
            message_id: 5,
            emoji: "👍".into(),
            on: false
        }]
    );
    // A well-formed id that names no message: the store is not asked.
    assert_eq!(
        b.effects(json!({"type": "react", "message_id": 0, "emoji": "👍"})),
        error(ReplyError::ReactFailed)
    );
    assert_eq!(
        b.effects(json!({"type": "react", "message_id": 5, "emoji": "👍"})),
        [
            Step::Error(ReplyError::RateLimited),
            Step::Metric(Metric::RateLimited("chat"))
        ]
    );
    assert_eq!(
        b.effects(json!({"type": "react", "message_id": 5, "emoji": "a b"})),
        error(ReplyError::InvalidFormat)
    );
}

#[test]
fn mark_read_history_and_delete_go_to_the_store_and_are_never_limited() {
    let mut b = Bench::with_limits(LimitsConfig {
        chat_burst: 1,
        ..LimitsConfig::default()
    });
    for _ in 0..5 {
        assert_eq!(
            b.effects(json!({"type": "mark_read", "message_id": 9})),
            [Step::MarkRead(9)]
        );
    }
    assert_eq!(
        b.effects(json!({"type": "mark_read", "message_id": -3})),
        error(ReplyError::MarkReadFailed)
    );
    assert_eq!(
        b.effects(json!({"type": "history", "before": 10, "limit": 5})),
        [Step::History {
            before: Some(10),
            limit: 5
        }]
    );
    assert_eq!(
        b.effects(json!({"type": "history", "limit": 101})),
        error(ReplyError::InvalidFormat)
    );
    assert_eq!(
        b.effects(json!({"type": "delete_message", "message_id": "12"})),
        [Step::Delete(12)]
    );
}

#[test]
fn typing_is_a_state_changes_at_once_repeats_once_a_second() {
    let mut b = Bench::new();
    let typing = |on: bool| json!({"type": "typing", "is_typing": on});
    let steps = b.steps_at(typing(true), Version::V1, 0);
    assert_eq!(steps.len(), 2);
    assert_eq!(audience(&steps[1]), Audience::except_user(ALICE));
    assert_eq!(
        serde_json::from_str::<Value>(&text(&steps[1])).unwrap(),
        json!({"type": "typing", "user_id": ALICE, "username": "alice", "is_typing": true})
    );
    assert_eq!(
        b.steps_at(typing(true), Version::V1, 500)[1..],
        [Step::Metric(Metric::TypingCoalesced)]
    );
    assert!(matches!(
        b.steps_at(typing(false), Version::V1, 600)[1],
        Step::Broadcast { .. }
    ));
    assert!(matches!(
        b.steps_at(typing(false), Version::V1, 1700)[1],
        Step::Broadcast { .. }
    ));
}

#[test]
fn typing_changes_past_their_limit_are_dropped_silently() {
    let mut b = Bench::with_limits(LimitsConfig {
        typing_burst: 1,
        ..LimitsConfig::default()
    });
    b.v2(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        b.effects(json!({"type": "typing", "is_typing": false})),
        [Step::Metric(Metric::RateLimited("typing"))]
    );
}

fn signal(to: UserId, kind: &str) -> Value {
    json!({"type": "call_signal", "to_user_id": to, "call_id": "c1", "kind": kind, "payload": {"sdp": "x"}})
}

#[test]
fn a_call_signal_reaches_an_online_v2_recipient_with_its_payload_as_sent() {
    let mut b = Bench::new();
    b.online(BOB, true);
    let steps = b.effects(signal(BOB, "ring"));
    assert_eq!(steps[0], Step::Metric(Metric::SignalRelayed));
    assert_eq!(steps.len(), 2);
    assert_eq!(audience(&steps[1]), Audience::v2_of(BOB));
    assert_eq!(
        serde_json::from_str::<Value>(&text(&steps[1])).unwrap(),
        json!({"type": "call_signal", "from_user_id": ALICE, "from_username": "alice",
               "call_id": "c1", "kind": "ring", "payload": {"sdp": "x"}})
    );
    // `answer` also goes to the sender's other v2 tabs, first.
    let steps = b.effects(signal(BOB, "answer"));
    assert_eq!(steps.len(), 3);
    assert_eq!(
        audience(&steps[1]),
        Audience {
            except_conn: Some(CONN),
            ..Audience::v2_of(ALICE)
        }
    );
    assert_eq!(audience(&steps[2]), Audience::v2_of(BOB));
}

#[test]
fn a_call_signal_to_oneself_a_v1_user_or_an_offline_user_is_refused() {
    let mut b = Bench::new();
    b.online(ALICE, true);
    b.online(CAROL, false);
    assert_eq!(
        b.effects(signal(ALICE, "ring")),
        [
            Step::Metric(Metric::SignalRefused("recipient")),
            Step::Error(ReplyError::InvalidRecipient)
        ]
    );
    assert_eq!(
        b.effects(signal(CAROL, "ring")),
        [
            Step::Metric(Metric::SignalRefused("unavailable")),
            Step::Error(ReplyError::UserNotAvailable)
        ]
    );
    assert_eq!(b.effects(signal(99, "ring")), [Step::AskRecipient(99)]);
}

#[test]
fn a_call_signal_over_16_kib_or_its_quota_is_refused() {
    let mut b = Bench::with_limits(LimitsConfig {
        signal_burst: 1,
        ..LimitsConfig::default()
    });
    b.online(BOB, true);
    let big = json!({"type": "call_signal", "to_user_id": BOB, "call_id": "c", "kind": "offer",
                     "payload": "x".repeat(MAX_SIGNAL_FRAME)});
    assert_eq!(b.effects(big), error(ReplyError::MessageTooLong));
    assert_eq!(b.effects(signal(BOB, "candidate")).len(), 2);
    assert_eq!(
        b.effects(signal(BOB, "candidate")),
        [
            Step::Error(ReplyError::RateLimited),
            Step::Metric(Metric::RateLimited("signal")),
            Step::Metric(Metric::SignalRefused("rate_limited"))
        ]
    );
}

#[test]
fn upload_progress_goes_once_per_slot_and_100_at_once() {
    let mut b = Bench::new();
    let progress = |p: u8| json!({"type": "upload_progress", "upload_id": "u1", "file_name": "a.png", "percent": p});
    let first = b.effects(progress(10));
    assert_eq!(first.len(), 1);
    assert_eq!(audience(&first[0]), Audience::v2_except_user(ALICE));
    // Within 250 ms: held, a slot is set once, a newer value replaces it.
    let held = b.steps_at(progress(20), Version::V2, 100);
    assert!(matches!(held[1..], [Step::ReleaseUploadsAt(_)]), "{held:?}");
    assert_eq!(
        b.steps_at(progress(30), Version::V2, 120)[1..],
        [Step::Metric(Metric::UploadDropped)]
    );
    // 100 goes at once and supersedes the held value.
    let done = b.steps_at(progress(100), Version::V2, 130);
    assert_eq!(done[1], Step::Metric(Metric::UploadDropped));
    assert!(text(&done[2]).contains(r#""percent":100"#));
}
