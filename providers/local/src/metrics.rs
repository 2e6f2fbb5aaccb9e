//! Prometheus metrics of the data plane.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label value shared by reference: per-request labels cost no allocation.
pub type Label = Arc<String>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub gateway: Label,
    /// `namespace/name` of the HTTPRoute, or empty when no route matched.
    pub route: Label,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub gateway: Label,
    pub route: Label,
}

/// One location of issuers' signing keys (a discovery document or key set URL, as configured:
/// bounded by the policies) and what became of a fetch (`fetched`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeySetFetchLabels {
    pub location: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub gateway: String,
    pub backend: String,
    /// `connect`, `tls` (the backend's certificate did not check out), `tls_settings`, `timeout`,
    /// `invalid_backend`, `no_endpoints`, `protocol`, `saturated`, `request_body_idle`, `mirror`
    /// or `mirror_dropped`.
    pub kind: String,
}

/// A backend request tried again, or a retry the route asked for that was not made.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub gateway: Label,
    pub route: Label,
    /// Made: `connect_error`, `status_code`, `backend_timeout`. Skipped: `budget_exhausted`,
    /// `body_too_large`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub gateway: String,
    pub policy: String,
    /// The HTTP status the policy answered with (401, 403, 429).
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub gateway: Label,
    /// `namespace/name` of the QuotaPolicy.
    pub policy: Arc<str>,
    /// The consumer of the API key (ApiKey `spec.consumer`, else its name).
    pub consumer: Arc<str>,
    /// `allowed`, `rate_limited`, `quota_exceeded` or `limits_unavailable`.
    pub outcome: &'static str,
}

/// One consumer of one policy, for its quota gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerQuotaLabels {
    pub gateway: Label,
    pub policy: Arc<str>,
    pub consumer: Arc<str>,
}

/// Requests with a known key per consumer, and the quota each has left, with the series made
/// so far: the families cannot be listed, and the series of consumers no longer configured must
/// go ([`Self::retain`]), so that their number stays bounded by the configuration across
/// reloads.
#[derive(Clone, Debug, Default)]
pub struct ConsumerRequests {
    family: Family<ConsumerLabels, Counter>,
    series: Arc<Mutex<HashSet<ConsumerLabels>>>,
    quota: Family<ConsumerQuotaLabels, Gauge>,
    quota_series: Arc<Mutex<HashSet<ConsumerQuotaLabels>>>,
}

impl ConsumerRequests {
    /// The counter of `labels`, its series made (and remembered) when new. Called once per key
    /// and outcome per configuration, not per request.
    pub fn counter(&self, labels: ConsumerLabels) -> Counter {
        let counter = self.family.get_or_create(&labels).clone();
        self.series.lock().unwrap_or_else(|e| e.into_inner()).insert(labels);
        counter
    }

    /// The quota gauge of `labels`, its series made (and remembered) when new. Called once per
    /// key per configuration, not per request.
    pub fn quota_gauge(&self, labels: ConsumerQuotaLabels) -> Gauge {
        let gauge = self.quota.get_or_create(&labels).clone();
        self.quota_series.lock().unwrap_or_else(|e| e.into_inner()).insert(labels);
        gauge
    }

    /// Removes every request series of a (gateway, policy, consumer) `keep` refuses (a consumer
    /// that comes back starts again from 0, which Prometheus reads as a counter reset), and
    /// every quota series `keep_quota` refuses (a policy without a quota keeps none).
    pub fn retain(
        &self,
        keep: impl Fn(&str, &str, &str) -> bool,
        keep_quota: impl Fn(&str, &str, &str) -> bool,
    ) {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).retain(|labels| {
            let kept = keep(&labels.gateway, &labels.policy, &labels.consumer);
            if !kept {
                self.family.remove(labels);
            }
            kept
        });
        self.quota_series.lock().unwrap_or_else(|e| e.into_inner()).retain(|labels| {
            let kept = keep_quota(&labels.gateway, &labels.policy, &labels.consumer);
            if !kept {
                self.quota.remove(labels);
            }
            kept
        });
    }
}

/// The request metrics of one route entry (or of the requests no route matched), taken from the
/// families on first use and kept, so that recording a request hashes no labels and looks up no
/// map. The handles share their values with the families' entries, which live as long as the
/// process, so counts continue across reloads.
pub struct RouteMetrics {
    gateway: Label,
    route: Label,
    latency: OnceLock<Histogram>,
    /// The counter of the first status code seen (a route's usual answer); other codes go
    /// through the family.
    usual_code: OnceLock<(u16, Counter)>,
}

impl RouteMetrics {
    pub fn new(gateway: Label, route: Label) -> Self {
        Self { gateway, route, latency: OnceLock::new(), usual_code: OnceLock::new() }
    }

    /// `namespace/name` of the HTTPRoute, or empty for requests no route matched.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The labels of a retry of this route's requests.
    pub fn retry_labels(&self, reason: &'static str) -> RetryLabels {
        RetryLabels { gateway: self.gateway.clone(), route: self.route.clone(), reason }
    }

