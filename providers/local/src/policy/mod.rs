//! API keys, rate limits and quotas: the per-request decision of the data plane.
//!
//! [`Policies`] is compiled from the QuotaPolicies of one Gateway on every reload; the counters
//! live in a [`PolicyState`] that outlives reloads, keyed by (policy id, key hash), so a reload
//! (even one that changes the limits) keeps them.
//!
//! A request guarded by a policy goes through three steps:
//! 1. Identify: find the key (header first, then query parameter), hash it, look the hash up among
//!    the keys of all policies of the Gateway. Missing, unknown, disabled or expired → 401; a key
//!    of another policy → 403. No key on a policy that does not require one → anonymous. A policy
//!    with `jwt` checks the bearer token instead ([`jwt`]): its consumer claim is the subject.
//! 2. Limit: rate (GCRA) first, then quota, in one critical section on the bucket of
//!    (policy, key or anonymous). A request refused by the rate limit does not count against the
//!    quota, and a request refused by the quota does not take a rate token.
//! 3. Rewrite: remove the key header and query parameter, set the consumer header (after removing
//!    whatever the client sent in it).
//!
//! Plain keys are never stored: only their SHA-256 is, and Debug output shows key ids only.

mod headers;
mod jwt;
mod key_sets;
mod keys;
pub(crate) mod lease;
mod quota;
mod rate;
mod shared;
mod state;
mod usage;

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tollbridge_provider::QuotaPolicyIr;

pub use self::headers::{LimitHeaders, LimitStatus};
use self::jwt::{TokenCheck, TokenConsumer};
pub use self::key_sets::count_fetches_in as count_key_set_fetches_in;
use self::keys::{KeyHash, KeyLocation};
pub use self::lease::Leases;
use self::quota::{Period, Window};
use self::rate::{seconds_ceil, Gcra, NANOS_PER_SECOND};
pub(crate) use self::shared::{Call, Reply, SCRIPT};
use self::state::{BucketKey, Counters, QuotaCount, Subject};
pub use self::state::{PolicyState, StateError, COUNTERS_FILE};
pub use self::usage::{queries as usage_queries, KeyUsage, UsageQuery};
use crate::counter_store::{CounterStore, FailureMode};
use crate::fast_hash::FastMap;
use crate::metrics::{ConsumerLabels, ConsumerQuotaLabels, ConsumerRequests, Label};

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward. `response_headers` (RateLimit-Policy, RateLimit, X-RateLimit-*) go on the
    /// upstream's response.
    Allow { response_headers: LimitHeaders },
    /// Answer directly: 401, 403, 429 (or 500 for a policy id the Gateway does not have), with
    /// headers and a small JSON body `{"error": "...", "message": "..."}`.
    Deny { status: StatusCode, headers: HeaderMap, body: String },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// The compiled policies of one Gateway (rebuilt on every reload; cheap).
#[derive(Debug, Default)]
pub struct Policies {
    policies: Vec<CompiledPolicy>,
    by_id: FastMap<Arc<str>, usize>,
    /// Every key of every policy, by hash. A hash may (rarely) belong to keys of several policies.
    keys: FastMap<KeyHash, Vec<CompiledKey>>,
    /// Where requests with a known key are counted per consumer (none: not counted).
    consumers: Option<ConsumerSink>,
}

/// What became of a request with a known key, as counted per consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Allowed,
    RateLimited,
    QuotaExceeded,
    LimitsUnavailable,
}

impl Outcome {
    const ALL: [Self; 4] = [Self::Allowed, Self::RateLimited, Self::QuotaExceeded, Self::LimitsUnavailable];

    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::LimitsUnavailable => "limits_unavailable",
        }
    }
}

/// A token consumer a policy has counted requests of.
#[derive(Clone, Debug)]
pub struct SeenConsumer {
    pub policy: Arc<str>,
    pub consumer: Arc<str>,
    /// Its policy has a quota (so it has a quota-left series).
    pub quota: bool,
}

