//! A backend that keeps every request it receives (method, path, query, all header values,
//! body size), so tests can see exactly what the proxy forwarded or mirrored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One request as the recorder received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body_bytes: usize,
}

impl Seen {
    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }
}

/// A running recorder; it serves until the test's runtime ends.
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    /// Listens on 127.0.0.1 (a free port). Answers 200 `recorded` with the response headers
    /// `x-recorder: <name>` and `x-remove-me: 1`.
    pub async fn spawn(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind recorder");
        let addr = listener.local_addr().expect("recorder address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let name = HeaderValue::from_str(name).expect("recorder name");
        let recorder = Self { addr, seen: seen.clone() };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let seen = seen.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let seen = seen.clone();
                        let name = name.clone();
                        async move { Ok::<_, Infallible>(record(req, &seen, name).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        recorder
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("recorder lock").len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("recorder lock").clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the recorder received no request")
    }
}

async fn record(req: Request<Incoming>, seen: &Mutex<Vec<Seen>>, name: HeaderValue) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body_bytes = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    seen.lock().expect("recorder lock").push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body_bytes,
    });
    let mut response = Response::new(Full::new(Bytes::from_static(b"recorded\n")));
    response.headers_mut().insert("x-recorder", name);
    response.headers_mut().insert("x-remove-me", HeaderValue::from_static("1"));
    response
}
