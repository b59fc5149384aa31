//! The session core: one socket's protocol rules as plain data and
//! functions, without I/O (quinn-proto's shape).
//!
//! Owns what a socket's life and its messages mean, given the input and
//! the time: the phases and deadlines ([`Lifecycle`]: when to ping, when to
//! close and with which code), the step from a client message to its
//! effects ([`Action`], [`decide`], [`Step`]: what to store, broadcast,
//! reply or close, in the socket's order) and the call-signal recipient
//! rule ([`signal`]). `connection/` drives it: it reads and decodes the
//! socket's bytes, calls the core with `now`, and carries out each step
//! (sequencer places, store requests, fan-out, timers).
//!
//! Must never: do I/O, await, spawn, or read the clock; every rule here is
//! unit-tested without a socket.

mod dispatch;
mod lifecycle;
pub mod signal;

pub use dispatch::{decide, Action, HeldUpload, Metric, Rules, Step, Who};
pub use lifecycle::{Lifecycle, Tick};