/// The per-consumer request counters of one Gateway: series exist only for the consumers of
/// its keys (so their number is bounded by the configuration) and only once used.
#[derive(Clone, Debug)]
pub struct ConsumerSink {
    counters: ConsumerRequests,
    gateway: Label,
}

impl ConsumerSink {
    pub fn new(counters: ConsumerRequests, gateway: Label) -> Self {
        Self { counters, gateway }
    }
}

#[derive(Debug)]
struct CompiledPolicy {
    id: Arc<str>,
    api_key: Option<KeySettings>,
    jwt: Option<TokenCheck>,
    /// Request counters of the token consumers seen, by name (at most
    /// [`MAX_TOKEN_CONSUMERS`]; later ones are counted as [`OTHER_CONSUMERS`]).
    token_counters: Mutex<FastMap<Arc<str>, Arc<ConsumerCounters>>>,
    rate: Option<Gcra>,
    quota: Option<(u64, Period)>,
}

#[derive(Debug)]
struct KeySettings {
    required: bool,
    location: KeyLocation,
    /// `None` when the configured name is not a valid header name.
    consumer_header: Option<HeaderName>,
}

struct CompiledKey {
    /// Index into `Policies::policies`.
    policy: usize,
    hash: KeyHash,
    /// The consumer's name, for metrics.
    consumer_name: Arc<str>,
    /// `None` when the consumer name cannot be a header value.
    consumer: Option<HeaderValue>,
    disabled: bool,
    expires_at: Option<i64>,
    /// This key's request counters, by outcome, and its quota gauge, taken from the sink on
    /// first use.
    counters: OnceLock<ConsumerCounters>,
}

/// One consumer's request counters, by outcome, and the quota it has left (for a policy with
/// a quota, and a consumer of its own: not the consumers counted together as "(other)").
#[derive(Debug)]
struct ConsumerCounters {
    outcomes: [Counter; Outcome::ALL.len()],
    quota_left: Option<Gauge>,
}

impl ConsumerCounters {
    fn new(sink: &ConsumerSink, policy: &CompiledPolicy, consumer: &Arc<str>) -> Self {
        let policy_id = &policy.id;
        let outcomes = Outcome::ALL.map(|outcome| {
            sink.counters.counter(ConsumerLabels {
                gateway: sink.gateway.clone(),
                policy: policy_id.clone(),
                consumer: consumer.clone(),
                outcome: outcome.label(),
            })
        });
        let quota_left = (policy.quota.is_some() && &**consumer != OTHER_CONSUMERS).then(|| {
            sink.counters.quota_gauge(ConsumerQuotaLabels {
                gateway: sink.gateway.clone(),
                policy: policy_id.clone(),
                consumer: consumer.clone(),
            })
        });
        Self { outcomes, quota_left }
    }

    fn record(&self, outcome: Outcome, quota_left: Option<u64>) {
        self.outcomes[outcome as usize].inc();
        if let (Some(gauge), Some(left)) = (&self.quota_left, quota_left) {
            gauge.set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }
}

impl fmt::Debug for CompiledKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledKey")
            .field("policy", &self.policy)
            .field("key_id", &self.hash.key_id())
            .field("consumer", &self.consumer)
            .field("disabled", &self.disabled)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Token consumers with series of their own, per policy: tokens are not configured, so their
/// number is bounded here.
const MAX_TOKEN_CONSUMERS: usize = 1000;
/// The consumer label of token consumers beyond [`MAX_TOKEN_CONSUMERS`].
const OTHER_CONSUMERS: &str = "(other)";

fn header_name(name: &str, policy: &str, what: &str) -> Option<HeaderName> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).ok();
    if parsed.is_none() {
        tracing::warn!(policy, header = name, "ignoring invalid {what} header name");
    }
    parsed
}

