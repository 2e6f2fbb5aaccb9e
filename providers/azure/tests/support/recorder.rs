//! A server on another 127.0.0.1 port that records every request it gets and answers each
//! with a harmless success (`200 {"value": [], "status": "Succeeded"}`): the "other host" a
//! misbehaving (or impersonated) service could send the provider to with a `nextLink` or an
//! operation monitor. A test asserts it received nothing: no request, so no bearer token.
//!
//! ```ignore
//! let other = Recorder::start().await;
//! apim.set_link_base(Some(other.url()));
//! … the provider refuses the link …
//! assert!(other.requests().is_empty());
//! ```

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the recorder got it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// The recording server; stopped when dropped.
pub struct Recorder {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Listens on a free 127.0.0.1 port, served on the calling runtime.
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let recorded = Recorded {
                                method: req.method().to_string(),
                                target: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                                authorization: req
                                    .headers()
                                    .get(hyper::header::AUTHORIZATION)
                                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                            };
                            seen.lock().unwrap_or_else(|e| e.into_inner()).push(recorded);
                            let body = Bytes::from_static(br#"{"value": [], "status": "Succeeded"}"#);
                            let mut response = Response::new(Full::new(body));
                            response.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { url, requests, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
