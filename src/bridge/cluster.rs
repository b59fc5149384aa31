//! The bridge on Redis Cluster (`--redis-cluster`): the same contract as
//! on one Redis (`bridge.rs`), over sharded pub/sub.
//!
//! Layout (`cluster/`): `slot.rs` (key → slot), `layout.rs` (partitions,
//! hash tags, names), `slots.rs` (the slot map and redirections), `resp.rs`
//! (RESP3 frames of the bridge's own subscribing connections).

pub mod layout;
mod resp;
pub mod slot;
mod slots;
