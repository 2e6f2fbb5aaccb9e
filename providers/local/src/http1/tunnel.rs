//! A switched connection (a WebSocket) joined to the backend's: bytes copied both ways as they
//! come, until both sides have closed, one fails, or nothing moves for the idle limit. The idle
//! limit watches reads and writes alike: a peer that stops reading cannot hold a tunnel open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::conn::Transport;
use crate::upstream::Upgraded;

/// Room for one read from either side: small, as tunnels are many and messages short.
const PIECE: usize = 4 * 1024;

/// Copies between `client` and `upstream` (each side's bytes read past its head go first).
pub(crate) async fn join<T: Transport>(
    client: &mut T,
    client_early: BytesMut,
    upstream: Upgraded,
    idle: Duration,
) {
    let Upgraded { stream: mut upstream_stream, buf: upstream_early } = upstream;
    let (upstream_read, upstream_write) = upstream_stream.split();
    let (client_read, client_write) = tokio::io::split(client);
    let started = Instant::now();
    // Milliseconds after `started` when something last moved either way.
    let moved = AtomicU64::new(0);
    let both = async {
        tokio::join!(
            copy(client_early, client_read, upstream_write, started, &moved),
            copy(upstream_early, upstream_read, client_write, started, &moved),
        )
    };
    tokio::select! {
        _ = both => {}
        () = watchdog(started, &moved, idle) => {}
    }
}

/// Sends `early`, then what `from` sends, to `to`, and `to` the end when `from` ends.
async fn copy(
    early: BytesMut,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    started: Instant,
    moved: &AtomicU64,
) {
    let mark = || moved.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    if !early.is_empty() {
        if to.write_all(&early).await.is_err() || to.flush().await.is_err() {
            return;
        }
        mark();
    }
    drop(early);
    let mut piece = vec![0u8; PIECE];
    loop {
        match from.read(&mut piece).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                mark();
                if to.write_all(&piece[..n]).await.is_err() || to.flush().await.is_err() {
                    return;
                }
                mark();
            }
        }
    }
    // The sender is done: the other side hears the end, and may still answer.
    let _ = to.shutdown().await;
}

/// Ends once nothing has moved for `idle`.
async fn watchdog(started: Instant, moved: &AtomicU64, idle: Duration) {
    loop {
        let last = started + Duration::from_millis(moved.load(Ordering::Relaxed));
        if last.elapsed() >= idle {
            return;
        }
        tokio::time::sleep_until(last + idle).await;
    }
}
