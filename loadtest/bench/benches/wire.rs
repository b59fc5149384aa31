//! The load client's WebSocket framing against tungstenite, for the tool's
//! job, in one process run.
//!
//! `encode`: one masked client text frame carrying a 100-byte
//! `chat_message` (a fresh random mask per frame, as `net::Session` does),
//! then its bytes handed to the socket (a copy into a sink on every side):
//! `wire` (which encodes with tungstenite's `Frame::format` since this
//! bench measured it cheaper), `handwritten` (the byte-wise encoder `wire`
//! had before, kept here as the baseline) and tungstenite's
//! `WebSocketContext`. `decode`: 64 server `new_message` frames (each
//! carrying such a chat message: 230-byte payloads) arriving in one read:
//! the bytes copied into the parser's input as `recv` would, then every
//! message taken out, by `wire`'s `FrameReader`, tungstenite's
//! `FrameSocket` and its `WebSocketContext` (what would replace `wire` plus
//! `driver`'s control-frame handling).
//!
//! Interleaved rounds, not criterion: on a shared 2-core machine the
//! background load shifts between criterion's consecutive per-case blocks
//! (the same case measured 120 to 310 ns in three runs), so each round here
//! times every case for about 5 ms, in rotating order, and the report gives
//! each case's minimum and median over the rounds.
//!
//! Must never: compare unequal work (both sides copy the bytes in and out
//! the same way, and use the tool's allocator).
//!
//! `cargo bench -p chatgate-bench --bench wire` (figures in
//! `loadtest/RESULTS.md`, "Client framing: wire.rs or tungstenite").

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use chatgate_bench::message::{write_chat_message, Stamp};
use chatgate_bench::wire::{self, Event, FrameReader};
use tungstenite::protocol::frame::FrameSocket;
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::Message;

/// The tool's allocator, so that allocations cost what they cost in it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Server frames per simulated read.
const BATCH: usize = 64;
/// Timed rounds (each times every case once).
const ROUNDS: usize = 100;
/// About how long one case runs per round.
const SAMPLE: Duration = Duration::from_millis(5);

/// The 100-byte `chat_message` a sender writes.
fn chat_message() -> Vec<u8> {
    let stamp = Stamp {
        sender: 1,
        seq: 12_345,
        sent_us: 123_456_789,
    };
    let mut out = Vec::new();
    // 34 bytes of JSON before the content, 2 after it: 64 of content.
    write_chat_message(&mut out, &stamp, 64);
    assert_eq!(out.len(), 100);
    out
}

/// The gateway's `new_message` for `chat` (compact, `type` first).
fn new_message(chat: &[u8]) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(chat).unwrap();
    let content = v["content"].as_str().unwrap();
    format!(
        r#"{{"type":"new_message","message":{{"id":123456,"sender":{{"id":42,"username":"lt_0a1b2c3d_0_1","first_name":"Load","last_name":"Test"}},"content":"{content}","timestamp":"2025-12-11T10:30:00.123456Z"}}}}"#
    )
    .into_bytes()
}

/// `BATCH` unmasked server text frames, back to back.
fn server_batch(payload: &[u8]) -> Vec<u8> {
    let mut one = vec![0x81, 126];
    one.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    one.extend_from_slice(payload);
    one.repeat(BATCH)
}

/// A socket stand-in: reads replay `data` once, then `WouldBlock` (as a
/// non-blocking socket with nothing more to read); writes go to `sink`.
struct Replay {
    data: Vec<u8>,
    pos: usize,
    sink: Vec<u8>,
}

impl Replay {
    fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            pos: 0,
            sink: Vec::with_capacity(256),
        }
    }
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sink.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// One measured case: `run(n)` does `n` iterations of `ops` operations each.
struct Case {
    name: &'static str,
    ops: u64,
    run: Box<dyn FnMut(u64)>,
    /// Iterations per round (calibrated to about [`SAMPLE`]).
    iters: u64,
    /// ns per operation, one per round.
    samples: Vec<f64>,
}

impl Case {
    fn new(name: &'static str, ops: u64, run: impl FnMut(u64) + 'static) -> Self {
        Self {
            name,
            ops,
            run: Box::new(run),
            iters: 1,
            samples: Vec::with_capacity(ROUNDS),
        }
    }

    /// Warms up and finds the iterations that take about [`SAMPLE`].
    fn calibrate(&mut self) {
        loop {
            let t = Instant::now();
            (self.run)(self.iters);
            if t.elapsed() >= SAMPLE {
                return;
            }
            self.iters *= 2;
        }
    }

    fn sample(&mut self) {
        let t = Instant::now();
        (self.run)(self.iters);
        let ns = t.elapsed().as_nanos() as f64;
        self.samples.push(ns / (self.iters * self.ops) as f64);
    }

    /// (minimum, median) ns per operation.
    fn figures(&self) -> (f64, f64) {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        (s[0], s[s.len() / 2])
    }
}

