//! A switched connection (a WebSocket) joined to the backend's: bytes copied both ways as they
//! come, until both sides have closed, one fails, or nothing moves for the idle limit.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::conn::Transport;
use crate::upstream::Upgraded;

/// Room for one read from either side.
const PIECE: usize = 16 * 1024;

/// Copies between `client` and `upstream` (each side's bytes read past its head go first).
pub(crate) async fn join<T: Transport>(
    client: &mut T,
    client_early: BytesMut,
    upstream: Upgraded,
    idle: Duration,
) {
    let Upgraded { stream: mut upstream_stream, buf: upstream_early, .. } = upstream;
    let (mut upstream_read, mut upstream_write) = upstream_stream.split();
    let (mut client_read, mut client_write) = tokio::io::split(client);
    if upstream_write.write_all(&client_early).await.is_err()
        || client_write.write_all(&upstream_early).await.is_err()
        || client_write.flush().await.is_err()
    {
        return;
    }
    let (mut from_client, mut from_upstream) = (vec![0u8; PIECE], vec![0u8; PIECE]);
    let (mut client_open, mut upstream_open) = (true, true);
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    while client_open || upstream_open {
        tokio::select! {
            read = client_read.read(&mut from_client), if client_open => match read {
                Ok(0) | Err(_) => {
                    // The client is done sending: the backend hears the end, and may still answer.
                    client_open = false;
                    let _ = upstream_write.shutdown().await;
                }
                Ok(n) => {
                    if upstream_write.write_all(&from_client[..n]).await.is_err() {
                        return;
                    }
                    deadline.as_mut().reset(Instant::now() + idle);
                }
            },
            read = upstream_read.read(&mut from_upstream), if upstream_open => match read {
                Ok(0) | Err(_) => {
                    upstream_open = false;
                    let _ = client_write.shutdown().await;
                }
                Ok(n) => {
                    if client_write.write_all(&from_upstream[..n]).await.is_err()
                        || client_write.flush().await.is_err()
                    {
                        return;
                    }
                    deadline.as_mut().reset(Instant::now() + idle);
                }
            },
            () = &mut deadline => return,
        }
    }
}
