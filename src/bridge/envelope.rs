//! The bridge's wire envelope: what one Redis `PUBLISH` carries between nodes.
//!
//! Owns the byte layout (version 1, all integers big-endian):
//!
//! ```text
//! u8  version (= 1)
//! u8  node id length n (1..=255), then n bytes of node id
//! u64 instance   (random per bridge start: tells a restarted node apart)
//! u64 sequence   (per instance, increasing in publish order)
//! i64 conversation id
//! u8  flags      (bit 0: an except_user follows; bit 1: v2 sockets only;
//!                 bit 2: an only_user follows; bit 3: the payload is a
//!                 presence report, not a frame; bit 4: a disconnect order,
//!                 see below; other bits must be 0)
//! i64 except_user (only when flag bit 0 is set)
//! i64 only_user   (only when flag bit 2 is set)
//! ..  payload    (the server→client JSON, to the end of the message)
//! ```
//!
//! A disconnect order (bit 4, from the server API, docs/protocol.md §10):
//! only_user is the user whose sockets close, the conversation id is the
//! conversation (0: all of the user's sockets) and the payload is the close
//! code as a big-endian u16. It is published on the heartbeat channel
//! `{prefix}:nodes`, which every node subscribes, never on a conversation
//! channel. A node built before bit 4 existed reads only 8-byte heartbeats
//! there and ignores anything longer; were one to reach it on a conversation
//! channel, its decoder refuses the unknown bit and the message is dropped
//! as malformed — either way it is dropped, never misread as a frame.
//!
//! Pure code: no I/O, no allocation on decode (the decoded header borrows the
//! input). Must never panic on malformed input: every read is bounds-checked
//! and reported as an [`EnvelopeError`].

use crate::audience::Audience;

/// The only layout version this build writes and reads.
pub const VERSION: u8 = 1;

const FLAG_EXCEPT_USER: u8 = 0b0000_0001;
const FLAG_V2_ONLY: u8 = 0b0000_0010;
const FLAG_ONLY_USER: u8 = 0b0000_0100;
const FLAG_PRESENCE: u8 = 0b0000_1000;
const FLAG_DISCONNECT: u8 = 0b0001_0000;
const KNOWN_FLAGS: u8 =
    FLAG_EXCEPT_USER | FLAG_V2_ONLY | FLAG_ONLY_USER | FLAG_PRESENCE | FLAG_DISCONNECT;

/// The routing part of an envelope (everything but the payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Id of the node that published the event.
    pub node_id: &'a [u8],
    /// Random id of that node's bridge instance (changes on restart).
    pub instance: u64,
    /// Position in that instance's publish order.
    pub seq: u64,
    /// Conversation the event belongs to.
    pub conversation_id: i64,
    /// Which sockets receive the event.
    pub audience: Audience,
    /// The payload is a presence report (`bridge/presence.rs`).
    pub presence: bool,
    /// A disconnect order (the payload is a close code; see above).
    pub disconnect: bool,
}

/// Why an envelope was rejected. The peer (another node, or a stranger
/// publishing on our channels) is at fault, never this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty envelope")]
    Empty,
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("envelope truncated in {0}")]
    Truncated(&'static str),
    #[error("envelope has an empty node id")]
    EmptyNodeId,
    #[error("envelope has unknown flags {0:#04x}")]
    UnknownFlags(u8),
}

/// Length of the encoded header, for sizing buffers.
pub fn header_len(header: &Header<'_>) -> usize {
    let a = header.audience;
    let users = 8 * (usize::from(a.except_user.is_some()) + usize::from(a.only_user.is_some()));
    1 + 1 + header.node_id.len() + 8 + 8 + 8 + 1 + users
}

