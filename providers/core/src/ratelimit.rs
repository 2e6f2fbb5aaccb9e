//! A client-side limiter for cloud control-plane calls: one token bucket for every call of an
//! account plus a minimum interval per operation, so a provider stays under the service's
//! limits instead of relying on throttling errors.
//!
//! Each call books its slot (the earliest time both limits allow it) under a short lock and
//! then waits for it with no lock held: a call waiting for its operation's interval does not
//! hold up calls of other operations.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Limits of one account: `rate` calls per second with bursts of `burst`, and operations
/// that may run at most once per interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub rate: f64,
    pub burst: f64,
    pub per_operation: HashMap<&'static str, Duration>,
}

impl Limits {
    /// No limit at all (tests that measure call counts, not pacing).
    pub fn unlimited() -> Self {
        Self { rate: f64::INFINITY, burst: f64::INFINITY, per_operation: HashMap::new() }
    }
}

struct Bucket {
    /// Tokens left; below zero when calls have been booked ahead of the refill.
    tokens: f64,
    updated: Instant,
    /// When the next call of each interval-limited operation may go.
    next_by_operation: HashMap<&'static str, Instant>,
    /// Calls booked so far, by operation.
    granted: HashMap<String, u64>,
}

/// Waits, before each call, until the limits allow it.
pub struct CallLimiter {
    limits: Limits,
    bucket: Mutex<Bucket>,
}

impl CallLimiter {
    pub fn new(limits: Limits) -> Self {
        let bucket = Bucket {
            tokens: limits.burst,
            updated: Instant::now(),
            next_by_operation: HashMap::new(),
            granted: HashMap::new(),
        };
        Self { limits, bucket: Mutex::new(bucket) }
    }

    /// Returns once a call of `operation` may be sent. Slots are booked in arrival order;
    /// a caller that gives up while waiting leaves its slot used (erring on the slow side).
    pub async fn acquire(&self, operation: &str) {
        let slot = self.book(operation);
        tokio::time::sleep_until(slot).await;
    }

    /// Calls of `operation` let through (booked) so far.
    pub fn granted(&self, operation: &str) -> u64 {
        self.lock().granted.get(operation).copied().unwrap_or(0)
    }

    /// Books the earliest slot both limits allow for one call of `operation`. The call's
    /// bucket token is taken now, even when its interval makes it go later.
    fn book(&self, operation: &str) -> Instant {
        let mut bucket = self.lock();
        let now = Instant::now();
        let interval = self.limits.per_operation.get_key_value(operation);
        let mut slot = interval
            .and_then(|(name, _)| bucket.next_by_operation.get(name).copied())
            .unwrap_or(now)
            .max(now);
        if self.limits.rate.is_finite() {
            let refill = now.duration_since(bucket.updated).as_secs_f64() * self.limits.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.limits.burst) - 1.0;
            bucket.updated = now;
            if bucket.tokens < 0.0 {
                slot = slot.max(now + Duration::from_secs_f64(-bucket.tokens / self.limits.rate));
            }
        }
        if let Some((name, interval)) = interval {
            bucket.next_by_operation.insert(name, slot + *interval);
        }
        *bucket.granted.entry(operation.to_string()).or_default() += 1;
        slot
    }

    /// The state; a panic elsewhere while it was held left it consistent (every update is a
    /// plain assignment), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces_at_the_rate() {
        let limiter = CallLimiter::new(Limits { rate: 10.0, burst: 40.0, per_operation: HashMap::new() });
        let start = Instant::now();
        for _ in 0..40 {
            limiter.acquire("GetApis").await;
        }
        assert!(start.elapsed() < Duration::from_millis(1), "the burst is free");
        for _ in 0..10 {
            limiter.acquire("GetApis").await;
        }
        let paced = start.elapsed();
        assert!(paced >= Duration::from_millis(990) && paced < Duration::from_millis(1100), "{paced:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn other_operations_do_not_wait_for_one_waiting_on_its_interval() {
        let per_operation = HashMap::from([("CreateDeployment", Duration::from_secs(5))]);
        let limiter = CallLimiter::new(Limits { rate: 10.0, burst: 40.0, per_operation });
        let start = Instant::now();
        limiter.acquire("CreateDeployment").await;
        let second = limiter.acquire("CreateDeployment");
        tokio::pin!(second);
        // Polled once: the second deployment is now waiting for its interval.
        tokio::select! {
            biased;
            _ = &mut second => panic!("the second deployment went before its interval"),
            _ = std::future::ready(()) => {}
        }
        let other = tokio::time::timeout(Duration::from_secs(1), limiter.acquire("GetApis")).await;
        assert!(other.is_ok(), "GetApis waited behind CreateDeployment's interval");
        assert!(start.elapsed() < Duration::from_millis(1), "{:?}", start.elapsed());
        second.await;
        assert!(start.elapsed() >= Duration::from_secs(5), "{:?}", start.elapsed());
        assert_eq!((limiter.granted("CreateDeployment"), limiter.granted("GetApis")), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_calls_of_one_operation_keep_its_interval() {
        let per_operation = HashMap::from([("UpdateUsagePlan", Duration::from_secs(20))]);
        let limiter = std::sync::Arc::new(CallLimiter::new(Limits { rate: 1.0, burst: 2.0, per_operation }));
        let start = Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire("UpdateUsagePlan").await;
                    start.elapsed().as_secs()
                })
            })
            .collect();
        let mut went = Vec::new();
        for call in calls {
            went.push(call.await.expect("call"));
        }
        went.sort();
        assert_eq!(went, [0, 20, 40]);
        // Refilled to its burst by now: two calls empty it, the third waits for a token.
        limiter.acquire("GetApis").await;
        limiter.acquire("GetApis").await;
        let before = start.elapsed();
        limiter.acquire("GetApis").await;
        assert_eq!(start.elapsed() - before, Duration::from_secs(1));
        assert_eq!(limiter.granted("UpdateUsagePlan"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_operation_waits_for_its_own_interval() {
        let per_operation = HashMap::from([("CreateDeployment", Duration::from_secs(5))]);
        let limiter = CallLimiter::new(Limits { rate: 10.0, burst: 40.0, per_operation });
        let start = Instant::now();
        limiter.acquire("CreateDeployment").await;
        limiter.acquire("GetApis").await;
        assert!(start.elapsed() < Duration::from_millis(1));
        limiter.acquire("CreateDeployment").await;
        assert!(start.elapsed() >= Duration::from_secs(5));
    }
}
