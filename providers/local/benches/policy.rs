//! The per-request policy decision of the bench's key + quota scenario: find the API key in a
//! header, hash and look it up among 1,000 keys, take a rate token and count the monthly quota on
//! one bucket, and build the five rate-limit response headers.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tollbridge_local::policy::{Policies, PolicyState};
use tollbridge_provider::{
    ApiKeyIr, ApiKeySettingsIr, QuotaIr, QuotaPeriod, QuotaPolicyIr, RateLimitIr, SecretString,
};

const POLICY: &str = "bench/gold";
const KEYS: usize = 1_000;

fn key_value(i: usize) -> String {
    format!("bench-plain-key-{i:06}")
}

fn policies() -> Vec<QuotaPolicyIr> {
    let keys = (0..KEYS)
        .map(|i| ApiKeyIr {
            id: format!("bench/key{i}"),
            consumer: format!("consumer{i}"),
            sha256: hex::encode(Sha256::digest(key_value(i).as_bytes())),
            value: SecretString::new(key_value(i)),
            disabled: false,
            expires_at: None,
        })
        .collect();
    vec![QuotaPolicyIr {
        jwt: None,
        id: POLICY.into(),
        api_key: Some(ApiKeySettingsIr {
            required: true,
            header: Some("x-api-key".into()),
            query_param: Some("api_key".into()),
            consumer_header: "x-tollbridge-consumer".into(),
        }),
        // Far above what the bench sends, so every request is allowed and counted.
        rate_limit: Some(RateLimitIr { requests: u32::MAX, period_seconds: 1, burst: u32::MAX }),
        quota: Some(QuotaIr { requests: u64::MAX, period: QuotaPeriod::Month }),
        keys,
    }]
}

fn request(key: &str) -> http::request::Parts {
    let request = http::Request::builder()
        .uri("/svc42/v1/items?page=2")
        .header("host", "api.example.com")
        .header("accept", "*/*")
        .header("x-api-key", key)
        .body(())
        .expect("request");
    request.into_parts().0
}

fn decision(c: &mut Criterion) {
    let policies = Policies::compile(&policies());
    let state = PolicyState::new();
    let key = key_value(KEYS / 2);
    let now: Timestamp = "2026-12-06T12:00:00Z".parse().expect("timestamp");
    c.bench_function("policy check: key + rate + quota + headers", |b| {
        b.iter_batched_ref(
            || request(&key),
            |parts| {
                let decision = policies.check(&state, POLICY, parts, now);
                assert!(decision.is_allowed());
                black_box(decision)
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);