/// Appends the envelope of `header` + `payload` to `out`.
///
/// `header.node_id` must be 1..=255 bytes; the bridge validates its node id
/// once at start (see `BridgeConfig`), so this only debug-asserts it.
pub fn encode(header: &Header<'_>, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!((1..=255).contains(&header.node_id.len()));
    out.reserve(header_len(header) + payload.len());
    out.push(VERSION);
    out.push(header.node_id.len() as u8);
    out.extend_from_slice(header.node_id);
    out.extend_from_slice(&header.instance.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.conversation_id.to_be_bytes());
    let a = header.audience;
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    out.push(
        flag(a.except_user.is_some(), FLAG_EXCEPT_USER)
            | flag(a.v2_only, FLAG_V2_ONLY)
            | flag(a.only_user.is_some(), FLAG_ONLY_USER)
            | flag(header.presence, FLAG_PRESENCE)
            | flag(header.disconnect, FLAG_DISCONNECT),
    );
    for user in [a.except_user, a.only_user].into_iter().flatten() {
        out.extend_from_slice(&user.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Splits an envelope into its header and the offset where the payload starts.
pub fn decode(buf: &[u8]) -> Result<(Header<'_>, usize), EnvelopeError> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u8("version").map_err(|_| EnvelopeError::Empty)?;
    if version != VERSION {
        return Err(EnvelopeError::UnknownVersion(version));
    }
    let node_len = usize::from(r.u8("node id length")?);
    if node_len == 0 {
        return Err(EnvelopeError::EmptyNodeId);
    }
    let node_id = r.bytes(node_len, "node id")?;
    let instance = r.u64("instance")?;
    let seq = r.u64("sequence")?;
    let conversation_id = r.u64("conversation id")? as i64;
    let flags = r.u8("flags")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(EnvelopeError::UnknownFlags(flags));
    }
    let except_user = if flags & FLAG_EXCEPT_USER != 0 {
        Some(r.u64("except_user")? as i64)
    } else {
        None
    };
    let only_user = if flags & FLAG_ONLY_USER != 0 {
        Some(r.u64("only_user")? as i64)
    } else {
        None
    };
    let header = Header {
        node_id,
        instance,
        seq,
        conversation_id,
        audience: Audience {
            except_user,
            v2_only: flags & FLAG_V2_ONLY != 0,
            only_user,
            except_conn: None,
        },
        presence: flags & FLAG_PRESENCE != 0,
        disconnect: flags & FLAG_DISCONNECT != 0,
    };
    Ok((header, r.pos))
}

/// A bounds-checked cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(EnvelopeError::Truncated(what))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, EnvelopeError> {
        Ok(self.bytes(1, what)?[0])
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, EnvelopeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.bytes(8, what)?);
        Ok(u64::from_be_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(except_user: Option<i64>) -> Header<'static> {
        Header {
            node_id: b"node-a",
            instance: 0xdead_beef_0102_0304,
            seq: 42,
            conversation_id: -7,
            audience: Audience {
                except_user,
                ..Audience::ALL
            },
            presence: except_user == Some(3),
            disconnect: except_user == Some(i64::MAX),
        }
    }

    fn encoded(h: &Header<'_>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(h, payload, &mut out);
        out
    }

    #[test]
    fn round_trips_with_and_without_except_user() {
        for except in [None, Some(3), Some(i64::MIN), Some(i64::MAX)] {
            let h = header(except);
            let payload = br#"{"type":"typing","user_id":3}"#;
            let buf = encoded(&h, payload);
            assert_eq!(buf.len(), header_len(&h) + payload.len());
            let (back, at) = decode(&buf).expect("decodes");
            assert_eq!(back, h);
            assert_eq!(&buf[at..], payload);
        }
    }

    #[test]
    fn round_trips_the_v2_only_flag_and_only_user() {
        for (except, only) in [
            (None, None),
            (Some(9), None),
            (None, Some(4)),
            (Some(9), Some(-4)),
        ] {
            let h = Header {
                audience: Audience {
                    except_user: except,
                    v2_only: true,
                    only_user: only,
                    except_conn: None,
                },
                ..header(None)
            };
            let buf = encoded(&h, b"{}");
            assert_eq!(decode(&buf).expect("decodes").0, h);
        }
    }

    #[test]
    fn round_trips_an_empty_payload_and_a_long_node_id() {
        let node = [b'x'; 255];
        let h = Header {
            node_id: &node,
            ..header(None)
        };
        let buf = encoded(&h, b"");
        let (back, at) = decode(&buf).expect("decodes");
        assert_eq!(back.node_id, &node[..]);
        assert_eq!(at, buf.len());
    }

    #[test]
    fn starts_with_the_version_byte() {
        assert_eq!(encoded(&header(None), b"{}")[0], VERSION);
    }

    #[test]
    fn rejects_empty_input() {
        assert_eq!(decode(&[]), Err(EnvelopeError::Empty));
    }

    #[test]
    fn rejects_unknown_versions() {
        let mut buf = encoded(&header(None), b"{}");
        buf[0] = 2;
        assert_eq!(decode(&buf), Err(EnvelopeError::UnknownVersion(2)));
        assert_eq!(
            decode(b"{\"type\":1}"),
            Err(EnvelopeError::UnknownVersion(b'{'))
        );
    }

    #[test]
    fn rejects_an_empty_node_id() {
        assert_eq!(decode(&[VERSION, 0]), Err(EnvelopeError::EmptyNodeId));
    }

    #[test]
    fn rejects_unknown_flags() {
        let h = header(None);
        let mut buf = encoded(&h, b"{}");
        let flags_at = header_len(&h) - 1;
        buf[flags_at] = 0b10_0000;
        assert_eq!(decode(&buf), Err(EnvelopeError::UnknownFlags(0b10_0000)));
    }

    #[test]
    fn rejects_every_truncation_of_the_header_without_panicking() {
        for except in [None, Some(9)] {
            let h = header(except);
            let buf = encoded(&h, b"");
            for cut in 0..buf.len() {
                assert!(decode(&buf[..cut]).is_err(), "cut at {cut} accepted");
            }
        }
    }

    #[test]
    fn node_id_length_past_the_end_is_truncation() {
        assert_eq!(
            decode(&[VERSION, 200, b'a']),
            Err(EnvelopeError::Truncated("node id"))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes of many lengths, with the
        // first bytes forced to a plausible header so deeper paths run too.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..400 {
            let mut buf: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if len > 2 {
                buf[0] = VERSION;
                buf[1] %= 16;
            }
            let _ = decode(&buf);
        }
    }
}
