//! Plain HTTP/1.1 calls to moto's API Gateway APIs (or a [`super::FaultProxy`] in front of
//! it), without the SDK: to set up or inspect state behind the provider's back, and to test
//! the harness itself.
//!
//! ```ignore
//! let apis = plain::call(moto.url(), "GET", "/v2/apis", None).await?.json();
//! let created = plain::call(url, "POST", "/restapis", Some(json!({"name": "r"}))).await?;
//! ```

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::moto;

/// Upper bound of one [`call`], connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// An answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics (with the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-amzn-ErrorType` header, if any.
    pub fn error_type(&self) -> Option<&str> {
        self.headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok())
    }
}

/// `METHOD base_url + path_and_query` with a JSON `body` (if any), over a new connection,
/// signed for moto's `apigateway` service (see [`moto::authorization`]). `Err` when there
/// is no HTTP answer (refused, dropped, or over [`TIMEOUT`]).
pub async fn call(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, String> {
    tokio::time::timeout(TIMEOUT, call_inner(base_url, method, path_and_query, body))
        .await
        .map_err(|_| format!("{method} {base_url}{path_and_query}: no answer within {TIMEOUT:?}"))?
}

async fn call_inner(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, String> {
    let what = format!("{method} {base_url}{path_and_query}");
    let hostport = base_url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| format!("{what}: base URL is not http://HOST:PORT"))?;
    let stream = TcpStream::connect(hostport).await.map_err(|e| format!("{what}: connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{what}: handshake: {e}"))?;
    let driver = tokio::spawn(connection);

    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method.parse::<Method>().map_err(|e| format!("{what}: {e}"))?;
    *request.uri_mut() = path_and_query.parse().map_err(|e| format!("{what}: {e}"))?;
    let headers = request.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_str(hostport).map_err(|e| format!("{what}: {e}"))?);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&moto::authorization("apigateway")).expect("authorization header"),
    );
    headers.insert("x-amz-date", HeaderValue::from_static("20260101T000000Z"));

    let response = sender.send_request(request).await.map_err(|e| format!("{what}: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| format!("{what}: body: {e}"))?.to_bytes();
    driver.abort();
    Ok(Reply { status: parts.status, headers: parts.headers, body })
}
