//! The chat messages a load client sends and the server messages it reads,
//! sans I/O.
//!
//! Owns the stamp a load message carries in its `content`
//! (`lg:<sender>:<seq>:<sent_us>`: the sender's index in its conversation,
//! its sequence number, the intended send time in microseconds since the
//! run's clock base), the `chat_message` text written around it, and a
//! cheap classification of server messages: the gateway writes compact JSON
//! with `type` first, so a prefix test and a scan for `"content":"` find
//! what is needed without parsing the whole object; anything else falls
//! back to `serde_json`.
//!
//! Must never: allocate on the fast path of [`classify`].

use std::borrow::Cow;
use std::io::Write;

/// What the gateway sent, as far as a load client cares.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// `connection_established`.
    Established,
    /// `new_message`: the stored id and the raw (JSON-escaped) content.
    NewMessage { id: i64, content: Cow<'a, [u8]> },
    /// The `{"type":"ping"}` heartbeat.
    Ping,
    /// An error reply and its text.
    Error(Cow<'a, str>),
    /// A `typing` event.
    Typing,
    /// `resumed` (v2): the end of a replay.
    Resumed { complete: bool },
    /// `message_deleted`, or a type this tool does not know.
    Other,
    /// Not JSON, or not an object with a `type`.
    Invalid,
}

const NEW_MESSAGE: &[u8] = br#"{"type":"new_message","message":{"id":"#;
const CONTENT: &[u8] = br#""content":""#;
const ERROR: &[u8] = br#"{"type":"error","message":""#;

/// Classifies one text message from the server.
pub fn classify(payload: &[u8]) -> ServerMessage<'_> {
    if let Some(rest) = payload.strip_prefix(NEW_MESSAGE) {
        if let Some(m) = fast_new_message(rest) {
            return m;
        }
    } else if payload == br#"{"type":"ping"}"# {
        return ServerMessage::Ping;
    } else if payload.starts_with(br#"{"type":"connection_established""#) {
        return ServerMessage::Established;
    } else if payload.starts_with(br#"{"type":"typing""#) {
        return ServerMessage::Typing;
    } else if payload.starts_with(br#"{"type":"resumed""#) {
        return ServerMessage::Resumed {
            complete: !payload.ends_with(br#""complete":false}"#),
        };
    } else if let Some(rest) = payload.strip_prefix(ERROR) {
        if let Some(text) = rest.strip_suffix(br#""}"#) {
            if !text.contains(&b'\\') {
                if let Ok(t) = std::str::from_utf8(text) {
                    return ServerMessage::Error(Cow::Borrowed(t));
                }
            }
        }
    }
    slow_classify(payload)
}

/// `new_message` in the gateway's compact layout: id digits, then the content string.
fn fast_new_message(rest: &[u8]) -> Option<ServerMessage<'_>> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let id = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let after = &rest[digits..];
    let start = find(after, CONTENT)? + CONTENT.len();
    let len = string_len(&after[start..])?;
    Some(ServerMessage::NewMessage {
        id,
        content: Cow::Borrowed(&after[start..start + len]),
    })
}

/// Length of a JSON string body up to its closing quote (escapes skipped).
fn string_len(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while let Some(p) = hay[from..].iter().position(|&b| b == first) {
        let at = from + p;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Full JSON parse, for layouts the fast path does not recognise.
fn slow_classify(payload: &[u8]) -> ServerMessage<'static> {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice(payload) else {
        return ServerMessage::Invalid;
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    match v.get("type").and_then(|t| t.as_str()) {
        Some("connection_established") => ServerMessage::Established,
        Some("ping") => ServerMessage::Ping,
        Some("typing") => ServerMessage::Typing,
        Some("resumed") => ServerMessage::Resumed {
            complete: v.get("complete").and_then(|c| c.as_bool()) != Some(false),
        },
        Some("error") => ServerMessage::Error(Cow::Owned(field("message").unwrap_or_default())),
        Some("new_message") => {
            let m = v.get("message");
            let id = m.and_then(|m| m.get("id")).and_then(|i| i.as_i64());
            let content = m.and_then(|m| m.get("content")).and_then(|c| c.as_str());
            match (id, content) {
                (Some(id), Some(c)) => ServerMessage::NewMessage {
                    id,
                    content: Cow::Owned(c.as_bytes().to_vec()),
                },
                _ => ServerMessage::Invalid,
            }
        }
        Some(_) => ServerMessage::Other,
        None => ServerMessage::Invalid,
    }
}

/// What a load message carries in its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sender's index among its conversation's senders.
    pub sender: u32,
    /// The sender's sequence number (0, 1, 2, … in send order).
    pub seq: u64,
    /// Intended send time, microseconds since the run's clock base.
    pub sent_us: u64,
}

