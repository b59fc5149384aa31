//! `/metrics` on the admin listener: valid Prometheus exposition (checked by
//! `promtool check metrics`), and the counters move exactly as a scripted
//! session expects.
//!
//! The `metrics` recorder is global per process, so this file holds a single
//! test: the values it reads are exactly what its own session produced.

#[allow(unused_macros)]
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Label set → value of every sample of one exposition.
#[derive(Debug)]
struct Exposition {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn scrape(gw: &TestGateway) -> Self {
        let (status, text) = http_get(gw.admin_addr(), "/metrics");
        assert_eq!(status, 200, "/metrics: {text}");
        Self::parse(text)
    }

    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unparsable sample line {l:?}")))
            .collect();
        Self { text, samples }
    }

    /// Sum over every series of `name` whose labels include `want` (the
    /// `shard` label is summed over).
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .fold(0.0, |sum, (_, _, v)| sum + v)
    }

    /// Every value of label `key` on `name`, summed over the other labels.
    fn by_label(&self, name: &str, key: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.samples {
            if n == name {
                let label = labels.get(key).cloned().unwrap_or_default();
                *out.entry(label).or_insert(0.0) += v;
            }
        }
        out
    }

    /// The `# TYPE` of a family.
    fn type_of(&self, name: &str) -> Option<&str> {
        let prefix = format!("# TYPE {name} ");
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }
}

/// `name{k="v",...} value` or `name value`.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series.to_owned(), BTreeMap::new(), value));
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => val.push(chars.next()?.1),
                (_, c) => val.push(c),
            }
        };
        labels.insert(key.to_owned(), val);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some((name.to_owned(), labels, value))
}

/// Expected values of a labelled family: every label value the exposition
/// shows is 0 unless listed.
fn expect_family(got: &BTreeMap<String, f64>, nonzero: &[(&str, f64)]) -> BTreeMap<String, f64> {
    let mut want: BTreeMap<String, f64> = got.keys().map(|k| (k.clone(), 0.0)).collect();
    for (label, v) in nonzero {
        want.insert((*label).to_owned(), *v);
    }
    want
}

/// The figures the scripted session is checked on, summed over shards.
#[derive(Debug, PartialEq)]
struct Figures {
    received: BTreeMap<String, f64>,
    errors: BTreeMap<String, f64>,
    rate_limited: BTreeMap<String, f64>,
    rejected: BTreeMap<String, f64>,
    closed: BTreeMap<String, f64>,
    opened: f64,
    open: f64,
    delivered: f64,
    slow_consumers: f64,
    handoffs: f64,
    store_batches: f64,
    store_batched_messages: f64,
    store_commits_timed: f64,
}

impl Figures {
    fn of(e: &Exposition) -> Self {
        Self {
            received: e.by_label("chatgate_messages_received_total", "type"),
            errors: e.by_label("chatgate_errors_sent_total", "kind"),
            rate_limited: e.by_label("chatgate_messages_rate_limited_total", "kind"),
            rejected: e.by_label("chatgate_handshakes_rejected_total", "reason"),
            closed: e.by_label("chatgate_connections_closed_total", "code"),
            opened: e.sum("chatgate_connections_opened_total", &[]),
            open: e.sum("chatgate_connections_open", &[]),
            delivered: e.sum("chatgate_events_delivered_total", &[]),
            slow_consumers: e.sum("chatgate_slow_consumer_closes_total", &[]),
            handoffs: e.sum("chatgate_handoffs_total", &[]),
            store_batches: e.sum("chatgate_store_batch_size_count", &[]),
            store_batched_messages: e.sum("chatgate_store_batch_size_sum", &[]),
            store_commits_timed: e.sum("chatgate_store_commit_latency_seconds_count", &[]),
        }
    }
}

