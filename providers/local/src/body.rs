//! Body types: everything is streamed; a request that may be retried keeps what it sent, up to
//! a bound ([`ReplayBody`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// Bytes of request bodies kept for retries by the whole process, and the most it may keep:
/// past that, bodies are sent without being kept (and without retries).
#[derive(Debug)]
pub struct ReplayMemory {
    kept: AtomicUsize,
    limit: usize,
}

impl ReplayMemory {
    pub fn new(limit: usize) -> Self {
        Self { kept: AtomicUsize::new(0), limit }
    }

    fn take(&self, bytes: usize) -> bool {
        self.kept
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| {
                kept.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.kept.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A request body that can be sent more than once: the first attempt streams it from the
/// client as it comes, and what it reads is kept (up to `limit` bytes, and while the process
/// has room) so that a later attempt replays it, then goes on reading from the client where
/// the earlier one stopped. Once more was read than could be kept, it cannot be replayed.
pub struct ReplayBody {
    shared: Arc<Mutex<Replay>>,
    /// The next kept frame this attempt sends.
    position: usize,
    /// Data bytes this attempt has sent.
    sent: u64,
    /// Which attempt this body is (0 for the first).
    attempt: u64,
}

struct Replay {
    client: Option<Body>,
    kept: Vec<KeptFrame>,
    kept_bytes: usize,
    limit: usize,
    memory: Arc<ReplayMemory>,
    /// More was read than was kept: the body cannot be sent again.
    overflowed: bool,
    /// The body's length when the client declared it (each attempt declares it too).
    length: Option<u64>,
    /// The newest attempt: only its body reads.
    attempt: u64,
}

/// A frame of the body as kept ([`Frame`] cannot be cloned).
enum KeptFrame {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

impl KeptFrame {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Self::Data(data) => Frame::data(data.clone()),
            Self::Trailers(trailers) => Frame::trailers(trailers.clone()),
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.memory.give_back(self.kept_bytes);
    }
}

/// What hands out a [`ReplayBody`] for each attempt.
pub struct Replayable(Arc<Mutex<Replay>>);

impl Replayable {
    /// Keeps up to `limit` bytes of `client` (and no more than `memory` allows); returns the
    /// keeper and the first attempt's body.
    pub fn new(client: Body, limit: usize, memory: Arc<ReplayMemory>) -> (Self, ReplayBody) {
        let length = client.size_hint().exact();
        let replay = Replay {
            client: Some(client),
            kept: Vec::new(),
            kept_bytes: 0,
            limit,
            memory,
            overflowed: false,
            length,
            attempt: 0,
        };
        let shared = Arc::new(Mutex::new(replay));
        (Self(shared.clone()), ReplayBody { shared, position: 0, sent: 0, attempt: 0 })
    }

    /// The body for another attempt, from its first byte (earlier attempts' bodies stop
    /// reading); `None` once it cannot be replayed.
    pub fn again(&self) -> Option<ReplayBody> {
        let mut replay = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if replay.overflowed {
            return None;
        }
        replay.attempt += 1;
        Some(ReplayBody { shared: self.0.clone(), position: 0, sent: 0, attempt: replay.attempt })
    }
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut replay = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        if replay.attempt != this.attempt {
            return Poll::Ready(Some(
                Err("the request was sent again; this attempt's body ends here".into()),
            ));
        }
        if let Some(kept) = replay.kept.get(this.position) {
            let frame = kept.frame();
            this.position += 1;
            this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(client) = replay.client.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(client).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) if !replay.overflowed => {
                let (kept, bytes) = match (frame.data_ref(), frame.trailers_ref()) {
                    (Some(data), _) => (KeptFrame::Data(data.clone()), data.len()),
                    (None, Some(trailers)) => (KeptFrame::Trailers(trailers.clone()), 0),
                    (None, None) => return polled,
                };
                if replay.kept_bytes + bytes <= replay.limit && replay.memory.take(bytes) {
                    replay.kept_bytes += bytes;
                    replay.kept.push(kept);
                    this.position += 1;
                } else {
                    replay.overflowed = true;
                    let kept_bytes = std::mem::take(&mut replay.kept_bytes);
                    replay.memory.give_back(kept_bytes);
                    replay.kept = Vec::new();
                }
            }
            Poll::Ready(None) => replay.client = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let replay = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        self.position >= replay.kept.len() && replay.client.as_ref().is_none_or(|c| c.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let replay = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match replay.length {
            Some(length) => SizeHint::with_exact(length.saturating_sub(self.sent)),
            None => SizeHint::default(),
        }
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

#[cfg(test)]
mod tests {
    use futures_util::stream;
    use http_body_util::StreamBody;

    use super::*;

    /// A client body of `chunks`, with a declared length when `declared`.
    fn client(chunks: &[&'static str], declared: bool) -> Body {
        let frames = chunks.iter().map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c.as_bytes()))));
        let body = StreamBody::new(stream::iter(frames.collect::<Vec<_>>()));
        if declared {
            let length = chunks.iter().map(|c| c.len()).sum::<usize>() as u64;
            Sized { inner: body, length }.boxed()
        } else {
            body.boxed()
        }
    }

    /// A body that declares its length.
    struct Sized<B> {
        inner: B,
        length: u64,
    }

    impl<B: HttpBody<Data = Bytes, Error = BoxError> + Unpin> HttpBody for Sized<B> {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Pin::new(&mut self.inner).poll_frame(cx)
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.length)
        }
    }

