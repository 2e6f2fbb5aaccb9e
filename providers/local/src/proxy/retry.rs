//! Retries of backend requests (HTTPRoute `retry`): which failures are tried again, the wait
//! between attempts, and a budget so that retries cannot multiply the load on a failing
//! backend.
//!
//! A request is tried again when no connection to the backend could be made (it never saw the
//! request), and, for requests that may be repeated (idempotent methods, or an
//! `Idempotency-Key`), when the backend answered with one of the route's codes or did not
//! answer within the backend request timeout. A failure after the request may have been
//! processed (a reset, a malformed answer) is never retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response};
use rand::Rng;
use tokio::time::Instant;
use tollbridge_provider::{BackendIr, BackendTarget, RetryIr, TimeoutsIr};

use http_body_util::BodyExt;
use hyper::body::Body as _;

use crate::body::{Body, Replayable, TeeBody};
use crate::runtime::CompiledGateway;
use crate::server::Shared;
use crate::upstream::{UpstreamError, UpstreamTls};

/// Base interval of the backoff when the route names none.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
/// The longest wait between attempts, in base intervals.
const MAX_BACKOFF_FACTOR: u32 = 10;
/// Retries in flight that a route always allows, whatever its load.
const MIN_RETRY_CONCURRENCY: u32 = 3;
/// Beyond those, the share of the route's requests in flight that may be retrying, in percent.
const RETRY_BUDGET_PERCENT: u32 = 20;

/// Why a backend request got no answer to pass on.
#[derive(Debug)]
pub(super) enum Unanswered {
    /// The request or backend request timeout passed.
    TimedOut,
    Failed(UpstreamError),
}

/// How one attempt ended, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    /// The backend answered with this status.
    Answered(u16),
    /// No connection could be made: the backend never saw the request.
    NotConnected,
    /// No answer within the backend request timeout.
    TimedOut,
    /// Failed after the request may have reached the backend (reset, malformed answer).
    Failed,
}

impl Attempt {
    fn of(outcome: &Result<Response<Body>, Unanswered>) -> Self {
        match outcome {
            Ok(response) => Self::Answered(response.status().as_u16()),
            Err(Unanswered::TimedOut) => Self::TimedOut,
            // A TLS handshake that failed (not a refusal of ours to use TLS at all).
            Err(Unanswered::Failed(e))
                if e.is_connect()
                    || matches!(e, UpstreamError::Tls(_, io) if io.kind() != std::io::ErrorKind::Other) =>
            {
                Self::NotConnected
            }
            Err(Unanswered::Failed(_)) => Self::Failed,
        }
    }
}

/// Why an attempt that ended this way is tried again (the metric's `reason`), if it is.
fn reason_to_retry(retry: &RetryIr, attempt: Attempt, repeatable: bool) -> Option<&'static str> {
    match attempt {
        Attempt::NotConnected => Some("connect_error"),
        Attempt::Answered(code) if repeatable && retry.codes.binary_search(&code).is_ok() => {
            Some("status_code")
        }
        Attempt::TimedOut if repeatable => Some("backend_timeout"),
        _ => None,
    }
}

/// Whether a request may reach the backend twice: an idempotent method (RFC 9110 §9.2.2) or a
/// request with an `Idempotency-Key`, which asks the backend to carry it out once.
fn repeatable(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// The wait before retry number `retry` (1 for the first): doubling from `base` up to ten
/// times `base`, plus up to half as much again at random so that clients failed together do
/// not come back together. Never shorter than `base`.
fn backoff(base: Duration, retry: u32, rng: &mut impl Rng) -> Duration {
    let doubled = base.saturating_mul(1 << retry.saturating_sub(1).min(16));
    let step = doubled.min(base.saturating_mul(MAX_BACKOFF_FACTOR));
    step.saturating_add((step / 2).mul_f64(rng.random::<f64>()))
}

/// Reads a small answer that is not passed on to its end, so that its connection goes back to
/// the pool instead of being closed (a failing backend is not also made to accept new
/// connections); a larger or slow one is dropped.
async fn discard(response: Response<Body>) {
    const SMALL: u64 = 16 * 1024;
    let body = response.into_body();
    if body.size_hint().upper().is_some_and(|upper| upper <= SMALL) {
        let _ = tokio::time::timeout(Duration::from_millis(250), body.collect()).await;
    }
}

/// How many of one route's requests are in flight and how many of them are retrying: retries
/// are allowed while fewer than [`MIN_RETRY_CONCURRENCY`] or [`RETRY_BUDGET_PERCENT`] of the
/// requests in flight are retrying, so a backend that fails everything sees at most that much
/// more load, however many attempts the route allows.
#[derive(Debug, Default)]
pub(crate) struct RetryBudget {
    in_flight: AtomicU32,
    retrying: AtomicU32,
}

impl RetryBudget {
    fn enter(&self) -> Held<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Held(&self.in_flight)
    }

    fn try_retry(&self) -> Option<Held<'_>> {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let allowed = MIN_RETRY_CONCURRENCY.max(in_flight.saturating_mul(RETRY_BUDGET_PERCENT) / 100);
        self.retrying
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| (now < allowed).then_some(now + 1))
            .ok()
            .map(|_| Held(&self.retrying))
    }
}

