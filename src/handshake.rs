//! The HTTP side of the WebSocket upgrade.
//!
//! Owns parsing and validating a request head: the path (404), the `Origin`
//! rule of Django Channels' `AllowedHostsOriginValidator` (403; the rule
//! itself is `routing::origin_allowed`), the RFC 6455
//! upgrade headers (400), token extraction (`?token=` wins over
//! `Authorization: Bearer`), the protocol version (the `chatgate.v2`
//! subprotocol) and `?since=` (400 when malformed), and the bytes of the
//! answers (101, 400, 403, 404); for the HTTP API's paths, the
//! [`ApiRequest`] that `http_api.rs` serves.
//! Pure functions over bytes: no I/O, no clock.
//!
//! Must never: look at the token's contents (that is `auth`), or accept an
//! upgrade whose headers RFC 6455 rejects.

use crate::protocol::{Version, V2_SUBPROTOCOL};
use crate::routing::{
    conversation_from_path, origin_allowed, query_param, split_target, token_from_query,
};
use crate::store::{ConversationId, MessageId};
use crate::web::{self, WebRequest};

/// A valid upgrade request for a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub conversation_id: ConversationId,
    /// The token from the query string, else from `Authorization: Bearer`.
    pub token: Option<String>,
    /// `Sec-WebSocket-Accept` value for the 101 answer.
    pub accept_key: String,
    /// `X-Real-IP` / `X-Forwarded-For` as sent (trusted only behind a configured proxy).
    pub forwarded_for: Option<String>,
    /// The protocol version the socket asked for (the 101 answer names it).
    pub version: Version,
    /// `?since=`: resume after this message id (v2 sockets only; ignored on v1).
    pub since: Option<MessageId>,
}

/// Why an upgrade request is refused before the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("bad request")]
    BadRequest,
    #[error("forbidden origin")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("too many handshakes from this address")]
    TooManyRequests,
}

impl Rejection {
    /// The full HTTP response for this rejection.
    pub fn response(self) -> &'static [u8] {
        match self {
            Self::BadRequest => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n"
            }
            Self::Forbidden => {
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nForbidden\n"
            }
            Self::NotFound => {
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nNot Found\n"
            }
            Self::HeadTooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Self::TooManyRequests => {
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 18\r\nRetry-After: 1\r\nConnection: close\r\n\r\nToo Many Requests\n"
            }
        }
    }

    /// The HTTP status code (a bounded metric label).
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::HeadTooLarge => 431,
            Self::TooManyRequests => 429,
        }
    }

    /// The status as a bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadRequest => "400",
            Self::Forbidden => "403",
            Self::NotFound => "404",
            Self::HeadTooLarge => "431",
            Self::TooManyRequests => "429",
        }
    }
}

/// The prefix of every path the HTTP API (`http_api.rs`) answers.
pub const PREFIX: &str = "/api/";

/// A request for the API, as read from its head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// `None`: an `/api/` path that is not a conversation's messages.
    pub conversation_id: Option<ConversationId>,
    pub query: Option<String>,
    pub token: Option<String>,
    pub origin: Option<String>,
}

/// `/api/conversations/<id>/messages/` (trailing slash optional) → the id.
pub fn conversation_of(path: &str) -> Option<ConversationId> {
    let rest = path.strip_prefix("/api/conversations/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (id, tail) = rest.split_once('/')?;
    if tail != "messages" || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().filter(|id| *id > 0)
}

/// Most headers a request head may have.
const MAX_HEADERS: usize = 64;

/// What a request head asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// A WebSocket upgrade of a chat path.
    Upgrade(Upgrade),
    /// A request of the HTTP history API (`/api/…`).
    Api(ApiRequest),
    /// A request for the demo page or a static file (`/`, `/static/…`).
    Web(WebRequest),
}

