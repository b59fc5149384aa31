//! The WebSocket layer of a session: tungstenite fed from memory.
//!
//! Owns the glue between the bytes a session reads and tungstenite's
//! `WebSocketContext`: feeding input and acting on every complete message,
//! protocol failures (1002 / 1007 / 1009, tungstenite sends none itself),
//! the close handshake, control frames (ping, pong, close) queued on the
//! socket's outbound path.
//!
//! Must never: read from or write to the socket itself (the session does),
//! or keep parsing a peer's input after a protocol error.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::{Error as WsError, Message};

use crate::close::CloseReason;
use crate::protocol::ReplyError;

use super::{Blocked, Session};

/// tungstenite's I/O: reads come from bytes already received, writes go to a
/// buffer that is then queued on the socket's outbound queue.
pub(super) struct MemIo<'a> {
    pub rd: &'a [u8],
    pub wr: Vec<u8>,
}

impl Read for MemIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rd.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Read::read(&mut self.rd, buf)
    }
}

impl Write for MemIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wr.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Session {
    /// Feeds bytes to tungstenite and acts on every complete message. Stops
    /// early, keeping the rest in `blocked`, when the store queue is full.
    pub(super) fn process_input(&mut self, input: &[u8]) {
        if self.life.discards_input() {
            return; // after a protocol error the rest of the input is discarded
        }
        let mut io = MemIo {
            rd: input,
            wr: Vec::new(),
        };
        loop {
            match self.ws.read(&mut io) {
                Ok(Message::Text(t)) => {
                    if let Err(request) = self.on_text(t.as_bytes()) {
                        self.blocked = Some(Box::new(Blocked {
                            request,
                            rest: io.rd.to_vec(),
                        }));
                        break;
                    }
                }
                Ok(Message::Binary(_)) => self.reply(ReplyError::BinaryNotSupported),
                Ok(Message::Close(frame)) => {
                    // tungstenite queued the reply; remember the peer's code.
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    self.life.peer_closed(code);
                }
                Ok(_) => {} // ping (pong is queued by tungstenite), pong
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.life.finish();
                    break;
                }
                Err(e) => {
                    self.ship(std::mem::take(&mut io.wr));
                    self.fail(&e);
                    return;
                }
            }
        }
        let _ = self.ws.flush(&mut io);
        self.ship(io.wr);
    }

    /// A protocol-level failure of the peer: close with the matching code
    /// and stop parsing its input.
    pub(super) fn fail(&mut self, e: &WsError) {
        let reason = match e {
            WsError::Capacity(_) => CloseReason::TooBig,
            WsError::Utf8(_) => CloseReason::InvalidPayload,
            WsError::Protocol(_) => CloseReason::ProtocolError,
            _ => CloseReason::Internal,
        };
        tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, reason = reason.label(), error = %e, "closing on peer error");
        self.begin_close(reason);
        self.life.stop_parsing();
    }

    /// Starts the close handshake with `reason` (once).
    pub(super) fn begin_close(&mut self, reason: CloseReason) {
        let now = std::time::Instant::now();
        if !self
            .life
            .begin_close(reason, now, &self.ctx.config().timeouts)
        {
            return;
        }
        if reason == CloseReason::SlowConsumer {
            self.peer.outbound.clear();
            self.ctx.metrics().slow_consumer();
            tracing::warn!(peer = %self.addr, user_id = self.peer.user_id, "slow consumer closed");
        }
        self.ctx.leave_member(&self.peer);
        self.peer.outbound.seal();
        let frame = CloseFrame {
            code: CloseCode::from(reason.code()),
            reason: "".into(),
        };
        let mut io = MemIo {
            rd: &[],
            wr: Vec::new(),
        };
        let _ = self.ws.close(&mut io, Some(frame));
        let _ = self.ws.flush(&mut io);
        self.ship(io.wr);
    }

    /// Sends a control message through tungstenite (keeps its state right).
    pub(super) fn ws_send(&mut self, msg: Message) {
        let mut io = MemIo {
            rd: &[],
            wr: Vec::new(),
        };
        let _ = self.ws.write(&mut io, msg);
        let _ = self.ws.flush(&mut io);
        self.ship(io.wr);
    }

    /// Queues bytes tungstenite produced (pong, close) on this socket.
    pub(super) fn ship(&self, wr: Vec<u8>) {
        if !wr.is_empty() {
            self.peer.outbound.push_control(Bytes::from(wr));
        }
    }
}
