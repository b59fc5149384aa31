//! The accept side of a shard: the accept loop on the shard's SO_REUSEPORT
//! listener, reading and checking each request head, and routing the socket
//! to what serves it: the HTTP API, the demo page, a WebSocket session here,
//! or a hand-off to the shard that owns its conversation.
//!
//! Must never: serve a WebSocket of a conversation another shard owns, or
//! wait on a client past the handshake deadline.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use monoio::time::Instant;

use super::handoff;
use crate::connection;
use crate::handshake::{self, Head, Rejection};
use crate::http_api;
use crate::limits::client_ip;
use crate::routing::shard_for;
use crate::shard_ctx::{Handoff, ShardCtx, ShardMsg, TaskGuard};
use crate::web;

pub(super) async fn accept_loop(
    ctx: Rc<ShardCtx>,
    listener: monoio::net::TcpListener,
    cancel: monoio::io::CancelHandle,
) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(accept_one(ctx.clone(), stream, peer));
            }
            Err(_) if ctx.is_shutting_down() => return,
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(shard = ctx.id(), error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Reads and checks the request head, then serves the socket here or hands
/// it to the owner shard.
async fn accept_one(ctx: Rc<ShardCtx>, mut stream: TcpStream, peer: SocketAddr) {
    let _task = TaskGuard::new(&ctx);
    let deadline = Instant::now() + ctx.config().timeouts.handshake;
    let head = monoio::time::timeout_at(deadline, read_head(&ctx, &mut stream)).await;
    let (upgrade, leftover) = match head {
        Ok(Ok(Some((Head::Upgrade(upgrade), leftover)))) => (upgrade, leftover),
        Ok(Ok(Some((Head::Api(request), _)))) => {
            if !ctx.limits().check_handshake(peer.ip()) {
                return reject(&ctx, &mut stream, peer, Rejection::TooManyRequests).await;
            }
            return http_api::serve(&ctx, stream, peer, request).await;
        }
        Ok(Ok(Some((Head::Web(request), _)))) => {
            if !ctx.limits().check_handshake(peer.ip()) {
                return reject(&ctx, &mut stream, peer, Rejection::TooManyRequests).await;
            }
            let bytes = web::response(&request, ctx.config().web);
            let _ =
                monoio::time::timeout(ctx.config().timeouts.write_stall, stream.write_all(bytes))
                    .await;
            return;
        }
        Ok(Ok(None)) => return, // peer went away
        Ok(Err(rejection)) => return reject(&ctx, &mut stream, peer, rejection).await,
        Err(_) => {
            ctx.metrics().handshake_rejected("timeout");
            tracing::info!(%peer, "handshake timed out");
            return;
        }
    };
    let client_ip = client_ip(
        peer,
        upgrade.forwarded_for.as_deref(),
        &ctx.config().trusted_proxies,
    );
    // From here on, logs name the client (behind a trusted proxy: its real address).
    let peer = SocketAddr::new(client_ip, peer.port());
    if !ctx.limits().check_handshake(client_ip) {
        return reject(&ctx, &mut stream, peer, Rejection::TooManyRequests).await;
    }
    let owner = shard_for(upgrade.conversation_id, ctx.shards());
    if owner == ctx.id() {
        drop(_task);
        // A task of its own: this accept task's state is freed now.
        monoio::spawn(connection::serve(
            ctx, stream, peer, upgrade, leftover, deadline,
        ));
        return;
    }
    let msg = ShardMsg::Handoff(Handoff {
        stream: handoff::detach(stream),
        peer,
        upgrade,
        leftover,
        deadline: deadline.into_std(),
    });
    // If the owner is gone (shutting down) the message is dropped and the socket closed.
    ctx.send_to_shard(owner, msg);
}

/// Reads until a complete head. `Ok(None)`: the peer closed first.
async fn read_head(
    ctx: &ShardCtx,
    stream: &mut TcpStream,
) -> Result<Option<(Head, Vec<u8>)>, Rejection> {
    use monoio::io::AsyncReadRent;
    let max = ctx.config().limits.max_request_head_bytes;
    let mut acc: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let buf = Vec::with_capacity(max.saturating_sub(acc.len()).clamp(1, 4096));
        let (res, buf) = stream.read(buf).await;
        match res {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => acc.extend_from_slice(&buf),
        }
        match handshake::parse_head(&acc, &ctx.config().allowed_origins)? {
            Some((head_len, head)) => return Ok(Some((head, acc.split_off(head_len)))),
            None if acc.len() >= max => return Err(Rejection::HeadTooLarge),
            None => {}
        }
    }
}

async fn reject(ctx: &ShardCtx, stream: &mut TcpStream, peer: SocketAddr, rejection: Rejection) {
    ctx.metrics().handshake_rejected(rejection.label());
    tracing::info!(%peer, status = rejection.status(), reason = %rejection, "handshake rejected");
    let _ = monoio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(rejection.response()),
    )
    .await;
}