fn encode_wire(chat: Vec<u8>) -> Case {
    let (mut out, mut sink) = (Vec::with_capacity(256), Vec::with_capacity(256));
    Case::new("encode/wire", 1, move |n| {
        for _ in 0..n {
            out.clear();
            sink.clear();
            wire::encode_text(black_box(&chat), rand::random(), &mut out);
            sink.extend_from_slice(&out);
            black_box(sink.len());
        }
    })
}

/// The masked-frame encoder `wire` had before it used tungstenite's.
fn handwritten_client_frame(op: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 14);
    out.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

fn encode_handwritten(chat: Vec<u8>) -> Case {
    let (mut out, mut sink) = (Vec::with_capacity(256), Vec::with_capacity(256));
    Case::new("encode/handwritten", 1, move |n| {
        for _ in 0..n {
            out.clear();
            sink.clear();
            handwritten_client_frame(wire::OP_TEXT, black_box(&chat), rand::random(), &mut out);
            sink.extend_from_slice(&out);
            black_box(sink.len());
        }
    })
}

fn encode_tungstenite_websocket(chat: Vec<u8>) -> Case {
    let text = String::from_utf8(chat).unwrap();
    let mut ctx = WebSocketContext::new(Role::Client, None);
    let mut stream = Replay::new(Vec::new());
    Case::new("encode/tungstenite_websocket", 1, move |n| {
        for _ in 0..n {
            stream.sink.clear();
            let msg = Message::text(black_box(text.as_str()).to_owned());
            ctx.write(&mut stream, msg).unwrap();
            ctx.flush(&mut stream).unwrap();
            black_box(stream.sink.len());
        }
    })
}

fn decode_wire(batch: Vec<u8>) -> Case {
    let mut reader = FrameReader::new(1 << 20);
    let mut recv_buf = vec![0u8; 256 * 1024];
    let mut stream = Replay::new(batch);
    Case::new("decode/wire", BATCH as u64, move |n| {
        for _ in 0..n {
            stream.pos = 0;
            let got = stream.read(&mut recv_buf).unwrap();
            let (mut texts, mut bytes) = (0, 0);
            reader
                .feed(&recv_buf[..got], &mut |e| {
                    if let Event::Text(t) = e {
                        texts += 1;
                        bytes += t.len();
                    }
                })
                .unwrap();
            assert_eq!(texts, BATCH);
            black_box(bytes);
        }
    })
}

fn decode_tungstenite_frame(batch: Vec<u8>) -> Case {
    let mut frames = FrameSocket::new(Replay::new(batch));
    Case::new("decode/tungstenite_frame", BATCH as u64, move |n| {
        for _ in 0..n {
            frames.get_mut().pos = 0;
            let (mut texts, mut bytes) = (0, 0);
            loop {
                match frames.read(Some(1 << 20)) {
                    Ok(Some(f)) => {
                        texts += 1;
                        bytes += f.payload().len();
                    }
                    Ok(None) => unreachable!("the replay never ends"),
                    Err(e) if would_block(&e) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(texts, BATCH);
            black_box(bytes);
        }
    })
}

fn decode_tungstenite_websocket(batch: Vec<u8>) -> Case {
    let mut ctx = WebSocketContext::new(Role::Client, None);
    let mut stream = Replay::new(batch);
    Case::new("decode/tungstenite_websocket", BATCH as u64, move |n| {
        for _ in 0..n {
            stream.pos = 0;
            let (mut texts, mut bytes) = (0, 0);
            loop {
                match ctx.read(&mut stream) {
                    Ok(Message::Text(t)) => {
                        texts += 1;
                        bytes += t.len();
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) if would_block(&e) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(texts, BATCH);
            black_box(bytes);
        }
    })
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: do
    // one short pass only, to check that every case still works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let chat = chat_message();
    let batch = server_batch(&new_message(&chat));
    let mut cases = vec![
        encode_wire(chat.clone()),
        encode_handwritten(chat.clone()),
        encode_tungstenite_websocket(chat),
        decode_wire(batch.clone()),
        decode_tungstenite_frame(batch.clone()),
        decode_tungstenite_websocket(batch),
    ];
    if quick {
        cases.iter_mut().for_each(|c| (c.run)(1));
        println!("wire bench: every case ran once (use `cargo bench` to measure)");
        return;
    }
    cases.iter_mut().for_each(Case::calibrate);
    for round in 0..ROUNDS {
        for i in 0..cases.len() {
            let k = (round + i) % cases.len();
            cases[k].sample();
        }
    }
    println!("{ROUNDS} interleaved rounds, ns per frame (encode) or per message (decode)");
    println!("{:<30} {:>10} {:>10}", "case", "min", "median");
    for c in &cases {
        let (min, median) = c.figures();
        println!("{:<30} {min:>10.1} {median:>10.1}", c.name);
    }
}
