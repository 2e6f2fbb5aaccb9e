//! Rate limits and quotas shared by replicas through a real `redis-server` on 127.0.0.1: the
//! store's script against the in-process counters, several `tollbridge run` replicas under
//! concurrent load, restarts, a store that dies or stalls under load, TLS and passwords.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tollbridge_local::policy::{Policies, PolicyState};
use tollbridge_local::{CounterStore, CounterStoreSettings, FailureMode};
use tollbridge_provider::{
    ApiKeyIr, ApiKeySettingsIr, QuotaIr, QuotaPeriod, QuotaPolicyIr, RateLimitIr, SecretString,
};

use support::client::{Client, Resp};
use support::eventually;
use support::process::{free_port, ConfigDir, Tollbridge};
use support::redis::{Redis, RedisOptions};
use support::yaml::{self, docs};

const KEY: &str = "shared-key-0001";
const OTHER_KEY: &str = "shared-key-0002";
const RATE_KEY: &str = "shared-key-0003";

async fn echo() -> SocketAddr {
    tollbridge_local::echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), "echo")
        .await
        .expect("start echo backend")
}

fn store_settings(url: &str, failure_mode: FailureMode) -> CounterStoreSettings {
    CounterStoreSettings {
        url: url.to_owned(),
        password: None,
        ca_pem: None,
        // Generous: a stall of the machine must not turn into a fallback these tests count.
        timeout: Duration::from_secs(2),
        failure_mode,
        prefix: "tollbridge-test".to_owned(),
        lease_max: tollbridge_local::DEFAULT_LEASE_MAX,
    }
}

/// A store in closed mode connected to `redis`.
async fn connected(redis: &Redis) -> std::sync::Arc<CounterStore> {
    let store =
        CounterStore::start(store_settings(&redis.url(), FailureMode::Closed)).expect("store settings");
    eventually("the store to connect", Duration::from_secs(10), || {
        let up = store.is_up();
        async move { up }
    })
    .await;
    store
}

/// A required key in `x-api-key`, its consumer forwarded in `x-consumer`.
fn key_settings() -> ApiKeySettingsIr {
    ApiKeySettingsIr {
        required: true,
        header: Some("x-api-key".into()),
        query_param: None,
        consumer_header: "x-consumer".into(),
    }
}

fn key_ir(id: &str, value: &str) -> ApiKeyIr {
    ApiKeyIr {
        id: format!("shop/{id}"),
        consumer: id.to_owned(),
        sha256: hex::encode(Sha256::digest(value.as_bytes())),
        value: SecretString::new(value),
        disabled: false,
        expires_at: None,
    }
}

fn request(key: &str) -> http::request::Parts {
    http::Request::get("/x").header("x-api-key", key).body(()).expect("request").into_parts().0
}

/// The store's script and the in-process counters give the same answers, headers included, for
/// the same requests at the same instants: across a day's and a month's end, with a rate limit
/// that refuses, a quota that runs out, and a refused request that must count for neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_decides_exactly_as_the_local_counters_do() {
    let redis = Redis::start(RedisOptions::default());
    let store = connected(&redis).await;
    let settings = key_settings();
    let policy = |id: &str, rate, quota| QuotaPolicyIr {
        jwt: None,
        id: id.into(),
        api_key: Some(settings.clone()),
        rate_limit: rate,
        quota,
        keys: vec![key_ir(&format!("{}-a", id.replace('/', "-")), KEY), key_ir("b", OTHER_KEY)],
    };
    let policies = Policies::compile(&[
        policy(
            "shop/both",
            Some(RateLimitIr { requests: 5, period_seconds: 1, burst: 3 }),
            Some(QuotaIr { requests: 40, period: QuotaPeriod::Day }),
        ),
        policy("shop/rate", Some(RateLimitIr { requests: 20, period_seconds: 1, burst: 4 }), None),
        policy("shop/month", None, Some(QuotaIr { requests: 25, period: QuotaPeriod::Month })),
    ]);
    let local = PolicyState::new();
    let unused = PolicyState::new();
    // Whole microseconds (the store's unit), 0 to 399 ms apart, from 20 s before the end of this
    // month (the store expires buckets at the real time their periods end).
    let next_month = Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .first_of_month()
        .checked_add(jiff::ToSpan::month(1))
        .expect("next month")
        .to_zoned(jiff::tz::TimeZone::UTC)
        .expect("zoned")
        .timestamp();
    // Far enough ahead that the buckets outlive the test whatever the time now.
    let mut now = next_month.as_microsecond() - 20_000_000;
    if now < Timestamp::now().as_microsecond() + 120_000_000 {
        now += 40 * 86_400_000_000;
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let (mut allowed, mut refused) = (0, 0);
    for step in 0..600 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        now += i64::try_from((seed >> 33) % 400_000).expect("step");
        let at = Timestamp::from_microsecond(now).expect("instant");
        let policy_id = ["shop/both", "shop/rate", "shop/month"][step % 3];
        let key = if step % 7 == 0 { OTHER_KEY } else { KEY };
        let expected = policies.check(&local, policy_id, &mut request(key), at);
        let shared = policies.check_shared(&store, &unused, policy_id, &mut request(key), at).await;
        assert_eq!(shared, expected, "request {step} ({policy_id}) at {at}");
        if expected.is_allowed() {
            allowed += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        allowed > 100 && refused > 100,
        "the sequence should exercise both answers: {allowed} / {refused}"
    );
    assert_eq!(unused.bucket_count(), 0, "a reachable store must not fall back to local counters");
}

