//! One RESP3 connection of the bridge's own to a cluster primary, for
//! sharded subscriptions (the subscriber's; `cluster/subscriber.rs`).
//!
//! Why not redis-rs here: its connections take an unsolicited
//! `sunsubscribe` push (a slot moved, a failover) for the reply of the
//! command in flight, and its cluster client resubscribes several slots in
//! one `SSUBSCRIBE` (CROSSSLOT) and drops a channel for good on such a push
//! (TECH-NOTES §11). This connection keeps replies and pushes apart itself:
//! replies complete commands in order; `ssubscribe` / `sunsubscribe`
//! pushes confirm the (un)subscribe in flight for their channel; any other
//! `sunsubscribe` is reported as a loss ([`Event::Unsubscribed`]); messages
//! are reported as they come ([`Event::Message`]), straight from the reading
//! task; the end of the connection is reported once ([`Event::Closed`]),
//! after every message read before it.
//!
//! Runs as two tasks per connection on the side runtime: a reader (bytes →
//! frames) and the link itself (commands → bytes, frames → replies).
//! Dropping every [`Link`] handle closes the connection.
//!
//! Must never: wait without a time box (every command is bounded by the
//! caller's timeout), or match a push to a command that did not ask for it.

use std::collections::VecDeque;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::resp::{self, Resp};
use super::{bounded, NodeError};

/// A link's number among the subscriber's links (events carry it).
pub type LinkId = u64;

/// What a link reports on its own.
#[derive(Debug)]
pub enum Event {
    /// A sharded pub/sub message.
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// The server dropped a sharded subscription nobody asked it to drop
    /// (its slot moved, the node stopped being a primary).
    Unsubscribed { channel: Vec<u8> },
    /// The connection ended.
    Closed,
}

/// Where a link's events go.
pub type Events = mpsc::UnboundedSender<(LinkId, Event)>;

/// A handle on one connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct Link {
    id: LinkId,
    requests: mpsc::UnboundedSender<Request>,
}

/// Credentials and name for `HELLO 3`.
#[derive(Clone, Debug, Default)]
pub struct Hello {
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_name: String,
}

#[derive(Debug)]
struct Request {
    packed: Vec<u8>,
    expect: Expect,
}

#[derive(Debug)]
enum Expect {
    /// One reply frame.
    Reply(oneshot::Sender<Resp>),
    /// One `kind` push per channel (or one error reply).
    Confirm {
        kind: &'static [u8],
        channels: Vec<Vec<u8>>,
        done: oneshot::Sender<Result<(), String>>,
    },
}

impl Link {
    /// Connects to `addr` (`host:port`), says `HELLO 3` (with `hello`'s
    /// credentials and name), and starts the link's tasks.
    pub async fn open(
        addr: &str,
        hello: &Hello,
        id: LinkId,
        events: Events,
        timeout: std::time::Duration,
    ) -> Result<Link, NodeError> {
        let stream = bounded(timeout, "connect", TcpStream::connect(addr)).await?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(read, id, events.clone(), frames_tx));
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(write, rx, frames, id, events));
        let link = Link { id, requests };
        let reply = link.call(hello_command(hello), timeout).await?;
        if let Resp::Error(e) = reply {
            return Err(NodeError::Server(e));
        }
        Ok(link)
    }

    /// This link's number.
    pub fn id(&self) -> LinkId {
        self.id
    }

    /// Sends `cmd`; its reply (an error reply is `Resp::Error`).
    pub async fn call(
        &self,
        cmd: redis::Cmd,
        timeout: std::time::Duration,
    ) -> Result<Resp, NodeError> {
        let rx = self.send(cmd)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(NodeError::Closed),
            Err(_) => Err(NodeError::Timeout("reply")),
        }
    }

    /// Sends `cmd` without waiting; the reply arrives on the receiver.
    pub fn send(&self, cmd: redis::Cmd) -> Result<oneshot::Receiver<Resp>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.request(cmd.get_packed_command(), Expect::Reply(tx))?;
        Ok(rx)
    }

    /// `SSUBSCRIBE channels…` (one slot), confirmed for every channel.
    pub async fn ssubscribe(
        &self,
        channels: &[String],
        timeout: std::time::Duration,
    ) -> Result<(), NodeError> {
        self.confirmed("SSUBSCRIBE", b"ssubscribe", channels, timeout)
            .await
    }

    /// `SUNSUBSCRIBE channels…` (one slot), confirmed for every channel.
    pub async fn sunsubscribe(
        &self,
        channels: &[String],
        timeout: std::time::Duration,
    ) -> Result<(), NodeError> {
        self.confirmed("SUNSUBSCRIBE", b"sunsubscribe", channels, timeout)
            .await
    }

    async fn confirmed(
        &self,
        name: &str,
        kind: &'static [u8],
        channels: &[String],
        timeout: std::time::Duration,
    ) -> Result<(), NodeError> {
        if channels.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd(name);
        cmd.arg(channels);
        let (done, rx) = oneshot::channel();
        let expect = Expect::Confirm {
            kind,
            channels: channels.iter().map(|c| c.as_bytes().to_vec()).collect(),
            done,
        };
        self.request(cmd.get_packed_command(), expect)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(NodeError::Server(error)),
            Ok(Err(_)) => Err(NodeError::Closed),
            Err(_) => Err(NodeError::Timeout(name_of(kind))),
        }
    }

    fn request(&self, packed: Vec<u8>, expect: Expect) -> Result<(), NodeError> {
        self.requests
            .send(Request { packed, expect })
            .map_err(|_| NodeError::Closed)
    }
}

