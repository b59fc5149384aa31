//! Routing: which shard owns a conversation, and what a request target says.
//!
//! Owns `shard_for` (the one sharding function), parsing of the
//! `/ws/chat/<id>/` path, extraction of the `token` query parameter, and
//! the `Origin` rule (`origin_allowed`) both the upgrade and the HTTP API
//! apply.
//! Pure functions only: no I/O, no state.

use crate::ids::ConversationId;

/// The shard that owns conversation `conversation_id` among `shards` shards.
pub fn shard_for(conversation_id: ConversationId, shards: usize) -> usize {
    debug_assert!(shards > 0 && conversation_id > 0);
    (conversation_id as u64 % shards as u64) as usize
}

/// Parses `/ws/chat/<id>/` (trailing slash optional, leading zeros allowed,
/// id in 1..=2^63-1). Returns `None` for any other path.
pub fn conversation_from_path(path: &str) -> Option<ConversationId> {
    let rest = path.strip_prefix("/ws/chat/")?;
    let digits = rest.strip_suffix('/').unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() || trimmed.len() > 19 {
        return None;
    }
    trimmed.parse::<i64>().ok().filter(|&id| id > 0)
}

/// Splits a request target into path and query.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// The percent-decoded value of the first `token` query parameter, if any.
pub fn token_from_query(query: &str) -> Option<String> {
    query_param(query, "token")
}

/// The percent-decoded value of the first query parameter `name`, if any
/// (`name` without `=` gives an empty value).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Decodes `%XX` escapes and `+` (form encoding). Invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Django's `AllowedHostsOriginValidator`: the Origin's host must match a
/// pattern: `*`, an exact host, or `.example.com` (the domain and its subdomains).
pub fn origin_allowed(origin: &str, patterns: &[String]) -> bool {
    if patterns.iter().any(|p| p == "*") {
        return true;
    }
    let Some(host) = origin_host(origin) else {
        return false;
    };
    patterns
        .iter()
        .any(|p| host_matches(&host, &p.to_ascii_lowercase()))
}

fn host_matches(host: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('.') {
        Some(domain) => host == domain || host.ends_with(pattern),
        None => host == pattern,
    }
}

/// The lower-cased host of `scheme://host[:port]`; IPv6 keeps its brackets.
fn origin_host(origin: &str) -> Option<String> {
    let (_, rest) = origin.trim().split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_for_is_modulo() {
        assert_eq!(shard_for(7, 2), 1);
        assert_eq!(shard_for(8, 2), 0);
        assert_eq!(shard_for(5, 1), 0);
        assert_eq!(shard_for(i64::MAX, 3), (i64::MAX as u64 % 3) as usize);
        for c in 1..100 {
            assert!(shard_for(c, 4) < 4);
        }
    }

    #[test]
    fn paths() {
        assert_eq!(conversation_from_path("/ws/chat/7/"), Some(7));
        assert_eq!(conversation_from_path("/ws/chat/7"), Some(7));
        assert_eq!(conversation_from_path("/ws/chat/007/"), Some(7));
        assert_eq!(
            conversation_from_path("/ws/chat/9223372036854775807/"),
            Some(i64::MAX)
        );
        assert_eq!(
            conversation_from_path("/ws/chat/0009223372036854775807/"),
            Some(i64::MAX)
        );
        for bad in [
            "/ws/chat/0/",
            "/ws/chat/000/",
            "/ws/chat//",
            "/ws/chat/",
            "/ws/chat/-1/",
            "/ws/chat/+1/",
            "/ws/chat/abc/",
            "/ws/chat/1a/",
            "/ws/chat/9223372036854775808/",
            "/ws/chat/7//",
            "/ws/chat/7/x",
            "/other/",
            "/",
        ] {
            assert_eq!(conversation_from_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_token() {
        assert_eq!(token_from_query("token=abc"), Some("abc".into()));
        assert_eq!(token_from_query("a=1&token=x%2Ey&b"), Some("x.y".into()));
        assert_eq!(token_from_query("token="), Some(String::new()));
        assert_eq!(token_from_query("tokens=1"), None);
        assert_eq!(token_from_query("token=a&token=b"), Some("a".into()));
        assert_eq!(token_from_query("token=%zz"), Some("%zz".into()));
        assert_eq!(split_target("/p?q=1"), ("/p", Some("q=1")));
        assert_eq!(split_target("/p"), ("/p", None));
    }
}
