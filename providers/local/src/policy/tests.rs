//! Behaviour of [`Policies::check`] on whole requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use sha2::{Digest, Sha256};
use tollbridge_provider::{ApiKeyIr, ApiKeySettingsIr, QuotaIr, QuotaPeriod, RateLimitIr, SecretString};

use super::*;
use crate::http1::GatewayHeaders;

const GOLD: &str = "shop/gold";
const SILVER: &str = "shop/silver";
const ACME_KEY: &str = "acme-plain-key-0123456789";
const BETA_KEY: &str = "beta-plain-key-9876543210";
const OLD_KEY: &str = "old-plain-key-disabled";
const LATE_KEY: &str = "late-plain-key-expiring";
const SILVER_KEY: &str = "silver-plain-key-abcdef";
const CONSUMER: &str = "x-tollbridge-consumer";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn noon() -> Timestamp {
    at("2024-03-06T12:00:00Z")
}

fn api_key(id: &str, consumer: &str, value: &str) -> ApiKeyIr {
    ApiKeyIr {
        id: format!("shop/{id}"),
        consumer: consumer.into(),
        sha256: hex::encode(Sha256::digest(value.as_bytes())),
        value: SecretString::new(value),
        disabled: false,
        expires_at: None,
    }
}

fn settings(required: bool, header: Option<&str>, query: Option<&str>) -> ApiKeySettingsIr {
    ApiKeySettingsIr {
        required,
        header: header.map(str::to_owned),
        query_param: query.map(str::to_owned),
        consumer_header: CONSUMER.into(),
    }
}

/// `gold`: header or query key, all kinds of keys; `silver`: header key, one key.
fn gateway(rate: Option<RateLimitIr>, quota: Option<QuotaIr>) -> Vec<QuotaPolicyIr> {
    let mut old = api_key("old", "old-corp", OLD_KEY);
    old.disabled = true;
    let mut late = api_key("late", "late-corp", LATE_KEY);
    late.expires_at = Some(noon().as_second());
    vec![
        QuotaPolicyIr {
            jwt: None,
            id: GOLD.into(),
            api_key: Some(settings(true, Some("x-api-key"), Some("api_key"))),
            rate_limit: rate,
            quota,
            keys: vec![api_key("acme", "acme", ACME_KEY), api_key("beta", "beta", BETA_KEY), old, late],
        },
        QuotaPolicyIr {
            jwt: None,
            id: SILVER.into(),
            api_key: Some(settings(true, Some("x-api-key"), None)),
            rate_limit: None,
            quota: None,
            keys: vec![api_key("silver", "silver-corp", SILVER_KEY)],
        },
    ]
}

fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

fn with_key(key: &str) -> http::request::Parts {
    request("/orders", &[("x-api-key", key)])
}

/// The status code of a decision (200 for Allow).
fn code(decision: &Decision) -> u16 {
    match decision {
        Decision::Allow { .. } => 200,
        Decision::Deny { status, .. } => status.as_u16(),
    }
}

