//! Upstream connections: HTTP/1.1 spoken by the request's own task, and a keep-alive pool.
//!
//! The request head goes out in one write; the response body is read off the socket by
//! whoever polls it (no connection task, no channel), and the connection goes back to the pool
//! the moment its last byte is read, so a pooled connection is always ready for the next request. Idle connections expire, and those
//! to endpoints no longer in the configuration are dropped when it changes. Each endpoint takes
//! at most `max_connections_per_endpoint` requests at a time; a request waits at most
//! `connection_wait` for one of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tollbridge_provider::BackendProtocol;

use crate::body::{Body, BoxError};
use crate::fast_hash::FastMap;
use crate::http1::{self, BodyDecoder, Decoded, GatewayHeaders, HeadLimits, ResponseHead};
use crate::proxy::upgrade::WebSocketUpgrade;

mod h2c;
mod stream;
mod tls;

pub use stream::UpstreamStream;
pub(crate) use tls::trusted_roots;
pub use tls::{address_of, UpstreamTls};

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

/// Limits on an upstream's response head.
const RESPONSE_HEAD: HeadLimits = HeadLimits { max_bytes: 64 * 1024, max_headers: 256 };
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connect to {0}: timed out")]
    ConnectTimeout(String),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Response(#[from] http1::BadResponse),
    #[error("the upstream closed the connection before answering")]
    Closed,
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
    #[error("{0}: every connection the endpoint may have is busy")]
    Saturated(String),
    #[error("upstream HTTP/2: {0}")]
    Http2(#[source] hyper::Error),
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(..) | Self::ConnectTimeout(_))
    }
}

/// A keep-alive connection to an upstream, with what was read past the last response.
struct Connection {
    stream: UpstreamStream,
    buf: BytesMut,
}

impl Connection {
    /// Whether the upstream has sent something (a close, most likely) while the connection sat
    /// in the pool. Asks the runtime's readiness, not the socket: no system call.
    fn has_news(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.stream.tcp().poll_read_ready(&mut cx).is_ready()
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One upstream address: its request slots and its idle connections, found by one lookup per
/// request and reached without one when a connection comes back.
struct Endpoint {
    /// A permit per request in flight.
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    /// The endpoint left the configuration: connections that come back are closed.
    removed: AtomicBool,
    /// Its HTTP/2 connection, for a backend spoken to in h2c.
    h2: h2c::H2Connection,
}

impl Endpoint {
    /// An idle connection that has not expired nor heard from its upstream.
    fn checkout(&self, idle_timeout: Duration) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < idle_timeout && !entry.connection.has_news() {
                return Some(entry.connection);
            }
        }
        None
    }

    fn give_back(&self, connection: Connection) {
        // Read under the idle list's lock, which `retain` holds to set it: no connection is
        // parked on an endpoint that has left.
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !self.removed.load(Ordering::Relaxed) && idle.len() < self.max_idle {
            idle.push(Idle { connection, since: Instant::now() });
        }
    }
}

/// Keep-alive connections per upstream address (`host:port`).
pub struct UpstreamPool {
    settings: UpstreamSettings,
    endpoints: Mutex<FastMap<Arc<str>, Arc<Endpoint>>>,
}

pub type UpstreamClient = Arc<UpstreamPool>;

pub fn client(settings: &UpstreamSettings) -> UpstreamClient {
    Arc::new(UpstreamPool { settings: settings.clone(), endpoints: Mutex::new(FastMap::default()) })
}

