//! One client connection spoken in HTTP/1.1: heads read in place, each request handed to the
//! proxy while its body is pumped from the socket, each response written with its head and
//! first piece of body in one write. An idle connection holds no buffer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;

use super::chunked::{self, Decoded};
use super::decode::BodyDecoder;
use super::head::{self, Framing, HeadError, HeadLimits, RequestHead};
use super::response::{self, BodyFraming};
use super::tunnel;
use crate::body::{self, Body, BoxError};
use crate::policy::LimitHeaders;
use crate::proxy::{self, ConnInfo};
use crate::server::Shared;
use crate::upstream::UpgradedUpstream;

/// Room asked for per read of a request head (most fit in far less; a longer one grows the
/// buffer), and per read of a request body.
const HEAD_READ: usize = 2 * 1024;
const BODY_READ: usize = 16 * 1024;
/// Body pieces up to this size are copied into the write buffer beside the framing (one write);
/// larger ones are written on their own.
const COPY_LIMIT: usize = 16 * 1024;

/// A client socket the server speaks HTTP/1.1 on.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Ready once the peer has sent something or closed, so that an idle connection can wait
    /// without holding a read buffer (polled: the waiting takes no room in the task).
    fn poll_ready_to_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Transport for TcpStream {
    fn poll_ready_to_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl Transport for TlsStream<TcpStream> {
    fn poll_ready_to_read(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The TLS session may hold decrypted bytes already: read at once.
        Poll::Ready(Ok(()))
    }
}

/// Serves requests on `io` until the client closes, an error, the header timeout, or a drain.
///
/// This future is most of an idle connection's task. It is a block, not an `async fn` (whose
/// future holds its arguments twice: as passed and as bound in its body), and so is
/// [`read_head`], which an idle connection waits in.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
pub(crate) fn serve<'a, T: Transport + 'a>(
    shared: &'a Shared,
    mut io: T,
    info: Box<ConnInfo>,
    mut drain: watch::Receiver<bool>,
) -> impl Future<Output = ()> + 'a {
    async move {
        let settings = &shared.settings;
        let limits = HeadLimits { max_bytes: settings.max_header_bytes, max_headers: settings.max_headers };
        let mut buf = BytesMut::new();
        let mut deadline = Box::pin(tokio::time::sleep(settings.header_read_timeout));
        // Moved to each request's deadline, later than the last one as a rule (then it costs an
        // atomic store; a shorter route timeout re-arms it): see `proxy::RequestTimer`.
        let mut request_timer = Box::pin(tokio::time::sleep(settings.header_read_timeout));
        loop {
            deadline.as_mut().reset(Instant::now() + settings.header_read_timeout);
            // What comes next is boxed: a request in flight (the handler's state, the response
            // being written) or a refusal is no part of an idle connection's task. No await inside
            // this match, so neither the head nor the head's reading is kept in the task either.
            let keep_alive = {
                let exchanging = match read_head(&mut io, &mut buf, limits, deadline.as_mut(), &mut drain)
                    .await
                {
                    HeadRead::Head(head) => {
                        Ok(Box::pin(exchange(shared, &mut io, &mut buf, &info, head, request_timer.as_mut())))
                    }
                    HeadRead::End => return,
                    HeadRead::Refused(HeadError { status, message }) => {
                        Err(Box::pin(refuse(&mut io, status, message)))
                    }
                };
                match exchanging {
                    Ok(exchanging) => exchanging.await.unwrap_or_else(|e| {
                        tracing::debug!(remote = %info.remote, error = %e, "connection ended with an error");
                        false
                    }),
                    Err(refusing) => {
                        refusing.await;
                        return;
                    }
                }
            };
            if !keep_alive || *drain.borrow() {
                return;
            }
            if buf.is_empty() {
                // Idle until the next request: no read buffer held meanwhile.
                buf = BytesMut::new();
            }
        }
    }
}

// Returned once per head and matched at once, never kept in a connection's task.
#[allow(clippy::large_enum_variant)]
enum HeadRead {
    Head(RequestHead),
    /// The client closed, stayed silent past the deadline, or the server drains.
    End,
    Refused(HeadError),
}

