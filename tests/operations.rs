//! Operating the gateway: `/healthz` and `/readyz` on the admin listener,
//! the drain (`/readyz` 503 first, sockets closed with 1001 after the
//! grace), token expiry (4001 when the token used at connect expires), and
//! the deploy files that are checkable offline (Prometheus config and rules,
//! the example environment file).

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatgate::auth::{mint_token, Verifier};
use chatgate::IoDriver;
use support::*;

on_both_drivers!(readyz_turns_503_at_once_and_sockets_close_1001_after_the_grace);

fn readyz_turns_503_at_once_and_sockets_close_1001_after_the_grace(driver: IoDriver) {
    const GRACE: Duration = Duration::from_secs(2);
    let mut gw = TestGateway::start_with(|c| {
        c.io_driver = driver;
        c.drain_grace = GRACE;
    });
    let admin = gw.admin_addr();
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);

    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http_get(admin, "/readyz"), (200, "ready\n".to_owned()));

    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);
    let draining = (503, "not ready: draining\n".to_owned());

    let started = Instant::now();
    gw.shutdown_handle().trigger();
    // 503 at once (no polling: trigger() sets the flag before returning);
    // the process is still alive.
    assert_eq!(http_get(admin, "/readyz"), draining);
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));

    // During the grace the sockets stay open and keep working.
    a.chat("said during the grace");
    let m = a.recv_new_message();
    assert_new_message(&m, &alice, "said during the grace");
    assert_eq!(b.recv_new_message(), m);
    while started.elapsed() < GRACE - Duration::from_millis(400) {
        assert_eq!(http_get(admin, "/readyz"), draining, "during the grace");
        b.expect_silence(Duration::from_millis(200));
    }

    // Then every socket gets 1001, not before the grace is over.
    a.expect_close(1001);
    b.expect_close(1001);
    let closed_after = started.elapsed();
    assert!(
        closed_after >= GRACE - Duration::from_millis(50),
        "sockets closed {closed_after:?} after the drain started, before the {GRACE:?} grace"
    );
    for c in [&mut a, &mut b] {
        let (closed, _) = wait_tcp_close(c.ws.get_mut(), Duration::from_secs(5));
        assert!(closed, "a socket stayed open after its 1001");
    }
    assert_eq!(gw.messages_of(conv).len(), 1);

    // The gateway finishes by itself (the handle stopped it), within bounds.
    let gateway = gw.take_gateway();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        gateway.wait();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the gateway stops after the drain");
}

#[test]
fn a_socket_is_closed_with_4001_when_its_token_expires() {
    let gw = TestGateway::start_with(|c| c.enforce_token_expiry = true);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    let token = mint_token(&gw.config.jwt, alice.id, Duration::from_secs(2));
    let exp = Verifier::new(&gw.config.jwt)
        .verify(Some(&token))
        .expect("a fresh token verifies")
        .exp as f64;

    let mut a = gw.connect_path(&chat_path(conv, &token), &[]);
    let mut b = gw.connect(conv, &bob);
    a.chat("before expiry");
    let m = a.recv_new_message();
    assert_new_message(&m, &alice, "before expiry");
    assert_eq!(b.recv_new_message(), m);

    a.expect_close(4001);
    // `exp` has one-second resolution (the verifier accepts the token until
    // the clock's second passes it): the close comes at `exp` at the
    // earliest and less than a second later.
    let closed_at = unix_now();
    assert!(
        closed_at >= exp - 0.05 && closed_at <= exp + 1.5,
        "closed at {closed_at:.3}, token exp {exp}"
    );
    let (closed, _) = wait_tcp_close(a.ws.get_mut(), Duration::from_secs(5));
    assert!(closed, "the socket stayed open after 4001");
    // Bob's socket (a one-hour token) is not affected.
    b.expect_silence(Duration::from_millis(300));
    let mut a2 = gw.connect(conv, &alice);
    a2.chat("with a fresh token");
    assert_new_message(&b.recv_new_message(), &alice, "with a fresh token");
}

#[test]
fn an_expiring_token_keeps_its_socket_when_expiry_is_not_enforced() {
    let gw = TestGateway::start_with(|c| c.enforce_token_expiry = false);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    let token = mint_token(&gw.config.jwt, alice.id, Duration::from_secs(2));
    let exp = Verifier::new(&gw.config.jwt)
        .verify(Some(&token))
        .expect("a fresh token verifies")
        .exp as f64;

    let mut a = gw.connect_path(&chat_path(conv, &token), &[]);
    let mut b = gw.connect(conv, &bob);
    // Well past the moment an enforcing gateway closes (exp + 1 s at most).
    let quiet = (exp + 1.5 - unix_now()).max(0.0);
    a.expect_silence(Duration::from_secs_f64(quiet));
    assert!(unix_now() > exp + 1.0);
    a.chat("after expiry");
    let m = a.recv_new_message();
    assert_new_message(&m, &alice, "after expiry");
    assert_eq!(b.recv_new_message(), m);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---- deploy files -------------------------------------------------------------

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_config_and_rules_pass_promtool() {
    let Some(promtool) = find_tool("promtool") else {
        return skip_or_fail("promtool", "apt-get install prometheus");
    };
    run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(deploy("prometheus/chatgate.rules.yml")),
    );
    // `check config` also loads the rule files it names (relative to it).
    run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("config")
            .arg(deploy("prometheus/prometheus.yml")),
    );
}