/// One count of a [`RetryBudget`], given back when dropped.
struct Held<'a>(&'a AtomicU32);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backend a request goes to, and where it is in the Gateway.
pub(super) struct Target<'a> {
    pub shared: &'a Shared,
    pub gateway: &'a CompiledGateway,
    /// The route entry's index.
    pub index: usize,
    /// The backend's index in the entry's backends.
    pub chosen: usize,
    pub backend: &'a BackendIr,
    pub tls: Option<&'a Arc<UpstreamTls>>,
    /// The endpoint of the first attempt.
    pub authority: Arc<str>,
}

impl Target<'_> {
    /// The endpoint of the next attempt: the backend's next one (another, when it has several).
    fn next_authority(&self) -> Arc<str> {
        match &self.backend.target {
            BackendTarget::Endpoints { .. } => {
                self.gateway.next_endpoint(self.index, self.chosen).cloned().unwrap_or(self.authority.clone())
            }
            _ => self.authority.clone(),
        }
    }

    fn count(&self, skipped: bool, reason: &'static str) {
        let metrics = &self.shared.metrics;
        let family = if skipped { &metrics.upstream_retries_skipped } else { &metrics.upstream_retries };
        family.get_or_create(&self.gateway.route_metrics[self.index].retry_labels(reason)).inc();
    }

    /// One backend request, given up at `deadline`.
    async fn attempt(
        &self,
        authority: &Arc<str>,
        request: Request<Body>,
        deadline: Option<Instant>,
    ) -> Result<Response<Body>, Unanswered> {
        let call = self.shared.client.send_in(self.backend.protocol, authority, self.tls, request, &());
        match deadline {
            Some(at) => match tokio::time::timeout_at(at, call).await {
                Ok(result) => result.map_err(Unanswered::Failed),
                Err(_) => Err(Unanswered::TimedOut),
            },
            None => call.await.map_err(Unanswered::Failed),
        }
    }
}

