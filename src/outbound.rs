//! A socket's outbound path: direct sends and the bounded queue behind them.
//!
//! Owns the frames waiting to be written to one socket, the bounds (frames
//! and bytes) and the wake-up of the socket's task. Anyone on the shard may
//! push (fan-out, replies, timers). When nothing is queued or being written,
//! a push first tries a direct non-blocking send (`sockio::try_send`): the
//! common delivery costs one syscall and no task wake-up. What does not fit
//! is queued, and only the socket's own task drains the queue and writes.
//! During a shard turn the fan-out defers instead (`push_deferred`): the
//! turn's frames wait in the queue and leave together with one `sendmsg`
//! when the shard flushes the socket at the end of the turn
//! (`flush_deferred`); what the socket does not take goes to its task.
//! When a push would exceed a bound the queue is marked overflowed (the
//! socket is then closed with 1013 by its task) and the frame is dropped:
//! a slow consumer never stalls the shard or its neighbours.
//!
//! Must never: block, reorder frames (no direct send while anything is
//! queued or in flight), send on an fd after `detach`, grow past its bounds,
//! or be shared across threads (`Cell`/`RefCell` inside one shard).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::task::{Poll, Waker};

use bytes::Bytes;

use crate::close::CloseReason;
use crate::sockio;

/// The queue's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_frames: usize,
    pub max_bytes: usize,
}

/// The socket's queue overflowed; the frame was dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// The outbound side of one socket.
pub struct Outbound {
    frames: RefCell<VecDeque<Bytes>>,
    bytes: Cell<usize>,
    bounds: Bounds,
    /// A close requested by someone other than the socket's task (shutdown,
    /// slow consumer); the task acts on it at its next wake-up.
    close: Cell<Option<CloseReason>>,
    waker: RefCell<Option<Waker>>,
    /// The socket, while its session owns it open (direct sends).
    fd: Cell<Option<RawFd>>,
    /// The session's task has bytes of this socket in flight.
    writing: Cell<bool>,
    /// The queue's first entry is the rest of a frame already partly sent:
    /// it must be written before anything else, even a close frame.
    partial_front: Cell<bool>,
    /// Closing: data frames are no longer accepted.
    sealed: Cell<bool>,
    /// One of the session's deadlines came due (see `timers.rs`).
    timer_due: Cell<bool>,
    /// The queue holds frames deferred for the shard's end-of-turn flush
    /// (`flush_deferred`), not yet handed to the socket's task.
    deferred: Cell<bool>,
}

/// What a deferred push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deferred {
    /// The first frame deferred since the last flush: flush this socket at
    /// the end of the turn.
    First,
    /// Queued behind other deferred frames, or handed to the task as usual.
    Queued,
}

/// What a direct send did.
enum Direct {
    Sent,
    Partial(Bytes),
    NotSent(Bytes),
}

