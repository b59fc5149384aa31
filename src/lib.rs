//! chatgate: a thread-per-core WebSocket chat gateway that speaks the wire
//! protocol of a Django Channels chat backend (see `docs/protocol.md`).
//!
//! # Layout
//! - [`config`] — the validated runtime configuration (one struct, every knob).
//! - [`cli`] — command-line flags and environment variables → [`config::Config`].
//! - [`gateway`] — starts the store and the shards, owns shutdown.
//! - [`shard`] — one monoio runtime per core: accept loop, socket hand-off, inbox, commit outcomes.
//! - [`shard_ctx`] — the per-shard state every task of a shard shares (below both `shard` and `connection`).
//! - [`routing`] — `shard_for`, the request path and token extraction.
//! - [`handshake`] — HTTP upgrade validation (404 / 403 / 400 / 429 / 431) and the 101 answer.
//! - [`http_listener`] — the accept loop and connection life both side-runtime HTTP listeners (admin, server API) share.
//! - [`http_api`] — `GET /api/conversations/<id>/messages/` (history over HTTP) on the WebSocket port.
//! - [`web`] — the demo chat page and `chatgate.js` (embedded from `web/`) on the WebSocket port.
//! - [`auth`] — simplejwt-compatible HS256 access tokens.
//! - [`session`] — the session core, sans I/O: a socket's phases and deadlines, a client message to its ordered effects, the call-signal recipient rule.
//! - [`connection`] — one socket's I/O: read, decode, drive the session core, write, close.
//! - [`protocol`] — client message decoding (simd-json) and server message encoding.
//! - [`frame`] — server WebSocket frames, built once and shared.
//! - [`membership`] — per-shard cache of recent admissions (user, conversation).
//! - [`outbound`] — each socket's bounded outbound queue.
//! - [`resume`] — a resuming socket's replay merged with the live events held meanwhile.
//! - [`delivery_log`] — what a shard's v2 sockets of a conversation were sent (refills after a bridge loss).
//! - [`sequencer`] — a socket's effects kept in the order it sent their frames.
//! - [`read_marks`] — a read position as a state: one socket's `mark_read` values merged, the highest written at most every 250 ms.
//! - [`typing_state`] — typing as a state: changes at once, repeats at most once a second.
//! - [`upload_throttle`] — upload progress as a state: one value per upload per 250 ms, the latest never lost.
//! - [`audience`] — who an event is for (all, all but a user, v2 sockets only), on every node.
//! - [`presence`] — who is online per conversation (sockets here, reports from other nodes) and its transitions.
//! - [`hub`] — a shard's conversations and their member sockets (fan-out).
//! - [`timers`] — a shard's socket deadlines on one timer task (heartbeat, idle, expiry, linger).
//! - [`records`] — the records the store fills and the wire encoders write (profile, history item, read position).
//! - [`ids`] — the primary keys (user, conversation, message), a leaf every module may use.
//! - [`store`] — the store interface; [`store::sqlite`] the embedded backend, [`store::postgres`] the PostgreSQL one; [`store::requests`] what protocol v2 asks of both.
//! - [`close`] — the close codes, defined once.
//! - [`sockio`] — direct non-blocking send and receive (fan-out fast path, reads after readiness).
//! - [`side`] — the side tokio runtime (Postgres store, bridge and admin listener, off the shards).
//! - [`bridge`] — cross-node conversations over Redis pub/sub (batched publishes, heartbeat, resubscribe).
//! - [`channel_layer`] — membership of the Django app's Channels layer (channels_redis core or pub/sub): Django's `group_send` to our sockets, our chat and typing to Daphne's consumers.
//! - [`limits`] — per-user rate and connection limits, per-IP handshake limit (shared by all shards).
//! - [`metrics`] — the Prometheus recorder, metric names, per-shard counters flushed each second.
//! - [`admin`] — the admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`server_api`] — the server API listener for the backend: `POST /api/<method>` behind API keys.
//!
//! # Public face
//! What the binary, the load tool, the integration tests and the benches
//! use: [`Gateway`] and [`Config`] (with [`config`]), the [`store`] and its
//! admin API, [`auth`] (tokens), [`cli`], [`bridge`]'s and
//! [`channel_layer`]'s configuration and events, [`metrics`], [`shard_for`], and the hot-path pieces the benches
//! measure ([`protocol`], [`frame`], [`hub`], [`outbound`], [`sockio`],
//! [`audience`]). Every other module is `pub(crate)`, so rustc reports what
//! nothing uses.
#![deny(unsafe_code)]

pub(crate) mod admin;
pub mod audience;
pub mod auth;
pub mod bridge;
pub mod channel_layer;
pub mod cli;
pub(crate) mod close;
pub mod config;
pub(crate) mod connection;
pub(crate) mod delivery_log;
pub mod frame;
#[cfg(test)]
mod fuzz;
pub mod gateway;
pub(crate) mod handshake;
pub(crate) mod http_api;
pub(crate) mod http_listener;
pub mod hub;
pub(crate) mod ids;
pub(crate) mod limits;
pub(crate) mod membership;
pub mod metrics;
pub mod outbound;
pub(crate) mod presence;
pub mod protocol;
pub(crate) mod read_marks;
pub(crate) mod records;
pub(crate) mod resume;
pub(crate) mod routing;
pub(crate) mod sequencer;
pub(crate) mod server_api;
pub(crate) mod session;
pub(crate) mod shard;
pub(crate) mod shard_ctx;
pub(crate) mod side;
pub mod sockio;
pub mod store;
pub(crate) mod timers;
pub(crate) mod typing_state;
pub(crate) mod upload_throttle;
pub(crate) mod web;

pub use config::{Config, IoDriver, JwtConfig, StoreConfig};
pub use gateway::{Gateway, GatewayError, ShardStats};
pub use routing::shard_for;