impl Policies {
    pub fn compile(policies: &[QuotaPolicyIr]) -> Self {
        let mut compiled = Self::default();
        for ir in policies {
            if compiled.by_id.contains_key(ir.id.as_str()) {
                tracing::warn!(policy = %ir.id, "duplicate QuotaPolicy id; keeping the first");
                continue;
            }
            let index = compiled.policies.len();
            let id: Arc<str> = ir.id.as_str().into();
            let api_key = ir.api_key.as_ref().map(|settings| KeySettings {
                required: settings.required,
                location: KeyLocation {
                    header: settings.header.as_deref().and_then(|h| header_name(h, &ir.id, "API key")),
                    query_param: settings.query_param.clone().filter(|p| !p.is_empty()),
                },
                consumer_header: header_name(&settings.consumer_header, &ir.id, "consumer"),
            });
            for key in &ir.keys {
                let Some(hash) = KeyHash::from_hex(&key.sha256) else {
                    tracing::warn!(policy = %ir.id, api_key = %key.id, "ignoring ApiKey without a valid SHA-256");
                    continue;
                };
                let consumer = HeaderValue::from_str(&key.consumer).ok();
                if consumer.is_none() {
                    tracing::warn!(api_key = %key.id, "consumer name cannot be sent in a header; not forwarding it");
                }
                compiled.keys.entry(hash).or_default().push(CompiledKey {
                    policy: index,
                    hash,
                    consumer_name: key.consumer.as_str().into(),
                    consumer,
                    disabled: key.disabled,
                    expires_at: key.expires_at,
                    counters: OnceLock::new(),
                });
            }
            compiled.by_id.insert(id.clone(), index);
            compiled.policies.push(CompiledPolicy {
                jwt: ir.jwt.as_ref().map(|jwt| TokenCheck::compile(&ir.id, jwt)),
                token_counters: Mutex::default(),
                id,
                api_key,
                rate: ir.rate_limit.as_ref().map(Gcra::new),
                quota: ir.quota.map(|q| (q.requests, q.period.into())),
            });
        }
        compiled
    }

    /// Counts requests with a known key per consumer in `sink` from now on.
    pub fn count_consumers(&mut self, sink: ConsumerSink) {
        self.consumers = Some(sink);
    }

    /// Counts one request of `caller` (when it has a known key or an accepted token), with the
    /// quota it has left when a quota was counted.
    fn count(&self, caller: &Caller<'_>, outcome: Outcome, quota_left: Option<u64>) {
        let Some(sink) = &self.consumers else { return };
        if let Some(token) = &caller.token {
            caller.policy.token_counters(sink, &token.name).record(outcome, quota_left);
            return;
        }
        let Some(key) = caller.key else { return };
        let counters =
            key.counters.get_or_init(|| ConsumerCounters::new(sink, caller.policy, &key.consumer_name));
        counters.record(outcome, quota_left);
    }