/// Sends the request to `target`, trying again as `retry` says. The request timeout (or, when
/// the route sets neither timeout, the server's default) bounds all attempts and waits
/// together; the backend request timeout bounds each attempt. The first attempt streams the
/// body as the client sends it, keeping it for the next ones (up to the server's limits).
pub(super) async fn send(
    target: Target<'_>,
    retry: &RetryIr,
    timeouts: &TimeoutsIr,
    parts: http::request::Parts,
    body: TeeBody<Body>,
) -> Result<Response<Body>, Unanswered> {
    let started = Instant::now();
    let settings = &target.shared.settings;
    let request_timeout = match (timeouts.request_ms, timeouts.backend_request_ms) {
        (Some(ms), _) => Some(Duration::from_millis(ms)),
        (None, None) => settings.default_request_timeout,
        (None, Some(_)) => None,
    };
    let request_deadline = request_timeout.map(|d| started + d);
    let per_attempt = timeouts.backend_request_ms.map(Duration::from_millis);
    let attempt_deadline =
        || [request_deadline, per_attempt.map(|d| Instant::now() + d)].into_iter().flatten().min();
    let budget = target.gateway.retry_budget(target.index);
    let _in_flight = budget.map(RetryBudget::enter);
    let repeatable = repeatable(&parts.method, &parts.headers);
    let base = retry.backoff_ms.map_or(DEFAULT_BACKOFF, Duration::from_millis);

    let (replay, mut body) =
        Replayable::new(body.boxed(), settings.retry_body_limit, target.shared.replay_memory.clone());
    let mut authority = target.authority.clone();
    let mut retries = 0;
    let mut _retrying = None;
    loop {
        let request = Request::from_parts(parts.clone(), body.boxed());
        let outcome = target.attempt(&authority, request, attempt_deadline()).await;
        let reason = reason_to_retry(retry, Attempt::of(&outcome), repeatable);
        let Some(reason) = reason.filter(|_| retries < retry.attempts) else { return outcome };
        let resume = Instant::now() + backoff(base, retries + 1, &mut rand::rng());
        if request_deadline.is_some_and(|at| at <= resume) {
            // No time for another attempt: what the last one got is the answer.
            return outcome;
        }
        // The last retry's place is given back before asking for the next one.
        _retrying = None;
        match budget.and_then(RetryBudget::try_retry) {
            Some(permit) => _retrying = Some(permit),
            None => {
                target.count(true, "budget_exhausted");
                return outcome;
            }
        }
        // From here the request is sent again: the last attempt's body stops reading. None:
        // more of it was sent than could be kept.
        let Some(again) = replay.again() else {
            target.count(true, "body_too_large");
            return outcome;
        };
        if let Ok(response) = outcome {
            discard(response).await;
        }
        retries += 1;
        tokio::time::sleep_until(resume).await;
        target.count(false, reason);
        body = again;
        authority = target.next_authority();
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn retry(codes: &[u16]) -> RetryIr {
        RetryIr { codes: codes.to_vec(), attempts: 2, backoff_ms: None }
    }

    #[test]
    fn connection_failures_are_retried_for_any_method_and_answers_only_for_repeatable_ones() {
        let codes = retry(&[500, 503]);
        assert_eq!(reason_to_retry(&codes, Attempt::NotConnected, false), Some("connect_error"));
        assert_eq!(reason_to_retry(&codes, Attempt::Answered(503), true), Some("status_code"));
        assert_eq!(reason_to_retry(&codes, Attempt::Answered(503), false), None);
        assert_eq!(reason_to_retry(&codes, Attempt::Answered(502), true), None);
        assert_eq!(reason_to_retry(&codes, Attempt::Answered(200), true), None);
        assert_eq!(reason_to_retry(&codes, Attempt::TimedOut, true), Some("backend_timeout"));
        assert_eq!(reason_to_retry(&codes, Attempt::TimedOut, false), None);
        assert_eq!(reason_to_retry(&codes, Attempt::Failed, true), None);
        assert_eq!(reason_to_retry(&retry(&[]), Attempt::Answered(500), true), None);
    }

    #[test]
    fn idempotent_methods_and_idempotency_keys_make_a_request_repeatable() {
        let none = HeaderMap::new();
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert!(repeatable(&method, &none), "{method}");
        }
        assert!(!repeatable(&Method::POST, &none));
        assert!(!repeatable(&Method::PATCH, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", "8e03978e".parse().unwrap());
        assert!(repeatable(&Method::POST, &keyed));
    }

    #[test]
    fn backoff_doubles_from_its_base_up_to_ten_times_it_never_below_the_base() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        for (retry, step) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)] {
            for _ in 0..50 {
                let wait = backoff(base, retry, &mut rng);
                let step = Duration::from_millis(step);
                assert!(wait >= step && wait <= step * 3 / 2, "retry {retry}: {wait:?}");
            }
        }
        assert_eq!(backoff(Duration::ZERO, 3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn the_budget_allows_three_retries_or_a_fifth_of_the_requests_in_flight() {
        let budget = RetryBudget::default();
        let requests: Vec<_> = (0..10).map(|_| budget.enter()).collect();
        let permits: Vec<_> = (0..3).map(|_| budget.try_retry().expect("three always")).collect();
        assert!(budget.try_retry().is_none(), "10 in flight: 3 retrying is the most");
        let more: Vec<_> = (0..20).map(|_| budget.enter()).collect();
        let fourth = budget.try_retry();
        let fifth = budget.try_retry();
        let sixth = budget.try_retry();
        let seventh = budget.try_retry();
        assert!(fourth.is_some() && fifth.is_some() && sixth.is_some(), "30 in flight: 6 may retry");
        assert!(seventh.is_none());
        drop((permits, fourth));
        assert!(budget.try_retry().is_some(), "a finished retry gives its place back");
        drop((requests, more));
        assert_eq!(budget.in_flight.load(Ordering::Relaxed), 0);
    }
}
