//! Harness of the Django interop tests: the small Django Channels project
//! of `tests/django_app/` run for real — Daphne serving its `ChatConsumer`
//! on Postgres and Redis, and its `manage.py` commands (`group_send`,
//! `layer_flush`, `layer_info`) — in one of two pinned Python stacks.
//!
//! Where a stack is: `CHATGATE_DJANGO_VENV_4_1` / `CHATGATE_DJANGO_VENV_4_3`
//! (a virtualenv directory, used as it is), else `<repo>/.venv-django/4.1`
//! and `4.3`, made by `.ci/django-venvs` (which `.ci/run` calls); those
//! must hold a copy of their `tests/django_app/requirements-*.txt` equal to
//! the current one. A missing or stale venv, or an unreachable Redis, fails
//! the test when the environment variable `CI` is set, and otherwise prints
//! why it skips.
//!
//! Used beside `pg_support` (`mod pg_support; mod django_support;`): the
//! database is a `TestDb` on `Schema::Django`, the sockets `WsClient`s.
//!
//! Must never: leave a Daphne running (its process group is killed on
//! drop), or flush a channel-layer prefix it did not make.
#![allow(dead_code)]

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;

use crate::pg_support::{self, WsClient, READ_TIMEOUT};

/// How long Daphne may take to listen and accept a WebSocket upgrade.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a `manage.py` command may run.
const MANAGE_LIMIT: Duration = Duration::from_secs(60);
/// Grace between SIGTERM and SIGKILL when Daphne is stopped.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The Django project's directory.
pub fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django_app")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips `test` (printing `why`) outside CI; panics in CI.
fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: {why} (CI is set)");
    }
    eprintln!("SKIPPED {test}: {why}; set CI=true to make this a failure");
}

/// A pinned Python stack (`tests/django_app/requirements-<v>.txt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// Django 4.2, channels 4.0, channels_redis 4.1 (no `serializer_format`,
    /// no `random_prefix_length`, no pub/sub encryption).
    V4_1,
    /// Django 5.2, channels 4.3, channels_redis 4.3.
    V4_3,
}

impl Stack {
    pub const ALL: [Stack; 2] = [Stack::V4_1, Stack::V4_3];

    /// `4.1` / `4.3`: the venv directory's and requirements file's name.
    pub fn version(self) -> &'static str {
        match self {
            Stack::V4_1 => "4.1",
            Stack::V4_3 => "4.3",
        }
    }

    /// The variable that names a venv of this stack explicitly.
    pub fn env_var(self) -> &'static str {
        match self {
            Stack::V4_1 => "CHATGATE_DJANGO_VENV_4_1",
            Stack::V4_3 => "CHATGATE_DJANGO_VENV_4_3",
        }
    }

    /// Whether channels_redis of this stack has `serializer_format`,
    /// `random_prefix_length` and encryption on the pub/sub layer (4.2+).
    pub fn has_serializers(self) -> bool {
        self == Stack::V4_3
    }

    fn requirements(self) -> PathBuf {
        app_dir().join(format!("requirements-{}.txt", self.version()))
    }
}

/// A virtualenv with a stack installed.
#[derive(Clone, Debug)]
pub struct Venv {
    pub stack: Stack,
    pub dir: PathBuf,
}

impl Venv {
    /// The venv of `stack`; `None` (after printing why `test` skips) when it
    /// is missing or stale outside CI; a panic in CI.
    pub fn find(stack: Stack, test: &str) -> Option<Venv> {
        let (dir, explicit) = match std::env::var_os(stack.env_var()) {
            Some(dir) if !dir.is_empty() => (PathBuf::from(dir), true),
            _ => (
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(".venv-django")
                    .join(stack.version()),
                false,
            ),
        };
        let venv = Venv { stack, dir };
        if !venv.python().is_file() {
            skip(
                test,
                &format!(
                    "no Django venv {} at {} (make it with .ci/django-venvs, or set {})",
                    stack.version(),
                    venv.dir.display(),
                    stack.env_var()
                ),
            );
            return None;
        }
        if !explicit {
            let wanted = std::fs::read(stack.requirements()).expect("the requirements file");
            let installed = std::fs::read(venv.dir.join("requirements.installed")).ok();
            if installed.as_deref() != Some(&wanted[..]) {
                skip(
                    test,
                    &format!(
                        "the Django venv at {} does not have the pins of {} (run .ci/django-venvs)",
                        venv.dir.display(),
                        stack.requirements().display()
                    ),
                );
                return None;
            }
        }
        Some(venv)
    }

    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }
}

