//! A client-side limiter for cloud control-plane calls: one token bucket for every call of an
//! account plus a minimum interval per operation, so a provider stays under the service's
//! limits instead of relying on throttling errors.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::Mutex;
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
    tokens: f64,
    updated: Instant,
    next_by_operation: HashMap<&'static str, Instant>,
}

/// Waits, before each call, until the limits allow it.
pub struct CallLimiter {
    limits: Limits,
    bucket: Mutex<Bucket>,
}

impl CallLimiter {
    pub fn new(limits: Limits) -> Self {
        let bucket =
            Bucket { tokens: limits.burst, updated: Instant::now(), next_by_operation: HashMap::new() };
        Self { limits, bucket: Mutex::new(bucket) }
    }

    /// Returns once a call of `operation` may be sent; calls queue up in arrival order.
    pub async fn acquire(&self, operation: &'static str) {
        let mut bucket = self.bucket.lock().await;
        let now = Instant::now();
        if let Some(next) = bucket.next_by_operation.get(operation).copied() {
            if next > now {
                tokio::time::sleep_until(next).await;
            }
        }
        if self.limits.rate.is_finite() {
            let now = Instant::now();
            let refill = now.duration_since(bucket.updated).as_secs_f64() * self.limits.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.limits.burst);
            bucket.updated = now;
            if bucket.tokens < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.limits.rate);
                tokio::time::sleep(wait).await;
                bucket.tokens = 1.0;
                bucket.updated = Instant::now();
            }
            bucket.tokens -= 1.0;
        }
        if let Some(interval) = self.limits.per_operation.get(operation) {
            let next = Instant::now() + *interval;
            bucket.next_by_operation.insert(operation, next);
        }
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
