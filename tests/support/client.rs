//! [`Client`]: a blocking WebSocket client that reads JSON frames with a
//! timeout, and what a test sends and expects through it.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::{User, READ_TIMEOUT};

/// A blocking WebSocket client (tungstenite) with a 5 s read timeout. It
/// answers WebSocket Pings by itself whenever it reads.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    /// The next message of any kind (pings included); panics on errors.
    pub fn next_message(&mut self) -> Message {
        match self.ws.read() {
            Ok(m) => m,
            Err(e) => panic!("reading from the gateway failed: {e:?}"),
        }
    }

    /// The very next frame must be `connection_established`.
    pub fn expect_established(&mut self) {
        match self.next_message() {
            Message::Text(t) => assert_eq!(
                parse(&t),
                json!({"type": "connection_established", "message": "Connected to chat"}),
                "first frame"
            ),
            other => panic!("first frame must be connection_established, got {other:?}"),
        }
    }

    /// The next JSON text message, skipping `{"type":"ping"}`, presence
    /// frames (`presence_state`, `presence`: see [`recv_all_json`](Self::recv_all_json))
    /// and WebSocket Ping/Pong.
    pub fn recv_json(&mut self) -> Value {
        loop {
            let v = self.recv_all_json();
            if !is_presence(&v) {
                return v;
            }
        }
    }

    /// The next JSON text message, presence frames included (pings skipped).
    pub fn recv_all_json(&mut self) -> Value {
        loop {
            match self.next_message() {
                Message::Text(t) => {
                    let v = parse(&t);
                    if v != json!({"type": "ping"}) {
                        return v;
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a JSON text message, got {other:?}"),
            }
        }
    }

    /// The next message must be exactly `{"type":"error","message":msg}`.
    pub fn expect_error(&mut self, msg: &str) {
        assert_eq!(self.recv_json(), json!({"type": "error", "message": msg}));
    }

    /// The next message must be a `new_message`; returns its `message` object.
    pub fn recv_new_message(&mut self) -> Value {
        let v = self.recv_json();
        assert_eq!(v["type"], "new_message", "expected new_message, got {v}");
        v["message"].clone()
    }

    /// Reads until a close frame arrives; asserts its code. Returns the reason.
    pub fn expect_close(&mut self, code: u16) -> String {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => {
                    assert_eq!(
                        u16::from(f.code),
                        code,
                        "close code (reason {:?})",
                        f.reason
                    );
                    let _ = self.ws.flush(); // send our close reply
                    return f.reason.to_string();
                }
                Ok(Message::Close(None)) => {
                    panic!("expected close {code}, got a close frame without code")
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(Message::Text(t)) if parse(&t) == json!({"type": "ping"}) => {}
                Ok(other) => panic!("expected close {code}, got {other:?}"),
                Err(e) => panic!("expected close {code}, the connection ended without it: {e:?}"),
            }
        }
    }

    /// The next JSON text message (pings skipped) if one arrives within `d`.
    pub fn try_recv_json(&mut self, d: Duration) -> Option<Value> {
        let deadline = Instant::now() + d;
        let got = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(t))
                    if parse(&t) != json!({"type": "ping"}) && !is_presence(&parse(&t)) =>
                {
                    break Some(parse(&t))
                }
                Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("expected a JSON text message, got {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    break None
                }
                Err(e) => panic!("reading from the gateway failed: {e:?}"),
            }
        };
        self.ws
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        got
    }

    /// Asserts nothing but pings and presence frames arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        self.silence(d, true)
    }

    /// Asserts nothing but pings arrives for `d` (presence frames included).
    pub fn expect_quiet(&mut self, d: Duration) {
        self.silence(d, false)
    }

    fn silence(&mut self, d: Duration, skip_presence: bool) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(Message::Text(t)) if parse(&t) == json!({"type": "ping"}) => {}
                Ok(Message::Text(t)) if skip_presence && is_presence(&parse(&t)) => {}
                Ok(other) => panic!("expected silence, got {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("expected silence, the connection failed: {e:?}"),
            }
        }
        self.ws
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
    }

    pub fn send(&mut self, m: Message) {
        self.ws.send(m).expect("send");
    }

    pub fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string());
    }

    pub fn send_text(&mut self, s: &str) {
        self.send(Message::text(s));
    }

    /// `{"type":"chat_message","content":content}`.
    pub fn chat(&mut self, content: &str) {
        self.send_json(json!({"type": "chat_message", "content": content}));
    }

    /// Writes bytes straight to the socket, bypassing tungstenite's framing.
    pub fn send_raw_frame(&mut self, bytes: &[u8]) {
        self.ws.flush().expect("flush");
        self.ws.get_mut().write_all(bytes).expect("raw write");
    }

    pub fn close(&mut self, code: u16) {
        self.ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            }))
            .expect("send close");
    }
}

/// Queues every text and sends them in one flush (a burst).
pub fn send_burst(c: &mut Client, texts: impl IntoIterator<Item = String>) {
    for t in texts {
        c.ws.write(Message::text(t)).expect("queue a frame");
    }
    c.ws.flush().expect("flush the burst");
}

/// docs/protocol.md §3 (order): `rounds` × (`chat_message` "round i", then `typing`
/// alternating true/false, so that every typing frame is a change of
/// state), sent as one burst.
pub fn send_chat_then_typing(c: &mut Client, rounds: usize) {
    send_burst(
        c,
        (0..rounds).flat_map(|i| {
            [
                json!({"type": "chat_message", "content": format!("round {i}")}).to_string(),
                json!({"type": "typing", "is_typing": i % 2 == 0}).to_string(),
            ]
        }),
    );
}

/// What another user's socket must see of [`send_chat_then_typing`]: each
/// round's `new_message`, then the typing that followed it, never the other
/// way round. Returns the message ids, which must increase.
pub fn expect_chat_then_typing(c: &mut Client, typist: &User, rounds: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let m = c.recv_json();
        assert_eq!(
            m["type"], "new_message",
            "round {i}: expected the message first, got {m}"
        );
        assert_eq!(m["message"]["content"], format!("round {i}"), "round {i}");
        let t = c.recv_json();
        assert_eq!(
            t,
            json!({"type": "typing", "user_id": typist.id, "username": typist.username, "is_typing": i % 2 == 0}),
            "round {i}: the typing that followed the message"
        );
        let id = m["message"]["id"].as_i64().expect("id");
        assert!(ids.last().is_none_or(|&last| id > last), "ids increase");
        ids.push(id);
    }
    ids
}

/// Parses a text frame as JSON; panics with the text when it is not.
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("server sent invalid JSON {text:?}: {e}"))
}

/// Whether `v` is a presence frame (`presence_state` or `presence`, v2).
pub fn is_presence(v: &Value) -> bool {
    v["type"] == "presence" || v["type"] == "presence_state"
}
