//! Close codes: the second error vocabulary on the wire (the first is
//! `protocol::ReplyError`, which keeps the socket open).
//!
//! Owns the numeric codes and a bounded metric label for each. Must never
//! contain logic about when to close; callers decide that.

/// Why a socket is closed by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// 1000: normal closure.
    Normal,
    /// 1001: server shutting down (graceful drain).
    GoingAway,
    /// 1002: WebSocket protocol violation by the peer.
    ProtocolError,
    /// 1007: invalid UTF-8 in a text message.
    InvalidPayload,
    /// 1008: policy violation (rate-limit abuse, too many connections).
    Policy,
    /// 1009: frame or message over the size limit.
    TooBig,
    /// 1011: internal error.
    Internal,
    /// 1013: slow consumer (outbound queue overflowed).
    SlowConsumer,
    /// 4001: not authenticated.
    Unauthenticated,
    /// 4003: not a participant.
    Forbidden,
}

impl CloseReason {
    /// The close code sent in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::Policy => 1008,
            Self::TooBig => 1009,
            Self::Internal => 1011,
            Self::SlowConsumer => 1013,
            Self::Unauthenticated => 4001,
            Self::Forbidden => 4003,
        }
    }

    /// The close code as text (a bounded metric label).
    pub const fn code_label(self) -> &'static str {
        match self {
            Self::Normal => "1000",
            Self::GoingAway => "1001",
            Self::ProtocolError => "1002",
            Self::InvalidPayload => "1007",
            Self::Policy => "1008",
            Self::TooBig => "1009",
            Self::Internal => "1011",
            Self::SlowConsumer => "1013",
            Self::Unauthenticated => "4001",
            Self::Forbidden => "4003",
        }
    }

    /// A bounded label for logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "going_away",
            Self::ProtocolError => "protocol_error",
            Self::InvalidPayload => "invalid_payload",
            Self::Policy => "policy",
            Self::TooBig => "too_big",
            Self::Internal => "internal",
            Self::SlowConsumer => "slow_consumer",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseReason::*;

    #[test]
    fn codes_match_the_protocol() {
        let all = [
            (Normal, 1000),
            (GoingAway, 1001),
            (ProtocolError, 1002),
            (InvalidPayload, 1007),
            (Policy, 1008),
            (TooBig, 1009),
            (Internal, 1011),
            (SlowConsumer, 1013),
            (Unauthenticated, 4001),
            (Forbidden, 4003),
        ];
        for (r, c) in all {
            assert_eq!(r.code(), c);
            assert_eq!(r.code_label(), c.to_string());
        }
    }
}
