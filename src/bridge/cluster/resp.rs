//! RESP3 frames as a subscribing connection reads them: an incremental
//! parser (bytes in, complete frames out) and the conversion of data
//! replies to `redis::Value` (so redis-rs's `FromRedisValue` reads them).
//!
//! Owns the wire format of the bridge's own cluster connections
//! (`cluster/link.rs`). Keeps pushes (`>`) apart from replies: a sharded
//! subscription's confirmations, its messages and an unsolicited
//! `sunsubscribe` are pushes; everything a command answers is not.
//!
//! Pure code. Must never panic on any input (every length is checked), or
//! accept a frame nested deeper than [`MAX_DEPTH`] or larger than
//! [`MAX_FRAME`].

use redis::Value;

/// Nesting allowed (RESP3 replies of the commands used here nest 4 deep).
pub const MAX_DEPTH: usize = 16;
/// Largest frame accepted, bytes.
pub const MAX_FRAME: usize = 64 << 20;

/// One RESP3 frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    /// `+`: a status line.
    Simple(Vec<u8>),
    /// `-` or `!`: an error reply (`MOVED 3999 127.0.0.1:6381`, …).
    Error(String),
    Int(i64),
    /// `$`, `=` (verbatim, format prefix removed), `(` (big number as text).
    Bulk(Vec<u8>),
    Nil,
    Bool(bool),
    Double(f64),
    /// `*` and `~`.
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    /// `>`: out-of-band data (pub/sub).
    Push(Vec<Resp>),
}

/// Why bytes are not RESP3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error from Redis: {0}")]
pub struct RespError(&'static str);

/// The first complete frame in `buf` and its length; `None` when more
/// bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, RespError> {
    let mut at = 0;
    match frame(buf, &mut at, 0) {
        Ok(resp) => Ok(Some((resp, at))),
        Err(Need::More) => Ok(None),
        Err(Need::Bad(why)) => Err(RespError(why)),
    }
}

enum Need {
    More,
    Bad(&'static str),
}

impl From<RespError> for Need {
    fn from(e: RespError) -> Self {
        Need::Bad(e.0)
    }
}

fn frame(buf: &[u8], at: &mut usize, depth: usize) -> Result<Resp, Need> {
    if depth > MAX_DEPTH {
        return Err(Need::Bad("frame nested too deep"));
    }
    let kind = *buf.get(*at).ok_or(Need::More)?;
    *at += 1;
    let line = line(buf, at)?;
    Ok(match kind {
        b'+' => Resp::Simple(line.to_vec()),
        b'-' => Resp::Error(String::from_utf8_lossy(line).into_owned()),
        b':' => Resp::Int(number(line)?),
        b'_' => Resp::Nil,
        b'#' => Resp::Bool(line == b"t"),
        b',' => Resp::Double(
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Need::Bad("bad double"))?,
        ),
        b'(' => Resp::Bulk(line.to_vec()),
        b'$' | b'=' | b'!' => blob(buf, at, kind, number(line)?)?,
        b'*' | b'~' | b'>' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            let items = items(buf, at, n, depth)?;
            if kind == b'>' {
                Resp::Push(items)
            } else {
                Resp::Array(items)
            }
        }
        b'%' | b'|' => {
            let n = count(number(line)?)?;
            let mut pairs = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let k = frame(buf, at, depth + 1)?;
                let v = frame(buf, at, depth + 1)?;
                pairs.push((k, v));
            }
            if kind == b'|' {
                // Attributes describe the reply that follows: skip them.
                return frame(buf, at, depth + 1);
            }
            Resp::Map(pairs)
        }
        _ => return Err(Need::Bad("unknown frame type")),
    })
}

fn items(buf: &[u8], at: &mut usize, n: i64, depth: usize) -> Result<Vec<Resp>, Need> {
    let n = count(n)?;
    let mut items = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        items.push(frame(buf, at, depth + 1)?);
    }
    Ok(items)
}

fn blob(buf: &[u8], at: &mut usize, kind: u8, len: i64) -> Result<Resp, Need> {
    if len < 0 {
        return Ok(Resp::Nil);
    }
    let len = count(len)?;
    let end = at.checked_add(len).ok_or(Need::Bad("length overflow"))?;
    if buf.len() < end + 2 {
        return Err(Need::More);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(Need::Bad("blob not followed by CRLF"));
    }
    let data = &buf[*at..end];
    *at = end + 2;
    Ok(match kind {
        b'!' => Resp::Error(String::from_utf8_lossy(data).into_owned()),
        // Verbatim strings start with a 3-byte format and a colon.
        b'=' => Resp::Bulk(data.get(4..).unwrap_or_default().to_vec()),
        _ => Resp::Bulk(data.to_vec()),
    })
}