fn name_of(kind: &[u8]) -> &'static str {
    if kind == b"ssubscribe" {
        "SSUBSCRIBE"
    } else {
        "SUNSUBSCRIBE"
    }
}

fn hello_command(hello: &Hello) -> redis::Cmd {
    let mut cmd = redis::cmd("HELLO");
    cmd.arg(3);
    if let Some(password) = &hello.password {
        cmd.arg("AUTH")
            .arg(hello.username.as_deref().unwrap_or("default"))
            .arg(password);
    }
    cmd.arg("SETNAME").arg(&hello.client_name);
    cmd
}

/// The reading task: frames out of the socket; messages go straight to
/// the subscriber, everything else to the link task. Ends at EOF or on an
/// error (the link task then reports [`Event::Closed`]).
async fn read_frames(
    mut read: OwnedReadHalf,
    id: LinkId,
    events: Events,
    frames: mpsc::UnboundedSender<Resp>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match resp::parse(&buf) {
                Ok(Some((frame, used))) => {
                    let _ = buf.split_to(used);
                    match as_message(frame) {
                        Ok((channel, payload)) => {
                            let _ = events.send((id, Event::Message { channel, payload }));
                        }
                        Err(frame) => {
                            if frames.send(frame).is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "bridge: unreadable reply from a cluster node");
                    return;
                }
            }
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A `smessage` push as (channel, payload); any other frame back.
fn as_message(frame: Resp) -> Result<(Vec<u8>, Vec<u8>), Resp> {
    match frame {
        Resp::Push(mut items)
            if items.len() == 3 && items[0].as_bytes() == Some(b"smessage".as_slice()) =>
        {
            match (items.pop(), items.pop()) {
                (Some(Resp::Bulk(payload)), Some(Resp::Bulk(channel))) => Ok((channel, payload)),
                (payload, channel) => {
                    let mut items = vec![Resp::Bulk(b"smessage".to_vec())];
                    items.extend(channel);
                    items.extend(payload);
                    Err(Resp::Push(items))
                }
            }
        }
        other => Err(other),
    }
}

/// The link task: writes commands, matches replies and confirmations to
/// them in order, reports unsolicited unsubscribes and the end.
async fn run(
    mut write: OwnedWriteHalf,
    mut requests: mpsc::UnboundedReceiver<Request>,
    mut frames: mpsc::UnboundedReceiver<Resp>,
    id: LinkId,
    events: Events,
) {
    let mut pending: VecDeque<Expect> = VecDeque::new();
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { break };
                if write.write_all(&request.packed).await.is_err() {
                    break;
                }
                pending.push_back(request.expect);
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                if !on_frame(frame, &mut pending, id, &events) {
                    tracing::warn!("bridge: a cluster node answered out of turn; closing its link");
                    break;
                }
            }
        }
    }
    let _ = events.send((id, Event::Closed));
}

