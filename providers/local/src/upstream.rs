//! Upstream connections: a keep-alive pool over hyper's HTTP/1.1 client connections.
//!
//! A connection goes back to the pool when its response body has been read to the end, so a
//! pooled connection is always ready for the next request. Idle connections expire, and those
//! to endpoints no longer in the configuration are dropped when it changes. Each endpoint takes
//! at most `max_connections_per_endpoint` requests at a time; a request waits at most
//! `connection_wait` for one of them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{Body, BoxError};

/// Settings of the upstream connection pool.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Requests in flight to one endpoint at a time (each on its own connection).
    pub max_connections_per_endpoint: usize,
    /// How long a request waits for one of those before it is answered 503.
    pub connection_wait: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 512,
            max_connections_per_endpoint: 1024,
            connection_wait: Duration::from_secs(5),
        }
    }
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connect to {0}: timed out")]
    ConnectTimeout(String),
    #[error("upstream protocol error: {0}")]
    Protocol(#[from] hyper::Error),
    #[error("{0}: every connection the endpoint may have is busy")]
    Saturated(String),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(..) | Self::ConnectTimeout(_))
    }
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// Keep-alive connections per upstream address (`host:port`).
pub struct UpstreamPool {
    settings: UpstreamSettings,
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
    /// Per address: a permit per request in flight.
    in_flight: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

pub type UpstreamClient = Arc<UpstreamPool>;

pub fn client(settings: &UpstreamSettings) -> UpstreamClient {
    Arc::new(UpstreamPool {
        settings: settings.clone(),
        idle: Mutex::new(HashMap::new()),
        in_flight: Mutex::new(HashMap::new()),
    })
}

impl UpstreamPool {
    /// Sends `req` to `address` (`host:port`), reusing an idle connection when there is one.
    pub async fn send(
        self: &Arc<Self>,
        address: &Arc<str>,
        req: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let semaphore = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let limit = self.settings.max_connections_per_endpoint.max(1);
            in_flight.entry(address.clone()).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
        };
        // A free slot is taken at once; only a request that has to wait arms a timer.
        let permit = match semaphore.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                match tokio::time::timeout(self.settings.connection_wait, semaphore.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(UpstreamError::Saturated(address.to_string())),
                }
            }
        };
        let mut sender = match self.checkout(address).await {
            Some(sender) => sender,
            None => self.connect(address).await?,
        };
        let response = sender.send_request(req).await?;
        let (head, body) = response.into_parts();
        let body = PooledBody {
            inner: body,
            give_back: Some((self.clone(), address.clone(), sender)),
            _permit: permit,
        };
        Ok(Response::from_parts(head, http_body_util::BodyExt::boxed(body)))
    }

    /// Drops idle connections (and limits) of every address `keep` refuses: endpoints that left
    /// the configuration.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).retain(|address, _| keep(address));
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).retain(|address, _| keep(address));
    }

    /// Idle connections kept for `address`.
    pub fn idle_count(&self, address: &str) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).get(address).map_or(0, Vec::len)
    }

    /// An idle connection to `address` that is ready for a request, if there is one.
    async fn checkout(&self, address: &str) -> Option<SendRequest<Body>> {
        loop {
            let entry = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(address)?.pop()?
            };
            if entry.since.elapsed() >= self.settings.pool_idle_timeout || entry.sender.is_closed() {
                continue;
            }
            let mut sender = entry.sender;
            if sender.is_ready() {
                return Some(sender);
            }
            // A connection handed back at the end of a body becomes ready a moment later; one
            // that does not within the connect timeout is dropped.
            if let Ok(Ok(())) = tokio::time::timeout(self.settings.connect_timeout, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    fn give_back(&self, address: Arc<str>, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(address).or_default();
        if list.len() < self.settings.pool_max_idle_per_host {
            list.push(Idle { sender, since: Instant::now() });
        }
    }

    async fn connect(&self, address: &str) -> Result<SendRequest<Body>, UpstreamError> {
        let stream =
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(UpstreamError::Connect(address.to_string(), e)),
                Err(_) => return Err(UpstreamError::ConnectTimeout(address.to_string())),
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// A response body that returns its connection to the pool once read to the end.
struct PooledBody {
    inner: Incoming,
    give_back: Option<(Arc<UpstreamPool>, Arc<str>, SendRequest<Body>)>,
    /// The endpoint's slot, held until the answer has been read (or dropped).
    _permit: OwnedSemaphorePermit,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((pool, address, sender)) = self.give_back.take() {
            pool.give_back(address, sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.give_back = None,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            _ => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::{BodyExt, Empty};

    use super::*;

    async fn echo() -> Arc<str> {
        let addr =
            crate::echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), "up").await.expect("echo backend");
        Arc::from(addr.to_string())
    }

    fn get(delay_ms: u64) -> Request<Body> {
        let body = Empty::<Bytes>::new().map_err(|never| match never {}).boxed();
        Request::builder()
            .uri("/")
            .header("host", "up")
            .header("x-echo-delay-ms", delay_ms.to_string())
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn an_endpoint_takes_a_bounded_number_of_requests_and_the_wait_is_bounded() {
        let address = echo().await;
        let settings = UpstreamSettings {
            max_connections_per_endpoint: 1,
            connection_wait: Duration::from_millis(100),
            ..UpstreamSettings::default()
        };
        let pool = client(&settings);
        let first = pool.send(&address, get(0)).await.expect("first request");
        // The first answer is not read yet: its connection is busy, and the endpoint's only one.
        let started = Instant::now();
        let second = pool.send(&address, get(0)).await;
        assert!(matches!(second, Err(UpstreamError::Saturated(_))), "{second:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
        let _ = first.into_body().collect().await;
        let third = pool.send(&address, get(0)).await.expect("a slot is free again");
        assert_eq!(third.status(), 200);
    }

    #[tokio::test]
    async fn idle_connections_to_endpoints_that_left_are_dropped() {
        let (kept, gone) = (echo().await, echo().await);
        let pool = client(&UpstreamSettings::default());
        for address in [&kept, &gone] {
            let response = pool.send(address, get(0)).await.expect("request");
            let _ = response.into_body().collect().await;
        }
        assert_eq!((pool.idle_count(&kept), pool.idle_count(&gone)), (1, 1));
        pool.retain(|address| address == &*kept);
        assert_eq!((pool.idle_count(&kept), pool.idle_count(&gone)), (1, 0));
    }

    /// A backend on keep-alive connections.
    struct Backend {
        address: Arc<str>,
        /// Connections accepted so far.
        accepted: Arc<std::sync::atomic::AtomicUsize>,
    }

    /// A backend that answers every request with `status` (no body for 204); `close` answers
    /// with `Connection: close` and closes, as a backend at its keep-alive limit does.
    async fn counting_backend(status: u16, close: bool) -> Backend {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backend = Backend {
            address: Arc::from(listener.local_addr().expect("address").to_string()),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let counter = backend.accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        let body = if status == 204 { Bytes::new() } else { Bytes::from_static(b"ok") };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder().status(status).body(http_body_util::Full::new(body)).unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        backend
    }

    async fn exchange(pool: &UpstreamClient, address: &Arc<str>) -> u16 {
        let response = pool.send(address, get(0)).await.expect("request");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection_with_or_without_a_body() {
        for status in [200, 204] {
            let backend = counting_backend(status, false).await;
            let pool = client(&UpstreamSettings::default());
            for _ in 0..5 {
                assert_eq!(exchange(&pool, &backend.address).await, status);
            }
            assert_eq!(backend.accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "status {status}");
            assert_eq!(pool.idle_count(&backend.address), 1);
        }
    }

    #[tokio::test]
    async fn a_connection_the_backend_closes_after_its_answer_is_not_reused() {
        let backend = counting_backend(200, true).await;
        let pool = client(&UpstreamSettings::default());
        for _ in 0..3 {
            assert_eq!(exchange(&pool, &backend.address).await, 200);
        }
        assert_eq!(backend.accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
