//! Plain HTTP/1.1 calls to a test server on 127.0.0.1: one request a connection, bounded in time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Upper bound of one call, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// An answer, read whole.
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

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's (first) value, if any and when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `ETag` header, if any.
    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }
}

/// One request, built then sent ([`Call::send`]).
///
/// ```ignore
/// let reply = Call::put(&url).bearer(token).json(&json!({"name": "r"})).send().await?;
/// let reply = Call::delete(&url).header("If-Match", "*").send().await?;
/// ```
#[derive(Clone, Debug)]
pub struct Call {
    method: Method,
    url: String,
    /// Sent in this order; a later header replaces an earlier one of the same name.
    headers: Vec<(String, String)>,
    /// The body and its content type.
    body: Option<(Bytes, String)>,
}

impl Call {
    /// `METHOD url`, `url` being `http://127.0.0.1:PORT/…` (or `localhost`). Panics when
    /// `method` is not a method.
    pub fn new(method: &str, url: &str) -> Call {
        Call {
            method: method.parse().expect("an HTTP method"),
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(url: &str) -> Call {
        Call::new("GET", url)
    }

    pub fn put(url: &str) -> Call {
        Call::new("PUT", url)
    }

    pub fn patch(url: &str) -> Call {
        Call::new("PATCH", url)
    }

    pub fn post(url: &str) -> Call {
        Call::new("POST", url)
    }

    pub fn delete(url: &str) -> Call {
        Call::new("DELETE", url)
    }

    /// A header; it replaces one of the same name given before.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Call {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// No `Authorization` header (those given so far are removed).
    pub fn no_auth(mut self) -> Call {
        self.headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
        self
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json(self, body: &serde_json::Value) -> Call {
        self.body(body.to_string(), "application/json")
    }

    /// A body as it is, with this content type.
    pub fn body(mut self, body: impl Into<Bytes>, content_type: &str) -> Call {
        self.body = Some((body.into(), content_type.to_owned()));
        self
    }

    /// Sends it over a new connection. `Err` when there is no HTTP answer (refused, dropped,
    /// or over [`TIMEOUT`]).
    pub async fn send(self) -> Result<Reply, String> {
        let what = format!("{} {}", self.method, self.url);
        tokio::time::timeout(TIMEOUT, self.send_inner())
            .await
            .map_err(|_| format!("{what}: no answer within {TIMEOUT:?}"))?
    }

    async fn send_inner(self) -> Result<Reply, String> {
        let what = format!("{} {}", self.method, self.url);
        let uri: Uri = self.url.parse().map_err(|e| format!("{what}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{what}: only http:// URLs"));
        }
        let authority = uri.authority().ok_or_else(|| format!("{what}: no host"))?.clone();
        let host = authority.host();
        if host != "127.0.0.1" && host != "localhost" {
            return Err(format!("{what}: the tests only talk to 127.0.0.1"));
        }
        let stream =
            TcpStream::connect(authority.as_str()).await.map_err(|e| format!("{what}: connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{what}: handshake: {e}"))?;
        let driver = tokio::spawn(connection);

        let (body, content_type) = self.body.clone().unwrap_or_default();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").parse().expect("a path");
        let headers = request.headers_mut();
        headers.insert(header::HOST, HeaderValue::from_str(authority.as_str()).expect("a host"));
        if self.body.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type).map_err(|e| format!("{what}: {e}"))?,
            );
        }
        for (name, value) in &self.headers {
            let name: HeaderName = name.parse().map_err(|e| format!("{what}: header {name}: {e}"))?;
            headers.insert(name, HeaderValue::from_str(value).map_err(|e| format!("{what}: {e}"))?);
        }

        let response = sender.send_request(request).await.map_err(|e| format!("{what}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| format!("{what}: body: {e}"))?.to_bytes();
        driver.abort();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_auth_removes_the_authorization_given_before_only() {
        let call = Call::get("http://127.0.0.1:1/").bearer("t").header("x", "1").no_auth();
        assert_eq!(call.headers, [("x".to_owned(), "1".to_owned())]);
        let call = call.header("Authorization", "Basic eDp5");
        assert_eq!(call.headers.len(), 2);
    }

    #[tokio::test]
    async fn only_loopback_urls() {
        let err = Call::get("http://192.0.2.1/").send().await.unwrap_err();
        assert!(err.ends_with("the tests only talk to 127.0.0.1"), "{err}");
    }
}
