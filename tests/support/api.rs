//! The server API over real HTTP: a small blocking HTTP/1.1 client (one
//! request per connection), the keys the test gateways accept, and shape
//! checks of the answers as docs/server-api.openapi.json describes them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use super::{status_of, TestGateway, READ_TIMEOUT};

/// The keys a gateway started with [`with_api`] accepts (two: rotation).
pub const API_KEYS: [&str; 2] = ["test-key-old", "test-key-new"];

/// Enables the server API on an ephemeral port with [`API_KEYS`].
pub fn with_api(c: &mut chatgate::Config) {
    c.api_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    c.api_keys = chatgate::config::ApiKeys(API_KEYS.iter().map(|k| k.to_string()).collect());
}

/// One raw request; the answer's status, head and body.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(head), head.to_owned(), body.to_owned())
}

/// `verb path` with `headers` and `body`: the status and the JSON body.
pub fn http_json(
    addr: SocketAddr,
    verb: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = format!(
        "{verb} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let (status, head, body) = http_raw(addr, &bytes);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    check_shape(status, &json);
    (status, json)
}

/// `POST /api/<method>` with `params` and the first key.
pub fn api_call(addr: SocketAddr, method: &str, params: Value) -> (u16, Value) {
    let auth = format!("apikey {}", API_KEYS[0]);
    http_json(
        addr,
        "POST",
        &format!("/api/{method}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        params.to_string().as_bytes(),
    )
}

/// The `result` of a call that must succeed.
pub fn api_ok(addr: SocketAddr, method: &str, params: Value) -> Value {
    let (status, body) = api_call(addr, method, params);
    assert_eq!(status, 200, "{method}: {body}");
    body["result"].clone()
}

/// The error code of a call that must be refused with 400.
pub fn api_refused(addr: SocketAddr, method: &str, params: Value) -> String {
    let (status, body) = api_call(addr, method, params);
    assert_eq!(status, 400, "{method}: {body}");
    body["error"]["code"].as_str().expect("code").to_owned()
}

/// The envelope every answer has (the OpenAPI document's `Success` and
/// `Failure` schemas): 200 `{"result":{…}}` and nothing else; any other
/// status `{"error":{"code":<string>,"message":<string>}}` and nothing else.
pub fn check_shape(status: u16, body: &Value) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(obj.len(), 1, "one member: {body}");
    if status == 200 {
        assert!(obj["result"].is_object(), "{body}");
    } else {
        check_error(&obj["error"]);
    }
}

/// `{"code":<string>,"message":<string>}` and nothing else.
pub fn check_error(e: &Value) {
    let e = e.as_object().unwrap_or_else(|| panic!("error: {e:?}"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e["code"].is_string() && e["message"].is_string(), "{e:?}");
}

impl TestGateway {
    /// The server API listener's address (the gateway was started [`with_api`]).
    pub fn api_addr(&self) -> SocketAddr {
        self.gateway_ref().api_addr().expect("started with_api")
    }
}
