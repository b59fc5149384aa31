//! Protocol versions and their negotiation (PROTOCOL.md §6.0).
//!
//! Owns the `chatgate.v2` WebSocket subprotocol: a socket that offers it is
//! a v2 socket, every other socket is v1, decided once at the upgrade.
//!
//! Must never: pick v2 for a socket that did not offer it.

/// A socket's protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Sections 1–5: every existing client.
    V1,
    /// Section 6 on top of v1.
    V2,
}

/// The subprotocol name that selects v2.
pub const V2_SUBPROTOCOL: &str = "chatgate.v2";

impl Version {
    /// The version for the raw `Sec-WebSocket-Protocol` header values
    /// (comma-separated token lists): v2 when any token is `chatgate.v2`.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Version {
        let v2 = offered
            .into_iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == V2_SUBPROTOCOL);
        if v2 {
            Version::V2
        } else {
            Version::V1
        }
    }
}