/// Parses an upgrade head at the start of `buf` (an `/api/` or page head
/// is 404 here). `Ok(None)`: incomplete, read more. `Ok(Some((head_len,
/// upgrade)))`: bytes after `head_len` are WebSocket data.
#[cfg(test)]
pub fn parse(
    buf: &[u8],
    allowed_origins: &[String],
) -> Result<Option<(usize, Upgrade)>, Rejection> {
    match parse_head(buf, allowed_origins)? {
        None => Ok(None),
        Some((n, Head::Upgrade(u))) => Ok(Some((n, u))),
        Some((_, Head::Api(_) | Head::Web(_))) => Err(Rejection::NotFound),
    }
}

/// Parses the head at the start of `buf`: an upgrade or an API request.
pub fn parse_head(
    buf: &[u8],
    allowed_origins: &[String],
) -> Result<Option<(usize, Head)>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        // httparse skips empty lines before the request line; a blank head is not a request.
        Ok(httparse::Status::Partial) if buf.windows(4).any(|w| w == b"\r\n\r\n") => {
            return Err(Rejection::BadRequest)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Rejection::BadRequest),
    };
    let target = req.path.ok_or(Rejection::BadRequest)?;
    if split_target(target).0.starts_with(PREFIX) {
        return Ok(Some((head_len, Head::Api(api_request(&req, target)))));
    }
    let path = split_target(target).0;
    if web::is_web_path(path) && header(&req, "upgrade").is_none() {
        let web = WebRequest {
            method: req.method.unwrap_or_default().to_owned(),
            path: path.to_owned(),
            if_none_match: header(&req, "if-none-match").map(str::to_owned),
        };
        return Ok(Some((head_len, Head::Web(web))));
    }
    let upgrade = validate(&req, allowed_origins)?;
    Ok(Some((head_len, Head::Upgrade(upgrade))))
}

fn api_request(req: &httparse::Request, target: &str) -> ApiRequest {
    let (path, query) = split_target(target);
    ApiRequest {
        method: req.method.unwrap_or_default().to_owned(),
        conversation_id: conversation_of(path),
        query: query.map(str::to_owned),
        token: header(req, "authorization")
            .and_then(bearer)
            .map(str::to_owned),
        origin: header(req, "origin").map(str::to_owned),
    }
}

fn validate(req: &httparse::Request, allowed_origins: &[String]) -> Result<Upgrade, Rejection> {
    let (path, query) = split_target(req.path.ok_or(Rejection::BadRequest)?);
    let conversation_id = conversation_from_path(path).ok_or(Rejection::NotFound)?;
    if let Some(origin) = header(req, "origin") {
        if !origin_allowed(origin, allowed_origins) {
            return Err(Rejection::Forbidden);
        }
    }
    let key = check_websocket_headers(req)?;
    let since = match query.and_then(|q| query_param(q, "since")) {
        Some(raw) => Some(parse_since(&raw).ok_or(Rejection::BadRequest)?),
        None => None,
    };
    let version = Version::negotiate(
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .filter_map(|h| std::str::from_utf8(h.value).ok()),
    );
    let token = query
        .and_then(token_from_query)
        .filter(|t| !t.is_empty())
        .or_else(|| {
            header(req, "authorization")
                .and_then(bearer)
                .map(str::to_owned)
        });
    let forwarded_for = header(req, "x-real-ip")
        .or_else(|| header(req, "x-forwarded-for"))
        .map(|s| s.trim().to_owned());
    Ok(Upgrade {
        conversation_id,
        token,
        accept_key: tungstenite::handshake::derive_accept_key(key.as_bytes()),
        forwarded_for,
        version,
        since: since.filter(|_| version == Version::V2),
    })
}

/// `since`: a decimal integer from 0 to 2^63−1 (leading zeros allowed).
fn parse_since(raw: &str) -> Option<MessageId> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// RFC 6455 §4.2.1: GET, HTTP/1.1, Host, `Upgrade: websocket`,
/// `Connection: upgrade`, a 16-byte base64 key, version 13.
fn check_websocket_headers<'a>(req: &httparse::Request<'_, 'a>) -> Result<&'a str, Rejection> {
    let ok = req.method == Some("GET")
        && req.version == Some(1)
        && header(req, "host").is_some()
        && header(req, "upgrade").is_some_and(|v| has_token(v, "websocket"))
        && header(req, "connection").is_some_and(|v| has_token(v, "upgrade"))
        && header(req, "sec-websocket-version").map(str::trim) == Some("13");
    let key = header(req, "sec-websocket-key").map(str::trim);
    match key {
        Some(k) if ok && is_websocket_key(k) => Ok(k),
        _ => Err(Rejection::BadRequest),
    }
}