    /// (policy id, consumer) of every key (token consumers: [`Self::token_consumers`]).
    pub fn consumers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys.values().flatten().map(|key| (&*self.policies[key.policy].id, &*key.consumer_name))
    }

    /// Takes over the token consumers `previous` (this Gateway's policies before a reload) had
    /// seen, for each policy with a token check in both: their series go on counting instead
    /// of being dropped, and the bound on them holds across the reload.
    pub fn carry_token_consumers(&self, previous: &Policies) {
        let Some(sink) = &self.consumers else { return };
        for policy in self.policies.iter().filter(|p| p.jwt.is_some()) {
            let Some(old) = previous.by_id.get(&policy.id).map(|&i| &previous.policies[i]) else { continue };
            // A policy that gained a quota starts afresh: a carried consumer's gauge would read 0
            // (no quota left) until its next request.
            if old.jwt.is_none() || old.quota.is_some() != policy.quota.is_some() {
                continue;
            }
            let names: Vec<Arc<str>> =
                old.token_counters.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
            let mut seen = policy.token_counters.lock().unwrap_or_else(|e| e.into_inner());
            for name in names {
                let counters = || Arc::new(ConsumerCounters::new(sink, policy, &name));
                seen.entry(name.clone()).or_insert_with(counters);
            }
        }
    }

    /// Every token consumer seen, and `(other)` for each policy with a token check.
    pub fn token_consumers(&self) -> Vec<SeenConsumer> {
        let mut consumers = Vec::new();
        for policy in self.policies.iter().filter(|p| p.jwt.is_some()) {
            let seen = policy.token_counters.lock().unwrap_or_else(|e| e.into_inner());
            let with_quota = |consumer: &Arc<str>| SeenConsumer {
                policy: policy.id.clone(),
                consumer: consumer.clone(),
                quota: policy.quota.is_some(),
            };
            consumers.extend(seen.keys().map(with_quota));
            let other = OTHER_CONSUMERS.into();
            consumers.push(SeenConsumer { policy: policy.id.clone(), consumer: other, quota: false });
        }
        consumers
    }

    /// (policy id, consumer) of every key whose policy has a quota.
    pub fn quota_consumers(&self) -> impl Iterator<Item = (&str, &str)> {
        let with_quota = self.keys.values().flatten().filter(|key| self.policies[key.policy].quota.is_some());
        with_quota.map(|key| (&*self.policies[key.policy].id, &*key.consumer_name))
    }

    /// Whether the Gateway has a policy with this id.
    pub fn contains(&self, policy_id: &str) -> bool {
        self.by_id.contains_key(policy_id)
    }

    /// Decides a request guarded by policy `policy_id` (from RouteIr.policy), counting in this
    /// process's `state`. On `Allow` the key has been removed from `req` and the consumer header
    /// set.
    pub fn check(
        &self,
        state: &PolicyState,
        policy_id: &str,
        req: &mut http::request::Parts,
        now: Timestamp,
    ) -> Decision {
        let caller = match self.admit(policy_id, req, now) {
            Ok(caller) => caller,
            Err(denied) => return denied,
        };
        let limited = caller.counts().then(|| limit_locally(state, &caller, now));
        self.finish(caller, limited, req)
    }

    /// [`check`](Self::check), counting in the shared `store` (one round trip); when the store
    /// cannot answer, its failure mode decides: count in `state`, allow, or refuse with 503.
    pub async fn check_shared(
        &self,
        store: &Arc<CounterStore>,
        state: &PolicyState,
        policy_id: &str,
        req: &mut http::request::Parts,
        now: Timestamp,
    ) -> Decision {
        let caller = match self.admit(policy_id, req, now) {
            Ok(caller) => caller,
            Err(denied) => return denied,
        };
        if !caller.counts() {
            return self.finish(caller, None, req);
        }
        let policy = caller.policy;
        let call = Call::new(store.prefix(), &policy.id, caller.subject, policy.rate, policy.quota, now);
        let leases = store.leases();
        let asking_for = i128::try_from(store.timeout().as_nanos()).unwrap_or(i128::MAX);
        if let Some(leased) = leases.take(call.key(), call.limits(), call.now_nanos()) {
            store.count_leased();
            let size = leases.renewal(call.key(), call.now_nanos(), asking_for);
            if size > 0 {
                tokio::spawn(renew_lease(store.clone(), call.with_lease(size - 1), size));
            }
            return self.finish(caller, Some(leased), req);
        }
        let wanted = leases.wanted(call.key(), call.now_nanos(), asking_for);
        let call = call.with_lease(wanted);
        let limited = match store.run(&call).await {
            Ok(reply) => {
                let (limited, bucket) = call.limited(reply);
                if matches!(limited, Limited::Allowed(_)) {
                    let (key, limits, now) = (call.key(), call.limits(), call.now_nanos());
                    leases.record(key, limits, bucket, call.extra(), reply.granted, now);
                }
                limited
            }
            Err(FailureMode::Local) => limit_locally(state, &caller, now),
            Err(FailureMode::Open) => return self.finish(caller, None, req),
            Err(FailureMode::Closed) => {
                self.count(&caller, Outcome::LimitsUnavailable, None);
                return headers::deny(
                    StatusCode::SERVICE_UNAVAILABLE,
                    HeaderMap::new(),
                    "limits_unavailable",
                    "the rate limit and quota store is unavailable",
                );
            }
        };
        self.finish(caller, Some(limited), req)
    }

    /// Answers `caller` with the outcome of counting (`None`: nothing was counted), rewriting
    /// `req` when it goes through.
    fn finish(
        &self,
        caller: Caller<'_>,
        limited: Option<Limited>,
        req: &mut http::request::Parts,
    ) -> Decision {
        let (outcome, limits) = match &limited {
            Some(Limited::Refused { by: "rate", limits, .. }) => (Outcome::RateLimited, Some(limits)),
            Some(Limited::Refused { limits, .. }) => (Outcome::QuotaExceeded, Some(limits)),
            Some(Limited::Allowed(limits)) => (Outcome::Allowed, Some(limits)),
            None => (Outcome::Allowed, None),
        };
        let quota_left = limits.and_then(|l| l.quota_left);
        self.count(&caller, outcome, quota_left);
        caller.finish(limited, req)
    }

    /// Who is calling and how to rewrite the request, or the refusal (401, 403, 400, 500).
    fn admit<'p>(
        &'p self,
        policy_id: &str,
        req: &http::request::Parts,
        now: Timestamp,
    ) -> Result<Caller<'p>, Decision> {
        let Some(&index) = self.by_id.get(policy_id) else {
            // The route points at a policy this Gateway does not have: fail closed.
            tracing::error!(policy = policy_id, "route guarded by an unknown QuotaPolicy");
            return Err(headers::deny(
                StatusCode::INTERNAL_SERVER_ERROR,
                HeaderMap::new(),
                "policy_unavailable",
                "the policy guarding this route is not available",
            ));
        };
        let policy = &self.policies[index];
        if let Some(check) = &policy.jwt {
            let token = check.check(req).map_err(|refusal| {
                tracing::debug!(policy = %policy.id, ?refusal, "token refused");
                refusal.decision()
            })?;
            let subject = Subject::Key(token.subject);
            return Ok(Caller { policy, subject, key: None, token: Some(token), stripped_uri: None });
        }
        let (subject, key) = self.identify(index, policy, req, now)?;
        // Computed before counting so that a request we could not rewrite uses no quota.
        let stripped_uri = match &policy.api_key {
            Some(settings) => settings.location.uri_without_key(&req.uri).map_err(|_| {
                headers::deny(
                    StatusCode::BAD_REQUEST,
                    HeaderMap::new(),
                    "bad_request",
                    "the request URI cannot be rewritten",
                )
            })?,
            None => None,
        };
        Ok(Caller { policy, subject, key, token: None, stripped_uri })
    }

    /// Who is calling: the bucket subject and the key (none: anonymous), or the refusal.
    fn identify(
        &self,
        index: usize,
        policy: &CompiledPolicy,
        req: &http::request::Parts,
        now: Timestamp,
    ) -> Result<(Subject, Option<&CompiledKey>), Decision> {
        let Some(settings) = &policy.api_key else { return Ok((Subject::Anonymous, None)) };
        let Some(hash) = settings.location.find(req) else {
            if !settings.required {
                return Ok((Subject::Anonymous, None));
            }
            return Err(headers::unauthorized("missing_api_key", &missing_message(&settings.location)));
        };
        let Some(candidates) = self.keys.get(&hash) else {
            tracing::debug!(policy = %policy.id, "unknown API key");
            return Err(headers::unauthorized("invalid_api_key", "the API key is not valid"));
        };
        let Some(key) = candidates.iter().find(|k| k.policy == index) else {
            tracing::debug!(policy = %policy.id, key_id = %hash.key_id(), "API key of another policy");
            return Err(headers::deny(
                StatusCode::FORBIDDEN,
                HeaderMap::new(),
                "forbidden",
                "the API key is not allowed on this route",
            ));
        };
        if key.disabled {
            tracing::debug!(policy = %policy.id, key_id = %hash.key_id(), "disabled API key");
            return Err(headers::unauthorized("invalid_api_key", "the API key is disabled"));
        }
        if key.expires_at.is_some_and(|at| at <= now.as_second()) {
            tracing::debug!(policy = %policy.id, key_id = %hash.key_id(), "expired API key");
            return Err(headers::unauthorized("invalid_api_key", "the API key has expired"));
        }
        Ok((Subject::Key(key.hash), Some(key)))
    }
}

