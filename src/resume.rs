//! Resume without a gap or a duplicate (docs/protocol.md §9.1).
//!
//! Owns the merge of a resuming socket's replay with the live events that
//! arrived while the replay was read. The socket registers for live events
//! *before* the store reads what it missed; live events are held meanwhile.
//! When the replay arrives it goes out first, then `resumed`, then the held
//! events — except `new_message`s the replay already carried (by id: the
//! set of replayed ids, not "≤ the last replayed id", because a message
//! committed on another node can reach this one after a higher id was
//! stored here, and the replay may have been read before it committed).
//! A refill after a bridge loss (`shard_ctx/refill.rs`) merges its items
//! with the events held meanwhile the same way.
//!
//! Sans-IO: frames in, frames out.
//!
//! Must never: send a message twice, or drop a held event that is not a
//! replayed message.

use bytes::Bytes;

use crate::frame;
use crate::store::MessageId;

/// The prefix every `new_message` payload starts with, up to its id.
const NEW_MESSAGE_PREFIX: &[u8] = br#"{"type":"new_message","message":{"id":"#;

/// The message id of a framed live `new_message` event (`None` for any
/// other event). Live events are the gateway's own encoding, so the id is
/// always right after a fixed prefix.
pub fn new_message_id(frame: &Bytes) -> Option<MessageId> {
    let payload = frame::payload_of(frame);
    let digits = payload.strip_prefix(NEW_MESSAGE_PREFIX)?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The held live events that must still be sent after a replay that
/// carried the messages `replayed` (ascending ids), in the order they
/// arrived.
pub fn after_replay(held: Vec<Bytes>, replayed: &[MessageId]) -> impl Iterator<Item = Bytes> + '_ {
    debug_assert!(replayed.is_sorted());
    held.into_iter()
        .filter(move |f| new_message_id(f).is_none_or(|id| replayed.binary_search(&id).is_err()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameBuf;
    use crate::protocol;

    fn message(id: i64) -> Bytes {
        let mut f = FrameBuf::with_capacity(200);
        protocol::encode_new_message(
            f.payload(),
            id,
            br#"{"id":1,"username":"a","first_name":"","last_name":""}"#,
            &"x".repeat(200), // a long payload: a 16-bit length header
            chrono::Utc::now(),
        );
        f.finish_text()
    }

    fn typing() -> Bytes {
        frame::text(br#"{"type":"typing","user_id":2,"username":"b","is_typing":true}"#)
    }

    #[test]
    fn reads_the_id_of_a_new_message_only() {
        assert_eq!(new_message_id(&message(123)), Some(123));
        assert_eq!(new_message_id(&message(i64::MAX)), Some(i64::MAX));
        assert_eq!(new_message_id(&typing()), None);
        assert_eq!(
            new_message_id(&frame::text(b"{\"type\":\"new_message\"}")),
            None
        );
        assert_eq!(new_message_id(&Bytes::new()), None);
    }

    #[test]
    fn replayed_messages_are_dropped_everything_else_kept_in_order() {
        let held = vec![
            message(9),
            typing(),
            message(10),
            message(11),
            typing(),
            message(12),
        ];
        let left: Vec<Option<i64>> = after_replay(held, &[8, 9, 10])
            .map(|f| new_message_id(&f))
            .collect();
        assert_eq!(left, [None, Some(11), None, Some(12)]);
    }

    #[test]
    fn a_held_message_below_the_last_replayed_id_is_kept_when_not_replayed() {
        // 9 was committed on another node before 10 but reached this one
        // after the replay was read: it is not a repeat.
        let held = vec![message(9), message(10), message(11)];
        let left: Vec<Option<i64>> = after_replay(held, &[8, 10])
            .map(|f| new_message_id(&f))
            .collect();
        assert_eq!(left, [Some(9), Some(11)]);
    }
}
