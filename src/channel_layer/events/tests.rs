//! The event table, the drop reasons, and the dicts sent out, against the
//! gateway's own frames and channels_redis's `group_send` output.

use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::*;
use crate::channel_layer::seal::Format;
use crate::channel_layer::wire::testing::{hex, vectors};
use crate::channel_layer::wire::{decode_json, encode_msgpack};
use crate::protocol;
use crate::records::UserProfile;

fn json(s: &str) -> Value {
    decode_json(s.as_bytes()).unwrap()
}

fn core(s: &str) -> Result<Inbound, DropReason> {
    core_message(json(s))
}

fn event(s: &str) -> Result<LayerEvent, DropReason> {
    core_message(json(s)).map(|i| i.event)
}

/// A message for member `chatgate.n1!5` with `fields` after its type.
fn typed(t: &str, fields: &str) -> String {
    let sep = if fields.is_empty() { "" } else { "," };
    format!(r#"{{"type":"{t}"{sep}{fields},"__asgi_channel__":["chatgate.n1!5"]}}"#)
}

fn plain_codec() -> Codec {
    Codec::new(Format::Msgpack, &[], 12, Some(Duration::from_secs(70)))
}

fn sender() -> UserProfile {
    UserProfile {
        id: 7,
        username: "zoë".into(),
        first_name: "Zoë".into(),
        last_name: "Ü \"q\"".into(),
        is_active: true,
    }
}

fn new_message_frame() -> Vec<u8> {
    let ts = Utc.with_ymd_and_hms(2025, 12, 11, 10, 30, 0).unwrap();
    let mut frame = Vec::new();
    let sender = protocol::sender_json(&sender());
    protocol::encode_new_message(&mut frame, 1234, &sender, "hé \"x\"\n😀", ts);
    frame
}

fn typing_frame(is_typing: bool) -> Vec<u8> {
    let mut frame = Vec::new();
    protocol::encode_typing(&mut frame, 7, "Дмитрий", is_typing);
    frame
}

#[test]
fn chat_message_broadcast_is_a_new_message_frame() {
    let got = core(&typed(
        "chat_message_broadcast",
        r#""message":{"id":9,"content":"hé","sender":{"id":1}}"#,
    ))
    .unwrap();
    assert_eq!(got.channels, vec!["chatgate.n1!5".to_string()]);
    let want = r#"{"type":"new_message","message":{"id":9,"content":"hé","sender":{"id":1}}}"#;
    assert_eq!(
        got.event,
        LayerEvent::Chat {
            payload: want.as_bytes().to_vec()
        }
    );
    for bad in [
        r#""message":{"content":"x"}"#,
        r#""message":{"id":"9"}"#,
        r#""message":{"id":1.0}"#,
        r#""message":[1]"#,
        r#""message":null"#,
        r#""other":1"#,
    ] {
        let got = event(&typed("chat_message_broadcast", bad));
        assert_eq!(got, Err(DropReason::BadFields), "{bad}");
    }
}

#[test]
fn typing_indicator_fields() {
    let mut want = Vec::new();
    protocol::encode_typing(&mut want, 3, "amy", true);
    let got = event(&typed(
        "typing_indicator",
        r#""user_id":3,"username":"amy","is_typing":true"#,
    ));
    assert_eq!(
        got,
        Ok(LayerEvent::Typing {
            user_id: 3,
            payload: want
        })
    );
    let absent = event(&typed(
        "typing_indicator",
        r#""user_id":3,"username":"amy""#,
    ));
    let mut off = Vec::new();
    protocol::encode_typing(&mut off, 3, "amy", false);
    assert_eq!(
        absent,
        Ok(LayerEvent::Typing {
            user_id: 3,
            payload: off
        })
    );
    for bad in [
        r#""username":"amy""#,
        r#""user_id":"3","username":"amy""#,
        r#""user_id":true,"username":"amy""#,
        r#""user_id":18446744073709551615,"username":"amy""#,
        r#""user_id":3"#,
        r#""user_id":3,"username":null"#,
        r#""user_id":3,"username":"amy","is_typing":1"#,
        r#""user_id":3,"username":"amy","is_typing":null"#,
    ] {
        assert_eq!(
            event(&typed("typing_indicator", bad)),
            Err(DropReason::BadFields),
            "{bad}"
        );
    }
}

#[test]
fn chatgate_send_fields() {
    let nested = r#"{"type":"reaction","n":[1,{"deep":null}],"s":"é"}"#;
    let got = event(&typed(
        "chatgate.send",
        &format!(r#""event":{nested},"v2_only":true"#),
    ));
    let want = LayerEvent::Send {
        payload: nested.as_bytes().to_vec(),
        v2_only: true,
    };
    assert_eq!(got, Ok(want));
    let default = event(&typed("chatgate_send", r#""event":{"type":"x"}"#));
    let want = LayerEvent::Send {
        payload: br#"{"type":"x"}"#.to_vec(),
        v2_only: false,
    };
    assert_eq!(default, Ok(want));
    for bad in [
        r#""event":{"type":1}"#,
        r#""event":{"kind":"x"}"#,
        r#""event":"x""#,
        r#""event":{"type":"x"},"v2_only":"yes""#,
        r#""event":{"type":"x"},"v2_only":1"#,
        r#""v2_only":true"#,
    ] {
        assert_eq!(
            event(&typed("chatgate.send", bad)),
            Err(DropReason::BadFields),
            "{bad}"
        );
    }
}

#[test]
fn chatgate_disconnect_fields() {
    let got = event(&typed("chatgate.disconnect", r#""user_id":42,"code":4001"#));
    assert_eq!(
        got,
        Ok(LayerEvent::Disconnect {
            user_id: 42,
            code: 4001
        })
    );
    let default = event(&typed("chatgate.disconnect", r#""user_id":42"#));
    assert_eq!(
        default,
        Ok(LayerEvent::Disconnect {
            user_id: 42,
            code: 4003
        })
    );
    for bad in [
        r#""user_id":42,"code":4000"#,
        r#""user_id":42,"code":1000"#,
        r#""user_id":42,"code":"4001""#,
        r#""user_id":42,"code":null"#,
        r#""code":4001"#,
    ] {
        assert_eq!(
            event(&typed("chatgate.disconnect", bad)),
            Err(DropReason::BadFields),
            "{bad}"
        );
    }
}

#[test]
fn types_follow_channels_rule() {
    assert_eq!(
        normalized_type("chatgate.send"),
        normalized_type("chatgate_send")
    );
    assert_eq!(normalized_type("a.b.c"), "a_b_c");
    assert!(matches!(normalized_type("plain"), Cow::Borrowed("plain")));
    let dotted = event(&typed("typing.indicator", r#""user_id":3,"username":"a""#));
    assert!(matches!(dotted, Ok(LayerEvent::Typing { user_id: 3, .. })));
    let dotted = event(&typed("chat.message.broadcast", r#""message":{"id":1}"#));
    assert!(matches!(dotted, Ok(LayerEvent::Chat { .. })));
    let mixed = event(&typed("chatgate_disconnect", r#""user_id":1"#));
    assert!(matches!(mixed, Ok(LayerEvent::Disconnect { .. })));
    for unknown in [
        "chat_message",
        "chat.message",
        "websocket.send",
        "_chatgate.send",
        "Chatgate.send",
        "",
    ] {
        assert_eq!(
            event(&typed(unknown, "")),
            Err(DropReason::UnknownType),
            "{unknown}"
        );
    }
    let no_type = core(r#"{"user_id":1,"__asgi_channel__":"chatgate.n1!1"}"#);
    assert_eq!(no_type, Err(DropReason::BadFields));
    let int_type = core(r#"{"type":5,"__asgi_channel__":"chatgate.n1!1"}"#);
    assert_eq!(int_type, Err(DropReason::BadFields));
}

#[test]
fn asgi_channel_list_or_string() {
    let list = core(
        r#"{"type":"chatgate.disconnect","user_id":1,"__asgi_channel__":["chatgate.n1!5","chatgate.n1!6"]}"#,
    );
    assert_eq!(
        list.unwrap().channels,
        vec!["chatgate.n1!5", "chatgate.n1!6"]
    );
    let one =
        core(r#"{"__asgi_channel__":"chatgate.n1!7","type":"chatgate.disconnect","user_id":1}"#);
    assert_eq!(one.unwrap().channels, vec!["chatgate.n1!7"]);
    for bad in [
        r#"{"type":"chatgate.disconnect","user_id":1}"#,
        r#"{"type":"chatgate.disconnect","user_id":1,"__asgi_channel__":[]}"#,
        r#"{"type":"chatgate.disconnect","user_id":1,"__asgi_channel__":["a!1",2]}"#,
        r#"{"type":"chatgate.disconnect","user_id":1,"__asgi_channel__":null}"#,
        r#"{"type":"unknown","__asgi_channel__":5}"#,
    ] {
        assert_eq!(core(bad), Err(DropReason::NoChannel), "{bad}");
    }
    for not_a_dict in ["[1]", "\"x\"", "null", "5"] {
        assert_eq!(core(not_a_dict), Err(DropReason::NotADict));
        assert_eq!(pubsub_message(&json(not_a_dict)), Err(DropReason::NotADict));
    }
}

#[test]
fn pubsub_ignores_what_gateways_published() {
    let from_django = json(r#"{"type":"chatgate.disconnect","user_id":1}"#);
    let got = pubsub_message(&from_django);
    assert_eq!(
        got,
        Ok(Some(LayerEvent::Disconnect {
            user_id: 1,
            code: 4003
        }))
    );
    let ours = with_node(&from_django, "n1");
    assert_eq!(pubsub_message(&ours), Ok(None));
    let (_, dict) = outgoing_dict(&typing_frame(true)).unwrap();
    assert_eq!(pubsub_message(&with_node(&dict, "n2")), Ok(None));
    assert!(matches!(
        pubsub_message(&dict),
        Ok(Some(LayerEvent::Typing { .. }))
    ));
    assert_eq!(
        pubsub_message(&json(r#"{"type":"other"}"#)),
        Err(DropReason::UnknownType)
    );
}

#[test]
fn decode_from_bytes_and_drop_reasons() {
    let codec = plain_codec();
    let dict = json(r#"{"type":"chatgate.disconnect","user_id":9,"code":4001}"#);
    let raw = codec.seal(&with_asgi_channel(&dict, &["chatgate.n1!3".into()]));
    let got = decode_core(&codec, &raw).unwrap();
    assert_eq!(got.channels, vec!["chatgate.n1!3"]);
    assert_eq!(
        got.event,
        LayerEvent::Disconnect {
            user_id: 9,
            code: 4001
        }
    );
    let pubsub = Codec::new(Format::Msgpack, &[], 0, None);
    let published = pubsub.seal(&dict);
    assert!(matches!(
        decode_pubsub(&pubsub, &published),
        Ok(Some(LayerEvent::Disconnect { .. }))
    ));
    assert_eq!(
        decode_pubsub(&pubsub, &pubsub.seal(&with_node(&dict, "n1"))),
        Ok(None)
    );

    assert_eq!(decode_core(&codec, b"short"), Err(DropReason::Short));
    let garbage = [&[0u8; 12][..], b"\xc1"].concat();
    assert_eq!(decode_core(&codec, &garbage), Err(DropReason::Garbage));
    let bin = [&[0u8; 12][..], b"\x81\xa1k\xc4\x00"].concat();
    assert_eq!(decode_core(&codec, &bin), Err(DropReason::Unsupported));
    let keyed = Codec::new(Format::Msgpack, &["key-one".into()], 12, None);
    assert_eq!(decode_core(&keyed, &raw), Err(DropReason::WrongKey));
    let labels: Vec<&str> = DropReason::ALL.iter().map(DropReason::label).collect();
    let mut unique = labels.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), labels.len());
}

#[test]
fn outgoing_dicts_from_the_gateways_frames() {
    let frame = new_message_frame();
    assert!(is_outgoing(&frame));
    let (kind, dict) = outgoing_dict(&frame).unwrap();
    assert_eq!(kind, Outgoing::Chat);
    let message = json(&String::from_utf8(frame.clone()).unwrap())
        .get("message")
        .cloned()
        .unwrap();
    let want = Value::Map(vec![
        ("type".into(), Value::Str("chat_message_broadcast".into())),
        ("message".into(), message),
    ]);
    assert_eq!(dict, want);
    // Through the layer and back: the very same frame.
    let back = core_message(with_asgi_channel(&dict, &["chatgate.n1!1".into()]));
    assert_eq!(back.unwrap().event, LayerEvent::Chat { payload: frame });

    for on in [true, false] {
        let frame = typing_frame(on);
        assert!(is_outgoing(&frame));
        let (kind, dict) = outgoing_dict(&frame).unwrap();
        assert_eq!(kind, Outgoing::Typing);
        let want = json(&format!(
            r#"{{"type":"typing_indicator","user_id":7,"username":"Дмитрий","is_typing":{on}}}"#
        ));
        assert_eq!(dict, want);
        let back = pubsub_message(&dict).unwrap();
        assert_eq!(
            back,
            Some(LayerEvent::Typing {
                user_id: 7,
                payload: frame
            })
        );
    }
}

#[test]
fn other_frames_are_not_outgoing() {
    let mut frames: Vec<Vec<u8>> = vec![
        protocol::PING.to_vec(),
        protocol::CONNECTION_ESTABLISHED.to_vec(),
        b"".to_vec(),
        br#"{"type":"typing"}"#.to_vec(),
        br#"{"type":"new_message"}"#.to_vec(),
        br#"{"type": "typing", "user_id": 1}"#.to_vec(),
    ];
    let mut f = Vec::new();
    protocol::encode_presence(&mut f, 1, "amy", true);
    frames.push(std::mem::take(&mut f));
    protocol::encode_reaction(&mut f, 5, 1, "amy", "👍", true);
    frames.push(std::mem::take(&mut f));
    protocol::encode_message_deleted(&mut f, 5);
    frames.push(std::mem::take(&mut f));
    protocol::encode_upload_progress(&mut f, 1, "amy", "u1", "f.png", 50);
    frames.push(std::mem::take(&mut f));
    for frame in frames {
        assert!(!is_outgoing(&frame), "{}", String::from_utf8_lossy(&frame));
        assert_eq!(outgoing_dict(&frame), None);
    }
    // The right head on a broken frame: no dict.
    for broken in [
        &br#"{"type":"new_message","message":5}"#[..],
        br#"{"type":"new_message","message":{"#,
        br#"{"type":"typing","user_id":"x","username":"a","is_typing":true}"#,
        br#"{"type":"typing","user_id":1,"username":"a"}"#,
    ] {
        assert!(is_outgoing(broken));
        assert_eq!(
            outgoing_dict(broken),
            None,
            "{}",
            String::from_utf8_lossy(broken)
        );
    }
}

#[test]
fn asgi_channel_goes_last_as_group_send_writes_it() {
    let v = vectors();
    let gs = &v["group_send"];
    let dict = json(gs["value"].as_str().unwrap());
    let channels: Vec<String> = gs["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    for entry in gs["entries"].as_array().unwrap() {
        let key = entry["key"].as_str().unwrap();
        let members: Vec<String> = channels
            .iter()
            .filter(|c| crate::channel_layer::names::channel_key("asgi", c) == key)
            .cloned()
            .collect();
        let mut ours = Vec::new();
        encode_msgpack(&with_asgi_channel(&dict, &members), &mut ours);
        let theirs = hex(entry["hex"].as_str().unwrap());
        assert_eq!(&theirs[12..], &ours[..], "{key}");
        let read = plain_codec().open_at(&theirs, 0).unwrap();
        assert_eq!(core_message(read).unwrap().channels, members);
    }
}

#[test]
fn with_entry_is_a_python_dict_update() {
    let dict = json(r#"{"type":"x","chatgate_node":"old","a":1}"#);
    let got = with_node(&dict, "new");
    assert_eq!(got, json(r#"{"type":"x","chatgate_node":"new","a":1}"#));
    let appended = with_node(&json(r#"{"type":"x"}"#), "n");
    assert_eq!(appended, json(r#"{"type":"x","chatgate_node":"n"}"#));
    assert_eq!(with_node(&Value::Int(1), "n"), Value::Int(1));
}

#[test]
fn a_value_over_the_size_limit_is_not_decoded() {
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    assert_eq!(
        decode_core(&plain_codec(), &big).err(),
        Some(DropReason::TooLarge)
    );
    assert_eq!(
        decode_pubsub(&plain_codec(), &big).err(),
        Some(DropReason::TooLarge)
    );
}
