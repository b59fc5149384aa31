//! Client sockets on monoio: connecting (optionally from a chosen source
//! address), the opening handshake, and a [`Session`] that reads server
//! frames and writes masked client frames.
//!
//! Owns the I/O discipline: a session waits for readability (a cancellable
//! poll, safe to race against timers) and then reads synchronously with a
//! non-blocking `recv` (`sockio::try_recv`) into the thread's one [`BufPool`]
//! buffer, parsing before the next await: no read is ever in flight, so none
//! can be lost to a race and no buffer is pinned per socket. Writes are
//! queued in the session's outbox and flushed by its own task.
//!
//! Must never: hold the thread's read buffer across an await, or write an
//! unmasked frame.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::wire::{self, Answer, Event, FrameReader, WireError};
use crate::BenchError;
use chatgate::sockio;

/// Largest server message a load client accepts.
const MAX_MESSAGE: usize = 1 << 20;
/// Largest HTTP response head accepted.
const MAX_HEAD: usize = 8192;
/// Size of a thread's read buffer.
const READ_BUF: usize = 256 * 1024;
/// Most buffers one socket reads per wake-up.
const READS_PER_WAKE: usize = 4;

/// A gateway address parsed from `ws://host:port[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// Path prefix before `/ws/chat/…` (empty, or e.g. `/chat` behind a proxy).
    pub prefix: String,
}

impl Target {
    /// Parses and resolves a `ws://` URL (`wss://` is not supported).
    pub fn parse(url: &str) -> Result<Target, BenchError> {
        let bad = |why: &str| BenchError::Url(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| bad("only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("host resolves to no address"))?;
        Ok(Target {
            addr,
            host: authority.to_owned(),
            prefix: path.to_owned(),
        })
    }

    /// The request path of conversation `conv` with `token`.
    pub fn chat_path(&self, conv: i64, token: &str) -> String {
        format!("{}/ws/chat/{conv}/?token={token}", self.prefix)
    }
}

/// Parses a comma-separated list of `ws://` URLs.
pub fn parse_targets(urls: &str) -> Result<Vec<Target>, BenchError> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(Target::parse)
        .collect()
}

/// Why a socket did not become an admitted chat connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnFailure {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("handshake timed out")]
    Timeout,
    #[error("HTTP {0}")]
    Refused(u16),
    #[error("closed with {0}")]
    Closed(u16),
    #[error("closed without a code")]
    ClosedNoCode,
    #[error("connection reset or ended")]
    Eof,
    #[error("protocol: {0}")]
    Protocol(#[from] WireError),
    #[error("unexpected first message")]
    Unexpected,
}

impl ConnFailure {
    /// A bounded label to count failures by.
    pub fn label(&self) -> String {
        match self {
            Self::Connect(e) => format!("connect: {}", e.kind()),
            other => other.to_string(),
        }
    }
}

/// The read buffer shared by the sessions of one thread: filled by a
/// non-blocking `recv` and parsed before the next await, so one suffices.
#[derive(Clone)]
pub struct BufPool(Rc<RefCell<Box<[u8]>>>);

impl Default for BufPool {
    fn default() -> Self {
        Self(Rc::new(RefCell::new(vec![0; READ_BUF].into_boxed_slice())))
    }
}

/// Opens a TCP connection to `addr`, from `source` if given.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect_addr(addr).await?,
        Some(ip) => connect_from(addr, ip).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A non-blocking connect from a bound source address.
async fn connect_from(addr: SocketAddr, ip: IpAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // A duplicate descriptor to read SO_ERROR once the connect completes.
    let probe = socket.try_clone()?;
    let stream = TcpStream::from_std(socket.into())?;
    stream.writable(false).await?;
    match probe.take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// Connects and upgrades to the chat path (offering protocol v2 when
/// `v2`); returns the session, ready to read the first server message.
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    path: &str,
    timeout: Duration,
    v2: bool,
) -> Result<Session, ConnFailure> {
    let attempt = async {
        let stream = connect(target.addr, source)
            .await
            .map_err(ConnFailure::Connect)?;
        upgrade(stream, &target.host, path, v2).await
    };
    monoio::select! {
        r = attempt => r,
        _ = monoio::time::sleep(timeout) => Err(ConnFailure::Timeout),
    }
}

/// Sends the upgrade request and reads the answer.
async fn upgrade(
    mut stream: TcpStream,
    host: &str,
    path: &str,
    v2: bool,
) -> Result<Session, ConnFailure> {
    let key = wire::new_key();
    let (res, _) = stream
        .write_all(wire::upgrade_request(host, path, &key, v2))
        .await;
    res.map_err(ConnFailure::Connect)?;
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if head.len() == head.capacity() {
            if head.len() >= MAX_HEAD {
                return Err(WireError::BadResponse("response head too large".into()).into());
            }
            head.reserve(head.len());
        }
        let len = head.len();
        let cap = head.capacity();
        let (res, slice) = stream.read(head.slice_mut(len..cap)).await;
        head = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return Err(ConnFailure::Eof),
            Ok(_) => {}
        }
        match wire::parse_answer(&head, &key)? {
            Answer::Incomplete => continue,
            Answer::Refused { status } => return Err(ConnFailure::Refused(status)),
            Answer::Upgraded { head_len } => {
                let mut session = Session::new(stream);
                session.early = head.split_off(head_len);
                return Ok(session);
            }
        }
    }
}

