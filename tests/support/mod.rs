//! Shared harness of the integration tests: a real gateway on an ephemeral
//! port (2 shards, a temporary SQLite file by default, or a fresh Postgres
//! database of its own), provisioned users and conversations, a blocking
//! WebSocket client with read timeouts, and raw TCP / raw frame helpers for
//! the tests that must misbehave.
//!
//! Must never: reach into the gateway's internals. Everything a test checks
//! goes over a socket, through `Gateway::shard_stats`, or through the
//! database the gateway writes.
//!
//! By concern, all re-exported here as `support::…`: `gateway` (start,
//! restart, shut down), `databases` (users, conversations, stored rows, on
//! either store), `connect` (sockets to a gateway), `client` (the WebSocket
//! client), `api` (the server API over HTTP), `frames` (raw frames and raw HTTP), `net` (admin listener,
//! client addresses, ports), `target` (io driver × store), `util` (polling,
//! assertions, small helpers); the scenario macros live in this file.
#![allow(dead_code)]

/// The Postgres test databases (one per gateway, dropped with it).
#[path = "../pg_support/mod.rs"]
pub mod pg_support;

mod api;
mod client;
mod connect;
mod databases;
mod frames;
mod gateway;
mod net;
mod target;
mod util;

// Every test names these as `support::…`: one flat namespace, as before the split.
#[allow(unused_imports)] // not every test file calls the server API
pub use self::{
    api::*, client::*, databases::*, frames::*, gateway::*, net::*, target::*, util::*,
};

use std::time::Duration;

/// The HS256 secret every test gateway verifies tokens with.
pub const SECRET: &str = "integration-test-secret";
/// How long any single read waits before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The header that asks for protocol v2.
pub const V2_PROTOCOL: (&str, &str) = ("Sec-WebSocket-Protocol", "chatgate.v2");

/// Expands each scenario `fn name(driver: IoDriver)` into
/// `uring::name` (io driver Auto: io_uring where the kernel allows it) and
/// `epoll::name` tests.
#[allow(unused_macros)] // files that run on one driver only do not use it
macro_rules! on_both_drivers {
    ($($name:ident),+ $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                super::$name(chatgate::IoDriver::Auto)
            })+
        }
        mod epoll {
            $(#[test]
            fn $name() {
                super::$name(chatgate::IoDriver::Epoll)
            })+
        }
    };
}

/// Expands each scenario `fn name(on: Target)` into `uring::name` and
/// `epoll::name` (SQLite, io driver Auto / Epoll), `postgres::name` (a fresh
/// Postgres database set up by chatgate's `migrate`) and `django::name` (a
/// fresh Postgres database holding only the DDL Django generated, no
/// `migrate`), both Postgres variants on the default io driver. A Postgres
/// variant prints why it skips and passes when Postgres is unreachable,
/// unless `CI` is set: then it fails.
#[allow(unused_macros)] // files that run on SQLite only do not use it
macro_rules! on_every_store {
    ($($name:ident),+ $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                super::$name(crate::support::Target::sqlite(chatgate::IoDriver::Auto))
            })+
        }
        mod epoll {
            $(#[test]
            fn $name() {
                super::$name(crate::support::Target::sqlite(chatgate::IoDriver::Epoll))
            })+
        }
        mod postgres {
            $(#[test]
            fn $name() {
                let test = concat!("postgres::", stringify!($name));
                if let Some(on) = crate::support::Target::postgres(test) {
                    super::$name(on)
                }
            })+
        }
        mod django {
            $(#[test]
            fn $name() {
                let test = concat!("django::", stringify!($name));
                if let Some(on) = crate::support::Target::django(test) {
                    super::$name(on)
                }
            })+
        }
    };
}