/// Two replicas, each with its own store client (so its own leases), deciding one busy key's
/// requests from 8 tasks at once against a quota of 3,000 a day and a rate limit far above the
/// load: most decisions come from leases, yet exactly the quota is admitted (every task goes on
/// until refused, so no lease is left over) and the store counted exactly what was admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_take_busy_keys_off_the_store_and_never_admit_past_the_quota() {
    const QUOTA: u64 = 3_000;
    let redis = Redis::start(RedisOptions::default());
    let replicas = [connected(&redis).await, connected(&redis).await];
    let policy = QuotaPolicyIr {
        jwt: None,
        id: "shop/busy".into(),
        api_key: Some(key_settings()),
        rate_limit: Some(RateLimitIr { requests: 1_000_000, period_seconds: 1, burst: 1_000_000 }),
        quota: Some(QuotaIr { requests: QUOTA, period: QuotaPeriod::Day }),
        keys: vec![key_ir("busy", KEY)],
    };
    let policies = std::sync::Arc::new(Policies::compile(&[policy]));
    let mut tasks = Vec::new();
    for store in &replicas {
        for _ in 0..4 {
            let (store, policies) = (store.clone(), policies.clone());
            tasks.push(tokio::spawn(async move {
                let unused = PolicyState::default();
                let (mut admitted, mut refused_in_a_row) = (0u64, 0);
                for _ in 0..(2 * QUOTA) {
                    let decision = policies
                        .check_shared(&store, &unused, "shop/busy", &mut request(KEY), Timestamp::now())
                        .await;
                    match decision {
                        tollbridge_local::policy::Decision::Allow { .. } => {
                            admitted += 1;
                            refused_in_a_row = 0;
                        }
                        tollbridge_local::policy::Decision::Deny { status, .. } => {
                            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "only the quota refuses");
                            refused_in_a_row += 1;
                            if refused_in_a_row == 5 {
                                break;
                            }
                        }
                    }
                }
                admitted
            }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.expect("task");
    }
    assert_eq!(admitted, QUOTA, "admitted across both replicas");
    let leased: u64 = replicas.iter().map(|store| store.leased_decisions()).sum();
    assert!(leased > QUOTA / 2, "only {leased} of {QUOTA} decisions came from leases");
    let bucket = format!("tollbridge-test:shop/busy:{}", hex::encode(Sha256::digest(KEY.as_bytes())));
    let counted = redis.cli(&["HGET", &bucket, "count"]);
    assert_eq!(counted.trim(), QUOTA.to_string(), "the store's count of {bucket}");
    eprintln!("leases: {leased} of {admitted} admitted requests decided without a call");
}

/// `shop/daily`: 3 requests a day for key `KEY`.
fn daily_quota_of_3() -> QuotaPolicyIr {
    QuotaPolicyIr {
        jwt: None,
        id: "shop/daily".into(),
        api_key: Some(key_settings()),
        rate_limit: None,
        quota: Some(QuotaIr { requests: 3, period: QuotaPeriod::Day }),
        keys: vec![key_ir("daily", KEY)],
    }
}

/// Replicas whose clocks differ: one still in the last second of a day while another is in the
/// next counts against the same bucket (no reset back and forth), and a replica whose clock is
/// behind the store's does not make its buckets expire before they are empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_skewed_clocks_neither_reset_nor_drop_buckets() {
    let redis = Redis::start(RedisOptions::default());
    let store = connected(&redis).await;
    let policies = Policies::compile(&[
        daily_quota_of_3(),
        QuotaPolicyIr {
            jwt: None,
            id: "shop/rate".into(),
            api_key: Some(key_settings()),
            rate_limit: Some(RateLimitIr { requests: 1, period_seconds: 10, burst: 1 }),
            quota: None,
            keys: vec![key_ir("rate", OTHER_KEY)],
        },
    ]);
    let unused = PolicyState::new();
    let at = |micros: i64| Timestamp::from_microsecond(micros).expect("instant");

    // Tomorrow's start, seen by a replica half a second ahead and one half a second behind.
    let day = 86_400_000_000_i64;
    let midnight = (Timestamp::now().as_microsecond() / day + 1) * day;
    let mut admitted = 0;
    for i in 0..8 {
        let now = if i % 2 == 0 { midnight + 500_000 } else { midnight - 500_000 };
        let decision = policies.check_shared(&store, &unused, "shop/daily", &mut request(KEY), at(now)).await;
        admitted += usize::from(decision.is_allowed());
    }
    assert_eq!(admitted, 3, "two clocks a second apart at midnight must share one count of 3");

    // A replica 3 s behind the store: its rate bucket (one request per 10 s) must still be there
    // for its next requests.
    let behind = Timestamp::now().as_microsecond() - 3_000_000;
    let answers: Vec<bool> = {
        let mut out = Vec::new();
        for i in 0..3 {
            let decision = policies
                .check_shared(&store, &unused, "shop/rate", &mut request(OTHER_KEY), at(behind + i))
                .await;
            out.push(decision.is_allowed());
        }
        out
    };
    assert_eq!(answers, [true, false, false], "the bucket expired early under a skewed clock");
}