#[test]
fn the_alert_rules_only_use_metrics_the_gateway_exports() {
    use chatgate::metrics::*;
    let exported = [
        MESSAGES_RECEIVED,
        ERRORS_SENT,
        RATE_LIMITED,
        EVENTS_DELIVERED,
        GATHERED_WRITES,
        CONNECTIONS_OPENED,
        CONNECTIONS_CLOSED,
        CONNECTIONS_OPEN,
        HANDSHAKES_REJECTED,
        SLOW_CONSUMERS,
        HANDOFFS,
        BROADCAST_LATENCY,
        STORE_BATCH_SIZE,
        STORE_COMMIT_LATENCY,
        STORE_FAILURES,
        BRIDGE_CONNECTED,
        BRIDGE_PUBLISH_BATCH_SIZE,
        BRIDGE_QUEUE_DEPTH,
        BRIDGE_DROPPED,
        BRIDGE_SKIPPED,
        PRESENCE_FIELDS_REAPED,
        PRESENCE_NODES_REAPED,
        CHANNEL_LAYER_UP,
        CHANNEL_LAYER_DROPPED,
        CHANNEL_LAYER_OVER_CAPACITY,
    ];
    let histograms = [
        BROADCAST_LATENCY,
        STORE_BATCH_SIZE,
        STORE_COMMIT_LATENCY,
        BRIDGE_PUBLISH_BATCH_SIZE,
    ];
    let rules = std::fs::read_to_string(deploy("prometheus/chatgate.rules.yml")).unwrap();
    let mut used = Vec::new();
    for (i, _) in rules.match_indices("chatgate_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.push(name);
    }
    assert!(used.len() >= 5, "the rules use chatgate metrics: {used:?}");
    for name in &used {
        let known = exported.contains(&name.as_str())
            || ["_bucket", "_count", "_sum"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| histograms.contains(&base))
            });
        assert!(
            known,
            "the alert rules use {name}, which chatgate does not export"
        );
    }
}

/// Every `CHATGATE_*` variable of `deploy/chatgate.env.example` is one the
/// binary reads, the default its comment shows is the binary's default, and
/// all the shown values parse together.
#[test]
fn the_example_environment_file_matches_the_binary() {
    let bin = env!("CARGO_BIN_EXE_chatgate");
    let help = run_ok(Command::new(bin).arg("--help"));
    let example = std::fs::read_to_string(deploy("chatgate.env.example")).unwrap();
    let mut shown = Vec::new();
    let mut compared = 0;
    for line in example.lines() {
        let Some((name, value)) = line.trim_start_matches('#').split_once('=') else {
            continue;
        };
        if !name.starts_with("CHATGATE_") || name.contains(' ') {
            continue;
        }
        let marker = format!("[env: {name}");
        let Some(at) = help.find(&marker) else {
            panic!("the example sets {name}, which `chatgate --help` does not list");
        };
        let after = &help[at..];
        // `[env: X=] [default: D]`, maybe followed by ` [possible values: ..]`
        // on the same line; D itself may hold brackets (`[::1]`).
        let default = after
            .split_once("[default: ")
            .filter(|(between, _)| !between.contains('\n'))
            .and_then(|(_, rest)| {
                let line = rest.lines().next().unwrap_or_default().trim_end();
                line.split_once("] [")
                    .map(|(d, _)| d)
                    .or_else(|| line.strip_suffix(']'))
            });
        if let Some(default) = default {
            assert_eq!(value, default, "the example's value of {name}");
            compared += 1;
        }
        if !value.is_empty() {
            shown.push((name.to_owned(), value.to_owned()));
        }
    }
    assert!(shown.len() >= 20 && compared >= 20, "{compared}: {shown:?}");
    // The values parse: `token` reads every global flag, starts nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .args(["token", "--user-id", "1", "--database"])
        .arg(dir.path().join("c.db"));
    for (name, value) in &shown {
        if name != "CHATGATE_DATABASE" {
            cmd.env(name, value);
        }
    }
    let token = run_ok(&mut cmd);
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
}
