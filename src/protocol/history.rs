//! History (v2): `history` in, a page of stored messages out, over the
//! socket and over HTTP (docs/protocol.md §9.2).
//!
//! Owns the `history` rule (`before` absent or `null` → none, else a
//! positive JSON integer; `limit` absent or `null` → [`DEFAULT_HISTORY_LIMIT`],
//! else a JSON integer in 1..=[`MAX_HISTORY_LIMIT`]; anything else →
//! `Invalid message format`), the history item (the `new_message` message
//! shape plus `reactions`, shared with the replay of `resume.rs`), the
//! socket reply, and the HTTP bodies (`{"results":…}`, `{"detail":…}`).
//!
//! Must never: accept a float, a string or an out-of-range number as
//! `before` or `limit` (the store trusts both), or shape an item differently
//! from a live `new_message` apart from the added `reactions`.

use super::chat::write_sender;
use super::errors::ReplyError;
use super::json::{push_i64, write_json_str, write_timestamp};
use super::message::ClientMessage;
use super::value::Json;
use crate::records::{HistoryItem, ReactionGroup};

/// `limit` when the client sends none.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// The largest `limit` a client may ask for.
pub const MAX_HISTORY_LIMIT: u32 = 100;

/// `before`: absent/null or a positive integer; `limit`: absent/null or 1–100.
pub(super) fn decode(
    before: Option<Json<'_>>,
    limit: Option<Json<'_>>,
) -> Result<ClientMessage<'static>, ReplyError> {
    let before = match before {
        None | Some(Json::Null) => None,
        Some(Json::Int(n)) if n > 0 => Some(n),
        Some(_) => return Err(ReplyError::InvalidFormat),
    };
    let limit = match limit {
        None | Some(Json::Null) => DEFAULT_HISTORY_LIMIT,
        Some(Json::Int(n)) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
            .ok_or(ReplyError::InvalidFormat)?,
        Some(_) => return Err(ReplyError::InvalidFormat),
    };
    Ok(ClientMessage::History { before, limit })
}

