//! Direct, non-blocking socket sends: the fan-out's fast path.
//!
//! Owns the one call that writes to a socket without going through the
//! socket's task or the io driver: `send(2)` with `MSG_DONTWAIT`, so a
//! delivery to a socket with room in its kernel buffer costs one syscall and
//! no task wake-up. Whatever does not fit is queued by the caller and written
//! by the socket's task as usual.
//!
//! Must never: block (always `MSG_DONTWAIT`), raise SIGPIPE
//! (`MSG_NOSIGNAL`), or be given an fd whose owning stream may already be
//! closed — `Outbound` forgets the fd before its session drops the stream.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// Sends as much of `buf` as the socket takes now; `Ok(0)` or
/// `ErrorKind::WouldBlock` when it takes nothing.
pub fn try_send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, initialized slice for `buf.len()` bytes for
    // the duration of the call, and `send` only reads from it. The fd is a
    // plain integer to the kernel: a wrong one is an error (EBADF/ENOTSOCK),
    // never memory unsafety.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn sends_what_fits_and_never_blocks() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(try_send(client.as_raw_fd(), b"hello").unwrap(), 5);
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        // Fill the buffers: the call returns WouldBlock instead of blocking.
        let chunk = vec![7u8; 1 << 16];
        let mut total = 0usize;
        let err = loop {
            match try_send(client.as_raw_fd(), &chunk) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
            assert!(total < 1 << 30, "the socket never filled up");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
