//! The shape both side-runtime HTTP listeners share — the admin listener
//! (`admin.rs`) and the server API (`server_api.rs`): bind before anything
//! is spawned, accept with a cap on connections served at once (one more
//! is dropped unanswered), and serve each connection with hyper until it
//! is done, has lived [`CONNECTION_LIFETIME`], or the listener stops; then
//! the request in flight gets [`REQUEST_TIMEOUT`] to finish.
//!
//! Must never: parse HTTP itself (hyper does), run on a shard, or keep a
//! connection past [`CONNECTION_LIFETIME`] plus [`REQUEST_TIMEOUT`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};

/// Time allowed to send a request head, counted from the accept and again
/// each time a kept-alive connection goes idle; also the time a request in
/// flight gets to finish once its connection is told to close.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is served; then it closes after the request in
/// flight (bounds a client that keeps a connection busy or reads slowly).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections a listener serves at once.
pub const MAX_CLIENTS: usize = 64;

/// Binds `addr` as a tokio listener on `handle`'s runtime (errors surface
/// here, before anything is spawned); also returns the bound address.
pub fn bind(addr: SocketAddr, handle: &Handle) -> std::io::Result<(SocketAddr, TcpListener)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local_addr = std_listener.local_addr()?;
    let _rt = handle.enter();
    Ok((local_addr, TcpListener::from_std(std_listener)?))
}

/// Accepts until aborted; each connection holds one of [`MAX_CLIENTS`]
/// slots while `serve_one` serves it. `name` labels the logs.
pub async fn accept_loop<F, Fut>(listener: TcpListener, name: &'static str, serve_one: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, listener = name, "listener busy; connection dropped");
                    continue;
                };
                let served = serve_one(stream);
                tokio::spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection with `builder`, answering each request with
/// `respond`, until it is done, has lived [`CONNECTION_LIFETIME`], or
/// `stop` fires (its sender is dropped); the last two let the request in
/// flight finish within [`REQUEST_TIMEOUT`].
pub async fn serve_connection<F, Fut>(
    builder: &http1::Builder,
    stream: TcpStream,
    respond: F,
    mut stop: watch::Receiver<()>,
    name: &'static str,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let answer = respond(request);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let why = tokio::select! {
        done = conn.as_mut() => return log_end(done, name),
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => "lifetime reached",
        _ = stop.changed() => "listener stopped",
    };
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
        Ok(done) => log_end(done, name),
        Err(_) => tracing::debug!(why, listener = name, "connection cut mid-request"),
    }
}

fn log_end(done: hyper::Result<()>, name: &'static str) {
    if let Err(e) = done {
        tracing::debug!(error = %e, listener = name, "connection ended");
    }
}
