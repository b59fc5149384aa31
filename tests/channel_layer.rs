//! chatgate beside a real Django Channels app (docs/protocol.md §11): the
//! project of `tests/django_app/` under Daphne and chatgate nodes on one
//! Postgres database (Django's DDL) and one channel layer, with tokens
//! chatgate mints. Each scenario on the core layer and, where it applies,
//! the pub/sub layer, on the pinned stacks (channels_redis 4.1 and 4.3).
//!
//! The canary of `deploy/nginx/canary.conf` runs here too, with real nginx
//! in front of Daphne and chatgate.
//!
//! Needs Redis, Postgres, nginx and the venvs `.ci/django-venvs` makes:
//! without them the tests skip, except in CI (`CI` set), where they fail.

mod django_support;
mod nginx_support;
mod pg_support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatgate::bridge::BridgeConfig;
use chatgate::channel_layer::{ChannelLayerConfig, LayerKind as GwKind, SerializerFormat};
use django_support::{
    group_send_all, manage_ok, redis_reachable, Daphne, DjangoSettings, FlushOnDrop, Format,
    LayerKind, Stack, Venv,
};
use pg_support::{gateway_config, PgGateway, Read, Schema, TestDb, WsClient};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;

/// How long "nothing more arrives" is watched.
const QUIET: Duration = Duration::from_millis(400);
/// How long membership, subscriptions and restarts may take to settle.
const SETTLE: Duration = Duration::from_secs(15);

/// The users, their conversation and the Django side of one scenario.
struct Scene {
    db: TestDb,
    settings: DjangoSettings,
    alice: i64,
    bob: i64,
    carol: i64,
    conv: i64,
    _flush: FlushOnDrop,
}

/// A scene on `stack`, the Django settings adjusted by `configure`; `None`
/// when a prerequisite is missing outside CI.
fn scene(
    test: &str,
    stack: Stack,
    configure: impl FnOnce(DjangoSettings) -> DjangoSettings,
) -> Option<Scene> {
    let venv = Venv::find(stack, test)?;
    if !redis_reachable(test) {
        return None;
    }
    let db = TestDb::create(test, Schema::Django)?;
    let (alice, bob, carol) = (db.user("alice"), db.user("bob"), db.user("carol"));
    let conv = db
        .admin()
        .create_conversation(&[alice, bob, carol])
        .expect("create the conversation");
    let settings = configure(DjangoSettings::new(&venv, &db.name));
    Some(Scene {
        _flush: FlushOnDrop(settings.clone()),
        db,
        settings,
        alice,
        bob,
        carol,
        conv,
    })
}

/// The layer settings mirroring Django's, fast to react for tests.
fn layer_config(settings: &DjangoSettings, node: &str) -> ChannelLayerConfig {
    let mut c = ChannelLayerConfig::new(settings.hosts.clone(), node);
    c.kind = match settings.kind {
        LayerKind::Core => GwKind::Core,
        LayerKind::PubSub => GwKind::PubSub,
    };
    c.prefix = settings.prefix.clone();
    c.encryption_keys = settings.keys.clone();
    if let Some(Format::Json) = settings.format {
        c.format = SerializerFormat::Json;
    }
    if let Some(s) = settings.expiry {
        c.expiry = Duration::from_secs(s);
    }
    if let Some(n) = settings.capacity {
        c.capacity = n as usize;
    }
    c.refresh = Duration::from_secs(1);
    c.leave_linger = Duration::from_millis(300);
    c.timeout = Duration::from_millis(500);
    c
}

/// A chatgate node on the scene's database, in the layer as `node`, with
/// the bridge to the other nodes of `bridge_prefix`.
fn node(scene: &Scene, node: &str, bridge_prefix: &str, layer: ChannelLayerConfig) -> PgGateway {
    let mut config = gateway_config(&scene.db.url);
    let mut bridge = BridgeConfig::new(django_support::redis_url());
    bridge.node_id = node.to_string();
    bridge.prefix = bridge_prefix.to_string();
    bridge.heartbeat = Duration::from_millis(200);
    config.bridge = Some(bridge);
    config.channel_layer = Some(layer);
    PgGateway::start(config)
}

/// Node `a` of a one-node scene: in the layer as `node-a`, with Django's
/// settings mirrored.
fn node_a(scene: &Scene, test: &str) -> PgGateway {
    node(
        scene,
        "a",
        &bridge_prefix(test),
        layer_config(&scene.settings, "node-a"),
    )
}