/// An identified request, between identification and counting.
struct Caller<'p> {
    policy: &'p CompiledPolicy,
    subject: Subject,
    key: Option<&'p CompiledKey>,
    /// The consumer of an accepted bearer token.
    token: Option<TokenConsumer>,
    stripped_uri: Option<http::Uri>,
}

impl Caller<'_> {
    /// Whether the policy has a rate limit or a quota to count against.
    fn counts(&self) -> bool {
        self.policy.rate.is_some() || self.policy.quota.is_some()
    }

    /// Answers with the outcome of counting (`None`: nothing was counted), rewriting `req` when
    /// it goes through.
    fn finish(self, limited: Option<Limited>, req: &mut http::request::Parts) -> Decision {
        let mut response_headers = LimitHeaders::new();
        match limited {
            Some(Limited::Allowed(limits)) => response_headers = limits.headers,
            Some(Limited::Refused { limits, by, retry_after }) => {
                tracing::debug!(policy = %self.policy.id, subject = ?self.subject, by, "request over limit");
                return headers::too_many(limits.as_slice(), by, retry_after);
            }
            None => {}
        }
        if let (Some(check), Some(token)) = (&self.policy.jwt, &self.token) {
            if !check.forward_token {
                req.headers.remove(http::header::AUTHORIZATION);
            }
            if let Some(name) = &check.consumer_header {
                req.headers.insert(name.clone(), token.header.clone());
            }
        }
        if let Some(settings) = &self.policy.api_key {
            settings.location.strip_header(req);
            if let Some(uri) = self.stripped_uri {
                req.uri = uri;
            }
            if let Some(name) = &settings.consumer_header {
                req.headers.remove(name);
                if let Some(consumer) = self.key.and_then(|key| key.consumer.as_ref()) {
                    req.headers.insert(name.clone(), consumer.clone());
                }
            }
        }
        Decision::Allow { response_headers }
    }
}

