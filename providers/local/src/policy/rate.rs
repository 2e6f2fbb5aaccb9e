//! Rate limiting with the generic cell rate algorithm (GCRA).
//!
//! A bucket is one number, the theoretical arrival time (TAT): the instant at which the bucket
//! would be full again had no request arrived since. A request is allowed when, after adding one
//! emission interval to the TAT, the TAT is at most `burst` intervals ahead of now. This is a token
//! bucket of size `burst` refilled with one token every `period / requests`, without a timer.

use tollbridge_provider::RateLimitIr;

pub(crate) const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The compiled parameters of one rate limit. Times are nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Nanoseconds between two requests at the sustained rate.
    interval: i128,
    /// Requests allowed at once (the bucket size), at least 1.
    burst: u32,
}

/// What a bucket says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateOutcome {
    pub(crate) allowed: bool,
    /// The TAT to store if the request goes through.
    pub(crate) new_tat: i128,
    /// Requests that could be sent right now after this one (this one not counted when denied).
    pub(crate) remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub(crate) full_in: i128,
    /// Nanoseconds until a request would be allowed; 0 when allowed.
    pub(crate) retry_in: i128,
}

impl Gcra {
    /// `requests` per `period_seconds`, bursts of up to `burst`. Zero values (rejected by the CRD)
    /// are raised to 1 so a bad object can never divide by zero.
    pub(crate) fn new(limit: &RateLimitIr) -> Self {
        let requests = i128::from(limit.requests.max(1));
        let period = i128::from(limit.period_seconds.max(1)) * NANOS_PER_SECOND;
        Self { interval: (period / requests).max(1), burst: limit.burst.max(1) }
    }

    /// The same limit with its interval rounded up to a multiple of `unit` nanoseconds.
    pub(crate) fn rounded_up_to(self, unit: i128) -> Self {
        Self { interval: (self.interval + unit - 1) / unit * unit, ..self }
    }

    /// Nanoseconds between two requests at the sustained rate.
    pub(crate) fn interval(&self) -> i128 {
        self.interval
    }

    /// The bucket size: the `q` of the advertised policy.
    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }

    fn capacity(&self) -> i128 {
        self.interval * i128::from(self.burst)
    }

    /// Whole seconds an empty bucket takes to fill (rounded up, at least 1): the advertised `w`.
    pub(crate) fn window_seconds(&self) -> u64 {
        seconds_ceil(self.capacity()).max(1)
    }

    /// Decides one request at `now` against the stored `tat` (0 for a new bucket). Pure: the
    /// caller stores `new_tat` only when it lets the request through.
    pub(crate) fn decide(&self, tat: i128, now: i128) -> RateOutcome {
        let base = tat.max(now);
        let new_tat = base + self.interval;
        let capacity = self.capacity();
        if new_tat - now <= capacity {
            RateOutcome {
                allowed: true,
                new_tat,
                remaining: self.tokens(capacity - (new_tat - now)),
                full_in: new_tat - now,
                retry_in: 0,
            }
        } else {
            let (remaining, full_in) = self.current(tat, now);
            RateOutcome { allowed: false, new_tat, remaining, full_in, retry_in: new_tat - capacity - now }
        }
    }

    /// Requests possible right now and nanoseconds until the bucket is full, consuming nothing.
    pub(crate) fn current(&self, tat: i128, now: i128) -> (u64, i128) {
        let ahead = (tat - now).max(0);
        (self.tokens(self.capacity() - ahead), ahead)
    }

    fn tokens(&self, spare: i128) -> u64 {
        u64::try_from(spare.max(0) / self.interval).unwrap_or(u64::MAX)
    }
}

/// Nanoseconds rounded up to whole seconds, saturating; negative values give 0.
pub(crate) fn seconds_ceil(nanos: i128) -> u64 {
    let secs = (nanos.max(0) + NANOS_PER_SECOND - 1) / NANOS_PER_SECOND;
    u64::try_from(secs).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = NANOS_PER_SECOND;

    fn gcra(requests: u32, period_seconds: u64, burst: u32) -> Gcra {
        Gcra::new(&RateLimitIr { requests, period_seconds, burst })
    }

    /// Runs requests at the given instants, storing the TAT of the allowed ones.
    fn run(limit: Gcra, times: &[i128]) -> Vec<bool> {
        let mut tat = 0;
        times
            .iter()
            .map(|&now| {
                let out = limit.decide(tat, now);
                if out.allowed {
                    tat = out.new_tat;
                }
                out.allowed
            })
            .collect()
    }

    #[test]
    fn burst_then_steady_rate() {
        // 2 per second (one every 500 ms), bursts of 4.
        let limit = gcra(2, 1, 4);
        let t0 = 1_700_000_000 * S;
        let mut times = vec![t0; 6];
        // Then one request every 250 ms for two seconds: only every other one fits the rate.
        times.extend((1..=8).map(|i| t0 + i * S / 4));
        let allowed = run(limit, &times);
        assert_eq!(allowed[..6], [true, true, true, true, false, false]);
        assert_eq!(allowed[6..], [false, true, false, true, false, true, false, true]);
    }

    #[test]
    fn idle_bucket_refills_to_burst_only() {
        let limit = gcra(1, 1, 3);
        let t0 = 10 * S;
        let allowed = run(limit, &[t0, t0, t0, t0, t0 + 100 * S, t0 + 100 * S, t0 + 100 * S, t0 + 100 * S]);
        assert_eq!(allowed, [true, true, true, false, true, true, true, false]);
    }

    #[test]
    fn remaining_reset_and_retry() {
        let limit = gcra(10, 1, 20);
        let now = 5 * S;
        let first = limit.decide(0, now);
        assert_eq!((first.allowed, first.remaining, first.full_in, first.retry_in), (true, 19, S / 10, 0));
        let mut tat = 0;
        for _ in 0..20 {
            tat = limit.decide(tat, now).new_tat;
        }
        let denied = limit.decide(tat, now);
        assert!(!denied.allowed);
        assert_eq!((denied.remaining, denied.full_in, denied.retry_in), (0, 2 * S, S / 10));
        assert_eq!(seconds_ceil(denied.retry_in), 1);
        assert_eq!(limit.current(tat, now), (0, 2 * S));
        assert_eq!(limit.current(0, now), (20, 0));
        assert_eq!(limit.current(now + S / 2, now), (15, S / 2));
        assert_eq!(limit.window_seconds(), 2);
        assert_eq!(limit.burst(), 20);
    }

    #[test]
    fn slow_rates_and_zero_values() {
        let hourly = gcra(1, 3600, 1);
        let out = hourly.decide(hourly.decide(0, 0).new_tat, 60 * S);
        assert_eq!((out.allowed, seconds_ceil(out.retry_in)), (false, 3540));
        assert_eq!(hourly.window_seconds(), 3600);
        let zero = gcra(0, 0, 0);
        assert_eq!(zero, gcra(1, 1, 1));
        assert_eq!(run(zero, &[0, 0, S]), [true, false, true]);
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds_ceil(-5), 0);
        assert_eq!(seconds_ceil(0), 0);
        assert_eq!(seconds_ceil(1), 1);
        assert_eq!(seconds_ceil(S), 1);
        assert_eq!(seconds_ceil(S + 1), 2);
    }
}