fn bridge_prefix(test: &str) -> String {
    format!(
        "cgl-{test}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to Redis")
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway members of the conversation's group (core layer).
fn gateway_members(scene: &Scene, host: &str) -> Vec<String> {
    let key = format!("{}:group:chat_{}", scene.settings.prefix, scene.conv);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query(&mut redis(host))
        .expect("ZRANGE");
    members
        .into_iter()
        .filter(|m| m.starts_with("chatgate."))
        .collect()
}

/// Waits until `nodes` gateway nodes (and, on pub/sub, `subscribers`
/// subscribers in all) are in the conversation's group.
fn wait_joined(scene: &Scene, nodes: usize, subscribers: i64) {
    match scene.settings.kind {
        LayerKind::Core => {
            let host = &scene.settings.hosts[0];
            wait_until(SETTLE, "the gateway members", || {
                gateway_members(scene, host).len() == nodes
            })
        }
        LayerKind::PubSub => {
            let channel = format!("{}__group__chat_{}", scene.settings.prefix, scene.conv);
            wait_until(SETTLE, "the pub/sub subscribers", || {
                let reply: Vec<(String, i64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query(&mut redis(&scene.settings.hosts[0]))
                    .expect("PUBSUB NUMSUB");
                reply.first().map(|(_, n)| *n).unwrap_or(0) >= subscribers
            })
        }
    }
}

/// Opens a protocol v2 socket (`chatgate.v2`) as `user`.
fn open_v2(gw: &PgGateway, conv: i64, user: i64) -> WsClient {
    let url = format!(
        "ws://{}/ws/chat/{conv}/?token={}",
        gw.addr(),
        gw.token(user)
    );
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "chatgate.v2".parse().unwrap());
    let tcp = std::net::TcpStream::connect(gw.addr()).expect("tcp connect");
    tcp.set_nodelay(true).unwrap();
    let (ws, _) = tungstenite::client::client(request, tcp).expect("v2 upgrade");
    let mut client = WsClient { ws };
    assert_eq!(client.recv_json()["type"], "connection_established");
    client
}

/// The next frame within `limit`, v2 presence and read state skipped; a
/// close becomes `{"closed": code}`; `None` when nothing came.
fn next_frame(client: &mut WsClient, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.read(left.max(Duration::from_millis(1))) {
            Read::Json(v) => {
                let t = v["type"].as_str().unwrap_or("");
                if !matches!(t, "presence" | "presence_state" | "read_state") {
                    return Some(v);
                }
            }
            Read::TimedOut => return None,
            Read::Closed(code) => return Some(json!({"closed": code})),
        }
    }
}

/// Everything that arrives until `QUIET` passes without a frame (until a
/// close at most).
fn drain(client: &mut WsClient) -> Vec<Value> {
    let mut got = Vec::new();
    while let Some(v) = next_frame(client, QUIET) {
        let closed = v.get("closed").is_some();
        got.push(v);
        if closed {
            break;
        }
    }
    got
}

/// The next `n` frames, waiting up to `SETTLE` for them, then whatever else
/// arrives within `QUIET` (so an extra frame — a duplicate — shows in the
/// result).
fn collect(client: &mut WsClient, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + SETTLE;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_frame(client, left) {
            Some(v) if v.get("closed").is_some() => {
                got.push(v);
                return got;
            }
            Some(v) => got.push(v),
            None => return got,
        }
    }
    got.extend(drain(client));
    got
}

/// The ids of the `new_message`s in `frames`, in order.
fn message_ids(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "new_message")
        .map(|f| f["message"]["id"].as_i64().expect("an id"))
        .collect()
}

// ---------------------------------------------------------------------------
// A conversation served by Daphne and two chatgate nodes at once
// ---------------------------------------------------------------------------

/// Chat and typing both ways between a Daphne socket and sockets on two
/// chatgate nodes: every message once on every socket with one id (the
/// stored row's), typing to everyone but the typist.
fn shared_conversation(test: &str, stack: Stack, kind: LayerKind) {
    let Some(scene) = scene(test, stack, |s| s.kind(kind)) else {
        return;
    };
    let daphne = Daphne::start(&scene.settings);
    let prefix = bridge_prefix(test);
    let a = node(
        &scene,
        "a",
        &prefix,
        layer_config(&scene.settings, "node-a"),
    );
    let b = node(
        &scene,
        "b",
        &prefix,
        layer_config(&scene.settings, "node-b"),
    );
    let mut alice = daphne.connect(scene.conv, scene.alice);
    let mut bob = a.connect(scene.conv, scene.bob);
    let mut carol = b.connect(scene.conv, scene.carol);
    wait_joined(&scene, 2, 3);

    for (who, text) in [(0, "from daphne"), (1, "from node a"), (2, "from node b")] {
        let sender = [&mut alice, &mut bob, &mut carol]
            .into_iter()
            .nth(who)
            .unwrap();
        sender.send_json(json!({"type": "chat_message", "content": text}));
        std::thread::sleep(Duration::from_millis(100));
    }
    let stored: Vec<i64> = {
        wait_until(SETTLE, "three rows", || scene.db.contents().len() == 3);
        let mut ids = Vec::new();
        for text in ["from daphne", "from node a", "from node b"] {
            ids.push(scene.db.scalar(
                "SELECT id FROM chatapp_message WHERE content = $1",
                &[&text],
            ));
        }
        ids.sort_unstable();
        ids
    };
    for (name, client) in [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        let frames = collect(client, 3);
        let mut ids = message_ids(&frames);
        ids.sort_unstable();
        assert_eq!(ids, stored, "{name} ({kind:?}) got {frames:?}");
    }

    for (typist, user) in [(0usize, scene.alice), (1, scene.bob), (2, scene.carol)] {
        let mut clients = [&mut alice, &mut bob, &mut carol];
        clients[typist].send_json(json!({"type": "typing", "is_typing": true}));
        for (i, client) in clients.iter_mut().enumerate() {
            let frames = if i == typist {
                drain(client)
            } else {
                collect(client, 1)
            };
            let typing: Vec<Value> = frames
                .into_iter()
                .filter(|f| f["type"] == "typing")
                .collect();
            if i == typist {
                assert!(typing.is_empty(), "the typist {i} got {typing:?}");
            } else {
                assert_eq!(
                    typing.len(),
                    1,
                    "socket {i} for typist {typist}: {typing:?}"
                );
                assert_eq!(typing[0]["user_id"], user);
                assert_eq!(typing[0]["is_typing"], true);
            }
        }
    }
}

