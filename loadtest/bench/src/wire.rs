//! The client side of WebSocket framing, sans I/O.
//!
//! Owns: the opening handshake request and the parsing of its answer
//! (status, `Sec-WebSocket-Accept` check), an incremental reader of server
//! frames ([`FrameReader`]: unmasked frames, fragmented messages
//! reassembled, control frames reported), and the client frames it sends,
//! each with a mask (RFC 6455 requires it of a client), encoded by
//! tungstenite's `Frame::format`.
//!
//! Complete frames are parsed straight out of the caller's input slice;
//! only a frame split across two reads is copied (into a small carry
//! buffer), so a busy socket costs no copy per frame. Measured against
//! tungstenite in one run (`benches/wire.rs`; figures, minimum over
//! interleaved rounds, in `loadtest/RESULTS.md`): this reader takes about
//! 12 ns per 230-byte server message where tungstenite's `FrameSocket`
//! takes 89 and its `WebSocketContext` 129, so it stays; tungstenite's
//! frame encoder takes 66 ns per 100-byte client frame where the
//! hand-written one this module had took 74, so sending uses tungstenite's.
//!
//! Must never: send an unmasked frame, accept a masked server frame, or
//! buffer more than the configured largest message.

use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::Bytes;

/// Opcodes (RFC 6455 §5.2).
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest server frame header: 2 bytes + 8 bytes of length (no mask).
const MAX_HEADER: usize = 10;

/// A framing violation by the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("server frame is masked")]
    MaskedServerFrame,
    #[error("reserved bits set")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    BadOpcode(u8),
    #[error("control frame longer than 125 bytes or fragmented")]
    BadControlFrame,
    #[error("continuation frame without a message in progress, or a new message inside one")]
    BadFragmentation,
    #[error("message of {0} bytes exceeds the limit")]
    TooBig(u64),
    #[error("malformed HTTP response head: {0}")]
    BadResponse(String),
    #[error("Sec-WebSocket-Accept does not match the key")]
    BadAccept,
}

/// One thing the server said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message.
    Text(&'a [u8]),
    /// A complete binary message (the gateway never sends one).
    Binary,
    /// A Ping control frame; answer it with [`encode_pong`].
    Ping(&'a [u8]),
    /// A Pong control frame.
    Pong,
    /// A Close frame and its status code, if it had one.
    Close(Option<u16>),
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: u64,
}

/// How many header bytes a frame starting with `b` has (2 until known).
fn header_len_hint(b: &[u8]) -> usize {
    match b.get(1).map(|l| l & 0x7f) {
        Some(126) => 4,
        Some(127) => MAX_HEADER,
        _ => 2,
    }
}

/// Parses a server frame header; `None` when more bytes are needed.
fn parse_header(b: &[u8]) -> Result<Option<Header>, WireError> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x70 != 0 {
        return Err(WireError::ReservedBits);
    }
    if b[1] & 0x80 != 0 {
        return Err(WireError::MaskedServerFrame);
    }
    let (header_len, payload_len) = match b[1] & 0x7f {
        126 if b.len() < 4 => return Ok(None),
        126 => (4, u64::from(u16::from_be_bytes([b[2], b[3]]))),
        127 if b.len() < 10 => return Ok(None),
        127 => (
            10,
            u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
        ),
        n => (2, u64::from(n)),
    };
    let h = Header {
        fin: b[0] & 0x80 != 0,
        opcode: b[0] & 0x0f,
        header_len,
        payload_len,
    };
    if h.opcode >= OP_CLOSE && (!h.fin || h.payload_len > 125) {
        return Err(WireError::BadControlFrame);
    }
    Ok(Some(h))
}

/// Incremental reader of server frames.
#[derive(Debug)]
pub struct FrameReader {
    /// The start of a frame that the previous input did not complete.
    carry: Vec<u8>,
    /// A fragmented message being reassembled.
    frag: Vec<u8>,
    /// Opcode of the message in `frag`, if one is in progress.
    frag_op: Option<u8>,
    /// Largest message accepted.
    max: u64,
}

