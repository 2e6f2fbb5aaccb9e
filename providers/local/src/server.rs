//! Client-facing sockets: accept loops, TLS, the protocol of each connection (HTTP/1.1 served by
//! [`crate::http1`], HTTP/2 by hyper, told by ALPN or h2c's preface), connection limits, and
//! graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::body::{Body, BoxError, ReplayMemory};
use crate::counter_store::CounterStore;
use crate::http1::{self, tunnel};
use crate::metrics::Metrics;
use crate::policy::PolicyState;
use crate::proxy::{self, ConnInfo};
use crate::runtime::{Bind, Table};
use crate::upstream::{self, UpgradedUpstream, UpstreamClient, UpstreamSettings};

/// Limits and options of the data plane.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Where listeners bind when their Gateway names no address (or with `Bind::Default`).
    pub bind_address: IpAddr,
    /// Whether listeners bind the Gateway's `spec.addresses`.
    pub bind: Bind,
    pub max_connections: usize,
    /// Time allowed to send a request head; also how long an idle keep-alive connection stays.
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list), in bytes.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Print one JSON line per request to stdout.
    pub access_log: bool,
    /// Time allowed for an upstream answer (response headers) when the route sets no timeout.
    pub default_request_timeout: Option<Duration>,
    /// Longest wait for the next piece of a request body; the request then gets 408.
    pub request_body_idle_timeout: Option<Duration>,
    /// Largest request body kept to be sent again on a route with `retry`; a longer one is
    /// sent once.
    pub retry_body_limit: usize,
    /// Request body bytes kept for retries by all requests together; past it, bodies are sent
    /// once.
    pub retry_memory_limit: usize,
    /// How long a WebSocket tunnel may carry nothing either way before both ends are closed.
    pub websocket_idle_timeout: Duration,
    /// Mirrored requests in flight at a time; more are not mirrored (and counted).
    pub max_mirror_requests: usize,
    /// Whether the admin endpoint's `/status` and `/config` answer clients other than loopback
    /// (health, readiness and metrics always do). Off in a cluster, where the admin port is on
    /// the pod's address for probes and metrics.
    pub remote_debug_endpoints: bool,
    pub upstream: UpstreamSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind: Bind::Requested,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            access_log: false,
            default_request_timeout: Some(Duration::from_secs(60)),
            request_body_idle_timeout: Some(Duration::from_secs(30)),
            retry_body_limit: 64 * 1024,
            retry_memory_limit: 64 * 1024 * 1024,
            websocket_idle_timeout: Duration::from_secs(300),
            max_mirror_requests: 256,
            remote_debug_endpoints: true,
            upstream: UpstreamSettings::default(),
        }
    }
}

/// State shared by every socket and request.
pub struct Shared {
    pub settings: ServerSettings,
    pub table: ArcSwap<Table>,
    pub state: Arc<PolicyState>,
    /// Where limits are counted when replicas share their counters.
    pub counter_store: Option<Arc<CounterStore>>,
    pub client: UpstreamClient,
    pub metrics: Arc<Metrics>,
    connection_slots: Arc<Semaphore>,
    /// One per mirrored request in flight.
    pub mirror_slots: Arc<Semaphore>,
    /// Request body bytes kept for retries.
    pub replay_memory: Arc<ReplayMemory>,
    shutdown: watch::Sender<bool>,
    open: AtomicUsize,
    drained: Notify,
}

impl Shared {
    pub fn new(
        settings: ServerSettings,
        state: Arc<PolicyState>,
        counter_store: Option<Arc<CounterStore>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client: upstream::client(&settings.upstream),
            connection_slots: Arc::new(Semaphore::new(settings.max_connections)),
            mirror_slots: Arc::new(Semaphore::new(settings.max_mirror_requests)),
            replay_memory: Arc::new(ReplayMemory::new(settings.retry_memory_limit)),
            settings,
            table: ArcSwap::from_pointee(Table::default()),
            state,
            counter_store,
            metrics,
            shutdown: watch::channel(false).0,
            open: AtomicUsize::new(0),
            drained: Notify::new(),
        })
    }

    /// Stops accepting, asks every connection to finish its requests, and waits until all are
    /// closed or `deadline` passes. Returns the number of connections still open.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.shutdown.send_replace(true);
        let wait = async {
            while self.open.load(Ordering::SeqCst) > 0 {
                let notified = self.drained.notified();
                if self.open.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.open.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Accepts connections on `listener` until `stop` fires or the server drains.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(%local, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = shared.connection_slots.clone().try_acquire_owned() else {
                    shared.metrics.connections_refused.inc();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // Spawned as it is, not wrapped in a block that would hold the arguments twice.
                let info = Box::new(ConnInfo::new(local, remote));
                tokio::spawn(serve_connection(shared.clone(), stream, info, permit));
            }
            _ = stop.changed() => break,
            _ = shutdown.changed() => break,
        }
    }
}