#[test]
fn daphne_and_two_nodes_share_a_conversation_core_4_1() {
    shared_conversation("cl_shared_core41", Stack::V4_1, LayerKind::Core);
}

#[test]
fn daphne_and_two_nodes_share_a_conversation_core_4_3() {
    shared_conversation("cl_shared_core43", Stack::V4_3, LayerKind::Core);
}

#[test]
fn daphne_and_two_nodes_share_a_conversation_pubsub_4_1() {
    shared_conversation("cl_shared_pubsub41", Stack::V4_1, LayerKind::PubSub);
}

#[test]
fn daphne_and_two_nodes_share_a_conversation_pubsub_4_3() {
    shared_conversation("cl_shared_pubsub43", Stack::V4_3, LayerKind::PubSub);
}

// ---------------------------------------------------------------------------
// Django code's group_send
// ---------------------------------------------------------------------------

/// The four event types of §11.1 from `manage.py group_send`, to a v1 and
/// a v2 socket on chatgate: each arrives once where it should.
fn django_group_send(test: &str, stack: Stack, kind: LayerKind) {
    let Some(scene) = scene(test, stack, |s| s.kind(kind)) else {
        return;
    };
    let a = node_a(&scene, test);
    let mut bob = a.connect(scene.conv, scene.bob);
    let mut carol = open_v2(&a, scene.conv, scene.carol);
    wait_joined(&scene, 1, 1);
    let message = json!({
        "id": 777, "sender": {"id": scene.alice, "username": "alice", "first_name": "", "last_name": ""},
        "content": "from a Celery task", "timestamp": "2026-12-07T12:00:00.000000Z"
    });
    let group = format!("chat_{}", scene.conv);
    group_send_all(
        &scene.settings,
        &group,
        &[
            json!({"type": "chat_message_broadcast", "message": message}),
            json!({"type": "typing_indicator", "user_id": scene.alice, "username": "alice", "is_typing": true}),
            json!({"type": "typing_indicator", "user_id": scene.bob, "username": "bob", "is_typing": true}),
            json!({"type": "chatgate.send", "event": {"type": "announcement", "text": "v2 only"}, "v2_only": true}),
            json!({"type": "chatgate_send", "event": {"type": "announcement", "text": "all"}}),
            json!({"type": "chatgate.disconnect", "user_id": scene.carol, "code": 4001}),
        ],
    );
    let new_message = json!({"type": "new_message", "message": message});
    let typing = |user: i64, name: &str| json!({"type": "typing", "user_id": user, "username": name, "is_typing": true});
    assert_eq!(
        collect(&mut bob, 3),
        [
            new_message.clone(),
            typing(scene.alice, "alice"),
            json!({"type": "announcement", "text": "all"}),
        ],
        "the v1 socket ({kind:?})"
    );
    assert_eq!(
        collect(&mut carol, 6),
        [
            new_message,
            typing(scene.alice, "alice"),
            typing(scene.bob, "bob"),
            json!({"type": "announcement", "text": "v2 only"}),
            json!({"type": "announcement", "text": "all"}),
            json!({"closed": 4001}),
        ],
        "the v2 socket ({kind:?})"
    );
    let state = a.gateway.as_ref().unwrap().channel_layer_state().unwrap();
    assert_eq!(state.dropped_total, 0, "{state:?}");
}

#[test]
fn django_group_send_reaches_the_right_sockets_core() {
    django_group_send("cl_group_send_core", Stack::V4_3, LayerKind::Core);
}

#[test]
fn django_group_send_reaches_the_right_sockets_pubsub() {
    django_group_send("cl_group_send_pubsub", Stack::V4_3, LayerKind::PubSub);
}

// ---------------------------------------------------------------------------
// Several hosts, encryption with a rotated key, the JSON serializer
// ---------------------------------------------------------------------------

