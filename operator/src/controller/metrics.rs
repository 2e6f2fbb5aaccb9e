//! The operator's Prometheus metrics and its `/metrics`, `/healthz`, `/readyz` endpoint.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    /// `Local`, `AWS` or `Azure`.
    pub provider: String,
    /// `apply` or `delete`.
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Every metric of the operator.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub errors: Family<ReasonLabels, Counter>,
    /// Gateways whose latest desired state the provider has not applied yet.
    pub queue_depth: Gauge,
    pub provider_calls: Family<ProviderCallLabels, Histogram, fn() -> Histogram>,
    pub status_writes: Family<KindLabels, Counter>,
    pub leader: Gauge,
    ready: AtomicBool,
}

fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollbridge_operator");
        let metrics = Self {
            reconciles: Counter::default(),
            errors: Family::default(),
            queue_depth: Gauge::default(),
            provider_calls: Family::new_with_constructor(call_histogram),
            status_writes: Family::default(),
            leader: Gauge::default(),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Passes of snapshot, translate, provision, write status",
            metrics.reconciles.clone(),
        );
        registry.register("errors", "Errors by reason", metrics.errors.clone());
        registry.register("queue_depth", "Gateways waiting for their provider", metrics.queue_depth.clone());
        registry.register(
            "provider_call_duration_seconds",
            "Duration of provider calls",
            metrics.provider_calls.clone(),
        );
        registry.register("status_writes", "Status objects written, by kind", metrics.status_writes.clone());
        registry.register("leader", "1 while this replica is the leader", metrics.leader.clone());
        Self { registry, ..metrics }
    }
}

impl Metrics {
    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Ready once every watch has synced.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(req.uri().path(), &metrics)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.encode()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "watches not synced\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
