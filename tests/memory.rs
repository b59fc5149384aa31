//! Resource bounds: many connect / chat / garbage / abrupt-close cycles do
//! not grow the process (the gateway runs in it) and leave no session or
//! queued frame behind. A file of its own so no other test shares the RSS.

#[macro_use]
mod support;

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use chatgate::IoDriver;
use support::*;

on_both_drivers!(connection_churn_does_not_leak);

/// One cycle of good and bad clients.
fn churn(gw: &TestGateway, conv: i64, alice: &User, bob: &User, i: usize) {
    // A real conversation, then abrupt TCP closes.
    let mut a = gw.connect(conv, alice);
    let mut b = gw.connect(conv, bob);
    a.chat(&format!("cycle {i}"));
    b.recv_new_message();
    a.recv_new_message();
    drop(a);
    // A socket that leaves unread frames behind.
    b.chat(&"x".repeat(4000));
    drop(b);
    // Garbage instead of a handshake.
    let mut s = gw.tcp();
    let _ = s.write_all(b"\x16\x03\x01garbage garbage\r\n\r\n");
    drop(s);
    // A half-sent handshake.
    let mut s = gw.tcp();
    let _ = s.write_all(b"GET /ws/chat/1/ HTTP/1.1\r\nHost: x\r\n");
    drop(s);
    // An oversized frame header, then gone.
    let mut c = gw.connect(conv, alice);
    c.send_raw_frame(&frame_header(
        true,
        0,
        OP_TEXT,
        10 << 20,
        Some([1, 2, 3, 4]),
    ));
    drop(c);
    // Auth failures.
    let _ = gw.try_open(&format!("/ws/chat/{conv}/?token=bad"), &[]);
}

/// The two driver variants must not churn at the same time: RSS is per process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn connection_churn_does_not_leak(driver: IoDriver) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let gw = TestGateway::start_with(|c| {
        c.io_driver = driver;
        c.timeouts.handshake = Duration::from_millis(500);
    });
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    let settle = || {
        eventually_eq(
            Duration::from_secs(10),
            "all sessions closed, no queued frames (connections, queued)",
            vec![(0, 0), (0, 0)],
            || {
                gw.stats()
                    .iter()
                    .map(|s| (s.connections, s.queued_frames))
                    .collect::<Vec<_>>()
            },
        )
    };
    for i in 0..100 {
        churn(&gw, conv, &alice, &bob, i);
    }
    settle();
    let before = rss_bytes();
    for i in 100..1100 {
        churn(&gw, conv, &alice, &bob, i);
    }
    settle();
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    eprintln!("RSS {} MiB → {} MiB", before >> 20, after >> 20);
    assert!(
        growth < 64 << 20,
        "RSS grew by {} MiB over 1000 churn cycles",
        growth >> 20
    );
    // Every delivered "cycle i" message is stored.
    assert!(gw.messages_of(conv).len() >= 1100);
}
