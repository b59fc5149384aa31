//! Opening sockets on a [`TestGateway`]: TCP, WebSocket upgrades (v1 and
//! v2, on this node or another), and raw HTTP requests.

use std::io::Write;
use std::net::TcpStream;

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};

use super::{
    read_head, status_of, upgrade_request, Client, TestGateway, User, READ_TIMEOUT, V2_PROTOCOL,
};

/// Sockets to the gateway.
impl TestGateway {
    /// A TCP connection to the gateway with read/write timeouts.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("tcp connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A TCP connection whose receive buffer is set to `rcvbuf` bytes before
    /// connecting (a slow reader fills up fast).
    pub fn tcp_small_rcvbuf(&self, rcvbuf: usize) -> TcpStream {
        let addr = self.addr();
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        sock.connect(&addr.into()).expect("tcp connect");
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        s
    }

    /// `user` joins `conversation` over an already connected `stream`.
    pub fn connect_over(&self, stream: TcpStream, conversation: i64, user: &User) -> Client {
        let url = format!(
            "ws://{}/ws/chat/{conversation}/?token={}",
            self.addr(),
            user.token
        );
        let (ws, _) = tungstenite::client::client(url, stream).expect("upgrade");
        let mut c = Client { ws };
        c.expect_established();
        c
    }

    /// A WebSocket handshake on `path` (e.g. `/ws/chat/7/?token=..`) with
    /// extra headers; the error when the server does not answer 101.
    pub fn try_open(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut req = format!("ws://{}{}", self.addr(), path)
            .into_client_request()
            .expect("request");
        for (k, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        match tungstenite::client::client(req, self.tcp()) {
            Ok((ws, _response)) => Ok(Client { ws }),
            Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                panic!("handshake on {path} timed out")
            }
        }
    }

    /// A socket of `user` in `conversation` on the gateway at `addr` (another
    /// node of a cluster on this test's database), after
    /// `connection_established`; v2 sockets also after `read_state` and
    /// `presence_state`, which is returned (`Null` for v1).
    pub fn connect_at(
        &self,
        addr: std::net::SocketAddr,
        conversation: i64,
        user: &User,
        v2: bool,
    ) -> (Client, Value) {
        let mut req = format!("ws://{addr}/ws/chat/{conversation}/?token={}", user.token)
            .into_client_request()
            .expect("request");
        if v2 {
            req.headers_mut().append(
                HeaderName::from_static("sec-websocket-protocol"),
                HeaderValue::from_static("chatgate.v2"),
            );
        }
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let (ws, _) = tungstenite::client::client(req, stream).expect("upgrade");
        let mut c = Client { ws };
        c.expect_established();
        if !v2 {
            return (c, Value::Null);
        }
        let state = c.recv_all_json();
        assert_eq!(state["type"], "read_state", "{state}");
        let presence = c.recv_all_json();
        assert_eq!(presence["type"], "presence_state", "{presence}");
        (c, presence)
    }

    /// A completed upgrade (101) on `path`; nothing read yet.
    pub fn open(&self, path: &str, headers: &[(&str, &str)]) -> Client {
        self.try_open(path, headers)
            .unwrap_or_else(|e| panic!("upgrade on {path} failed: {e:?}"))
    }

    /// Upgrade on `path` and assert the first frame is `connection_established`.
    pub fn connect_path(&self, path: &str, headers: &[(&str, &str)]) -> Client {
        let mut c = self.open(path, headers);
        c.expect_established();
        c
    }

    /// `user` joins `conversation` with a query token.
    pub fn connect(&self, conversation: i64, user: &User) -> Client {
        self.connect_path(
            &format!("/ws/chat/{conversation}/?token={}", user.token),
            &[],
        )
    }

    /// A protocol v2 socket of `user` (`query` is appended to the token,
    /// e.g. `&since=5`), after `connection_established`; what follows
    /// (replay, `resumed`, `read_state`) is left unread.
    pub fn open_v2(&self, conversation: i64, user: &User, query: &str) -> Client {
        self.connect_path(
            &format!("/ws/chat/{conversation}/?token={}{query}", user.token),
            &[V2_PROTOCOL],
        )
    }

    /// A protocol v2 socket of `user`, after `connection_established`,
    /// `read_state` and `presence_state`; returns it and the `read_state` receipts.
    pub fn connect_v2_state(&self, conversation: i64, user: &User) -> (Client, Value) {
        let (c, receipts, _) = self.connect_v2_presence(conversation, user);
        (c, receipts)
    }

    /// As [`connect_v2_state`](Self::connect_v2_state), also returning the
    /// `presence_state` frame.
    pub fn connect_v2_presence(&self, conversation: i64, user: &User) -> (Client, Value, Value) {
        let mut c = self.open_v2(conversation, user, "");
        let state = c.recv_all_json();
        assert_eq!(
            state["type"], "read_state",
            "after connection_established: {state}"
        );
        let presence = c.recv_all_json();
        assert_eq!(
            presence["type"], "presence_state",
            "after read_state: {presence}"
        );
        (c, state["receipts"].clone(), presence)
    }

    /// A protocol v2 socket of `user`, ready for live events.
    pub fn connect_v2(&self, conversation: i64, user: &User) -> Client {
        self.connect_v2_state(conversation, user).0
    }

    /// Upgrade on `path`, then assert the server closes with `code`.
    pub fn expect_rejected(&self, path: &str, headers: &[(&str, &str)], code: u16) {
        let mut c = self.open(path, headers);
        c.expect_close(code);
    }

    // ---- raw HTTP -------------------------------------------------------

    /// Sends `request` bytes and returns the response head (up to the blank
    /// line, or whatever arrived before the server closed).
    pub fn raw_request(&self, request: &[u8]) -> String {
        let mut s = self.tcp();
        s.write_all(request).expect("write request");
        read_head(&mut s).0
    }

    /// Status code the gateway answers an upgrade request on `path` with,
    /// after applying header overrides (`None` removes a default header).
    pub fn upgrade_status(&self, path: &str, overrides: &[(&str, Option<&str>)]) -> u16 {
        let head = self.raw_request(upgrade_request(path, overrides).as_bytes());
        status_of(&head)
    }

    /// A raw upgraded socket on `path`: the 101 head is consumed; returns the
    /// socket and any bytes read past the head.
    pub fn raw_upgrade(&self, path: &str) -> (TcpStream, Vec<u8>) {
        let mut s = self.tcp();
        s.write_all(upgrade_request(path, &[]).as_bytes()).unwrap();
        let (head, rest) = read_head(&mut s);
        assert_eq!(status_of(&head), 101, "raw upgrade on {path}: {head}");
        (s, rest)
    }
}