/// Appends one item:
/// `{"id":…,"sender":{…},"content":"…","timestamp":"…","reactions":[{"emoji":"👍","user_ids":[1,2]},…]}`.
pub fn encode_history_item(out: &mut Vec<u8>, item: &HistoryItem) {
    out.reserve(160 + item.content.len());
    out.extend_from_slice(br#"{"id":"#);
    push_i64(out, item.id);
    out.extend_from_slice(br#","sender":"#);
    write_sender(out, &item.sender);
    out.extend_from_slice(br#","content":"#);
    write_json_str(out, &item.content);
    out.extend_from_slice(br#","timestamp":""#);
    write_timestamp(out, item.timestamp);
    out.extend_from_slice(br#"","reactions":["#);
    for (i, group) in item.reactions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_reaction_group(out, group);
    }
    out.extend_from_slice(b"]}");
}

/// `{"emoji":"👍","user_ids":[1,2]}`.
fn write_reaction_group(out: &mut Vec<u8>, group: &ReactionGroup) {
    out.extend_from_slice(br#"{"emoji":"#);
    write_json_str(out, &group.emoji);
    out.extend_from_slice(br#","user_ids":["#);
    for (i, &user_id) in group.user_ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_i64(out, user_id);
    }
    out.extend_from_slice(b"]}");
}

/// Appends `[item,item,…]`.
fn write_items(out: &mut Vec<u8>, items: &[HistoryItem]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_history_item(out, item);
    }
    out.push(b']');
}

fn write_has_more(out: &mut Vec<u8>, has_more: bool) {
    out.extend_from_slice(if has_more {
        br#","has_more":true}"#
    } else {
        br#","has_more":false}"#
    });
}

/// Appends the socket reply `{"type":"history","messages":[…],"has_more":false}`.
pub fn encode_history_reply(out: &mut Vec<u8>, items: &[HistoryItem], has_more: bool) {
    out.extend_from_slice(br#"{"type":"history","messages":"#);
    write_items(out, items);
    write_has_more(out, has_more);
}

/// Appends the HTTP body `{"results":[…],"has_more":false}`.
pub fn encode_history_results(out: &mut Vec<u8>, items: &[HistoryItem], has_more: bool) {
    out.extend_from_slice(br#"{"results":"#);
    write_items(out, items);
    write_has_more(out, has_more);
}

/// Appends an HTTP error body as Django REST framework writes it: `{"detail":"…"}`.
pub fn encode_detail(out: &mut Vec<u8>, detail: &str) {
    out.extend_from_slice(br#"{"detail":"#);
    write_json_str(out, detail);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::{dec, dec_v1, history_item, parse, Got};

    #[test]
    fn history_variants() {
        use ReplyError::InvalidFormat as Bad;
        let h = |before, limit| Ok(Got::History(before, limit));
        let cases: &[(&str, Result<Got, ReplyError>)] = &[
            ("", h(None, 50)),
            (r#","before":null,"limit":null"#, h(None, 50)),
            (r#","before":123"#, h(Some(123), 50)),
            (r#","before":1,"limit":1"#, h(Some(1), 1)),
            (r#","limit":100"#, h(None, 100)),
            (r#","before":9223372036854775807"#, h(Some(i64::MAX), 50)),
            (r#","before":5,"before":null"#, h(None, 50)),
            (r#","before":0"#, Err(Bad)),
            (r#","before":-1"#, Err(Bad)),
            (r#","before":-0"#, Err(Bad)),
            (r#","before":1.0"#, Err(Bad)),
            (r#","before":1e2"#, Err(Bad)),
            (r#","before":"12""#, Err(Bad)),
            (r#","before":"""#, Err(Bad)),
            (r#","before":true"#, Err(Bad)),
            (r#","before":[1]"#, Err(Bad)),
            (r#","before":{}"#, Err(Bad)),
            (r#","before":9223372036854775808"#, Err(Bad)),
            (r#","before":18446744073709551616"#, Err(Bad)),
            (r#","limit":0"#, Err(Bad)),
            (r#","limit":101"#, Err(Bad)),
            (r#","limit":-1"#, Err(Bad)),
            (r#","limit":4294967346"#, Err(Bad)),
            (r#","limit":50.0"#, Err(Bad)),
            (r#","limit":"50""#, Err(Bad)),
            (r#","limit":false"#, Err(Bad)),
            (r#","limit":[]"#, Err(Bad)),
            (r#","limit":18446744073709551615"#, Err(Bad)),
        ];
        for (fields, want) in cases {
            let p = format!(r#"{{"type":"history"{fields}}}"#);
            assert_eq!(&dec(&p), want, "{p}");
            assert_eq!(dec_v1(&p), Err(ReplyError::UnknownType), "v1: {p}");
        }
    }

    #[test]
    fn history_item_encoding() {
        let mut out = b"hdr".to_vec();
        encode_history_item(
            &mut out,
            &history_item(123, &[("👍", &[1, 2]), ("❤️", &[3])]),
        );
        let expected = r#"hdr{"id":123,"sender":{"id":1,"username":"johndoe","first_name":"John","last_name":"Doe"},"content":"Hello world","timestamp":"2025-12-11T10:30:00.123456Z","reactions":[{"emoji":"👍","user_ids":[1,2]},{"emoji":"❤️","user_ids":[3]}]}"#;
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        out.clear();
        encode_history_item(&mut out, &history_item(7, &[]));
        assert!(out.ends_with(br#""reactions":[]}"#));
        let mut item = history_item(9, &[("a\"b", &[])]);
        item.content = "\"é\"\n\u{0}😀".into();
        item.sender.username = "x\\y".into();
        out.clear();
        encode_history_item(&mut out, &item);
        let expected = json!({
            "id": 9,
            "sender": {"id": 1, "username": "x\\y", "first_name": "John", "last_name": "Doe"},
            "content": "\"é\"\n\u{0}😀",
            "timestamp": "2025-12-11T10:30:00.123456Z",
            "reactions": [{"emoji": "a\"b", "user_ids": []}],
        });
        assert_eq!(parse(&out), expected);
    }

    #[test]
    fn history_item_has_the_new_message_shape_plus_reactions() {
        let item = history_item(42, &[("👍", &[5])]);
        let mut live = Vec::new();
        let sender = crate::protocol::sender_json(&item.sender);
        crate::protocol::encode_new_message(&mut live, 42, &sender, &item.content, item.timestamp);
        let mut message = parse(&live)["message"].clone();
        message["reactions"] = json!([{"emoji": "👍", "user_ids": [5]}]);
        let mut out = Vec::new();
        encode_history_item(&mut out, &item);
        assert_eq!(parse(&out), message);
        let live = std::str::from_utf8(&live).unwrap();
        let out = std::str::from_utf8(&out).unwrap();
        let body = &live[r#"{"type":"new_message","message":"#.len()..live.len() - 2];
        assert!(out.starts_with(body), "same bytes up to reactions");
    }

    #[test]
    fn history_reply_and_results_encoding() {
        let items = [history_item(1, &[]), history_item(2, &[("👍", &[1])])];
        let mut one = Vec::new();
        encode_history_item(&mut one, &items[0]);
        let mut two = Vec::new();
        encode_history_item(&mut two, &items[1]);
        let (one, two) = (
            String::from_utf8(one).unwrap(),
            String::from_utf8(two).unwrap(),
        );

        let mut out = Vec::new();
        encode_history_reply(&mut out, &items, true);
        let expected = format!(r#"{{"type":"history","messages":[{one},{two}],"has_more":true}}"#);
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        out.clear();
        encode_history_reply(&mut out, &[], false);
        assert_eq!(out, br#"{"type":"history","messages":[],"has_more":false}"#);

        out.clear();
        encode_history_results(&mut out, &items, false);
        let expected = format!(r#"{{"results":[{one},{two}],"has_more":false}}"#);
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
        assert_eq!(
            parse(&out)["results"][1]["reactions"][0]["user_ids"],
            json!([1])
        );
        out.clear();
        encode_history_results(&mut out, &[], true);
        assert_eq!(out, br#"{"results":[],"has_more":true}"#);
    }

    #[test]
    fn detail_encoding() {
        let mut out = b"x".to_vec();
        encode_detail(&mut out, "Authentication credentials were not provided.");
        assert_eq!(
            out,
            br#"x{"detail":"Authentication credentials were not provided."}"#
        );
        out.clear();
        encode_detail(&mut out, "say \"no\"\n");
        assert_eq!(parse(&out), json!({"detail": "say \"no\"\n"}));
    }
}
