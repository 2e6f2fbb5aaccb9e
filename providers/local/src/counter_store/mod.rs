//! The connection to a shared counter store (Redis) and what happens when it cannot answer.
//!
//! A small pool of connections carries the decisions: a request takes an idle connection (or
//! opens one, up to [`MAX_CONNECTIONS`]), sends its script call and reads the reply itself, and
//! gives the connection back. A call that fails or takes longer than the timeout marks the store
//! down: from then on requests do not wait for it but follow the failure mode, while a background
//! task reconnects (and pings) until the store answers again. Each change of state is logged once
//! and shown by the `tollbridge_counter_store_up` gauge.

mod connection;
mod resp;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use self::connection::{CallError, Connection, Endpoint};
use self::resp::{Arg, Frame};
use crate::policy::{Call, Leases, Reply, UsageQuery, SCRIPT};

/// How often a store that is up is PINGed, so that a replica without traffic notices an outage.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Connections one replica keeps to the store at most: decisions in flight beyond that wait
/// (within the timeout) for one to come back.
pub const MAX_CONNECTIONS: usize = 32;

/// What a request guarded by a rate limit or quota gets while the store cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Count in this replica's own counters (each replica then admits up to the full limit).
    #[default]
    Local,
    /// Let the request through uncounted.
    Open,
    /// Refuse it with 503.
    Closed,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// `CounterStoreSettings::lease_max` unless set: a busy key's lease holds about 50 ms of its
/// requests, up to this many.
pub const DEFAULT_LEASE_MAX: u32 = 256;

/// How to reach the store. The password never comes from the URL (command lines and
/// configuration files are readable by others); Debug output hides it.
#[derive(Clone)]
pub struct CounterStoreSettings {
    /// `redis://HOST:PORT[/DB]` or `rediss://HOST:PORT[/DB]`, optionally with a user name.
    pub url: String,
    pub password: Option<String>,
    /// PEM certificates to trust for `rediss://` instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// How long a decision may wait for the store.
    pub timeout: Duration,
    pub failure_mode: FailureMode,
    /// First part of every key, so several installations can share one store.
    pub prefix: String,
    /// Most requests a busy bucket leases beyond the one decided (0: every decision a call).
    pub lease_max: u32,
}

impl fmt::Debug for CounterStoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterStoreSettings")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field("timeout", &self.timeout)
            .field("failure_mode", &self.failure_mode)
            .field("prefix", &self.prefix)
            .field("lease_max", &self.lease_max)
            .finish()
    }
}

/// Why the store's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CounterStoreError {
    #[error("counter store URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("counter store {url}: {reason}")]
    Call { url: String, reason: String },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// `timeout`, `connection`, `response` or `busy` (no connection free within the timeout).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    failure_mode: &'static str,
}

struct StoreMetrics {
    up: Gauge,
    errors: Family<ErrorLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    /// How long decisions the store answered took, from the request's view.
    duration: Histogram,
    /// Decisions made from a lease, without a call.
    leased: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            up: Gauge::default(),
            errors: Family::default(),
            fallbacks: Family::default(),
            // 50 µs to about 100 ms.
            duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 12)),
            leased: Counter::default(),
        }
    }
}

/// The shared counter store, as the data plane sees it.
pub struct CounterStore {
    settings: CounterStoreSettings,
    /// The URL with any password hidden: what logs and status show.
    shown_url: String,
    endpoint: Endpoint,
    /// Connections not in use, each with the generation it was opened in.
    idle: Mutex<Vec<(u64, Connection)>>,
    /// One permit per connection open or in use.
    slots: Semaphore,
    /// Moves on at each outage: a connection of an older one is not reused.
    generation: AtomicU64,
    /// Requests the store counted ahead for this replica to admit without asking.
    leases: Leases,
    /// The SHA-1 the store gave the script (`SCRIPT LOAD`), once loaded.
    script_sha: Mutex<Option<Arc<str>>>,
    up: AtomicBool,
    went_down: Notify,
    metrics: StoreMetrics,
    /// Second of the last logged refusal.
    refusal_logged_at: AtomicI64,
}

impl fmt::Debug for CounterStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterStore").field("settings", &self.settings).field("up", &self.is_up()).finish()
    }
}

/// What `/status` shows of the store.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterStoreStatus {
    pub url: String,
    pub up: bool,
    pub failure_mode: FailureMode,
}