#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn read_head<'a, T: Transport>(
    io: &'a mut T,
    buf: &'a mut BytesMut,
    limits: HeadLimits,
    mut deadline: Pin<&'a mut Sleep>,
    drain: &'a mut watch::Receiver<bool>,
) -> impl Future<Output = HeadRead> + 'a {
    async move {
        loop {
            if !buf.is_empty() {
                match head::parse_request(buf, limits) {
                    Ok(Some(head)) => return HeadRead::Head(head),
                    Ok(None) => {}
                    Err(refusal) => return HeadRead::Refused(refusal),
                }
            }
            let idle = buf.is_empty();
            if idle && *drain.borrow() {
                return HeadRead::End;
            }
            tokio::select! {
                biased;
                read = read_more(io, buf, HEAD_READ) => match read {
                    Ok(0) | Err(_) => return HeadRead::End,
                    Ok(_) => {}
                },
                () = deadline.as_mut() => {
                    return if idle {
                        HeadRead::End
                    } else {
                        HeadRead::Refused(HeadError {
                            status: StatusCode::REQUEST_TIMEOUT,
                            message: "request head not sent in time",
                        })
                    };
                }
                changed = drain.changed(), if idle => {
                    if changed.is_err() {
                        return HeadRead::End;
                    }
                }
            }
        }
    }
}

/// Reads what the peer sent next into `buf`, with room for at least `room` bytes; 0 at its end.
async fn read_more<T: Transport>(io: &mut T, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
    if buf.capacity() == 0 {
        std::future::poll_fn(|cx| io.poll_ready_to_read(cx)).await?;
    }
    buf.reserve(room);
    io.read_buf(buf).await
}

/// Answers a head that cannot be served, then the connection closes.
async fn refuse<T: Transport>(io: &mut T, status: StatusCode, message: &str) {
    let mut out = BytesMut::with_capacity(256);
    response::write_refusal(&mut out, status, message);
    if io.write_all(&out).await.is_ok() && io.flush().await.is_ok() {
        linger(io).await;
    }
}

/// Serves one request: hands it to the proxy, pumps its body meanwhile, writes the response.
/// Whether the connection may carry another request.
async fn exchange<T: Transport>(
    shared: &Shared,
    io: &mut T,
    buf: &mut BytesMut,
    info: &ConnInfo,
    head: RequestHead,
    timer: Pin<&mut Sleep>,
) -> io::Result<bool> {
    let RequestHead { request, framing, keep_alive, expect_continue } = head;
    let method = request.method().clone();
    let http10 = request.version() == Version::HTTP_10;
    let (request, mut pump) = match framing {
        Framing::Empty => (request.map(|()| body::empty()), None),
        Framing::Length(_) | Framing::Chunked => {
            let (body, pump) = request_body(framing, expect_continue);
            (request.map(|()| body), Some(pump))
        }
    };
    let handling = proxy::handle(shared, info, request, Some(timer));
    tokio::pin!(handling);
    let proxy::Answer { response, limits } = match pump.as_mut() {
        None => handling.as_mut().await,
        Some(pump) => {
            let mut pumping = true;
            loop {
                tokio::select! {
                    biased;
                    response = &mut handling => break response,
                    () = pump.run(io, buf), if pumping => pumping = false,
                }
            }
        }
    };
    // A body the handler did not read (a refusal, an early answer) keeps the connection only if
    // the rest of it is already here; otherwise the connection closes after the answer.
    let body_read = pump.is_none_or(|mut pump| pump.finish_from(buf));
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return switch(shared, io, buf, response, &limits).await;
    }
    // A draining server says so in this answer, before the client sends another request.
    let keep_alive = keep_alive && body_read && !shared.is_draining();
    let reusable = write_response(io, response, &limits, &method, http10, keep_alive).await?;
    if !body_read {
        linger(io).await;
    }
    Ok(reusable)
}

