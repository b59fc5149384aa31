//! Direct, non-blocking socket reads for the load clients.
//!
//! Owns the one call that reads a socket without the io driver: `recv(2)`
//! with `MSG_DONTWAIT`, made right after the driver reported the socket
//! readable. The bytes land in one per-thread buffer and are parsed before
//! the next await, so no read is ever in flight, no buffer is pinned per
//! socket, and thousands of sockets becoming readable at once cost no
//! memory (an io_uring read per socket would need a buffer each).
//!
//! Must never: block (always `MSG_DONTWAIT`), or be given an fd that its
//! owning stream may have closed (callers pass the fd of a stream they hold).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// Reads what the socket holds now, up to `buf.len()` bytes; `Ok(0)` at
/// end of stream, `ErrorKind::WouldBlock` when nothing is there.
pub fn try_recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for the
    // duration of the call, and `recv` writes at most that many bytes into
    // it. The fd is a plain integer to the kernel: a wrong one is an error
    // (EBADF/ENOTSOCK), never memory unsafety.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_what_is_there_and_never_blocks() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        let err = try_recv(client.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        server.write_all(b"hello").unwrap();
        let mut n = 0;
        for _ in 0..1000 {
            match try_recv(client.as_raw_fd(), &mut buf) {
                Ok(k) => {
                    n = k;
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert_eq!(&buf[..n], b"hello");
        drop(server);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(try_recv(client.as_raw_fd(), &mut buf).unwrap(), 0);
    }
}
