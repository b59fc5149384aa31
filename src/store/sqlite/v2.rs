//! Protocol v2 on the embedded store (see `store/v2.rs` for the semantics).
//!
//! PLACEHOLDER being replaced by the v2 store work: answers NotMigrated.

use rusqlite::Connection;

use crate::store::v2::{V2Error, V2Request};

/// Answers one v2 request on the worker's connection.
pub(super) fn answer(_conn: &Connection, request: V2Request) {
    match request {
        V2Request::History { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::Replay { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::MarkRead { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::ReadState { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::React { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
    }
}
