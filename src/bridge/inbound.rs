//! What the subscriber does with one received pub/sub message: decide whether
//! it becomes a [`RemoteEvent`] for this node.
//!
//! Owns the receive-side rules: the channel must be one of ours and match the
//! envelope's conversation; this node's own events are dropped (a node never
//! delivers its own event twice: the shard already fanned it out locally);
//! and an event a peer re-sent after a failed pipeline (sequence at or below
//! the last one seen from that peer instance) is dropped as a duplicate, so
//! per (origin node, conversation) delivery stays once and in order. A
//! disconnect order is accepted only on the heartbeat channel
//! ([`Inbound::accept_control`]). Envelopes are read as the node's
//! [`Reads`] says (`bridge/envelope.rs`): one that needs what this node
//! does not know is skipped with its reason, one with an optional part it
//! does not know is delivered without it.
//!
//! Pure code, no I/O. Must never: panic on foreign input, or pass on an event
//! whose origin is this node.

use std::collections::HashMap;

use bytes::Bytes;

use super::envelope::{self, EnvelopeError, Read, Reads, Skip};
use super::{RemoteEvent, RemoteKind};

/// The outcome for one received message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// From another node: hand it to the owning shard.
    Deliver(RemoteEvent),
    /// From another node, of a later release: hand it on without the
    /// optional part this node does not know (counted, `Skip::Optional`).
    Partial(RemoteEvent),
    /// From a node of another release, needing what this node does not
    /// know: dropped, counted and logged (once per reason).
    Skipped {
        reason: Skip,
        version: u8,
        /// The publisher's node id (lossy UTF-8), when it could be read.
        node: Option<String>,
    },
    /// Published by this node.
    Own,
    /// Already delivered (a peer's retry after a failed pipeline).
    Duplicate,
    /// Not a valid envelope on one of our channels.
    Malformed(Malformed),
}

/// Why a message was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("channel is not a conversation channel of this prefix")]
    ForeignChannel,
    #[error("a disconnect order arrived on a conversation channel, or without a user")]
    MisplacedDisconnect,
    #[error("envelope conversation {envelope} does not match channel conversation {channel}")]
    ConversationMismatch { channel: i64, envelope: i64 },
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Receive-side state of one bridge.
#[derive(Debug)]
pub struct Inbound {
    own_node: Vec<u8>,
    /// What this node reads (`Reads::CURRENT` but in tests of mixed clusters).
    reads: Reads,
    channel_prefix: String,
    /// Per origin node: (instance, last sequence delivered). One entry per
    /// peer node id, replaced when that node restarts.
    last_seen: HashMap<Vec<u8>, (u64, u64)>,
}

impl Inbound {
    /// `own_node` is this node's id; `channel_prefix` is `"{prefix}:conv:"`.
    pub fn new(own_node: &str, channel_prefix: String, reads: Reads) -> Self {
        Self {
            own_node: own_node.as_bytes().to_vec(),
            reads,
            channel_prefix,
            last_seen: HashMap::new(),
        }
    }

    /// Judges one message received on `channel`.
    pub fn accept(&mut self, channel: &[u8], message: Vec<u8>) -> Verdict {
        match self.judge(channel, message) {
            Ok(verdict) => verdict,
            Err(why) => Verdict::Malformed(why),
        }
    }

    fn judge(&mut self, channel: &[u8], message: Vec<u8>) -> Result<Verdict, Malformed> {
        let channel_conv = self.channel_conversation(channel)?;
        let (header, payload_at, partial) = match envelope::read(&message, self.reads)? {
            Read::Event {
                header,
                payload_at,
                partial,
                ..
            } => (header, payload_at, partial),
            Read::Skip {
                reason,
                version,
                node_id,
            } => return Ok(skipped(reason, version, node_id)),
        };
        if header.conversation_id != channel_conv {
            return Err(Malformed::ConversationMismatch {
                channel: channel_conv,
                envelope: header.conversation_id,
            });
        }
        if header.disconnect {
            return Err(Malformed::MisplacedDisconnect);
        }
        if header.node_id == self.own_node.as_slice() {
            return Ok(Verdict::Own);
        }
        if !self.advance(header.node_id, header.instance, header.seq) {
            return Ok(Verdict::Duplicate);
        }
        let kind = if header.presence {
            RemoteKind::Presence {
                origin: header.instance,
            }
        } else {
            RemoteKind::Frame
        };
        let event = RemoteEvent {
            conversation_id: header.conversation_id,
            audience: header.audience,
            payload: Bytes::from(message).slice(payload_at..),
            kind,
        };
        Ok(if partial {
            Verdict::Partial(event)
        } else {
            Verdict::Deliver(event)
        })
    }

