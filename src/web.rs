//! The demo chat page and the browser client, served on the WebSocket port.
//!
//! `GET /` (and `/index.html`) answers `web/index.html`; `/static/<name>`
//! answers the page's script and stylesheet and `chatgate.js`, the client
//! module other apps may load, with the two modules it imports
//! (`emitter.js`, `calls.js`). The files are embedded in the binary
//! (`include_bytes!`), so the gateway still needs nothing beside itself.
//! Every answer carries an `ETag` and `Cache-Control: no-cache` (the names
//! are not versioned, so a browser revalidates and gets a `304` while the
//! binary is the same), `X-Content-Type-Options: nosniff` and a
//! Content-Security-Policy that allows only this origin's scripts and
//! sockets. `--web off` turns all of it into 404s.
//!
//! Pure functions over the request; the shard writes the bytes.
//!
//! Must never: read the file system at run time, or see a token (the page
//! keeps it in the URL fragment, which browsers never send).

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/static/chatgate.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/chatgate.js"),
    },
    Asset {
        path: "/static/emitter.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/emitter.js"),
    },
    Asset {
        path: "/static/calls.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/calls.js"),
    },
    Asset {
        path: "/static/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/static/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/style.css"),
    },
];

/// What the page may load: its own scripts, styles and sockets; media
/// streams (camera previews) as `blob:`/`mediastream:`.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

/// A request for the page or a static file, as read from its head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebRequest {
    pub method: String,
    pub path: String,
    /// `If-None-Match` as sent.
    pub if_none_match: Option<String>,
}

/// Whether `path` (without the query) belongs to this module.
pub fn is_web_path(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/static/")
}

/// The strong validator of a body: FNV-1a, 64 bits, quoted.
fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn plain(status: &str, text: &str, extra: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        text.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// The full response to `req`; `enabled` is `--web`.
pub fn response(req: &WebRequest, enabled: bool) -> Vec<u8> {
    let head_only = req.method == "HEAD";
    let asset = ASSETS.iter().find(|a| a.path == req.path);
    let Some(asset) = asset.filter(|_| enabled) else {
        return plain("404 Not Found", "Not Found\n", "", head_only);
    };
    if req.method != "GET" && !head_only {
        return plain(
            "405 Method Not Allowed",
            "Method Not Allowed\n",
            "Allow: GET, HEAD\r\n",
            false,
        );
    }
    let tag = etag(asset.body);
    let common = format!(
        "ETag: {tag}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nContent-Security-Policy: {CSP}\r\n"
    );
    let matches = req
        .if_none_match
        .as_deref()
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if matches {
        return format!("HTTP/1.1 304 Not Modified\r\n{common}Connection: close\r\n\r\n")
            .into_bytes();
    }
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n{common}Connection: close\r\n\r\n",
        asset.content_type,
        asset.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(asset.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, inm: Option<&str>) -> String {
        let req = WebRequest {
            method: "GET".into(),
            path: path.into(),
            if_none_match: inm.map(str::to_owned),
        };
        String::from_utf8_lossy(&response(&req, true)).into_owned()
    }

    #[test]
    fn serves_the_page_and_its_files_with_their_types() {
        let page = get("/", None);
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(page.contains("data-testid=\"status\""));
        for (path, ty) in [
            ("/static/chatgate.js", "text/javascript"),
            ("/static/emitter.js", "text/javascript"),
            ("/static/calls.js", "text/javascript"),
            ("/static/app.js", "text/javascript"),
            ("/static/style.css", "text/css"),
        ] {
            let r = get(path, None);
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {r}");
            assert!(r.contains(&format!("Content-Type: {ty}")), "{path}");
            assert!(r.contains("Cache-Control: no-cache\r\n"), "{path}");
        }
        assert!(get("/static/nope.js", None).starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn revalidation_answers_304() {
        let r = get("/static/chatgate.js", None);
        let tag = r
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_owned();
        let again = get("/static/chatgate.js", Some(&tag));
        assert!(
            again.starts_with("HTTP/1.1 304 Not Modified\r\n"),
            "{again}"
        );
        assert!(!again.contains("Content-Length"));
        assert!(get("/static/chatgate.js", Some("\"other\"")).starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn off_is_404_and_other_methods_405() {
        let req = WebRequest {
            method: "GET".into(),
            path: "/".into(),
            if_none_match: None,
        };
        assert!(String::from_utf8_lossy(&response(&req, false)).starts_with("HTTP/1.1 404"));
        let post = WebRequest {
            method: "POST".into(),
            ..req
        };
        let r = String::from_utf8_lossy(&response(&post, true)).into_owned();
        assert!(r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET, HEAD\r\n"));
    }
}
