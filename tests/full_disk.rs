//! A full disk under the embedded store behaves like a database outage:
//! senders get `Failed to send message`, nothing is shown that is not
//! stored, the gateway stays up, writes resume when space returns, and the
//! file passes `PRAGMA integrity_check`. The database lives on a small
//! tmpfs the test mounts (root, as in CI) and fills with a filler file.
//! The outage is logged once, not once per failed message: one line when
//! writes start failing, one when they resume (read from the gateway's
//! `tracing` output, captured by a subscriber this test installs).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::*;

/// A tmpfs of `size` mounted on a fresh temporary directory; unmounted on
/// drop (after the gateway using it, which is declared later).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// `None` (after saying why) where mounting is not allowed outside CI.
    fn mount(size: &str) -> Option<(SmallDisk, tempfile::TempDir)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            skip_or_fail("mount -t tmpfs", "run the tests as root");
            return None;
        }
        let disk = SmallDisk {
            dir: dir.path().to_path_buf(),
        };
        Some((disk, dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // The last partial block: byte by byte up to the very end.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
}

/// Everything the gateway logs (every thread: the subscriber is global;
/// this file holds one test).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn capture() -> Log {
        let log = Log::default();
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || sink.clone())
            .init();
        log
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines holding `what`.
    fn lines(&self, what: &str) -> Vec<String> {
        let text = self.text();
        text.lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_disk_fails_sends_keeps_serving_and_recovers() {
    let Some((disk, dir)) = SmallDisk::mount("4m") else {
        return;
    };
    let log = Log::capture();
    let filler = disk.dir.join("filler");
    let gw = TestGateway::start_in(dir, |_| {});
    let (alice, bob, conv) = gw.alice_and_bob();
    let mut a = gw.connect(conv, &alice);
    let mut b = gw.connect(conv, &bob);
    a.chat("before");
    let first = a.recv_new_message();
    assert_eq!(b.recv_new_message(), first);

    fill(&filler);
    // Big messages need new pages: some must fail now.
    let body = "x".repeat(4000);
    let mut failed = 0;
    let mut shown = Vec::new();
    for i in 0..60 {
        a.chat(&format!("{i} {body}"));
        let reply = a.recv_json();
        match reply["type"].as_str() {
            Some("new_message") => {
                let m = reply["message"].clone();
                assert_eq!(b.recv_new_message(), m, "bob sees what alice saw");
                shown.push(m["id"].as_i64().unwrap());
            }
            Some("error") => {
                assert_eq!(
                    reply,
                    json!({"type": "error", "message": "Failed to send message"})
                );
                failed += 1;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    assert!(
        failed > 0,
        "nothing failed on a full disk (shown {})",
        shown.len()
    );
    b.expect_silence(Duration::from_millis(300));
    // Logged once for the whole outage, not once per failed message.
    let failing = log.lines("sqlite store: writes failing");
    assert_eq!(failing.len(), 1, "{failed} failures:\n{}", log.text());
    assert!(failing[0].contains("ERROR"), "{}", failing[0]);
    assert!(
        log.lines("not stored").is_empty() && log.lines("not committed").is_empty(),
        "a line per failure:\n{}",
        log.text()
    );
    // Everything shown is stored.
    let stored: Vec<i64> = gw.messages_of(conv).iter().map(|(id, _)| *id).collect();
    for id in &shown {
        assert!(
            stored.contains(id),
            "message {id} was shown but is not stored"
        );
    }
    // The gateway is up: health, a new socket, typing.
    assert_eq!(http_get(gw.admin_addr(), "/healthz").0, 200);
    let mut b2 = gw.connect(conv, &bob);
    a.send_json(json!({"type": "typing", "is_typing": true}));
    assert_eq!(b2.recv_json()["type"], "typing");

    // Space returns: writes resume.
    std::fs::remove_file(&filler).expect("remove the filler");
    a.chat("after");
    let after = a.recv_new_message();
    assert_eq!(after["content"], "after");
    assert_eq!(b.recv_json()["type"], "typing");
    assert_eq!(b.recv_new_message(), after);
    assert_eq!(b2.recv_new_message(), after);
    // The end of the outage is logged once, with what it cost.
    let resumed = log.lines("sqlite store: writes resumed");
    assert_eq!(resumed.len(), 1, "{}", log.text());
    assert!(
        resumed[0].contains(&format!("failed={failed}")),
        "{}",
        resumed[0]
    );
    assert_eq!(log.lines("writes failing").len(), 1, "{}", log.text());
    // Nothing that failed was stored: `before`, what was shown, `after`.
    assert_eq!(gw.messages_of(conv).len(), shown.len() + 2);
    let check: String = gw
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}
