//! chatgate-bench: the load tools for chatgate, a crate of their own (the
//! gateway library never links them). The binary `chatgate-bench` parses
//! the flags and prints what [`args::execute`] returns.
//!
//! Owns provisioning a load-test plan in the gateway's store ([`plan`]), a
//! cheap client side of the WebSocket protocol ([`wire`], [`message`],
//! [`net`], [`driver`]), the scenarios ([`fanout`]: open-loop chat with
//! latency, loss and ordering checks; [`conns`]: idle sockets, heartbeats,
//! RSS per connection; [`storm`]: handshake rate; [`resume`]: the v2
//! reconnect storm; [`ladder`]: fan-out at a series of offered rates,
//! drawn as SVG; [`soak`]: connect/disconnect churn for an hour-long soak,
//! and its samples drawn and judged flat or not), their figures ([`hist`], [`report`]), the load threads
//! ([`runner`]) and the flags ([`args`]).
//!
//! From the gateway library it takes only what must match the gateway
//! exactly: token minting and the secret's resolution (`chatgate::auth`,
//! `chatgate::cli`, `chatgate::config::JwtConfig`), the store's admin API
//! for provisioning (`chatgate::store`), and the non-blocking `recv`
//! (`chatgate::sockio::try_recv`).
//!
//! One load thread is one monoio runtime; every socket of a thread is a
//! task on it, frames are parsed in place from pooled read buffers, and
//! nothing crosses threads per message, so one thread absorbs hundreds of
//! thousands of deliveries per second.
//!
//! Must never: be used by the gateway itself, or keep more sockets per
//! process than the file limit allows (the caller's plan decides; this
//! sandbox allows 20,000 open files per process).

pub mod args;
pub mod conns;
pub mod driver;
pub mod fanout;
pub mod hist;
pub mod ladder;
pub mod message;
pub mod net;
pub mod plan;
pub mod report;
pub mod resume;
pub mod runner;
pub mod soak;
pub mod storm;
pub mod wire;

use std::path::PathBuf;

use chatgate::cli::SecretError;
use chatgate::store::StoreError;

/// Why a load run could not be carried out (failed checks are not errors:
/// they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot read or write the plan {path}: {source}")]
    PlanFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the plan {path} is not valid: {source}")]
    PlanFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("bad gateway URL {0}")]
    Url(String),
    #[error("{0}")]
    Invalid(String),
    #[error("provisioning failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot start a load thread: {0}")]
    Runtime(std::io::Error),
    #[error("only {established} of {total} sockets were admitted; failures: {reasons}")]
    Connect {
        total: usize,
        established: usize,
        reasons: String,
    },
}