    /// Judges a message on the heartbeat channel that is not a heartbeat:
    /// only a disconnect order from another node is delivered. Not checked
    /// for repeats: closing sockets twice closes them once.
    pub fn accept_control(&self, message: &[u8]) -> Verdict {
        let (header, payload_at) = match envelope::read(message, self.reads) {
            Ok(Read::Event {
                header, payload_at, ..
            }) => (header, payload_at),
            Ok(Read::Skip {
                reason,
                version,
                node_id,
            }) => return skipped(reason, version, node_id),
            Err(e) => return Verdict::Malformed(e.into()),
        };
        let code = message
            .get(payload_at..)
            .and_then(|p| <[u8; 2]>::try_from(p).ok())
            .map(u16::from_be_bytes);
        let (true, Some(user_id), Some(code)) =
            (header.disconnect, header.audience.only_user, code)
        else {
            return Verdict::Malformed(Malformed::MisplacedDisconnect);
        };
        if header.node_id == self.own_node.as_slice() {
            return Verdict::Own;
        }
        Verdict::Deliver(RemoteEvent {
            conversation_id: header.conversation_id,
            audience: header.audience,
            payload: Bytes::new(),
            kind: RemoteKind::Disconnect { user_id, code },
        })
    }

    /// The conversation id in `"{prefix}:conv:{id}"`.
    fn channel_conversation(&self, channel: &[u8]) -> Result<i64, Malformed> {
        channel
            .strip_prefix(self.channel_prefix.as_bytes())
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(|id| id.parse().ok())
            .ok_or(Malformed::ForeignChannel)
    }

    /// Records `seq` from `(node, instance)`; false if it was seen already.
    fn advance(&mut self, node: &[u8], instance: u64, seq: u64) -> bool {
        match self.last_seen.get_mut(node) {
            Some((seen_instance, last)) if *seen_instance == instance => {
                if seq <= *last {
                    return false;
                }
                *last = seq;
            }
            Some(entry) => *entry = (instance, seq),
            None => {
                self.last_seen.insert(node.to_vec(), (instance, seq));
            }
        }
        true
    }
}

