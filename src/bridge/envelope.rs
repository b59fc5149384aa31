//! The bridge's wire envelope: what one Redis `PUBLISH` carries between
//! nodes, and how nodes of different releases read each other's.
//!
//! # Version 1 (every release since the bridge exists)
//!
//! All integers big-endian:
//!
//! ```text
//! u8  version (= 1)
//! u8  node id length n (1..=255), then n bytes of node id
//! u64 instance   (random per bridge start: tells a restarted node apart)
//! u64 sequence   (per instance, increasing in publish order)
//! i64 conversation id
//! u8  flags      (bit 0: an except_user follows; bit 1: v2 sockets only;
//!                 bit 2: an only_user follows; bit 3: the payload is a
//!                 presence report, not a frame; bit 4: a disconnect order)
//! i64 except_user (only when flag bit 0 is set)
//! i64 only_user   (only when flag bit 2 is set)
//! ..  payload    (the server→client JSON, to the end of the message)
//! ```
//!
//! A version-1 reader cannot skip anything: the payload starts right after
//! the fields of the flags it knows, so a flag it does not know makes the
//! whole envelope unreadable, and it drops it. Releases before call signals
//! and presence knew bits 0–1 only, and dropped bits 2 and 3 (silently, as
//! malformed); the release before this one knows bits 0–4 and refuses any
//! other version.
//!
//! # Version 2 (read by this build; framing kept by every later version)
//!
//! ```text
//! u8  version (2; a later version keeps everything below)
//! u16 header length h: bytes from the version byte to the payload
//! u8  node id length n (1..=255), then n bytes of node id
//! u64 instance, u64 sequence, i64 conversation id   (as in version 1)
//! u8  required flags ("must understand"): bits 0–4 as version 1's flags
//! u8  optional flags ("may ignore"): none defined in version 2
//! i64 except_user (required bit 0), i64 only_user (required bit 2)
//! ..  fields of bits defined later, up to h: skipped by older readers
//! ..  payload, from byte h to the end
//! ```
//!
//! Rules for every later version: the framing above never changes; a
//! release may define new required bits, new optional bits and new fields,
//! and puts each new field after every field of earlier versions (so an
//! older reader finds its own fields where it expects them and skips the
//! rest with h); the version goes up by one whenever bits or fields are
//! defined. A bit that narrows who gets an event, or changes what the
//! payload is, must be required (a reader ignoring it would deliver to the
//! wrong sockets or misread the payload); a hint a reader may do without (a
//! trace id, a send time) is optional.
//!
//! # What a reader does ([`read`], [`Reads`])
//!
//! | envelope | this build |
//! | --- | --- |
//! | version 1, known flags | delivered |
//! | version 1, a flag it does not know | skipped, counted `flags` |
//! | version ≥ 2, a required bit it does not know | skipped, counted `required` |
//! | version ≥ 2, an optional bit it does not know | delivered without it, counted `optional` |
//! | version 0, or a broken framing | malformed |
//!
//! A node emulating an earlier release (`Reads::PREVIOUS`,
//! `Reads::BEFORE_PRESENCE`: tests of mixed clusters) reads version 1 only
//! and skips other versions, counted `version`.
//!
//! # What this build writes, and why
//!
//! Version 1, always. The release before this one refuses any version but
//! 1, so a rolling upgrade keeps v1 chat working both ways only if plain
//! frames (to everyone, or to all but one user: `new_message`, `typing`,
//! deletions) stay in version 1; and everything this build publishes
//! (flags 0–4) is expressible in version 1, which that release reads
//! whole. So no event needs version 2 yet, and writing it would only cut
//! the previous release off. This build reads version 2 and later so that
//! the next release can write new features in version 2 while nodes of
//! this one still run: they deliver what they understand, skip the rest and
//! say so (`chatgate_bridge_skipped_total{reason}`, a log line per reason).
//! Every release keeps writing plain frames in version 1 (the rule that
//! keeps v1 chat working in any mixed cluster), and uses version 2 only for
//! an event that needs a bit or field version 1 cannot carry.
//!
//! A disconnect order (bit 4, from the server API, docs/protocol.md §10):
//! only_user is the user whose sockets close, the conversation id is the
//! conversation (0: all of the user's sockets) and the payload is the close
//! code as a big-endian u16. It is published on the heartbeat channel
//! `{prefix}:nodes`, which every node subscribes, never on a conversation
//! channel. A node built before bit 4 existed reads only 8-byte heartbeats
//! there and ignores anything longer.
//!
//! Pure code: no I/O, no allocation on decode (the decoded header borrows the
//! input). Must never panic on malformed input: every read is bounds-checked
//! and reported as an [`EnvelopeError`].

