//! What reaches a shard from outside its thread: the inbox messages
//! (hand-offs, commit outcomes, other nodes' events, stats, shutdown) and
//! the figures a shard reports.
//!
//! Must never: carry anything that is not `Send` (these cross threads).

use std::net::SocketAddr;

use tokio::sync::oneshot;

use crate::bridge::RemoteEvent;
use crate::handshake::Upgrade;
use crate::store::InsertOutcome;

/// Messages into a shard. The inbox is unbounded: hand-offs are bounded by
/// the accept rate, commit outcomes by the store's bounded request queue.
pub enum ShardMsg {
    /// A socket accepted by another shard for a conversation this shard owns.
    Handoff(Handoff),
    /// Outcomes of a store batch for this shard's senders, in commit order.
    Committed(Vec<InsertOutcome>),
    /// Report figures.
    Stats(oneshot::Sender<ShardStats>),
    /// An event another node published for a conversation this shard owns.
    Remote(RemoteEvent),
    /// Stop accepting, close every socket with 1001, drain, exit.
    Shutdown,
}

/// A socket in transit between shards.
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub upgrade: Upgrade,
    /// Bytes read after the request head (early WebSocket frames).
    pub leftover: Vec<u8>,
    /// When the handshake must be complete.
    pub deadline: std::time::Instant,
}

/// Figures one shard reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Open WebSocket sessions owned by the shard.
    pub connections: usize,
    /// Sockets received from other shards.
    pub handoffs_in: u64,
    /// Frames waiting in this shard's outbound queues.
    pub queued_frames: usize,
    /// Connection tasks alive (handshaking, open or closing).
    pub tasks: usize,
}