/// Answers a request the backend switched to WebSocket with its `101`, then carries the
/// connection's bytes both ways until it ends. A `101` with no backend connection to join (a
/// route answering 101 itself) is answered 502 instead. The connection is never reused.
async fn switch<T: Transport>(
    shared: &Shared,
    io: &mut T,
    buf: &mut BytesMut,
    response: Response<Body>,
    limits: &LimitHeaders,
) -> io::Result<bool> {
    let upstream = response.extensions().get::<UpgradedUpstream>().and_then(UpgradedUpstream::take);
    let Some(upstream) = upstream else {
        refuse(io, StatusCode::BAD_GATEWAY, "the backend switched protocols without being asked").await;
        return Ok(false);
    };
    let mut out = BytesMut::with_capacity(512);
    response::write_switch_to_websocket(&mut out, response.headers(), limits);
    drop(response);
    io.write_all(&out).await?;
    io.flush().await?;
    let idle = shared.settings.websocket_idle_timeout;
    tunnel::join(io, std::mem::take(buf), upstream, idle, &shared.metrics).await;
    Ok(false)
}

/// Before closing a connection whose client may still be sending (a body nobody read, a head
/// too large): stop writing, then read and drop what arrives for a short while. Closing with
/// unread bytes makes the kernel reset the connection, which can destroy the answer before the
/// client has read it.
async fn linger<T: Transport>(io: &mut T) {
    const MOST: usize = 256 * 1024;
    if io.shutdown().await.is_err() {
        return;
    }
    let draining = async {
        let mut sink = vec![0u8; 8 * 1024];
        let mut read = 0;
        while read < MOST {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), draining).await;
}

/// Writes `response` with `limits`; whether the connection may carry another request.
async fn write_response<T: Transport>(
    io: &mut T,
    response: Response<Body>,
    limits: &LimitHeaders,
    method: &Method,
    http10: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let framing =
        response::body_framing(method, parts.status, &parts.headers, body.size_hint().exact(), http10);
    let close = !keep_alive || framing == BodyFraming::Close;
    let mut out = BytesMut::with_capacity(1024);
    response::write_head(&mut out, parts.status, &parts.headers, limits, framing, close, http10 && !close);
    drop(parts);
    let complete = match framing {
        BodyFraming::None => {
            // Nothing is sent; an upstream body already at its end still hands its connection
            // back to the pool when polled once.
            if !body.is_end_stream() {
                let _ = poll_frame_once(&mut body).await;
            }
            io.write_all(&out).await?;
            true
        }
        BodyFraming::Length(_) | BodyFraming::Chunked | BodyFraming::Close => {
            write_body(io, &mut out, &mut body, framing).await?
        }
    };
    io.flush().await?;
    Ok(complete && !close)
}

/// Streams `body` after the head already in `out`; whether it was sent whole as framed.
async fn write_body<T: Transport>(
    io: &mut T,
    out: &mut BytesMut,
    body: &mut Body,
    framing: BodyFraming,
) -> io::Result<bool> {
    let mut left = match framing {
        BodyFraming::Length(length) => Some(length),
        _ => None,
    };
    loop {
        let frame = match next_frame(io, out, body).await? {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                io.write_all(out).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if let Some(left) = &mut left {
            // More than the head declared would be read as the next response: stop here.
            let len = data.len() as u64;
            if len > *left {
                out.extend_from_slice(&data[..*left as usize]);
                io.write_all(out).await?;
                return Ok(false);
            }
            *left -= len;
        }
        if framing == BodyFraming::Chunked {
            chunked::chunk_start(out, data.len());
        }
        if data.len() <= COPY_LIMIT {
            out.extend_from_slice(&data);
        } else {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        }
        if framing == BodyFraming::Chunked {
            out.extend_from_slice(chunked::CHUNK_END);
        }
        if body.is_end_stream() {
            break;
        }
    }
    if framing == BodyFraming::Chunked {
        out.extend_from_slice(chunked::LAST_CHUNK);
    }
    io.write_all(out).await?;
    out.clear();
    // A body that ended short of its declared length leaves the client waiting: close.
    Ok(left.is_none_or(|left| left == 0))
}

/// The body's next frame. What is waiting in `out` goes out first if the frame is not ready
/// at once: the head and the first piece of body share one write when they can.
async fn next_frame<T: Transport>(
    io: &mut T,
    out: &mut BytesMut,
    body: &mut Body,
) -> io::Result<Option<Result<Frame<Bytes>, BoxError>>> {
    if let Poll::Ready(frame) = poll_frame_once(body).await {
        return Ok(frame);
    }
    if !out.is_empty() {
        // An upstream body is usually one scheduling turn away (its connection's task has
        // just read it): give that task its turn before writing the head alone.
        tokio::task::yield_now().await;
        if let Poll::Ready(frame) = poll_frame_once(body).await {
            return Ok(frame);
        }
        io.write_all(out).await?;
        io.flush().await?;
        out.clear();
    }
    Ok(body.frame().await)
}

/// Polls `body` once, with the task's waker: ready or not, it returns at once.
fn poll_frame_once(
    body: &mut Body,
) -> impl Future<Output = Poll<Option<Result<Frame<Bytes>, BoxError>>>> + '_ {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx)))
}

