//! Who an event is for, among a conversation's sockets.
//!
//! Owns the one description of an event's recipients that the hub (local
//! fan-out) and the bridge (other nodes) both apply, so an event reaches the
//! same kind of socket on every node: all sockets, or all but one user's
//! (the typist's), or only one user's (a call signal's recipient), and
//! optionally only v2 sockets (v2 events never reach a v1 socket,
//! docs/protocol.md §9.0). One exclusion is local only: the causing socket
//! itself (`except_conn`, a connection id, meaningless on other nodes).
//!
//! Must never: let a v2-only event reach a v1 socket.

use crate::ids::UserId;
use crate::protocol::Version;

/// Which member sockets of a conversation an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Audience {
    /// Sockets of this user are left out (the typist of a `typing` event).
    pub except_user: Option<UserId>,
    /// Only v2 sockets get it (every v2 event).
    pub v2_only: bool,
    /// Only sockets of this user get it (a call signal's recipient, or the
    /// sender's own other tabs).
    pub only_user: Option<UserId>,
    /// Not this local socket (the sender of a call signal). Never crosses
    /// nodes: connection ids are per node.
    pub except_conn: Option<u64>,
}

impl Audience {
    /// Every socket (`new_message`).
    pub const ALL: Audience = Audience {
        except_user: None,
        v2_only: false,
        only_user: None,
        except_conn: None,
    };

    /// Every v2 socket (`read_receipt`, `reaction`).
    pub const V2: Audience = Audience {
        v2_only: true,
        ..Audience::ALL
    };

    /// Every socket whose user is not `user` (`typing`).
    pub const fn except_user(user: UserId) -> Audience {
        Audience {
            except_user: Some(user),
            ..Audience::ALL
        }
    }

    /// Every v2 socket of `user` (a call signal's recipient).
    pub const fn v2_of(user: UserId) -> Audience {
        Audience {
            only_user: Some(user),
            v2_only: true,
            ..Audience::ALL
        }
    }

    /// Every v2 socket whose user is not `user` (`presence`, `upload_progress`).
    pub const fn v2_except_user(user: UserId) -> Audience {
        Audience {
            except_user: Some(user),
            v2_only: true,
            ..Audience::ALL
        }
    }

    /// Whether a socket of `user` speaking `version` is in the audience.
    #[inline]
    pub fn includes(self, user: UserId, version: Version) -> bool {
        self.except_user != Some(user)
            && self.only_user.is_none_or(|u| u == user)
            && (!self.v2_only || version == Version::V2)
    }

    /// Whether the local socket `conn` of `user` speaking `version` is in the audience.
    #[inline]
    pub fn includes_socket(self, user: UserId, version: Version, conn: u64) -> bool {
        self.except_conn != Some(conn) && self.includes(user, version)
    }

    /// The audience as other nodes apply it (no local socket exclusion).
    pub fn remote(self) -> Audience {
        Audience {
            except_conn: None,
            ..self
        }
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
        assert!(Audience::v2_of(1).includes(1, Version::V2));
        assert!(!Audience::v2_of(1).includes(1, Version::V1));
        assert!(!Audience::v2_of(1).includes(2, Version::V2));
        assert!(!Audience::v2_except_user(1).includes(1, Version::V2));
        assert!(!Audience::v2_except_user(1).includes(2, Version::V1));
        let mine = Audience {
            except_conn: Some(5),
            ..Audience::v2_of(1)
        };
        assert!(!mine.includes_socket(1, Version::V2, 5));
        assert!(mine.includes_socket(1, Version::V2, 6));
        assert_eq!(mine.remote(), Audience::v2_of(1));
    }
}