fn header(decision: &Decision, name: &str) -> Option<String> {
    let mut set = HeaderMap::new();
    let headers = match decision {
        Decision::Allow { response_headers } => {
            response_headers.set_on(&mut set);
            &set
        }
        Decision::Deny { headers, .. } => headers,
    };
    headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn body_json(decision: &Decision) -> serde_json::Value {
    let Decision::Deny { body, .. } = decision else { panic!("allowed: {decision:?}") };
    serde_json::from_str(body).unwrap()
}

struct Harness {
    policies: Policies,
    state: PolicyState,
}

impl Harness {
    fn new(rate: Option<RateLimitIr>, quota: Option<QuotaIr>) -> Self {
        Self { policies: Policies::compile(&gateway(rate, quota)), state: PolicyState::new() }
    }

    fn check(&self, policy: &str, req: &mut http::request::Parts, now: Timestamp) -> Decision {
        self.policies.check(&self.state, policy, req, now)
    }

    /// Sends `count` requests with `key` to gold at `now`; returns the status codes.
    fn burst(&self, key: &str, count: usize, now: Timestamp) -> Vec<u16> {
        (0..count).map(|_| code(&self.check(GOLD, &mut with_key(key), now))).collect()
    }
}

fn rate(requests: u32, period_seconds: u64, burst: u32) -> Option<RateLimitIr> {
    Some(RateLimitIr { requests, period_seconds, burst })
}

fn quota(requests: u64, period: QuotaPeriod) -> Option<QuotaIr> {
    Some(QuotaIr { requests, period })
}

#[test]
fn header_key_is_accepted_stripped_and_consumer_forwarded() {
    let h = Harness::new(None, None);
    let mut req = request("/orders?x=1", &[("x-api-key", ACME_KEY), ("accept", "text/plain")]);
    let decision = h.check(GOLD, &mut req, noon());
    assert_eq!(decision, Decision::Allow { response_headers: LimitHeaders::new() }, "no limits, no headers");
    assert!(req.headers.get("x-api-key").is_none());
    assert_eq!(req.headers[CONSUMER], "acme");
    assert_eq!(req.headers["accept"], "text/plain");
    assert_eq!(req.uri, "/orders?x=1");
    assert_eq!(h.state.bucket_count(), 0, "no limits, no buckets");
}

#[test]
fn query_key_is_accepted_and_only_it_is_stripped() {
    let h = Harness::new(None, None);
    let mut req = request(&format!("/orders?b=%2F2&api_key={ACME_KEY}&a=x+y&z"), &[]);
    assert_eq!(code(&h.check(GOLD, &mut req, noon())), 200);
    assert_eq!(req.uri, "/orders?b=%2F2&a=x+y&z");
    assert_eq!(req.headers[CONSUMER], "acme");

    let mut only = request(&format!("/orders?api_key={ACME_KEY}"), &[]);
    assert_eq!(code(&h.check(GOLD, &mut only, noon())), 200);
    assert_eq!(only.uri, "/orders");

    // Silver reads the header only: a key in its query string is not looked at, nor removed.
    let mut silver = request(&format!("/s?api_key={SILVER_KEY}"), &[]);
    assert_eq!(code(&h.check(SILVER, &mut silver, noon())), 401);
}

#[test]
fn header_wins_over_query_and_both_are_stripped() {
    let h = Harness::new(None, None);
    // The query holds silver's key, the header gold's: the header decides.
    let mut req = request(&format!("/orders?api_key={SILVER_KEY}&keep=1"), &[("x-api-key", ACME_KEY)]);
    assert_eq!(code(&h.check(GOLD, &mut req, noon())), 200);
    assert_eq!(req.uri, "/orders?keep=1");
    assert!(req.headers.get("x-api-key").is_none());
    // And the other way round the header's key of another policy is refused.
    let mut req = request(&format!("/orders?api_key={ACME_KEY}"), &[("x-api-key", SILVER_KEY)]);
    assert_eq!(code(&h.check(GOLD, &mut req, noon())), 403);
}

#[test]
fn consumer_header_cannot_be_spoofed() {
    let h = Harness::new(None, None);
    let mut req = request("/orders", &[("x-api-key", BETA_KEY), (CONSUMER, "acme"), (CONSUMER, "admin")]);
    assert_eq!(code(&h.check(GOLD, &mut req, noon())), 200);
    let values: Vec<_> = req.headers.get_all(CONSUMER).iter().collect();
    assert_eq!(values, ["beta"]);

    // Anonymous callers get no consumer at all.
    let policies = Policies::compile(&[QuotaPolicyIr {
        jwt: None,
        id: "shop/open".into(),
        api_key: Some(settings(false, Some("x-api-key"), None)),
        rate_limit: None,
        quota: None,
        keys: vec![],
    }]);
    let mut req = request("/", &[(CONSUMER, "acme")]);
    assert_eq!(code(&policies.check(&h.state, "shop/open", &mut req, noon())), 200);
    assert!(req.headers.get(CONSUMER).is_none());
}

#[test]
fn refusals_with_401() {
    let h = Harness::new(None, None);
    let cases = [
        (request("/orders", &[]), "missing_api_key", "header x-api-key or query parameter api_key"),
        (request("/orders?api_key=", &[("x-api-key", "")]), "missing_api_key", "is required"),
        (with_key("no-such-key"), "invalid_api_key", "not valid"),
        (with_key(OLD_KEY), "invalid_api_key", "disabled"),
        (with_key(LATE_KEY), "invalid_api_key", "expired"),
    ];
    for (mut req, error, message) in cases {
        let decision = h.check(GOLD, &mut req, noon());
        assert_eq!(code(&decision), 401, "{error} {message}");
        assert_eq!(
            header(&decision, WWW_AUTHENTICATE.as_str()).as_deref(),
            Some("ApiKey realm=\"tollbridge\"")
        );
        assert_eq!(header(&decision, "content-type").as_deref(), Some("application/json"));
        let json = body_json(&decision);
        assert_eq!(json["error"], error);
        assert!(json["message"].as_str().unwrap().contains(message), "{json}");
    }
    // The expiring key works until its instant.
    let before = noon().checked_sub(jiff::SignedDuration::from_secs(1)).unwrap();
    assert_eq!(code(&h.check(GOLD, &mut with_key(LATE_KEY), before)), 200);
}

#[test]
fn key_of_another_policy_is_403() {
    let h = Harness::new(None, None);
    let decision = h.check(SILVER, &mut with_key(ACME_KEY), noon());
    assert_eq!(code(&decision), 403);
    assert_eq!(body_json(&decision)["error"], "forbidden");
    assert_eq!(header(&decision, "www-authenticate").as_deref(), None);
    // A disabled key of gold is still recognised as gold's.
    assert_eq!(code(&h.check(SILVER, &mut with_key(OLD_KEY), noon())), 403);
    assert_eq!(code(&h.check(SILVER, &mut with_key(SILVER_KEY), noon())), 200);
}

#[test]
fn optional_keys_allow_anonymous_callers_counted_together() {
    let policies = Policies::compile(&[QuotaPolicyIr {
        jwt: None,
        id: "shop/open".into(),
        api_key: Some(settings(false, Some("x-api-key"), None)),
        rate_limit: rate(1, 60, 2),
        quota: None,
        keys: vec![api_key("acme", "acme", ACME_KEY)],
    }]);
    let state = PolicyState::new();
    let send = |req: &mut http::request::Parts| code(&policies.check(&state, "shop/open", req, noon()));
    assert_eq!(
        [send(&mut request("/", &[])), send(&mut request("/", &[])), send(&mut request("/", &[]))],
        [200, 200, 429]
    );
    // A known key has its own bucket and is still forwarded as a consumer.
    let mut req = with_key(ACME_KEY);
    assert_eq!(send(&mut req), 200);
    assert_eq!(req.headers[CONSUMER], "acme");
    // A wrong key is refused even though a key is optional, and makes no bucket.
    assert_eq!(send(&mut with_key("guess")), 401);
    assert_eq!(state.bucket_count(), 2);
}

#[test]
fn policy_without_key_settings_counts_everyone_together() {
    let policies = Policies::compile(&[QuotaPolicyIr {
        jwt: None,
        id: "shop/public".into(),
        api_key: None,
        rate_limit: None,
        quota: quota(2, QuotaPeriod::Day),
        keys: vec![],
    }]);
    let state = PolicyState::new();
    let mut req = request("/?api_key=whatever", &[("x-api-key", "k"), (CONSUMER, "c")]);
    assert_eq!(code(&policies.check(&state, "shop/public", &mut req, noon())), 200);
    assert_eq!(req.uri, "/?api_key=whatever", "nothing is stripped without key settings");
    assert_eq!(req.headers[CONSUMER], "c");
    assert_eq!(code(&policies.check(&state, "shop/public", &mut request("/", &[]), noon())), 200);
    assert_eq!(code(&policies.check(&state, "shop/public", &mut request("/", &[]), noon())), 429);
}

#[test]
fn unknown_policy_fails_closed() {
    let h = Harness::new(None, None);
    let decision = h.check("shop/none", &mut with_key(ACME_KEY), noon());
    assert_eq!(code(&decision), 500);
    assert_eq!(body_json(&decision)["error"], "policy_unavailable");
    assert!(h.policies.contains(GOLD) && !h.policies.contains("shop/none"));
}

#[test]
fn gcra_burst_then_steady_rate() {
    // 2 per second, bursts of 4.
    let h = Harness::new(rate(2, 1, 4), None);
    let t0 = noon();
    assert_eq!(h.burst(ACME_KEY, 6, t0), [200, 200, 200, 200, 429, 429]);
    // Keys have separate buckets.
    assert_eq!(h.burst(BETA_KEY, 5, t0), [200, 200, 200, 200, 429]);
    // Then one request every 250 ms: every other one fits.
    let steady: Vec<u16> = (1..=8)
        .map(|i| {
            let now = t0.checked_add(jiff::SignedDuration::from_millis(250 * i)).unwrap();
            code(&h.check(GOLD, &mut with_key(ACME_KEY), now))
        })
        .collect();
    assert_eq!(steady, [429, 200, 429, 200, 429, 200, 429, 200]);
}

#[test]
fn rate_headers_and_retry_after() {
    let h = Harness::new(rate(10, 1, 10), None);
    let first = h.check(GOLD, &mut with_key(ACME_KEY), noon());
    assert_eq!(header(&first, "ratelimit-policy").as_deref(), Some("\"rate\";q=10;w=1"));
    assert_eq!(header(&first, "ratelimit").as_deref(), Some("\"rate\";r=9;t=1"));
    assert_eq!(header(&first, "x-ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(header(&first, "x-ratelimit-remaining").as_deref(), Some("9"));
    assert_eq!(header(&first, "x-ratelimit-reset").as_deref(), Some("1"));
    assert_eq!(header(&first, "retry-after").as_deref(), None);
    h.burst(ACME_KEY, 9, noon());
    let refused = h.check(GOLD, &mut with_key(ACME_KEY), noon());
    assert_eq!(code(&refused), 429);
    assert_eq!(header(&refused, RETRY_AFTER.as_str()).as_deref(), Some("1"), "100 ms rounds up to 1 s");
    assert_eq!(header(&refused, "ratelimit").as_deref(), Some("\"rate\";r=0;t=1"));
    assert_eq!(header(&refused, "x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(body_json(&refused)["error"], "rate_limited");

    // A slow rate: one per hour; the second request waits the rest of the hour.
    let h = Harness::new(rate(1, 3600, 1), None);
    assert_eq!(h.burst(ACME_KEY, 1, noon()), [200]);
    let later = noon().checked_add(jiff::SignedDuration::from_secs(600)).unwrap();
    let refused = h.check(GOLD, &mut with_key(ACME_KEY), later);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("3000"));
    assert_eq!(header(&refused, "ratelimit-policy").as_deref(), Some("\"rate\";q=1;w=3600"));
}

#[test]
fn burst_above_rate_is_advertised_as_a_bucket() {
    let h = Harness::new(rate(10, 1, 20), None);
    let first = h.check(GOLD, &mut with_key(ACME_KEY), noon());
    assert_eq!(header(&first, "ratelimit-policy").as_deref(), Some("\"rate\";q=20;w=2"));
    assert_eq!(header(&first, "ratelimit").as_deref(), Some("\"rate\";r=19;t=1"));
}

#[test]
fn quota_exhaustion_and_daily_reset() {
    let h = Harness::new(None, quota(3, QuotaPeriod::Day));
    let before = at("2024-03-06T23:59:59Z");
    assert_eq!(h.burst(ACME_KEY, 4, before), [200, 200, 200, 429]);
    let refused = h.check(GOLD, &mut with_key(ACME_KEY), before);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    assert_eq!(header(&refused, "ratelimit-policy").as_deref(), Some("\"quota\";q=3;w=86400"));
    assert_eq!(header(&refused, "ratelimit").as_deref(), Some("\"quota\";r=0;t=1"));
    assert_eq!(body_json(&refused)["error"], "quota_exceeded");
    let early = at("2024-03-06T00:00:01.5Z");
    let h2 = Harness::new(None, quota(1, QuotaPeriod::Day));
    h2.burst(ACME_KEY, 1, early);
    let refused = h2.check(GOLD, &mut with_key(ACME_KEY), early);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("86399"), "rounded up from 86398.5 s");

    let midnight = at("2024-03-07T00:00:00Z");
    let first = h.check(GOLD, &mut with_key(ACME_KEY), midnight);
    assert_eq!(code(&first), 200);
    assert_eq!(header(&first, "ratelimit").as_deref(), Some("\"quota\";r=2;t=86400"));
    assert_eq!(h.burst(ACME_KEY, 3, midnight), [200, 200, 429]);
}

#[test]
fn quota_resets_on_monday_for_weeks() {
    let h = Harness::new(None, quota(2, QuotaPeriod::Week));
    // 2024-03-04 is a Monday; 2024-03-10 a Sunday.
    assert_eq!(h.burst(ACME_KEY, 1, at("2024-03-04T00:00:00Z")), [200]);
    let sunday = at("2024-03-10T23:59:59Z");
    assert_eq!(h.burst(ACME_KEY, 2, sunday), [200, 429]);
    let refused = h.check(GOLD, &mut with_key(ACME_KEY), sunday);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    assert_eq!(header(&refused, "ratelimit-policy").as_deref(), Some("\"quota\";q=2;w=604800"));
    assert_eq!(h.burst(ACME_KEY, 3, at("2024-03-11T00:00:00Z")), [200, 200, 429]);
}

#[test]
fn quota_resets_on_the_first_for_months() {
    let h = Harness::new(None, quota(2, QuotaPeriod::Month));
    assert_eq!(h.burst(ACME_KEY, 1, at("2024-01-01T00:00:00Z")), [200]);
    let last = at("2024-01-31T23:59:59Z");
    assert_eq!(h.burst(ACME_KEY, 2, last), [200, 429]);
    let refused = h.check(GOLD, &mut with_key(ACME_KEY), last);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("1"));
    assert_eq!(header(&refused, "ratelimit-policy").as_deref(), Some("\"quota\";q=2;w=2678400"));
    let february = at("2024-02-01T00:00:00Z");
    let first = h.check(GOLD, &mut with_key(ACME_KEY), february);
    assert_eq!(header(&first, "ratelimit-policy").as_deref(), Some("\"quota\";q=2;w=2505600"), "29 days");
    assert_eq!(header(&first, "ratelimit").as_deref(), Some("\"quota\";r=1;t=2505600"));
    assert_eq!(h.burst(ACME_KEY, 2, february), [200, 429]);
}

#[test]
fn rate_and_quota_together() {
    let h = Harness::new(rate(1, 1, 2), quota(3, QuotaPeriod::Day));
    let t0 = noon();
    let first = h.check(GOLD, &mut with_key(ACME_KEY), t0);
    assert_eq!(
        header(&first, "ratelimit-policy").as_deref(),
        Some("\"rate\";q=2;w=2, \"quota\";q=3;w=86400")
    );
    assert_eq!(header(&first, "ratelimit").as_deref(), Some("\"rate\";r=1;t=1, \"quota\";r=2;t=43200"));
    // Tightest: rate with 1 left.
    assert_eq!(header(&first, "x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header(&first, "x-ratelimit-remaining").as_deref(), Some("1"));

    // Refused by rate: the quota is not used.
    assert_eq!(h.burst(ACME_KEY, 3, t0), [200, 429, 429]);
    let refused = h.check(GOLD, &mut with_key(ACME_KEY), t0);
    assert_eq!(body_json(&refused)["error"], "rate_limited");
    assert_eq!(header(&refused, "ratelimit").as_deref(), Some("\"rate\";r=0;t=2, \"quota\";r=1;t=43200"));
    assert_eq!(header(&refused, "x-ratelimit-limit").as_deref(), Some("2"), "the refusing limit is reported");

    // One more fits the quota after a second...
    let t1 = t0.checked_add(jiff::SignedDuration::from_secs(1)).unwrap();
    assert_eq!(h.burst(ACME_KEY, 1, t1), [200]);
    // ...then the quota refuses and takes no rate token: after the rate bucket refills fully the
    // rate header still shows the full burst.
    let t5 = t0.checked_add(jiff::SignedDuration::from_secs(5)).unwrap();
    for _ in 0..5 {
        let refused = h.check(GOLD, &mut with_key(ACME_KEY), t5);
        assert_eq!(body_json(&refused)["error"], "quota_exceeded");
        assert_eq!(header(&refused, "ratelimit").as_deref(), Some("\"rate\";r=2;t=0, \"quota\";r=0;t=43195"));
        assert_eq!(header(&refused, "retry-after").as_deref(), Some("43195"));
        assert_eq!(header(&refused, "x-ratelimit-limit").as_deref(), Some("3"));
    }
}

#[test]
fn reload_keeps_counters_even_when_limits_change() {
    let state = PolicyState::new();
    let v1 = Policies::compile(&gateway(rate(5, 60, 5), quota(10, QuotaPeriod::Day)));
    for _ in 0..4 {
        assert_eq!(code(&v1.check(&state, GOLD, &mut with_key(ACME_KEY), noon())), 200);
    }
    // Same config rebuilt: the fifth request is the last of the burst, the quota shows 5 used.
    let v2 = Policies::compile(&gateway(rate(5, 60, 5), quota(10, QuotaPeriod::Day)));
    let fifth = v2.check(&state, GOLD, &mut with_key(ACME_KEY), noon());
    assert_eq!(header(&fifth, "ratelimit").as_deref(), Some("\"rate\";r=0;t=60, \"quota\";r=5;t=43200"));
    assert_eq!(code(&v2.check(&state, GOLD, &mut with_key(ACME_KEY), noon())), 429);
    // New limits: the quota count in this window carries over.
    let v3 = Policies::compile(&gateway(None, quota(6, QuotaPeriod::Day)));
    assert_eq!(code(&v3.check(&state, GOLD, &mut with_key(ACME_KEY), noon())), 200);
    assert_eq!(code(&v3.check(&state, GOLD, &mut with_key(ACME_KEY), noon())), 429);
    // A key added by a reload works at once; a removed key is refused at once.
    let mut policies = gateway(None, quota(6, QuotaPeriod::Day));
    policies[0].keys.retain(|k| k.consumer != "beta");
    policies[0].keys.push(api_key("gamma", "gamma", "gamma-plain-key"));
    let v4 = Policies::compile(&policies);
    assert_eq!(code(&v4.check(&state, GOLD, &mut with_key("gamma-plain-key"), noon())), 200);
    assert_eq!(code(&v4.check(&state, GOLD, &mut with_key(BETA_KEY), noon())), 401);
}

#[test]
fn quota_survives_a_restart_through_the_state_dir() {
    let dir = std::env::temp_dir().join(format!("tollbridge-policy-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let h = Harness::new(rate(1, 60, 1), quota(2, QuotaPeriod::Day));
    assert_eq!(h.burst(ACME_KEY, 1, noon()), [200]);
    h.state.save(&dir).unwrap();

    let restarted = PolicyState::load(&dir).unwrap();
    let policies = Policies::compile(&gateway(rate(1, 60, 1), quota(2, QuotaPeriod::Day)));
    // The rate bucket starts full again; the quota remembers the first request.
    let decision = policies.check(&restarted, GOLD, &mut with_key(ACME_KEY), noon());
    assert_eq!(header(&decision, "ratelimit").as_deref(), Some("\"rate\";r=0;t=60, \"quota\";r=0;t=43200"));
    let later = noon().checked_add(jiff::SignedDuration::from_secs(120)).unwrap();
    assert_eq!(
        body_json(&policies.check(&restarted, GOLD, &mut with_key(ACME_KEY), later))["error"],
        "quota_exceeded"
    );

    let saved = std::fs::read_to_string(dir.join(COUNTERS_FILE)).unwrap();
    assert!(!saved.contains(ACME_KEY), "{saved}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plain_keys_never_show_in_debug_output() {
    let h = Harness::new(rate(5, 1, 5), quota(5, QuotaPeriod::Day));
    for key in [ACME_KEY, BETA_KEY, OLD_KEY, LATE_KEY, SILVER_KEY] {
        h.check(GOLD, &mut with_key(key), noon());
    }
    let shown = format!("{:?} {:?} {:#?}", h.policies, h.state, h.policies);
    for key in [ACME_KEY, BETA_KEY, OLD_KEY, LATE_KEY, SILVER_KEY] {
        assert!(!shown.contains(key), "{key} in {shown}");
        // Nor the full digest: only the 8-digit key id.
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        assert!(!shown.contains(&digest) && shown.contains(&digest[..8]), "{shown}");
    }
}

#[test]
fn unknown_keys_never_create_buckets() {
    let h = Harness::new(rate(1, 1, 1), quota(1, QuotaPeriod::Day));
    for i in 0..1000 {
        assert_eq!(code(&h.check(GOLD, &mut with_key(&format!("guess-{i}")), noon())), 401);
    }
    assert_eq!(h.state.bucket_count(), 0);
}

#[test]
fn concurrent_requests_get_exactly_the_burst() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 500;
    const BURST: u32 = 37;
    let h = Arc::new(Harness::new(rate(1, 3600, BURST), quota(1_000_000, QuotaPeriod::Day)));
    let allowed = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (h, allowed) = (h.clone(), allowed.clone());
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    if h.check(GOLD, &mut with_key(ACME_KEY), noon()).is_allowed() {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(allowed.load(Ordering::Relaxed), BURST as usize);
    // And the quota counted exactly the allowed ones.
    let next = h.check(GOLD, &mut with_key(ACME_KEY), noon());
    assert_eq!(
        header(&next, "ratelimit").as_deref(),
        Some("\"rate\";r=0;t=133200, \"quota\";r=999963;t=43200")
    );
}
