//! A real nginx for the tests, running one of the site configs of
//! `deploy/nginx/` as shipped except for what a test must change: its
//! upstream addresses (each rewrite must match exactly once, so a changed
//! deploy file fails loudly), the listen address (a free port on
//! 127.0.0.1) and the log paths (a temporary directory). The file must
//! pass `nginx -t`. Runs in the foreground (`daemon off; master_process
//! off`), killed on drop.
//!
//! Used with `mod nginx_support;` by tests/nginx.rs and
//! tests/channel_layer.rs. Without the `nginx` binary, `start`
//! returns `None` after printing why, except in CI (`CI` set), where it
//! panics.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx running `deploy/nginx/<file>` from a temporary prefix.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// Replaces `from` (which must occur exactly once) with `to`.
fn rewrite(conf: &mut String, file: &str, from: &str, to: &str) {
    assert_eq!(
        conf.matches(from).count(),
        1,
        "deploy/nginx/{file} no longer has exactly one {from:?}: update this test"
    );
    *conf = conf.replacen(from, to, 1);
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl Nginx {
    /// Starts nginx with `deploy/nginx/<file>`, each `(from, to)` of
    /// `rewrites` applied, `listen 80;` moved to a free port and every
    /// `/var/log/nginx/<name>` moved to the temporary directory.
    pub fn start(file: &str, rewrites: &[(&str, String)]) -> Option<Self> {
        let Some(nginx) = find_nginx() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nginx is required in CI (apt-get install nginx)"
            );
            eprintln!("skipped: nginx not found (apt-get install nginx)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let site_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/nginx")
            .join(file);
        let mut site = std::fs::read_to_string(site_path).expect("read the deploy nginx config");
        for (from, to) in rewrites {
            rewrite(&mut site, file, from, to);
        }
        rewrite(&mut site, file, "listen 80;", &format!("listen {addr};"));
        rewrite(&mut site, file, "listen [::]:80;", "");
        site = site.replace("/var/log/nginx/", &format!("{d}/"));
        assert!(!site.contains("/var/"), "a system path is left:\n{site}");
        std::fs::write(dir.path().join("site.conf"), &site).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let main = format!(
            "daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/tmp/body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   include {d}/site.conf;\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let args = |cmd: &mut Command| {
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-e")
                .arg(dir.path().join("error.log"));
        };
        // `nginx -t` accepts the deploy config as the operations guide says.
        let mut check = Command::new(&nginx);
        args(&mut check);
        let out = check.arg("-t").output().expect("run nginx -t");
        assert!(
            out.status.success(),
            "nginx -t rejects {file}:\n{}\n--- site ---\n{site}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(&nginx);
        args(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", n.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {addr}:\n{}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(n)
    }

    /// A file of nginx's temporary directory (logs).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.file("error.log")).unwrap_or_default()
    }

    /// A log file the site config writes (`/var/log/nginx/<name>` in it).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
