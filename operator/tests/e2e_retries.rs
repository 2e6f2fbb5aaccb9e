//! End-to-end tests of HTTPRoute `retry` on `tollbridge run`: the real binary, real backends on
//! loopback. The scenarios are those the Gateway API v1.7.0 conformance tests check
//! (`HTTPRouteRetry`, `HTTPRouteRetryWithRequestTimeout`, `HTTPRouteRetryWithBackendTimeout`,
//! `HTTPRouteRetryConnectionError`), against a backend of our own that fails a given number of
//! times per request id, plus what the proxy adds: methods that may not be repeated, bodies,
//! the retry budget and the metrics.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use support::client::Client;
use support::process::{free_port, ConfigDir, Tollbridge};
use support::yaml::{self, docs};

/// What the failing backend saw of one request id: how many attempts, and each body's length.
type Seen = Arc<Mutex<HashMap<String, Vec<usize>>>>;

/// A backend that answers each request id (`id=` in the query) with `code=` for its first
/// `fail=` attempts, then 200; `delay=` milliseconds before every answer. It reads each body
/// whole and records its length.
struct FailingBackend {
    addr: SocketAddr,
    seen: Seen,
}

impl FailingBackend {
    async fn spawn(ip: [u8; 4]) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0))).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let seen = Seen::default();
        let shared = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let seen = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let query: HashMap<String, String> =
                                url_pairs(req.uri().query().unwrap_or_default());
                            let number = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok());
                            let body =
                                req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                            let id = query.get("id").cloned().unwrap_or_default();
                            let attempt = {
                                let mut seen = seen.lock().unwrap();
                                let bodies = seen.entry(id).or_default();
                                bodies.push(body);
                                bodies.len() as u64
                            };
                            if let Some(ms) = number("delay") {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            let failing = attempt <= number("fail").unwrap_or(0);
                            let status = if failing { number("code").unwrap_or(500) as u16 } else { 200 };
                            let mut response = http::Response::new(Full::new(Bytes::from(format!(
                                "{{\"attempt\": {attempt}, \"body_bytes\": {body}}}"
                            ))));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// Attempts that reached the backend for request id `id`.
    fn attempts(&self, id: &str) -> usize {
        self.seen.lock().unwrap().get(id).map_or(0, Vec::len)
    }

    fn bodies(&self, id: &str) -> Vec<usize> {
        self.seen.lock().unwrap().get(id).cloned().unwrap_or_default()
    }
}

fn url_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// A fresh request id per request, so attempts are counted per request as the backend sees them.
fn next_id() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("r{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// The value of a metric series whose line contains every one of `parts`, or 0.
fn metric(metrics: &str, name: &str, parts: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && parts.iter().all(|p| line.contains(p)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const RULES: &str = "  - matches: [{path: {type: PathPrefix, value: /retry/code-500-attempts-3}}]
    retry: {codes: [500], attempts: 3}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/code-all-attempts-2}}]
    retry: {codes: [500, 502, 503, 504], attempts: 2}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/code-all-attempts-0}}]
    retry: {codes: [500, 502, 503, 504], attempts: 0}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/request-timeout-500ms}}]
    retry: {codes: [500], attempts: 5}
    timeouts: {request: 500ms}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/backend-timeout-500ms}}]
    retry: {codes: [500], attempts: 3}
    timeouts: {request: 15s, backendRequest: 500ms}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/connection-errors}}]
    retry: {attempts: 100}
    backendRefs: [{name: half-broken, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/always-failing}}]
    retry: {codes: [500], attempts: 5, backoff: 50ms}
    backendRefs: [{name: flaky, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /no-retry}}]
    backendRefs: [{name: flaky, port: 80}]
";

/// A Service with two endpoints on one port: `healthy`'s address, and the same port on
/// 127.0.0.1 where nothing listens (connections are refused).
fn half_broken(healthy: SocketAddr) -> String {
    format!(
        "{}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: half-broken-slice\n  labels:\n    \
         kubernetes.io/service-name: half-broken\naddressType: IPv4\nports:\n- name: http\n  port: {port}\n\
         endpoints:\n- addresses: [\"127.0.0.1\"]\n- addresses: [\"{ip}\"]\n",
        yaml::service("half-broken"),
        port = healthy.port(),
        ip = healthy.ip(),
    )
}