impl CounterStore {
    /// Checks the settings and starts connecting in the background: until the first connection
    /// is up, requests follow the failure mode. Call inside a Tokio runtime.
    pub fn start(settings: CounterStoreSettings) -> Result<Arc<Self>, CounterStoreError> {
        let endpoint = Endpoint::parse(&settings)?;
        let store = Arc::new(Self {
            shown_url: redacted(&settings.url),
            endpoint,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(MAX_CONNECTIONS),
            generation: AtomicU64::new(0),
            leases: Leases::new(settings.lease_max),
            script_sha: Mutex::new(None),
            up: AtomicBool::new(false),
            went_down: Notify::new(),
            metrics: StoreMetrics::default(),
            refusal_logged_at: AtomicI64::new(0),
            settings,
        });
        tokio::spawn(reconnect_forever(store.clone()));
        Ok(store)
    }

    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// How long a decision waits for the store.
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// This replica's leases.
    pub(crate) fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Counts a decision made from a lease.
    pub(crate) fn count_leased(&self) {
        self.metrics.leased.inc();
    }

    /// Decisions made from leases so far.
    pub fn leased_decisions(&self) -> u64 {
        self.metrics.leased.get()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn status(&self) -> CounterStoreStatus {
        CounterStoreStatus {
            url: self.shown_url.clone(),
            up: self.is_up(),
            failure_mode: self.settings.failure_mode,
        }
    }

    /// Adds the store's metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "counter_store_up",
            "Whether the shared counter store answers (1) or not (0)",
            self.metrics.up.clone(),
        );
        registry.register(
            "counter_store_errors",
            "Calls to the shared counter store that failed, by kind (timeout, connection, response, busy)",
            self.metrics.errors.clone(),
        );
        registry.register(
            "counter_store_decision_duration_seconds",
            "Time from a decision's call to the store's answer, for the decisions it answered",
            self.metrics.duration.clone(),
        );
        registry.register(
            "counter_store_leased_decisions",
            "Decisions made from requests the store had already counted for this replica (a lease), without a call",
            self.metrics.leased.clone(),
        );
        registry.register(
            "counter_store_fallbacks",
            "Decisions made without the shared counter store, by failure mode",
            self.metrics.fallbacks.clone(),
        );
    }

    /// Runs one decision on the store; `Err` carries the failure mode to follow instead.
    pub(crate) async fn run(&self, call: &Call) -> Result<Reply, FailureMode> {
        if !self.is_up() {
            return Err(self.fall_back());
        }
        let started = std::time::Instant::now();
        let on_store = AtomicBool::new(false);
        match tokio::time::timeout(self.settings.timeout, self.decide(call, &on_store)).await {
            Ok(Ok(reply)) => {
                self.metrics.duration.observe(started.elapsed().as_secs_f64());
                Ok(reply)
            }
            Ok(Err(error)) => {
                // A replica that became read-only (a failover), a primary that is gone or a
                // server still loading: a new connection is what helps.
                let reconnect = !matches!(error, CallError::Refused(_))
                    || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
                let kind = if reconnect {
                    self.mark_down(&error.to_string());
                    "connection"
                } else {
                    self.warn_refusal(&error);
                    "response"
                };
                self.metrics.errors.get_or_create(&ErrorLabels { kind }).inc();
                Err(self.fall_back())
            }
            // Every connection was busy for the whole timeout: a burst, not an outage.
            Err(_) if !on_store.load(Ordering::Acquire) => {
                self.metrics.errors.get_or_create(&ErrorLabels { kind: "busy" }).inc();
                Err(self.fall_back())
            }
            Err(_) => {
                self.metrics.errors.get_or_create(&ErrorLabels { kind: "timeout" }).inc();
                self.mark_down(&format!("no answer within {:?}", self.settings.timeout));
                Err(self.fall_back())
            }
        }
    }

    /// The script call of `call` on a pooled connection. Dropped half-way (the timeout), the
    /// connection goes with it; a refusal leaves it usable, so it goes back to the pool (a store
    /// that refuses every call must not cost a new connection per request).
    /// `on_store` turns true once a connection is held: from then on, waiting is the store's.
    async fn decide(&self, call: &Call, on_store: &AtomicBool) -> Result<Reply, CallError> {
        let _slot =
            self.slots.acquire().await.map_err(|_| CallError::Protocol("the pool is closed".into()))?;
        on_store.store(true, Ordering::Release);
        let (generation, connection, reused) = self.take().await?;
        let (answer, connection) = match self.decide_on(connection, call).await {
            // A pooled connection the store closed while it sat idle (a client timeout on the
            // server): one more try, on a new connection.
            Err(CallError::Io(_)) if reused => self.decide_on(self.endpoint.open().await?, call).await?,
            outcome => outcome?,
        };
        self.give_back(generation, connection);
        answer
    }

    /// The store's answer on `connection` (a decision or a refusal) and the connection, or
    /// `Err` when the connection cannot be used again.
    async fn decide_on(
        &self,
        mut connection: Connection,
        call: &Call,
    ) -> Result<(Result<Reply, CallError>, Connection), CallError> {
        match self.ask(&mut connection, call).await {
            Err(refused @ CallError::Refused(_)) => Ok((Err(refused), connection)),
            Err(broken) => Err(broken),
            Ok(reply) => Ok((Ok(reply), connection)),
        }
    }

    async fn ask(&self, connection: &mut Connection, call: &Call) -> Result<Reply, CallError> {
        let sha = self.script_sha(connection).await?;
        let mut reply = connection.call(&script_args(&sha, call)).await?;
        if matches!(&reply, Frame::Error(message) if message.starts_with("NOSCRIPT")) {
            // The store lost its scripts (a restart, SCRIPT FLUSH, a failover): load it again.
            *self.script_sha.lock().unwrap_or_else(PoisonError::into_inner) = None;
            let sha = self.script_sha(connection).await?;
            reply = connection.call(&script_args(&sha, call)).await?;
        }
        decision(reply.ok()?)
    }

    /// An idle connection of this generation (`true`: reused), or a new one.
    async fn take(&self) -> Result<(u64, Connection, bool), CallError> {
        let generation = self.generation.load(Ordering::Acquire);
        // A connection of an older generation (given back as an outage began) is dropped.
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            std::iter::from_fn(|| idle.pop()).find(|(opened, _)| *opened == generation)
        };
        match idle {
            Some((generation, connection)) => Ok((generation, connection, true)),
            None => Ok((generation, self.endpoint.open().await?, false)),
        }
    }

    fn give_back(&self, generation: u64, connection: Connection) {
        if generation == self.generation.load(Ordering::Acquire) {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push((generation, connection));
        }
    }

    /// The script's SHA-1, loading the script on `connection` when the store has not got it.
    async fn script_sha(&self, connection: &mut Connection) -> Result<Arc<str>, CallError> {
        if let Some(sha) = self.script_sha.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            return Ok(sha);
        }
        let loaded =
            connection.call(&[Arg::from("SCRIPT"), Arg::from("LOAD"), Arg::from(SCRIPT)]).await?.ok()?;
        let sha: Arc<str> = loaded
            .as_text()
            .filter(|sha| sha.len() == 40)
            .ok_or_else(|| CallError::Protocol(format!("SCRIPT LOAD answered {}", loaded.shown())))?
            .into();
        *self.script_sha.lock().unwrap_or_else(PoisonError::into_inner) = Some(sha.clone());
        Ok(sha)
    }

    /// Logs a refusal (NOPERM from an ACL, OOM, ...) at most once a minute: every request may
    /// meet it, and the log must not drown.
    fn warn_refusal(&self, error: &CallError) {
        let now = jiff::Timestamp::now().as_second();
        let last = self.refusal_logged_at.load(Ordering::Relaxed);
        if now - last >= 60
            && self.refusal_logged_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(url = %self.shown_url, %error, "counter store refused decisions; limits follow the failure mode (logged once a minute)");
        }
    }

    fn fall_back(&self) -> FailureMode {
        let mode = self.settings.failure_mode;
        self.metrics.fallbacks.get_or_create(&FallbackLabels { failure_mode: mode.as_str() }).inc();
        mode
    }

    fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.up.set(0);
            tracing::warn!(
                url = %self.shown_url,
                reason,
                failure_mode = self.settings.failure_mode.as_str(),
                "counter store unavailable; limits follow the failure mode until it is back"
            );
            self.went_down.notify_one();
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.up.set(1);
            tracing::info!(url = %self.shown_url, "counter store connected; limits are shared");
        }
    }

    /// PINGs on a pooled connection; no answer within the timeout marks the store down.
    async fn check_health(&self) {
        let ping = async {
            let _slot =
                self.slots.acquire().await.map_err(|_| CallError::Protocol("the pool is closed".into()))?;
            let (generation, mut connection, _) = self.take().await?;
            connection.call(&[Arg::from("PING")]).await?.ok()?;
            self.give_back(generation, connection);
            Ok::<(), CallError>(())
        };
        match tokio::time::timeout(self.settings.timeout.max(Duration::from_millis(500)), ping).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.mark_down(&error.to_string()),
            Err(_) => self.mark_down("no answer to PING"),
        }
    }

    /// A new connection of a new generation that answers PING, put in the pool; or why not.
    async fn connect(&self) -> Result<(), CallError> {
        let wait = self.settings.timeout.max(Duration::from_secs(1));
        let open = async {
            let mut connection = self.endpoint.open().await?;
            connection.call(&[Arg::from("PING")]).await?.ok()?;
            Ok::<Connection, CallError>(connection)
        };
        let connection = tokio::time::timeout(wait, open).await.map_err(|_| {
            CallError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to PING"))
        })??;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.clear();
        idle.push((generation, connection));
        Ok(())
    }
}