impl UpstreamPool {
    /// Sends `req` to the endpoint `key` names (`host:port`, and how TLS is checked when `tls`
    /// is given: [`UpstreamTls::pool_key`]), reusing an idle connection when there is one.
    ///
    /// The head is written before anything is awaited, so the request's parts are no part of
    /// the returned future: it is moved into place once per request, and smaller is cheaper.
    /// `own`: headers the gateway writes into the head in place of the request's.
    pub fn send(
        self: &Arc<Self>,
        address: &Arc<str>,
        tls: Option<&Arc<UpstreamTls>>,
        req: Request<Body>,
        own: &dyn GatewayHeaders,
    ) -> impl Future<Output = Result<Response<Body>, UpstreamError>> + Send + 'static {
        let pool = self.clone();
        let address = address.clone();
        let tls = tls.cloned();
        let endpoint = self.endpoint(&address);
        let (mut parts, body) = req.into_parts();
        let head_request = parts.method == Method::HEAD;
        // Only a request the client asked to switch may be answered with `101` (a header a
        // route adds does not count).
        let asked = parts.extensions.get::<WebSocketUpgrade>();
        let accept = asked.map(|upgrade| upgrade.accept.clone());
        let over_http2 = asked.is_some_and(WebSocketUpgrade::over_http2);
        let upgrade = accept.is_some();
        // A request without a body may be sent again when a pooled connection turns out to have
        // been closed by the upstream before it read a byte of it (RFC 9112 §9.3.1).
        let retryable = body.is_end_stream() && is_idempotent(&parts.method);
        let mut out = BytesMut::with_capacity(1024);
        let mut chunked = false;
        if !body.is_end_stream() && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            // A body is never sent without its framing: read as the next request, it would be
            // one smuggled past the gateway.
            match body.size_hint().exact() {
                Some(length) => drop(parts.headers.insert(http::header::CONTENT_LENGTH, length.into())),
                None => chunked = true,
            }
        }
        http1::write_request_head(&mut out, &parts, own, chunked);
        drop(parts);
        async move {
            let permit = pool.permit(&endpoint, &address).await?;
            let mut body = body;
            let (head, connection) = loop {
                let (connection, reused) = match endpoint.checkout(pool.settings.pool_idle_timeout) {
                    Some(connection) => (connection, true),
                    // Boxed: a TLS handshake's state is large, and held inline it would be
                    // moved with every request's future, though pooled connections need none.
                    None => (Box::pin(pool.connect(&address, tls.as_deref())).await?, false),
                };
                match exchange(connection, &out, &mut body, chunked, head_request, upgrade).await {
                    Ok(answered) => break answered,
                    Err(UpstreamError::Closed | UpstreamError::Io(_)) if reused && retryable => continue,
                    Err(e) => return Err(e),
                }
            };
            let ResponseHead { status, headers, framing, keep_alive } = head;
            if status == http::StatusCode::SWITCHING_PROTOCOLS {
                // Only a backend that answered this very handshake gets the client's
                // connection: anything else would hand the client a raw line to the backend.
                if headers.get(http::header::SEC_WEBSOCKET_ACCEPT) != accept.as_ref() {
                    return Err(http1::BadResponse("101 without the WebSocket handshake's answer").into());
                }
                // The connection is the backend's end of the tunnel now. An HTTP/1.1 client's
                // tunnel frees its request slot: it is bounded by the client connection it
                // takes. An HTTP/2 client may open a tunnel per stream, so those keep the slot
                // for as long as they last.
                let slot = over_http2.then_some(permit);
                let upgraded = Upgraded { stream: connection.stream, buf: connection.buf, slot };
                let mut response = Response::new(crate::body::empty());
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                response.extensions_mut().insert(UpgradedUpstream(Arc::new(Mutex::new(Some(upgraded)))));
                return Ok(response);
            }
            let body = UpstreamBody {
                connection: Some(connection),
                framing: framing.map_or(BodyDecoder::UntilClose, BodyDecoder::from),
                give_back: keep_alive.then_some(endpoint),
                _permit: permit,
            };
            let mut response = Response::new(body.boxed());
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok(response)
        }
    }

    /// One of `endpoint`'s request slots: a free one at once; only a request that has to wait
    /// arms a timer.
    async fn permit(
        &self,
        endpoint: &Endpoint,
        address: &str,
    ) -> Result<OwnedSemaphorePermit, UpstreamError> {
        if let Ok(permit) = endpoint.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.settings.connection_wait, endpoint.slots.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(UpstreamError::Saturated(address.to_string())),
        }
    }

    /// Sends `req` to `address` in `protocol`, with `own` in place of the request's headers of
    /// the same names.
    pub fn send_in(
        self: &Arc<Self>,
        protocol: BackendProtocol,
        address: &Arc<str>,
        tls: Option<&Arc<UpstreamTls>>,
        mut req: Request<Body>,
        own: &dyn GatewayHeaders,
    ) -> impl Future<Output = Result<Response<Body>, UpstreamError>> + Send + 'static {
        // The h2c call is boxed: held inline, its state would grow the future of every
        // HTTP/1.1 request (moved a few times per request) for the rarer protocol's sake.
        type Boxed = Pin<Box<dyn Future<Output = Result<Response<Body>, UpstreamError>> + Send>>;
        match (protocol, tls) {
            (BackendProtocol::Http1, tls) => Either::Left(self.send(address, tls, req, own)),
            (BackendProtocol::H2c, None) => {
                own.set_on(req.headers_mut());
                Either::Right(Box::pin(self.send_h2c(address, req)) as Boxed)
            }
            // h2c is cleartext: where TLS was asked for, nothing is sent (the translator marks
            // such backends invalid; this is the proxy's own guard).
            (BackendProtocol::H2c, Some(_)) => {
                let refused =
                    UpstreamError::Tls(address.to_string(), std::io::Error::other("h2c asked over TLS"));
                Either::Right(Box::pin(std::future::ready(Err(refused))) as Boxed)
            }
        }
    }

    /// The endpoint at `address`, made on first use.
    fn endpoint(&self, address: &Arc<str>) -> Arc<Endpoint> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(endpoint) = endpoints.get(address) {
            return endpoint.clone();
        }
        let endpoint = Arc::new(Endpoint {
            slots: Arc::new(Semaphore::new(self.settings.max_connections_per_endpoint.max(1))),
            idle: Mutex::new(Vec::new()),
            max_idle: self.settings.pool_max_idle_per_host,
            removed: AtomicBool::new(false),
            h2: h2c::H2Connection::default(),
        });
        endpoints.insert(address.clone(), endpoint.clone());
        endpoint
    }

    /// Drops idle connections (and limits) of every address `keep` refuses: endpoints that left
    /// the configuration. Their requests in flight finish; their connections are not kept.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner()).retain(|address, endpoint| {
            let kept = keep(address);
            if !kept {
                let mut idle = endpoint.idle.lock().unwrap_or_else(|e| e.into_inner());
                endpoint.removed.store(true, Ordering::Relaxed);
                idle.clear();
                endpoint.h2.close();
            }
            kept
        });
    }

    /// Idle connections kept for `address`.
    pub fn idle_count(&self, address: &str) -> usize {
        let endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints.get(address).map_or(0, |e| e.idle.lock().unwrap_or_else(|e| e.into_inner()).len())
    }

    /// A new connection to the endpoint `key` names, TLS done when `tls` is given: both within
    /// the connect timeout.
    async fn connect(&self, key: &str, tls: Option<&UpstreamTls>) -> Result<Connection, UpstreamError> {
        let address = address_of(key);
        let connecting = async {
            let tcp =
                TcpStream::connect(address).await.map_err(|e| UpstreamError::Connect(address.into(), e))?;
            let _ = tcp.set_nodelay(true);
            match tls {
                Some(tls) => tls.handshake(tcp).await.map_err(|e| UpstreamError::Tls(address.into(), e)),
                None => Ok(UpstreamStream::Plain(tcp)),
            }
        };
        match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(stream) => Ok(Connection { stream: stream?, buf: BytesMut::new() }),
            Err(_) => Err(UpstreamError::ConnectTimeout(address.to_string())),
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Sends the head in `out` and the body, and reads the response head (skipping interim 1xx
/// answers). An upstream that answers before it has read the whole body gets the rest no more,
/// and its connection is not reused.
async fn exchange(
    mut connection: Connection,
    out: &[u8],
    body: &mut Body,
    chunked: bool,
    head_request: bool,
    upgrade: bool,
) -> Result<(ResponseHead, Connection), UpstreamError> {
    let Connection { stream, buf } = &mut connection;
    let (mut reader, mut writer) = stream.split();
    let head = if body.is_end_stream() {
        writer.write_all(out).await?;
        read_response_head(&mut reader, buf, head_request, upgrade).await?
    } else {
        let sending = send_body(&mut writer, out, body, chunked);
        tokio::pin!(sending);
        let early = {
            let reading = read_response_head(&mut reader, buf, head_request, upgrade);
            tokio::pin!(reading);
            tokio::select! {
                biased;
                sent = &mut sending => {
                    sent?;
                    None
                }
                early = &mut reading => Some(early?),
            }
        };
        match early {
            Some(mut head) => {
                head.keep_alive = false;
                head
            }
            None => read_response_head(&mut reader, buf, head_request, upgrade).await?,
        }
    };
    Ok((head, connection))
}

async fn send_body(
    writer: &mut stream::StreamWrite<'_>,
    head: &[u8],
    body: &mut Body,
    chunked: bool,
) -> Result<(), UpstreamError> {
    let mut out = BytesMut::from(head);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(UpstreamError::RequestBody)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            http1::chunk_start(&mut out, data.len());
        }
        out.extend_from_slice(&data);
        if chunked {
            out.extend_from_slice(http1::CHUNK_END);
        }
        writer.write_all(&out).await?;
        out.clear();
    }
    if chunked {
        out.extend_from_slice(http1::LAST_CHUNK);
    }
    writer.write_all(&out).await?;
    Ok(())
}

