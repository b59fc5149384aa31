//! The metrics of protocol v2's live half move exactly as a scripted
//! session expects: users online, presence transitions, call signals
//! relayed and refused (by reason), upload-progress values dropped by the
//! throttle.
//!
//! The `metrics` recorder is global per process, so this file holds a
//! single test.

#[allow(unused_macros)]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Sum of every sample of `name` whose label text contains each of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

#[test]
fn live_metrics_count_what_the_session_did() {
    let gw = TestGateway::start();
    let (alice, bob, conv) = gw.alice_and_bob();
    let carol = gw.user("carol");
    let mut a = gw.connect_v2(conv, &alice);
    let mut b = gw.connect_v2(conv, &bob);
    let signal = |to: i64| {
        json!({"type":"call_signal","to_user_id":to,"call_id":"c","kind":"ring"}).to_string()
    };
    a.send_text(&signal(bob.id));
    assert_eq!(b.recv_json()["kind"], "ring");
    a.send_text(&signal(alice.id));
    a.expect_error("Invalid recipient");
    a.send_text(&signal(carol.id));
    a.expect_error("Invalid recipient");
    b.close(1000);
    // Bob is offline once Alice is told so.
    while a.recv_all_json()
        != json!({"type":"presence","user_id":bob.id,"username":bob.username,"status":"offline"})
    {
    }
    a.send_text(&signal(bob.id));
    a.expect_error("User not available");
    let mut b = gw.connect_v2(conv, &bob);
    // 0 goes at once, 10 is held, 20 replaces it (dropped), 100 goes at
    // once and supersedes 20 (dropped).
    for p in [0, 10, 20, 100] {
        a.send_json(json!({"type":"upload_progress","upload_id":"u","file_name":"f","percent":p}));
    }
    assert_eq!(b.recv_json()["percent"], 0);
    assert_eq!(b.recv_json()["percent"], 100);

    let want = [
        ("chatgate_presence_transitions_total", vec![], 4.0), // a, b on; b off, on
        ("chatgate_call_signals_relayed_total", vec![], 1.0),
        (
            "chatgate_call_signals_refused_total",
            vec![r#"reason="recipient""#],
            2.0,
        ),
        (
            "chatgate_call_signals_refused_total",
            vec![r#"reason="unavailable""#],
            1.0,
        ),
        ("chatgate_upload_progress_dropped_total", vec![], 2.0),
        ("chatgate_presence_online_users", vec![], 2.0),
        (
            "chatgate_messages_received_total",
            vec![r#"type="call_signal""#],
            4.0,
        ),
        (
            "chatgate_messages_received_total",
            vec![r#"type="upload_progress""#],
            4.0,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = http_get(gw.admin_addr(), "/metrics");
        assert_eq!(status, 200);
        let got: Vec<f64> = want
            .iter()
            .map(|(name, labels, _)| sum(&text, name, labels))
            .collect();
        let expected: Vec<f64> = want.iter().map(|w| w.2).collect();
        if got == expected {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?} != {expected:?}\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
