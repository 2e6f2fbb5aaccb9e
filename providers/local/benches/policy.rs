//! The per-request policy decision of the bench's key + quota scenario: find the API key in a
//! header, hash and look it up among 1,000 keys, take a rate token and count the monthly quota on
//! one bucket, and build the five rate-limit response headers. Then the same with a bearer token
//! instead of a key, per signature algorithm.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tollbridge_local::policy::{Policies, PolicyState};
use tollbridge_provider::{
    ApiKeyIr, ApiKeySettingsIr, JwksIr, JwtIr, QuotaIr, QuotaPeriod, QuotaPolicyIr, RateLimitIr, SecretString,
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

/// A token policy whose key set holds the key of `alg` (made here), and a token it accepts.
fn token_policy(alg: jsonwebtoken::Algorithm) -> (QuotaPolicyIr, String) {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let (private, jwk) = match alg {
        jsonwebtoken::Algorithm::ES256 => {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
            let point = pair.public_key_raw();
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k", "x": b64(&point[1..33]), "y": b64(&point[33..])});
            (jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC PEM"), jwk)
        }
        _ => {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
            let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64(pair.public_key_raw())});
            (jsonwebtoken::EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("Ed PEM"), jwk)
        }
    };
    let claims = serde_json::json!({"iss": "https://issuer.bench", "aud": "bench", "sub": "consumer7",
        "exp": jiff::Timestamp::now().as_second() + 86_400, "scope": "read write"});
    let header = jsonwebtoken::Header { kid: Some("k".into()), ..jsonwebtoken::Header::new(alg) };
    let token = jsonwebtoken::encode(&header, &claims, &private).expect("token");
    let mut policy = policies().remove(0);
    policy.api_key = None;
    policy.keys = Vec::new();
    policy.jwt = Some(JwtIr {
        issuer: "https://issuer.bench".into(),
        audiences: vec!["bench".into()],
        jwks: JwksIr::Inline(serde_json::json!({"keys": [jwk]}).to_string()),
        consumer_claim: "sub".into(),
        required_claims: Vec::new(),
        consumer_header: "x-tollbridge-consumer".into(),
        forward_token: false,
    });
    (policy, token)
}

fn token_decision(c: &mut Criterion) {
    let now: Timestamp = "2026-12-06T12:00:00Z".parse().expect("timestamp");
    for (name, alg) in [("ES256", jsonwebtoken::Algorithm::ES256), ("EdDSA", jsonwebtoken::Algorithm::EdDSA)]
    {
        let (policy, token) = token_policy(alg);
        let policies = Policies::compile(&[policy]);
        let state = PolicyState::new();
        let authorization = format!("Bearer {token}");
        c.bench_function(&format!("policy check: {name} token + rate + quota + headers"), |b| {
            b.iter_batched_ref(
                || {
                    let mut parts = request("unused");
                    parts.headers.insert("authorization", authorization.parse().expect("header"));
                    parts
                },
                |parts| {
                    let decision = policies.check(&state, POLICY, parts, now);
                    assert!(decision.is_allowed(), "{decision:?}");
                    black_box(decision)
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, decision, token_decision);
criterion_main!(benches);
