//! The names the gateway uses in a Channels layer: its member and process
//! channel names, the groups of conversations, their Redis keys, and the
//! host a name lives on (channels_redis's consistent hash).
//!
//! Owns the name rules of Channels (`channels.layers.BaseChannelLayer`:
//! `[A-Za-z0-9_.-]`, shorter than 100 characters, a process-local part
//! after `!`) and of channels_redis (`core.py`, `pubsub.py`, `utils.py`),
//! written once here so the runtime never builds a key by hand.
//!
//! Must never: produce a member name Channels would refuse, or a member
//! name another node's token could also produce (the token is the node's).

/// What every gateway member name starts with (`chatgate.<node>!<id>`).
pub(crate) const MEMBER_PREFIX: &str = "chatgate.";
/// Channels' `MAX_NAME_LENGTH`: a name must be shorter.
pub(crate) const MAX_NAME_LENGTH: usize = 100;
/// The longest node token: `chatgate.` (9) + token + `!` + an i64 (at most
/// 20 characters) stays below [`MAX_NAME_LENGTH`].
pub(crate) const MAX_NODE_TOKEN: usize = 64;
/// The default `--channel-layer-group` template.
pub(crate) const DEFAULT_GROUP_TEMPLATE: &str = "chat_{id}";

/// The host index of `name` among `ring_size` hosts, as
/// `channels_redis.utils._consistent_hash`: 0 for one host (and, where
/// Python would divide by zero, for none); else
/// `int((crc32(utf8) & 0xFFF) / (4096 / ring_size))` in float arithmetic.
pub(crate) fn consistent_hash(name: &str, ring_size: usize) -> usize {
    if ring_size <= 1 {
        return 0;
    }
    let bigval = crc32fast::hash(name.as_bytes()) & 0xFFF;
    let ring_divisor = 4096.0 / ring_size as f64;
    // Non-negative and below ring_size: the cast truncates as int() does.
    (f64::from(bigval) / ring_divisor) as usize
}

/// The node id as it appears in channel names: each character outside
/// `[A-Za-z0-9_.-]` replaced with `_` (an empty id becomes `_`); an id
/// longer than [`MAX_NODE_TOKEN`] keeps its first 55 characters, then `-`
/// and the CRC-32 of the whole id in 8 hex digits, so two long ids sharing
/// a start still differ.
pub(crate) fn node_token(node_id: &str) -> String {
    let mut token: String = node_id
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    if token.is_empty() {
        token.push('_');
    }
    if token.len() > MAX_NODE_TOKEN {
        let crc = crc32fast::hash(node_id.as_bytes());
        token.truncate(MAX_NODE_TOKEN - 9);
        token.push_str(&format!("-{crc:08x}"));
    }
    token
}

/// `[A-Za-z0-9_.-]`: the characters of a Channels group name, and of a
/// channel name before its `!`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Whether Channels accepts `name` as a group name (`group_name_regex`
/// and the length limit): checked on the configured template.
pub(crate) fn is_valid_group_name(name: &str) -> bool {
    !name.is_empty() && name.len() < MAX_NAME_LENGTH && name.chars().all(is_name_char)
}

/// The group of a conversation: `template` with every `{id}` replaced
/// (default [`DEFAULT_GROUP_TEMPLATE`], `chat_{id}`).
pub(crate) fn group_name(template: &str, conversation_id: i64) -> String {
    template.replace("{id}", &conversation_id.to_string())
}

/// The group's sorted set on the core layer: `{prefix}:group:{group}`.
pub(crate) fn group_key(prefix: &str, group: &str) -> String {
    format!("{prefix}:group:{group}")
}

/// The part of a channel name up to and including its first `!` (the
/// whole name when it has none): which queue its messages go through.
pub(crate) fn non_local_name(channel: &str) -> &str {
    match channel.find('!') {
        Some(i) => &channel[..=i],
        None => channel,
    }
}

/// The queue's sorted set of a channel on the core layer: the prefix and
/// the non-local name with no separator (`asgispecific.<hex>!`).
pub(crate) fn channel_key(prefix: &str, channel: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + channel.len());
    key.push_str(prefix);
    key.push_str(non_local_name(channel));
    key
}

/// This node's process channel (the non-local name of all its members):
/// `chatgate.<node>!`; its queue is [`channel_key`] of it.
pub(crate) fn process_channel(node_token: &str) -> String {
    format!("{MEMBER_PREFIX}{node_token}!")
}

/// The node's member name in a conversation's group: `chatgate.<node>!<id>`.
pub(crate) fn member_name(node_token: &str, conversation_id: i64) -> String {
    format!("{MEMBER_PREFIX}{node_token}!{conversation_id}")
}

/// The conversation a member name of THIS node stands for (the inverse of
/// [`member_name`]); `None` for another node's names, Daphne's channels
/// and anything not written by [`member_name`] (signs, leading zeros).
pub(crate) fn conversation_of_member(node_token: &str, channel: &str) -> Option<i64> {
    let digits = channel
        .strip_prefix(MEMBER_PREFIX)?
        .strip_prefix(node_token)?
        .strip_prefix('!')?;
    let canonical = match digits.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if canonical {
        digits.parse().ok()
    } else {
        None
    }
}

