//! The constant frames of a socket's life (docs/protocol.md §4, §7): the
//! greeting after the upgrade and the application-level keep-alive.
//!
//! Owns their exact bytes; `crate::frame` builds each into a WebSocket frame
//! once per shard.
//!
//! Must never: depend on the connection (these frames are shared by every
//! socket, byte for byte).

/// Sent first on every accepted, authenticated, authorised socket.
pub const CONNECTION_ESTABLISHED: &[u8] =
    br#"{"type":"connection_established","message":"Connected to chat"}"#;

/// The application-level keep-alive, sent every ping interval.
pub const PING: &[u8] = br#"{"type":"ping"}"#;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::testing::parse;

    #[test]
    fn constant_frames() {
        let established = json!({"type": "connection_established", "message": "Connected to chat"});
        assert_eq!(parse(CONNECTION_ESTABLISHED), established);
        assert_eq!(parse(PING), json!({"type": "ping"}));
    }
}