async fn read_response_head(
    reader: &mut stream::StreamRead<'_>,
    buf: &mut BytesMut,
    head_request: bool,
    upgrade: bool,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = http1::parse_response(buf, RESPONSE_HEAD, head_request)? {
                if head.status.is_informational() {
                    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        if upgrade {
                            return Ok(head);
                        }
                        return Err(http1::BadResponse("upgrade not asked for").into());
                    }
                    continue;
                }
                return Ok(head);
            }
        }
        buf.reserve(READ_CHUNK);
        if reader.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// The backend's end of a switched connection: its socket and what it sent after its `101`.
pub struct Upgraded {
    pub stream: UpstreamStream,
    pub buf: BytesMut,
    /// The endpoint's request slot, held by tunnels of HTTP/2 clients.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// In the extensions of a `101` response from [`UpstreamPool::send`]: taken once, by whoever
/// joins it to the client's connection.
#[derive(Clone)]
pub struct UpgradedUpstream(Arc<Mutex<Option<Upgraded>>>);

impl UpgradedUpstream {
    pub fn take(&self) -> Option<Upgraded> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A response body read straight off its upstream connection by whoever polls it; the
/// connection goes back to the pool the moment the body's last byte is read.
struct UpstreamBody {
    connection: Option<Connection>,
    framing: BodyDecoder,
    /// Where the connection goes when the body ends, if the upstream keeps it open.
    give_back: Option<Arc<Endpoint>>,
    /// The endpoint's slot, held until the answer has been read (or dropped).
    _permit: OwnedSemaphorePermit,
}

/// The upstream's answer ended before its framing did.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body ended early")]
struct ResponseCut;

impl UpstreamBody {
    fn finish(&mut self) {
        let connection = self.connection.take();
        if let (Some(connection), Some(endpoint)) = (connection, self.give_back.take()) {
            // Bytes past the body's end are not an answer to anything: such a connection is done.
            if connection.buf.is_empty() {
                endpoint.give_back(connection);
            }
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(connection) = &mut this.connection else { return Poll::Ready(None) };
            match this.framing.decode(&mut connection.buf) {
                Ok(Decoded::Data(data)) => {
                    if this.framing.length_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
            let Some(connection) = &mut this.connection else { return Poll::Ready(None) };
            connection.buf.reserve(READ_CHUNK);
            let read = {
                let reading = connection.stream.read_buf(&mut connection.buf);
                tokio::pin!(reading);
                reading.poll(cx)
            };
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if matches!(this.framing, BodyDecoder::UntilClose) => {
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(Box::new(ResponseCut))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.connection.is_none() || self.framing.length_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.framing.left().map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::{BodyExt, Empty};

    use super::*;

    /// An echo backend on a free port of 127.0.0.1: its address.
    pub(super) async fn echo() -> Arc<str> {
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
        let first = pool.send(&address, None, get(0), &()).await.expect("first request");
        // The first answer is not read yet: its connection is busy, and the endpoint's only one.
        let started = Instant::now();
        let second = pool.send(&address, None, get(0), &()).await;
        assert!(matches!(second, Err(UpstreamError::Saturated(_))), "{second:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
        let _ = first.into_body().collect().await;
        let third = pool.send(&address, None, get(0), &()).await.expect("a slot is free again");
        assert_eq!(third.status(), 200);
    }

    #[tokio::test]
    async fn idle_connections_to_endpoints_that_left_are_dropped() {
        let (kept, gone) = (echo().await, echo().await);
        let pool = client(&UpstreamSettings::default());
        for address in [&kept, &gone] {
            let response = pool.send(address, None, get(0), &()).await.expect("request");
            let _ = response.into_body().collect().await;
        }
        assert_eq!((pool.idle_count(&kept), pool.idle_count(&gone)), (1, 1));
        pool.retain(|address| address == &*kept);
        assert_eq!((pool.idle_count(&kept), pool.idle_count(&gone)), (1, 0));
    }

    #[tokio::test]
    async fn a_body_of_known_length_goes_with_its_content_length() {
        let address = echo().await;
        let pool = client(&UpstreamSettings::default());
        let body = crate::body::full("hello");
        let request = Request::builder().method("POST").uri("/").header("host", "up").body(body).unwrap();
        let response = pool.send(&address, None, request, &()).await.expect("request");
        let echoed = response.into_body().collect().await.expect("body").to_bytes();
        let echoed: serde_json::Value = serde_json::from_slice(&echoed).expect("json");
        assert_eq!(echoed["headers"]["content-length"], "5", "{echoed}");
        assert_eq!(echoed["body_bytes"], 5, "{echoed}");
    }

    #[tokio::test]
    async fn a_connection_answering_after_its_endpoint_left_is_not_kept() {
        let address = echo().await;
        let pool = client(&UpstreamSettings::default());
        let response = pool.send(&address, None, get(0), &()).await.expect("request");
        pool.retain(|_| false);
        let _ = response.into_body().collect().await;
        assert_eq!(pool.idle_count(&address), 0);
        // The address is new to the pool again: a later request connects afresh and is kept.
        let response = pool.send(&address, None, get(0), &()).await.expect("request");
        let _ = response.into_body().collect().await;
        assert_eq!(pool.idle_count(&address), 1);
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
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        backend
    }

    async fn exchange(pool: &UpstreamClient, address: &Arc<str>) -> u16 {
        let response = pool.send(address, None, get(0), &()).await.expect("request");
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
