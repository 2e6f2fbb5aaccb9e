//! A small echo backend: answers every request with JSON describing it. Used by the quickstart
//! (`tollbridge echo`) and by the tests.
//!
//! Request headers that steer it: `x-echo-delay-ms` (wait before answering) and
//! `x-echo-status` (answer with that status).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::body::{self, Body};

/// Longest delay a request may ask for.
const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct Echo<'a> {
    backend: &'a str,
    /// `HTTP/1.1` or `HTTP/2.0`, as the request arrived.
    protocol: String,
    method: String,
    path: String,
    query: Option<String>,
    host: Option<String>,
    headers: BTreeMap<String, String>,
    body_bytes: usize,
}

/// Serves the echo backend named `name` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, name: String) {
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = service_fn(move |req| async move { Ok::<_, Infallible>(answer(name, req).await) });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` and serves the echo backend; returns the bound address.
pub async fn spawn(addr: SocketAddr, name: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, name.to_string()));
    Ok(bound)
}

async fn answer(name: &str, req: Request<Incoming>) -> Response<Body> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let delay = header("x-echo-delay-ms").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_millis);
    let status = header("x-echo-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let mut echo = Echo {
        backend: name,
        protocol: format!("{:?}", req.version()),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        host: header("host").or_else(|| req.uri().authority().map(|a| a.to_string())),
        // A header sent more than once reads as its values joined by ", " (RFC 9110 §5.3), so
        // that a duplicate shows rather than one copy hiding another.
        headers: req
            .headers()
            .keys()
            .map(|name| {
                let values: Vec<_> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .collect();
                (name.as_str().to_string(), values.join(", "))
            })
            .collect(),
        body_bytes: 0,
    };
    // Count the body without keeping it.
    let mut incoming = req.into_body();
    while let Some(Ok(frame)) = incoming.frame().await {
        if let Some(data) = frame.data_ref() {
            echo.body_bytes += data.len();
        }
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay.min(MAX_DELAY)).await;
    }
    let text = serde_json::to_string(&echo).unwrap_or_default();
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status.unwrap_or(StatusCode::OK);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(name) {
        response.headers_mut().insert("x-echo-backend", v);
    }
    response
}
