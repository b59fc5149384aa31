//! Moving an accepted socket from the shard that accepted it to the shard
//! that owns its conversation.
//!
//! Owns the only `unsafe` in the crate: turning a monoio stream's raw fd into
//! an owned `std::net::TcpStream` so it can cross threads (and is closed if
//! the message is dropped). Must never: hand off a stream with an io
//! operation in flight or while split (monoio panics), or leak an fd.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, IntoRawFd};

/// Detaches an accepted stream from this shard's driver.
///
/// Call only when no read or write on `stream` is pending (every read has
/// been awaited to completion) and it is not split.
pub fn detach(stream: monoio::net::TcpStream) -> std::net::TcpStream {
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up monoio's ownership of this open socket fd
    // (it deregistered it from this thread's driver and will not close it),
    // so the std stream becomes its sole owner and closes it exactly once.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

/// Attaches a handed-off socket to the current shard's driver. Must run
/// inside the target shard's runtime.
pub fn attach(stream: std::net::TcpStream) -> std::io::Result<monoio::net::TcpStream> {
    stream.set_nonblocking(true)?;
    monoio::net::TcpStream::from_std(stream)
}