/// Serves one client connection. Its task lives as long as the connection, so what it keeps
/// inline is kept for every idle connection: the connection's facts are boxed, and so is each
/// phase larger than an idle HTTP/1 connection's wait.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    info: Box<ConnInfo>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> {
    async move {
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.metrics.connections.inc();
        let tls = shared
            .table
            .load()
            .sockets
            .get(&info.local)
            .and_then(|g| g.sockets.get(&info.local))
            .and_then(|s| s.tls.clone());
        match tls {
            // Boxed, as is HTTP/2: their state is larger than a plain HTTP/1 connection's whole
            // task, which is what most connections are.
            Some(config) => Box::pin(serve_tls(&shared, stream, info, config)).await,
            None => match Box::pin(sniff(&stream, shared.settings.header_read_timeout)).await {
                Some(Protocol::Http1) => {
                    http1::serve(&shared, stream, info, shared.shutdown.subscribe()).await
                }
                Some(Protocol::Http2) => Box::pin(serve_http2(&shared, stream, info)).await,
                None => {
                    tracing::debug!(remote = %info.remote, "no request within the header timeout; closing")
                }
            },
        }
        drop(permit);
        shared.metrics.connections.dec();
        if shared.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.drained.notify_waiters();
        }
    }
}

/// The protocol of a client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The start of HTTP/2's connection preface: an HTTP/1 request cannot begin with it (`PRI` is
/// reserved for exactly this).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Whether a plain-TCP client opens with HTTP/2's preface (h2c with prior knowledge) or speaks
/// HTTP/1.x, from its first bytes, read without consuming them. Each connection is then served
/// by a server of its one protocol, which holds no state of the other. `None`: the client closed
/// or sent nothing within `deadline`.
async fn sniff(stream: &TcpStream, deadline: Duration) -> Option<Protocol> {
    let sniffing = async {
        let mut first = [0u8; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if !H2_PREFACE.starts_with(&first[..n]) {
                return Some(Protocol::Http1);
            }
            if n == H2_PREFACE.len() {
                return Some(Protocol::Http2);
            }
            // A prefix of the preface so far (a peek does not wait for more): look again soon.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(deadline, sniffing).await.ok().flatten()
}

async fn serve_tls(
    shared: &Arc<Shared>,
    stream: TcpStream,
    mut info: Box<ConnInfo>,
    config: Arc<rustls::ServerConfig>,
) {
    let accept = TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(shared.settings.tls_handshake_timeout, accept).await {
        Ok(Ok(tls_stream)) => {
            info.tls = true;
            let session = tls_stream.get_ref().1;
            info.server_name = session.server_name().map(Box::from);
            if session.alpn_protocol() == Some(b"h2") {
                serve_http2(shared, tls_stream, info).await;
            } else {
                http1::serve(shared, tls_stream, info, shared.shutdown.subscribe()).await;
            }
        }
        Ok(Err(e)) => tracing::debug!(remote = %info.remote, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(remote = %info.remote, "TLS handshake timed out"),
    }
}

async fn serve_http2<IO>(shared: &Arc<Shared>, io: IO, info: Box<ConnInfo>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_shared = shared.clone();
    // hyper's HTTP/2 server has no deadline for a client that never sends a request (or stalls
    // inside the preface); `drive` closes such a connection at the header timeout.
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = first_request.clone();
    let remote = info.remote;
    let info: Arc<ConnInfo> = Arc::from(info);
    let service = service_fn(move |req: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let shared = request_shared.clone();
        let info = info.clone();
        let mut req = req.map(|incoming| incoming.map_err(BoxError::from).boxed());
        // An extended CONNECT's stream, once its answer is sent (RFC 8441).
        let stream = (req.method() == Method::CONNECT).then(|| hyper::upgrade::on(&mut req));
        async move {
            let response = proxy::handle(&shared, &info, req, None).await.into_response();
            Ok::<_, Infallible>(match stream {
                Some(stream) => answer_connect(&shared, response, stream),
                None => response,
            })
        }
    });
    let settings = &shared.settings;
    let conn = http2::Builder::new(TokioExecutor::new())
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(settings.header_read_timeout))
        .max_concurrent_streams(256)
        .serve_connection(TokioIo::new(io), service);
    drive(shared, conn, |c| c.graceful_shutdown(), &first_request, remote).await;
}

/// The answer to an HTTP/2 extended CONNECT: `200` once the backend switched to WebSocket,
/// with the stream then joined to the backend's connection; any other success becomes 502, as
/// a `2xx` tells the client its tunnel is open.
fn answer_connect(shared: &Arc<Shared>, mut response: Response<Body>, stream: OnUpgrade) -> Response<Body> {
    let upstream = response.extensions().get::<UpgradedUpstream>().and_then(UpgradedUpstream::take);
    let Some(upstream) = upstream else {
        if response.status().is_success() || response.status().is_informational() {
            return proxy::plain(StatusCode::BAD_GATEWAY, "the backend did not switch to WebSocket");
        }
        return response;
    };
    *response.status_mut() = StatusCode::OK;
    // HTTP/2 WebSockets carry no key and no accept (RFC 8441 §5).
    response.headers_mut().remove(header::SEC_WEBSOCKET_ACCEPT);
    response.headers_mut().remove(header::CONTENT_LENGTH);
    let shared = shared.clone();
    tokio::spawn(async move {
        let idle = shared.settings.websocket_idle_timeout;
        match stream.await {
            Ok(client) => {
                tunnel::join(&mut TokioIo::new(client), BytesMut::new(), upstream, idle, &shared.metrics)
                    .await
            }
            Err(e) => tracing::debug!(error = %e, "the HTTP/2 WebSocket stream was not opened"),
        }
    });
    response
}

/// Runs a served connection to its end: closed early when no request came within the header
/// timeout, asked to finish its requests (`graceful`) when the server drains.
async fn drive<C>(
    shared: &Shared,
    conn: C,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    first_request: &AtomicBool,
    remote: std::net::SocketAddr,
) where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let first_request_deadline = tokio::time::sleep(shared.settings.header_read_timeout);
    tokio::pin!(first_request_deadline);
    let mut waiting_for_first = true;
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.subscribe();
    let mut draining = *shutdown.borrow();
    if draining {
        graceful(conn.as_mut());
    }
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = &mut first_request_deadline, if waiting_for_first => {
                waiting_for_first = false;
                if !first_request.load(Ordering::Relaxed) {
                    tracing::debug!(%remote, "no request within the header timeout; closing");
                    break;
                }
            }
            changed = shutdown.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    graceful(conn.as_mut());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// What `sniff` decides for a client that sends `pieces`, pausing between them.
    async fn sniffed(pieces: &[&'static [u8]]) -> Option<Protocol> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let pieces = pieces.to_vec();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            for piece in pieces {
                stream.write_all(piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Then it closes: what it sent stays readable.
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let started = std::time::Instant::now();
        let protocol = sniff(&stream, Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "decided only at the deadline");
        client.await.expect("client");
        protocol
    }

    #[tokio::test]
    async fn a_connection_is_told_by_its_first_bytes() {
        assert_eq!(sniffed(&[b"GET / HTTP/1.1\r\n"]).await, Some(Protocol::Http1));
        assert_eq!(sniffed(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).await, Some(Protocol::Http2));
        // The preface in pieces is waited for; a method that only starts like it is HTTP/1.
        assert_eq!(sniffed(&[b"P", b"RI * HT", b"TP/2.0\r\n"]).await, Some(Protocol::Http2));
        assert_eq!(sniffed(&[b"PR", b"OPFIND / HTTP/1.1\r\n"]).await, Some(Protocol::Http1));
        // Nothing sent, and the client closes: no protocol.
        assert_eq!(sniffed(&[]).await, None);
    }

    /// An idle keep-alive connection costs its task and little else, so the task must stay
    /// small: what a request needs in flight is boxed, not kept inline.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let shared = Shared::new(
            ServerSettings::default(),
            Arc::new(PolicyState::new()),
            None,
            Arc::new(Metrics::default()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let _client = TcpStream::connect(address).await.expect("connect");
        let (stream, remote) = listener.accept().await.expect("accept");
        let permit = shared.connection_slots.clone().try_acquire_owned().expect("a slot");
        let task = serve_connection(shared.clone(), stream, Box::new(ConnInfo::new(address, remote)), permit);
        // Tokio puts 104 bytes around a task's future and rounds the whole to a multiple of 128:
        // up to 536 bytes, an idle connection's task takes 640 (1,024 when the future was 808).
        let size = std::mem::size_of_val(&task);
        assert!(size <= 536, "a connection's task takes {size} bytes");
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_given_up_on_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let started = std::time::Instant::now();
        assert_eq!(sniff(&stream, Duration::from_millis(100)).await, None);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
