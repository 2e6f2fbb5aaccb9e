//! HTTP/2 without TLS, for backends whose Service port says `appProtocol: kubernetes.io/h2c`:
//! one multiplexed connection per endpoint, opened with prior knowledge (RFC 9113 §3.3) and
//! opened again once the backend closes it. Requests still take one of the endpoint's slots each.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{Endpoint, UpstreamError, UpstreamPool};
use crate::body::{Body, BoxError};

/// How often an HTTP/2 connection with requests open is PINGed, and how long an answer may take.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An endpoint's HTTP/2 connection, while it lasts, and a lock its handshakes take so that
/// requests arriving together share one new connection instead of opening one each.
#[derive(Default)]
pub(super) struct H2Connection(Mutex<Option<(SendRequest<Body>, Instant)>>, tokio::sync::Mutex<()>);

impl H2Connection {
    /// The open connection, if there is one the backend has not closed and that has not sat idle
    /// past `idle_timeout`.
    fn current(&self, idle_timeout: std::time::Duration) -> Option<SendRequest<Body>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some((sender, used)) if !sender.is_closed() && used.elapsed() < idle_timeout => {
                *used = Instant::now();
                Some(sender.clone())
            }
            _ => {
                // Dropping the last sender lets the connection finish its streams and close.
                *slot = None;
                None
            }
        }
    }

    fn keep(&self, sender: &SendRequest<Body>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((sender.clone(), Instant::now()));
    }

    pub(super) fn close(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Forgets the connection if the backend has closed it (and only then: another request
    /// may have made a new one meanwhile).
    fn forget_if_closed(&self) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(sender, _)| sender.is_closed()) {
            *slot = None;
        }
    }
}

impl UpstreamPool {
    /// Sends `req` to `address` over HTTP/2 with prior knowledge, on the endpoint's connection
    /// (made first if it has none).
    pub fn send_h2c(
        self: &Arc<Self>,
        address: &Arc<str>,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, UpstreamError>> + Send + 'static {
        let pool = self.clone();
        let address = address.clone();
        let endpoint = self.endpoint(&address);
        let req = as_http2(req, &address);
        async move {
            let permit = pool.permit(&endpoint, &address).await?;
            let reused = endpoint.h2.current(pool.settings.pool_idle_timeout);
            let fresh = reused.is_none();
            let mut sender = match reused {
                Some(sender) => sender,
                None => pool.connection(&endpoint, &address).await?,
            };
            let response = match sender.try_send_request(req).await {
                Ok(response) => response,
                // A connection the backend closed before the request left: the request was not
                // sent, so it goes again on a new connection, whatever its method.
                Err(mut failed) => match failed.take_message() {
                    Some(req) if !fresh => {
                        endpoint.h2.forget_if_closed();
                        let mut sender = pool.connection(&endpoint, &address).await?;
                        sender.send_request(req).await.map_err(UpstreamError::Http2)?
                    }
                    _ => return Err(UpstreamError::Http2(failed.into_error())),
                },
            };
            // The slot is held until the answer has been read (or dropped).
            Ok(response.map(|body| {
                body.map_err(BoxError::from)
                    .map_frame(move |frame| {
                        let _held = &permit;
                        frame
                    })
                    .boxed()
            }))
        }
    }

    /// The endpoint's connection: the one another request has just made, or a new one.
    async fn connection(
        &self,
        endpoint: &Endpoint,
        address: &str,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        let _one_at_a_time = endpoint.h2.1.lock().await;
        match endpoint.h2.current(self.settings.pool_idle_timeout) {
            Some(sender) => Ok(sender),
            None => self.handshake(endpoint, address).await,
        }
    }

    /// Opens an HTTP/2 connection to `address`, and makes it the endpoint's.
    async fn handshake(
        &self,
        endpoint: &Endpoint,
        address: &str,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        let connection = self.connect(address, None).await?;
        // PINGs while requests are open: a backend gone without a word fails them instead of
        // holding them until their timeout.
        let (sender, driver) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .handshake(TokioIo::new(connection.stream))
            .await
            .map_err(UpstreamError::Http2)?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "HTTP/2 upstream connection ended");
            }
        });
        endpoint.h2.keep(&sender);
        Ok(sender)
    }
}

/// `req` as HTTP/2 sends it: `:scheme` and `:authority` in the URI (the authority from its Host
/// header, or the address it goes to), with no Host header beside them.
fn as_http2(req: Request<Body>, address: &str) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.remove(header::HOST);
    let authority = host
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .or_else(|| Authority::try_from(address).ok());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = authority;
    uri.path_and_query =
        Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    if let Ok(absolute) = Uri::from_parts(uri) {
        parts.uri = absolute;
    }
    parts.version = Version::HTTP_2;
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::tests::echo;
    use crate::upstream::{client, UpstreamSettings};

    fn get(host: &str) -> Request<Body> {
        Request::builder().uri("/hello?x=1").header("host", host).body(crate::body::empty()).expect("request")
    }

    async fn answer(pool: &UpstreamClient, address: &Arc<str>, req: Request<Body>) -> serde_json::Value {
        let response = pool.send_h2c(address, req).await.expect("answered");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&body).expect("echo JSON")
    }

    use crate::upstream::UpstreamClient;

    #[tokio::test]
    async fn requests_go_as_http2_with_the_clients_authority_on_one_connection() {
        let address = echo().await;
        let pool = client(&UpstreamSettings::default());
        let first = answer(&pool, &address, get("shop.example")).await;
        assert_eq!(first["protocol"], "HTTP/2.0");
        assert_eq!(first["host"], "shop.example");
        assert_eq!(first["path"], "/hello");
        assert_eq!(first["query"], "x=1");
        let sender = pool.endpoint(&address).h2.current(UpstreamSettings::default().pool_idle_timeout);
        assert!(sender.is_some(), "the connection is kept");
        let second = answer(&pool, &address, get("other.example")).await;
        assert_eq!(second["host"], "other.example");
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_limit_is_replaced() {
        let address = echo().await;
        let pool = client(&UpstreamSettings::default());
        answer(&pool, &address, get("a")).await;
        // A connection that went idle past the pool's limit is not used again.
        let endpoint = pool.endpoint(&address);
        endpoint.h2.0.lock().unwrap().as_mut().unwrap().1 =
            Instant::now() - std::time::Duration::from_secs(3600);
        assert!(endpoint.h2.current(UpstreamSettings::default().pool_idle_timeout).is_none());
        answer(&pool, &address, get("b")).await;
    }

    #[tokio::test]
    async fn requests_arriving_together_share_one_new_connection() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address: Arc<str> = Arc::from(listener.local_addr().expect("addr").to_string());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(crate::body::empty()))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let pool = client(&UpstreamSettings::default());
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..20 {
            calls.spawn(pool.send_h2c(&address, get("a")));
        }
        for answered in calls.join_all().await {
            assert_eq!(answered.expect("answered").status(), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all of them");
    }

    #[tokio::test]
    async fn a_backend_that_does_not_speak_http2_is_an_error_not_a_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address: Arc<str> = Arc::from(listener.local_addr().expect("addr").to_string());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n").await;
            }
        });
        let pool = client(&UpstreamSettings::default());
        let sent =
            tokio::time::timeout(std::time::Duration::from_secs(5), pool.send_h2c(&address, get("a"))).await;
        assert!(matches!(sent, Ok(Err(UpstreamError::Http2(_)))), "{sent:?}");
    }
}