/// Pooled connections the store closed while they sat idle (its client timeout, here a CLIENT
/// KILL) and a store that lost its scripts (SCRIPT FLUSH, as after a restart or failover) are
/// met by a new connection and a reloaded script: the decision is still the store's, and the
/// store is not marked down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_idle_connections_and_flushed_scripts_are_recovered_without_a_fallback() {
    let redis = Redis::start(RedisOptions::default());
    let store = connected(&redis).await;
    let policies = Policies::compile(&[daily_quota_of_3()]);
    let unused = PolicyState::new();
    let decide = || async {
        let decision =
            policies.check_shared(&store, &unused, "shop/daily", &mut request(KEY), Timestamp::now()).await;
        decision.is_allowed()
    };
    assert!(decide().await);
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    assert!(decide().await, "a decision after the store closed the pooled connections");
    redis.cli(&["SCRIPT", "FLUSH"]);
    assert!(decide().await, "a decision after the store lost its scripts");
    assert!(store.is_up(), "the store was marked down");
    // Three admitted in all (the quota), every one counted in the store.
    assert!(!decide().await, "the fourth request of a quota of 3 was admitted");
    assert_eq!(unused.bucket_count(), 0, "a reachable store must not fall back to local counters");
}

/// A store that refuses the script (an ACL without EVALSHA and SCRIPT) is a refusal, not an
/// outage: the store stays up, requests follow the failure mode, and the refused calls reuse
/// their connections instead of opening one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_the_script_stays_up_and_keeps_its_connections() {
    let redis = Redis::start(RedisOptions::default());
    redis.cli(&["ACL", "SETUSER", "limits", "on", ">limits-secret", "~*", "+@all", "-evalsha", "-script"]);
    let mut settings =
        store_settings(&redis.url().replace("redis://", "redis://limits@"), FailureMode::Closed);
    settings.password = Some("limits-secret".to_owned());
    let store = CounterStore::start(settings).expect("store settings");
    eventually("the store to connect", Duration::from_secs(10), || {
        let up = store.is_up();
        async move { up }
    })
    .await;
    let policies = Policies::compile(&[daily_quota_of_3()]);
    let unused = PolicyState::new();
    let connections = || -> u64 {
        redis
            .cli(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_connections_received")
    };
    let before = connections();
    for i in 0..50 {
        let decision =
            policies.check_shared(&store, &unused, "shop/daily", &mut request(KEY), Timestamp::now()).await;
        assert!(!decision.is_allowed(), "request {i} admitted although the store refused to decide");
    }
    assert!(store.is_up(), "a refusal marked the store down");
    // The second reading's own redis-cli is one of them.
    let opened = connections() - before;
    assert!(opened <= 3, "{opened} connections opened for 50 refused decisions");
}