fn skipped(reason: Skip, version: u8, node_id: Option<&[u8]>) -> Verdict {
    Verdict::Skipped {
        reason,
        version,
        node: node_id.map(|n| String::from_utf8_lossy(n).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::envelope::Header;
    use super::*;

    const PREFIX: &str = "p:conv:";

    fn message(node: &str, instance: u64, seq: u64, conv: i64, payload: &str) -> Vec<u8> {
        let header = Header {
            node_id: node.as_bytes(),
            instance,
            seq,
            conversation_id: conv,
            audience: crate::audience::Audience::except_user(5),
            presence: false,
            disconnect: false,
        };
        let mut out = Vec::new();
        envelope::encode(&header, payload.as_bytes(), &mut out);
        out
    }

    fn inbound() -> Inbound {
        Inbound::new("me", PREFIX.to_string(), Reads::CURRENT)
    }

    #[test]
    fn delivers_a_peer_event_with_its_payload() {
        let mut inb = inbound();
        let verdict = inb.accept(b"p:conv:7", message("peer", 1, 1, 7, "{\"a\":1}"));
        assert_eq!(
            verdict,
            Verdict::Deliver(RemoteEvent {
                conversation_id: 7,
                audience: crate::audience::Audience::except_user(5),
                payload: Bytes::from_static(b"{\"a\":1}"),
                kind: RemoteKind::Frame,
            })
        );
    }

    #[test]
    fn drops_its_own_events() {
        let mut inb = inbound();
        assert_eq!(
            inb.accept(b"p:conv:7", message("me", 1, 1, 7, "{}")),
            Verdict::Own
        );
    }

    #[test]
    fn drops_replayed_sequences_but_keeps_new_ones() {
        let mut inb = inbound();
        for seq in 1..=3 {
            let v = inb.accept(b"p:conv:7", message("peer", 1, seq, 7, "{}"));
            assert!(matches!(v, Verdict::Deliver(_)));
        }
        // The peer retried a batch that had partly gone through.
        assert_eq!(
            inb.accept(b"p:conv:7", message("peer", 1, 2, 7, "{}")),
            Verdict::Duplicate
        );
        assert!(matches!(
            inb.accept(b"p:conv:8", message("peer", 1, 4, 8, "{}")),
            Verdict::Deliver(_)
        ));
    }

    #[test]
    fn a_restarted_peer_starts_a_new_sequence() {
        let mut inb = inbound();
        inb.accept(b"p:conv:7", message("peer", 1, 100, 7, "{}"));
        assert!(matches!(
            inb.accept(b"p:conv:7", message("peer", 2, 1, 7, "{}")),
            Verdict::Deliver(_)
        ));
    }

    #[test]
    fn sequences_are_tracked_per_peer() {
        let mut inb = inbound();
        inb.accept(b"p:conv:7", message("a", 1, 100, 7, "{}"));
        assert!(matches!(
            inb.accept(b"p:conv:7", message("b", 1, 1, 7, "{}")),
            Verdict::Deliver(_)
        ));
    }

    fn disconnect_order(node: &str, user: Option<i64>, payload: &[u8], flag: bool) -> Vec<u8> {
        let header = Header {
            node_id: node.as_bytes(),
            instance: 1,
            seq: 1,
            conversation_id: 0,
            audience: crate::audience::Audience {
                only_user: user,
                ..crate::audience::Audience::ALL
            },
            presence: false,
            disconnect: flag,
        };
        let mut out = Vec::new();
        envelope::encode(&header, payload, &mut out);
        out
    }

    #[test]
    fn a_disconnect_order_is_taken_only_from_the_heartbeat_channel() {
        let mut inb = inbound();
        let order = disconnect_order("peer", Some(5), &4001u16.to_be_bytes(), true);
        assert_eq!(
            inb.accept_control(&order),
            Verdict::Deliver(RemoteEvent {
                conversation_id: 0,
                audience: crate::audience::Audience {
                    only_user: Some(5),
                    ..crate::audience::Audience::ALL
                },
                payload: Bytes::new(),
                kind: RemoteKind::Disconnect {
                    user_id: 5,
                    code: 4001
                },
            })
        );
        let own = disconnect_order("me", Some(5), &4001u16.to_be_bytes(), true);
        assert_eq!(inb.accept_control(&own), Verdict::Own);
        // On a conversation channel it is refused.
        assert_eq!(
            inb.accept(b"p:conv:0", order),
            Verdict::Malformed(Malformed::MisplacedDisconnect)
        );
        // Without the flag, a user or a two-byte code: refused.
        for bad in [
            disconnect_order("peer", Some(5), &4001u16.to_be_bytes(), false),
            disconnect_order("peer", None, &4001u16.to_be_bytes(), true),
            disconnect_order("peer", Some(5), b"x", true),
            disconnect_order("peer", Some(5), b"xyz", true),
        ] {
            assert!(matches!(inb.accept_control(&bad), Verdict::Malformed(_)));
        }
        assert!(matches!(
            inb.accept_control(b"\x01garbage"),
            Verdict::Malformed(_)
        ));
    }

    #[test]
    fn a_node_of_an_earlier_release_skips_what_it_does_not_know() {
        let mut old = Inbound::new("me", PREFIX.to_string(), Reads::BEFORE_PRESENCE);
        let header = Header {
            node_id: b"new",
            instance: 1,
            seq: 1,
            conversation_id: 7,
            audience: crate::audience::Audience::ALL,
            presence: true,
            disconnect: false,
        };
        let mut report = Vec::new();
        envelope::encode(&header, b"\x01", &mut report);
        assert_eq!(
            old.accept(b"p:conv:7", report),
            Verdict::Skipped {
                reason: Skip::Flags,
                version: 1,
                node: Some("new".into()),
            }
        );
        // A plain frame after it still passes.
        assert!(matches!(
            old.accept(b"p:conv:7", message("new", 1, 2, 7, "{}")),
            Verdict::Deliver(_)
        ));
    }

    #[test]
    fn a_later_release_is_read_in_part() {
        let mut inb = inbound();
        let header = Header {
            node_id: b"next",
            instance: 1,
            seq: 1,
            conversation_id: 7,
            audience: crate::audience::Audience::except_user(5),
            presence: false,
            disconnect: false,
        };
        let (mut optional, mut required) = (Vec::new(), Vec::new());
        let field = envelope::Extension {
            optional: 1,
            fields: &[1, 2, 3],
            ..Default::default()
        };
        envelope::encode_extensible(3, &header, field, b"{}", &mut optional);
        let field = envelope::Extension {
            required: 0x80,
            ..field
        };
        envelope::encode_extensible(3, &Header { seq: 2, ..header }, field, b"{}", &mut required);
        assert_eq!(
            inb.accept(b"p:conv:7", optional),
            Verdict::Partial(RemoteEvent {
                conversation_id: 7,
                audience: crate::audience::Audience::except_user(5),
                payload: Bytes::from_static(b"{}"),
                kind: RemoteKind::Frame,
            })
        );
        assert_eq!(
            inb.accept(b"p:conv:7", required),
            Verdict::Skipped {
                reason: Skip::Required,
                version: 3,
                node: Some("next".into()),
            }
        );
    }

    #[test]
    fn rejects_foreign_channels_and_mismatches() {
        let mut inb = inbound();
        let m = || message("peer", 1, 1, 7, "{}");
        assert_eq!(
            inb.accept(b"other:conv:7", m()),
            Verdict::Malformed(Malformed::ForeignChannel)
        );
        assert_eq!(
            inb.accept(b"p:conv:x", m()),
            Verdict::Malformed(Malformed::ForeignChannel)
        );
        assert_eq!(
            inb.accept(b"p:conv:8", m()),
            Verdict::Malformed(Malformed::ConversationMismatch {
                channel: 8,
                envelope: 7
            })
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let mut inb = inbound();
        assert_eq!(
            inb.accept(b"p:conv:7", b"hello".to_vec()),
            Verdict::Malformed(Malformed::Envelope(EnvelopeError::Truncated("header")))
        );
        assert_eq!(
            inb.accept(b"p:conv:7", b"\0hello".to_vec()),
            Verdict::Malformed(Malformed::Envelope(EnvelopeError::UnknownVersion(0)))
        );
        assert!(matches!(
            inb.accept(b"p:conv:7", Vec::new()),
            Verdict::Malformed(_)
        ));
    }
}
