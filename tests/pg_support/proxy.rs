//! A TCP proxy between the store and the real Postgres, for failure tests.
//!
//! Three modes: `Open` forwards both ways; `Cut` closes every proxied
//! connection and refuses new ones (accepts and closes them: the database
//! is gone); `Stalled` keeps connections open but forwards nothing (a
//! black-holed database: only timeouts notice). Plain std threads: one
//! accept loop, two pumps per connection.
//!
//! Must never: outlive its test (dropping it stops every thread).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Open,
    Cut,
    Stalled,
}

struct State {
    mode: Mutex<Mode>,
    /// Every socket of every proxied connection (both sides), so `cut` can
    /// close them all.
    sockets: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    upstream: SocketAddr,
}

impl State {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    fn close_all(&self) {
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 (ephemeral port) to `upstream`, in `mode`.
    pub fn start(upstream: SocketAddr, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            sockets: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            upstream,
        });
        let s = state.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, s));
        Proxy {
            addr,
            state,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database is gone: close everything, refuse new connections.
    pub fn cut(&self) {
        *self.state.mode.lock().unwrap() = Mode::Cut;
        self.state.close_all();
    }

    /// The database stops answering; connections stay open.
    pub fn stall(&self) {
        *self.state.mode.lock().unwrap() = Mode::Stalled;
    }

    /// The database is back.
    pub fn open(&self) {
        *self.state.mode.lock().unwrap() = Mode::Open;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.close_all();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => handle(client, &state),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn handle(client: TcpStream, state: &Arc<State>) {
    if state.mode() == Mode::Cut {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(state.upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut sockets = state.sockets.lock().unwrap();
        for s in [&client, &server] {
            if let Ok(clone) = s.try_clone() {
                sockets.push(clone);
            }
        }
    }
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
            continue;
        };
        let state = state.clone();
        std::thread::spawn(move || pump(from, to, state));
    }
}

/// Copies `from` → `to`; in `Stalled` mode holds what it read until the
/// mode changes. Closes both sockets when either side ends or on a cut.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<State>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 * 1024];
    while !state.stop.load(Ordering::SeqCst) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        while state.mode() == Mode::Stalled && !state.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if state.mode() == Mode::Cut || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
