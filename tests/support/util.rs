//! Polling, assertions on messages and timestamps, and small helpers
//! (tokens by hand, memory, tools a test may need).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::User;

/// Polls `cond` until it holds or `within` passes (for state with no socket
/// to read, such as `shard_stats`).
pub fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `get` until it returns `expected` or `within` passes; the failure
/// shows the last value seen.
pub fn eventually_eq<T: PartialEq + std::fmt::Debug>(
    within: Duration,
    what: &str,
    expected: T,
    mut get: impl FnMut() -> T,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = get();
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}: last {got:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts `ts` is `YYYY-MM-DDTHH:MM:SS(.ffffff)?Z` (microseconds only when
/// not zero) and within a minute of now.
pub fn assert_timestamp(ts: &str) {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let base = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let tail_ok = match b.len() {
        20 => b[19] == b'Z',
        27 => b[19] == b'.' && digits(20..26) && &ts[20..26] != "000000" && b[26] == b'Z',
        _ => false,
    };
    assert!(
        base && tail_ok,
        "timestamp {ts:?} is not YYYY-MM-DDTHH:MM:SS(.ffffff)?Z"
    );
    let t = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339 timestamp");
    let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs();
    assert!(skew < 60, "timestamp {ts} is {skew} s away from now");
}

/// Asserts `m` (the `message` of a `new_message`) is exactly what `sender`
/// sending `content` must produce; returns its id.
pub fn assert_new_message(m: &Value, sender: &User, content: &str) -> i64 {
    let id = m["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("id must be an integer: {m}"));
    assert!(id > 0 && id < (1 << 53), "id {id} out of range");
    let ts = m["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("timestamp must be a string: {m}"));
    assert_timestamp(ts);
    assert_eq!(
        *m,
        json!({"id": id, "sender": sender.profile(), "content": content, "timestamp": ts})
    );
    id
}

/// Base64url without padding (for hand-made JWTs).
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Resident set size of this process (the gateway runs in it), bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Whether a test may skip for a missing tool: never in CI (`CI` set).
pub fn skip_or_fail(tool: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is required in CI ({install})"
    );
    eprintln!("skipped: {tool} not found ({install})");
}

/// `name` on PATH (or in /usr/sbin, /usr/bin), if installed.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