use crate::audience::Audience;

/// The layout version this build writes.
pub const VERSION: u8 = 1;
/// The first version with a header length and required/optional flags.
const EXTENSIBLE: u8 = 2;

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

/// What a node reads: the newest version it frames, and the flags (version
/// 1's, version 2's required ones: the same bits) and optional flags it
/// knows. Production nodes read [`Reads::CURRENT`]; the others describe
/// earlier releases, to test mixed clusters (`BridgeConfig::envelopes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reads {
    pub version: u8,
    pub flags: u8,
    pub optional: u8,
}

impl Reads {
    /// This build.
    pub const CURRENT: Reads = Reads {
        version: EXTENSIBLE,
        flags: KNOWN_FLAGS,
        optional: 0,
    };
    /// The release before this one: version 1 only, flags 0–4.
    pub const PREVIOUS: Reads = Reads {
        version: 1,
        flags: KNOWN_FLAGS,
        optional: 0,
    };
    /// Releases before call signals and presence: version 1, flags 0–1.
    pub const BEFORE_PRESENCE: Reads = Reads {
        version: 1,
        flags: FLAG_EXCEPT_USER | FLAG_V2_ONLY,
        optional: 0,
    };

    /// Whether a node reading this could have written `header` (a node
    /// emulating an earlier release publishes only what that release knew).
    pub fn can_write(self, header: &Header<'_>) -> bool {
        flags(header) & !self.flags == 0
    }
}

/// Why an envelope was skipped (the `reason` label of
/// `chatgate_bridge_skipped_total`). [`Skip::Optional`] is never a
/// [`Read::Skip`]: such an envelope is delivered without the optional part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// A version this node does not frame (only nodes emulating version-1
    /// releases meet one).
    Version,
    /// Version 1 with a flag this node does not know.
    Flags,
    /// Version 2 or later with a required flag this node does not know.
    Required,
    /// Delivered, an optional flag (and its field) left out.
    Optional,
}

impl Skip {
    pub const ALL: [Skip; 4] = [Skip::Version, Skip::Flags, Skip::Required, Skip::Optional];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Version => "version",
            Skip::Flags => "flags",
            Skip::Required => "required",
            Skip::Optional => "optional",
        }
    }
}

/// What a reader made of a well-framed envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// Understood: the header, where the payload starts, the writer's
    /// version, and whether an optional part was left out.
    Event {
        header: Header<'a>,
        payload_at: usize,
        version: u8,
        partial: bool,
    },
    /// Needs something this reader does not know.
    Skip {
        reason: Skip,
        version: u8,
        /// The publishing node, when the reader could frame that far.
        node_id: Option<&'a [u8]>,
    },
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
    #[error("envelope header length {0} does not cover its fields")]
    HeaderLength(usize),
    /// (From [`decode`], in tests: a [`Read::Skip`] or a partial read.)
    #[cfg(test)]
    #[error("envelope skipped ({})", .0.label())]
    Skipped(Skip),
}

/// The version-1 flags `header` is written with.
fn flags(header: &Header<'_>) -> u8 {
    let a = header.audience;
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    flag(a.except_user.is_some(), FLAG_EXCEPT_USER)
        | flag(a.v2_only, FLAG_V2_ONLY)
        | flag(a.only_user.is_some(), FLAG_ONLY_USER)
        | flag(header.presence, FLAG_PRESENCE)
        | flag(header.disconnect, FLAG_DISCONNECT)
}

/// Length of the encoded header, for sizing buffers.
pub fn header_len(header: &Header<'_>) -> usize {
    let a = header.audience;
    let users = 8 * (usize::from(a.except_user.is_some()) + usize::from(a.only_user.is_some()));
    1 + 1 + header.node_id.len() + 8 + 8 + 8 + 1 + users
}

/// Appends the (version 1) envelope of `header` + `payload` to `out`.
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
    out.push(flags(header));
    users(header, out);
    out.extend_from_slice(payload);
}

fn users(header: &Header<'_>, out: &mut Vec<u8>) {
    let a = header.audience;
    for user in [a.except_user, a.only_user].into_iter().flatten() {
        out.extend_from_slice(&user.to_be_bytes());
    }
}

/// Reads an envelope as a node reading `reads` does (see the module header).
pub fn read(buf: &[u8], reads: Reads) -> Result<Read<'_>, EnvelopeError> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u8("version").map_err(|_| EnvelopeError::Empty)?;
    match version {
        0 => Err(EnvelopeError::UnknownVersion(0)),
        v if v > reads.version && reads.version < EXTENSIBLE => Ok(Read::Skip {
            reason: Skip::Version,
            version: v,
            node_id: None,
        }),
        1 => read_v1(r, reads),
        v => read_extensible(r, v, reads),
    }
}