/// `EVALSHA` of the decision script for `call`.
fn script_args<'a>(sha: &'a str, call: &'a Call) -> [Arg<'a>; 13] {
    let (now, interval, burst, quota, period, start, end, extra, min_room) = call.args();
    [
        Arg::from("EVALSHA"),
        Arg::from(sha),
        Arg::Int(1),
        Arg::from(call.key()),
        Arg::Int(now),
        Arg::Int(interval),
        Arg::Int(i64::from(burst)),
        Arg::Int(quota),
        Arg::from(period),
        Arg::Int(start),
        Arg::Int(end),
        Arg::Int(i64::from(extra)),
        Arg::Int(i64::try_from(min_room).unwrap_or(i64::MAX)),
    ]
}

/// The script's answer `{tat, count, start, end, granted}`.
fn decision(reply: Frame) -> Result<Reply, CallError> {
    let numbers = match &reply {
        Frame::Array(Some(items)) if items.len() == 5 => {
            items.iter().map(Frame::as_i64).collect::<Option<Vec<_>>>()
        }
        _ => None,
    };
    match numbers.as_deref() {
        Some(&[tat, count, start, end, granted]) => Ok(Reply {
            tat,
            count: u64::try_from(count).unwrap_or(0),
            start,
            end,
            granted: u32::try_from(granted).unwrap_or(0),
        }),
        _ => Err(CallError::Protocol(format!("the decision script answered {}", reply.shown()))),
    }
}

