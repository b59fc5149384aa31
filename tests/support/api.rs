//! The server API over real HTTP: a small blocking HTTP/1.1 client (one
//! request per connection), the keys the test gateways accept, and every
//! answer validated against docs/server-api.openapi.json (a small
//! validator of the JSON Schema subset that document uses: `$ref`, `type`,
//! `properties`, `required`, `additionalProperties: false`, `items`,
//! `maxItems`, `enum`, `minimum`, `oneOf`).

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
    check_against_openapi(path, status, &json);
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

/// The OpenAPI document, parsed once.
fn openapi() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/server-api.openapi.json");
        let text = std::fs::read_to_string(path).expect("read the OpenAPI document");
        serde_json::from_str(&text).expect("the OpenAPI document is JSON")
    })
}

/// Validates an answer to `path` with `status` against the document: the
/// method's 200 schema, or `Failure` for every other status.
pub fn check_against_openapi(path: &str, status: u16, body: &Value) {
    let doc = openapi();
    let schema = if status == 200 {
        let op = &doc["paths"][path]["post"];
        assert!(op.is_object(), "{path} is not in the OpenAPI document");
        op["responses"]["200"]["content"]["application/json"]["schema"].clone()
    } else {
        assert!(
            doc["paths"][path]["post"]["responses"][status.to_string()].is_object()
                || doc["paths"][path].is_null(),
            "status {status} of {path} is not documented"
        );
        serde_json::json!({"$ref": "#/components/schemas/Failure"})
    };
    if let Err(why) = validate(doc, &schema, body) {
        panic!("{path} {status}: {body} does not match the OpenAPI document: {why}");
    }
}

/// `value` against `schema` (the subset the document uses).
fn validate(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/components/schemas/").expect("local ref");
        return validate(doc, &doc["components"]["schemas"][name], value);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let ok = options
            .iter()
            .filter(|o| validate(doc, o, value).is_ok())
            .count();
        return if ok == 1 {
            Ok(())
        } else {
            Err(format!("{ok} of oneOf match {value}"))
        };
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{value} not in {allowed:?}"));
        }
    }
    let type_ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        Some(other) => return Err(format!("unsupported type {other}")),
    };
    if !type_ok {
        return Err(format!("{value} is not a {}", schema["type"]));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_i64(), value.as_i64()) {
        if n < min {
            return Err(format!("{n} < {min}"));
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema["properties"].as_object();
        for req in schema["required"].as_array().into_iter().flatten() {
            let key = req.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                return Err(format!("missing {key} in {value}"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v).map_err(|e| format!("{k}: {e}"))?,
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    return Err(format!("unexpected {k} in {value}"))
                }
                None => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema["maxItems"].as_u64() {
            if items.len() as u64 > max {
                return Err(format!("more than {max} items"));
            }
        }
        if schema["items"].is_object() {
            for (i, item) in items.iter().enumerate() {
                validate(doc, &schema["items"], item).map_err(|e| format!("[{i}]: {e}"))?;
            }
        }
    }
    Ok(())
}

impl TestGateway {
    /// The server API listener's address (the gateway was started [`with_api`]).
    pub fn api_addr(&self) -> SocketAddr {
        self.gateway_ref().api_addr().expect("started with_api")
    }
}
