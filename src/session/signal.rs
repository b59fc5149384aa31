//! Who a call signal goes to (docs/protocol.md §9.6), decided from presence alone.
//!
//! Owns the recipient rule: a signal to oneself is `Invalid recipient`; to
//! a user with a v2 socket in the conversation on any node it is relayed
//! (and `answer`, `decline`, `hangup` also to the sender's own other v2
//! sockets, so a second tab stops ringing); to a user online only on v1
//! sockets it is `User not available`; to a user offline everywhere only
//! the store can tell a participant (`User not available`) from anyone
//! else (`Invalid recipient`), so the caller asks it.
//!
//! Must never: do I/O or look at anything but its arguments.

use crate::protocol::{ReplyError, SignalKind};
use crate::store::UserId;

/// Why a signal is refused: the error sent back and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub error: ReplyError,
    pub reason: &'static str,
}

const INVALID: Refusal = Refusal {
    error: ReplyError::InvalidRecipient,
    reason: "recipient",
};

const UNAVAILABLE: Refusal = Refusal {
    error: ReplyError::UserNotAvailable,
    reason: "unavailable",
};

/// Where a signal goes, or why it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalRoute {
    /// To the recipient's v2 sockets; with `own_tabs`, also to the
    /// sender's other v2 sockets.
    Relay {
        own_tabs: bool,
    },
    Refuse(Refusal),
    /// The recipient is offline everywhere: the store must say whether
    /// they are a participant.
    AskStore,
}

/// What presence says about the recipient of a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// Online in the conversation with a v2 socket, on any node.
    pub reachable_v2: bool,
    /// Online in the conversation at all, on any node.
    pub online: bool,
}

/// The route of a signal of `kind` from `from` to `to`.
pub fn route(from: UserId, to: UserId, kind: SignalKind, recipient: Recipient) -> SignalRoute {
    if to == from {
        return SignalRoute::Refuse(INVALID);
    }
    if recipient.reachable_v2 {
        return SignalRoute::Relay {
            own_tabs: kind.tells_own_tabs(),
        };
    }
    if recipient.online {
        // A participant (admitted), but only on v1 sockets.
        return SignalRoute::Refuse(UNAVAILABLE);
    }
    SignalRoute::AskStore
}

/// The answer for a recipient offline everywhere, once the store said
/// whether they are a participant (a store failure counts as one: there is
/// nobody to ring either way).
pub fn offline(participant: bool) -> Refusal {
    if participant {
        UNAVAILABLE
    } else {
        INVALID
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON_V2: Recipient = Recipient {
        reachable_v2: true,
        online: true,
    };
    const ON_V1_ONLY: Recipient = Recipient {
        reachable_v2: false,
        online: true,
    };
    const OFFLINE: Recipient = Recipient {
        reachable_v2: false,
        online: false,
    };

    #[test]
    fn a_signal_to_oneself_is_an_invalid_recipient_even_when_online() {
        let route = route(1, 1, SignalKind::Ring, ON_V2);
        assert_eq!(route, SignalRoute::Refuse(INVALID));
        assert_eq!(INVALID.error, ReplyError::InvalidRecipient);
    }

    #[test]
    fn only_answer_decline_and_hangup_reach_the_senders_other_tabs() {
        for (kind, own_tabs) in [
            (SignalKind::Ring, false),
            (SignalKind::Offer, false),
            (SignalKind::Candidate, false),
            (SignalKind::Answer, true),
            (SignalKind::Decline, true),
            (SignalKind::Hangup, true),
        ] {
            assert_eq!(
                route(1, 2, kind, ON_V2),
                SignalRoute::Relay { own_tabs },
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_recipient_on_v1_only_is_not_available() {
        assert_eq!(
            route(1, 2, SignalKind::Ring, ON_V1_ONLY),
            SignalRoute::Refuse(UNAVAILABLE)
        );
        assert_eq!(UNAVAILABLE.error, ReplyError::UserNotAvailable);
    }

    #[test]
    fn an_offline_recipient_is_decided_by_the_store() {
        assert_eq!(
            route(1, 2, SignalKind::Ring, OFFLINE),
            SignalRoute::AskStore
        );
        assert_eq!(offline(true), UNAVAILABLE);
        assert_eq!(offline(false), INVALID);
    }
}