/// Requests counted in the shared store for each key of `queries` in its current quota window,
/// and when the last one came (`tollbridge usage`): one pipelined round trip on a connection of
/// its own.
pub async fn quota_counts(
    settings: &CounterStoreSettings,
    queries: &[UsageQuery],
) -> Result<Vec<(u64, Option<jiff::Timestamp>)>, CounterStoreError> {
    let failed = |error: CallError| CounterStoreError::Call {
        url: redacted(&settings.url),
        reason: error.to_string(),
    };
    let endpoint = Endpoint::parse(settings)?;
    let keys: Vec<String> = queries.iter().map(|query| query.store_key(&settings.prefix)).collect();
    let commands: Vec<[Arg<'_>; 6]> =
        keys.iter().map(|key| ["HMGET", key, "period", "start", "count", "seen"].map(Arg::from)).collect();
    let commands: Vec<&[Arg<'_>]> = commands.iter().map(|c| c.as_slice()).collect();
    let read = async {
        let mut connection = endpoint.open().await?;
        connection.pipeline(&commands).await
    };
    let wait = settings.timeout.max(Duration::from_secs(2));
    let replies = tokio::time::timeout(wait, read)
        .await
        .map_err(|_| failed(CallError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))))?
        .map_err(failed)?;
    queries
        .iter()
        .zip(replies)
        .map(|(query, reply)| {
            let fields = match reply.ok().map_err(failed)? {
                Frame::Array(Some(fields)) if fields.len() == 4 => fields,
                other => {
                    return Err(failed(CallError::Protocol(format!("HMGET answered {}", other.shown()))))
                }
            };
            let period = fields[0].as_text();
            let seen = fields[3].as_i64().and_then(|micros| jiff::Timestamp::from_microsecond(micros).ok());
            let counted = if query.counts_in(period, fields[1].as_i64()) {
                fields[2].as_i64().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
            } else {
                0
            };
            Ok((counted, seen))
        })
        .collect()
}