/// A header's value as text (first occurrence; non-UTF-8 counts as absent).
fn header<'a>(req: &httparse::Request<'_, 'a>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// 24 base64 characters ending in `==`: the encoding of 16 bytes.
fn is_websocket_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The 101 answer; a v2 socket's names the subprotocol.
pub fn switching_protocols(accept_key: &str, version: Version) -> Vec<u8> {
    let protocol = match version {
        Version::V1 => String::new(),
        Version::V2 => format!("Sec-WebSocket-Protocol: {V2_SUBPROTOCOL}\r\n"),
    };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n{protocol}\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn head(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn origins() -> Vec<String> {
        vec!["localhost".into(), ".example.com".into(), "[::1]".into()]
    }

    #[test]
    fn valid_upgrade() {
        let h = head("/ws/chat/07/?token=abc", "");
        let (n, u) = parse(&h, &origins()).unwrap().unwrap();
        assert_eq!(n, h.len());
        assert_eq!(u.conversation_id, 7);
        assert_eq!(u.token.as_deref(), Some("abc"));
        assert_eq!(u.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn subprotocol_selects_the_version() {
        let parse_v = |extra: &str| {
            parse(&head("/ws/chat/1/", extra), &origins())
                .unwrap()
                .unwrap()
                .1
                .version
        };
        assert_eq!(parse_v(""), Version::V1);
        assert_eq!(
            parse_v("Sec-WebSocket-Protocol: chatgate.v2\r\n"),
            Version::V2
        );
        assert_eq!(
            parse_v("Sec-WebSocket-Protocol: other, chatgate.v2\r\n"),
            Version::V2
        );
        assert_eq!(
            parse_v("Sec-WebSocket-Protocol: other\r\nSec-WebSocket-Protocol: chatgate.v2\r\n"),
            Version::V2
        );
        assert_eq!(
            parse_v("Sec-WebSocket-Protocol: chatgate.v3, v2\r\n"),
            Version::V1
        );
        let v2 = String::from_utf8(switching_protocols("k", Version::V2)).unwrap();
        assert!(
            v2.contains("\r\nSec-WebSocket-Protocol: chatgate.v2\r\n\r\n"),
            "{v2}"
        );
        let v1 = String::from_utf8(switching_protocols("k", Version::V1)).unwrap();
        assert!(
            !v1.to_ascii_lowercase().contains("sec-websocket-protocol"),
            "{v1}"
        );
    }

    #[test]
    fn since_is_a_decimal_id_or_400() {
        let v2 = "Sec-WebSocket-Protocol: chatgate.v2\r\n";
        let since = |path: &str, extra: &str| {
            parse(&head(path, extra), &origins()).map(|r| r.unwrap().1.since)
        };
        assert_eq!(since("/ws/chat/1/?since=0", v2), Ok(Some(0)));
        assert_eq!(since("/ws/chat/1/?token=t&since=0042", v2), Ok(Some(42)));
        assert_eq!(
            since("/ws/chat/1/?since=9223372036854775807", v2),
            Ok(Some(i64::MAX))
        );
        assert_eq!(since("/ws/chat/1/", v2), Ok(None));
        // Ignored on v1, but still checked.
        assert_eq!(since("/ws/chat/1/?since=5", ""), Ok(None));
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "x",
            "9223372036854775808",
            "1%20",
            "%31a",
        ] {
            let path = format!("/ws/chat/1/?since={bad}");
            assert_eq!(since(&path, v2), Err(Rejection::BadRequest), "{bad:?}");
            assert_eq!(
                since(&path, ""),
                Err(Rejection::BadRequest),
                "{bad:?} on v1"
            );
        }
        assert_eq!(since("/ws/chat/1/?since", v2), Err(Rejection::BadRequest));
    }

    #[test]
    fn partial_head_needs_more() {
        let h = head("/ws/chat/1/", "");
        assert_eq!(parse(&h[..h.len() - 3], &origins()), Ok(None));
    }

    #[test]
    fn bearer_token_and_query_precedence() {
        let h = head("/ws/chat/1/", "Authorization: Bearer hdr\r\n");
        assert_eq!(
            parse(&h, &origins()).unwrap().unwrap().1.token.as_deref(),
            Some("hdr")
        );
        let h = head("/ws/chat/1/?token=q", "Authorization: Bearer hdr\r\n");
        assert_eq!(
            parse(&h, &origins()).unwrap().unwrap().1.token.as_deref(),
            Some("q")
        );
        let h = head("/ws/chat/1/?token=", "Authorization: Bearer hdr\r\n");
        assert_eq!(
            parse(&h, &origins()).unwrap().unwrap().1.token.as_deref(),
            Some("hdr")
        );
        let h = head("/ws/chat/1/", "");
        assert_eq!(parse(&h, &origins()).unwrap().unwrap().1.token, None);
    }

    #[test]
    fn rejections() {
        assert_eq!(
            parse(&head("/other/", ""), &origins()),
            Err(Rejection::NotFound)
        );
        assert_eq!(
            parse(&head("/ws/chat/0/", ""), &origins()),
            Err(Rejection::NotFound)
        );
        assert_eq!(
            parse(
                &head("/ws/chat/1/", "Origin: http://evil.test\r\n"),
                &origins()
            ),
            Err(Rejection::Forbidden)
        );
        assert_eq!(
            parse(b"garbage\r\n\r\n", &origins()),
            Err(Rejection::BadRequest)
        );
        assert_eq!(parse(b"\r\n\r\n", &origins()), Err(Rejection::BadRequest));
        assert_eq!(parse(b"\r\n", &origins()), Ok(None));
        let no_key = b"GET /ws/chat/1/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert_eq!(parse(no_key, &origins()), Err(Rejection::BadRequest));
        let v8 = String::from_utf8(head("/ws/chat/1/", ""))
            .unwrap()
            .replace("Version: 13", "Version: 8");
        assert_eq!(parse(v8.as_bytes(), &origins()), Err(Rejection::BadRequest));
        let bad_key = String::from_utf8(head("/ws/chat/1/", ""))
            .unwrap()
            .replace(KEY, "short");
        assert_eq!(
            parse(bad_key.as_bytes(), &origins()),
            Err(Rejection::BadRequest)
        );
        let plain = b"GET /ws/chat/1/ HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse(plain, &origins()), Err(Rejection::BadRequest));
        let post = String::from_utf8(head("/ws/chat/1/", ""))
            .unwrap()
            .replace("GET", "POST");
        assert_eq!(
            parse(post.as_bytes(), &origins()),
            Err(Rejection::BadRequest)
        );
    }

    #[test]
    fn origin_rules() {
        let o = origins();
        assert!(origin_allowed("http://localhost:3000", &o));
        assert!(origin_allowed("https://LOCALHOST", &o));
        assert!(origin_allowed("https://example.com", &o));
        assert!(origin_allowed("https://chat.example.com:443", &o));
        assert!(origin_allowed("http://[::1]:8000", &o));
        assert!(!origin_allowed("https://badexample.com", &o));
        assert!(!origin_allowed("http://evil.test", &o));
        assert!(!origin_allowed("null", &o));
        assert!(!origin_allowed("http://localhost.evil.test", &o));
        assert!(origin_allowed("null", &["*".to_string()]));
    }

    #[test]
    fn api_paths() {
        assert_eq!(conversation_of("/api/conversations/7/messages/"), Some(7));
        assert_eq!(conversation_of("/api/conversations/07/messages"), Some(7));
        for bad in [
            "/api/conversations/0/messages/",
            "/api/conversations/x/messages/",
            "/api/conversations//messages/",
            "/api/conversations/7/",
            "/api/conversations/7/messages/extra/",
            "/api/other",
        ] {
            assert_eq!(conversation_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn switching_protocols_answer() {
        let r = String::from_utf8(switching_protocols("abc", Version::V1)).unwrap();
        assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(r.contains("Sec-WebSocket-Accept: abc\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