impl Outbound {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            frames: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            bounds,
            close: Cell::new(None),
            waker: RefCell::new(None),
            fd: Cell::new(None),
            writing: Cell::new(false),
            partial_front: Cell::new(false),
            sealed: Cell::new(false),
            timer_due: Cell::new(false),
            deferred: Cell::new(false),
        }
    }

    /// Enables direct sends on `fd` (the session owns the open socket).
    pub fn attach(&self, fd: RawFd) {
        self.fd.set(Some(fd));
    }

    /// Disables direct sends; call before the socket is closed.
    pub fn detach(&self) {
        self.fd.set(None);
    }

    /// The close handshake started: from now on only control frames
    /// (`push_control`) are written; data pushes are dropped.
    pub fn seal(&self) {
        self.sealed.set(true);
        self.detach();
    }

    /// Marks the task's asynchronous write in flight (no direct send may
    /// overtake it) or finished.
    pub fn set_writing(&self, writing: bool) {
        self.writing.set(writing);
    }

    /// Sends `frame` at once if nothing is queued or in flight.
    fn send_direct(&self, frame: Bytes) -> Direct {
        let Some(fd) = self.fd.get() else {
            return Direct::NotSent(frame);
        };
        if self.writing.get() || !self.frames.borrow().is_empty() {
            return Direct::NotSent(frame);
        }
        match sockio::try_send(fd, &frame) {
            Ok(n) if n == frame.len() => Direct::Sent,
            Ok(0) => Direct::NotSent(frame),
            Ok(n) => Direct::Partial(frame.slice(n..)),
            // WouldBlock or a broken socket: the task finds out on its write.
            Err(_) => Direct::NotSent(frame),
        }
    }

    /// Queues a frame within the bounds. On overflow the frame is dropped,
    /// a 1013 close is requested and `Err(Overflow)` returned.
    pub fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        if self.close.get().is_some() || self.sealed.get() {
            return Ok(()); // closing: nothing more is sent but the close frame
        }
        let frame = match self.send_direct(frame) {
            Direct::Sent => return Ok(()),
            Direct::Partial(rest) => {
                // A frame already begun must be completed, bounds or not.
                self.partial_front.set(true);
                self.push_control(rest);
                return Ok(());
            }
            Direct::NotSent(frame) => frame,
        };
        let len = frame.len();
        let mut q = self.frames.borrow_mut();
        if q.len() >= self.bounds.max_frames || self.bytes.get() + len > self.bounds.max_bytes {
            drop(q);
            self.request_close(CloseReason::SlowConsumer);
            return Err(Overflow);
        }
        q.push_back(frame);
        self.bytes.set(self.bytes.get() + len);
        drop(q);
        self.wake();
        Ok(())
    }

    /// Queues a frame to be sent at the shard's end-of-turn flush, so a
    /// turn's frames for this socket leave in one `sendmsg`. Falls back to
    /// [`push`](Self::push) when the socket's task owns the queue. A frame
    /// that would exceed the bounds first flushes what is deferred.
    pub fn push_deferred(&self, frame: Bytes) -> Result<Deferred, Overflow> {
        if self.close.get().is_some() || self.sealed.get() {
            return Ok(Deferred::Queued);
        }
        if !self.deferred.get() {
            let task_owns = self.fd.get().is_none() || self.writing.get() || !self.is_empty();
            if task_owns {
                return self.push(frame).map(|()| Deferred::Queued);
            }
            self.deferred.set(true);
            self.enqueue(frame);
            return Ok(Deferred::First);
        }
        let len = frame.len();
        if self.len() >= self.bounds.max_frames || self.bytes.get() + len > self.bounds.max_bytes {
            // Make room by sending now; what still does not fit overflows.
            self.flush_deferred();
            return self.push(frame).map(|()| Deferred::Queued);
        }
        self.enqueue(frame);
        Ok(Deferred::Queued)
    }

    /// Sends the deferred frames with one non-blocking `sendmsg`; whatever
    /// the socket does not take now is left to the socket's task.
    pub fn flush_deferred(&self) {
        if !self.deferred.replace(false) {
            return;
        }
        let Some(fd) = self.fd.get() else {
            return self.wake();
        };
        if self.writing.get() {
            return self.wake();
        }
        let sent = {
            let q = self.frames.borrow();
            let mut iov = [IoSlice::new(&[]); sockio::MAX_IOV];
            let mut n = 0;
            for (slot, frame) in iov.iter_mut().zip(q.iter()) {
                *slot = IoSlice::new(frame);
                n += 1;
            }
            // WouldBlock or a broken socket: the task finds out on its write.
            sockio::try_sendv(fd, &iov[..n]).unwrap_or(0)
        };
        self.consume(sent);
        if !self.is_empty() {
            self.wake();
        }
    }

    /// Drops `n` bytes from the front of the queue (they were sent); a
    /// frame sent in part stays at the front as its rest.
    fn consume(&self, mut n: usize) {
        let mut q = self.frames.borrow_mut();
        self.bytes.set(self.bytes.get() - n);
        while n > 0 {
            let Some(front) = q.front_mut() else { break };
            if front.len() <= n {
                n -= front.len();
                q.pop_front();
                self.partial_front.set(false);
            } else {
                let rest = front.slice(n..);
                *front = rest;
                self.partial_front.set(true);
                n = 0;
            }
        }
    }

    fn enqueue(&self, frame: Bytes) {
        self.bytes.set(self.bytes.get() + frame.len());
        self.frames.borrow_mut().push_back(frame);
    }

    /// Queues a frame the socket's own protocol needs (pong, close reply)
    /// regardless of the bounds.
    pub fn push_control(&self, frame: Bytes) {
        self.bytes.set(self.bytes.get() + frame.len());
        self.frames.borrow_mut().push_back(frame);
        self.wake();
    }

    /// Asks the socket's task to close with `reason` (the first request wins).
    pub fn request_close(&self, reason: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(reason));
        }
        self.wake();
    }

    /// The pending close request, if any (consumed).
    pub fn take_close_request(&self) -> Option<CloseReason> {
        self.close.take()
    }

    /// Whether a close was requested and not yet taken.
    pub fn close_requested(&self) -> bool {
        self.close.get().is_some()
    }

    /// Moves every queued frame into `out`, in order (deferred ones too:
    /// the task writing them first keeps the order).
    pub fn drain_into(&self, out: &mut Vec<Bytes>) {
        self.deferred.set(false);
        let mut q = self.frames.borrow_mut();
        out.extend(q.drain(..));
        self.bytes.set(0);
        self.partial_front.set(false);
    }

    /// Drops every queued frame (before a slow-consumer close), except the
    /// rest of a frame already partly sent.
    pub fn clear(&self) {
        let mut q = self.frames.borrow_mut();
        let keep = if self.partial_front.get() { 1 } else { 0 };
        q.truncate(keep);
        self.bytes.set(q.iter().map(Bytes::len).sum());
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.frames.borrow().len()
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.frames.borrow().is_empty()
    }

    /// Wakes the socket's task because one of its deadlines came due.
    pub fn wake_for_timer(&self) {
        self.timer_due.set(true);
        self.wake();
    }

    /// Whether a deadline came due since the last call (consumed).
    pub fn take_timer_due(&self) -> bool {
        self.timer_due.replace(false)
    }

    /// Resolves when a frame is queued, a close is requested or a deadline
    /// came due.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            if !self.is_empty() || self.close.get().is_some() || self.timer_due.get() {
                return Poll::Ready(());
            }
            let mut w = self.waker.borrow_mut();
            match w.as_ref() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn q(frames: usize, bytes: usize) -> Outbound {
        Outbound::new(Bounds {
            max_frames: frames,
            max_bytes: bytes,
        })
    }

    #[test]
    fn bounded_by_frames() {
        let o = q(2, 1000);
        assert!(o.push(Bytes::from_static(b"a")).is_ok());
        assert!(o.push(Bytes::from_static(b"b")).is_ok());
        assert_eq!(o.push(Bytes::from_static(b"c")), Err(Overflow));
        assert_eq!(o.take_close_request(), Some(CloseReason::SlowConsumer));
        let mut out = Vec::new();
        o.drain_into(&mut out);
        assert_eq!(
            out,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn bounded_by_bytes() {
        let o = q(100, 5);
        assert!(o.push(Bytes::from_static(b"abc")).is_ok());
        assert_eq!(o.push(Bytes::from_static(b"def")), Err(Overflow));
        assert!(o.close_requested());
    }

    #[test]
    fn control_frames_ignore_bounds_and_first_close_wins() {
        let o = q(1, 1);
        o.push_control(Bytes::from_static(b"pong"));
        o.push_control(Bytes::from_static(b"close"));
        assert_eq!(o.len(), 2);
        o.request_close(CloseReason::GoingAway);
        o.request_close(CloseReason::SlowConsumer);
        assert_eq!(o.take_close_request(), Some(CloseReason::GoingAway));
        assert_eq!(o.take_close_request(), None);
    }

    #[test]
    fn ready_wakes_on_push() {
        let o = std::rc::Rc::new(q(10, 100));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = Box::pin(o.ready());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        o.push(Bytes::from_static(b"x")).unwrap();
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }

    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn direct_send_skips_the_queue_and_keeps_order() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (tx, mut rx) = socket_pair();
        let o = q(10, 1000);
        o.attach(tx.as_raw_fd());
        o.push(Bytes::from_static(b"one")).unwrap();
        assert!(o.is_empty(), "sent directly");
        o.set_writing(true);
        o.push(Bytes::from_static(b"two")).unwrap();
        o.set_writing(false);
        o.push(Bytes::from_static(b"three")).unwrap();
        assert_eq!(o.len(), 2, "queued behind the write in flight, in order");
        let mut got = [0u8; 3];
        rx.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one");
        o.seal();
        o.push(Bytes::from_static(b"late")).unwrap();
        assert_eq!(
            o.len(),
            2,
            "nothing but control frames after the close began"
        );
    }

    #[test]
    fn a_partly_sent_frame_survives_a_slow_consumer_clear() {
        use std::os::fd::AsRawFd;
        let (tx, _rx) = socket_pair();
        let o = q(4, 1 << 30);
        o.attach(tx.as_raw_fd());
        let big = Bytes::from(vec![1u8; 64 << 20]);
        o.push(big).unwrap();
        assert_eq!(o.len(), 1, "the rest of the frame is queued");
        o.push(Bytes::from_static(b"next")).unwrap();
        o.clear();
        assert_eq!(
            o.len(),
            1,
            "the partial frame is kept, the next one dropped"
        );
    }

    #[test]
    fn deferred_frames_leave_together_at_the_flush() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (tx, mut rx) = socket_pair();
        let o = q(10, 1000);
        o.attach(tx.as_raw_fd());
        assert_eq!(
            o.push_deferred(Bytes::from_static(b"one")),
            Ok(Deferred::First)
        );
        assert_eq!(
            o.push_deferred(Bytes::from_static(b"two")),
            Ok(Deferred::Queued)
        );
        assert_eq!(o.len(), 2, "nothing is sent before the flush");
        o.flush_deferred();
        assert!(o.is_empty());
        let mut got = [0u8; 6];
        rx.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"onetwo");
        o.flush_deferred();
        assert_eq!(
            o.push_deferred(Bytes::from_static(b"3")),
            Ok(Deferred::First)
        );
    }

    #[test]
    fn a_deferred_frame_past_the_bound_flushes_first() {
        use std::os::fd::AsRawFd;
        let (tx, _rx) = socket_pair();
        let o = q(2, 1 << 30);
        o.attach(tx.as_raw_fd());
        for f in [&b"a"[..], b"b", b"c", b"d"] {
            assert!(o.push_deferred(Bytes::copy_from_slice(f)).is_ok());
        }
        assert!(!o.close_requested(), "a socket with room never overflows");
        assert!(o.len() <= 2);
    }

    #[test]
    fn a_deferred_flush_leaves_what_does_not_fit_to_the_task() {
        use std::os::fd::AsRawFd;
        let (tx, _rx) = socket_pair();
        let o = q(4, 1 << 30);
        o.attach(tx.as_raw_fd());
        let big = Bytes::from(vec![1u8; 64 << 20]);
        o.push_deferred(big).unwrap();
        o.push_deferred(Bytes::from_static(b"next")).unwrap();
        o.flush_deferred();
        assert_eq!(o.len(), 2, "the rest of the big frame, then the next");
        assert!(o.partial_front.get());
        o.clear();
        assert_eq!(o.len(), 1, "the partial frame survives a clear");
    }

    #[test]
    fn a_queue_the_task_owns_is_not_deferred() {
        let o = q(10, 1000); // no fd: only the task may write
        assert_eq!(
            o.push_deferred(Bytes::from_static(b"x")),
            Ok(Deferred::Queued)
        );
        assert_eq!(o.len(), 1);
        assert!(!o.deferred.get());
    }
}