impl FrameReader {
    /// A reader that refuses messages above `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            carry: Vec::new(),
            frag: Vec::new(),
            frag_op: None,
            max: max_message as u64,
        }
    }

    /// Whether a partial frame is waiting for more bytes.
    pub fn has_partial(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Parses every frame `input` completes and reports each message or
    /// control frame to `on_event`, in order.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), WireError> {
        if !self.carry.is_empty() {
            input = self.complete_carry(input, on_event)?;
            if !self.carry.is_empty() {
                return Ok(());
            }
        }
        while let Some(h) = parse_header(input)? {
            let total = self.frame_len(&h)?;
            if input.len() < total {
                break;
            }
            self.dispatch(h, &input[h.header_len..total], on_event)?;
            input = &input[total..];
        }
        self.carry.extend_from_slice(input);
        Ok(())
    }

    /// Completes the carried frame from the front of `input`; returns the rest.
    fn complete_carry<'i>(
        &mut self,
        mut input: &'i [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<&'i [u8], WireError> {
        let h = loop {
            if let Some(h) = parse_header(&self.carry)? {
                break h;
            }
            // Take only header bytes, never the payload of a tiny frame.
            let take = header_len_hint(&self.carry)
                .saturating_sub(self.carry.len())
                .min(input.len());
            if take == 0 {
                return Ok(input);
            }
            self.carry.extend_from_slice(&input[..take]);
            input = &input[take..];
        };
        let total = self.frame_len(&h)?;
        let take = (total - self.carry.len()).min(input.len());
        self.carry.extend_from_slice(&input[..take]);
        input = &input[take..];
        if self.carry.len() == total {
            let mut carried = std::mem::take(&mut self.carry);
            self.dispatch(h, &carried[h.header_len..], on_event)?;
            carried.clear();
            self.carry = carried;
        }
        Ok(input)
    }

    /// Header plus payload length of a frame, checked against the limit.
    fn frame_len(&self, h: &Header) -> Result<usize, WireError> {
        let message = h.payload_len + self.frag.len() as u64;
        if message > self.max {
            return Err(WireError::TooBig(message));
        }
        Ok(h.header_len + h.payload_len as usize)
    }

    /// Acts on one complete frame.
    fn dispatch(
        &mut self,
        h: Header,
        payload: &[u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), WireError> {
        match h.opcode {
            OP_TEXT | OP_BINARY if self.frag_op.is_some() => Err(WireError::BadFragmentation),
            OP_TEXT | OP_BINARY if h.fin => {
                on_event(data_event(h.opcode, payload));
                Ok(())
            }
            OP_TEXT | OP_BINARY => {
                self.frag_op = Some(h.opcode);
                self.frag.extend_from_slice(payload);
                Ok(())
            }
            OP_CONT => self.continuation(h.fin, payload, on_event),
            OP_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                on_event(Event::Close(code));
                Ok(())
            }
            OP_PING => {
                on_event(Event::Ping(payload));
                Ok(())
            }
            OP_PONG => {
                on_event(Event::Pong);
                Ok(())
            }
            op => Err(WireError::BadOpcode(op)),
        }
    }

    fn continuation(
        &mut self,
        fin: bool,
        payload: &[u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), WireError> {
        let op = self.frag_op.ok_or(WireError::BadFragmentation)?;
        self.frag.extend_from_slice(payload);
        if fin {
            let mut whole = std::mem::take(&mut self.frag);
            on_event(data_event(op, &whole));
            whole.clear();
            self.frag = whole;
            self.frag_op = None;
        }
        Ok(())
    }
}

fn data_event(op: u8, payload: &[u8]) -> Event<'_> {
    if op == OP_TEXT {
        Event::Text(payload)
    } else {
        Event::Binary
    }
}

/// Appends one final client frame with `mask` (tungstenite encodes it).
pub fn encode_client(op: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let header = FrameHeader {
        is_final: true,
        opcode: op.into(),
        mask: Some(mask),
        ..FrameHeader::default()
    };
    Frame::from_payload(header, Bytes::copy_from_slice(payload))
        .format(out)
        .expect("writing into a Vec cannot fail");
}

