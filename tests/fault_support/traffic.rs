//! Steady traffic for the fault tests: senders that post a chat message at
//! a fixed pace on their own threads (and read what they are sent, so they
//! never fall behind), readers that record every `new_message` a socket
//! gets (live or replayed) and whether it was closed, and the check that a
//! protocol v2 socket ended with every stored message exactly once.

use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use crate::support::Client;

/// A socket posting messages on its own thread.
pub struct Sender {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<usize>,
}

/// Starts posting `{label} {i}` on `client` every `every`.
pub fn sender(mut client: Client, every: Duration, label: String) -> Sender {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut sent = 0;
        while !flag.load(Ordering::Relaxed) {
            let next = Instant::now() + every;
            client.chat(&format!("{label} {sent}"));
            sent += 1;
            drain(&mut client, next);
        }
        drain(&mut client, Instant::now() + Duration::from_millis(200));
        sent
    });
    Sender { stop, handle }
}

impl Sender {
    /// Stops posting; returns how many messages it sent.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sender thread")
    }
}

/// Reads and forgets until `until` (answering pings).
fn drain(client: &mut Client, until: Instant) {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let _ = client.ws.get_ref().set_read_timeout(Some(left));
        match client.ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("a sender's socket failed: {e:?}"),
        }
    }
}

/// One `new_message` a reader got.
#[derive(Clone, Copy, Debug)]
pub struct Got {
    pub id: i64,
    pub sender: i64,
    pub at: Instant,
}

/// What a reader saw.
#[derive(Debug, Default)]
pub struct Record {
    pub messages: Vec<Got>,
    /// The close frame's code, when the server closed the socket.
    pub closed: Option<u16>,
}

/// A socket recording what it gets on its own thread.
pub struct Reader {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Record>,
}

/// Starts recording `client`'s `new_message`s; once stopped, it reads on
/// until nothing came for `quiet`.
pub fn reader(mut client: Client, quiet: Duration) -> Reader {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut record = Record::default();
        let mut last = Instant::now();
        let _ = client
            .ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)));
        loop {
            match client.ws.read() {
                Ok(Message::Text(t)) => {
                    last = Instant::now();
                    let v: Value = serde_json::from_str(&t).expect("JSON from the gateway");
                    if v["type"] == "new_message" {
                        record.messages.push(Got {
                            id: v["message"]["id"].as_i64().expect("id"),
                            sender: v["message"]["sender"]["id"].as_i64().expect("sender"),
                            at: last,
                        });
                    }
                }
                Ok(Message::Close(frame)) => {
                    record.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    return record;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    if flag.load(Ordering::Relaxed) && last.elapsed() >= quiet {
                        return record;
                    }
                }
                Err(e) => panic!("a reader's socket failed: {e:?}"),
            }
        }
    });
    Reader { stop, handle }
}

impl Reader {
    /// Stops it (after it went quiet); what it saw.
    pub fn finish(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("reader thread")
    }
}

impl Record {
    /// Checks that the socket got every id of `stored` exactly once, each
    /// sender's in increasing order, and was not closed.
    pub fn check_complete(&self, stored: &[i64]) -> Result<(), String> {
        if let Some(code) = self.closed {
            return Err(format!("the socket was closed with {code}"));
        }
        let mut seen = HashSet::new();
        let dups: Vec<i64> = self
            .messages
            .iter()
            .filter(|g| !seen.insert(g.id))
            .map(|g| g.id)
            .collect();
        if !dups.is_empty() {
            return Err(format!("got twice: {dups:?}"));
        }
        let stored_set: HashSet<i64> = stored.iter().copied().collect();
        let mut missing: Vec<i64> = stored_set.difference(&seen).copied().collect();
        missing.sort_unstable();
        let mut extra: Vec<i64> = seen.difference(&stored_set).copied().collect();
        extra.sort_unstable();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(format!(
                "{} of {} stored messages missing {:?}…, {} not stored {:?}",
                missing.len(),
                stored.len(),
                &missing[..missing.len().min(10)],
                extra.len(),
                &extra[..extra.len().min(10)]
            ));
        }
        let mut by_sender: BTreeMap<i64, i64> = BTreeMap::new();
        for g in &self.messages {
            let last = by_sender.entry(g.sender).or_insert(0);
            if g.id < *last {
                return Err(format!("sender {}: {} after {}", g.sender, g.id, last));
            }
            *last = g.id;
        }
        Ok(())
    }

    /// When the first message from one of `senders` with an id above `id`
    /// arrived.
    pub fn first_from_above(&self, senders: &[i64], id: i64) -> Option<Instant> {
        self.messages
            .iter()
            .find(|g| g.id > id && senders.contains(&g.sender))
            .map(|g| g.at)
    }

    /// When the first message from one of `senders` arrived after `since`.
    pub fn first_from_after(&self, senders: &[i64], since: Instant) -> Option<Instant> {
        self.messages
            .iter()
            .find(|g| g.at > since && senders.contains(&g.sender))
            .map(|g| g.at)
    }
}

/// `{"type":"chat_message","content":...}` for senders that post by hand.
pub fn chat(content: &str) -> Value {
    json!({"type": "chat_message", "content": content})
}
