//! Who an event is for, among a conversation's sockets.
//!
//! Owns the one description of an event's recipients that the hub (local
//! fan-out) and the bridge (other nodes) both apply, so an event reaches the
//! same kind of socket on every node: all sockets, or all but one user's
//! (the typist's), and optionally only v2 sockets (v2 events never reach a
//! v1 socket, PROTOCOL.md §6.0).
//!
//! Must never: let a v2-only event reach a v1 socket.

use crate::protocol::Version;
use crate::store::UserId;

/// Which member sockets of a conversation an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Audience {
    /// Sockets of this user are left out (the typist of a `typing` event).
    pub except_user: Option<UserId>,
    /// Only v2 sockets get it (every v2 event).
    pub v2_only: bool,
}

impl Audience {
    /// Every socket (`new_message`).
    pub const ALL: Audience = Audience {
        except_user: None,
        v2_only: false,
    };

    /// Every v2 socket (`read_receipt`, `reaction`).
    pub const V2: Audience = Audience {
        except_user: None,
        v2_only: true,
    };

    /// Every socket whose user is not `user` (`typing`).
    pub const fn except_user(user: UserId) -> Audience {
        Audience {
            except_user: Some(user),
            v2_only: false,
        }
    }

    /// Whether a socket of `user` speaking `version` is in the audience.
    #[inline]
    pub fn includes(self, user: UserId, version: Version) -> bool {
        self.except_user != Some(user) && (!self.v2_only || version == Version::V2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences() {
        assert!(Audience::ALL.includes(1, Version::V1));
        assert!(Audience::ALL.includes(1, Version::V2));
        assert!(!Audience::V2.includes(1, Version::V1));
        assert!(Audience::V2.includes(1, Version::V2));
        assert!(!Audience::except_user(1).includes(1, Version::V2));
        assert!(Audience::except_user(1).includes(2, Version::V1));
    }
}