/// Keeps the store connected: connects, then waits until a call marks it down, then
/// reconnects with a growing pause (0.25 s up to 2 s) between attempts. The store lives as long
/// as this task, that is as long as the process.
async fn reconnect_forever(store: Arc<CounterStore>) {
    let mut logged_failure = false;
    let mut pause = Duration::from_millis(250);
    loop {
        if store.is_up() {
            // `notify_one` leaves a permit when nobody waits, so a drop between the check and
            // this wait is not missed. A replica without traffic learns of an outage from the
            // PING instead (and its gauge and Degraded condition say so).
            tokio::select! {
                () = store.went_down.notified() => {}
                () = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => store.check_health().await,
            }
            continue;
        }
        match store.connect().await {
            Ok(()) => {
                store.mark_up();
                logged_failure = false;
                pause = Duration::from_millis(250);
            }
            Err(error) => {
                if !logged_failure {
                    tracing::warn!(url = %store.shown_url, %error, "cannot connect to the counter store; retrying");
                    logged_failure = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// `url` with the password of its user information (if any) replaced. The user information
/// ends at the last `@` (a password may hold `/`, `?` or `#` unencoded), and a text that is no
/// URL at all is treated the same way.
pub fn redacted(url: &str) -> String {
    // A query may carry a password (`?password=`): it is refused, and never shown.
    if let Some((before, _)) = url.split_once(['?', '#']) {
        return format!("{}?<redacted>", redacted(before));
    }
    let Some((scheme, user_info, host)) = split_user_info(url) else { return url.to_owned() };
    let (user, hidden) = match user_info.split_once(':') {
        Some((user, _)) => (user, ":<redacted>"),
        None => (user_info, ""),
    };
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{scheme}{user}{hidden}@{host}")
}

/// Whether `url` carries a password in its user information.
pub fn has_password(url: &str) -> bool {
    split_user_info(url).is_some_and(|(_, user_info, _)| user_info.contains(':'))
}

/// The user name of a store URL (`redis://USER@HOST`), if it names one.
pub fn user_name(url: &str) -> Option<&str> {
    split_user_info(url).map(|(_, user_info, _)| user_info).filter(|user| !user.is_empty())
}

/// `(scheme, user information, the rest)` of a URL that has user information.
fn split_user_info(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(scheme, rest)| (scheme, rest));
    let (user_info, host) = rest.rsplit_once('@')?;
    Some((scheme, user_info, host))
}

/// A password as read from a file or a Secret: without the line end editors and
/// `kubectl create secret --from-file` leave.
pub fn clean_password(text: &str) -> &str {
    text.trim_end_matches(['\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings for `url` with a password, for the tests of this module and its parts.
    pub(super) fn settings(url: &str) -> CounterStoreSettings {
        CounterStoreSettings {
            url: url.to_owned(),
            password: Some("hunter2-secret".to_owned()),
            ca_pem: None,
            timeout: Duration::from_millis(50),
            failure_mode: FailureMode::Local,
            prefix: "tollbridge".to_owned(),
            lease_max: DEFAULT_LEASE_MAX,
        }
    }

    #[test]
    fn passwords_are_hidden_from_urls_and_debug_output() {
        assert_eq!(redacted("redis://:pw@host:6379/2"), "redis://:<redacted>@host:6379/2");
        assert_eq!(redacted("rediss://user:pw@host:6379"), "rediss://user:<redacted>@host:6379");
        assert_eq!(redacted("redis://user@host:6379"), "redis://user@host:6379");
        assert_eq!(redacted("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(redacted("redis://:Zm9v/YmFy@redis:6379/1"), "redis://:<redacted>@redis:6379/1");
        assert_eq!(redacted("redis://u:p@ss@h:1"), "redis://u:<redacted>@h:1");
        assert_eq!(redacted("valkey:secret@host"), "valkey:<redacted>@host");
        assert_eq!(clean_password("pw\r\n"), "pw");
        assert_eq!(redacted("redis://h:1/?password=in-query"), "redis://h:1/?<redacted>");
        let debug = format!("{:?}", settings("redis://user:in-url-secret@host:1"));
        assert!(!debug.contains("hunter2-secret") && !debug.contains("in-url-secret"), "{debug}");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let refused =
            |url: &str| Endpoint::parse(&settings(url)).err().map(|e| e.to_string()).unwrap_or_default();
        let in_url = refused("redis://:in-url-secret@127.0.0.1:6379");
        assert!(in_url.contains("password in the URL") && !in_url.contains("in-url-secret"), "{in_url}");
        let slashed = refused("redis://:in/url/secret@127.0.0.1:6379");
        assert!(!slashed.is_empty() && !slashed.contains("url/secret"), "{slashed}");
        assert!(refused("http://127.0.0.1:6379").contains("expected redis://"));
        let mut with_ca = settings("redis://127.0.0.1:6379");
        with_ca.ca_pem = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
        assert!(Endpoint::parse(&with_ca).err().is_some_and(|e| e.to_string().contains("not rediss://")));
        assert!(Endpoint::parse(&settings("redis://127.0.0.1:6379/3")).is_ok());
    }
}
