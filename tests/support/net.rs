//! Operations: the admin listener over plain HTTP, client addresses other
//! than 127.0.0.1, handshakes through a proxy, ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};

use super::{status_of, Client, READ_TIMEOUT};

/// `GET path` on an HTTP/1.1 server that answers once and closes (the admin
/// listener): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(head), body.to_owned())
}

/// A TCP connection to `addr` from local address `from` (e.g. 127.0.0.2: a
/// second client IP on loopback), with the harness's timeouts.
pub fn tcp_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    sock.bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind to {from}: {e}"));
    sock.connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect from {from} to {addr}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A WebSocket handshake for `path` over `stream` to `addr` (a gateway or a
/// proxy in front of it) with extra headers; the error when the answer is
/// not 101.
pub fn ws_handshake(
    stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _response)) => Ok(Client { ws }),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("handshake on {path} via {addr} timed out")
        }
    }
}

/// The HTTP status a failed [`ws_handshake`] got (`None`: not an HTTP answer).
pub fn refused_status(e: &tungstenite::Error) -> Option<u16> {
    match e {
        tungstenite::Error::Http(r) => Some(r.status().as_u16()),
        _ => None,
    }
}

/// A port on 127.0.0.1 that nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The path of a conversation's WebSocket with a query token.
pub fn chat_path(conversation: i64, token: &str) -> String {
    format!("/ws/chat/{conversation}/?token={token}")
}
