//! Per-socket ordering of effects (docs/protocol.md §3, §9.9).
//!
//! Owns the rule "everything one socket causes reaches every recipient in
//! the order the socket sent it, across types". Each client frame that has
//! an effect takes its place in the socket's [`Sequencer`]: either the
//! effect itself, when it is known at once (a typing event, an error
//! reply), or a reserved [`Ticket`] for an effect that the store decides
//! later (a committed `new_message`, a delete's answer). Effects leave in
//! place order: an immediate effect waits only while an earlier place of the
//! same socket is still open, so a socket with nothing in flight is never
//! delayed, and a socket's other work (reading, storing) is never held.
//!
//! Sans-IO: generic over the effect, no sockets, no clocks; the session
//! emits what [`Sequencer::push`] and [`Sequencer::fill`] release.
//!
//! Must never: release an effect before an earlier place of the same socket,
//! lose a filled effect, or allocate while nothing is waiting.

use std::collections::VecDeque;

/// A reserved place for an effect decided later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

impl Ticket {
    /// The ticket's number (carried through the store as plain data).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The ticket numbered `n` (from [`Ticket::get`]).
    pub fn from_raw(n: u64) -> Self {
        Self(n)
    }
}

enum Place<E> {
    /// Reserved; the effect is not known yet.
    Open,
    /// Known, waiting for the places before it.
    Ready(E),
    /// Decided: no effect (nothing to send).
    Nothing,
}

/// One socket's places, in the order the socket sent their frames.
pub struct Sequencer<E> {
    /// Number of the first place in `places`.
    front: u64,
    places: VecDeque<Place<E>>,
}

impl<E> Default for Sequencer<E> {
    fn default() -> Self {
        Self {
            front: 0,
            places: VecDeque::new(),
        }
    }
}

impl<E> Sequencer<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no place is open or waiting: effects go out at once.
    pub fn is_idle(&self) -> bool {
        self.places.is_empty()
    }

    /// Places open or waiting.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Reserves the next place for an effect known later.
    pub fn reserve(&mut self) -> Ticket {
        let t = Ticket(self.front + self.places.len() as u64);
        self.places.push_back(Place::Open);
        t
    }

    /// An effect known now: handed back to send at once when nothing is
    /// waiting before it, else kept for its turn.
    #[must_use]
    pub fn push(&mut self, effect: E) -> Option<E> {
        if self.places.is_empty() {
            return Some(effect);
        }
        self.places.push_back(Place::Ready(effect));
        None
    }

    /// Decides a reserved place (`None`: nothing to send) and calls `emit`
    /// with every effect that may now leave, in order. A ticket that is not
    /// open (already filled, or never issued) is ignored.
    pub fn fill(&mut self, ticket: Ticket, effect: Option<E>, mut emit: impl FnMut(E)) {
        let Some(i) = ticket.0.checked_sub(self.front) else {
            return;
        };
        match self.places.get_mut(i as usize) {
            Some(place @ Place::Open) => {
                *place = effect.map_or(Place::Nothing, Place::Ready);
            }
            _ => return,
        }
        while let Some(place) = self.places.front() {
            if matches!(place, Place::Open) {
                break;
            }
            self.front += 1;
            if let Some(Place::Ready(e)) = self.places.pop_front() {
                emit(e);
            }
        }
        if self.places.is_empty() {
            // Release the buffer of a burst: an idle socket keeps none.
            self.places = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(
        s: &mut Sequencer<&'static str>,
        t: Ticket,
        e: Option<&'static str>,
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        s.fill(t, e, |x| out.push(x));
        out
    }

    #[test]
    fn nothing_waiting_means_at_once() {
        let mut s = Sequencer::new();
        assert_eq!(s.push("typing"), Some("typing"));
        assert!(s.is_idle());
    }

    #[test]
    fn an_immediate_effect_waits_for_an_earlier_reserved_place() {
        let mut s = Sequencer::new();
        let chat = s.reserve();
        assert_eq!(s.push("typing"), None);
        assert_eq!(s.push("error"), None);
        assert_eq!(
            filled(&mut s, chat, Some("new_message")),
            ["new_message", "typing", "error"]
        );
        assert!(s.is_idle());
        assert_eq!(s.push("later"), Some("later"));
    }

    #[test]
    fn places_filled_out_of_order_leave_in_order() {
        let mut s = Sequencer::new();
        let a = s.reserve();
        let b = s.reserve();
        assert_eq!(s.push("x"), None);
        let c = s.reserve();
        assert!(filled(&mut s, b, Some("b")).is_empty());
        assert!(filled(&mut s, c, Some("c")).is_empty());
        assert_eq!(filled(&mut s, a, Some("a")), ["a", "b", "x", "c"]);
    }

    #[test]
    fn a_place_with_nothing_to_send_still_releases_what_follows() {
        let mut s = Sequencer::new();
        let a = s.reserve();
        assert_eq!(s.push("typing"), None);
        assert_eq!(filled(&mut s, a, None), ["typing"]);
    }

    #[test]
    fn stale_and_repeated_tickets_are_ignored() {
        let mut s = Sequencer::new();
        let a = s.reserve();
        assert_eq!(filled(&mut s, a, Some("a")), ["a"]);
        assert!(filled(&mut s, a, Some("again")).is_empty());
        let b = s.reserve();
        assert_eq!(b, Ticket::from_raw(1));
        assert!(filled(&mut s, Ticket::from_raw(7), Some("bogus")).is_empty());
        assert_eq!(filled(&mut s, b, Some("b")), ["b"]);
    }

    #[test]
    fn many_interleavings_keep_send_order() {
        // Frames 0..200: every third is stored (reserved), the rest immediate;
        // the store answers in a scrambled order. Output must be 0..200.
        let mut s: Sequencer<usize> = Sequencer::new();
        let mut out = Vec::new();
        let mut tickets = Vec::new();
        for i in 0..200usize {
            if i % 3 == 0 {
                tickets.push((s.reserve(), i));
            } else if let Some(e) = s.push(i) {
                out.push(e);
            }
        }
        let n = tickets.len();
        for k in 0..n {
            let (t, i) = tickets[(k * 7) % n];
            s.fill(t, Some(i), |e| out.push(e));
        }
        assert_eq!(out, (0..200).collect::<Vec<_>>());
    }
}
