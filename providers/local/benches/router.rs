//! Route lookup in a 10-entry table against a 10,000-entry one (the target is ≤ 1.5×), and
//! compiling 10,000 entries (the target is ≤ 200 ms).

use std::cmp::Reverse;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use tollbridge_local::router::{PortRouter, RequestView};
use tollbridge_provider::{
    ActionIr, AttachmentIr, GatewayIr, GatewayKey, KeyValueMatch, ListenerIr, ListenerProtocol,
    LocalSettings, MatchIr, PathMatch, ProviderSettings, RouteId, RouteIr, StringMatch,
};

const PORT: u16 = 80;
const REQUESTS: usize = 64;

fn listener(name: &str, hostname: Option<&str>) -> ListenerIr {
    ListenerIr {
        name: name.into(),
        port: PORT,
        protocol: ListenerProtocol::Http,
        hostname: hostname.map(Into::into),
        certificates: Vec::new(),
    }
}

/// Entry `i`: every fourth on its own tenant hostname; mostly `/svc{i}/v1` prefixes, with exact
/// health checks, header-matched tenants, some method matches and a few regular expressions.
fn entry(i: usize) -> RouteIr {
    let hostnames =
        if i.is_multiple_of(4) { vec![format!("tenant{}.example.com", i % 50)] } else { Vec::new() };
    let path = match i % 50 {
        0 | 10 | 20 | 30 | 40 => PathMatch::Exact(format!("/svc{i}/v1/health")),
        7 => PathMatch::Regex(format!("/svc{i}/v[0-9]+/items/.*")),
        _ => PathMatch::Prefix(format!("/svc{i}/v1")),
    };
    let headers = if i % 10 == 1 {
        vec![KeyValueMatch { name: "x-tenant".into(), value: StringMatch::Exact(format!("t{i}")) }]
    } else {
        Vec::new()
    };
    RouteIr {
        id: RouteId { namespace: "bench".into(), name: format!("route{i}"), ..RouteId::default() },
        attachments: vec![AttachmentIr { listener: "http".into(), hostnames }],
        matcher: MatchIr {
            path,
            method: (i % 20 == 3).then(|| "GET".to_string()),
            headers,
            query_params: Vec::new(),
        },
        filters: Default::default(),
        action: ActionIr::Respond { status: 200 },
        timeouts: Default::default(),
        retry: None,
        policy: None,
    }
}

/// `n` entries plus a catch-all, in the translator's precedence order.
fn gateway(n: usize) -> GatewayIr {
    let mut routes: Vec<RouteIr> = (0..n).map(entry).collect();
    let mut fallback = entry(1);
    fallback.id.name = "fallback".into();
    fallback.attachments[0].hostnames.clear();
    fallback.matcher = MatchIr {
        path: PathMatch::Prefix("/".into()),
        method: None,
        headers: Vec::new(),
        query_params: Vec::new(),
    };
    routes.push(fallback);
    routes.sort_by_key(|r| {
        let m = &r.matcher;
        let (kind, len) = match &m.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Regex(p) => (1, p.len()),
            PathMatch::Prefix(p) => (2, p.len()),
        };
        (kind, Reverse(len), Reverse(m.method.is_some()), Reverse(m.headers.len()), r.id.name.clone())
    });
    GatewayIr {
        key: GatewayKey::default(),
        provider: ProviderSettings::Local(LocalSettings::default()),
        listeners: vec![listener("http", None), listener("admin", Some("admin.example.com"))],
        addresses: Vec::new(),
        infrastructure: Default::default(),
        routes,
        policies: Vec::new(),
    }
}

struct Request {
    host: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
}

/// Requests aimed at entries spread over the table, shaped like the entry they target.
fn requests(n: usize) -> Vec<Request> {
    (0..REQUESTS)
        .map(|k| {
            let i = (k * 7919) % n;
            let host = if i.is_multiple_of(4) {
                format!("Tenant{}.example.com:8080", i % 50)
            } else {
                "www.example.com".into()
            };
            let path = match i % 50 {
                0 | 10 | 20 | 30 | 40 => format!("/svc{i}/v1/health"),
                7 => format!("/svc{i}/v2/items/42"),
                _ => format!("/svc{i}/v1/items/42"),
            };
            let mut headers = HeaderMap::new();
            headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
            headers.insert("accept", HeaderValue::from_static("*/*"));
            if i % 10 == 1 {
                headers.insert("x-tenant", HeaderValue::from_str(&format!("t{i}")).unwrap());
            }
            Request { host, path, query: Some("page=2".into()), method: Method::GET, headers }
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(REQUESTS as u64));
    for n in [10, 10_000] {
        let gw = gateway(n);
        let router = PortRouter::compile(&gw, PORT).expect("routes compile");
        let requests = requests(n);
        // Every request must reach the entry it was built for, not the catch-all.
        for r in &requests {
            let view = view(r);
            let hit = router.lookup(&view).expect("a route matches");
            assert_ne!(gw.routes[hit].id.name, "fallback", "{} fell through", r.path);
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &requests, |b, requests| {
            b.iter(|| {
                for r in requests {
                    black_box(router.lookup(&view(black_box(r))));
                }
            })
        });
    }
    group.finish();
}

fn view(r: &Request) -> RequestView<'_> {
    RequestView {
        host: &r.host,
        path: &r.path,
        query: r.query.as_deref(),
        method: &r.method,
        headers: &r.headers,
    }
}

fn bench_compile(c: &mut Criterion) {
    let gw = gateway(10_000);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group
        .bench_function("10000", |b| b.iter(|| PortRouter::compile(black_box(&gw), PORT).expect("compiles")));
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_compile);
criterion_main!(benches);
