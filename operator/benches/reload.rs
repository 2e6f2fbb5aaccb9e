//! The file → configuration steps of a reload with 10,000 HTTPRoutes behind an API key and a
//! quota: loading the YAML into objects (all of it, or after an edit of one route with the
//! documents of the previous load cached, or after a rewrite of every route), and translating them (a whole reload, load + translate
//! + compile, should take under 200 ms). Needs python3 (the configuration's generator).

use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use tollbridge::providers;
use tollbridge::source::files;
use tollbridge::translate::translate;

const ROUTES: usize = 10_000;

/// The binary's allocator, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The configuration `bench/gen-routes.py --keys` writes (the one `bench/reload-and-memory.sh`
/// serves): a Gateway, a backend, `routes` HTTPRoutes `/svc{i}` and a QuotaPolicy with a key.
fn config(routes: usize) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("python3")
        .arg(root.join("bench/gen-routes.py"))
        .arg(dir.path())
        .args(["18182", "18180", &routes.to_string(), "--keys"])
        .status()
        .expect("run python3 bench/gen-routes.py");
    assert!(status.success(), "bench/gen-routes.py failed: {status}");
    std::fs::read_to_string(dir.path().join("bench.yaml")).expect("bench.yaml")
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
    // A reload after an edit of one route: the other documents come from the cache.
    let edited = text.replacen("value: /svc5000}", "value: /svc5000-edited}", 1);
    assert_ne!(edited, text);
    let mut cache = files::DocumentCache::default();
    let mut load_cached = |text: &str| match files::load_str_cached(
        origin,
        black_box(text),
        &mut cache,
        files::Validation::Strict,
    ) {
        Ok(loaded) => cache.remember(loaded),
        Err(errors) => panic!("{errors}"),
    };
    group.bench_function("load YAML, one route edited", |b| {
        b.iter(|| {
            load_cached(&text);
            load_cached(&edited);
        })
    });
    // Every document changed: nothing comes from the cache.
    let relabeled = text.replace("metadata: {name: svc", "metadata: {labels: {rewrite: a}, name: svc");
    assert_ne!(relabeled, text);
    group.bench_function("load YAML, every route rewritten", |b| {
        b.iter(|| {
            load_cached(&text);
            load_cached(&relabeled);
        })
    });
    group.bench_function("translate", |b| {
        b.iter(|| translate(black_box(&loaded.snapshot), &providers::capabilities).gateways.len())
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
