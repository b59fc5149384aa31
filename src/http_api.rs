//! The HTTP history API on the WebSocket port (docs/protocol.md §9.2).
//!
//! `GET /api/conversations/<id>/messages/?before=<id>&limit=<n>` with
//! `Authorization: Bearer <access token>` answers
//! `{"results":[...],"has_more":bool}`: the same selection and order as the
//! socket's `history`. Errors are DRF-shaped `{"detail":"..."}`: 401 (no or
//! bad token, unknown or inactive user: what closes a socket with 4001),
//! 403 (not a participant, or no such conversation: 4003), 405 (another
//! method), 400 (bad `before`/`limit`), 404 (another `/api/` path). CORS
//! follows `--allowed-origins`: an allowed `Origin` is echoed back, and a
//! preflight (`OPTIONS`) is answered without a token.
//!
//! The request is answered by the shard that read it (no hand-off: nothing
//! stays open), with one store lookup for the user and membership and one
//! history read, then the connection is closed.
//!
//! Must never: answer before the token and the membership are checked, or
//! put the token in a log line.

use std::net::SocketAddr;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::handshake::ApiRequest;
use crate::protocol;
use crate::routing::{origin_allowed, query_param};
use crate::shard_ctx::ShardCtx;
use crate::store::requests::V2Request;
use crate::store::{ConversationId, MessageId};

/// The paging parameters of a valid request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub before: Option<MessageId>,
    pub limit: u32,
}

/// An answer: status, body (JSON unless empty), whether it allows CORS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Extra header lines (each ending in `\r\n`).
    pub headers: String,
}

/// `before` and `limit` from the query string (DRF-style 400 text when bad).
pub fn paging(query: Option<&str>) -> Result<Paging, &'static str> {
    let get = |name| query.and_then(|q| query_param(q, name));
    let positive = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
            .filter(|n| *n > 0)
    };
    let before = match get("before") {
        None => None,
        Some(s) => Some(positive(&s).ok_or("before must be a positive message id.")?),
    };
    let limit = match get("limit") {
        None => 50,
        Some(s) => positive(&s)
            .filter(|n| *n <= 100)
            .ok_or("limit must be an integer from 1 to 100.")? as u32,
    };
    Ok(Paging { before, limit })
}

fn detail(status: u16, text: &str) -> Answer {
    let mut body = Vec::with_capacity(text.len() + 16);
    protocol::encode_detail(&mut body, text);
    Answer {
        status,
        body,
        headers: String::new(),
    }
}

/// What to answer before any store work (404, preflight, 405, 401, 400),
/// or the user's token and the paging to look up.
pub fn precheck(req: &ApiRequest) -> Result<(ConversationId, Paging), Answer> {
    let Some(conversation) = req.conversation_id else {
        return Err(detail(404, "Not found."));
    };
    if req.method == "OPTIONS" {
        return Err(Answer {
            status: 204,
            body: Vec::new(),
            headers: "Access-Control-Allow-Methods: GET, OPTIONS\r\nAccess-Control-Allow-Headers: authorization, content-type\r\nAccess-Control-Max-Age: 86400\r\n".into(),
        });
    }
    if req.token.as_deref().is_none_or(str::is_empty) {
        return Err(detail(401, "Authentication credentials were not provided."));
    }
    if req.method != "GET" && req.method != "HEAD" {
        let mut a = detail(405, &format!("Method \"{}\" not allowed.", req.method));
        a.headers.push_str("Allow: GET, OPTIONS\r\n");
        return Err(a);
    }
    let paging = paging(req.query.as_deref()).map_err(|m| detail(400, m))?;
    Ok((conversation, paging))
}

/// The response bytes for `answer`, with CORS headers for an allowed origin.
pub fn response(
    answer: &Answer,
    origin: Option<&str>,
    allowed: &[String],
    head_only: bool,
) -> Vec<u8> {
    let reason = match answer.status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    if !answer.body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if answer.status == 401 {
        head.push_str("WWW-Authenticate: Bearer realm=\"api\"\r\n");
    }
    if let Some(o) = origin.filter(|o| origin_allowed(o, allowed)) {
        head.push_str(&format!(
            "Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"
        ));
    }
    head.push_str(&answer.headers);
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.body.len()
    ));
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(&answer.body);
    }
    out
}

