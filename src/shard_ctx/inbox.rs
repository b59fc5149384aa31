//! What reaches a shard from outside its thread: the inbox messages
//! (hand-offs, commit outcomes, other nodes' events, server API calls,
//! stats, shutdown) and the figures a shard reports.
//!
//! Must never: carry anything that is not `Send` (these cross threads).

use std::net::SocketAddr;

use tokio::sync::oneshot;

use bytes::Bytes;

use crate::audience::Audience;
use crate::bridge::RemoteEvent;
use crate::close::CloseReason;
use crate::handshake::Upgrade;
use crate::ids::{ConversationId, UserId};
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
    /// A server API call (docs/protocol.md §10) for this shard's sockets.
    Api(ApiCall),
    /// Stop accepting, close every socket with 1001, drain, exit.
    Shutdown,
}

/// What the server API asks of a shard (it runs on the side runtime and
/// reaches sockets only through this).
#[derive(Debug)]
pub enum ApiCall {
    /// Fan `frame` (a framed text message) out to the conversation's
    /// sockets in `audience` here and publish it for the other nodes, as a
    /// socket's broadcast. Sent to the conversation's owning shard.
    Publish {
        conversation_id: ConversationId,
        audience: Audience,
        frame: Bytes,
    },
    /// Close the user's sockets (of one conversation, or all of them) with
    /// `reason`; `reply` gets how many were asked to close here.
    Disconnect {
        user_id: UserId,
        conversation_id: Option<ConversationId>,
        reason: CloseReason,
        reply: oneshot::Sender<usize>,
    },
    /// Who is online in the conversation as the shard's presence tables
    /// know it (this node's sockets and the other nodes' reports); `None`
    /// when the shard holds no socket of it (it then keeps no table).
    Presence {
        conversation_id: ConversationId,
        reply: oneshot::Sender<Option<Vec<(UserId, String)>>>,
    },
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
    /// Conversations with at least one open session on the shard.
    pub conversations: usize,
    /// Sockets received from other shards.
    pub handoffs_in: u64,
    /// Frames waiting in this shard's outbound queues.
    pub queued_frames: usize,
    /// Connection tasks alive (handshaking, open or closing).
    pub tasks: usize,
}