/// What the pump hands the request body.
enum Piece {
    Data(Bytes),
    End,
    Failed(BoxError),
}

/// The request body the proxy reads: pieces the connection pumps from the socket.
struct RequestBody {
    pieces: mpsc::Receiver<Piece>,
    /// Told when the body is first read (the client waits for `100 Continue` until then).
    wanted: Option<oneshot::Sender<()>>,
    /// Bytes still to come, when the length is known.
    left: Option<u64>,
    ended: bool,
}

/// The body ended before its framing did.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body ended early")]
struct BodyCut;

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(wanted) = self.wanted.take() {
            let _ = wanted.send(());
        }
        match self.pieces.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(data))) => {
                if let Some(left) = &mut self.left {
                    *left = left.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Piece::Failed(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(Box::new(BodyCut))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.left == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.left.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Reads a request body off the connection into its [`RequestBody`].
struct BodyPump {
    decoding: BodyDecoder,
    pieces: mpsc::Sender<Piece>,
    wanted: Option<oneshot::Receiver<()>>,
    /// `100 Continue` was started but not finished (the pump was stopped inside the write).
    interim_unfinished: bool,
    done: bool,
}

fn request_body(framing: Framing, expect_continue: bool) -> (Body, BodyPump) {
    let (tx, rx) = mpsc::channel(1);
    let (wanted_tx, wanted_rx) = if expect_continue {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let decoding = BodyDecoder::from(framing);
    let body = RequestBody { pieces: rx, wanted: wanted_tx, left: decoding.left(), ended: false };
    let pump = BodyPump { decoding, pieces: tx, wanted: wanted_rx, interim_unfinished: false, done: false };
    (body.boxed(), pump)
}

impl BodyPump {
    /// Pumps until the body ends, fails, or nobody reads it. Cancel-safe: the state moves
    /// only when a piece is handed on.
    async fn run<T: Transport>(&mut self, io: &mut T, buf: &mut BytesMut) {
        if let Some(wanted) = self.wanted.take() {
            if wanted.await.is_err() {
                return;
            }
            self.interim_unfinished = true;
            if io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() || io.flush().await.is_err() {
                return;
            }
            self.interim_unfinished = false;
        }
        while !self.done {
            let Ok(permit) = self.pieces.reserve().await else { return };
            let piece = match self.decoding.decode(buf) {
                Ok(Decoded::Data(data)) => Piece::Data(data),
                Ok(Decoded::End) => Piece::End,
                Ok(Decoded::NeedMore) => match read_more(io, buf, BODY_READ).await {
                    Ok(0) => Piece::Failed(Box::new(BodyCut)),
                    Ok(_) => continue,
                    Err(e) => Piece::Failed(Box::new(e)),
                },
                Err(e) => Piece::Failed(Box::new(e)),
            };
            if !matches!(piece, Piece::Data(_)) {
                self.done = true;
            }
            permit.send(piece);
        }
    }

    /// After the answer: whether the body was read to its end, discarding what the handler did
    /// not read from what is already buffered.
    fn finish_from(&mut self, buf: &mut BytesMut) -> bool {
        if self.interim_unfinished {
            return false;
        }
        if self.wanted.is_some() {
            // The client still waits for `100 Continue`: it has sent no body, and will not.
            return false;
        }
        while !self.done {
            match self.decoding.decode(buf) {
                Ok(Decoded::Data(_)) => {}
                Ok(Decoded::End) => self.done = true,
                Ok(Decoded::NeedMore) | Err(_) => return false,
            }
        }
        true
    }
}