/// Whether a group member is a gateway node (any node), not a consumer
/// still on Daphne.
pub(crate) fn is_gateway_member(channel: &str) -> bool {
    channel.starts_with(MEMBER_PREFIX)
}

/// The pub/sub layer's Redis channel of a group, as `pubsub.py`'s
/// `_get_group_channel_name`: `{prefix}__group__{group}`.
pub(crate) fn pubsub_channel(prefix: &str, group: &str) -> String {
    format!("{prefix}__group__{group}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_layer::wire::testing::vectors;

    #[test]
    fn consistent_hash_is_pythons() {
        let v = vectors();
        let table = v["consistent_hash"]["table"].as_array().unwrap();
        assert!(table.len() > 200);
        for row in table {
            let name = row[0].as_str().unwrap();
            for (i, want) in row[1].as_array().unwrap().iter().enumerate() {
                let ring = i + 1;
                let want = want.as_u64().unwrap() as usize;
                assert_eq!(consistent_hash(name, ring), want, "{name:?} ring {ring}");
            }
        }
        assert_eq!(consistent_hash("anything", 0), 0);
    }

    #[test]
    fn node_tokens() {
        assert_eq!(node_token("0a1b2c3d4e5f6071"), "0a1b2c3d4e5f6071");
        assert_eq!(node_token("gw-1.eu_west"), "gw-1.eu_west");
        assert_eq!(node_token("host:8000/é x!"), "host_8000___x_");
        assert_eq!(node_token("a b"), "a_b");
        assert_eq!(node_token("é"), "_");
        assert_eq!(node_token(""), "_");
        let long_a = format!("{}a", "n".repeat(100));
        let long_b = format!("{}b", "n".repeat(100));
        let (a, b) = (node_token(&long_a), node_token(&long_b));
        assert_eq!(a.len(), MAX_NODE_TOKEN);
        assert_ne!(a, b);
        assert!(a.starts_with(&"n".repeat(55)));
        assert_eq!(
            node_token(&"m".repeat(MAX_NODE_TOKEN)),
            "m".repeat(MAX_NODE_TOKEN)
        );
    }

    #[test]
    fn member_names_are_valid_channel_names() {
        let token = node_token(&"x".repeat(300));
        let name = member_name(&token, i64::MIN);
        assert!(name.len() < MAX_NAME_LENGTH, "{}", name.len());
        assert_eq!(member_name("n1", 42), "chatgate.n1!42");
        assert_eq!(process_channel("n1"), "chatgate.n1!");
        assert_eq!(
            non_local_name(&member_name("n1", 42)),
            process_channel("n1")
        );
    }

    #[test]
    fn members_map_back_to_this_nodes_conversations_only() {
        assert_eq!(conversation_of_member("n1", "chatgate.n1!42"), Some(42));
        assert_eq!(
            conversation_of_member("n1", &member_name("n1", i64::MAX)),
            Some(i64::MAX)
        );
        for other in [
            "chatgate.n2!42",
            "chatgate.n1x!42",
            "chatgate.n!42",
            "chatgate.n1!",
            "chatgate.n1!+42",
            "chatgate.n1!042",
            "chatgate.n1!-3",
            "chatgate.n1!4 2",
            "chatgate.n1!99999999999999999999",
            "specific.abc!def",
            "n1!42",
        ] {
            assert_eq!(conversation_of_member("n1", other), None, "{other}");
        }
        assert!(is_gateway_member("chatgate.n2!1"));
        assert!(!is_gateway_member("specific.abc!def"));
    }

    #[test]
    fn keys_as_channels_redis_writes_them() {
        assert_eq!(group_name(DEFAULT_GROUP_TEMPLATE, 12), "chat_12");
        assert_eq!(group_name("room-{id}.{id}", 3), "room-3.3");
        assert_eq!(group_key("asgi", "chat_12"), "asgi:group:chat_12");
        assert_eq!(channel_key("asgi", "specific.abc!def"), "asgispecific.abc!");
        assert_eq!(channel_key("asgi", "daphne.plain"), "asgidaphne.plain");
        assert_eq!(non_local_name("a!b!c"), "a!");
        assert_eq!(pubsub_channel("asgi", "chat_12"), "asgi__group__chat_12");
        assert!(is_valid_group_name("chat_12"));
        assert!(!is_valid_group_name("chat 12"));
        assert!(!is_valid_group_name(""));
        assert!(!is_valid_group_name(&"g".repeat(MAX_NAME_LENGTH)));
    }

    /// The keys group_send wrote in the vectors are ours for its members.
    #[test]
    fn group_send_keys_match() {
        let v = vectors();
        let gs = &v["group_send"];
        let keys: Vec<&str> = gs["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap())
            .collect();
        let mut ours: Vec<String> = Vec::new();
        for c in gs["channels"].as_array().unwrap() {
            let key = channel_key("asgi", c.as_str().unwrap());
            if !ours.contains(&key) {
                ours.push(key);
            }
        }
        assert_eq!(ours, keys);
    }
}