struct Setup {
    tollbridge: Tollbridge,
    flaky: FailingBackend,
    healthy: FailingBackend,
    base: String,
}

async fn setup(extra: &[&str]) -> Setup {
    let flaky = FailingBackend::spawn([127, 0, 0, 1]).await;
    // On another loopback address, so that the same port on 127.0.0.1 refuses connections: a
    // port another test holds on 127.0.0.1 is given back and another one taken (a few tries).
    let mut healthy = FailingBackend::spawn([127, 0, 0, 2]).await;
    for _ in 0..20 {
        if std::net::TcpStream::connect(("127.0.0.1", healthy.addr.port())).is_err() {
            break;
        }
        healthy = FailingBackend::spawn([127, 0, 0, 2]).await;
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", healthy.addr.port())).is_err(),
        "the broken endpoint must refuse connections"
    );
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &docs(&[yaml::backend("flaky", flaky.addr), half_broken(healthy.addr)]));
    dir.write("routes.yaml", &yaml::route("retries", None, &[], RULES));
    let tollbridge = Tollbridge::start(&dir, extra).await;
    Setup { tollbridge, flaky, healthy, base: format!("http://127.0.0.1:{port}") }
}

impl Setup {
    /// GET `path` asking the backend to fail `fail` times with `code`: the status and the
    /// attempts the backend saw.
    async fn get(
        &self,
        client: &Client,
        path: &str,
        code: u16,
        fail: u32,
        extra: &str,
    ) -> (StatusCode, usize) {
        let id = next_id();
        let url = format!("{}{path}?id={id}&code={code}&fail={fail}{extra}", self.base);
        let status = client.get(&url, &[]).await.status;
        (status, self.flaky.attempts(&id))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_codes_and_attempts_of_the_rule() {
    let setup = setup(&[]).await;
    let client = Client::new();
    // (path, code, failures before success, status expected, attempts the backend sees)
    let cases = [
        ("/retry/code-500-attempts-3", 500, 2, 200, 3),
        ("/retry/code-500-attempts-3", 500, 4, 500, 4),
        ("/retry/code-500-attempts-3", 503, 2, 503, 1),
        ("/retry/code-all-attempts-2", 500, 1, 200, 2),
        ("/retry/code-all-attempts-2", 500, 3, 500, 3),
        ("/retry/code-all-attempts-2", 502, 1, 200, 2),
        ("/retry/code-all-attempts-2", 502, 3, 502, 3),
        ("/retry/code-all-attempts-2", 503, 1, 200, 2),
        ("/retry/code-all-attempts-2", 503, 3, 503, 3),
        ("/retry/code-all-attempts-2", 504, 1, 200, 2),
        ("/retry/code-all-attempts-2", 504, 3, 504, 3),
        ("/retry/code-all-attempts-0", 500, 1, 500, 1),
        ("/retry/code-all-attempts-0", 502, 1, 502, 1),
        ("/retry/code-all-attempts-0", 503, 1, 503, 1),
        ("/retry/code-all-attempts-0", 504, 1, 504, 1),
        ("/no-retry", 500, 1, 500, 1),
    ];
    for (path, code, fail, status, attempts) in cases {
        let seen = setup.get(&client, path, code, fail, "").await;
        assert_eq!(seen, (StatusCode::from_u16(status).unwrap(), attempts), "{path}: {code} × {fail}");
    }

    // A request that may not be repeated is not retried on an answer; with an Idempotency-Key
    // it is, and its body reaches the backend whole each time.
    let body = "b".repeat(1000);
    for (headers, status, attempts) in [(vec![], 500, 1), (vec![("idempotency-key", "order-7")], 200, 2)] {
        let id = next_id();
        let url = format!("{}/retry/code-all-attempts-2?id={id}&code=500&fail=1", setup.base);
        let resp = client.request(Method::POST, &url, &headers, &body).await;
        assert_eq!(resp.status.as_u16(), status, "POST {headers:?}");
        assert_eq!(setup.flaky.bodies(&id), vec![1000; attempts], "POST {headers:?}");
    }

    let metrics = setup.tollbridge.admin_get("/metrics").await.text();
    let retried =
        metric(&metrics, "tollbridge_upstream_retries_total", &["reason=\"status_code\"", "default/retries"]);
    // 2 + 3 + 1 + 2 + 1 + 2 + 1 + 2 + 1 + 2 for the GETs above, 1 for the keyed POST.
    assert_eq!(retried, 18.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_request_and_backend_timeouts() {
    let setup = setup(&[]).await;
    let client = Client::new();
    // One failure, retried well within 500 ms.
    let (status, attempts) = setup.get(&client, "/retry/request-timeout-500ms", 500, 1, "").await;
    assert_eq!((status, attempts), (StatusCode::OK, 2));
    // Two failures of 300 ms each cannot fit in 500 ms: 504 at the request timeout, not later.
    let started = Instant::now();
    let (status, _) = setup.get(&client, "/retry/request-timeout-500ms", 500, 2, "&delay=300").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1500), "504 after {took:?}");

    // Each attempt within the 500 ms backend timeout: the third one succeeds.
    let (status, attempts) = setup.get(&client, "/retry/backend-timeout-500ms", 500, 2, "&delay=100").await;
    assert_eq!((status, attempts), (StatusCode::OK, 3));
    // Every attempt slower than the backend timeout: each is given up and retried, then 504.
    let started = Instant::now();
    let (status, attempts) = setup.get(&client, "/retry/backend-timeout-500ms", 500, 0, "&delay=1000").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(attempts, 4, "the first attempt and 3 retries");
    assert!(took >= Duration::from_millis(2000) && took < Duration::from_millis(4000), "504 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_retried_on_another_endpoint_for_any_method() {
    let setup = setup(&[]).await;
    let client = Client::new();
    // Round robin sends every other first attempt to the refusing endpoint.
    for i in 0..20 {
        let id = next_id();
        let url = format!("{}/retry/connection-errors?id={id}", setup.base);
        let method = if i % 2 == 0 { Method::GET } else { Method::POST };
        let resp = client.request(method.clone(), &url, &[], "payload").await;
        assert_eq!(resp.status, StatusCode::OK, "{method} {i}");
        assert_eq!(
            setup.healthy.bodies(&id),
            vec![7],
            "{method} {i}: one attempt reached the backend, whole"
        );
    }
    let metrics = setup.tollbridge.admin_get("/metrics").await.text();
    let retried = metric(&metrics, "tollbridge_upstream_retries_total", &["reason=\"connect_error\""]);
    assert!(retried >= 10.0, "{retried} connection retries: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_and_the_body_limit_bound_what_retries_cost() {
    let setup = setup(&["--retry-body-limit", "1024"]).await;
    let client = Client::new();

    // 20 requests at once to a backend that always fails, each allowed 5 retries: at most 4
    // (20 % of 20, at least 3) retry at a time, the others pass the failure on at once.
    let started = Instant::now();
    let calls = (0..20).map(|_| {
        let client = client.clone();
        let id = next_id();
        let url = format!("{}/retry/always-failing?id={id}&code=500&fail=1000&delay=100", setup.base);
        async move { client.get(&url, &[]).await.status }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::INTERNAL_SERVER_ERROR), "{statuses:?}");
    let attempts: usize = setup.flaky.seen.lock().unwrap().values().map(Vec::len).sum();
    let took = started.elapsed();
    let metrics = setup.tollbridge.admin_get("/metrics").await.text();
    let skipped =
        metric(&metrics, "tollbridge_upstream_retries_skipped_total", &["reason=\"budget_exhausted\""]);
    eprintln!("budget: {attempts} backend attempts for 20 requests in {took:?}, {skipped} retries refused");
    assert!(skipped >= 16.0, "{skipped} retries refused: {metrics}");
    assert!(attempts < 20 * 6, "{attempts} attempts: the budget let every request retry");

    // A body over the limit is streamed once, not kept for retries.
    let id = next_id();
    let url = format!("{}/retry/code-all-attempts-2?id={id}&code=500&fail=1", setup.base);
    let resp = client.request(Method::PUT, &url, &[], &"x".repeat(4096)).await;
    assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(setup.flaky.bodies(&id), vec![4096]);
    let metrics = setup.tollbridge.admin_get("/metrics").await.text();
    let skipped =
        metric(&metrics, "tollbridge_upstream_retries_skipped_total", &["reason=\"body_too_large\""]);
    assert_eq!(skipped, 1.0, "{metrics}");
}
