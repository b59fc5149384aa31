//! SIGTERM on the real `chatgate` binary: `/readyz` turns 503, a message
//! sent just before the signal is delivered and stored, clients get 1001
//! after the drain grace, and the process exits 0 within a bounded time.
//! Also checks the log lines of that run: an authentication failure names
//! the peer and the reason, and no token is ever logged.

#[allow(unused_macros)]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_chatgate");

/// The running binary; killed if the test fails before it exits.
struct Process {
    child: Child,
    dir: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            read("stdout.log"),
            read("stderr.log")
        )
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "chatgate still running {within:?} after SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Process {
    /// Starts `chatgate` on free ports with `--database db` (the first run
    /// seeds the demo: users 1 and 2 in conversation 1) and `extra` flags;
    /// returns once `/readyz` answers 200. Logs go to files in `dir`.
    fn start(dir: &Path, db: &Path, extra: &[&str]) -> (Self, SocketAddr, SocketAddr) {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(BIN)
            .env_clear()
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--database")
            .arg(db)
            .args(["--shards", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("start chatgate");
        let mut proc = Process {
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while try_get(admin, "/readyz") != Some((200, "ready\n".to_owned())) {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("chatgate exited with {status}\n{}", proc.log());
            }
            assert!(
                Instant::now() < deadline,
                "chatgate not ready\n{}",
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        (proc, listen, admin)
    }
}

/// `GET path`, or `None` while nothing listens (or the answer is cut).
fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((status_of(head), body.to_owned()))
}

fn token(db: &Path, user_id: i64) -> String {
    let out = Command::new(BIN)
        .env_clear()
        .args(["token", "--user-id", &user_id.to_string(), "--database"])
        .arg(db)
        .output()
        .expect("run chatgate token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A demo user as `new_message` shows it (read from the database the binary seeded).
fn demo_user(db: &Path, id: i64) -> User {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (username, first_name, last_name) = conn
        .query_row(
            "SELECT username, first_name, last_name FROM auth_user WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the first run seeds demo users 1 and 2");
    User {
        id,
        username,
        first_name,
        last_name,
        token: token(db, id),
    }
}

#[test]
fn sigterm_drains_delivers_stores_closes_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let (mut proc, listen, admin) = Process::start(dir.path(), &db, &["--drain-grace", "1s"]);

    // The demo: users 1 and 2 in conversation 1.
    let alice = demo_user(&db, 1);
    let bob = demo_user(&db, 2);
    let connect = |user: &User| {
        let stream = TcpStream::connect(listen).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut c = ws_handshake(stream, listen, &chat_path(1, &user.token), &[])
            .unwrap_or_else(|e| panic!("upgrade: {e:?}\n{}", proc.log()));
        c.expect_established();
        c
    };
    let mut a = connect(&alice);
    let mut b = connect(&bob);
    // An authentication failure, for the log check below.
    let forged = format!("{}x", alice.token);
    let stream = TcpStream::connect(listen).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    ws_handshake(stream, listen, &chat_path(1, &forged), &[])
        .expect("101, then 4001")
        .expect_close(4001);

    let content = "sent just before SIGTERM";
    a.chat(content);
    let pid = libc::pid_t::try_from(proc.child.id()).unwrap();
    // SAFETY: kill(2) with a valid signal on our own child's pid.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    let signalled = Instant::now();

    // /readyz turns 503 (the signal is handled on a thread: poll, briefly).
    let draining = Some((503, "not ready: draining\n".to_owned()));
    let deadline = Instant::now() + Duration::from_millis(800);
    loop {
        let got = try_get(admin, "/readyz");
        if got == draining {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz after SIGTERM: {got:?}\n{}",
            proc.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // The message is delivered to both, then both get 1001 after the grace.
    let m = a.recv_new_message();
    let id = assert_new_message(&m, &alice, content);
    assert_eq!(b.recv_new_message(), m);
    a.expect_close(1001);
    b.expect_close(1001);
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "1001 came {closed_after:?} after SIGTERM, before the 1 s drain grace"
    );

    let status = proc.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit status\n{}", proc.log());

    // Stored: the row the new_message announced.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(i64, i64, i64, String)> = conn
        .prepare("SELECT id, conversation_id, sender_id, content FROM chatapp_message ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec![(id, 1, alice.id, content.to_owned())]);

    // Logging: the failed authentication is logged with the peer and the
    // reason; no token (valid or forged) appears anywhere in the log.
    let log = proc.stderr();
    assert!(
        log.lines().any(|l| l.contains("authentication failed")
            && l.contains("peer=127.0.0.1:")
            && l.contains("reason=\"bad_signature\"")),
        "no authentication-failure line with peer and reason:\n{log}"
    );
    for t in [&alice.token, &bob.token, &forged] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token in the log:\n{log}");
    }
}

/// SIGTERM as soon as `/readyz` first answers 200 (an orchestrator that
/// stops a node right after it became ready) still drains and exits 0.
#[test]
fn sigterm_as_soon_as_ready_still_exits_0() {
    for attempt in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let (mut proc, _listen, _admin) = Process::start(dir.path(), &db, &["--drain-grace", "0s"]);
        let pid = libc::pid_t::try_from(proc.child.id()).unwrap();
        // SAFETY: kill(2) with a valid signal on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = proc.wait_exit(Duration::from_secs(15));
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status} (killed by the signal: no drain)\n{}",
            proc.log()
        );
    }
}

/// The raw upgrade answer's head for `path` with extra headers.
fn upgrade_head(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let extra: Vec<(&str, Option<&str>)> = headers.iter().map(|(k, v)| (*k, Some(*v))).collect();
    s.write_all(upgrade_request(path, &extra).as_bytes())
        .unwrap();
    read_head(&mut s).0
}

/// Behind a trusted proxy, the log lines of suspicious activity name the
/// client (from `X-Real-IP`), not the proxy: an authentication failure and
/// a handshake refused with 429.
#[test]
fn log_lines_name_the_client_behind_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let (proc, listen, _admin) = Process::start(
        dir.path(),
        &db,
        &[
            "--trusted-proxies",
            "127.0.0.1",
            "--handshakes-per-ip",
            "1",
            "--handshake-ip-burst",
            "2",
        ],
    );
    let client = [("X-Real-IP", "203.0.113.77")];
    let forged = chat_path(1, "forged.token.value");
    for _ in 0..2 {
        let head = upgrade_head(listen, &forged, &client);
        assert_eq!(status_of(&head), 101, "{head}");
    }
    let head = upgrade_head(listen, &forged, &client);
    assert_eq!(status_of(&head), 429, "{head}");

    // The log is written as it happens: no need to stop the process.
    eventually(Duration::from_secs(5), "the 429 is logged", || {
        proc.stderr().contains("handshake rejected")
    });
    let log = proc.stderr();
    let lines = |what: &str| -> Vec<&str> { log.lines().filter(|l| l.contains(what)).collect() };
    let auth = lines("authentication failed");
    assert_eq!(auth.len(), 2, "{log}");
    for l in auth {
        assert!(
            l.contains("peer=203.0.113.77:"),
            "names the proxy, not the client: {l}"
        );
    }
    let refused = lines("handshake rejected");
    assert_eq!(refused.len(), 1, "{log}");
    assert!(
        refused[0].contains("status=429") && refused[0].contains("peer=203.0.113.77:"),
        "the 429 line must name the client behind the proxy: {}",
        refused[0]
    );
    assert!(
        !log.contains("forged.token.value"),
        "a token in the log:\n{log}"
    );
}