fn count(n: i64) -> Result<usize, Need> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_FRAME)
        .ok_or(Need::Bad("bad length"))
}

fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<&'a [u8], Need> {
    let rest = &buf[*at..];
    let end = rest.windows(2).position(|w| w == b"\r\n");
    match end {
        Some(end) => {
            *at += end + 2;
            Ok(&rest[..end])
        }
        None if rest.len() > 1024 => Err(Need::Bad("line too long")),
        None => Err(Need::More),
    }
}

fn number(line: &[u8]) -> Result<i64, Need> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Need::Bad("bad number"))
}

impl Resp {
    /// A data reply as a `redis::Value` (errors and pushes become `Nil`:
    /// callers look at those before converting).
    pub fn into_value(self) -> Value {
        match self {
            Resp::Simple(s) if s == b"OK" => Value::Okay,
            Resp::Simple(s) => Value::SimpleString(String::from_utf8_lossy(&s).into_owned()),
            Resp::Int(n) => Value::Int(n),
            Resp::Bulk(b) => Value::BulkString(b),
            Resp::Bool(b) => Value::Boolean(b),
            Resp::Double(d) => Value::Double(d),
            Resp::Array(items) => Value::Array(items.into_iter().map(Resp::into_value).collect()),
            Resp::Map(pairs) => Value::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_value(), v.into_value()))
                    .collect(),
            ),
            Resp::Nil | Resp::Error(_) | Resp::Push(_) => Value::Nil,
        }
    }

    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(b) | Resp::Simple(b) => Some(b),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Resp {
        let (resp, used) = parse(bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        resp
    }

    #[test]
    fn parses_the_replies_and_pushes_the_bridge_sees() {
        assert_eq!(whole(b"+PONG\r\n"), Resp::Simple(b"PONG".to_vec()));
        assert_eq!(
            whole(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Resp::Error("MOVED 3999 127.0.0.1:6381".into())
        );
        assert_eq!(whole(b":-12\r\n"), Resp::Int(-12));
        assert_eq!(whole(b"_\r\n"), Resp::Nil);
        assert_eq!(whole(b"$-1\r\n"), Resp::Nil);
        assert_eq!(whole(b"$3\r\na\r\n\r\n"), Resp::Bulk(b"a\r\n".to_vec()));
        assert_eq!(
            whole(b">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$3\r\n\x00\x01\x02\r\n"),
            Resp::Push(vec![
                Resp::Bulk(b"smessage".to_vec()),
                Resp::Bulk(b"ch".to_vec()),
                Resp::Bulk(vec![0, 1, 2]),
            ])
        );
        assert_eq!(
            whole(b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"),
            Resp::Map(vec![(Resp::Bulk(b"f".to_vec()), Resp::Bulk(b"v".to_vec()))])
        );
        assert_eq!(whole(b"#t\r\n"), Resp::Bool(true));
        assert_eq!(whole(b",1.5\r\n"), Resp::Double(1.5));
        assert_eq!(whole(b"=8\r\ntxt:abcd\r\n"), Resp::Bulk(b"abcd".to_vec()));
        assert_eq!(whole(b"!3\r\nERR\r\n"), Resp::Error("ERR".into()));
        assert_eq!(whole(b"|1\r\n+a\r\n+b\r\n:1\r\n"), Resp::Int(1));
    }

    #[test]
    fn waits_for_the_rest_of_a_frame_at_every_cut() {
        let bytes = b"*2\r\n$5\r\nhello\r\n%1\r\n+k\r\n*1\r\n:1\r\n+next\r\n";
        let first_len = bytes.len() - b"+next\r\n".len();
        for cut in 0..first_len {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (_, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(used, first_len, "one frame at a time");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b"$2\r\nabcd\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        assert!(parse(&[b'*'; 2000]).is_err(), "a line that never ends");
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
        // Cheap deterministic fuzz.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if i % 5 == 0 {
                        b"*$:+%>\r\n12"[(state % 10) as usize]
                    } else {
                        state as u8
                    }
                })
                .collect();
            let _ = parse(&buf);
        }
    }

    #[test]
    fn data_replies_convert_to_redis_values() {
        use redis::FromRedisValue;
        let map = whole(b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n").into_value();
        let map: std::collections::HashMap<String, String> =
            FromRedisValue::from_redis_value(map).unwrap();
        assert_eq!(map["a"], "1");
        let mget: Vec<Option<Vec<u8>>> =
            FromRedisValue::from_redis_value(whole(b"*2\r\n$1\r\nx\r\n_\r\n").into_value())
                .unwrap();
        assert_eq!(mget, vec![Some(b"x".to_vec()), None]);
        assert_eq!(whole(b"+OK\r\n").into_value(), Value::Okay);
    }
}
