//! Body types: everything is streamed; only a request that may be retried has its body
//! buffered, and only up to a bound ([`buffer_up_to`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of requests sent upstream and of responses sent to clients.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A client stopped sending its request body: nothing came for this long.
#[derive(Debug)]
pub struct BodyIdle(pub Duration);

impl std::fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body idle for {} s", self.0.as_secs_f64())
    }
}

impl std::error::Error for BodyIdle {}

/// Wraps a request body so its data frames are also copied to mirror channels (a slow or
/// closed mirror is dropped; it never slows the real request down), and so that a client that
/// stops sending mid-body is cut off after `idle` (only time spent waiting for the client
/// counts, not time the upstream takes to accept what was sent).
pub struct TeeBody<B> {
    inner: B,
    taps: Vec<mpsc::Sender<Bytes>>,
    idle: Option<Duration>,
    /// Armed when the body first has to wait for the client (most bodies never do, and an
    /// empty one is never polled), re-armed at each new wait.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<B> TeeBody<B> {
    pub fn new(inner: B, taps: Vec<mpsc::Sender<Bytes>>, idle: Option<Duration>) -> Self {
        Self { inner, taps, idle, timer: None, waiting: false }
    }
}

impl<B> HttpBody for TeeBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some(limit) = this.idle {
                if !this.waiting {
                    let deadline = Instant::now() + limit;
                    match &mut this.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if this.timer.as_mut().is_some_and(|timer| timer.as_mut().poll(cx).is_ready()) {
                    this.taps.clear();
                    return Poll::Ready(Some(Err(Box::new(BodyIdle(limit)))));
                }
            }
        }
        this.waiting = polled.is_pending();
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.taps.retain(|tap| tap.try_send(data.clone()).is_ok());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.taps.clear();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.taps.clear();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body read for sending more than once, or what was read of it.
pub enum Buffered {
    /// The whole body, within the bound: it can be sent again.
    Whole(Bytes),
    /// Longer than the bound (or with trailers): the frames read so far, then the rest, to be
    /// sent once.
    Streaming(Body),
    /// The client's body failed while it was read (stalled, reset).
    Failed(BoxError),
}

/// Reads `body` whole if it holds at most `limit` bytes of data and no trailers.
pub async fn buffer_up_to<B>(mut body: B, limit: usize) -> Buffered
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Send + Sync + Unpin + 'static,
{
    if body.size_hint().lower() > limit as u64 {
        return Buffered::Streaming(body.boxed());
    }
    let mut read: Vec<Frame<Bytes>> = Vec::new();
    let mut length = 0;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Buffered::Failed(e),
            Some(Ok(frame)) => {
                let is_data = frame.data_ref().map(|data| length += data.len()).is_some();
                read.push(frame);
                if !is_data || length > limit {
                    return Buffered::Streaming(Prefixed { read: read.into(), rest: body }.boxed());
                }
            }
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(length);
    for frame in read {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Buffered::Whole(whole.freeze())
}

/// Frames already read, then the rest of the body they came from.
struct Prefixed<B> {
    read: std::collections::VecDeque<Frame<Bytes>>,
    rest: B,
}

impl<B> HttpBody for Prefixed<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.read.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }
}

/// A body fed by a channel (the mirror side of a [`TeeBody`]).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self { rx }
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