/// The configuration of one replica: its own listener port, the same policies and keys as every
/// other replica. `/quota`: `quota` a month per key; `/rate`: 20 a second, bursts of 10.
fn replica_config(port: u16, backend: SocketAddr, quota: u64) -> ConfigDir {
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("echo", backend));
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("quota", None, &[], &yaml::prefix_rule("/quota", "echo")),
            yaml::route("rate", None, &[], &yaml::prefix_rule("/rate", "echo")),
        ]),
    );
    dir.write(
        "policies.yaml",
        &docs(&[
            yaml::quota_policy(
                "quota",
                "quota",
                &format!("  apiKey: {{required: true}}\n  quota: {{requests: {quota}, period: Month}}\n"),
            ),
            yaml::quota_policy(
                "rate",
                "rate",
                "  apiKey: {required: true}\n  rateLimit: {requests: 20, unit: Second, burst: 10}\n",
            ),
            yaml::api_key("quota-key", "quota", KEY, ""),
            yaml::api_key("quota-other", "quota", OTHER_KEY, ""),
            yaml::api_key("rate-key", "rate", RATE_KEY, ""),
        ]),
    );
    dir
}

struct Replicas {
    ports: Vec<u16>,
    dirs: Vec<ConfigDir>,
    processes: Vec<Tollbridge>,
}

impl Replicas {
    /// `n` replicas with a quota of 120 a month.
    async fn start(n: usize, backend: SocketAddr, extra: &[&str]) -> Self {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let dirs: Vec<ConfigDir> = ports.iter().map(|&port| replica_config(port, backend, 120)).collect();
        let mut replicas = Self { ports, dirs, processes: Vec::new() };
        replicas.restart(extra).await;
        replicas
    }

    /// Starts every replica (again), each waiting until its store connection is up.
    async fn restart(&mut self, extra: &[&str]) {
        self.processes.clear();
        for dir in &self.dirs {
            let process = Tollbridge::start(dir, extra).await;
            wait_store_up(&process, true).await;
            self.processes.push(process);
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i % self.ports.len()])
    }
}

/// The value of the `tollbridge_counter_store_up` gauge.
async fn store_up(process: &Tollbridge) -> Option<bool> {
    let metrics = process.admin_get("/metrics").await.text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("tollbridge_counter_store_up "))
        .map(|v| v.trim() == "1")
}