    async fn next_data(body: &mut ReplayBody) -> Option<Bytes> {
        body.frame().await?.ok()?.into_data().ok()
    }

    #[tokio::test]
    async fn a_retry_replays_what_was_sent_then_reads_on_from_the_client() {
        let memory = Arc::new(ReplayMemory::new(1 << 20));
        let (replay, mut first) = Replayable::new(client(&["ab", "cd", "ef"], true), 1024, memory.clone());
        assert_eq!(first.size_hint().exact(), Some(6));
        // The backend answered after reading one chunk.
        assert_eq!(next_data(&mut first).await.as_deref(), Some(&b"ab"[..]));
        drop(first);
        let second = replay.again().expect("kept");
        assert_eq!(second.size_hint().exact(), Some(6), "each attempt declares the whole length");
        let all = second.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdef");
        let third = replay.again().expect("kept whole");
        assert_eq!(&third.collect().await.unwrap().to_bytes()[..], b"abcdef");
        assert_eq!(memory.kept.load(Ordering::Relaxed), 6);
        drop(replay);
        assert_eq!(memory.kept.load(Ordering::Relaxed), 0, "memory given back");
    }

    #[tokio::test]
    async fn an_earlier_attempts_body_stops_reading_once_the_request_is_sent_again() {
        let memory = Arc::new(ReplayMemory::new(1 << 20));
        let (replay, mut first) = Replayable::new(client(&["ab", "cd"], true), 1024, memory);
        assert_eq!(next_data(&mut first).await.as_deref(), Some(&b"ab"[..]));
        // Still held (an HTTP/2 connection sends bodies from its own task) when the retry starts.
        let second = replay.again().expect("kept");
        assert!(first.frame().await.expect("a frame").is_err(), "the earlier body must not read on");
        assert_eq!(&second.collect().await.unwrap().to_bytes()[..], b"abcd", "the retry gets every byte");
    }

    #[tokio::test]
    async fn a_body_longer_than_the_limit_or_the_memory_left_is_sent_once() {
        let memory = Arc::new(ReplayMemory::new(1 << 20));
        let (replay, first) = Replayable::new(client(&["abcd", "efgh"], false), 6, memory.clone());
        assert_eq!(&first.collect().await.unwrap().to_bytes()[..], b"abcdefgh", "sent whole all the same");
        assert!(replay.again().is_none());
        assert_eq!(memory.kept.load(Ordering::Relaxed), 0);

        let small = Arc::new(ReplayMemory::new(5));
        let (_held, first) = Replayable::new(client(&["abcd"], false), 1024, small.clone());
        assert_eq!(&first.collect().await.unwrap().to_bytes()[..], b"abcd");
        let (replay, first) = Replayable::new(client(&["xy"], false), 1024, small.clone());
        assert_eq!(&first.collect().await.unwrap().to_bytes()[..], b"xy");
        assert!(replay.again().is_none(), "4 of 5 bytes already kept by another request");
        assert_eq!(small.kept.load(Ordering::Relaxed), 4);
    }
}
