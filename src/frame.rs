//! Server WebSocket frames, built once and shared.
//!
//! Owns the framing of server → client data frames: a payload is appended
//! after [`HEADER_ROOM`] reserved bytes, then the (unmasked) header is written
//! just in front of it and the result frozen into `Bytes`, so an event is
//! serialized and framed once, with no copy, and the same buffer can be
//! queued on any number of sockets. Control frames (pong, close) produced by
//! tungstenite do not pass through here.
//!
//! Must never: mask server frames, or copy a payload to frame it.

use bytes::Bytes;

/// Room reserved in front of a payload for the largest header (2 + 8 bytes).
pub const HEADER_ROOM: usize = 10;

const FIN: u8 = 0x80;
const OP_TEXT: u8 = 0x1;

/// A text frame under construction: append the payload to [`FrameBuf::payload`].
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// A frame buffer with room for a payload of about `payload_hint` bytes.
    pub fn with_capacity(payload_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_ROOM + payload_hint);
        buf.resize(HEADER_ROOM, 0);
        Self { buf }
    }

    /// The buffer to append the payload to. Only append; never truncate.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the header of a final text frame and freezes it.
    pub fn finish_text(self) -> Bytes {
        let mut buf = self.buf;
        debug_assert!(buf.len() >= HEADER_ROOM, "frame header room was truncated");
        let len = buf.len() - HEADER_ROOM;
        let start = write_header(&mut buf[..HEADER_ROOM], FIN | OP_TEXT, len);
        Bytes::from(buf).slice(start..)
    }
}

/// Writes the header right-aligned in `room`; returns where it starts.
fn write_header(room: &mut [u8], first: u8, len: usize) -> usize {
    if len < 126 {
        room[8] = first;
        room[9] = len as u8;
        8
    } else if len <= u16::MAX as usize {
        room[6] = first;
        room[7] = 126;
        room[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        6
    } else {
        room[0] = first;
        room[1] = 127;
        room[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        0
    }
}

/// The payload of a frame built by [`FrameBuf::finish_text`] (a slice of
/// the same buffer, no copy).
pub fn payload_of(frame: &Bytes) -> Bytes {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return Bytes::new(),
    };
    frame.slice(header.min(frame.len())..)
}

/// Frames a whole payload as one text frame (copies it; for constants and tests).
pub fn text(payload: &[u8]) -> Bytes {
    let mut f = FrameBuf::with_capacity(payload.len());
    f.payload().extend_from_slice(payload);
    f.finish_text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;

    fn reference(payload: &[u8]) -> Vec<u8> {
        let f = Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
        let mut v = Vec::new();
        f.format(&mut v).unwrap();
        v
    }

    #[test]
    fn matches_tungstenite_for_every_header_size() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert_eq!(&text(&payload)[..], &reference(&payload)[..], "len {len}");
        }
    }

    #[test]
    fn payload_of_recovers_the_payload() {
        for len in [0, 5, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(&payload_of(&text(&payload))[..], &payload[..], "len {len}");
        }
    }

    #[test]
    fn builder_appends_in_place() {
        let mut f = FrameBuf::with_capacity(16);
        f.payload().extend_from_slice(b"{\"type\":");
        f.payload().extend_from_slice(b"\"ping\"}");
        assert_eq!(&f.finish_text()[..], &reference(br#"{"type":"ping"}"#)[..]);
    }
}
