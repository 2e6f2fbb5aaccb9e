//! HTTP clients: a pooled hyper client (HTTP/1.1 or h2c), and raw TCP exchanges for requests
//! no well-behaved client would send.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time one request may take, response body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response read whole.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The trailers after the body, if any came (HTTP/2).
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response ({}) is not JSON ({e}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }

    /// For echo backends: which backend answered.
    pub fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or_default().to_string()
    }
}

/// A pooled client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// HTTP/1.1 with keep-alive.
    pub fn new() -> Self {
        Self { inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http() }
    }

    /// HTTP/2 with prior knowledge over plain TCP (h2c).
    pub fn h2c() -> Self {
        Self {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends `req` and reads the whole response, within [`REQUEST_TIMEOUT`].
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        let call = async {
            let response = self.inner.request(req).await.map_err(|e| format!("request failed: {e:?}"))?;
            let (head, body) = response.into_parts();
            let collected = body.collect().await.map_err(|e| format!("reading the body failed: {e}"))?;
            let trailers = collected.trailers().cloned();
            let body = collected.to_bytes();
            Ok(Resp { status: head.status, version: head.version, headers: head.headers, body, trailers })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call).await.map_err(|_| "request timed out".to_string())?
    }

    /// Sends a request with `headers` and `body`; `Err` on connection errors and timeouts.
    pub async fn try_request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Resp, String> {
        let mut builder = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| e.to_string())?;
        self.send(req).await
    }

    pub async fn try_get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        self.try_request(Method::GET, url, headers, "").await
    }

    /// Like [`Client::try_request`], panicking on errors.
    pub async fn request(&self, method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let shown = format!("{method} {url}");
        self.try_request(method, url, headers, body).await.unwrap_or_else(|e| panic!("{shown}: {e}"))
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, url, headers, "").await
    }
}

/// What a raw exchange ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum RawOutcome {
    /// The server answered with this status code.
    Status(u16),
    /// The server closed (or reset) the connection without an answer.
    Closed,
    /// Nothing happened before the deadline.
    TimedOut,
}

/// Writes `request` on a new connection to 127.0.0.1:`port` and reads the status line of
/// the answer, if any, within `timeout`.
pub async fn raw_exchange(port: u16, request: &[u8], timeout: Duration) -> RawOutcome {
    let exchange = async {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else { return RawOutcome::Closed };
        // The server may close while the request is still being written.
        let _ = stream.write_all(request).await;
        read_status(&mut stream).await
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(RawOutcome::TimedOut)
}

/// Reads until the end of a status line (or EOF / reset) and returns the status code.
pub async fn read_status(stream: &mut TcpStream) -> RawOutcome {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // At most 64 reads: a status line is short.
    for _ in 0..64 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if seen.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&seen);
    match text.split_whitespace().nth(1).and_then(|code| code.parse::<u16>().ok()) {
        Some(code) if text.starts_with("HTTP/") => RawOutcome::Status(code),
        _ => RawOutcome::Closed,
    }
}
