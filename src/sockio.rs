//! Direct, non-blocking socket I/O: the fan-out's fast path and the read
//! after readiness.
//!
//! Owns the calls that touch a socket without going through the io driver.
//! `send(2)` / `sendmsg(2)` with `MSG_DONTWAIT`: a delivery (or a turn's
//! deliveries, gathered) to a socket with room in its kernel buffer costs
//! one syscall and no task wake-up; whatever does not fit is queued by the
//! caller and written by the socket's task as usual.
//! `recv(2)` with `MSG_DONTWAIT` into a pooled buffer once the driver has
//! reported the socket readable: no read operation (and no buffer) is
//! pinned by the driver, and no second ring round trip is paid.
//!
//! Must never: block (always `MSG_DONTWAIT`), raise SIGPIPE
//! (`MSG_NOSIGNAL`), or be given an fd whose owning stream may already be
//! closed — `Outbound` forgets the fd before its session drops the stream
//! (the load tool's clients likewise only pass the fd of a stream they hold).
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
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

/// Most buffers one [`try_sendv`] takes (the rest waits for the next call).
pub const MAX_IOV: usize = 64;

/// Sends as much of `bufs`, in order, as the socket takes now, with one
/// `sendmsg`; `Ok(0)` or `ErrorKind::WouldBlock` when it takes nothing.
pub fn try_sendv(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if bufs.is_empty() {
        return Ok(0);
    }
    // SAFETY: an all-zero `msghdr` is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(MAX_IOV) as _;
    // SAFETY: `msg` points at `bufs`, valid initialized slices for the call;
    // `sendmsg` only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives what the socket holds now, up to `buf.len()` bytes; `Ok(0)` at
/// end of stream, `ErrorKind::WouldBlock` when nothing is there.
pub fn try_recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for the
    // duration of the call, and `recv` writes at most that many bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
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
    fn receives_what_is_there_and_never_blocks() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        let err = try_recv(server.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"hello").unwrap();
        let got = loop {
            match try_recv(server.as_raw_fd(), &mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..got], b"hell", "at most the buffer's length");
        assert_eq!(try_recv(server.as_raw_fd(), &mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"o");
        drop(client);
        assert_eq!(
            try_recv(server.as_raw_fd(), &mut buf).unwrap(),
            0,
            "end of stream"
        );
    }

    #[test]
    fn sendv_sends_the_buffers_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let bufs = [
            IoSlice::new(b"one "),
            IoSlice::new(b""),
            IoSlice::new(b"two"),
        ];
        assert_eq!(try_sendv(client.as_raw_fd(), &bufs).unwrap(), 7);
        assert_eq!(try_sendv(client.as_raw_fd(), &[]).unwrap(), 0);
        let mut got = [0u8; 7];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one two");
    }

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
