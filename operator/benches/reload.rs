//! The file → configuration steps of a reload with 10,000 HTTPRoutes behind an API key and a
//! quota, as `bench/gen-routes.py --keys` writes them: loading the YAML into objects, and
//! translating them (a whole reload, load + translate + compile, should take under 200 ms).

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use tollbridge::providers;
use tollbridge::source::files;
use tollbridge::translate::translate;

const ROUTES: usize = 10_000;

/// The binary's allocator, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEAD: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: bench}
spec: {controllerName: tollbridge.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench}
spec:
  gatewayClassName: bench
  listeners:
  - {name: http, protocol: HTTP, port: 18182}
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  ports:
  - {name: http, port: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend
  labels: {kubernetes.io/service-name: backend}
addressType: IPv4
ports:
- {name: http, port: 18180}
endpoints:
- addresses: [127.0.0.1]
---
apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata: {name: bench}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: bench}
  apiKey: {required: true, header: x-api-key}
  rateLimit: {requests: 1000000000, unit: Second}
  quota: {requests: 1000000000000, period: Month}
---
apiVersion: tollbridge.dev/v1alpha1
kind: ApiKey
metadata: {name: bench}
spec:
  policyRef: {name: bench}
  secretRef: {name: bench-key}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-key}
stringData:
  api-key: bench-key-0123456789
";

/// The configuration with `routes` HTTPRoutes `/svc{i}` to one backend.
fn config(routes: usize) -> String {
    let mut text = String::from(HEAD);
    for i in 0..routes {
        text.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: svc{i}}}\n\
             spec:\n  parentRefs: [{{name: bench}}]\n  rules:\n  - matches:\n    \
             - path: {{type: PathPrefix, value: /svc{i}}}\n    backendRefs:\n    - {{name: backend, port: 80}}\n"
        ));
    }
    text
}

fn reload(c: &mut Criterion) {
    let text = config(ROUTES);
    let origin = Path::new("bench.yaml");
    let loaded = files::load_str(origin, &text).expect("the bench configuration loads");
    assert_eq!(loaded.snapshot.http_routes.len(), ROUTES);
    let translation = translate(&loaded.snapshot, &providers::capabilities);
    assert_eq!(translation.gateways.len(), 1);
    assert_eq!(translation.gateways[0].routes.len(), ROUTES);

    let mut group = c.benchmark_group("reload 10,000 routes");
    group.sample_size(10);
    group.bench_function("load YAML", |b| b.iter(|| files::load_str(origin, black_box(&text)).is_ok()));
    group.bench_function("translate", |b| {
        b.iter(|| translate(black_box(&loaded.snapshot), &providers::capabilities).gateways.len())
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
