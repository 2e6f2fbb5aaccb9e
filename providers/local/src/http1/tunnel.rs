//! A switched connection (a WebSocket) joined to the backend's: bytes copied both ways as they
//! come, until both sides have closed, one fails, or nothing moves for the idle limit. The idle
//! limit watches reads and writes alike: a peer that stops reading cannot hold a tunnel open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;
use crate::upstream::Upgraded;

/// Room for one read from either side: small, as tunnels are many and messages short.
const PIECE: usize = 4 * 1024;

/// Copies between `client` and `upstream` (each side's bytes read past its head go first).
pub(crate) async fn join<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut T,
    client_early: BytesMut,
    upstream: Upgraded,
    idle: Duration,
    metrics: &Metrics,
) {
    let _open = OpenTunnel::count(&metrics.websocket_tunnels);
    // The slot (if the tunnel holds one) is let go when the tunnel ends.
    let Upgraded { stream: mut upstream_stream, buf: upstream_early, slot: _slot } = upstream;
    let (upstream_read, upstream_write) = upstream_stream.split();
    let (client_read, client_write) = tokio::io::split(client);
    let started = Instant::now();
    // Milliseconds after `started` when something last moved either way.
    let moved = AtomicU64::new(0);
    let both = async {
        tokio::join!(
            copy(
                client_early,
                client_read,
                upstream_write,
                started,
                &moved,
                &metrics.websocket_bytes_to_backend
            ),
            copy(
                upstream_early,
                upstream_read,
                client_write,
                started,
                &moved,
                &metrics.websocket_bytes_to_client
            ),
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
    carried: &Counter,
) {
    let mark = || moved.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    if !early.is_empty() {
        if to.write_all(&early).await.is_err() || to.flush().await.is_err() {
            return;
        }
        carried.inc_by(early.len() as u64);
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
                carried.inc_by(n as u64);
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

/// One open tunnel in the gauge, for as long as it lives (ended or cancelled alike).
struct OpenTunnel<'a>(&'a Gauge);

impl<'a> OpenTunnel<'a> {
    fn count(open: &'a Gauge) -> Self {
        open.inc();
        Self(open)
    }
}

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
