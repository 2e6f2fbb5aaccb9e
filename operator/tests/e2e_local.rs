//! End-to-end tests of `tollbridge run`: the real binary serving YAML files, real backends on
//! 127.0.0.1, real clients. Each test starts its own process on its own free ports.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::client::{raw_exchange, read_status, Client, RawOutcome, Resp};
use support::eventually;
use support::process::{free_port, ConfigDir, Tollbridge};
use support::recorder::Recorder;
use support::tls::{self, TestCert};
use support::yaml::{self, docs};

/// Starts an echo backend named `name` on a free port of 127.0.0.1.
async fn echo(name: &str) -> SocketAddr {
    tollbridge_local::echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), name)
        .await
        .expect("start echo backend")
}

/// A backend that counts the requests reaching it, so a test can wait until one is in flight at
/// the backend instead of guessing how long that takes. Like the echo backend it reads each body
/// to the end and waits the `x-echo-delay-ms` the request asks for; it answers 200 `ok`.
struct CountingBackend {
    addr: SocketAddr,
    arrived: Arc<AtomicUsize>,
}

impl CountingBackend {
    /// Listens on 127.0.0.1 (a free port) and serves until the test's runtime ends.
    async fn spawn() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind counting backend");
        let addr = listener.local_addr().expect("counting backend address");
        let arrived = Arc::new(AtomicUsize::new(0));
        let counter = arrived.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let delay = req
                                .headers()
                                .get("x-echo-delay-ms")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            let _ = req.into_body().collect().await;
                            if let Some(ms) = delay {
                                // The slow backend the request asked for.
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"ok\n"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, arrived }
    }

    /// Requests that have reached the backend so far (answered or not).
    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

/// A header of the request as the echo backend received it.
fn echoed_header(resp: &Resp, name: &str) -> Option<String> {
    resp.json()["headers"][name].as_str().map(str::to_string)
}