impl CompiledPolicy {
    /// The request counters of token consumer `name`, made on first use.
    fn token_counters(&self, sink: &ConsumerSink, name: &Arc<str>) -> Arc<ConsumerCounters> {
        let mut seen = self.token_counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(counters) = seen.get(name) {
            return counters.clone();
        }
        let label: Arc<str> =
            if seen.len() < MAX_TOKEN_CONSUMERS { name.clone() } else { OTHER_CONSUMERS.into() };
        let counters = Arc::new(ConsumerCounters::new(sink, self, &label));
        if seen.len() < MAX_TOKEN_CONSUMERS {
            seen.insert(name.clone(), counters.clone());
        }
        counters
    }
}

/// Renews a lease ahead of its end: the call's own request and `size - 1` more, leased.
async fn renew_lease(store: Arc<CounterStore>, call: Call, size: u32) {
    let leases = store.leases();
    match store.run(&call).await {
        Ok(reply) => match call.limited(reply) {
            (Limited::Allowed(_), bucket) => {
                let (key, limits, now) = (call.key(), call.limits(), call.now_nanos());
                leases.record_renewal(key, limits, bucket, size, reply.granted, now);
            }
            (Limited::Refused { .. }, _) => leases.renewal_failed(call.key()),
        },
        Err(_) => leases.renewal_failed(call.key()),
    }
}

