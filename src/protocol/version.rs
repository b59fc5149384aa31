//! Protocol versions and their negotiation (docs/protocol.md §9.0).
//!
//! Owns [`Version`] and the rule that picks it from the
//! `Sec-WebSocket-Protocol` header values a client offered: v2 iff one of
//! the comma-separated tokens is exactly [`V2_SUBPROTOCOL`], v1 otherwise
//! (every existing client offers nothing).
//!
//! Must never: pick v2 for anything but the exact token (no case folding, no
//! prefix match), or fail: a malformed header just means v1.

/// The protocol a socket speaks. v1 is docs/protocol.md §1–§8, always;
/// v2 adds §9.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The WebSocket subprotocol a v2 client offers, echoed in the 101 answer.
pub const V2_SUBPROTOCOL: &str = "chatgate.v2";

impl Version {
    /// Picks the version from the raw `Sec-WebSocket-Protocol` header values
    /// (the header may repeat; each value is a comma-separated token list,
    /// optional white space around tokens).
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Version {
        let v2 = offered.into_iter().any(|value| {
            value
                .split(',')
                .any(|token| token.trim_matches([' ', '\t']) == V2_SUBPROTOCOL)
        });
        if v2 {
            Version::V2
        } else {
            Version::V1
        }
    }

    /// Whether this socket may use and receive the section-6 messages.
    pub fn is_v2(self) -> bool {
        self == Version::V2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let v = |offered: &[&str]| Version::negotiate(offered.iter().copied());
        assert_eq!(v(&[]), Version::V1);
        assert_eq!(v(&[""]), Version::V1);
        assert_eq!(v(&["chatgate.v2"]), Version::V2);
        assert_eq!(v(&["graphql-ws, chatgate.v2"]), Version::V2);
        assert_eq!(v(&[" chatgate.v2 ,x"]), Version::V2);
        assert_eq!(v(&["\tchatgate.v2\t"]), Version::V2);
        assert_eq!(v(&["x", "y,chatgate.v2"]), Version::V2, "repeated header");
        assert_eq!(v(&["chatgate.v2,"]), Version::V2);
        for no in [
            "Chatgate.v2",
            "chatgate.v2x",
            "chatgate.v1",
            "chatgate.v",
            "chatgate.v2;q=1",
            "\"chatgate.v2\"",
            "chatgate. v2",
            "graphql-ws",
            ",,",
        ] {
            assert_eq!(v(&[no]), Version::V1, "{no:?}");
        }
        assert!(Version::V2.is_v2() && !Version::V1.is_v2());
    }
}