/// Answers one API request on `stream` (the accepting shard), then closes.
pub async fn serve(ctx: &ShardCtx, mut stream: TcpStream, peer: SocketAddr, req: ApiRequest) {
    let answer = match precheck(&req) {
        Err(a) => a,
        Ok((conversation, paging)) => lookup(ctx, &req, conversation, paging, peer).await,
    };
    let bytes = response(
        &answer,
        req.origin.as_deref(),
        &ctx.config().allowed_origins,
        req.method == "HEAD",
    );
    let _ = monoio::time::timeout(ctx.config().timeouts.write_stall, stream.write_all(bytes)).await;
}

/// The token, the membership and the page.
async fn lookup(
    ctx: &ShardCtx,
    req: &ApiRequest,
    conversation_id: ConversationId,
    paging: Paging,
    peer: SocketAddr,
) -> Answer {
    let token = match ctx.verifier().verify(req.token.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(%peer, reason = e.label(), "history API: authentication failed");
            return detail(401, "Given token not valid for any token type");
        }
    };
    let timeout = ctx.config().timeouts.store;
    let info = monoio::time::timeout(
        timeout,
        ctx.store().connect_info(token.user_id, conversation_id),
    )
    .await;
    match info {
        Ok(Ok(info)) => match info.user {
            Some(u) if u.is_active && info.is_participant => {}
            Some(u) if u.is_active => {
                return detail(403, "You do not have permission to perform this action.")
            }
            _ => return detail(401, "User not found"),
        },
        _ => return detail(503, "The database did not answer."),
    }
    let page = ctx.store().v2(|reply| V2Request::History {
        conversation_id,
        user_id: token.user_id,
        before: paging.before,
        limit: paging.limit,
        reply,
    });
    match monoio::time::timeout(timeout, page).await {
        Ok(Ok(page)) => {
            let mut body = Vec::with_capacity(32 + 200 * page.items.len());
            protocol::encode_history_results(&mut body, &page.items, page.has_more);
            Answer {
                status: 200,
                body,
                headers: String::new(),
            }
        }
        _ => detail(503, "The database did not answer."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::conversation_of;

    fn req(method: &str, path: &str, query: Option<&str>, token: Option<&str>) -> ApiRequest {
        ApiRequest {
            method: method.into(),
            conversation_id: conversation_of(path),
            query: query.map(str::to_owned),
            token: token.map(str::to_owned),
            origin: None,
        }
    }

    #[test]
    fn paging_rules() {
        assert_eq!(
            paging(None),
            Ok(Paging {
                before: None,
                limit: 50
            })
        );
        assert_eq!(
            paging(Some("before=9&limit=100")),
            Ok(Paging {
                before: Some(9),
                limit: 100
            })
        );
        for bad in [
            "limit=0",
            "limit=101",
            "limit=x",
            "before=0",
            "before=-1",
            "before=",
            "limit=1.5",
        ] {
            assert!(paging(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn prechecks_in_drf_order() {
        let status = |r: ApiRequest| precheck(&r).err().map(|a| a.status);
        assert_eq!(status(req("GET", "/api/nope", None, Some("t"))), Some(404));
        assert_eq!(
            status(req("OPTIONS", "/api/conversations/1/messages/", None, None)),
            Some(204)
        );
        assert_eq!(
            status(req("GET", "/api/conversations/1/messages/", None, None)),
            Some(401)
        );
        assert_eq!(
            status(req(
                "POST",
                "/api/conversations/1/messages/",
                None,
                Some("t")
            )),
            Some(405)
        );
        assert_eq!(
            status(req(
                "GET",
                "/api/conversations/1/messages/",
                Some("limit=0"),
                Some("t")
            )),
            Some(400)
        );
        assert_eq!(
            status(req(
                "GET",
                "/api/conversations/1/messages/",
                Some("limit=5"),
                Some("t")
            )),
            None
        );
    }

    #[test]
    fn responses_carry_cors_for_allowed_origins_only() {
        let a = detail(403, "no");
        let allowed = vec!["localhost".to_string()];
        let text = |origin| String::from_utf8(response(&a, origin, &allowed, false)).unwrap();
        let ok = text(Some("http://localhost:3000"));
        assert!(ok.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{ok}");
        assert!(
            ok.contains("Access-Control-Allow-Origin: http://localhost:3000\r\n"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\n{\"detail\":\"no\"}"), "{ok}");
        assert!(!text(Some("http://evil.example")).contains("Access-Control"));
        let head = String::from_utf8(response(&a, None, &allowed, true)).unwrap();
        assert!(
            head.ends_with("\r\n\r\n") && head.contains("Content-Length: 15\r\n"),
            "{head}"
        );
    }
}
