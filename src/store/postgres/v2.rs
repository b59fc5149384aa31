//! Protocol v2 on the Postgres store (see `store/v2.rs` for the semantics).
//!
//! PLACEHOLDER being replaced by the v2 store work: answers NotMigrated.

use std::sync::Arc;

use super::Shared;
use crate::store::v2::{V2Error, V2Request};

/// Answers one v2 request (spawned on the side runtime).
pub(super) async fn answer(_shared: Arc<Shared>, request: V2Request) {
    match request {
        V2Request::History { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::Replay { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::MarkRead { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::ReadState { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
        V2Request::React { reply, .. } => drop(reply.send(Err(V2Error::NotMigrated))),
    }
}