/// What a read produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Bytes arrived and were parsed.
    Data,
    /// The peer closed the TCP connection, or it failed.
    Eof,
}

/// An upgraded client connection.
pub struct Session {
    stream: TcpStream,
    reader: FrameReader,
    /// Frames queued for the server.
    outbox: Vec<u8>,
    /// Frame bytes that arrived with the handshake answer.
    early: Vec<u8>,
    /// Whether a close frame was queued (nothing else is sent after it).
    close_sent: bool,
}

impl Session {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            reader: FrameReader::new(MAX_MESSAGE),
            outbox: Vec::new(),
            early: Vec::new(),
            close_sent: false,
        }
    }

    /// Waits until the socket can be read (cancellable: race it freely).
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable(false).await
    }

    /// Parses the frames that came with the handshake answer.
    pub fn take_early(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> Result<(), WireError> {
        let early = std::mem::take(&mut self.early);
        self.reader.feed(&early, on_event)
    }

    /// Reads what the socket holds (call after [`Session::readable`]) and
    /// parses it. Reads at most [`READS_PER_WAKE`] buffers, so one busy
    /// socket cannot starve the others; what is left wakes it again.
    pub fn read(
        &mut self,
        pool: &BufPool,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<ReadOutcome, WireError> {
        let mut buf = pool.0.borrow_mut();
        let fd = self.stream.as_raw_fd();
        for _ in 0..READS_PER_WAKE {
            match sockio::try_recv(fd, &mut buf) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => {
                    self.reader.feed(&buf[..n], on_event)?;
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(ReadOutcome::Eof),
            }
        }
        Ok(ReadOutcome::Data)
    }

    /// Queues a text frame.
    pub fn queue_text(&mut self, payload: &[u8]) {
        if !self.close_sent {
            wire::encode_text(payload, rand::random(), &mut self.outbox);
        }
    }

    /// Queues the Pong answering a Ping.
    pub fn queue_pong(&mut self, payload: &[u8]) {
        if !self.close_sent {
            wire::encode_pong(payload, rand::random(), &mut self.outbox);
        }
    }

    /// Queues a Close frame (once).
    pub fn queue_close(&mut self, code: u16) {
        if !self.close_sent {
            wire::encode_close(code, rand::random(), &mut self.outbox);
            self.close_sent = true;
        }
    }

    /// Whether a Close frame was queued.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.outbox);
        let (res, mut out) = self.stream.write_all(out).await;
        out.clear();
        self.outbox = out;
        res.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:8000").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8000");
        assert_eq!(t.chat_path(7, "abc"), "/ws/chat/7/?token=abc");
        let t = Target::parse("ws://127.0.0.1:9/chat/").unwrap();
        assert_eq!(t.chat_path(1, "x"), "/chat/ws/chat/1/?token=x");
        let t = Target::parse("ws://[::1]:8000").unwrap();
        assert_eq!(t.addr, "[::1]:8000".parse().unwrap());
        assert!(Target::parse("wss://127.0.0.1:1").is_err());
        assert!(Target::parse("ws://").is_err());
        assert_eq!(
            parse_targets("ws://127.0.0.1:1, ws://127.0.0.1:2")
                .unwrap()
                .len(),
            2
        );
    }
}
