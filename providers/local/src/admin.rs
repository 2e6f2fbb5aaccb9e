//! The admin endpoint: `/healthz`, `/readyz`, `/metrics`, `/status`, `/config`.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::provider::LocalProvider;

/// Documents the admin endpoint serves, published by whoever drives the provider.
#[derive(Debug, Default)]
pub struct AdminDocs {
    /// JSON for `/status`.
    pub status: LazyJson,
    /// JSON for `/config` (secrets already redacted).
    pub config: LazyJson,
    /// Whether a configuration has been applied at least once.
    pub configured: bool,
}

/// A JSON document rendered when first asked for, then kept: a reload of thousands of routes
/// does not pay for documents nobody reads.
#[derive(Default)]
pub struct LazyJson {
    render: Option<Box<dyn Fn() -> Vec<u8> + Send + Sync>>,
    rendered: OnceLock<Bytes>,
}

impl LazyJson {
    pub fn new(render: impl Fn() -> Vec<u8> + Send + Sync + 'static) -> Self {
        LazyJson { render: Some(Box::new(render)), rendered: OnceLock::new() }
    }

    /// The document if it was rendered already.
    pub fn rendered(&self) -> Option<Bytes> {
        self.rendered.get().cloned()
    }

    /// The document, rendered on the first call.
    pub fn bytes(&self) -> Bytes {
        self.rendered
            .get_or_init(|| self.render.as_ref().map(|render| Bytes::from(render())).unwrap_or_default())
            .clone()
    }
}

impl std::fmt::Debug for LazyJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyJson").field("rendered", &self.rendered.get().map(Bytes::len)).finish()
    }
}

pub async fn serve(
    listener: TcpListener,
    provider: Arc<LocalProvider>,
    docs: Arc<ArcSwap<AdminDocs>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let provider = provider.clone();
        let docs = docs.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let provider = provider.clone();
                let docs = docs.clone();
                async move { Ok::<_, Infallible>(route(req, peer, &provider, &docs).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    provider: &LocalProvider,
    docs: &ArcSwap<AdminDocs>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let docs = docs.load_full();
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if docs.configured && provider.ready().await && !provider.shared().is_draining() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, provider.shared().metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        "/status" | "/config"
            if !peer.ip().is_loopback() && !provider.shared().settings.remote_debug_endpoints =>
        {
            text(
                StatusCode::FORBIDDEN,
                "/status and /config answer local clients only here (kubectl port-forward reaches them)\n",
            )
        }
        "/status" => json(render(docs, |docs| &docs.status).await),
        "/config" => json(render(docs, |docs| &docs.config).await),
        _ => text(StatusCode::NOT_FOUND, "not found: try /healthz /readyz /metrics /status /config\n"),
    }
}

/// Renders a document off the runtime's threads: thousands of routes take milliseconds.
async fn render(docs: Arc<AdminDocs>, document: fn(&AdminDocs) -> &LazyJson) -> Bytes {
    if let Some(rendered) = document(&docs).rendered() {
        return rendered;
    }
    tokio::task::spawn_blocking(move || document(&docs).bytes()).await.unwrap_or_default()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(body: Bytes) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