/// The status of condition `type_` in a list of Kubernetes conditions.
fn condition(conditions: &serde_json::Value, type_: &str) -> Option<String> {
    conditions
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

/// A routing case: method, path, Host, an extra header, the backend expected (None: 404).
type Case = (Method, &'static str, &'static str, Option<(&'static str, &'static str)>, Option<&'static str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_matches_hostnames_and_precedence() {
    let mut backends = Vec::new();
    for name in ["exact", "prefix", "deeper", "regex", "header", "plain", "query", "method", "host-a", "api"]
    {
        backends.push(yaml::backend(name, echo(name).await));
    }
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &docs(&[
            yaml::gateway_class(),
            yaml::gateway(
                "gw",
                &[
                    yaml::http_listener("http", port, None),
                    yaml::http_listener("api", port, Some("*.api.test")),
                ],
            ),
        ]),
    );
    dir.write("backends.yaml", &docs(&backends));
    let main_rules = "  - matches:
    - path: {type: Exact, value: /exact}
    - path: {type: Exact, value: /pre/x}
    backendRefs: [{name: exact, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /pre}}]
    backendRefs: [{name: prefix, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /pre/deeper/}}]
    backendRefs: [{name: deeper, port: 80}]
  - matches: [{path: {type: RegularExpression, value: \"/items/[0-9]+\"}}]
    backendRefs: [{name: regex, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /h}}]
    backendRefs: [{name: plain, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /h}
      headers: [{name: x-tier, value: gold}]
    - path: {type: PathPrefix, value: /h}
      headers: [{type: RegularExpression, name: x-tier, value: \"plat.*\"}]
    backendRefs: [{name: header, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /q}
      queryParams: [{name: v, value: \"2\"}]
    backendRefs: [{name: query, port: 80}]
  - matches:
    - path: {type: PathPrefix, value: /m}
      method: POST
    backendRefs: [{name: method, port: 80}]
";
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("main", Some("http"), &[], main_rules),
            yaml::route("host-a", Some("http"), &["a.test"], &yaml::prefix_rule("/", "host-a")),
            yaml::route("api", Some("api"), &[], &yaml::prefix_rule("/", "api")),
        ]),
    );
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");

    let cases: &[Case] = &[
        // Exact matches only the exact path.
        (Method::GET, "/exact", "web.test", None, Some("exact")),
        (Method::GET, "/exact/", "web.test", None, None),
        (Method::GET, "/exact/more", "web.test", None, None),
        // Prefixes match on segment boundaries; the longest prefix wins; Exact beats a prefix.
        (Method::GET, "/pre", "web.test", None, Some("prefix")),
        (Method::GET, "/pre/", "web.test", None, Some("prefix")),
        (Method::GET, "/pre/a/b", "web.test", None, Some("prefix")),
        (Method::GET, "/prefix", "web.test", None, None),
        (Method::GET, "/pre/x", "web.test", None, Some("exact")),
        (Method::GET, "/pre/deeper", "web.test", None, Some("deeper")),
        (Method::GET, "/pre/deeper/1", "web.test", None, Some("deeper")),
        (Method::GET, "/pre/deeperx", "web.test", None, Some("prefix")),
        // Regular expressions.
        (Method::GET, "/items/42", "web.test", None, Some("regex")),
        (Method::GET, "/items/abc", "web.test", None, None),
        // Header matches (exact and regex) beat the same path without them.
        (Method::GET, "/h", "web.test", Some(("x-tier", "gold")), Some("header")),
        (Method::GET, "/h/x", "web.test", Some(("x-tier", "platinum")), Some("header")),
        (Method::GET, "/h", "web.test", Some(("x-tier", "silver")), Some("plain")),
        (Method::GET, "/h", "web.test", None, Some("plain")),
        // Query parameter matches.
        (Method::GET, "/q?v=2", "web.test", None, Some("query")),
        (Method::GET, "/q?a=1&v=2", "web.test", None, Some("query")),
        (Method::GET, "/q?v=3", "web.test", None, None),
        (Method::GET, "/q", "web.test", None, None),
        // Method matches.
        (Method::POST, "/m", "web.test", None, Some("method")),
        (Method::GET, "/m", "web.test", None, None),
        // A route's hostname beats routes for any host, whatever the path; the Host header is
        // matched without port and case.
        (Method::GET, "/exact", "a.test", None, Some("host-a")),
        (Method::GET, "/anything", "A.TEST:8080", None, Some("host-a")),
        (Method::GET, "/anything", "b.test", None, None),
        // The listener with hostname *.api.test takes its hosts (listener isolation); its
        // wildcard does not match the parent domain.
        (Method::GET, "/exact", "x.api.test", None, Some("api")),
        (Method::GET, "/whatever", "deep.x.api.test", None, Some("api")),
        (Method::GET, "/exact", "api.test", None, Some("exact")),
    ];
    for (method, path, host, extra, expected) in cases {
        let mut headers = vec![("host", *host)];
        headers.extend(extra.iter().copied());
        let resp = client.request(method.clone(), &format!("{base}{path}"), &headers, "").await;
        let what = format!("{method} {path} (Host {host}, {extra:?})");
        match expected {
            Some(backend) => {
                assert_eq!(resp.status, StatusCode::OK, "{what}: {}", resp.text());
                assert_eq!(resp.backend(), *backend, "{what}");
                let echoed = resp.json();
                let (want_path, want_query) =
                    path.split_once('?').map_or((*path, None), |(p, q)| (p, Some(q)));
                assert_eq!(echoed["path"], want_path, "{what}: path forwarded unchanged");
                assert_eq!(echoed["query"].as_str(), want_query, "{what}: query forwarded unchanged");
                assert_eq!(echoed["method"], method.as_str(), "{what}");
                assert_eq!(echoed["host"].as_str(), Some(*host), "{what}: Host forwarded unchanged");
            }
            None => assert_eq!(resp.status, StatusCode::NOT_FOUND, "{what}: {}", resp.text()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_modify_headers_and_rewrite_urls() {
    let recorder = Recorder::spawn("rec").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("rec", recorder.addr));
    let rules = "  - matches: [{path: {type: PathPrefix, value: /hdr}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: from-gateway}]
        add: [{name: x-add, value: added}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-recorder, value: replaced}]
        add: [{name: x-resp-add, value: one}]
        remove: [x-remove-me]
    backendRefs: [{name: rec, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /rw-full}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: rewritten.test
        path: {type: ReplaceFullPath, replaceFullPath: /full}
    backendRefs: [{name: rec, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /rw-prefix}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    backendRefs: [{name: rec, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /rw-root}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /}
    backendRefs: [{name: rec, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /per-backend}}]
    backendRefs:
    - name: rec
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{name: x-backend, value: rec}]
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          add: [{name: x-backend-response, value: rec}]
";
    dir.write("routes.yaml", &yaml::route("filters", None, &[], rules));
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // Request headers: set replaces, add appends, remove removes; response headers likewise.
    let resp = client
        .get(
            &format!("{base}/hdr"),
            &[
                ("x-set", "from-client"),
                ("x-add", "from-client"),
                ("x-remove", "gone"),
                ("x-keep", "kept"),
                ("connection", "x-hop"),
                ("x-hop", "one hop only"),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let seen = recorder.last();
    assert_eq!(seen.path, "/hdr");
    assert_eq!(seen.header_all("x-set"), ["from-gateway"]);
    assert_eq!(seen.header_all("x-add"), ["from-client", "added"]);
    assert!(seen.header_all("x-remove").is_empty(), "x-remove was forwarded");
    assert_eq!(seen.header_all("x-keep"), ["kept"]);
    assert!(seen.header_all("x-hop").is_empty(), "a header named in Connection was forwarded");
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(resp.header_all("x-recorder"), ["replaced"]);
    assert_eq!(resp.header_all("x-resp-add"), ["one"]);
    assert!(resp.header("x-remove-me").is_none(), "response header not removed");

    // URLRewrite: hostname and full path (the query stays).
    let resp = client.get(&format!("{base}/rw-full/a/b?x=1"), &[("host", "original.test")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    let seen = recorder.last();
    assert_eq!(seen.path, "/full");
    assert_eq!(seen.query.as_deref(), Some("x=1"));
    assert_eq!(seen.header_all("host"), ["rewritten.test"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["original.test"]);

    // URLRewrite: prefix replacement, segment by segment.
    for (path, expected) in [
        ("/rw-prefix/a/b?x=1", "/new/a/b?x=1"),
        ("/rw-prefix", "/new"),
        ("/rw-prefix/", "/new/"),
        ("/rw-root/a", "/a"),
        ("/rw-root", "/"),
    ] {
        let resp = client.get(&format!("{base}{path}"), &[("host", "original.test")]).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        let seen = recorder.last();
        let got = match &seen.query {
            Some(q) => format!("{}?{q}", seen.path),
            None => seen.path.clone(),
        };
        // A trailing slash after the prefix may be kept or folded; every other case is exact.
        if path == "/rw-prefix/" {
            assert!(got == "/new/" || got == "/new", "{path} was forwarded as {got}");
        } else {
            assert_eq!(got, expected, "{path}");
        }
        assert_eq!(seen.header_all("host"), ["original.test"], "{path}: host unchanged");
    }

    // Per-backend header modifiers.
    let resp = client.get(&format!("{base}/per-backend"), &[("x-backend", "client")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(recorder.last().header_all("x-backend"), ["rec"]);
    assert_eq!(resp.header_all("x-backend-response"), ["rec"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_redirect_with_exact_locations() {
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    let redirect = |prefix: &str, spec: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: \
             RequestRedirect\n      requestRedirect: {spec}\n"
        )
    };
    let rules = [
        redirect("/r301", "{scheme: https, statusCode: 301}"),
        redirect("/r302", "{hostname: other.test, statusCode: 302}"),
        redirect("/r303", "{port: 8443, statusCode: 303}"),
        redirect("/r307", "{path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}, statusCode: 307}"),
        redirect(
            "/r308",
            "{scheme: https, port: 8443, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}, statusCode: 308}",
        ),
        redirect("/default", "{hostname: default.test}"),
        redirect("/tls-default-port", "{scheme: https, port: 443}"),
        redirect("/http-default-port", "{port: 80}"),
    ]
    .concat();
    dir.write("routes.yaml", &yaml::route("redirects", None, &[], &rules));
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let host = format!("example.test:{port}");

    let cases = [
        ("/r301/a?q=1", 301, "https://example.test/r301/a?q=1".to_string()),
        ("/r302", 302, format!("http://other.test:{port}/r302")),
        ("/r303/x", 303, "http://example.test:8443/r303/x".to_string()),
        ("/r307/a/b", 307, format!("http://example.test:{port}/elsewhere")),
        ("/r308/a/b?k=v", 308, "https://example.test:8443/v2/a/b?k=v".to_string()),
        ("/r308", 308, "https://example.test:8443/v2".to_string()),
        ("/default", 302, format!("http://default.test:{port}/default")),
        ("/tls-default-port/p", 302, "https://example.test/tls-default-port/p".to_string()),
        ("/http-default-port", 302, "http://example.test/http-default-port".to_string()),
    ];
    for (path, status, location) in cases {
        let resp = client.get(&format!("{base}{path}"), &[("host", &host)]).await;
        assert_eq!(resp.status.as_u16(), status, "{path}");
        assert_eq!(resp.header("location"), Some(location.as_str()), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_cors_preflight_and_simple_requests() {
    let recorder = Recorder::spawn("rec").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("rec", recorder.addr));
    let rules = "  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: [\"https://app.test\", \"https://*.wild.test\"]
        allowMethods: [GET, POST]
        allowHeaders: [x-custom]
        exposeHeaders: [x-recorder]
        allowCredentials: true
        maxAge: 600
    backendRefs: [{name: rec, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /any}}]
    filters:
    - type: CORS
      cors: {allowOrigins: [\"*\"], allowMethods: [\"*\"], allowHeaders: [\"*\"], allowCredentials: true}
    backendRefs: [{name: rec, port: 80}]
";
    dir.write("routes.yaml", &yaml::route("cors", None, &[], rules));
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/cors");

    // Preflight from an allowed origin: answered by the gateway, not the backend.
    let preflight = |origin: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .request(
                    Method::OPTIONS,
                    &url,
                    &[
                        ("origin", origin),
                        ("access-control-request-method", "POST"),
                        ("access-control-request-headers", "x-custom"),
                    ],
                    "",
                )
                .await
        }
    };
    let resp = preflight("https://app.test").await;
    assert!(resp.status.is_success(), "preflight: {}", resp.status);
    assert_eq!(resp.header("access-control-allow-origin"), Some("https://app.test"));
    assert_eq!(resp.header("access-control-allow-credentials"), Some("true"));
    let methods = resp.header("access-control-allow-methods").unwrap_or_default().to_string();
    assert!(methods.contains("GET") && methods.contains("POST"), "allow-methods {methods:?}");
    assert!(
        resp.header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("x-custom"),
        "allow-headers {:?}",
        resp.header("access-control-allow-headers")
    );
    assert_eq!(resp.header("access-control-max-age"), Some("600"));
    // As the upstream conformance suite expects: the preflight names the exposed headers too.
    assert_eq!(resp.header("access-control-expose-headers"), Some("x-recorder"));
    assert!(resp.header_all("vary").iter().any(|v| v.to_ascii_lowercase().contains("origin")));
    let resp = preflight("https://x.wild.test").await;
    assert_eq!(resp.header("access-control-allow-origin"), Some("https://x.wild.test"));
    assert_eq!(recorder.count(), 0, "a preflight reached the backend");

    // Preflight from another origin: no permission granted.
    let resp = preflight("https://evil.test").await;
    assert!(resp.header("access-control-allow-origin").is_none(), "evil origin allowed: {:?}", resp.headers);
    assert!(resp.header("access-control-allow-methods").is_none());
    assert!(resp.header("access-control-allow-credentials").is_none());
    assert!(resp.header("access-control-expose-headers").is_none());

    // Simple requests go to the backend; only allowed origins get the CORS headers.
    let resp = client.get(&url, &[("origin", "https://app.test")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("access-control-allow-origin"), Some("https://app.test"));
    assert_eq!(resp.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(resp.header("access-control-expose-headers"), Some("x-recorder"));
    assert!(resp.header_all("vary").iter().any(|v| v.to_ascii_lowercase().contains("origin")));
    let resp = client.get(&url, &[("origin", "https://evil.test")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.header("access-control-allow-origin").is_none());
    assert!(resp.header("access-control-expose-headers").is_none());
    assert_eq!(recorder.count(), 2);

    // Wildcards with credentials: browsers take `*` literally then, so the answer names the
    // origin, method and headers asked for.
    let asked = [
        ("origin", "https://other.test"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-a, x-b"),
    ];
    let resp = client.request(Method::OPTIONS, &format!("http://127.0.0.1:{port}/any"), &asked, "").await;
    assert_eq!(resp.header("access-control-allow-origin"), Some("https://other.test"));
    assert_eq!(resp.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(resp.header("access-control-allow-headers"), Some("x-a, x-b"));
    assert_eq!(resp.header("access-control-allow-credentials"), Some("true"));
    let vary = resp.header_all("vary").join(", ").to_ascii_lowercase();
    assert!(vary.contains("access-control-request-method") && vary.contains("origin"), "vary: {vary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_weights_and_failures() {
    let a = echo("a").await;
    let b = echo("b").await;
    let refused = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write(
        "backends.yaml",
        &docs(&[
            yaml::backend("a", a),
            yaml::backend("b", b),
            yaml::service("empty"),
            yaml::backend("refused", refused),
        ]),
    );
    let rules = "  - matches: [{path: {type: PathPrefix, value: /weighted}}]
    backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}]
  - matches: [{path: {type: PathPrefix, value: /half-invalid}}]
    backendRefs: [{name: a, port: 80, weight: 1}, {name: missing, port: 80, weight: 1}]
  - matches: [{path: {type: PathPrefix, value: /invalid}}]
    backendRefs: [{name: missing, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /no-endpoints}}]
    backendRefs: [{name: empty, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /refused}}]
    backendRefs: [{name: refused, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /zero}}]
    backendRefs: [{name: a, port: 80, weight: 0}]
";
    dir.write("routes.yaml", &yaml::route("backends", None, &[], rules));
    let tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // 3:1 over 400 requests: a gets 300 on average (σ ≈ 8.7); accept ±50.
    let mut to_a = 0;
    for _ in 0..400 {
        let resp = client.get(&format!("{base}/weighted"), &[]).await;
        assert_eq!(resp.status, StatusCode::OK);
        match resp.backend().as_str() {
            "a" => to_a += 1,
            "b" => {}
            other => panic!("unexpected backend {other}"),
        }
    }
    assert!((250..=350).contains(&to_a), "{to_a} of 400 requests went to the weight-3 backend");
    eprintln!("weights 3:1: {to_a} of 400 requests to the weight-3 backend");

    // A large body streams through whole.
    let body = "x".repeat(8 << 20);
    let resp = client.request(Method::POST, &format!("{base}/weighted"), &[], &body).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["body_bytes"], 8 << 20);

    // An invalid backend keeps its share of traffic, answered with 500.
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..60 {
        match client.get(&format!("{base}/half-invalid"), &[]).await.status {
            StatusCode::OK => ok += 1,
            StatusCode::INTERNAL_SERVER_ERROR => errors += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok > 0 && errors > 0, "{ok} answered, {errors} errors");

    assert_eq!(client.get(&format!("{base}/invalid"), &[]).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        client.get(&format!("{base}/no-endpoints"), &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(client.get(&format!("{base}/refused"), &[]).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(client.get(&format!("{base}/zero"), &[]).await.status, StatusCode::INTERNAL_SERVER_ERROR);

    // The route status says why.
    let status = tollbridge.status().await;
    let parents = &status["httproutes"]["default/backends"]["parents"];
    assert_eq!(condition(&parents[0]["conditions"], "ResolvedRefs").as_deref(), Some("False"), "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_mirror_whole_and_percentage() {
    let main = echo("main").await;
    let full = Recorder::spawn("mirror-full").await;
    let half = Recorder::spawn("mirror-half").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write(
        "backends.yaml",
        &docs(&[
            yaml::backend("main", main),
            yaml::backend("full", full.addr),
            yaml::backend("half", half.addr),
        ]),
    );
    let rules = "  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: full, port: 80}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /sampled}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: half, port: 80}, percent: 50}
    backendRefs: [{name: main, port: 80}]
";
    dir.write("routes.yaml", &yaml::route("mirror", None, &[], rules));
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");

    for i in 0..10 {
        let resp = client
            .request(Method::POST, &format!("{base}/mirror/{i}?n={i}"), &[("x-trace", "t")], "hello")
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.backend(), "main", "the mirror's answer must not be returned");
        assert_eq!(resp.json()["body_bytes"], 5);
    }
    eventually("10 mirrored requests", Duration::from_secs(5), || {
        let full = full.clone();
        async move { full.count() >= 10 }
    })
    .await;
    let seen = full.seen();
    assert_eq!(seen.len(), 10);
    let mut paths: Vec<String> = seen.iter().map(|s| s.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, (0..10).map(|i| format!("/mirror/{i}")).collect::<Vec<_>>());
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.body_bytes, 5, "mirrored body");
        assert_eq!(s.header_all("x-trace"), ["t"]);
        assert!(s.query.as_deref().is_some_and(|q| q.starts_with("n=")));
    }

    // percent: 50 over 200 requests: 100 on average (σ ≈ 7); accept 60..=140.
    for _ in 0..200 {
        assert_eq!(client.get(&format!("{base}/sampled"), &[]).await.status, StatusCode::OK);
    }
    // Mirrors are sent in the background and the gateway does not tell how many it chose to
    // send: the condition to wait for is the recorder's count staying the same for 3 polls.
    let (mut last, mut unchanged) = (usize::MAX, 0);
    eventually("the mirrored count to settle", Duration::from_secs(5), || {
        let now = half.count();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        let settled = unchanged >= 3;
        async move { settled }
    })
    .await;
    let sampled = half.count();
    assert!((60..=140).contains(&sampled), "{sampled} of 200 requests mirrored at 50%");
    eprintln!("mirror percent 50: {sampled} of 200 requests mirrored");
    assert_eq!(full.count(), 10, "the other route's mirror got extra requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_504() {
    let backend = echo("slow").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("slow", backend));
    let rules = "  - matches: [{path: {type: PathPrefix, value: /request}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: slow, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    timeouts: {request: 5s, backendRequest: 300ms}
    backendRefs: [{name: slow, port: 80}]
";
    dir.write("routes.yaml", &yaml::route("timeouts", None, &[], rules));
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");

    for (path, limit) in [("/request", Duration::from_millis(500)), ("/backend", Duration::from_millis(300))]
    {
        let started = Instant::now();
        let resp = client.get(&format!("{base}{path}"), &[("x-echo-delay-ms", "3000")]).await;
        let took = started.elapsed();
        assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT, "{path}");
        assert!(took >= limit && took < limit + Duration::from_millis(1500), "{path}: 504 after {took:?}");

        let resp = client.get(&format!("{base}{path}"), &[("x-echo-delay-ms", "50")]).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: a fast answer passes");
    }
    // The upstream's own status passes through unchanged.
    let resp = client.get(&format!("{base}/request"), &[("x-echo-status", "418")]).await;
    assert_eq!(resp.status.as_u16(), 418);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_timeouts_get_the_default_request_timeout() {
    let backend = echo("slow").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("slow", backend));
    let rules = "  - backendRefs: [{name: slow, port: 80}]\n";
    dir.write("routes.yaml", &yaml::route("no-timeout", None, &[], rules));
    let _tollbridge = Tollbridge::start(&dir, &["--request-timeout", "1"]).await;
    let client = Client::new();
    let started = Instant::now();
    let resp = client.get(&format!("http://127.0.0.1:{port}/"), &[("x-echo-delay-ms", "4000")]).await;
    let took = started.elapsed();
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(2500), "504 after {took:?}");
    let resp = client.get(&format!("http://127.0.0.1:{port}/"), &[("x-echo-delay-ms", "50")]).await;
    assert_eq!(resp.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_url_annotation_routes_below_its_path() {
    let backend = echo("external").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write(
        "backends.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: external\n  annotations:\n    \
             tollbridge.dev/backend-url: http://{backend}/base/\nspec:\n  ports:\n  - name: http\n    port: 80\n"
        ),
    );
    let rules = "  - backendRefs: [{name: external, port: 80}]\n";
    dir.write("routes.yaml", &yaml::route("external", None, &[], rules));
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let resp = Client::new().get(&format!("http://127.0.0.1:{port}/items/7?x=1"), &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["path"], "/base/items/7");
    assert_eq!(resp.json()["query"], "x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sni_picks_the_certificate_and_alpn_gives_http2() {
    let cert_a = TestCert::self_signed("a.example.test");
    let cert_b = TestCert::self_signed("b.example.test");
    let backend_a = echo("a").await;
    let backend_b = echo("b").await;
    let plain = echo("plain").await;
    let https_port = free_port();
    let http_port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        &docs(&[
            yaml::gateway_class(),
            yaml::gateway(
                "gw",
                &[
                    yaml::https_listener("https-a", https_port, "a.example.test", "cert-a"),
                    yaml::https_listener("https-b", https_port, "b.example.test", "cert-b"),
                    yaml::http_listener("http", http_port, None),
                ],
            ),
            cert_a.secret_yaml("cert-a"),
            cert_b.secret_yaml("cert-b"),
        ]),
    );
    dir.write(
        "backends.yaml",
        &docs(&[yaml::backend("a", backend_a), yaml::backend("b", backend_b), yaml::backend("plain", plain)]),
    );
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("ra", Some("https-a"), &[], &yaml::prefix_rule("/", "a")),
            yaml::route("rb", Some("https-b"), &[], &yaml::prefix_rule("/", "b")),
            yaml::route("rplain", Some("http"), &[], &yaml::prefix_rule("/", "plain")),
        ]),
    );
    let _tollbridge = Tollbridge::start(&dir, &[]).await;

    // Each SNI name gets its own certificate, and the listener of that name.
    let config = tls::client_config(&[&cert_a, &cert_b], &[b"http/1.1"]);
    for (cert, backend) in [(&cert_a, "a"), (&cert_b, "b")] {
        let stream = tls::connect(https_port, &cert.name, config.clone()).await.expect("TLS handshake");
        assert_eq!(tls::presented(&stream), cert.der, "certificate presented for SNI {}", cert.name);
        assert_eq!(tls::alpn(&stream).as_deref(), Some(&b"http/1.1"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        let req = Request::get("/hello").header("host", &cert.name).body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.expect("request over TLS");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echoed["backend"], backend);
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    }
    // A client trusting only a's certificate refuses the server when it asks for b.
    let only_a = tls::client_config(&[&cert_a], &[]);
    assert!(tls::connect(https_port, "b.example.test", only_a).await.is_err(), "b served a's certificate?");

    // HTTP/2 over TLS, chosen by ALPN.
    let h2 = tls::client_config(&[&cert_a, &cert_b], &[b"h2", b"http/1.1"]);
    let stream = tls::connect(https_port, "b.example.test", h2).await.expect("TLS handshake");
    assert_eq!(tls::alpn(&stream).as_deref(), Some(&b"h2"[..]), "ALPN did not choose h2");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::get(format!("https://b.example.test/h2/{i}")).body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.expect("HTTP/2 request");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echoed["backend"], "b");
        assert_eq!(echoed["path"], format!("/h2/{i}"));
    }
    // The same connection (its server name is b's) reused for a: misdirected, so that the
    // client retries on a connection of its own; a's certificate was never checked here.
    let req = Request::get("https://a.example.test/coalesced").body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.expect("HTTP/2 request");
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    // And over HTTP/1.1: server name a, Host b.
    let stream = tls::connect(https_port, "a.example.test", config.clone()).await.expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/x").header("host", "b.example.test:443").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(req).await.expect("request").status(), StatusCode::MISDIRECTED_REQUEST);

    // h2c with prior knowledge on the plain listener.
    let resp = Client::h2c().get(&format!("http://127.0.0.1:{http_port}/h2c"), &[]).await;
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.backend(), "plain");
    assert_eq!(resp.json()["path"], "/h2c");
}

/// Gateway, backends and routes shared by the API key and limit tests.
fn policy_setup(port: u16, backend: SocketAddr) -> ConfigDir {
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("echo", backend));
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("gold", None, &[], &yaml::prefix_rule("/gold", "echo")),
            yaml::route("silver", None, &[], &yaml::prefix_rule("/silver", "echo")),
            yaml::route("rate", None, &[], &yaml::prefix_rule("/rate", "echo")),
            yaml::route("quota", None, &[], &yaml::prefix_rule("/quota", "echo")),
        ]),
    );
    dir.write(
        "policies.yaml",
        &docs(&[
            yaml::quota_policy(
                "gold",
                "gold",
                "  apiKey: {required: true, header: x-api-key, queryParam: api_key, forwardConsumerHeader: x-consumer}\n",
            ),
            yaml::quota_policy("silver", "silver", "  apiKey: {required: true}\n"),
            yaml::quota_policy("rate", "rate", "  rateLimit: {requests: 2, unit: Minute, burst: 2}\n"),
            yaml::quota_policy("quota", "quota", "  apiKey: {required: true}\n  quota: {requests: 3, period: Day}\n"),
            yaml::api_key("acme", "gold", "gold-key-acme-0001", "  consumer: acme\n"),
            yaml::api_key("off", "gold", "gold-key-disabled-0002", "  disabled: true\n"),
            yaml::api_key("old", "gold", "gold-key-expired-0003", "  expiresAt: \"2020-01-01T00:00:00Z\"\n"),
            yaml::api_key("silver-one", "silver", "silver-key-0004", ""),
            yaml::api_key("counted", "quota", "quota-key-0005", ""),
        ]),
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_authenticate_and_are_not_forwarded() {
    let port = free_port();
    let dir = policy_setup(port, echo("echo").await);
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let gold = format!("http://127.0.0.1:{port}/gold");

    let refused = [
        (None, 401, "missing_api_key"),
        (Some("not-a-known-key"), 401, "invalid_api_key"),
        (Some("gold-key-disabled-0002"), 401, "invalid_api_key"),
        (Some("gold-key-expired-0003"), 401, "invalid_api_key"),
        (Some("silver-key-0004"), 403, "forbidden"),
    ];
    for (key, status, error) in refused {
        let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        let resp = client.get(&gold, &headers).await;
        assert_eq!(resp.status.as_u16(), status, "key {key:?}: {}", resp.text());
        assert_eq!(resp.json()["error"], error, "key {key:?}");
        if status == 401 {
            assert!(resp.header("www-authenticate").is_some(), "401 without WWW-Authenticate");
        }
        let body = resp.text();
        assert!(key.is_none_or(|k| !body.contains(k)), "the key is echoed in the refusal");
    }

    // A good key in the header: the key is removed, the consumer forwarded, and a consumer
    // header sent by the client is replaced.
    let resp = client.get(&gold, &[("x-api-key", "gold-key-acme-0001"), ("x-consumer", "mallory")]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(echoed_header(&resp, "x-api-key"), None, "key forwarded upstream");
    assert_eq!(echoed_header(&resp, "x-consumer").as_deref(), Some("acme"));

    // A good key in the query parameter: removed from the query, other parameters kept.
    let resp = client.get(&format!("{gold}/x?keep=1&api_key=gold-key-acme-0001&also=2"), &[]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let echoed = resp.json();
    assert_eq!(echoed["path"], "/gold/x");
    assert_eq!(echoed["query"], "keep=1&also=2");
    assert_eq!(echoed_header(&resp, "x-consumer").as_deref(), Some("acme"));
    let resp = client.get(&format!("{gold}?api_key=gold-key-acme-0001"), &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.json()["query"].as_str().is_none_or(str::is_empty), "query {}", resp.json()["query"]);

    // A key of another policy is refused in the query too.
    let resp = client.get(&format!("{gold}?api_key=silver-key-0004"), &[]).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);

    // The default consumer header carries the ApiKey's name when no consumer is set.
    let resp = client
        .get(
            &format!("http://127.0.0.1:{port}/silver"),
            &[("x-api-key", "silver-key-0004"), ("x-tollbridge-consumer", "spoofed")],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(echoed_header(&resp, "x-tollbridge-consumer").as_deref(), Some("silver-one"));
    assert_eq!(echoed_header(&resp, "x-api-key"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_quotas_answer_429() {
    let port = free_port();
    let dir = policy_setup(port, echo("echo").await);
    let tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();

    // 2 requests a minute, burst 2, without keys: one bucket for the route.
    let rate = format!("http://127.0.0.1:{port}/rate");
    for remaining in ["1", "0"] {
        let resp = client.get(&rate, &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(resp.header("x-ratelimit-remaining"), Some(remaining));
        assert_eq!(resp.header("ratelimit-policy"), Some("\"rate\";q=2;w=60"));
        assert!(resp
            .header("ratelimit")
            .is_some_and(|v| v.starts_with(&format!("\"rate\";r={remaining};t="))));
    }
    let resp = client.get(&rate, &[]).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.json()["error"], "rate_limited");
    let retry: u64 =
        resp.header("retry-after").expect("Retry-After").parse().expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(resp.header("x-ratelimit-limit"), Some("2"));
    assert!(resp.header("ratelimit").is_some());

    // A quota of 3 a day per key.
    let quota = format!("http://127.0.0.1:{port}/quota");
    for remaining in ["2", "1", "0"] {
        let resp = client.get(&quota, &[("x-api-key", "quota-key-0005")]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.header("x-ratelimit-remaining"), Some(remaining));
        assert_eq!(resp.header("x-ratelimit-limit"), Some("3"));
    }
    let resp = client.get(&quota, &[("x-api-key", "quota-key-0005")]).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.json()["error"], "quota_exceeded");
    let retry: u64 =
        resp.header("retry-after").expect("Retry-After").parse().expect("Retry-After in seconds");
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    assert!(resp.header("ratelimit-policy").is_some_and(|v| v.contains("\"quota\";q=3;w=86400")));
    // A refused request does not count: still refused, remaining still 0; missing keys are 401
    // before any limit.
    let resp = client.get(&quota, &[("x-api-key", "quota-key-0005")]).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(client.get(&quota, &[]).await.status, StatusCode::UNAUTHORIZED);

    // Per consumer: the key's consumer (its ApiKey's name here), by outcome; requests without
    // a known key make no consumer series.
    let metrics = tollbridge.admin_get("/metrics").await.text();
    let consumer = |outcome: &str| {
        let series = format!(
            r#"tollbridge_consumer_requests_total{{gateway="default/gw",policy="default/quota",consumer="counted",outcome="{outcome}"}}"#
        );
        metrics.lines().find_map(|l| l.strip_prefix(&series)).map(str::trim).map(str::to_owned)
    };
    assert_eq!(consumer("allowed").as_deref(), Some("3"), "{metrics}");
    assert_eq!(consumer("quota_exceeded").as_deref(), Some("2"), "{metrics}");
    assert!(!metrics.contains(r#"consumer="""#), "a series without a consumer:\n{metrics}");
    // The quota it has left, as of its last request: spent.
    let left = r#"tollbridge_consumer_quota_remaining{gateway="default/gw",policy="default/quota",consumer="counted"} "#;
    assert_eq!(metrics.lines().find_map(|l| l.strip_prefix(left)), Some("0"), "{metrics}");

    // A consumer whose key leaves the configuration loses its series: their number stays
    // bounded by the keys configured, not by every key ever configured.
    let policies = std::fs::read_to_string(dir.config().join("policies.yaml")).expect("policies.yaml");
    let kept: Vec<&str> = policies.split("\n---\n").filter(|doc| !doc.contains("name: counted")).collect();
    assert!(kept.len() < policies.split("\n---\n").count(), "no ApiKey counted in:\n{policies}");
    dir.write("policies.yaml", &kept.join("\n---\n"));
    eventually("the series of a removed consumer to go", Duration::from_secs(10), || async {
        !tollbridge.admin_get("/metrics").await.text().contains(r#"consumer="counted""#)
    })
    .await;
    assert_eq!(tollbridge.status().await["errors"], serde_json::json!([]));
}

/// The routes of the reload test at `version`: `/load` answers with `x-version: <version>`,
/// and `/new-2` … `/new-<version>` exist.
fn reload_routes(version: usize) -> String {
    let mut rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /load}}}}]\n    filters:\n    - type: \
         ResponseHeaderModifier\n      responseHeaderModifier: {{set: [{{name: x-version, value: \"{version}\"}}]}}\n    \
         backendRefs: [{{name: echo, port: 80}}]\n"
    );
    for v in 2..=version {
        rules.push_str(&yaml::prefix_rule(&format!("/new-{v}"), "echo"));
    }
    yaml::route("load", None, &[], &rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let backend = echo("echo").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("echo", backend));
    dir.write("routes.yaml", &reload_routes(1));
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let url = format!("http://127.0.0.1:{port}/load");

    // 4 tasks, each at most 4000 requests and at most 12 s, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, failures, served, url) = (stop.clone(), failures.clone(), served.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            let deadline = Instant::now() + Duration::from_secs(12);
            for _ in 0..4000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                match client.try_get(&url, &[]).await {
                    Ok(resp) if resp.status == StatusCode::OK && resp.header("x-version").is_some() => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => {
                        failures.lock().unwrap().push(format!("status {}: {}", resp.status, resp.text()))
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }

    let client = Client::new();
    // Requests answered so far, well or not. Before the first reload and after each one, the
    // test waits until the load has sent 50 more: every configuration serves part of the load.
    let answered = || served.load(Ordering::SeqCst) + failures.lock().unwrap().len();
    eventually("50 requests before the first reload", Duration::from_secs(5), || {
        let done = answered() >= 50;
        async move { done }
    })
    .await;
    for version in 2..=6 {
        dir.write("routes.yaml", &reload_routes(version));
        let new_route = format!("http://127.0.0.1:{port}/new-{version}");
        eventually(&format!("route /new-{version}"), Duration::from_secs(5), || {
            let (client, new_route) = (client.clone(), new_route.clone());
            async move { client.get(&new_route, &[]).await.status == StatusCode::OK }
        })
        .await;
        let resp = client.get(&url, &[]).await;
        assert_eq!(resp.header("x-version"), Some(version.to_string().as_str()));
        let target = answered() + 50;
        eventually(&format!("50 more requests on version {version}"), Duration::from_secs(5), || {
            let done = answered() >= target;
            async move { done }
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("load task");
    }
    let failures = failures.lock().unwrap().clone();
    let served = served.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during reloads: {:?}",
        failures.len(),
        served,
        &failures[..failures.len().min(5)]
    );
    assert!(served > 100, "only {served} requests served under load");
    eprintln!("reload under load: {served} requests served across 5 reloads, none failed");
    // Every earlier route is still there.
    for v in 2..=6 {
        assert_eq!(client.get(&format!("http://127.0.0.1:{port}/new-{v}"), &[]).await.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_bad_edit_keeps_the_last_good_config() {
    let backend = echo("echo").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("echo", backend));
    dir.write("routes.yaml", &reload_routes(1));
    let tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/load");
    assert_eq!(tollbridge.status().await["errors"], serde_json::json!([]));

    // A YAML syntax error: the old routes keep serving and /status names the file.
    dir.write(
        "routes.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: [oops\n",
    );
    eventually("the load error on /status", Duration::from_secs(5), || async {
        tollbridge.status().await["errors"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    let errors = tollbridge.status().await["errors"].clone();
    assert!(errors.to_string().contains("routes.yaml"), "errors do not name the file: {errors}");
    for _ in 0..20 {
        let resp = client.get(&url, &[]).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.header("x-version"), Some("1"));
    }
    assert_eq!(tollbridge.admin_get("/readyz").await.status, StatusCode::OK, "not ready after a bad edit");

    // The fixed file applies and the error list clears. A route that loads but refers to a
    // missing Service is applied too: its status says what is wrong and it answers 500.
    dir.write("broken-ref.yaml", &yaml::route("broken", None, &[], &yaml::prefix_rule("/broken", "missing")));
    dir.write("routes.yaml", &reload_routes(2));
    eventually("version 2", Duration::from_secs(5), || {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url, &[]).await.header("x-version") == Some("2") }
    })
    .await;
    let status = tollbridge.status().await;
    assert_eq!(status["errors"], serde_json::json!([]));
    let parent = &status["httproutes"]["default/broken"]["parents"][0];
    assert_eq!(condition(&parent["conditions"], "ResolvedRefs").as_deref(), Some("False"), "{parent:#}");
    let resp = client.get(&format!("http://127.0.0.1:{port}/broken"), &[]).await;
    assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(client.get(&url, &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_state_dir_keeps_quota_counters() {
    let backend = echo("echo").await;
    let slow = CountingBackend::spawn().await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &docs(&[yaml::backend("echo", backend), yaml::backend("slow", slow.addr)]));
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("metered", None, &[], &yaml::prefix_rule("/", "echo")),
            yaml::route("open", None, &[], &yaml::prefix_rule("/open", "slow")),
        ]),
    );
    dir.write(
        "policies.yaml",
        &docs(&[
            yaml::quota_policy(
                "metered",
                "metered",
                "  apiKey: {required: true}\n  quota: {requests: 5, period: Day}\n",
            ),
            yaml::api_key("acme", "metered", "metered-key-0001", ""),
        ]),
    );
    let state = dir.state();
    let state_arg = state.to_str().expect("state dir path");
    let url = format!("http://127.0.0.1:{port}/x");
    let key = [("x-api-key", "metered-key-0001")];

    let mut first = Tollbridge::start(&dir, &["--state-dir", state_arg, "--drain-timeout", "5"]).await;
    for remaining in ["4", "3", "2"] {
        let resp = Client::new().get(&url, &key).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.header("x-ratelimit-remaining"), Some(remaining));
    }
    // SIGTERM while a request is in flight: it completes, then the process exits cleanly.
    let slow_url = format!("http://127.0.0.1:{port}/open");
    let in_flight =
        tokio::spawn(async move { Client::new().try_get(&slow_url, &[("x-echo-delay-ms", "1000")]).await });
    eventually("the in-flight request at the backend", Duration::from_secs(5), || {
        let arrived = slow.arrived() == 1;
        async move { arrived }
    })
    .await;
    let exit = first.terminate(Duration::from_secs(10)).await;
    assert!(exit.success(), "SIGTERM exit: {exit}; log:\n{}", first.log());
    let in_flight = in_flight.await.expect("in-flight task");
    assert_eq!(in_flight.map(|r| r.status), Ok(StatusCode::OK), "the in-flight request was cut by SIGTERM");
    assert!(state.join(tollbridge_local::policy::COUNTERS_FILE).exists(), "no counter file after SIGTERM");
    drop(first);

    // `tollbridge usage` reads the saved counters; without a place to read them it says so.
    let usage = |extra: &[&str]| {
        std::process::Command::new(Tollbridge::binary())
            .arg("usage")
            .arg("-f")
            .arg(dir.config())
            .args(extra)
            .output()
            .expect("run tollbridge usage")
    };
    let table = usage(&["--state-dir", state_arg]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let row = table.lines().find(|l| l.starts_with("default/metered")).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], ["default/acme", "acme"], "{table}");
    assert_eq!(cells[cells.len() - 3..], ["3", "5", "2"], "used, limit, remaining:\n{table}");
    assert!(table.starts_with("POLICY"), "{table}");
    let nowhere = usage(&[]);
    assert!(!nowhere.status.success());
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("--state-dir DIR or --counter-store URL"));

    let _second = Tollbridge::start(&dir, &["--state-dir", state_arg]).await;
    let client = Client::new();
    for remaining in ["1", "0"] {
        let resp = client.get(&url, &key).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.header("x-ratelimit-remaining"), Some(remaining), "the quota restarted from zero");
    }
    let resp = client.get(&url, &key).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.json()["error"], "quota_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_metrics_status_and_redacted_config() {
    const SECRET: &str = "admin-test-secret-value-7f3a9c";
    let backend = echo("echo").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("echo", backend));
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("open", None, &[], &yaml::prefix_rule("/open", "echo")),
            yaml::route("guarded", None, &[], &yaml::prefix_rule("/guarded", "echo")),
        ]),
    );
    dir.write(
        "policies.yaml",
        &docs(&[
            yaml::quota_policy("keys", "guarded", "  apiKey: {required: true}\n"),
            yaml::api_key("acme", "keys", SECRET, ""),
        ]),
    );
    let tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..3 {
        assert_eq!(client.get(&format!("{base}/open"), &[]).await.status, StatusCode::OK);
    }
    assert_eq!(client.get(&format!("{base}/guarded"), &[("x-api-key", SECRET)]).await.status, StatusCode::OK);
    assert_eq!(client.get(&format!("{base}/guarded"), &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(client.get(&format!("{base}/nowhere"), &[]).await.status, StatusCode::NOT_FOUND);

    assert_eq!(tollbridge.admin_get("/healthz").await.status, StatusCode::OK);
    assert_eq!(tollbridge.admin_get("/readyz").await.status, StatusCode::OK);
    assert_eq!(tollbridge.admin_get("/nope").await.status, StatusCode::NOT_FOUND);
    let post = client.request(Method::POST, &format!("http://{}/healthz", tollbridge.admin), &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

    let metrics = tollbridge.admin_get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    let has = |needle: &str| text.lines().any(|l| l.starts_with("tollbridge_") && l.contains(needle));
    let requests_line = |route: &str, code: &str| {
        text.lines().find(|l| {
            l.starts_with("tollbridge_http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("code=\"{code}\""))
        })
    };
    let open = requests_line("default/open", "200").unwrap_or_else(|| panic!("no /open counter in:\n{text}"));
    assert!(open.ends_with(" 3"), "{open}");
    assert!(requests_line("default/guarded", "401").is_some(), "no 401 counter in:\n{text}");
    assert!(requests_line("", "404").is_some(), "no 404 counter in:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("tollbridge_policy_rejections_total{")
            && l.contains("policy=\"default/keys\"")
            && l.contains("code=\"401\"")),
        "no policy rejection counter in:\n{text}"
    );
    assert!(has("http_request_duration_seconds"), "no latency histogram");

    let status = tollbridge.status().await;
    let gateway = &status["gateways"]["default/gw"];
    assert_eq!(condition(&gateway["conditions"], "Programmed").as_deref(), Some("True"), "{gateway:#}");
    assert_eq!(condition(&gateway["conditions"], "Accepted").as_deref(), Some("True"), "{gateway:#}");
    for route in ["default/open", "default/guarded"] {
        let parent = &status["httproutes"][route]["parents"][0];
        assert_eq!(
            condition(&parent["conditions"], "Accepted").as_deref(),
            Some("True"),
            "{route}: {parent:#}"
        );
        assert_eq!(condition(&parent["conditions"], "ResolvedRefs").as_deref(), Some("True"), "{route}");
    }
    assert!(status["quotapolicies"]["default/keys"].is_object(), "{status:#}");
    assert!(status["apikeys"]["default/acme"]["keyId"].is_string(), "{status:#}");
    assert_eq!(status["errors"], serde_json::json!([]));

    let config = tollbridge.admin_get("/config").await;
    assert_eq!(config.status, StatusCode::OK);
    let _: serde_json::Value = config.json();
    assert!(!config.text().contains(SECRET), "/config shows the API key");
    assert!(!status.to_string().contains(SECRET), "/status shows the API key");
    assert!(!text.contains(SECRET), "/metrics shows the API key");
    assert!(!tollbridge.log().contains(SECRET), "the log shows the API key");
}

/// A Gateway with one route to an echo backend on `port`; returns its config dir.
async fn abuse_setup(port: u16) -> ConfigDir {
    let backend = echo("echo").await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("echo", backend));
    dir.write("routes.yaml", &yaml::route("ok", None, &[], &yaml::prefix_rule("/", "echo")));
    dir
}

async fn still_serves(tollbridge: &mut Tollbridge, port: u16) {
    assert!(tollbridge.is_running(), "tollbridge exited; log:\n{}", tollbridge.log());
    let resp = Client::new().get(&format!("http://127.0.0.1:{port}/ok"), &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_oversized_and_malformed_requests_are_refused() {
    let port = free_port();
    let dir = abuse_setup(port).await;
    let mut tollbridge = Tollbridge::start(&dir, &[]).await;
    let timeout = Duration::from_secs(5);

    // A header larger than 64 KiB.
    let big = format!("GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let outcome = raw_exchange(port, big.as_bytes(), timeout).await;
    assert!(matches!(outcome, RawOutcome::Status(431) | RawOutcome::Closed), "oversized header: {outcome:?}");
    still_serves(&mut tollbridge, port).await;

    // Many headers, each small.
    let mut many = String::from("GET /ok HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        many.push_str(&format!("X-H-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let outcome = raw_exchange(port, many.as_bytes(), timeout).await;
    assert!(matches!(outcome, RawOutcome::Status(431) | RawOutcome::Closed), "too many headers: {outcome:?}");
    still_serves(&mut tollbridge, port).await;

    // Malformed request lines.
    for garbage in ["GARBAGE\r\n\r\n", "GET /ok HTTP/1.1 extra\r\nHost: x\r\n\r\n", "GET\r\n\r\n"] {
        let outcome = raw_exchange(port, garbage.as_bytes(), timeout).await;
        assert_eq!(outcome, RawOutcome::Status(400), "{garbage:?}");
    }
    // A header line without a colon.
    let outcome = raw_exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", timeout).await;
    assert_eq!(outcome, RawOutcome::Status(400));
    // A sane raw request still works on a raw connection.
    let outcome =
        raw_exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout).await;
    assert_eq!(outcome, RawOutcome::Status(200));
    still_serves(&mut tollbridge, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_slowloris_is_cut_off_by_the_header_timeout() {
    let port = free_port();
    let dir = abuse_setup(port).await;
    let mut tollbridge = Tollbridge::start(&dir, &["--header-timeout", "1"]).await;

    // A request head sent a few bytes every 300 ms never completes: the server must close the
    // connection soon after the 1 s header timeout, while serving others.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    slow.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n").await.expect("write head start");
    let started = Instant::now();
    let mut closed_after = None;
    for i in 0..30 {
        // Kept: this pause between header lines is the slow client the test is about.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow.write_all(format!("X-Slow-{i}: v\r\n").as_bytes()).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Peek whether the server has answered or closed.
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(10), slow.peek(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Err(_) => {}
        }
        if i % 3 == 0 {
            still_serves(&mut tollbridge, port).await;
        }
    }
    let closed_after = closed_after.expect("the slow connection was still open after 9 s");
    eprintln!("slowloris: connection closed {closed_after:?} after the head started");
    assert!(closed_after < Duration::from_secs(4), "closed only after {closed_after:?}");
    // Whatever it answered (408 or nothing), the connection ends.
    let outcome = tokio::time::timeout(Duration::from_secs(3), read_status(&mut slow)).await;
    assert!(outcome.is_ok(), "the connection did not end");
    still_serves(&mut tollbridge, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_bad_yaml_at_startup_exits_naming_the_file() {
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n");
    let mut tollbridge = Tollbridge::spawn(&dir, &[]);
    let exit = tollbridge.wait_exit(Duration::from_secs(10)).await;
    assert!(!exit.success(), "exit {exit} with a broken file");
    let log = tollbridge.log();
    assert!(log.contains("broken.yaml"), "the error does not name the file:\n{log}");

    // A wrong field type names the file, the document and the field.
    let dir = ConfigDir::new();
    dir.write(
        "gateway.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: \
         tollbridge\n  listeners:\n  - {name: http, protocol: HTTP, port: eighty}\n",
    );
    let mut tollbridge = Tollbridge::spawn(&dir, &[]);
    let exit = tollbridge.wait_exit(Duration::from_secs(10)).await;
    assert!(!exit.success(), "exit {exit} with a wrong field type");
    let log = tollbridge.log();
    assert!(log.contains("gateway.yaml") && log.contains("port"), "unclear error:\n{log}");
}

/// The status of the first listener of Gateway `default/gw` on `/status`, or null while there
/// is none (or the admin endpoint does not answer yet).
async fn first_listener_status(client: &Client, status_url: &str) -> serde_json::Value {
    let Ok(resp) = client.try_get(status_url, &[]).await else { return serde_json::Value::Null };
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .map(|status| status["gateways"]["default/gw"]["listeners"][0].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_readyz_is_503_while_a_listener_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let dir = abuse_setup(port).await;
    let mut tollbridge = Tollbridge::spawn(&dir, &[]);
    // The admin endpoint comes up before the listeners are bound: wait for the first status
    // (or for the process to exit, which the asserts below report with its log).
    let client = Client::new();
    let status_url = format!("http://{}/status", tollbridge.admin);
    eventually("the listener's status", Duration::from_secs(10), || {
        let exited = !tollbridge.is_running();
        let (client, status_url) = (client.clone(), status_url.clone());
        async move { exited || first_listener_status(&client, &status_url).await.is_object() }
    })
    .await;
    let listener = first_listener_status(&client, &status_url).await;
    assert!(listener.is_object(), "no listener status; log:\n{}", tollbridge.log());
    assert!(tollbridge.is_running(), "a busy port must not stop the process; log:\n{}", tollbridge.log());
    assert_eq!(tollbridge.admin_get("/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(tollbridge.admin_get("/healthz").await.status, StatusCode::OK);
    assert_eq!(condition(&listener["conditions"], "Programmed").as_deref(), Some("False"), "{listener:#}");
    assert!(listener.to_string().contains("PortUnavailable"), "{listener:#}");
    drop(taken);
}

// Known product bugs, reported; these tests pass once they are fixed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_silent_connections_are_closed_by_the_header_timeout() {
    let port = free_port();
    let dir = abuse_setup(port).await;
    let mut tollbridge = Tollbridge::start(&dir, &["--header-timeout", "1", "--max-connections", "3"]).await;

    // Three connections that never send a byte (or only the start of the HTTP/2 preface)
    // must not hold every connection slot for longer than the header timeout.
    // Each is waited on until it ends (an answer or a close), at most 4 s after the connects.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut silent = Vec::new();
    for first_bytes in [&b""[..], b"", b"PRI * HTTP/2"] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(first_bytes).await.expect("write");
        silent.push(stream);
    }
    for stream in &mut silent {
        let outcome = tokio::time::timeout_at(deadline, read_status(stream)).await;
        assert!(outcome.is_ok(), "a silent connection is still open 4 s after a 1 s header timeout");
    }
    still_serves(&mut tollbridge, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_readyz_recovers_when_the_port_frees_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let dir = abuse_setup(port).await;
    let mut tollbridge = Tollbridge::spawn(&dir, &[]);
    // The port is freed only once the process has found it taken and says it is not ready.
    let client = Client::new();
    let readyz_url = format!("http://{}/readyz", tollbridge.admin);
    eventually("/readyz 503 while the port is taken", Duration::from_secs(10), || {
        let (client, readyz_url) = (client.clone(), readyz_url.clone());
        async move {
            client.try_get(&readyz_url, &[]).await.is_ok_and(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        }
    })
    .await;
    drop(taken);
    tollbridge.wait_ready(Duration::from_secs(10)).await;
    still_serves(&mut tollbridge, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_dot_segments_do_not_bypass_a_policy() {
    let port = free_port();
    let dir = abuse_setup(port).await;
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("public", None, &[], &yaml::prefix_rule("/public", "echo")),
            yaml::route("admin", None, &[], &yaml::prefix_rule("/admin", "echo")),
        ]),
    );
    dir.write(
        "policies.yaml",
        &docs(&[
            yaml::quota_policy("admin", "admin", "  apiKey: {required: true}\n"),
            yaml::api_key("ops", "admin", "admin-key-0001", ""),
        ]),
    );
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    for path in ["/public/../admin", "/public/%2e%2e/admin", "/public/./../admin/users"] {
        let outcome = raw_exchange(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        // Either refused as malformed, or normalized to /admin… and asked for a key.
        assert!(
            matches!(outcome, RawOutcome::Status(400 | 401 | 404)),
            "{path} reached a backend without the /admin API key: {outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_backend_sees_is_what_was_authorised() {
    let port = free_port();
    let dir = policy_setup(port, echo("echo").await);
    dir.write(
        "more-routes.yaml",
        &docs(&[
            yaml::route("open", None, &[], &yaml::prefix_rule("/open", "echo")),
            yaml::route("admin-host", None, &["admin.test"], &yaml::prefix_rule("/", "echo")),
            yaml::route("any-host", None, &[], &yaml::prefix_rule("/", "echo")),
            yaml::quota_policy("admin-host", "admin-host", "  apiKey: {required: true}\n"),
        ]),
    );
    let _tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // An identity the gateway sets is never the client's, on any route.
    let claimed = [("x-tollbridge-consumer", "mallory"), ("x-consumer", "mallory")];
    let resp = client.get(&format!("{base}/open"), &claimed).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(echoed_header(&resp, "x-tollbridge-consumer"), None);
    assert_eq!(echoed_header(&resp, "x-consumer"), None);
    // `Connection` cannot name a header the gateway adds (here the consumer) to have it removed.
    let resp = client
        .get(&format!("{base}/gold"), &[("x-api-key", "gold-key-acme-0001"), ("connection", "x-consumer")])
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(echoed_header(&resp, "x-consumer").as_deref(), Some("acme"));

    // Forwarding headers are the gateway's: what the client sent is replaced or removed.
    let forged = [
        ("host", "shop.test"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-host", "bank.test"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9;host=bank.test"),
    ];
    let resp = client.get(&format!("{base}/open"), &forged).await;
    assert_eq!(echoed_header(&resp, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(echoed_header(&resp, "x-forwarded-host").as_deref(), Some("shop.test"));
    assert_eq!(echoed_header(&resp, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(echoed_header(&resp, "x-forwarded-port").as_deref(), Some(port.to_string().as_str()));
    assert_eq!(echoed_header(&resp, "x-real-ip"), None);
    assert_eq!(echoed_header(&resp, "forwarded"), None);

    // The host routed and authorised is the host forwarded.
    let raw =
        |request: String| async move { raw_exchange(port, request.as_bytes(), Duration::from_secs(5)).await };
    let mismatch =
        raw("GET http://admin.test/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n".into());
    assert!(matches!(mismatch.await, RawOutcome::Status(400)), "absolute-form target and Host differ");
    // A trailing dot names the same host: the admin route's key is still asked for.
    let dotted = raw("GET /x HTTP/1.1\r\nHost: admin.test.\r\nConnection: close\r\n\r\n".into());
    assert!(matches!(dotted.await, RawOutcome::Status(401)), "admin.test. bypassed the admin route's policy");
    let resp = client.get(&format!("{base}/x"), &[("host", "admin.test.:8080"), ("x-api-key", "nope")]).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);

    // Paths some backends read differently are refused.
    for path in ["/open\\..\\gold", "/open/..;/gold", "/open/%2e%2e;/gold", "/open%5C..%5Cgold"] {
        let outcome = raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await;
        assert!(matches!(outcome, RawOutcome::Status(400)), "{path}: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stalled_bodies_busy_endpoints_and_mirrors() {
    let main = CountingBackend::spawn().await;
    let shadow = echo("shadow").await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &docs(&[yaml::backend("main", main.addr), yaml::backend("shadow", shadow)]));
    let rules = "  - matches: [{path: {type: PathPrefix, value: /mirrored}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
    backendRefs: [{name: main, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: main, port: 80}]
";
    dir.write("routes.yaml", &yaml::route("r", None, &[], rules));
    let flags = [
        "--body-idle-timeout",
        "1",
        "--max-connections-per-endpoint",
        "2",
        "--upstream-wait-ms",
        "200",
        "--max-mirror-requests",
        "1",
    ];
    let tollbridge = Tollbridge::start(&dir, &flags).await;
    let client = Client::new();
    let base = format!("http://127.0.0.1:{port}");

    // A body that stops half way: 408 once the client has been silent for the idle timeout.
    let stalled = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b";
    let started = Instant::now();
    let outcome = raw_exchange(port, stalled.as_bytes(), Duration::from_secs(10)).await;
    assert!(matches!(outcome, RawOutcome::Status(408)), "stalled body: {outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off after {:?}", started.elapsed());

    // Two requests may be in flight to the endpoint; a third waits 200 ms, then gets 503.
    let slow = |i: usize| {
        let (client, url) = (client.clone(), format!("{base}/slow/{i}"));
        tokio::spawn(async move { client.get(&url, &[("x-echo-delay-ms", "1500")]).await.status })
    };
    let before = main.arrived();
    let (a, b) = (slow(1), slow(2));
    eventually("both slow requests at the backend", Duration::from_secs(5), || {
        let arrived = main.arrived() >= before + 2;
        async move { arrived }
    })
    .await;
    let third = client.get(&format!("{base}/fast"), &[]).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE, "{}", third.text());
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (StatusCode::OK, StatusCode::OK));
    assert_eq!(client.get(&format!("{base}/fast"), &[]).await.status, StatusCode::OK);

    // One mirrored request at a time: of two at once (each held a second by the backend), the
    // second is not mirrored.
    let mirrored: Vec<_> = (0..2)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{base}/mirrored/{i}"));
            tokio::spawn(async move { client.get(&url, &[("x-echo-delay-ms", "1000")]).await.status })
        })
        .collect();
    for request in mirrored {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    let metrics = tollbridge.admin_get("/metrics").await.text();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("tollbridge_upstream_errors_total") && l.contains("kind=\"mirror_dropped\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(dropped >= 1.0, "mirrors dropped: {dropped}\n{metrics}");
}

/// Writes `parts` on one connection to 127.0.0.1:`port` (waiting for `wait_for` in the answer
/// before each later part) and returns everything read until the server closes.
async fn raw_conversation(port: u16, parts: &[&[u8]], wait_for: &str) -> String {
    use tokio::io::AsyncReadExt;
    let conversation = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                while !String::from_utf8_lossy(&seen).contains(wait_for) {
                    let n = stream.read(&mut buf).await.expect("read");
                    assert!(n > 0, "closed before {wait_for:?}: {}", String::from_utf8_lossy(&seen));
                    seen.extend_from_slice(&buf[..n]);
                }
            }
            stream.write_all(part).await.expect("write");
        }
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), conversation).await.expect("the conversation ended in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_pipelining_bodies_and_framing_on_raw_connections() {
    let port = free_port();
    let dir = abuse_setup(port).await;
    let mut tollbridge = Tollbridge::start(&dir, &[]).await;

    // Three requests in one write are answered in order on the one connection.
    let pipelined = b"GET /ok/1 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /ok/2 HTTP/1.1\r\nHost: x\r\n\r\n\
GET /ok/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = raw_conversation(port, &[pipelined], "").await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{answer}");
    let paths: Vec<_> = answer.match_indices("\"path\":\"").map(|(at, _)| &answer[at + 8..at + 14]).collect();
    // The HEAD answer has a length and no body, so only two bodies show.
    assert_eq!(paths, ["/ok/1\"", "/ok/3\""], "{answer}");
    assert!(answer.ends_with('}'), "the last answer is whole: {answer}");

    // A chunked request body reaches the backend whole, whatever the pieces.
    let chunked = b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
5\r\nhello\r\n6;ext=x\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    for piece in [chunked.len(), 7, 1] {
        let parts: Vec<&[u8]> = chunked.chunks(piece).collect();
        let answer = raw_conversation(port, &parts, "").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "pieces of {piece}: {answer}");
        assert!(answer.contains("\"body_bytes\":11"), "pieces of {piece}: {answer}");
    }

    // `Expect: 100-continue`: the interim answer first, then the body is read.
    let head = b"PUT /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    let answer = raw_conversation(port, &[head, b"body"], "100 Continue\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\"body_bytes\":4"), "{answer}");

    // HTTP/1.0: answered, then closed; no chunked coding it could not read.
    let answer = raw_conversation(port, &[b"GET /ok HTTP/1.0\r\n\r\n"], "").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && !answer.contains("chunked"), "{answer}");

    // Requests that could be framed two ways are refused, never forwarded.
    let smuggled = b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
    let answer = raw_conversation(port, &[smuggled], "").await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    // A body nobody reads (the request is refused first) is drained before the close, so the
    // client reads its answer rather than a reset.
    let mut unread = b"POST /a%5Cb HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n".to_vec();
    unread.extend(std::iter::repeat_n(b'x', 200_000));
    let (answer, end) = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(&unread).await.expect("write");
        let (mut seen, mut buf) = (Vec::new(), [0u8; 8192]);
        let end = loop {
            match stream.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        (String::from_utf8_lossy(&seen).into_owned(), end)
    })
    .await
    .expect("the answer came in time");
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(end.is_ok(), "the connection ended with a reset: {end:?}");
    let bad_chunk =
        b"POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let answer = raw_conversation(port, &[bad_chunk], "").await;
    assert!(!answer.contains("200 OK"), "a malformed chunked body was forwarded: {answer}");
    still_serves(&mut tollbridge, port).await;
}

/// A backend that switches to WebSocket when asked (RFC 6455's sample handshake answer) and
/// then sends back what it gets in upper case, answering 200 `ok` to anything else. Every
/// request head it read is sent on `heads`. On `/liar` it switches with a wrong
/// `Sec-WebSocket-Accept`; on `/flood` it sends without end once switched (at most 1 GiB), and
/// sends `flood ended` on `heads` when it can no longer.
/// The `Sec-WebSocket-Accept` answering `key` (RFC 6455 §4.2.2).
fn websocket_accept(key: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let digest = sha1::Sha1::new()
        .chain_update(key.as_bytes())
        .chain_update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
        .finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

async fn websocket_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    websocket_backend_with(None).await
}

/// [`websocket_backend`] behind TLS with `acceptor`'s certificate, when given.
async fn websocket_backend_with(
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind websocket backend");
    let addr = listener.local_addr().expect("websocket backend address");
    let (heads, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let heads = heads.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => serve_websocket(stream, heads).await,
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            serve_websocket(tls, heads).await;
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

/// One connection of the WebSocket test backend: the handshake (a wrong accept for `/liar`),
/// then every piece read is sent back upper-cased (`/flood` sends 1 GiB instead).
async fn serve_websocket<S>(mut stream: S, heads: tokio::sync::mpsc::UnboundedSender<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let raw = String::from_utf8_lossy(&head).into_owned();
    // The key as sent (base64: its case matters).
    let key = raw.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_string())
    });
    let head = raw.to_lowercase();
    let _ = heads.send(head.clone());
    if !head.contains("\r\nupgrade: websocket\r\n") {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await;
        return;
    }
    let accept = if head.starts_with("get /liar ") {
        "bm90IHRoZSBhbnN3ZXI=".to_string()
    } else {
        websocket_accept(key.as_deref().unwrap_or_default())
    };
    let switch = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(switch.as_bytes()).await.is_err() {
        return;
    }
    if head.starts_with("get /flood ") {
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..16 * 1024 {
            if stream.write_all(&piece).await.is_err() {
                break;
            }
        }
        let _ = heads.send("flood ended".to_string());
        return;
    }
    let mut piece = [0u8; 1024];
    loop {
        match stream.read(&mut piece).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&piece[..n].to_ascii_uppercase()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends `request` on a new connection to `port` and reads the answer's head.
async fn send_head(port: u16, request: &str) -> (TcpStream, String) {
    use tokio::io::AsyncReadExt;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the proxy");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(1))),
            "the answer's head ended early: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).to_lowercase())
}

const WEBSOCKET_REQUEST: &str =
    "GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: keep-alive, Upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_to_the_backend() {
    use tokio::io::AsyncReadExt;
    let port = free_port();
    let (backend, mut heads) = websocket_backend().await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("chat", backend));
    dir.write("routes.yaml", &yaml::route("chat", None, &[], &yaml::prefix_rule("/", "chat")));
    let mut tollbridge = Tollbridge::start(&dir, &["--websocket-idle-timeout", "1"]).await;

    let (mut stream, head) = send_head(port, WEBSOCKET_REQUEST).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    for line in [
        "\r\nconnection: upgrade\r\n",
        "\r\nupgrade: websocket\r\n",
        "\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n",
    ] {
        assert!(head.contains(line), "{line:?} in {head}");
    }
    let asked = heads.recv().await.expect("the backend read the request");
    for line in [
        "\r\nconnection: upgrade\r\n",
        "\r\nupgrade: websocket\r\n",
        "\r\nsec-websocket-key: ",
        "\r\nx-forwarded-for: 127.0.0.1\r\n",
    ] {
        assert!(asked.contains(line), "{line:?} in {asked}");
    }
    // Bytes go both ways, as many times as the two ends like.
    for message in ["hello", "and again"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await.unwrap().unwrap();
        assert_eq!(answer, message.to_uppercase().as_bytes());
    }
    // The client's end of sending reaches the backend, which closes: so does the client's side.
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");

    // Nothing moving for the idle limit (1 s here) closes both ends.
    let (mut idle, head) = send_head(port, WEBSOCKET_REQUEST).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut [0u8; 16])).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed after {:?}", started.elapsed());

    // A client that stops reading holds nothing past the idle limit either: the backend's
    // writes fail once the proxy has let go of both ends.
    let flood = WEBSOCKET_REQUEST.replace("GET /chat ", "GET /flood ");
    let (_stalled, head) = send_head(port, &flood).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(message) = heads.recv().await {
            if message == "flood ended" {
                return true;
            }
        }
        false
    });
    assert!(matches!(ended.await, Ok(true)), "the tunnel to a client that does not read stayed open");

    // A 101 that does not answer the client's handshake is not joined: 502.
    let liar = WEBSOCKET_REQUEST.replace("GET /chat ", "GET /liar ");
    let (_, head) = send_head(port, &liar).await;
    assert!(head.starts_with("http/1.1 502 "), "{head}");

    // Any other upgrade is a plain request: the backend neither sees nor grants it.
    let h2c = "GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
               Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let (_, head) = send_head(port, h2c).await;
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    while let Ok(asked) = heads.try_recv() {
        assert!(!asked.contains("upgrade") || asked.contains("upgrade: websocket"), "{asked}");
    }
    still_serves(&mut tollbridge, port).await;
}

/// Service `name` whose port 80 says `appProtocol: kubernetes.io/h2c`, with one endpoint.
fn h2c_backend(name: &str, addr: SocketAddr) -> String {
    let service =
        yaml::service(name).replace("    port: 80\n", "    port: 80\n    appProtocol: kubernetes.io/h2c\n");
    docs(&[service, yaml::endpoint_slice(name, addr)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_backends_are_spoken_to_in_http2_whatever_the_client_speaks() {
    let port = free_port();
    let grpcish = echo("h2c").await;
    let plain = echo("plain").await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &docs(&[h2c_backend("h2c", grpcish), yaml::backend("plain", plain)]));
    let rules = format!("{}{}", yaml::prefix_rule("/h2c", "h2c"), yaml::prefix_rule("/", "plain"));
    dir.write("routes.yaml", &yaml::route("both", None, &[], &rules));
    let mut tollbridge = Tollbridge::start(&dir, &[]).await;

    for client in [Client::new(), Client::h2c()] {
        let resp = client.get(&format!("http://127.0.0.1:{port}/h2c/a?b=c"), &[("x-tag", "1")]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let echoed = resp.json();
        assert_eq!(echoed["protocol"], "HTTP/2.0", "{echoed}");
        assert_eq!(echoed["path"], "/h2c/a");
        assert_eq!(echoed["query"], "b=c");
        assert_eq!(echoed["host"], format!("127.0.0.1:{port}"), "the client's authority: {echoed}");
        assert_eq!(echoed["headers"]["x-tag"], "1");
        assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1");
        assert!(echoed["headers"].get("host").is_none(), "HTTP/2 carries the authority alone: {echoed}");
        // Other backends still get HTTP/1.1.
        let resp = client.get(&format!("http://127.0.0.1:{port}/other"), &[]).await;
        assert_eq!(resp.json()["protocol"], "HTTP/1.1");
    }

    // A body of a size the client did not announce (chunked) arrives whole.
    let body = "x".repeat(300 * 1024);
    let resp =
        Client::new().request(Method::POST, &format!("http://127.0.0.1:{port}/h2c/upload"), &[], &body).await;
    assert_eq!(resp.json()["body_bytes"], body.len());

    // Many requests at once, multiplexed on the endpoint's connection.
    let client = Client::h2c();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..50 {
        let client = client.clone();
        requests
            .spawn(async move { client.get(&format!("http://127.0.0.1:{port}/h2c/{i}"), &[]).await.status });
    }
    let answers = requests.join_all().await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");

    // A WebSocket handshake to an h2c backend is a plain request there: nothing switches.
    let (_, head) = send_head(port, &WEBSOCKET_REQUEST.replace("GET /chat ", "GET /h2c/chat ")).await;
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    still_serves(&mut tollbridge, port).await;
}

/// A gRPC-shaped backend on h2c: answers every call with one empty message and its status in
/// trailers (`grpc-status: 0`, and `x-seen-te` saying whether the call carried `te: trailers`).
async fn grpc_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC backend");
    let addr = listener.local_addr().expect("gRPC backend address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let te = req.headers().get("te").map(|v| v.to_str().unwrap_or("?").to_string());
                    let path = req.uri().path().to_string();
                    let _ = req.into_body().collect().await;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    trailers
                        .insert("x-seen-te", http::HeaderValue::from_str(&te.unwrap_or_default()).unwrap());
                    let frames = [
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(&[
                            0, 0, 0, 0, 0,
                        ]))),
                        Ok(hyper::body::Frame::trailers(trailers)),
                    ];
                    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("x-path", path)
                        .body(body)
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_carry_calls_and_the_gateway_answers_in_grpc_status() {
    let port = free_port();
    let backend = grpc_backend().await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    // No appProtocol: a GRPCRoute's backends are spoken to in h2c all the same.
    dir.write("backends.yaml", &docs(&[yaml::backend("echo", backend), yaml::service("gone")]));
    dir.write(
        "routes.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: echo}\nspec:\n  \
         parentRefs: [{name: gw}]\n  rules:\n  \
         - matches: [{method: {service: pkg.Echo, method: Say}}]\n    \
           backendRefs: [{name: echo, port: 80}]\n  \
         - matches: [{method: {service: pkg.Gone}}]\n    \
           backendRefs: [{name: gone, port: 80}]\n",
    );
    let mut tollbridge = Tollbridge::start(&dir, &[]).await;
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let client = Client::h2c();

    // A call the route matches reaches the backend, with its trailers on the way back.
    let resp = client.request(Method::POST, &url("/pkg.Echo/Say"), &grpc, "\0\0\0\0\0").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-path"), Some("/pkg.Echo/Say"));
    let trailers = resp.trailers.clone().unwrap_or_else(|| panic!("no trailers: {resp:?}"));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-seen-te"], "trailers", "the backend is asked to accept trailers");

    // What no rule matches is UNIMPLEMENTED (12), in gRPC's own terms.
    let resp = client.request(Method::POST, &url("/pkg.Echo/Shout"), &grpc, "").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("content-type"), Some("application/grpc"));
    assert_eq!(resp.header("grpc-status"), Some("12"), "{resp:?}");
    assert_eq!(resp.header("grpc-message"), Some("no route matches this request"));
    // A backend with no endpoints is UNAVAILABLE (14).
    let resp = client.request(Method::POST, &url("/pkg.Gone/Any"), &grpc, "").await;
    assert_eq!(resp.header("grpc-status"), Some("14"), "{resp:?}");
    // A request that is not gRPC keeps HTTP's answer.
    let resp = client.request(Method::POST, &url("/pkg.Echo/Shout"), &[], "").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert!(resp.headers.get("grpc-status").is_none());

    let status = tollbridge.admin_get("/status").await.json();
    let parent = &status["grpcroutes"]["default/echo"]["parents"][0];
    assert_eq!(parent["conditions"][0]["status"], "True", "{status}");
    assert!(tollbridge.is_running(), "tollbridge exited; log:\n{}", tollbridge.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_are_tunnelled_to_an_http11_backend() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncReadExt;
    let port = free_port();
    let (backend, mut heads) = websocket_backend().await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("chat", backend));
    let rules = format!("{}{}", yaml::prefix_rule("/chat", "chat"), yaml::prefix_rule("/liar", "chat"));
    dir.write("routes.yaml", &yaml::route("chat", None, &[], &rules));
    let mut tollbridge = Tollbridge::start(&dir, &[]).await;

    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    // The server's SETTINGS, which allow extended CONNECT, come with its first answer.
    let ready =
        Request::get(format!("http://127.0.0.1:{port}/chat")).body(http_body_util::Empty::<Bytes>::new());
    let _ = sender.send_request(ready.unwrap()).await.unwrap();
    let plain = heads.recv().await.expect("the backend read the plain GET");
    assert!(!plain.contains("upgrade"), "{plain}");
    let connect = |path: &str, protocol: &'static str| {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        req.extensions_mut().insert(hyper::ext::Protocol::from_static(protocol));
        req
    };

    let response = sender.send_request(connect("/chat", "websocket")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let asked = heads.recv().await.expect("the backend read the handshake");
    assert!(asked.starts_with("get /chat http/1.1\r\n"), "{asked}");
    for line in ["\r\nupgrade: websocket\r\n", "\r\nsec-websocket-key: ", "\r\nsec-websocket-version: 13\r\n"]
    {
        assert!(asked.contains(line), "{line:?} in {asked}");
    }
    let mut stream = TokioIo::new(hyper::upgrade::on(response).await.expect("the stream opens"));
    for message in ["hello", "over two"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await.unwrap().unwrap();
        assert_eq!(answer, message.to_uppercase().as_bytes());
    }
    stream.shutdown().await.unwrap();
    // Tunnels and the bytes they carry are in the metrics; the tunnel is gone once both ends
    // have closed.
    let tunnel_metrics = |text: &str| {
        let value = |name: &str| {
            text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(-1.0)
        };
        (
            value("tollbridge_websocket_tunnels "),
            value(r#"tollbridge_websocket_bytes_total{direction="to_backend"} "#),
            value(r#"tollbridge_websocket_bytes_total{direction="to_client"} "#),
        )
    };
    let carried = ("hello".len() + "over two".len()) as f64;
    let proxy = &tollbridge;
    support::eventually("the tunnel closed and counted", Duration::from_secs(5), || async move {
        tunnel_metrics(&proxy.admin_get("/metrics").await.text()) == (0.0, carried, carried)
    })
    .await;

    // A backend whose 101 does not answer the gateway's key gets the client 502, not a tunnel.
    let response = sender.send_request(connect("/liar", "websocket")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    // Another protocol is not tunnelled.
    let response = sender.send_request(connect("/chat", "connect-udp")).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(tollbridge.is_running(), "tollbridge exited; log:\n{}", tollbridge.log());
}

/// An HTTPS backend for `name` (its certificate self-signed, so it is its own CA): answers every
/// request with the TLS server name it was asked for and the path.
/// A TLS acceptor with a certificate of its own CA, for `name` and the URI
/// `spiffe://shop/<name>`.
fn tls_acceptor(name: &str) -> (tokio_rustls::TlsAcceptor, TestCert) {
    use rustls::pki_types::pem::PemObject as _;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("certificate params");
    let uri = rcgen::string::Ia5String::try_from(format!("spiffe://shop/{name}")).expect("URI");
    params.subject_alt_names.push(rcgen::SanType::URI(uri));
    let key_pair = rcgen::KeyPair::generate().expect("key pair");
    let certified = params.self_signed(&key_pair).expect("certificate");
    let cert = TestCert {
        name: name.to_string(),
        cert_pem: certified.pem(),
        key_pem: key_pair.serialize_pem(),
        der: certified.der().clone(),
    };
    let chain = vec![cert.der.clone()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    (acceptor, cert)
}

async fn tls_backend(name: &str) -> (SocketAddr, TestCert) {
    let (acceptor, cert) = tls_acceptor(name);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind TLS backend");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().unwrap_or_default().to_string();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = format!("{} {}", sni, req.uri().path());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_a_backend_tls_policy_targets_are_spoken_to_in_checked_tls() {
    let port = free_port();
    let (backend, cert) = tls_backend("orders.internal").await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let policy_with = |name: &str, service: &str, hostname: &str, ca: &str, extra: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}}}\nspec:\n  \
             targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  validation:\n    \
             caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca}}}]\n    hostname: {hostname}\n{extra}"
        )
    };
    let policy =
        |name: &str, service: &str, hostname: &str, ca: &str| policy_with(name, service, hostname, ca, "");
    // subjectAltNames are checked instead of the hostname (which stays the SNI).
    let sans = |names: &str| format!("    subjectAltNames: [{names}]\n");
    let other_ca = TestCert::self_signed("orders.internal");
    dir.write(
        "backends.yaml",
        &docs(&[
            yaml::backend("orders", backend),
            yaml::backend("wrong-name", backend),
            yaml::backend("wrong-ca", backend),
            yaml::backend("plain", backend),
            policy("orders", "orders", "orders.internal", "orders-ca"),
            policy("wrong-name", "wrong-name", "billing.internal", "orders-ca"),
            policy("wrong-ca", "wrong-ca", "orders.internal", "other-ca"),
            yaml::backend("by-uri", backend),
            yaml::backend("by-name", backend),
            yaml::backend("wrong-uri", backend),
            policy_with(
                "by-uri",
                "by-uri",
                "sni.example",
                "orders-ca",
                &sans("{type: URI, uri: \"spiffe://shop/orders.internal\"}"),
            ),
            policy_with(
                "by-name",
                "by-name",
                "sni.example",
                "orders-ca",
                &sans("{type: Hostname, hostname: orders.internal}"),
            ),
            policy_with(
                "wrong-uri",
                "wrong-uri",
                "orders.internal",
                "orders-ca",
                &sans("{type: URI, uri: \"spiffe://shop/billing\"}"),
            ),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: orders-ca}}\ndata:\n  ca.crt: |\n{}",
                indent(&cert.cert_pem)
            ),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: other-ca}}\ndata:\n  ca.crt: |\n{}",
                indent(&other_ca.cert_pem)
            ),
        ]),
    );
    let rules: String = ["orders", "wrong-name", "wrong-ca", "plain", "by-uri", "by-name", "wrong-uri"]
        .iter()
        .map(|service| yaml::prefix_rule(&format!("/{service}"), service))
        .collect();
    dir.write("routes.yaml", &yaml::route("all", None, &[], &rules));
    let mut tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // TLS with the policy's hostname as SNI, checked against its CA; kept alive and reused.
    for _ in 0..3 {
        let resp = client.get(&url("/orders/list"), &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.text(), "orders.internal /orders/list");
    }
    let metrics = tollbridge.admin_get("/metrics").await.text();
    assert!(!metrics.contains(r#"kind="tls""#), "{metrics}");
    // With subjectAltNames, one of them is what the certificate must carry (a URI exactly, a
    // DNS name as usual); the hostname is only the SNI.
    for path in ["/by-uri", "/by-name"] {
        let resp = client.get(&url(path), &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
        assert_eq!(resp.text(), format!("sni.example {path}"));
    }
    // A certificate not valid for the hostname or the names, or not signed by a trusted CA: 502,
    // never plaintext.
    for path in ["/wrong-name", "/wrong-ca", "/wrong-uri"] {
        let resp = client.get(&url(path), &[]).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{path}: {}", resp.text());
    }
    let metrics = tollbridge.admin_get("/metrics").await.text();
    let refused = |backend: &str| format!(r#"backend="default/{backend}:80",kind="tls"}} 1"#);
    for backend in ["wrong-name", "wrong-ca", "wrong-uri"] {
        assert!(metrics.contains(&refused(backend)), "{backend} in {metrics}");
    }
    // Without a policy the same backend is spoken to in plaintext, which it refuses.
    let resp = client.get(&url("/plain"), &[]).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text());

    let status = tollbridge.admin_get("/status").await.json();
    let accepted = &status["backendtlspolicies"]["default/orders"]["ancestors"][0]["conditions"][0];
    assert_eq!(accepted["status"], "True", "{status}");
    assert!(tollbridge.is_running(), "tollbridge exited; log:\n{}", tollbridge.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_backends_get_websockets_in_the_tls_their_policy_asks_for() {
    use tokio::io::AsyncReadExt;
    let port = free_port();
    let (acceptor, cert) = tls_acceptor("chat.internal");
    let (backend, mut heads) = websocket_backend_with(Some(acceptor)).await;
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    let wss = |name: &str| {
        let service = yaml::service(name)
            .replace("    port: 80\n", "    port: 80\n    appProtocol: kubernetes.io/wss\n");
        docs(&[service, yaml::endpoint_slice(name, backend)])
    };
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    dir.write(
        "backends.yaml",
        &docs(&[
            wss("chat"),
            wss("unchecked"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: chat}\nspec:\n  \
             targetRefs: [{group: \"\", kind: Service, name: chat}]\n  validation:\n    \
             caCertificateRefs: [{group: \"\", kind: ConfigMap, name: chat-ca}]\n    hostname: chat.internal\n"
                .to_string(),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: chat-ca}}\ndata:\n  ca.crt: |\n{}",
                indent(&cert.cert_pem)
            ),
        ]),
    );
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("chat", None, &[], &yaml::prefix_rule("/chat", "chat")),
            yaml::route("unchecked", None, &[], &yaml::prefix_rule("/unchecked", "unchecked")),
        ]),
    );
    let _tollbridge = Tollbridge::start(&dir, &[]).await;

    // Through the proxy in HTTP/1.1, to the backend in TLS checked against the policy's CA.
    let (mut stream, head) = send_head(port, WEBSOCKET_REQUEST).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    let asked = heads.recv().await.expect("the backend read the request over TLS");
    assert!(asked.starts_with("get /chat "), "{asked}");
    stream.write_all(b"over tls").await.unwrap();
    let mut answer = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(&answer, b"OVER TLS");

    // A wss port without a policy is never spoken to in plaintext: 500.
    let unchecked = WEBSOCKET_REQUEST.replace("GET /chat ", "GET /unchecked ");
    let (_, head) = send_head(port, &unchecked).await;
    assert!(head.starts_with("http/1.1 500 "), "{head}");
}
