//! Who may call the server API: the key a request carries, compared with
//! every configured key in constant time.
//!
//! Owns: reading the key from `Authorization: apikey <KEY>` or
//! `X-API-Key: <KEY>`, and the comparison (time independent of where the
//! bytes differ; every configured key is compared, so the time does not
//! tell which key matched either).
//!
//! Must never: log, echo or keep a presented key, or short-cut the
//! comparison on the first differing byte.

use http::header::{HeaderMap, AUTHORIZATION};

use crate::config::ApiKeys;

/// The header that carries a key on its own.
const X_API_KEY: &str = "x-api-key";
/// The `Authorization` scheme of a key (case-insensitive).
const SCHEME: &str = "apikey";

/// Whether `headers` carry one of `keys`.
pub(crate) fn authorized(headers: &HeaderMap, keys: &ApiKeys) -> bool {
    let Some(presented) = presented_key(headers) else {
        return false;
    };
    keys.0.iter().fold(false, |any, key| {
        any | constant_time_eq(presented, key.as_bytes())
    })
}

/// The key a request presents, if any (`Authorization` first).
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    let from_authorization = headers.get(AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        let (scheme, rest) = v.split_at(v.iter().position(|b| *b == b' ')?);
        scheme
            .eq_ignore_ascii_case(SCHEME.as_bytes())
            .then(|| rest.trim_ascii())
    });
    from_authorization
        .or_else(|| headers.get(X_API_KEY).map(|v| v.as_bytes().trim_ascii()))
        .filter(|k| !k.is_empty())
}

/// Equality whose time depends only on the lengths, never on the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let longest = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> ApiKeys {
        ApiKeys(vec!["old-key".into(), "new-key".into()])
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn either_header_and_either_key() {
        assert!(authorized(
            &with("authorization", "apikey old-key"),
            &keys()
        ));
        assert!(authorized(
            &with("authorization", "ApiKey new-key"),
            &keys()
        ));
        assert!(authorized(&with("x-api-key", "new-key"), &keys()));
    }

    #[test]
    fn wrong_missing_or_other_scheme_is_refused() {
        assert!(!authorized(&HeaderMap::new(), &keys()));
        assert!(!authorized(
            &with("authorization", "Bearer old-key"),
            &keys()
        ));
        assert!(!authorized(&with("authorization", "apikey"), &keys()));
        assert!(!authorized(
            &with("authorization", "apikey old-ke"),
            &keys()
        ));
        assert!(!authorized(
            &with("authorization", "apikey old-keyy"),
            &keys()
        ));
        assert!(!authorized(&with("x-api-key", ""), &keys()));
        assert!(!authorized(
            &with("x-api-key", "old-key"),
            &ApiKeys::default()
        ));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