/// A redis-server of the test's own on a free port, killed on drop.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = free_port();
        Self::on(port)
    }

    fn on(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        let r = OwnRedis { child, port };
        wait_until(Duration::from_secs(10), "redis-server to listen", || {
            redis::Client::open(r.url().as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .is_ok()
        });
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two Redis hosts in Django's order, Django encrypting with the newest
/// key and chatgate still listing the old one first: each side decrypts
/// the other's values, the consistent hash puts every key where Django
/// looks for it.
fn two_hosts_rotated_keys(test: &str, stack: Stack, format: Option<Format>) {
    let second = OwnRedis::start();
    let hosts = [django_support::redis_url(), second.url()];
    let Some(scene) = scene(test, stack, |s| {
        let s = s
            .hosts(&[hosts[0].as_str(), hosts[1].as_str()])
            .keys(&["key-new", "key-old"]);
        match format {
            Some(f) => s.format(f),
            None => s,
        }
    }) else {
        return;
    };
    let daphne = Daphne::start(&scene.settings);
    let mut layer = layer_config(&scene.settings, "node-a");
    layer.encryption_keys = vec!["key-old".into(), "key-new".into()];
    let a = node(&scene, "a", &bridge_prefix(test), layer);
    let mut alice = daphne.connect(scene.conv, scene.alice);
    let mut bob = a.connect(scene.conv, scene.bob);
    let group = format!("chat_{}", scene.conv);
    let group_host = hosts
        .iter()
        .find(|h| {
            let key = format!("{}:group:{group}", scene.settings.prefix);
            redis::cmd("EXISTS")
                .arg(&key)
                .query::<i64>(&mut redis(h))
                .unwrap_or(0)
                == 1
        })
        .cloned();
    assert!(group_host.is_some(), "the group exists on one of the hosts");
    wait_until(SETTLE, "node a's membership", || {
        gateway_members(&scene, group_host.as_ref().unwrap()).len() == 1
    });

    alice.send_json(json!({"type": "chat_message", "content": "encrypted by django"}));
    bob.send_json(json!({"type": "chat_message", "content": "encrypted by chatgate"}));
    for (name, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let frames = collect(client, 2);
        let contents: Vec<&str> = frames
            .iter()
            .filter(|f| f["type"] == "new_message")
            .map(|f| f["message"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(contents.len(), 2, "{name}: {frames:?}");
        assert!(
            contents.contains(&"encrypted by django"),
            "{name}: {frames:?}"
        );
        assert!(
            contents.contains(&"encrypted by chatgate"),
            "{name}: {frames:?}"
        );
    }
    let state = a.gateway.as_ref().unwrap().channel_layer_state().unwrap();
    assert_eq!(state.dropped_total, 0, "{state:?}");
    assert!(state.sent_total >= 1, "{state:?}");
    drop(second);
}

#[test]
fn two_hosts_and_a_rotated_key_4_3() {
    two_hosts_rotated_keys("cl_hosts_keys43", Stack::V4_3, None);
}

#[test]
fn two_hosts_and_a_rotated_key_json_4_3() {
    two_hosts_rotated_keys("cl_hosts_keys_json43", Stack::V4_3, Some(Format::Json));
}

#[test]
fn two_hosts_and_a_rotated_key_4_1() {
    two_hosts_rotated_keys("cl_hosts_keys41", Stack::V4_1, None);
}

// ---------------------------------------------------------------------------
// Bad values
// ---------------------------------------------------------------------------

/// Garbage pushed straight into the node's channel key, an unknown type, a
/// value under a key chatgate does not have, and a stale token: each
/// dropped and counted; what follows is delivered, nothing else arrives.
#[test]
fn bad_values_are_dropped_and_counted() {
    let test = "cl_bad_values";
    let Some(scene) = scene(test, Stack::V4_3, |s| s.keys(&["layer-key"])) else {
        return;
    };
    let a = node_a(&scene, test);
    let mut bob = a.connect(scene.conv, scene.bob);
    wait_joined(&scene, 1, 1);
    let queue = format!("{}chatgate.node-a!", scene.settings.prefix);
    let mut conn = redis(&scene.settings.hosts[0]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for garbage in [
        &b"short"[..],
        &[0u8; 40][..],
        b"0123456789abgAAAAABnotfernet",
    ] {
        let _: () = redis::cmd("ZADD")
            .arg(&queue)
            .arg(now)
            .arg(garbage)
            .query(&mut conn)
            .expect("ZADD garbage");
    }
    let group = format!("chat_{}", scene.conv);
    group_send_all(
        &scene.settings,
        &group,
        &[
            json!({"type": "no_such_type", "x": 1}),
            json!({"type": "typing_indicator", "user_id": "x"}),
        ],
    );
    // Encrypted with a key chatgate does not know.
    let stranger = scene.settings.clone().keys(&["another-key"]);
    group_send_all(
        &stranger,
        &group,
        &[json!({"type": "chatgate.send", "event": {"type": "x"}})],
    );
    // A token from 10 minutes ago (expiry 60 s + 10 s): Fernet's own time.
    let stale = stale_token(&scene.settings, &scene.conv.to_string());
    let _: () = redis::cmd("ZADD")
        .arg(&queue)
        .arg(now)
        .arg(stale)
        .query(&mut conn)
        .expect("ZADD stale");
    group_send_all(
        &scene.settings,
        &group,
        &[json!({"type": "chatgate.send", "event": {"type": "still here"}})],
    );
    assert_eq!(collect(&mut bob, 1), [json!({"type": "still here"})]);
    let gw = a.gateway.as_ref().unwrap();
    wait_until(SETTLE, "the drops counted", || {
        gw.channel_layer_state().unwrap().dropped_total >= 7
    });
    let state = gw.channel_layer_state().unwrap();
    assert_eq!(state.dropped_total, 7, "{state:?}");
    assert_eq!(state.received_total, 1, "{state:?}");
}

/// A value channels_redis would have written 10 minutes ago for this
/// node's member of the conversation (made with the venv's own
/// serializer and Fernet's `encrypt_at_time`).
fn stale_token(settings: &DjangoSettings, conv: &str) -> Vec<u8> {
    let script = format!(
        r#"
import base64, hashlib, os, sys, time, msgpack
from cryptography.fernet import Fernet
key = base64.urlsafe_b64encode(hashlib.sha256(b"layer-key").digest())
body = msgpack.packb({{"type": "chatgate.send", "event": {{"type": "stale"}}, "__asgi_channel__": ["chatgate.node-a!{conv}"]}})
token = Fernet(key).encrypt_at_time(body, int(time.time()) - 600)
sys.stdout.write((os.urandom(12) + token).hex())
"#
    );
    let out = Command::new(settings.venv.python())
        .args(["-c", &script])
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8(out.stdout).unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Redis restarted, the layer flushed
// ---------------------------------------------------------------------------

/// Redis restarted under traffic: while the layer's Redis is down the node
/// keeps serving its own sockets (chat sent meanwhile reaches them, each
/// once); its membership comes back by itself and Django's group_sends
/// reach its socket again; Django's `flush()` empties the group and the
/// member is back within the refresh.
fn redis_restart(test: &str, kind: LayerKind) {
    let own = OwnRedis::start();
    let url = own.url();
    let Some(scene) = scene(test, Stack::V4_3, |s| s.kind(kind).hosts(&[url.as_str()])) else {
        return;
    };
    let a = node_a(&scene, test);
    let mut bob = a.connect(scene.conv, scene.bob);
    let mut carol = a.connect(scene.conv, scene.carol);
    wait_joined(&scene, 1, 1);
    let group = format!("chat_{}", scene.conv);
    let probe = |n: usize| json!({"type": "chatgate.send", "event": {"type": "probe", "n": n}});
    group_send_all(&scene.settings, &group, &[probe(1)]);
    assert_eq!(collect(&mut bob, 1), [json!({"type": "probe", "n": 1})]);
    collect(&mut carol, 1);

    let port = own.kill();
    let gw = a.gateway.as_ref().unwrap();
    for n in 0..5 {
        bob.send_json(json!({"type": "chat_message", "content": format!("during {n}")}));
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(SETTLE, "the layer to notice", || {
        !gw.channel_layer_state().unwrap().up
    });
    for n in 5..10 {
        bob.send_json(json!({"type": "chat_message", "content": format!("during {n}")}));
    }
    for (name, client) in [("bob", &mut bob), ("carol", &mut carol)] {
        let frames = collect(client, 10);
        let contents: Vec<&str> = frames
            .iter()
            .filter(|f| f["type"] == "new_message")
            .map(|f| f["message"]["content"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..10).map(|n| format!("during {n}")).collect();
        assert_eq!(
            contents, expected,
            "{name} while the layer is down: {frames:?}"
        );
    }
    let _again = OwnRedis::on(port);
    wait_joined(&scene, 1, 1);
    wait_until(SETTLE, "the layer up again", || {
        gw.channel_layer_state().unwrap().up
    });
    group_send_all(&scene.settings, &group, &[probe(2)]);
    assert_eq!(collect(&mut bob, 1), [json!({"type": "probe", "n": 2})]);

    if kind == LayerKind::Core {
        // A member nobody re-adds shows the flush happened (ours may be
        // re-added by its refresh before this test looks).
        let key = format!("{}:group:{group}", scene.settings.prefix);
        let _: () = redis::cmd("ZADD")
            .arg(&key)
            .arg(1)
            .arg("cgtest.marker")
            .query(&mut redis(&url))
            .unwrap();
        manage_ok(&scene.settings, &["layer_flush"]);
        let marker: Option<f64> = redis::cmd("ZSCORE")
            .arg(&key)
            .arg("cgtest.marker")
            .query(&mut redis(&url))
            .unwrap();
        assert_eq!(marker, None, "flushed");
        wait_joined(&scene, 1, 1);
        group_send_all(&scene.settings, &group, &[probe(3)]);
        assert_eq!(collect(&mut bob, 1), [json!({"type": "probe", "n": 3})]);
    }
}

#[test]
fn redis_restart_and_flush_core() {
    redis_restart("cl_restart_core", LayerKind::Core);
}

#[test]
fn redis_restart_pubsub() {
    redis_restart("cl_restart_pubsub", LayerKind::PubSub);
}

// ---------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------

/// One member per node and conversation (not per socket), gone after the
/// linger when the last socket leaves, and gone at shutdown; a group
/// without Daphne members costs no write.
#[test]
fn one_member_per_node_and_conversation() {
    let test = "cl_membership";
    let Some(scene) = scene(test, Stack::V4_3, |s| s) else {
        return;
    };
    let host = scene.settings.hosts[0].clone();
    let a = node_a(&scene, test);
    let mut b1 = a.connect(scene.conv, scene.bob);
    let mut b2 = a.connect(scene.conv, scene.bob);
    let mut c1 = a.connect(scene.conv, scene.carol);
    wait_joined(&scene, 1, 1);
    assert_eq!(
        gateway_members(&scene, &host),
        [format!("chatgate.node-a!{}", scene.conv)]
    );
    b1.send_json(json!({"type": "chat_message", "content": "nobody on daphne"}));
    for c in [&mut b1, &mut b2, &mut c1] {
        assert_eq!(message_ids(&collect(c, 1)).len(), 1);
    }
    let gw = a.gateway.as_ref().unwrap();
    assert_eq!(gw.channel_layer_state().unwrap().sent_total, 0);
    let queue_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", scene.settings.prefix))
        .query(&mut redis(&host))
        .unwrap();
    assert_eq!(
        queue_keys,
        [format!(
            "{}:group:chat_{}",
            scene.settings.prefix, scene.conv
        )],
        "only the group key: no write for a group without foreign members"
    );

    drop((b1, b2, c1));
    wait_until(SETTLE, "the member to leave after the linger", || {
        gateway_members(&scene, &host).is_empty()
    });
    let _again = a.connect(scene.conv, scene.bob);
    wait_joined(&scene, 1, 1);
    drop(a);
    assert!(
        gateway_members(&scene, &host).is_empty(),
        "removed at shutdown"
    );
}

/// `chatgate_channel_layer_*` on `/metrics` (names as documented). The
/// recorder is the process's: other tests' gateways add to the counters.
#[test]
fn the_layer_reports_its_metrics() {
    let test = "cl_metrics";
    let Some(scene) = scene(test, Stack::V4_3, |s| s) else {
        return;
    };
    let mut config = gateway_config(&scene.db.url);
    config.channel_layer = Some(layer_config(&scene.settings, "node-a"));
    config.admin_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let a = PgGateway::start(config);
    let mut bob = a.connect(scene.conv, scene.bob);
    wait_joined(&scene, 1, 1);
    group_send_all(
        &scene.settings,
        &format!("chat_{}", scene.conv),
        &[
            json!({"type": "bogus"}),
            json!({"type": "chatgate.send", "event": {"type": "ok"}}),
        ],
    );
    assert_eq!(collect(&mut bob, 1), [json!({"type": "ok"})]);
    let admin = a.gateway.as_ref().unwrap().admin_addr().unwrap();
    let figure = |seen: &HashMap<String, String>, name: &str| -> f64 {
        seen.get(name).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    let mut seen = HashMap::new();
    let deadline = Instant::now() + SETTLE;
    wait_until(SETTLE + Duration::from_secs(1), "the metrics", || {
        assert!(Instant::now() < deadline, "metrics seen: {seen:?}");
        let text = http_get(admin, "/metrics");
        for line in text
            .lines()
            .filter(|l| l.starts_with("chatgate_channel_layer"))
        {
            if let Some((name, value)) = line.rsplit_once(' ') {
                seen.insert(name.to_string(), value.to_string());
            }
        }
        figure(&seen, "chatgate_channel_layer_received_total") >= 1.0
            && figure(
                &seen,
                r#"chatgate_channel_layer_dropped_total{reason="unknown_type"}"#,
            ) >= 1.0
    });
    // Gauges are the process's last writer's (other tests' gateways run in
    // this process too): present here, their values checked on the state.
    assert!(
        a.gateway
            .as_ref()
            .unwrap()
            .channel_layer_state()
            .unwrap()
            .up
    );
    for series in [
        "chatgate_channel_layer_up",
        "chatgate_channel_layer_memberships",
        "chatgate_channel_layer_sent_total",
        "chatgate_channel_layer_over_capacity_total",
        r#"chatgate_channel_layer_dropped_total{reason="wrong_key"}"#,
        r#"chatgate_channel_layer_dropped_total{reason="expired"}"#,
    ] {
        assert!(figure(&seen, series) >= 0.0, "{series} missing: {seen:?}");
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin listener");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------
// What chatgate writes is what channels_redis reads
// ---------------------------------------------------------------------------

/// Runs `tests/django_app/layer_peer.py <cmd>` for the consumer channel
/// `channel` of the scene's group (capacity 3, expiry 5 s).
fn layer_peer(scene: &Scene, cmd: &str, channel: &str) -> String {
    let out = Command::new(scene.settings.venv.python())
        .current_dir(django_support::app_dir())
        .args([
            "layer_peer.py",
            cmd,
            &scene.settings.hosts[0],
            &scene.settings.prefix,
        ])
        .arg(format!("chat_{}", scene.conv))
        .args([channel, "3", "5"])
        .output()
        .expect("run layer_peer.py");
    assert!(
        out.status.success(),
        "layer_peer.py {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A consumer channel in the group (as a Daphne consumer would be) reads
/// chatgate's chat messages with channels_redis's own `receive()`: the
/// original consumer's dicts, at most `capacity` waiting (the rest counted
/// as over capacity), and nothing older than `expiry`.
#[test]
fn channels_redis_reads_what_chatgate_writes() {
    let test = "cl_capacity";
    let Some(scene) = scene(test, Stack::V4_3, |s| s.capacity(3).expiry(5)) else {
        return;
    };
    let a = node_a(&scene, test);
    let mut bob = a.connect(scene.conv, scene.bob);
    wait_joined(&scene, 1, 1);
    layer_peer(&scene, "add", "cgtest.reader");
    for n in 0..5 {
        bob.send_json(json!({"type": "chat_message", "content": format!("m{n}")}));
    }
    let sent = message_ids(&collect(&mut bob, 5));
    assert_eq!(sent.len(), 5);
    let gw = a.gateway.as_ref().unwrap();
    wait_until(SETTLE, "the writes", || {
        let s = gw.channel_layer_state().unwrap();
        s.sent_total + s.over_capacity_total == 5
    });
    let state = gw.channel_layer_state().unwrap();
    assert_eq!(
        (state.sent_total, state.over_capacity_total),
        (3, 2),
        "{state:?}"
    );
    let read: Value = serde_json::from_str(&layer_peer(&scene, "read", "cgtest.reader")).unwrap();
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), 3, "{read:?}");
    for (got, id) in read.iter().zip(&sent) {
        assert_eq!(got["type"], "chat_message_broadcast", "{got}");
        assert_eq!(got["message"]["id"], *id, "{got}");
        assert_eq!(got["message"]["sender"]["id"], scene.bob, "{got}");
        assert_eq!(
            got.as_object().unwrap().len(),
            2,
            "only type and message: {got}"
        );
    }

    // Expiry: an entry older than `expiry` (5 s) is purged when the next
    // one is written (checked in Redis, before the key's own 5 s expiry
    // could decide), and the one left is what channels_redis reads.
    let queue = format!("{}cgtest.reader", scene.settings.prefix);
    let sent_before = gw.channel_layer_state().unwrap().sent_total;
    bob.send_json(json!({"type": "chat_message", "content": "old"}));
    collect(&mut bob, 1);
    std::thread::sleep(Duration::from_millis(5100));
    bob.send_json(json!({"type": "typing", "is_typing": true}));
    wait_until(SETTLE, "the typing entry", || {
        gw.channel_layer_state().unwrap().sent_total == sent_before + 2
    });
    let entries: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(&queue)
        .arg(0)
        .arg(-1)
        .query(&mut redis(&scene.settings.hosts[0]))
        .unwrap();
    assert_eq!(entries.len(), 1, "the old entry purged");
    let read: Value = serde_json::from_str(&layer_peer(&scene, "read", "cgtest.reader")).unwrap();
    let typing = json!({"type": "typing_indicator", "user_id": scene.bob, "username": "bob", "is_typing": true});
    assert!(
        read == json!([typing]) || read == json!([]),
        "only the typing entry (or nothing if its 5 s ran out first): {read}"
    );
}

// ---------------------------------------------------------------------------
// The canary: nginx sends a share of /ws/ to chatgate, the rest to Daphne
// ---------------------------------------------------------------------------

/// A socket through nginx as `user`, with an optional `Cookie` header.
fn through_nginx(
    nginx: &nginx_support::Nginx,
    settings: &DjangoSettings,
    conv: i64,
    user: i64,
    cookie: Option<&str>,
) -> WsClient {
    let url = format!(
        "ws://{}/ws/chat/{conv}/?token={}",
        nginx.addr,
        settings.token(user)
    );
    let mut request = url.into_client_request().expect("request");
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("Cookie", cookie.parse().unwrap());
    }
    let tcp = std::net::TcpStream::connect(nginx.addr).expect("connect to nginx");
    tcp.set_nodelay(true).unwrap();
    let (ws, _) = tungstenite::client::client(request, tcp)
        .unwrap_or_else(|e| panic!("upgrade through nginx: {e:?}\n{}", nginx.error_log()));
    let mut client = WsClient { ws };
    assert_eq!(client.recv_json()["type"], "connection_established");
    client
}

/// `deploy/nginx/canary.conf` at 50 %: sockets land on both Daphne and
/// chatgate, every socket sees every message once whichever side sent it,
/// the `ws_backend` cookie pins a browser to one side, and the access log
/// holds no token.
#[test]
fn the_nginx_canary_shares_one_conversation_between_daphne_and_chatgate() {
    let test = "cl_canary";
    let Some(scene) = scene(test, Stack::V4_3, |s| s) else {
        return;
    };
    let daphne = Daphne::start(&scene.settings);
    let a = node_a(&scene, test);
    let Some(nginx) = nginx_support::Nginx::start(
        "canary.conf",
        &[
            ("10%     chatgate;", "50%     chatgate;".to_string()),
            ("server 127.0.0.1:8000 ", format!("server {} ", a.addr())),
            (
                "server 127.0.0.1:8001 ",
                format!("server 127.0.0.1:{} ", free_port()),
            ),
            (
                "server 127.0.0.1:8002;",
                format!("server {};", daphne.addr()),
            ),
            (
                "server 127.0.0.1:8080;",
                format!("server 127.0.0.1:{};", free_port()),
            ),
        ],
    ) else {
        return;
    };
    let gw = a.gateway.as_ref().unwrap();
    let on_chatgate = || -> usize { gw.shard_stats().iter().map(|s| s.connections).sum() };
    let users = [scene.alice, scene.bob, scene.carol];
    let mut clients: Vec<WsClient> = (0..16)
        .map(|i| through_nginx(&nginx, &scene.settings, scene.conv, users[i % 3], None))
        .collect();
    let here = on_chatgate();
    assert!(
        (1..16).contains(&here),
        "a 50 % split put {here} of 16 sockets on chatgate"
    );
    wait_joined(&scene, 1, 1);

    for (i, c) in clients.iter_mut().enumerate() {
        c.send_json(json!({"type": "chat_message", "content": format!("canary {i}")}));
    }
    let mut stored: Vec<i64> = Vec::new();
    wait_until(SETTLE, "16 stored messages", || {
        stored = (0..16)
            .map(|i| {
                scene.db.scalar(
                    "SELECT COALESCE(MAX(id), 0) FROM chatapp_message WHERE content = $1",
                    &[&format!("canary {i}")],
                )
            })
            .collect();
        stored.iter().all(|id| *id > 0)
    });
    stored.sort_unstable();
    for (i, c) in clients.iter_mut().enumerate() {
        let frames = collect(c, 16);
        let mut ids = message_ids(&frames);
        ids.sort_unstable();
        assert_eq!(ids, stored, "socket {i} got {frames:?}");
    }

    for _ in 0..4 {
        let mut pinned = through_nginx(
            &nginx,
            &scene.settings,
            scene.conv,
            scene.bob,
            Some("ws_backend=chatgate"),
        );
        pinned.send_json(json!({"type": "typing", "is_typing": false}));
        clients.push(pinned);
    }
    assert_eq!(on_chatgate(), here + 4, "the cookie pins to chatgate");
    // A WebSocket's access-log line is written when it closes.
    drop(clients);
    let mut log = String::new();
    wait_until(SETTLE, "20 lines in the access log", || {
        log = nginx.log("ws_access.log");
        log.lines().count() >= 20
    });
    assert!(
        log.contains(" chatgate") && log.contains(" daphne"),
        "{log}"
    );
    assert!(
        !log.contains("token="),
        "a query string in the access log:\n{log}"
    );
}

/// The pub/sub layer with several conversations: one `SUBSCRIBE` naming
/// them all, and after its connection is killed, every one subscribed
/// again (Django's group sends reach each conversation's socket).
#[test]
fn pubsub_subscribes_every_conversation_again_after_a_lost_connection() {
    let test = "cl_pubsub_many";
    let Some(scene) = scene(test, Stack::V4_3, |s| s.kind(LayerKind::PubSub)) else {
        return;
    };
    let convs: Vec<i64> = (0..3)
        .map(|_| {
            scene
                .db
                .admin()
                .create_conversation(&[scene.bob, scene.carol])
                .unwrap()
        })
        .collect();
    let a = node_a(&scene, test);
    let mut sockets: Vec<WsClient> = convs.iter().map(|c| a.connect(*c, scene.bob)).collect();
    let host = scene.settings.hosts[0].clone();
    let subscribed = |conv: i64| -> i64 {
        let reply: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{}__group__chat_{conv}", scene.settings.prefix))
            .query(&mut redis(&host))
            .unwrap();
        reply[0].1
    };
    let probe_all = |sockets: &mut [WsClient], round: i64| {
        for (conv, socket) in convs.iter().zip(sockets.iter_mut()) {
            group_send_all(
                &scene.settings,
                &format!("chat_{conv}"),
                &[json!({"type": "chatgate.send", "event": {"type": "probe", "round": round}})],
            );
            assert_eq!(
                collect(socket, 1),
                [json!({"type": "probe", "round": round})]
            );
        }
    };
    wait_until(SETTLE, "three subscriptions", || {
        convs.iter().all(|c| subscribed(*c) == 1)
    });
    probe_all(&mut sockets, 1);
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis(&host))
        .unwrap();
    let id = list
        .lines()
        .find(|l| l.contains("name=chatgate:node-a:layer-sub"))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("the layer's subscriber connection")
        .to_string();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(&mut redis(&host))
        .unwrap();
    wait_until(SETTLE, "the subscriptions back", || {
        convs.iter().all(|c| subscribed(*c) == 1)
    });
    probe_all(&mut sockets, 2);
}

/// `up` tells the truth with no socket at all: true on a live Redis, false
/// on a port nobody listens on (both kinds).
#[test]
fn the_layer_is_up_only_when_its_hosts_answer() {
    if !redis_reachable("cl_up") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for kind in [GwKind::Core, GwKind::PubSub] {
        let start = |host: String| {
            let mut config = chatgate::Config::for_tests("s", dir.path().join("up.db"));
            let mut layer = ChannelLayerConfig::new(vec![host], "node-up");
            layer.kind = kind;
            layer.prefix = bridge_prefix("cl_up");
            layer.timeout = Duration::from_millis(300);
            config.channel_layer = Some(layer);
            chatgate::Gateway::start(config).expect("start")
        };
        let live = start(django_support::redis_url());
        wait_until(SETTLE, "up on a live Redis", || {
            live.channel_layer_state().unwrap().up
        });
        live.shutdown();
        let dead = start(format!("redis://127.0.0.1:{}/", free_port()));
        std::thread::sleep(Duration::from_secs(2));
        assert!(!dead.channel_layer_state().unwrap().up, "{kind:?}");
        dead.shutdown();
    }
}