/// The Redis the tests use (`REDIS_URL`, as in redis_support).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_string())
}

/// Whether the Redis at [`redis_url`] accepts TCP connections; `false`
/// (after printing why `test` skips) outside CI, a panic in CI.
pub fn redis_reachable(test: &str) -> bool {
    let url = redis_url();
    let authority = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("");
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:6379")
    };
    use std::net::ToSocketAddrs;
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !reachable {
        skip(test, &format!("Redis unreachable at {url}"));
    }
    reachable
}

/// `CHANNEL_LAYERS["default"]["BACKEND"]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `channels_redis.core.RedisChannelLayer`.
    Core,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer`.
    PubSub,
}

/// `serializer_format` (channels_redis 4.2+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Msgpack,
    Json,
}

/// What the Django side is configured with; turned into the environment
/// variables of `tests/django_app/chatproj/settings.py` by [`Self::env`].
/// Unset options are not passed: channels_redis's defaults apply.
#[derive(Clone, Debug)]
pub struct DjangoSettings {
    pub venv: Venv,
    /// Database on the pg_support server (`CHATAPP_DB_NAME`).
    pub db_name: String,
    /// SIMPLE_JWT SIGNING_KEY and SECRET_KEY (`CHATAPP_JWT_SECRET`).
    pub secret: String,
    pub kind: LayerKind,
    /// Redis URLs in Django's `hosts` order.
    pub hosts: Vec<String>,
    /// Unique per settings object unless set: [`flush_layer`] deletes
    /// every key under it.
    pub prefix: String,
    pub keys: Vec<String>,
    pub format: Option<Format>,
    /// Seconds.
    pub expiry: Option<u64>,
    /// Seconds.
    pub group_expiry: Option<u64>,
    pub capacity: Option<u64>,
    pub random_prefix_length: Option<u64>,
}

impl DjangoSettings {
    /// The core layer on [`redis_url`] under a fresh prefix, the database
    /// `db_name`, and pg_support's JWT secret (so `PgGateway::token`s work).
    pub fn new(venv: &Venv, db_name: &str) -> DjangoSettings {
        DjangoSettings {
            venv: venv.clone(),
            db_name: db_name.to_string(),
            secret: pg_support::SECRET.to_string(),
            kind: LayerKind::Core,
            hosts: vec![redis_url()],
            prefix: unique_prefix(),
            keys: Vec::new(),
            format: None,
            expiry: None,
            group_expiry: None,
            capacity: None,
            random_prefix_length: None,
        }
    }

    pub fn kind(mut self, kind: LayerKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn hosts(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    pub fn keys(mut self, keys: &[&str]) -> Self {
        self.keys = keys.iter().map(|k| k.to_string()).collect();
        self
    }

    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    pub fn expiry(mut self, seconds: u64) -> Self {
        self.expiry = Some(seconds);
        self
    }

    pub fn group_expiry(mut self, seconds: u64) -> Self {
        self.group_expiry = Some(seconds);
        self
    }

    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    pub fn random_prefix_length(mut self, length: u64) -> Self {
        self.random_prefix_length = Some(length);
        self
    }

    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_string();
        self
    }

    /// The environment of Daphne and `manage.py`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let pg: tokio_postgres::Config = pg_support::server_url().parse().expect("server URL");
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let password = pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let mut env = vec![
            ("DJANGO_SETTINGS_MODULE", "chatproj.settings".to_string()),
            ("PYTHONUNBUFFERED", "1".to_string()),
            ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
            ("CHATAPP_DB_NAME", self.db_name.clone()),
            ("CHATAPP_DB_HOST", host),
            ("CHATAPP_DB_PORT", port.to_string()),
            (
                "CHATAPP_DB_USER",
                pg.get_user().unwrap_or("postgres").to_string(),
            ),
            ("CHATAPP_DB_PASSWORD", password),
            ("CHATAPP_JWT_SECRET", self.secret.clone()),
            (
                "CHATAPP_LAYER_KIND",
                match self.kind {
                    LayerKind::Core => "core",
                    LayerKind::PubSub => "pubsub",
                }
                .to_string(),
            ),
            ("CHATAPP_LAYER_HOSTS", self.hosts.join(",")),
            ("CHATAPP_LAYER_PREFIX", self.prefix.clone()),
        ];
        if !self.keys.is_empty() {
            env.push(("CHATAPP_LAYER_KEYS", self.keys.join(",")));
        }
        if let Some(format) = self.format {
            let format = match format {
                Format::Msgpack => "msgpack",
                Format::Json => "json",
            };
            env.push(("CHATAPP_LAYER_FORMAT", format.to_string()));
        }
        let numbers = [
            ("CHATAPP_LAYER_EXPIRY", self.expiry),
            ("CHATAPP_LAYER_GROUP_EXPIRY", self.group_expiry),
            ("CHATAPP_LAYER_CAPACITY", self.capacity),
            (
                "CHATAPP_LAYER_RANDOM_PREFIX_LENGTH",
                self.random_prefix_length,
            ),
        ];
        for (name, value) in numbers {
            if let Some(value) = value {
                env.push((name, value.to_string()));
            }
        }
        env
    }

    /// An access token for `user` as chatgate mints it (the `token`
    /// subcommand, `PgGateway::token`), signed with this secret.
    pub fn token(&self, user: i64) -> String {
        let jwt = chatgate::JwtConfig::new(self.secret.as_bytes());
        chatgate::auth::mint_token(&jwt, user, Duration::from_secs(3600))
    }

    /// A command running `args` with this venv's Python in the project
    /// directory, with this environment and nothing inherited that could
    /// redirect it (`PYTHONPATH`, `PYTHONHOME`, `DJANGO_*`).
    fn python(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.venv.python());
        cmd.args(args)
            .current_dir(app_dir())
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CHATAPP_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(self.env());
        cmd
    }
}

/// A channel-layer prefix no other test or process uses, and that is no
/// other's prefix (it ends with `_`): `djt<pid>x<n>_`.
fn unique_prefix() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    format!(
        "djt{}x{}_",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `manage.py <args>`, waiting at most a minute.
pub fn manage(settings: &DjangoSettings, args: &[&str]) -> Output {
    let mut all = vec!["manage.py"];
    all.extend_from_slice(args);
    let mut child = settings
        .python(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", settings.venv.python().display()));
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + MANAGE_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for manage.py") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("manage.py {args:?} ran longer than {MANAGE_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `manage.py <args>`; panics with its stderr unless it succeeds.
pub fn manage_ok(settings: &DjangoSettings, args: &[&str]) -> String {
    let output = manage(settings, args);
    assert!(
        output.status.success(),
        "manage.py {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `async_to_sync(get_channel_layer().group_send)(group, message)` from a
/// separate Django process, as a view or a Celery task does it.
pub fn group_send(settings: &DjangoSettings, group: &str, message: Value) {
    group_send_all(settings, group, &[message]);
}

/// Several group_sends from one process, in order (one Django start-up).
pub fn group_send_all(settings: &DjangoSettings, group: &str, messages: &[Value]) {
    let texts: Vec<String> = messages.iter().map(Value::to_string).collect();
    let mut args = vec!["group_send", group];
    args.extend(texts.iter().map(String::as_str));
    manage_ok(settings, &args);
}

/// The layer's `flush()`: the core layer deletes every key under the prefix.
pub fn flush_layer(settings: &DjangoSettings) {
    manage_ok(settings, &["layer_flush"]);
}

/// Flushes the layer (core kind: deletes every key under the prefix) when
/// dropped, also when the test fails: a Daphne killed mid-test leaves its
/// group members behind for `group_expiry`. Hold it for as long as anything
/// uses the prefix.
pub struct FlushOnDrop(pub DjangoSettings);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        if self.0.kind != LayerKind::Core {
            return;
        }
        let output = manage(&self.0, &["layer_flush"]);
        if !output.status.success() {
            eprintln!(
                "layer_flush of prefix {} failed: {}",
                self.0.prefix,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// The effective layer (`manage.py layer_info`): backend, installed
/// versions, the config Django passes (key count instead of keys), and
/// whether messages are encrypted.
pub fn layer_info(settings: &DjangoSettings) -> Value {
    let text = manage_ok(settings, &["layer_info"]);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("layer_info {text:?}: {e}"))
}

/// A Daphne serving the project on `127.0.0.1:<free port>`; its process
/// group is stopped when this is dropped (and its log printed when the
/// test is failing).
pub struct Daphne {
    child: Option<Child>,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
    pub settings: DjangoSettings,
}

impl Daphne {
    /// Starts Daphne on port 0 and waits until it answers a WebSocket
    /// upgrade (an unauthenticated one: it is accepted and closed with 4001).
    pub fn start(settings: &DjangoSettings) -> Daphne {
        let log = tempfile::Builder::new()
            .prefix("daphne-")
            .suffix(".log")
            .tempfile()
            .expect("a log file");
        let out = log.reopen().expect("log for stdout");
        let err = log.reopen().expect("log for stderr");
        let child = settings
            .python(&[
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                "0",
                "chatproj.asgi:application",
            ])
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start Daphne: {e}"));
        let mut daphne = Daphne {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            settings: settings.clone(),
        };
        let deadline = Instant::now() + START_LIMIT;
        daphne.addr = daphne.wait_for_port(deadline);
        daphne.wait_for_upgrade(deadline);
        daphne
    }

    /// The port Daphne logs: "Listening on TCP address 127.0.0.1:<port>".
    fn wait_for_port(&mut self, deadline: Instant) -> SocketAddr {
        const MARK: &str = "Listening on TCP address ";
        loop {
            let log = self.log();
            if let Some(at) = log.find(MARK) {
                let rest = &log[at + MARK.len()..];
                let addr = rest.lines().next().unwrap_or("").trim();
                return addr
                    .parse()
                    .unwrap_or_else(|e| self.fail(&format!("bad address {addr:?}: {e}")));
            }
            self.check_alive();
            if Instant::now() >= deadline {
                self.fail("Daphne did not listen in time");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn wait_for_upgrade(&mut self, deadline: Instant) {
        loop {
            match self.try_open("/ws/chat/1/") {
                Ok(_) => return,
                Err(e) => {
                    self.check_alive();
                    if Instant::now() >= deadline {
                        self.fail(&format!("Daphne accepts no WebSocket upgrade: {e}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_alive(&mut self) {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            self.child = None;
            self.fail(&format!("Daphne exited ({status})"));
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!("{why}; Daphne's log:\n{}", self.log());
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything Daphne wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A WebSocket upgrade of `path` (with its query); `Err` when refused.
    pub fn try_open(&self, path: &str) -> Result<WsClient, tungstenite::Error> {
        let request = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .expect("request");
        let tcp = TcpStream::connect(self.addr).map_err(tungstenite::Error::Io)?;
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        tungstenite::client::client(request, tcp)
            .map(|(ws, _)| WsClient { ws })
            .map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => {
                    tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
                }
            })
    }

    /// Opens `/ws/chat/<conversation>/?token=<token>`; the upgrade must succeed.
    pub fn open(&self, conversation: i64, token: &str) -> WsClient {
        let path = format!("/ws/chat/{conversation}/?token={token}");
        self.try_open(&path)
            .unwrap_or_else(|e| self.fail(&format!("upgrade of {path} failed: {e}")))
    }

    /// Opens as `user` (a token of [`DjangoSettings::token`]) and expects
    /// `connection_established`.
    pub fn connect(&self, conversation: i64, user: i64) -> WsClient {
        let mut client = self.open(conversation, &self.settings.token(user));
        assert_eq!(
            client.recv_json(),
            json!({"type": "connection_established", "message": "Connected to chat"}),
            "user {user} on conversation {conversation}"
        );
        client
    }

    /// SIGTERM to the process group, SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = -(child.id() as i32);
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created (process_group(0) made the child its leader).
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Daphne {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- Daphne's log ({}) ----\n{}", self.addr, self.log());
        }
    }
}
