//! A `redis-server` of the test's own on a free port (its cluster bus port,
//! port + 10,000, free too), killed with SIGKILL when dropped — also when
//! the test panics — and restartable on the same port; and `redis-cli`
//! against it. For the tests that kill Redis or build a cluster; they never
//! touch the shared Redis on 6379.
//!
//! `redis-server` missing: the test fails in CI (`CI` set) and skips
//! elsewhere (the caller gets `None`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` process of the test's.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

/// Whether `redis-server` and `redis-cli` are installed; in CI a missing
/// one fails the test.
pub fn redis_tools(test: &str) -> bool {
    let found = ["redis-server", "redis-cli"]
        .iter()
        .all(|t| find(t).is_some());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: redis-server and redis-cli are required in CI (apt-get install redis-server)"
        );
        eprintln!("skipping {test}: redis-server or redis-cli not found");
    }
    found
}

fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A port whose cluster bus port (+10,000) is free too.
pub fn free_port_pair() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
        if port > 55_000 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// Starts a server without persistence, with `extra` arguments.
    pub fn start(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port_pair(),
            child: None,
            dir: tempfile::tempdir().expect("a directory for redis-server"),
            args: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(
                Instant::now() < end,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no goodbye to any client); the port stays this server's.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis-cli -p <port> args…`, its standard output (trimmed).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A field of `INFO <section>` (`role`, `master_link_status`, …), or
    /// of `CLUSTER INFO` for the section `cluster-info`.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let info = match section {
            "cluster-info" => self.cli(&["CLUSTER", "INFO"]),
            _ => self.cli(&["INFO", section]),
        };
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