/// Counts the caller's request in this process's counters.
fn limit_locally(state: &PolicyState, caller: &Caller<'_>, now: Timestamp) -> Limited {
    let policy = caller.policy;
    let bucket = BucketKey { policy: policy.id.clone(), subject: caller.subject };
    let now = now.as_nanosecond();
    state.with_bucket(&bucket, now, |counters| limit(policy.rate, policy.quota, counters, now))
}

fn missing_message(location: &KeyLocation) -> String {
    match (&location.header, &location.query_param) {
        (Some(header), Some(param)) => {
            format!("an API key is required in header {header} or query parameter {param}")
        }
        (Some(header), None) => format!("an API key is required in header {header}"),
        (None, Some(param)) => format!("an API key is required in query parameter {param}"),
        (None, None) => "an API key is required".to_owned(),
    }
}

/// At most two limits (rate, quota), without allocating: the rate-limit headers they make, and
/// what is left of the quota.
#[derive(Default)]
struct Limits {
    headers: LimitHeaders,
    /// Requests left of the quota, when one was counted (for the consumer's gauge).
    quota_left: Option<u64>,
}

impl Limits {
    fn push(&mut self, status: LimitStatus) {
        self.headers.push(status);
    }

    fn as_slice(&self) -> &[LimitStatus] {
        self.headers.limits()
    }
}

enum Limited {
    Allowed(Limits),
    Refused { limits: Limits, by: &'static str, retry_after: u64 },
}

/// Rate, then quota, on one bucket's counters. Commits nothing unless both allow.
fn limit(rate: Option<Gcra>, quota: Option<(u64, Period)>, counters: &mut Counters, now: i128) -> Limited {
    let rate = rate.map(|gcra| (gcra, gcra.decide(counters.tat, now)));
    let rate_refusal = rate.filter(|(_, outcome)| !outcome.allowed).map(|(_, outcome)| outcome.retry_in);

    let mut quota_status = None;
    let mut quota_refusal = None;
    if let Some((requests, period)) = quota {
        let second = i64::try_from(now.div_euclid(NANOS_PER_SECOND)).unwrap_or(i64::MAX);
        let current = counters
            .quota
            .filter(|q| q.period == period && second < q.window.end)
            .unwrap_or_else(|| QuotaCount { period, window: Window::containing(period, second), count: 0 });
        let over = current.count >= requests;
        let counted = if over || rate_refusal.is_some() { current.count } else { current.count + 1 };
        let reset = seconds_ceil(i128::from(current.window.end) * NANOS_PER_SECOND - now);
        quota_status = Some(LimitStatus {
            name: "quota",
            limit: requests,
            window: current.window.seconds(),
            remaining: requests.saturating_sub(counted),
            reset,
        });
        if over && rate_refusal.is_none() {
            quota_refusal = Some(reset);
        }
        counters.quota = Some(QuotaCount { count: counted, ..current });
    }

    let mut limits = Limits::default();
    if let Some((gcra, outcome)) = rate {
        // When the quota refuses, the rate token is not taken: report the bucket as it stays.
        let (remaining, full_in) = match quota_refusal {
            Some(_) => gcra.current(counters.tat, now),
            None => (outcome.remaining, outcome.full_in),
        };
        limits.push(LimitStatus {
            name: "rate",
            limit: u64::from(gcra.burst()),
            window: gcra.window_seconds(),
            remaining,
            reset: seconds_ceil(full_in),
        });
        if quota_refusal.is_none() && rate_refusal.is_none() {
            counters.tat = outcome.new_tat;
        }
    }
    if let Some(status) = quota_status {
        limits.quota_left = Some(status.remaining);
        limits.push(status);
    }

    match (rate_refusal, quota_refusal) {
        (Some(retry_in), _) => Limited::Refused { limits, by: "rate", retry_after: seconds_ceil(retry_in) },
        (None, Some(reset)) => Limited::Refused { limits, by: "quota", retry_after: reset },
        (None, None) => Limited::Allowed(limits),
    }
}

#[cfg(test)]
mod tests;