async fn wait_store_up(process: &Tollbridge, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while store_up(process).await != Some(up) {
        assert!(Instant::now() < deadline, "counter store up != {up} after 15 s; log:\n{}", process.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `clients` tasks, each sending `per_client` requests (or until `deadline`) with `key` to the
/// replicas in turn; every answer.
async fn load(
    replicas: &Replicas,
    path: &str,
    key: &'static str,
    clients: usize,
    per_client: usize,
    deadline: Duration,
) -> Vec<Resp> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let urls: Vec<String> = (0..3).map(|r| replicas.url(c + r, path)).collect();
            tokio::spawn(async move {
                let client = Client::new();
                let mut answers = Vec::new();
                for i in 0..per_client {
                    if started.elapsed() >= deadline {
                        break;
                    }
                    let resp = client.try_get(&urls[i % urls.len()], &[("x-api-key", key)]).await;
                    answers.push(resp.unwrap_or_else(|e| panic!("request {i} of client {c}: {e}")));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("client task"));
    }
    answers
}

fn count(answers: &[Resp], status: StatusCode) -> usize {
    answers.iter().filter(|r| r.status == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_admit_one_quota_and_one_rate_limit_and_keep_them_across_restarts() {
    let mut redis = Redis::start(RedisOptions::default());
    let backend = echo().await;
    // A timeout no stall of a loaded machine reaches: every decision here must be the store's.
    let store = ["--counter-store", &redis.url(), "--counter-store-timeout-ms", "2000"];
    let mut replicas = Replicas::start(3, backend, &store).await;

    // 30 clients, 300 requests spread over 3 replicas against a quota of 120: exactly 120 pass,
    // and the remaining counts they were told are 119 down to 0, each exactly once.
    let answers = load(&replicas, "/quota", KEY, 30, 10, Duration::from_secs(60)).await;
    assert_eq!(answers.len(), 300);
    assert_eq!(count(&answers, StatusCode::OK), 120, "admitted across the replicas");
    assert_eq!(count(&answers, StatusCode::TOO_MANY_REQUESTS), 180);
    let mut remaining: Vec<u64> = answers
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .map(|r| r.header("x-ratelimit-remaining").expect("remaining").parse().expect("number"))
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..120).collect::<Vec<u64>>(), "every remaining count told exactly once");
    let mut timed = 0;
    for process in &replicas.processes {
        let metrics = process.admin_get("/metrics").await.text();
        assert!(
            !metrics.contains("tollbridge_counter_store_fallbacks_total{"),
            "a decision fell back:\n{metrics}"
        );
        timed += metrics
            .lines()
            .find_map(|l| l.strip_prefix("tollbridge_counter_store_decision_duration_seconds_count "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no decision duration on /metrics:\n{metrics}"));
    }
    assert!(timed >= 300, "the store answered {timed} timed decisions of at least 300");

    // `tollbridge usage` reads the same counts from the store.
    let usage = usage_json(&replicas.dirs[0], &["--counter-store", &redis.url()]);
    let row =
        |key: &str| usage.iter().find(|u| u["apiKey"] == key).unwrap_or_else(|| panic!("{key} in {usage:?}"));
    assert_eq!(
        (row("default/quota-key")["used"].as_u64(), row("default/quota-key")["remaining"].as_u64()),
        (Some(120), Some(0))
    );
    assert_eq!(row("default/quota-other")["used"].as_u64(), Some(0));
    let seen: Timestamp =
        row("default/quota-key")["lastSeen"].as_str().expect("lastSeen").parse().expect("instant");
    assert!(seen.duration_until(Timestamp::now()).as_secs() < 60, "last seen {seen}");
    assert!(row("default/quota-other").get("lastSeen").is_none(), "a key never used has no last request");
    assert!(usage.iter().all(|u| u["policy"] == "default/quota"), "only policies with a quota: {usage:?}");

    // The rate limit: a burst of 10, then 20 a second, whichever replica answers.
    let started = Instant::now();
    let answers = load(&replicas, "/rate", RATE_KEY, 30, 1000, Duration::from_millis(1500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = count(&answers, StatusCode::OK) as f64;
    let other = answers.iter().find(|r| ![StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(&r.status));
    assert!(other.is_none(), "{:?}", other.map(|r| (r.status, r.text())));
    let most = 10.0 + 20.0 * elapsed + 1.0;
    // Stalls shorter than burst ÷ rate (0.5 s) lose no tokens; allow one that long.
    let least = 10.0 + 20.0 * (elapsed - 0.5);
    assert!(
        (least..=most).contains(&admitted),
        "{admitted} admitted in {elapsed:.2} s of {} requests; expected {least:.0}..={most:.0}",
        answers.len()
    );

    // Another key has used 5 of its 120 when every replica restarts: the month goes on.
    let client = Client::new();
    for i in 0..5 {
        let resp = client.get(&replicas.url(i, "/quota"), &[("x-api-key", OTHER_KEY)]).await;
        assert_eq!(resp.status, StatusCode::OK);
    }
    replicas.restart(&store).await;
    let resp = client.get(&replicas.url(1, "/quota"), &[("x-api-key", OTHER_KEY)]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("114"), "the count restarted with the replicas");
    let resp = client.get(&replicas.url(2, "/quota"), &[("x-api-key", KEY)]).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS, "the spent quota came back after a restart");
    let bucket =
        |key: &str| format!("tollbridge:default/quota:{}", hex::encode(Sha256::digest(key.as_bytes())));
    assert_eq!(
        redis.cli(&["EXISTS", &bucket(KEY), &bucket(OTHER_KEY)]),
        "2",
        "the quota buckets under the prefix"
    );

    // Replicas without traffic notice an outage by themselves (their health check), not only
    // at their next request.
    redis.kill();
    for process in &replicas.processes {
        wait_store_up(process, false).await;
    }
}

/// `tollbridge usage -f <dir's config> <extra> -o json`, parsed.
fn usage_json(dir: &ConfigDir, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(Tollbridge::binary())
        .arg("usage")
        .arg("-f")
        .arg(dir.config())
        .args(extra)
        .args(["-o", "json"])
        .output()
        .expect("run tollbridge usage");
    assert!(out.status.success(), "tollbridge usage: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("usage JSON")
}

/// Waits until the Gateway's `Degraded` condition on `/status` has `status`.
async fn wait_degraded(process: &Tollbridge, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let doc = process.status().await;
        let conditions = doc["gateways"]["default/gw"]["conditions"].as_array().cloned().unwrap_or_default();
        let degraded = conditions.iter().find(|c| c["type"] == "Degraded").cloned();
        if degraded.as_ref().is_some_and(|c| c["status"] == status) {
            let reason = if status == "True" { "CounterStoreUnavailable" } else { "CounterStoreAvailable" };
            assert_eq!(degraded.as_ref().map(|c| c["reason"].clone()), Some(reason.into()));
            return;
        }
        assert!(Instant::now() < deadline, "no Degraded={status} after 10 s: {degraded:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Through `tollbridge run` (the default lease size): a busy key's requests are mostly decided
/// from leases, the headers count down one by one as if each had asked the store (but around a
/// renewal that races the lease's end), the metric says how many were leased, and the store's
/// count runs ahead of the requests served by at most one lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_is_served_from_leases_with_the_headers_of_every_request() {
    let redis = Redis::start(RedisOptions::default());
    let backend = echo().await;
    let port = free_port();
    let dir = replica_config(port, backend, 1_000_000);
    let process = Tollbridge::start(&dir, &["--counter-store", &redis.url()]).await;
    wait_store_up(&process, true).await;
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/quota");
    let (mut previous, mut by_one) = (1_000_000u64, 0);
    for i in 0..400u64 {
        let resp = client.get(&url, &[("x-api-key", KEY)]).await;
        assert_eq!(resp.status, StatusCode::OK, "request {i}: {}", resp.text());
        let remaining: u64 =
            resp.header("x-ratelimit-remaining").expect("remaining").parse().expect("number");
        // What the replica knows: exact but for a renewal in flight when its lease ran out
        // (that request asks the store, which has counted the renewal already), never more
        // than a lease either way.
        let admitted = i + 1;
        assert!(
            (1_000_000 - admitted - 2 * 256..=1_000_000 - admitted + 256).contains(&remaining),
            "request {i}: {remaining} left"
        );
        by_one += u32::from(remaining + 1 == previous);
        previous = remaining;
    }
    assert!(by_one >= 360, "only {by_one} of 400 answers counted down by exactly one");
    let metrics = process.admin_get("/metrics").await.text();
    let leased: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollbridge_counter_store_leased_decisions_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no leased decisions metric:\n{metrics}"));
    assert!(leased >= 200, "only {leased} of 400 requests came from leases");
    let bucket = format!("tollbridge:default/quota:{}", hex::encode(Sha256::digest(KEY.as_bytes())));
    let counted: u64 = redis.cli(&["HGET", &bucket, "count"]).trim().parse().expect("count");
    assert!((400..=400 + 256).contains(&counted), "the store counted {counted} for 400 requests");
}

/// A request's answer and how long it took.
async fn timed(client: &Client, url: &str) -> (Resp, Duration) {
    let started = Instant::now();
    let resp = client.get(url, &[("x-api-key", KEY)]).await;
    (resp, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_dies_or_stalls_under_load_is_met_by_each_failure_mode() {
    let mut redis = Redis::start(RedisOptions::default());
    let backend = echo().await;
    let url = redis.url();
    let modes = ["local", "open", "closed"];
    let mut replicas = Replicas { ports: Vec::new(), dirs: Vec::new(), processes: Vec::new() };
    for mode in modes {
        let port = free_port();
        // A quota the load cannot spend, so every refusal here is the failure mode's.
        let dir = replica_config(port, backend, 1_000_000);
        let process = Tollbridge::start(
            &dir,
            &[
                "--counter-store",
                &url,
                "--counter-store-failure-mode",
                mode,
                "--counter-store-timeout-ms",
                "250",
                // Every request asks the store, so each one meets the failure mode (a lease's
                // requests were counted before the outage: tested on their own).
                "--counter-store-lease-max",
                "0",
            ],
        )
        .await;
        wait_store_up(&process, true).await;
        replicas.ports.push(port);
        replicas.dirs.push(dir);
        replicas.processes.push(process);
    }
    let client = Client::new();
    let quota = |i: usize| replicas.url(i, "/quota");
    for (i, remaining) in ["999999", "999998", "999997"].iter().enumerate() {
        let resp = client.get(&quota(i), &[("x-api-key", KEY)]).await;
        assert_eq!(resp.header("x-ratelimit-remaining"), Some(*remaining), "shared before the outage");
    }

    // Load on every replica while the store is killed, then started again (empty: it keeps
    // nothing on disk here). No request may fail or hang; each gets what its mode promises.
    let loaded = {
        let urls: Vec<String> = (0..3).map(quota).collect();
        tokio::spawn(async move {
            let client = Client::new();
            let started = Instant::now();
            let mut answers = Vec::new();
            while started.elapsed() < Duration::from_secs(4) {
                for (i, url) in urls.iter().enumerate() {
                    let (resp, took) = timed(&client, url).await;
                    answers.push((i, resp.status, took));
                }
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    for process in &replicas.processes {
        wait_store_up(process, false).await;
    }
    wait_degraded(&replicas.processes[2], "True").await;
    let status = replicas.processes[2].status().await;
    assert_eq!(status["counterStore"]["up"], false, "{status}");
    let (local, _) = timed(&client, &quota(0)).await;
    assert_eq!(local.status, StatusCode::OK, "local mode counts on: {}", local.text());
    assert!(local.header("x-ratelimit-remaining").is_some(), "local mode still counts and tells");
    let (open, _) = timed(&client, &quota(1)).await;
    assert_eq!(open.status, StatusCode::OK);
    assert_eq!(open.header("x-ratelimit-remaining"), None, "open mode lets requests through uncounted");
    let (closed, _) = timed(&client, &quota(2)).await;
    assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(closed.json()["error"], "limits_unavailable");
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.start_again();
    for process in &replicas.processes {
        wait_store_up(process, true).await;
    }
    wait_degraded(&replicas.processes[2], "False").await;
    let answers = loaded.await.expect("load task");
    assert!(answers.len() > 30, "only {} requests under load", answers.len());
    for (i, status, took) in &answers {
        let expected: &[StatusCode] = match i {
            2 => &[StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE],
            _ => &[StatusCode::OK],
        };
        assert!(expected.contains(status), "{} mode answered {status}", modes[*i]);
        assert!(*took < Duration::from_secs(1), "{} mode took {took:?}", modes[*i]);
    }
    assert!(answers.iter().any(|(i, s, _)| *i == 2 && *s == StatusCode::SERVICE_UNAVAILABLE));

    // Back: the new (empty) store counts again, shared (a key the load did not use).
    for (i, remaining) in ["999999", "999998", "999997"].iter().enumerate() {
        let resp = client.get(&quota(i), &[("x-api-key", OTHER_KEY)]).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.header("x-ratelimit-remaining"), Some(*remaining), "shared after the outage");
    }

    // A store that stalls (a blocked server) costs each request the timeout, not more.
    let stall = {
        let port = redis.port.to_string();
        std::thread::spawn(move || {
            std::process::Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port, "DEBUG", "SLEEP", "2"])
                .output()
                .expect("redis-cli DEBUG SLEEP")
        })
    };
    // Until the stall has begun, requests still pass; then each costs the timeout, not more.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let (closed, took) = loop {
        let (resp, took) = timed(&client, &quota(2)).await;
        if resp.status != StatusCode::OK || Instant::now() > deadline {
            break (resp, took);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE, "a stalled store in closed mode");
    assert!(took < Duration::from_millis(1000), "the stalled store held a request for {took:?}");
    for i in [0, 1] {
        let (resp, took) = timed(&client, &quota(i)).await;
        assert_eq!(resp.status, StatusCode::OK, "a stalled store in {} mode", modes[i]);
        assert!(took < Duration::from_millis(1000), "the stalled store held a request for {took:?}");
    }
    stall.join().expect("stall thread");
    for process in &replicas.processes {
        wait_store_up(process, true).await;
    }
    assert_eq!(client.get(&quota(2), &[("x-api-key", KEY)]).await.status, StatusCode::OK);

    let metrics = replicas.processes[2].admin_get("/metrics").await.text();
    assert!(
        metrics.lines().any(|l| l.contains(r#"outcome="limits_unavailable""#) && !l.ends_with(" 0")),
        "the consumer's refusals while the store was away are not counted:\n{metrics}"
    );
    for (process, mode) in replicas.processes.iter_mut().zip(modes) {
        assert!(process.is_running(), "{mode} replica exited");
        let log = process.log();
        let outages = log.matches("counter store unavailable").count();
        assert!((2..=3).contains(&outages), "{mode}: one line per outage (a kill and a stall):\n{log}");
        assert!(log.matches("counter store connected").count() >= 3, "{mode}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_password_guard_the_store_and_stay_out_of_logs() {
    const PASSWORD: &str = "store-password-5b8e1d";
    let (redis, cert) = Redis::start_tls(Some(PASSWORD));
    let backend = echo().await;
    let ca = redis.dir().join("ca.pem");
    std::fs::write(&ca, &cert.cert_pem).expect("write CA");
    let ca = ca.display().to_string();
    let password_file = redis.password_file().display().to_string();
    let url = redis.url();
    let extra =
        ["--counter-store", &url, "--counter-store-ca", &ca, "--counter-store-password-file", &password_file];
    let replicas = Replicas::start(2, backend, &extra).await;
    let client = Client::new();
    for (i, remaining) in ["119", "118", "117", "116"].iter().enumerate() {
        let resp = client.get(&replicas.url(i, "/quota"), &[("x-api-key", KEY)]).await;
        assert_eq!(resp.header("x-ratelimit-remaining"), Some(*remaining), "replica {}", i % 2);
    }

    // A wrong password: the store is down (and says why), the failure mode serves, and neither
    // password is written anywhere.
    let wrong = redis.dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password-77c1\n").expect("write wrong password");
    let wrong = wrong.display().to_string();
    let refused_dir = replica_config(free_port(), backend, 120);
    let refused = Tollbridge::start(
        &refused_dir,
        &["--counter-store", &url, "--counter-store-ca", &ca, "--counter-store-password-file", &wrong],
    )
    .await;
    eventually("the refused connection to be logged", Duration::from_secs(10), || {
        let logged = refused.log().contains("cannot connect to the counter store");
        async move { logged }
    })
    .await;
    assert_eq!(store_up(&refused).await, Some(false));
    let log = refused.log();
    assert!(log.to_lowercase().contains("auth") || log.contains("WRONGPASS"), "no reason given:\n{log}");
    for process in replicas.processes.iter().chain([&refused]) {
        let text = process.log() + &process.admin_get("/metrics").await.text();
        assert!(!text.contains(PASSWORD) && !text.contains("not-the-password"), "a password leaked:\n{text}");
    }

    // Without the CA the server's certificate is not trusted; a password in the URL is refused
    // before anything starts, without repeating it.
    let dir = replica_config(free_port(), backend, 120);
    let untrusted =
        Tollbridge::start(&dir, &["--counter-store", &url, "--counter-store-password-file", &password_file])
            .await;
    eventually("the untrusted certificate to be logged", Duration::from_secs(10), || {
        let logged = untrusted.log().contains("cannot connect to the counter store");
        async move { logged }
    })
    .await;
    drop(untrusted);
    let in_url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let mut exits = Tollbridge::spawn(&dir, &["--counter-store", &in_url]);
    let status = exits.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success());
    let log = exits.log();
    assert!(log.contains("password in the URL") && !log.contains(PASSWORD), "{log}");
}
