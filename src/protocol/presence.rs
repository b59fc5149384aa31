//! Presence events (docs/protocol.md §9.5): `presence_state` on connect and
//! `presence` on a transition. Server → client only; v2 sockets only.
//!
//! Owns the two encoders. Who is online, and when an event is due, is
//! decided by `crate::presence`.
//!
//! Must never: be sent to a v1 socket (the callers' audience is v2 only).

use super::json::{push_i64, write_json_str};
use crate::ids::UserId;

/// Appends `{"type":"presence_state","online":[{"user_id":U,"username":"..."},...],"count":N}`.
pub fn encode_presence_state<S: AsRef<str>>(
    out: &mut Vec<u8>,
    online: &[(UserId, S)],
    count: usize,
) {
    out.reserve(48 + 40 * online.len());
    out.extend_from_slice(br#"{"type":"presence_state","online":["#);
    for (i, (user, name)) in online.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"user_id":"#);
        push_i64(out, *user);
        out.extend_from_slice(br#","username":"#);
        write_json_str(out, name.as_ref());
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"count":"#);
    push_i64(out, count as i64);
    out.push(b'}');
}

/// Appends `{"type":"presence","user_id":U,"username":"...","status":"online"|"offline"}`.
pub fn encode_presence(out: &mut Vec<u8>, user: UserId, username: &str, online: bool) {
    out.reserve(80 + username.len());
    out.extend_from_slice(br#"{"type":"presence","user_id":"#);
    push_i64(out, user);
    out.extend_from_slice(br#","username":"#);
    write_json_str(out, username);
    out.extend_from_slice(if online {
        br#","status":"online"}"#
    } else {
        br#","status":"offline"}"#
    });
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).expect("valid JSON")
    }

    #[test]
    fn encoders_write_the_documented_shapes() {
        let mut out = Vec::new();
        encode_presence_state(&mut out, &[(1, "a\"b"), (2, "é")], 5);
        assert_eq!(
            parse(&out),
            json!({"type":"presence_state","online":[
                {"user_id":1,"username":"a\"b"},{"user_id":2,"username":"é"}],"count":5})
        );
        out.clear();
        encode_presence_state::<&str>(&mut out, &[], 0);
        assert_eq!(
            parse(&out),
            json!({"type":"presence_state","online":[],"count":0})
        );
        out.clear();
        encode_presence(&mut out, 3, "bob", true);
        assert_eq!(
            parse(&out),
            json!({"type":"presence","user_id":3,"username":"bob","status":"online"})
        );
        out.clear();
        encode_presence(&mut out, 3, "bob", false);
        assert_eq!(parse(&out)["status"], "offline");
    }
}