fn read_v1(mut r: Reader<'_>, reads: Reads) -> Result<Read<'_>, EnvelopeError> {
    let (node_id, instance, seq, conversation_id) = r.origin()?;
    let flags = r.u8("flags")?;
    if flags & !reads.flags != 0 {
        return Ok(Read::Skip {
            reason: Skip::Flags,
            version: 1,
            node_id: Some(node_id),
        });
    }
    let header = r.routing(node_id, instance, seq, conversation_id, flags)?;
    Ok(Read::Event {
        header,
        payload_at: r.pos,
        version: 1,
        partial: false,
    })
}

fn read_extensible(
    mut r: Reader<'_>,
    version: u8,
    reads: Reads,
) -> Result<Read<'_>, EnvelopeError> {
    let raw = r.bytes(2, "header length")?;
    let header_end = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
    if header_end > r.buf.len() {
        return Err(EnvelopeError::Truncated("header"));
    }
    // Everything from here on is read within the header.
    r.buf = &r.buf[..header_end];
    let (node_id, instance, seq, conversation_id) = r.origin()?;
    let required = r.u8("required flags")?;
    let optional = r.u8("optional flags")?;
    if required & !reads.flags != 0 {
        return Ok(Read::Skip {
            reason: Skip::Required,
            version,
            node_id: Some(node_id),
        });
    }
    let header = r
        .routing(node_id, instance, seq, conversation_id, required)
        .map_err(|_| EnvelopeError::HeaderLength(header_end))?;
    Ok(Read::Event {
        header,
        payload_at: header_end,
        version,
        partial: optional & !reads.optional != 0,
    })
}

/// Splits an envelope this build fully understands into its header and
/// the offset where the payload starts.
#[cfg(test)]
pub fn decode(buf: &[u8]) -> Result<(Header<'_>, usize), EnvelopeError> {
    match read(buf, Reads::CURRENT)? {
        Read::Event {
            header,
            payload_at,
            partial: false,
            ..
        } => Ok((header, payload_at)),
        Read::Event { .. } => Err(EnvelopeError::Skipped(Skip::Optional)),
        Read::Skip { reason, .. } => Err(EnvelopeError::Skipped(reason)),
    }
}

/// What a later release adds to an extensible envelope (tests only: this
/// build writes version 1; see the module header).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Extension<'a> {
    /// Required bits beyond version 1's flags.
    pub required: u8,
    pub optional: u8,
    /// Fields of those bits, after the known ones.
    pub fields: &'a [u8],
}

/// Appends an extensible envelope of `version` (≥ 2), as a later release
/// writes it (tests only).
#[cfg(test)]
pub fn encode_extensible(
    version: u8,
    header: &Header<'_>,
    extension: Extension<'_>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.push(version);
    out.extend_from_slice(&[0, 0]);
    out.push(header.node_id.len() as u8);
    out.extend_from_slice(header.node_id);
    out.extend_from_slice(&header.instance.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    out.extend_from_slice(&header.conversation_id.to_be_bytes());
    out.push(flags(header) | extension.required);
    out.push(extension.optional);
    users(header, out);
    out.extend_from_slice(extension.fields);
    let h = u16::try_from(out.len() - start).expect("header under 64 KiB");
    out[start + 1..start + 3].copy_from_slice(&h.to_be_bytes());
    out.extend_from_slice(payload);
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

    /// Node id, instance, sequence, conversation: the same in every version.
    fn origin(&mut self) -> Result<(&'a [u8], u64, u64, i64), EnvelopeError> {
        let node_len = usize::from(self.u8("node id length")?);
        if node_len == 0 {
            return Err(EnvelopeError::EmptyNodeId);
        }
        let node_id = self.bytes(node_len, "node id")?;
        let instance = self.u64("instance")?;
        let seq = self.u64("sequence")?;
        let conversation_id = self.u64("conversation id")? as i64;
        Ok((node_id, instance, seq, conversation_id))
    }

    /// The user fields of `flags` (known ones only), and the header.
    fn routing(
        &mut self,
        node_id: &'a [u8],
        instance: u64,
        seq: u64,
        conversation_id: i64,
        flags: u8,
    ) -> Result<Header<'a>, EnvelopeError> {
        let except_user = if flags & FLAG_EXCEPT_USER != 0 {
            Some(self.u64("except_user")? as i64)
        } else {
            None
        };
        let only_user = if flags & FLAG_ONLY_USER != 0 {
            Some(self.u64("only_user")? as i64)
        } else {
            None
        };
        Ok(Header {
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
        })
    }
}

#[cfg(test)]
mod tests;