const STAMP_PREFIX: &[u8] = b"lg:";

/// Appends the `chat_message` JSON carrying `stamp`, padded with `x` to at
/// least `min_content` bytes of content.
pub fn write_chat_message(out: &mut Vec<u8>, stamp: &Stamp, min_content: usize) {
    out.extend_from_slice(br#"{"type":"chat_message","content":""#);
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "lg:{}:{}:{}", stamp.sender, stamp.seq, stamp.sent_us);
    let written = out.len() - start;
    if written < min_content {
        out.push(b' ');
        out.resize(out.len() + min_content - written - 1, b'x');
    }
    out.extend_from_slice(br#""}"#);
}

/// Reads the stamp at the start of a message's content.
pub fn parse_stamp(content: &[u8]) -> Option<Stamp> {
    let rest = content.strip_prefix(STAMP_PREFIX)?;
    let mut fields = rest.splitn(3, |&b| b == b':');
    let sender = parse_u64(fields.next()?)?;
    let seq = parse_u64(fields.next()?)?;
    let last = fields.next()?;
    let end = last
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(last.len());
    Some(Stamp {
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_us: parse_u64(&last[..end])?,
    })
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_a_gateway_shaped_message() {
        let stamp = Stamp {
            sender: 3,
            seq: 42,
            sent_us: 1_234_567,
        };
        for pad in [0, 10, 64] {
            let mut out = Vec::new();
            write_chat_message(&mut out, &stamp, pad);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["type"], "chat_message");
            let content = v["content"].as_str().unwrap();
            assert!(content.len() >= pad);
            let echoed = format!(
                r#"{{"type":"new_message","message":{{"id":77,"sender":{{"id":1,"username":"lt_a","first_name":"","last_name":""}},"content":"{content}","timestamp":"2025-12-11T10:30:00.123456Z"}}}}"#
            );
            match classify(echoed.as_bytes()) {
                ServerMessage::NewMessage { id, content } => {
                    assert_eq!(id, 77);
                    assert_eq!(parse_stamp(&content), Some(stamp));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn other_server_messages() {
        assert_eq!(
            classify(br#"{"type":"connection_established","message":"Connected to chat"}"#),
            ServerMessage::Established
        );
        assert_eq!(classify(br#"{"type":"ping"}"#), ServerMessage::Ping);
        assert_eq!(
            classify(br#"{"type":"error","message":"Rate limit exceeded"}"#),
            ServerMessage::Error(Cow::Borrowed("Rate limit exceeded"))
        );
        assert_eq!(
            classify(br#"{"type":"typing","user_id":2,"username":"b","is_typing":true}"#),
            ServerMessage::Typing
        );
        assert_eq!(
            classify(br#"{"type":"message_deleted","message_id":1}"#),
            ServerMessage::Other
        );
        assert_eq!(classify(b"nope"), ServerMessage::Invalid);
        assert_eq!(
            classify(br#"{"type":"resumed","last_id":9,"complete":true}"#),
            ServerMessage::Resumed { complete: true }
        );
        assert_eq!(
            classify(br#"{"type":"resumed","last_id":9,"complete":false}"#),
            ServerMessage::Resumed { complete: false }
        );
        assert_eq!(
            classify(br#"{"complete":false,"type":"resumed"}"#),
            ServerMessage::Resumed { complete: false }
        );
    }

    #[test]
    fn spaced_json_falls_back_to_a_full_parse() {
        let m = br#"{ "message": {"content": "lg:0:1:2", "id": 5}, "type": "new_message" }"#;
        assert_eq!(
            classify(m),
            ServerMessage::NewMessage {
                id: 5,
                content: Cow::Owned(b"lg:0:1:2".to_vec())
            }
        );
        let e = br#"{"type":"error","message":"say \"hi\""}"#;
        assert_eq!(
            classify(e),
            ServerMessage::Error(Cow::Owned("say \"hi\"".into()))
        );
    }

    #[test]
    fn foreign_content_has_no_stamp() {
        assert_eq!(parse_stamp(b"hello"), None);
        assert_eq!(parse_stamp(b"lg:1:2"), None);
        assert_eq!(parse_stamp(b"lg:a:2:3"), None);
        assert_eq!(
            parse_stamp(b"lg:1:2:3 xxxx"),
            Some(Stamp {
                sender: 1,
                seq: 2,
                sent_us: 3
            })
        );
    }
}
