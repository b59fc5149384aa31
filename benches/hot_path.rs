//! Hot-path benchmarks: client-frame decoding (group `parse`) and, in the
//! section at the end, frame building and fan-out.
//!
//! `cargo bench --bench hot_path` (add `-- --quick` for a fast run).

use std::hint::black_box;

use chatgate::protocol::{validate_content, ClientMessage, Decoder, ReplyError, Version};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A typical chat frame, ~100 bytes, no escapes.
const PLAIN: &[u8] = br#"{"type":"chat_message","content":"Hey team, the deploy finished fine; dashboards look green. Lunch?"}"#;

/// A chat frame of similar size whose content needs unescaping.
const ESCAPED: &[u8] = br#"{"type":"chat_message","content":"He said \"ship it\"\nthen left \u00e9t\u00e9 \ud83d\ude80 ok?"}"#;

/// The same rules through serde_json into an owned struct (the baseline).
#[derive(serde::Deserialize)]
struct OwnedFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    content: Option<String>,
}

/// Decode + validate a chat frame with serde_json; returns the content length.
fn serde_json_owned(payload: &[u8]) -> Result<usize, ReplyError> {
    let frame: OwnedFrame = serde_json::from_slice(payload).map_err(|_| ReplyError::InvalidJson)?;
    if frame.kind.as_deref() != Some("chat_message") {
        return Err(ReplyError::UnknownType);
    }
    validate_content(frame.content.as_deref().unwrap_or("")).map(str::len)
}

/// A borrowed struct, as simd-json's `from_slice_with_buffers` fills it.
#[derive(serde::Deserialize)]
struct BorrowedFrame<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    content: Option<&'a str>,
}

/// Decode + validate with `simd_json::serde::from_slice_with_buffers`, which
/// allocates a fresh tape per call (the decoder reuses one).
fn simd_from_slice_with_buffers(
    scratch: &mut Vec<u8>,
    buffers: &mut simd_json::Buffers,
    payload: &[u8],
) -> Result<usize, ReplyError> {
    scratch.clear();
    scratch.extend_from_slice(payload);
    let frame: BorrowedFrame = simd_json::serde::from_slice_with_buffers(scratch, buffers)
        .map_err(|_| ReplyError::InvalidJson)?;
    if frame.kind != Some("chat_message") {
        return Err(ReplyError::UnknownType);
    }
    validate_content(frame.content.unwrap_or("")).map(str::len)
}

/// Decode + validate a chat frame with the gateway's decoder.
fn decoder(d: &mut Decoder, payload: &[u8]) -> Result<usize, ReplyError> {
    match d.decode(payload, Version::V1)? {
        ClientMessage::Chat { content } => Ok(content.len()),
        _ => Err(ReplyError::UnknownType),
    }
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in [("plain", PLAIN), ("escaped", ESCAPED)] {
        let mut d = Decoder::new();
        assert_eq!(decoder(&mut d, frame), serde_json_owned(frame));
        group.bench_with_input(
            BenchmarkId::new("simd_json_decoder", name),
            frame,
            |b, f| b.iter(|| decoder(&mut d, black_box(f))),
        );
        group.bench_with_input(BenchmarkId::new("serde_json_owned", name), frame, |b, f| {
            b.iter(|| serde_json_owned(black_box(f)))
        });
        let (mut scratch, mut buffers) = (Vec::new(), simd_json::Buffers::default());
        let id = BenchmarkId::new("simd_json_from_slice_with_buffers", name);
        group.bench_with_input(id, frame, |b, f| {
            b.iter(|| simd_from_slice_with_buffers(&mut scratch, &mut buffers, black_box(f)))
        });
    }
    group.finish();
}

criterion_group!(parse_benches, parse);
// Add the fan-out group below to this list.
criterion_main!(parse_benches, fanout_benches);

// ===========================================================================
// fan-out benches: added by the gateway author
// ===========================================================================

/// Builds one `new_message` frame (serialize + frame once) and queues the
/// same buffer on 1,000 member sockets of one conversation; then the queues
/// are emptied, as their writers would.
fn fanout(c: &mut Criterion) {
    use chatgate::frame::FrameBuf;
    use chatgate::hub::Hub;
    use chatgate::outbound::Bounds;
    use chatgate::protocol::encode_new_message;

    const MEMBERS: usize = 1000;
    let hub = Hub::new();
    let bounds = Bounds {
        max_frames: 1024,
        max_bytes: 4 << 20,
    };
    let peers: Vec<_> = (0..MEMBERS)
        .map(|i| {
            let p = hub.new_peer(i as i64 + 1, chatgate::protocol::Version::V1, 7, bounds);
            hub.join(&p);
            p
        })
        .collect();
    let sender = bytes::Bytes::from_static(
        br#"{"id":1,"username":"johndoe","first_name":"John","last_name":"Doe"}"#,
    );
    let ts = chrono::Utc::now();
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function("new_message_to_1000_queues", |b| {
        let mut id = 0i64;
        b.iter(|| {
            id += 1;
            let mut f = FrameBuf::with_capacity(200);
            encode_new_message(
                f.payload(),
                id,
                &sender,
                "Hello world, how are you today?",
                ts,
            );
            let d = hub.broadcast(7, &f.finish_text());
            for p in &peers {
                p.outbound.clear();
            }
            black_box(d)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("new_message", |b| {
        b.iter(|| {
            let mut f = FrameBuf::with_capacity(200);
            encode_new_message(
                f.payload(),
                1,
                &sender,
                "Hello world, how are you today?",
                ts,
            );
            black_box(f.finish_text())
        })
    });
    g.finish();
}

criterion_group!(fanout_benches, fanout);