/// Scrapes until the figures equal `want` (the shards flush about once a
/// second) or `within` passes; asserts equality with the last scrape.
fn scrape_until(
    gw: &TestGateway,
    within: Duration,
    want: impl Fn(&Exposition) -> Figures,
) -> Exposition {
    let deadline = Instant::now() + within;
    loop {
        let e = Exposition::scrape(gw);
        let (got, expected) = (Figures::of(&e), want(&e));
        if got == expected {
            return e;
        }
        if Instant::now() >= deadline {
            assert_eq!(got, expected, "metrics after the session:\n{}", e.text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `promtool check metrics` accepts the exposition (skipped without promtool
/// outside CI).
fn promtool_accepts(text: &str) {
    let Some(promtool) = find_tool("promtool") else {
        return skip_or_fail("promtool", "apt-get install prometheus");
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counters_follow_a_scripted_session_and_promtool_accepts_the_exposition() {
    let gw = TestGateway::start();
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);

    // Before any client: every per-shard series is registered at 0.
    let idle = Exposition::scrape(&gw);
    promtool_accepts(&idle.text);
    let zero = Figures::of(&idle);
    assert!(
        !zero.received.is_empty() && zero.received.values().all(|v| *v == 0.0),
        "{zero:?}"
    );
    assert_eq!((zero.opened, zero.open, zero.delivered), (0.0, 0.0, 0.0));
    for (family, kind) in [
        ("chatgate_messages_received_total", "counter"),
        ("chatgate_errors_sent_total", "counter"),
        ("chatgate_handshakes_rejected_total", "counter"),
        ("chatgate_connections_opened_total", "counter"),
        ("chatgate_connections_closed_total", "counter"),
        ("chatgate_events_delivered_total", "counter"),
        ("chatgate_gathered_writes_total", "counter"),
        ("chatgate_connections_open", "gauge"),
    ] {
        assert_eq!(idle.type_of(family), Some(kind), "{}", idle.text);
    }

    // The session: 2 clients, 3 chat messages (one store batch each: the
    // next is sent only once the previous was delivered), 1 typing event,
    // 1 invalid JSON, 1 handshake refused with 4001, 1 with 404.
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);
    for i in 1..=3 {
        let content = format!("metrics {i}");
        a.chat(&content);
        let m = a.recv_new_message();
        assert_new_message(&m, &alice, &content);
        assert_eq!(b.recv_new_message(), m);
    }
    a.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(
        b.recv_json(),
        json!({"type": "typing", "user_id": alice.id, "username": "alice", "is_typing": true})
    );
    a.send_text("this is not JSON");
    a.expect_error("Invalid JSON");
    gw.expect_rejected(&chat_path(conv, "not-a-jwt"), &[], 4001);
    assert_eq!(gw.upgrade_status("/ws/elsewhere/", &[]), 404);

    let handoffs = || gw.stats().iter().map(|s| s.handoffs_in as f64).sum::<f64>();
    let after_session = |e: &Exposition| Figures {
        // 3 chat messages, 1 typing event, 1 invalid message.
        received: expect_family(
            &e.by_label("chatgate_messages_received_total", "type"),
            &[("chat_message", 3.0), ("typing", 1.0), ("invalid", 1.0)],
        ),
        errors: expect_family(
            &e.by_label("chatgate_errors_sent_total", "kind"),
            &[("invalid_json", 1.0)],
        ),
        rate_limited: expect_family(
            &e.by_label("chatgate_messages_rate_limited_total", "kind"),
            &[],
        ),
        rejected: expect_family(
            &e.by_label("chatgate_handshakes_rejected_total", "reason"),
            &[("4001", 1.0), ("404", 1.0)],
        ),
        closed: expect_family(
            &e.by_label("chatgate_connections_closed_total", "code"),
            &[],
        ),
        opened: 2.0,
        open: 2.0,
        // new_message ×3 on 2 sockets, typing on bob's socket only.
        delivered: 7.0,
        slow_consumers: 0.0,
        // Every socket accepted by the shard that does not own the
        // conversation was handed off (4 upgrades reached a shard's routing).
        handoffs: handoffs(),
        store_batches: 3.0,
        store_batched_messages: 3.0,
        store_commits_timed: 3.0,
    };
    let e = scrape_until(&gw, Duration::from_secs(5), after_session);
    assert_eq!(e.type_of("chatgate_store_batch_size"), Some("histogram"));
    assert_eq!(
        e.type_of("chatgate_store_commit_latency_seconds"),
        Some("histogram")
    );
    // Broadcast latency: at least one sample per new_message fan-out (a
    // typing fan-out may count too).
    let broadcasts = e.sum("chatgate_broadcast_latency_seconds_count", &[]);
    assert!(
        (3.0..=4.0).contains(&broadcasts),
        "chatgate_broadcast_latency_seconds_count = {broadcasts}\n{}",
        e.text
    );
    // Each new_message turn wrote both sockets once (typing is not gathered).
    assert_eq!(
        e.sum("chatgate_gathered_writes_total", &[]),
        6.0,
        "{}",
        e.text
    );
    promtool_accepts(&e.text);

    // Bob leaves with 1000: one close by code, one socket open.
    b.close(1000);
    b.expect_close(1000);
    let after_close = |e: &Exposition| Figures {
        closed: expect_family(
            &e.by_label("chatgate_connections_closed_total", "code"),
            &[("1000", 1.0)],
        ),
        open: 1.0,
        ..after_session(e)
    };
    scrape_until(&gw, Duration::from_secs(5), after_close);
    // Nothing is counted twice by later flushes.
    std::thread::sleep(Duration::from_millis(1500));
    let e = Exposition::scrape(&gw);
    assert_eq!(
        Figures::of(&e),
        after_close(&e),
        "after more flushes:\n{}",
        e.text
    );
    promtool_accepts(&e.text);
    drop(a);
}