/// Appends a masked text frame.
pub fn encode_text(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    encode_client(OP_TEXT, payload, mask, out);
}

/// Appends a masked Pong echoing a Ping's payload.
pub fn encode_pong(ping_payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    encode_client(OP_PONG, ping_payload, mask, out);
}

/// Appends a masked Close frame with `code`.
pub fn encode_close(code: u16, mask: [u8; 4], out: &mut Vec<u8>) {
    encode_client(OP_CLOSE, &code.to_be_bytes(), mask, out);
}

/// A fresh `Sec-WebSocket-Key`.
pub fn new_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// The opening handshake request for `path` on `host`.
pub fn upgrade_request(host: &str, path: &str, key: &str, v2: bool) -> Vec<u8> {
    let protocol = if v2 {
        "Sec-WebSocket-Protocol: chatgate.v2\r\n"
    } else {
        ""
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
    )
    .into_bytes()
}

/// The server's answer to the opening handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The head is not complete yet.
    Incomplete,
    /// `101 Switching Protocols` with the right accept key; frames start at `head_len`.
    Upgraded { head_len: usize },
    /// Any other status (the request was refused).
    Refused { status: u16 },
}

/// Parses the response head in `buf` and checks it against `key`.
pub fn parse_answer(buf: &[u8], key: &str) -> Result<Answer, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(Answer::Incomplete),
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(WireError::BadResponse(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Ok(Answer::Refused { status });
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accepted = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == expected.as_bytes()
    });
    if !accepted {
        return Err(WireError::BadAccept);
    }
    Ok(Answer::Upgraded { head_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | op];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n if n <= 65535 => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Text(Vec<u8>),
        Binary,
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn collect(reader: &mut FrameReader, chunks: &[&[u8]]) -> Result<Vec<Owned>, WireError> {
        let mut out = Vec::new();
        for c in chunks {
            reader.feed(c, &mut |e| {
                out.push(match e {
                    Event::Text(t) => Owned::Text(t.to_vec()),
                    Event::Binary => Owned::Binary,
                    Event::Ping(p) => Owned::Ping(p.to_vec()),
                    Event::Pong => Owned::Pong,
                    Event::Close(c) => Owned::Close(c),
                })
            })?;
        }
        Ok(out)
    }

    fn stream() -> (Vec<u8>, Vec<Owned>) {
        let big = vec![b'x'; 300];
        let huge = vec![b'y'; 70_000];
        let mut bytes = Vec::new();
        bytes.extend(server_frame(OP_TEXT, true, b"hello"));
        bytes.extend(server_frame(OP_PING, true, b"p"));
        bytes.extend(server_frame(OP_TEXT, true, &big));
        bytes.extend(server_frame(OP_TEXT, false, b"frag"));
        bytes.extend(server_frame(OP_PONG, true, b""));
        bytes.extend(server_frame(OP_CONT, true, b"mented"));
        bytes.extend(server_frame(OP_TEXT, true, &huge));
        bytes.extend(server_frame(OP_BINARY, true, b"b"));
        bytes.extend(server_frame(OP_TEXT, true, b""));
        bytes.extend(server_frame(OP_CLOSE, true, &1001u16.to_be_bytes()));
        let expected = vec![
            Owned::Text(b"hello".to_vec()),
            Owned::Ping(b"p".to_vec()),
            Owned::Text(big),
            Owned::Pong,
            Owned::Text(b"fragmented".to_vec()),
            Owned::Text(huge),
            Owned::Binary,
            Owned::Text(Vec::new()),
            Owned::Close(Some(1001)),
        ];
        (bytes, expected)
    }

    #[test]
    fn whole_stream_at_once() {
        let (bytes, expected) = stream();
        let mut r = FrameReader::new(1 << 20);
        assert_eq!(collect(&mut r, &[&bytes]).unwrap(), expected);
        assert!(!r.has_partial());
    }

    #[test]
    fn every_split_point_and_byte_by_byte() {
        let (bytes, expected) = stream();
        for cut in (0..bytes.len()).step_by(7).chain(0..40) {
            let mut r = FrameReader::new(1 << 20);
            let (a, b) = bytes.split_at(cut);
            assert_eq!(collect(&mut r, &[a, b]).unwrap(), expected, "cut at {cut}");
        }
        let mut r = FrameReader::new(1 << 20);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(collect(&mut r, &singles).unwrap(), expected);
        let mut r = FrameReader::new(1 << 20);
        let triples: Vec<&[u8]> = bytes.chunks(3).collect();
        assert_eq!(collect(&mut r, &triples).unwrap(), expected);
    }

    #[test]
    fn violations() {
        let mut r = FrameReader::new(100);
        let mut masked = server_frame(OP_TEXT, true, b"a");
        masked[1] |= 0x80;
        assert_eq!(
            collect(&mut r, &[&masked]),
            Err(WireError::MaskedServerFrame)
        );
        let mut r = FrameReader::new(100);
        let big = server_frame(OP_TEXT, true, &[b'z'; 101]);
        assert_eq!(collect(&mut r, &[&big]), Err(WireError::TooBig(101)));
        let mut r = FrameReader::new(100);
        let cont = server_frame(OP_CONT, true, b"a");
        assert_eq!(collect(&mut r, &[&cont]), Err(WireError::BadFragmentation));
        let mut r = FrameReader::new(100);
        let frag_ping = server_frame(OP_PING, false, b"a");
        assert_eq!(
            collect(&mut r, &[&frag_ping]),
            Err(WireError::BadControlFrame)
        );
        let mut r = FrameReader::new(100);
        assert_eq!(collect(&mut r, &[&[0x83, 0]]), Err(WireError::BadOpcode(3)));
        let mut r = FrameReader::new(100);
        assert_eq!(collect(&mut r, &[&[0xC1, 0]]), Err(WireError::ReservedBits));
    }

    #[test]
    fn client_frames_are_masked_and_tungstenite_reads_them() {
        use std::io::Cursor;
        use tungstenite::protocol::frame::FrameHeader;
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_text(&payload, [1, 2, 3, 4], &mut out);
            let mut cur = Cursor::new(&out[..]);
            let (header, n) = FrameHeader::parse(&mut cur).unwrap().unwrap();
            assert_eq!(n, len as u64);
            let mask = header.mask.expect("client frames are masked");
            assert_eq!(mask, [1, 2, 3, 4]);
            let start = cur.position() as usize;
            let unmasked: Vec<u8> = out[start..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i & 3])
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn control_frames_are_masked_with_their_opcode() {
        let mask = [9, 8, 7, 6];
        let mut out = Vec::new();
        encode_close(1000, mask, &mut out);
        let code = 1000u16.to_be_bytes();
        assert_eq!(
            out,
            [0x88, 0x82, 9, 8, 7, 6, code[0] ^ 9, code[1] ^ 8],
            "close"
        );
        out.clear();
        encode_pong(b"p", mask, &mut out);
        assert_eq!(out, [0x8A, 0x81, 9, 8, 7, 6, b'p' ^ 9], "pong");
    }

    #[test]
    fn handshake_answer() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        let head_len = ok.len() - 4;
        assert_eq!(parse_answer(ok, key), Ok(Answer::Upgraded { head_len }));
        assert_eq!(parse_answer(&ok[..20], key), Ok(Answer::Incomplete));
        let bad = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\r\n";
        assert_eq!(parse_answer(bad, key), Err(WireError::BadAccept));
        let refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_answer(refused, key),
            Ok(Answer::Refused { status: 429 })
        );
        let req =
            String::from_utf8(upgrade_request("h:1", "/ws/chat/1/?token=t", key, false)).unwrap();
        assert!(req.starts_with("GET /ws/chat/1/?token=t HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
    }
}