    /// Counts one request answered with `code` after `seconds`.
    pub fn record(&self, metrics: &Metrics, code: u16, seconds: f64) {
        let labels = || RequestLabels { gateway: self.gateway.clone(), route: self.route.clone(), code };
        let (usual, counter) =
            self.usual_code.get_or_init(|| (code, metrics.requests.get_or_create(&labels()).clone()));
        if *usual == code {
            counter.inc();
        } else {
            metrics.requests.get_or_create(&labels()).inc();
        }
        self.latency
            .get_or_init(|| {
                let labels = RouteLabels { gateway: self.gateway.clone(), route: self.route.clone() };
                metrics.latency.get_or_create(&labels).clone()
            })
            .observe(seconds);
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric of the data plane, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub upstream_retries: Family<RetryLabels, Counter>,
    pub upstream_retries_skipped: Family<RetryLabels, Counter>,
    pub policy_rejections: Family<PolicyLabels, Counter>,
    pub consumer_requests: ConsumerRequests,
    pub connections: Gauge,
    pub connections_refused: Counter,
    pub config_reloads: Counter,
    /// WebSocket tunnels open now (HTTP/1.1 upgrades and HTTP/2 extended CONNECTs).
    pub websocket_tunnels: Gauge,
    /// Bytes carried by WebSocket tunnels, client to backend and back.
    pub websocket_bytes_to_backend: Counter,
    pub websocket_bytes_to_client: Counter,
    /// Fetches of JWT signing keys, by location and outcome.
    pub key_set_fetches: Family<KeySetFetchLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollbridge");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let upstream_retries = Family::<RetryLabels, Counter>::default();
        let upstream_retries_skipped = Family::<RetryLabels, Counter>::default();
        let policy_rejections = Family::<PolicyLabels, Counter>::default();
        let consumer_requests = ConsumerRequests::default();
        let connections = Gauge::default();
        let connections_refused = Counter::default();
        let config_reloads = Counter::default();
        let websocket_tunnels = Gauge::default();
        let websocket_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register("http_requests", "Requests served, by route and status code", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request received to response headers sent, by route",
            latency.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed upstream, by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_retries",
            "Backend requests tried again, by route and reason (connect_error, status_code, backend_timeout)",
            upstream_retries.clone(),
        );
        registry.register(
            "upstream_retries_skipped",
            "Retries a route asked for that were not made, by reason (budget_exhausted, body_too_large)",
            upstream_retries_skipped.clone(),
        );
        registry.register(
            "policy_rejections",
            "Requests refused by API key, rate limit or quota checks",
            policy_rejections.clone(),
        );
        registry.register(
            "consumer_requests",
            "Requests with a known API key, by consumer and outcome (allowed, rate_limited, quota_exceeded, limits_unavailable)",
            consumer_requests.family.clone(),
        );
        registry.register(
            "consumer_quota_remaining",
            "Requests left in the current quota period, by consumer, as of its last request",
            consumer_requests.quota.clone(),
        );
        registry.register("open_connections", "Client connections open now", connections.clone());
        registry.register(
            "connections_refused",
            "Client connections closed at once because the connection limit was reached",
            connections_refused.clone(),
        );
        registry.register("config_reloads", "Configurations applied", config_reloads.clone());
        registry.register("websocket_tunnels", "WebSocket tunnels open now", websocket_tunnels.clone());
        registry.register(
            "websocket_bytes",
            "Bytes carried by WebSocket tunnels, by direction (to_backend, to_client)",
            websocket_bytes.clone(),
        );
        let key_set_fetches = Family::<KeySetFetchLabels, Counter>::default();
        registry.register(
            "jwt_key_set_fetches",
            "Fetches of issuers' JWT signing keys, by location and outcome (fetched, failed)",
            key_set_fetches.clone(),
        );
        let direction =
            |direction: &'static str| websocket_bytes.get_or_create(&DirectionLabels { direction }).clone();
        Self {
            registry,
            requests,
            latency,
            upstream_errors,
            upstream_retries,
            upstream_retries_skipped,
            policy_rejections,
            consumer_requests,
            connections,
            connections_refused,
            config_reloads,
            websocket_tunnels,
            websocket_bytes_to_backend: direction("to_backend"),
            websocket_bytes_to_client: direction("to_client"),
            key_set_fetches,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn route_metrics_count_every_code_and_continue_across_reloads() {
        let metrics = Metrics::default();
        let (gateway, route) = (Arc::new("shop/web".to_string()), Arc::new("shop/orders".to_string()));
        let before_reload = RouteMetrics::new(gateway.clone(), route.clone());
        before_reload.record(&metrics, 200, 0.001);
        before_reload.record(&metrics, 404, 0.001);
        before_reload.record(&metrics, 200, 0.002);
        // A reload compiles new route metrics; they resolve the same series.
        let after_reload = RouteMetrics::new(gateway, route);
        after_reload.record(&metrics, 200, 0.001);
        after_reload.record(&metrics, 404, 0.001);

        let text = metrics.encode();
        let series = r#"tollbridge_http_requests_total{gateway="shop/web",route="shop/orders",code="#;
        assert_eq!(
            line(&text, &format!("{series}\"200\"}}")),
            Some(&*format!("{series}\"200\"}} 3")),
            "{text}"
        );
        assert_eq!(
            line(&text, &format!("{series}\"404\"}}")),
            Some(&*format!("{series}\"404\"}} 2")),
            "{text}"
        );
        let count =
            r#"tollbridge_http_request_duration_seconds_count{gateway="shop/web",route="shop/orders"}"#;
        assert_eq!(line(&text, count), Some(&*format!("{count} 5")), "{text}");
    }
}