/// Handles one frame; false when it fits no command (the link is closed).
fn on_frame(frame: Resp, pending: &mut VecDeque<Expect>, id: LinkId, events: &Events) -> bool {
    let Resp::Push(items) = frame else {
        return match pending.pop_front() {
            Some(Expect::Reply(tx)) => {
                let _ = tx.send(frame);
                true
            }
            Some(Expect::Confirm { done, .. }) => {
                let error = match frame {
                    Resp::Error(e) => e,
                    other => format!("unexpected reply {other:?}"),
                };
                let _ = done.send(Err(error));
                true
            }
            None => false,
        };
    };
    let kind = items.first().and_then(Resp::as_bytes).unwrap_or_default();
    let channel = items.get(1).and_then(Resp::as_bytes).unwrap_or_default();
    let confirms = match pending.front_mut() {
        Some(Expect::Confirm {
            kind: wanted,
            channels,
            ..
        }) if kind.eq_ignore_ascii_case(wanted) => {
            match channels.iter().position(|c| c == channel) {
                Some(at) => {
                    channels.swap_remove(at);
                    Some(channels.is_empty())
                }
                None => None,
            }
        }
        _ => None,
    };
    match confirms {
        Some(true) => {
            if let Some(Expect::Confirm { done, .. }) = pending.pop_front() {
                let _ = done.send(Ok(()));
            }
        }
        Some(false) => {}
        None if kind.eq_ignore_ascii_case(b"sunsubscribe") => {
            let channel = channel.to_vec();
            let _ = events.send((id, Event::Unsubscribed { channel }));
        }
        None if kind.eq_ignore_ascii_case(b"ssubscribe") => return false,
        None => {} // other pushes (a classic message, tracking): not ours
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: &str, channel: &str) -> Resp {
        Resp::Push(vec![
            Resp::Bulk(kind.as_bytes().to_vec()),
            Resp::Bulk(channel.as_bytes().to_vec()),
            Resp::Int(1),
        ])
    }

    #[test]
    fn confirmations_replies_and_unsolicited_unsubscribes_are_told_apart() {
        let (events, mut rx) = mpsc::unbounded_channel();
        let mut pending = VecDeque::new();
        let (done, mut done_rx) = oneshot::channel();
        pending.push_back(Expect::Confirm {
            kind: b"sunsubscribe",
            channels: vec![b"a".to_vec(), b"b".to_vec()],
            done,
        });
        let (tx, mut reply) = oneshot::channel();
        pending.push_back(Expect::Reply(tx));
        // A slot move drops channel x while we unsubscribe a and b.
        assert!(on_frame(
            push("sunsubscribe", "a"),
            &mut pending,
            7,
            &events
        ));
        assert!(on_frame(
            push("sunsubscribe", "x"),
            &mut pending,
            7,
            &events
        ));
        assert!(done_rx.try_recv().is_err(), "b is not confirmed yet");
        assert!(on_frame(
            push("sunsubscribe", "b"),
            &mut pending,
            7,
            &events
        ));
        assert_eq!(done_rx.try_recv(), Ok(Ok(())));
        assert!(on_frame(Resp::Int(1), &mut pending, 7, &events));
        assert_eq!(reply.try_recv(), Ok(Resp::Int(1)));
        match rx.try_recv() {
            Ok((7, Event::Unsubscribed { channel })) => assert_eq!(channel, b"x"),
            other => panic!("{other:?}"),
        }
        // An unsolicited sunsubscribe with nothing in flight.
        assert!(on_frame(
            push("sunsubscribe", "y"),
            &mut pending,
            7,
            &events
        ));
        assert!(matches!(rx.try_recv(), Ok((7, Event::Unsubscribed { .. }))));
        // A reply nobody waits for, or a stray confirmation: out of turn.
        assert!(!on_frame(Resp::Int(1), &mut pending, 7, &events));
        assert!(!on_frame(push("ssubscribe", "z"), &mut pending, 7, &events));
    }

    #[test]
    fn a_refused_subscribe_fails_with_the_error() {
        let (events, _rx) = mpsc::unbounded_channel();
        let mut pending = VecDeque::new();
        let (done, mut done_rx) = oneshot::channel();
        pending.push_back(Expect::Confirm {
            kind: b"ssubscribe",
            channels: vec![b"a".to_vec()],
            done,
        });
        let moved = Resp::Error("MOVED 1 h:1".into());
        assert!(on_frame(moved, &mut pending, 1, &events));
        assert_eq!(done_rx.try_recv(), Ok(Err("MOVED 1 h:1".into())));
        assert!(pending.is_empty());
    }

    #[test]
    fn messages_are_split_off_other_pushes() {
        let m = Resp::Push(vec![
            Resp::Bulk(b"smessage".to_vec()),
            Resp::Bulk(b"ch".to_vec()),
            Resp::Bulk(b"data".to_vec()),
        ]);
        assert_eq!(as_message(m), Ok((b"ch".to_vec(), b"data".to_vec())));
        assert!(as_message(push("ssubscribe", "ch")).is_err());
        assert!(as_message(Resp::Int(1)).is_err());
    }
}
