//! Leases: requests a replica admits without a round trip to the shared store, because the
//! store has already counted them.
//!
//! A busy bucket's call to the store asks for a few requests more than the one it decides; the
//! store counts them at once (rate and quota alike) and grants them only while both limits keep
//! plenty of room (see [`SCRIPT`](super::SCRIPT)). The replica then admits that many of its next
//! requests on the bucket itself, each decided by the same [`limit`] on its copy of the bucket, so
//! the answers and headers are the ones the store would have given. Every admitted request was
//! counted in the store before it was admitted: leases never admit more than the limits across
//! replicas. What a lease costs is the other way: requests leased and not used before the lease
//! ends (a bucket that goes quiet, a replica that stops) stay counted without being served.
//!
//! A lease's size follows the bucket's traffic: it doubles while the store is asked again
//! within [`BUSY`] of the last call (up to the configured maximum) and halves otherwise, so a
//! lease holds about [`BUSY`]'s worth of requests and a quiet bucket has none. One call at a
//! time asks for a key's lease, and a lease down to a quarter is renewed by a call in the
//! background, so that a busy key's requests seldom wait for the store.

use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::quota::Period;
use super::rate::{Gcra, NANOS_PER_SECOND};
use super::state::Counters;
use super::{limit, Limited};
use crate::fast_hash::{FastMap, SeededState};

/// Both limits must keep at least this many requests of room after a lease for it to be
/// granted (and 16 times the lease): a small limit is always decided by the store.
pub const MIN_ROOM: u64 = 256;
/// A bucket asked about again within this time (ns) is busy: its lease grows.
const BUSY: i128 = 50_000_000;
/// How long (ns) a lease's requests may be used: they were counted when it was granted.
const LIFETIME: i128 = 1_000_000_000;
/// Buckets kept without a lease or a call for this long (ns) are forgotten.
const FORGET_AFTER: i128 = 10_000_000_000;
const SHARDS: usize = 16;

/// The rate limit and quota a lease was granted under.
type Limits = (Option<Gcra>, Option<(u64, Period)>);

/// One bucket's lease.
#[derive(Debug)]
struct Lease {
    /// The limits it was granted under: other limits (a reload) end it.
    limits: Limits,
    /// The bucket after the requests admitted from it so far.
    bucket: Counters,
    /// Requests left to admit.
    left: u32,
    /// When the store was last asked about the bucket (a busy bucket's lease grows), and when
    /// the lease ends (ns since the epoch).
    last_call: i128,
    ends_at: i128,
    /// Requests asked for at the last call.
    size: u32,
    /// A call asking for a lease is under way until then (ns): other requests that miss ask
    /// for none meanwhile, so that a burst of misses does not turn into a lease each.
    asking_until: i128,
}

impl Lease {
    /// Holds requests for `limits` at `now`, in the quota window ending at `window_end` (ns).
    /// (Not compared with when it was granted: requests decided at once are stamped in any
    /// order.)
    fn usable(&self, limits: Limits, now: i128, window_end: Option<i128>) -> bool {
        let same_window = window_end_of(&self.bucket) == window_end;
        self.left > 0 && now < self.ends_at && self.limits == limits && same_window
    }

    /// The store was asked about the bucket within [`BUSY`] before `now`.
    fn busy(&self, now: i128) -> bool {
        now >= self.last_call && now - self.last_call < BUSY
    }
}

/// The end (ns) of the quota window `bucket` counts in, if it has a quota.
fn window_end_of(bucket: &Counters) -> Option<i128> {
    bucket.quota.map(|q| i128::from(q.window.end) * NANOS_PER_SECOND)
}

/// `bucket` with `requests` of its counted requests taken back (rate and quota).
fn unadmitted(mut bucket: Counters, rate: Option<Gcra>, requests: u32) -> Counters {
    if let Some(gcra) = rate {
        bucket.tat -= gcra.interval() * i128::from(requests);
    }
    if let Some(quota) = &mut bucket.quota {
        quota.count = quota.count.saturating_sub(u64::from(requests));
    }
    bucket
}

/// One shard of the leases, and its size after the last sweep of forgotten buckets.
#[derive(Debug, Default)]
struct Shard {
    leases: FastMap<String, Lease>,
    swept_at_len: usize,
}

impl Shard {
    /// Forgets quiet buckets before `key` is added, when the shard has doubled since the last
    /// sweep (and holds at least 1,024): a sweep per insert would rescan a large shard under its
    /// lock each time.
    fn sweep_before_adding(&mut self, key: &str, now: i128) {
        if self.leases.len() >= self.swept_at_len.max(512) * 2 && !self.leases.contains_key(key) {
            self.leases.retain(|_, l| l.left > 0 && now < l.ends_at || now - l.last_call < FORGET_AFTER);
            self.swept_at_len = self.leases.len();
        }
    }
}

/// A shard's lock; a panic while it was held leaves nothing half-done worth refusing for.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The leases of one replica, by bucket key.
#[derive(Debug)]
pub struct Leases {
    max: u32,
    shards: [Mutex<Shard>; SHARDS],
    hasher: SeededState,
}

impl Leases {
    /// Leases of at most `max` requests; 0: every decision is a call.
    pub fn new(max: u32) -> Self {
        Self { max, shards: std::array::from_fn(|_| Mutex::default()), hasher: SeededState::default() }
    }

    /// The locked shard of `key`.
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // The modulo of a u64 by a small constant always fits in usize.
        lock(&self.shards[(self.hasher.hash_one(key) % SHARDS as u64) as usize])
    }

    /// Decides a request on `key` from its lease, when it holds a request for these limits
    /// at `now`; `None`: ask the store.
    pub(super) fn take(&self, key: &str, limits: Limits, now: i128) -> Option<Limited> {
        if self.max == 0 {
            return None;
        }
        let mut shard = self.shard(key);
        let lease = shard.leases.get_mut(key)?;
        if lease.left == 0 || now >= lease.ends_at || lease.limits != limits {
            return None;
        }
        // The copy refuses only for a request stamped before the lease's own (the store kept
        // room for all of it): that one goes to the store, the lease stays for the next.
        match limit(limits.0, limits.1, &mut lease.bucket, now) {
            allowed @ Limited::Allowed(_) => {
                lease.left -= 1;
                Some(allowed)
            }
            Limited::Refused { .. } => None,
        }
    }

    /// How many requests beyond this one to ask for at a call on `key` at `now`; one call at
    /// a time asks (until `record`, or for `asking_for` ns when its answer never comes).
    pub(super) fn wanted(&self, key: &str, now: i128, asking_for: i128) -> u32 {
        if self.max == 0 {
            return 0;
        }
        let mut shard = self.shard(key);
        let Some(lease) = shard.leases.get_mut(key) else { return 0 };
        if now < lease.asking_until {
            return 0;
        }
        let wanted =
            if lease.busy(now) { lease.size.saturating_mul(2).clamp(1, self.max) } else { lease.size / 2 };
        if wanted > 0 {
            lease.asking_until = now + asking_for;
        }
        wanted
    }

    /// When a request just taken from `key`'s lease left a quarter of it or less and no call is
    /// asking: how many requests to ask for ahead, in a call of their own made in the
    /// background, so that the lease is renewed before it runs out (0: none).
    pub(super) fn renewal(&self, key: &str, now: i128, asking_for: i128) -> u32 {
        if self.max == 0 {
            return 0;
        }
        let mut shard = self.shard(key);
        let Some(lease) = shard.leases.get_mut(key) else { return 0 };
        if lease.size < 4 || lease.left > lease.size / 4 || now < lease.asking_until {
            return 0;
        }
        lease.asking_until = now + asking_for;
        if lease.busy(now) {
            lease.size.saturating_mul(2).min(self.max)
        } else {
            lease.size
        }
    }

    /// Records the answer to a renewal of `size` requests (its own request and `size - 1`
    /// more asked for): the call's own request is leased too. `bucket` is the bucket after it.
    pub(super) fn record_renewal(
        &self,
        key: &str,
        limits: Limits,
        bucket: Counters,
        size: u32,
        granted: u32,
        now: i128,
    ) {
        let size = if granted + 1 == size { size } else { 0 };
        let bucket = unadmitted(bucket, limits.0, 1);
        self.keep(key, limits, bucket, size, granted + 1, now);
    }

    /// A renewal that was refused or not answered: the next miss may ask again.
    pub(super) fn renewal_failed(&self, key: &str) {
        let mut shard = self.shard(key);
        if let Some(lease) = shard.leases.get_mut(key) {
            lease.asking_until = 0;
            lease.size = 0;
        }
    }

    /// Records the store's answer to a call on `key` at `now` that asked for `asked` more and
    /// was granted `granted`; `bucket` is the bucket after the call's own request, `window_end`
    /// (seconds) the end of the quota window it counted in.
    pub(super) fn record(
        &self,
        key: &str,
        limits: Limits,
        bucket: Counters,
        asked: u32,
        granted: u32,
        now: i128,
    ) {
        if self.max == 0 {
            return;
        }
        // Refused: the limits are near; the next calls ask for nothing until traffic says so.
        let size = if granted == asked { asked } else { 0 };
        if asked == 0 {
            self.called(key, limits, bucket, now);
        } else {
            self.keep(key, limits, bucket, size, granted, now);
        }
    }

    /// A call that asked for no lease (another call is asking, or the bucket is quiet) changes
    /// nothing of the lease: it only says when the bucket was last asked about.
    fn called(&self, key: &str, limits: Limits, bucket: Counters, now: i128) {
        let mut shard = self.shard(key);
        shard.sweep_before_adding(key, now);
        match shard.leases.get_mut(key) {
            Some(held) => held.last_call = held.last_call.max(now),
            None => {
                let ends_at = now + LIFETIME;
                let quiet =
                    Lease { limits, bucket, left: 0, last_call: now, ends_at, size: 0, asking_until: 0 };
                shard.leases.insert(key.to_owned(), quiet);
            }
        }
    }

    /// Keeps `granted` requests counted in the store for `key` (with what is held), `bucket`
    /// being the bucket before them; `size` is what the next calls grow from.
    fn keep(&self, key: &str, limits: Limits, bucket: Counters, size: u32, granted: u32, now: i128) {
        let window_end = window_end_of(&bucket);
        let ends_at = window_end.map_or(now + LIFETIME, |end| end.min(now + LIFETIME));
        let mut guard = self.shard(key);
        guard.sweep_before_adding(key, now);
        let shard = &mut guard.leases;
        // Another request's call may have been granted a lease meanwhile (its answer came
        // first): its requests are counted too, so they are kept, never replaced.
        if let Some(held) = shard.get_mut(key).filter(|l| l.usable(limits, now, window_end)) {
            if granted == 0 {
                held.size = 0;
                held.asking_until = 0;
                held.last_call = now;
                return;
            }
            // The store's bucket holds the held requests as counted: this replica's copy counts
            // them as not yet admitted, so that admitting them moves it to where the store is.
            let held_left = held.left;
            let lease = Lease {
                limits,
                bucket: unadmitted(bucket, limits.0, held_left),
                left: granted.saturating_add(held_left),
                last_call: now,
                ends_at,
                size,
                asking_until: 0,
            };
            *held = lease;
            return;
        }
        let lease = Lease { limits, bucket, left: granted, last_call: now, ends_at, size, asking_until: 0 };
        shard.insert(key.to_owned(), lease);
    }

    /// Requests leased and not yet admitted, across buckets (for tests and status).
    pub fn outstanding(&self, now: i128) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = lock(shard);
                shard.leases.values().filter(|l| now < l.ends_at).map(|l| u64::from(l.left)).sum::<u64>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::quota::Window;
    use crate::policy::state::QuotaCount;

    const SECOND: i128 = 1_000_000_000;
    /// How long a call asking for a lease holds off the others, in these tests.
    const ASKING: i128 = 5;

    fn quota_bucket(count: u64) -> Counters {
        let window = Window { start: 0, end: 3_600 };
        Counters { tat: 0, quota: Some(QuotaCount { period: Period::Day, window, count }) }
    }

    #[test]
    fn a_lease_admits_what_it_was_granted_then_hands_back_to_the_store() {
        let leases = Leases::new(256);
        let limits = (None, Some((1_000_000, Period::Day)));
        assert_eq!(leases.wanted("k", 0, ASKING), 0, "a bucket never seen asks for no lease");
        assert!(leases.take("k", limits, 0).is_none());
        leases.record("k", limits, quota_bucket(1), 0, 0, 0);
        // Asked again within BUSY: the lease grows 1, 2, 4, ... up to the maximum.
        assert_eq!(leases.wanted("k", 10, ASKING), 1);
        leases.record("k", limits, quota_bucket(2), 1, 1, 10);
        assert_eq!(leases.wanted("k", 20, ASKING), 2);
        // Granted while the last one is still held: the two add up.
        leases.record("k", limits, quota_bucket(3), 2, 2, 20);
        for _ in 0..3 {
            assert!(matches!(leases.take("k", limits, 30), Some(Limited::Allowed(_))));
        }
        assert!(leases.take("k", limits, 30).is_none(), "only what was granted");
        // The copy of the bucket went on counting: the headers say 5 counted.
        leases.record("k", limits, quota_bucket(5), 4, 4, 40);
        match leases.take("k", limits, 50) {
            Some(Limited::Allowed(l)) => assert_eq!(l.quota_left, Some(1_000_000 - 6)),
            _ => panic!("no lease"),
        }
        assert_eq!(leases.outstanding(50), 3);
        // Other limits (a reload) or a time after it ends: the store decides.
        assert!(leases.take("k", (None, Some((10, Period::Day))), 50).is_none());
        assert!(leases.take("k", limits, 40 + LIFETIME).is_none());
        assert_eq!(leases.outstanding(40 + LIFETIME), 0);
        // A refused lease resets the size and keeps what is held; a lease granted meanwhile
        // adds to it; a quiet bucket halves the size.
        leases.record("k", limits, quota_bucket(9), 8, 0, 60);
        assert_eq!(leases.outstanding(60), 3);
        assert_eq!(leases.wanted("k", 70, ASKING), 1);
        leases.record("k", limits, quota_bucket(10), 64, 64, 80);
        assert_eq!(leases.outstanding(80), 67);
        match leases.take("k", limits, 90) {
            // The 3 held were counted before this answer: the copy counts them as not admitted.
            Some(Limited::Allowed(l)) => assert_eq!(l.quota_left, Some(1_000_000 - 8)),
            _ => panic!("no lease"),
        }
        assert_eq!(leases.wanted("k", 80 + SECOND, ASKING), 32);
    }

    #[test]
    fn one_call_at_a_time_asks_for_a_lease() {
        let leases = Leases::new(256);
        let limits = (None, Some((1_000_000, Period::Day)));
        leases.record("k", limits, quota_bucket(1), 0, 0, 0);
        // Misses at once: the first asks, the others ask for nothing until it is answered.
        assert_eq!(leases.wanted("k", 1, ASKING), 1);
        assert_eq!(leases.wanted("k", 2, ASKING), 0);
        assert_eq!(leases.wanted("k", 3, ASKING), 0);
        // Their plain calls' answers leave the size and the ask alone.
        leases.record("k", limits, quota_bucket(2), 0, 0, 4);
        assert_eq!(leases.wanted("k", 5, ASKING), 0);
        // An answer that never comes holds them off only so long.
        assert_eq!(leases.wanted("k", 1 + ASKING, ASKING), 1);
        leases.record("k", limits, quota_bucket(2), 1, 1, 7);
        assert_eq!(leases.wanted("k", 8, ASKING), 2, "answered: the next call may ask again");
    }

    #[test]
    fn a_lease_is_renewed_ahead_of_its_end_one_renewal_at_a_time() {
        let leases = Leases::new(256);
        let limits = (None, Some((1_000_000, Period::Day)));
        leases.record("k", limits, quota_bucket(1), 8, 8, 0);
        for _ in 0..5 {
            assert!(leases.take("k", limits, 1).is_some());
        }
        assert_eq!(leases.renewal("k", 1, ASKING), 0, "more than a quarter left");
        assert!(leases.take("k", limits, 2).is_some());
        assert_eq!(leases.renewal("k", 2, ASKING), 16, "a quarter left, busy: renewed, larger");
        assert_eq!(leases.renewal("k", 3, ASKING), 0, "one renewal at a time");
        assert_eq!(leases.wanted("k", 3, ASKING), 0, "and no lease asked by a miss meanwhile");
        // The renewal's own request and the 15 more it was granted, with the 2 still held.
        leases.record_renewal("k", limits, quota_bucket(20), 16, 15, 4);
        assert_eq!(leases.outstanding(4), 18);
        match leases.take("k", limits, 5) {
            // 20 counted in the store, 17 of them admitted (the renewal's own and 2 held not).
            Some(Limited::Allowed(l)) => assert_eq!(l.quota_left, Some(1_000_000 - 18)),
            _ => panic!("no lease"),
        }
        leases.renewal_failed("k");
        assert_eq!(leases.renewal("k", 6, ASKING), 0, "a failed renewal starts the size again");
    }

    #[test]
    fn a_lease_ends_with_its_quota_window_and_none_is_kept_when_disabled() {
        let leases = Leases::new(256);
        let limits = (None, Some((1_000_000, Period::Day)));
        let end = 3_600 * SECOND;
        leases.record("k", limits, quota_bucket(1), 8, 8, end - 10);
        assert!(leases.take("k", limits, end - 5).is_some());
        assert!(leases.take("k", limits, end).is_none(), "requests of a window past");
        let off = Leases::new(0);
        off.record("k", limits, quota_bucket(1), 8, 8, 0);
        assert_eq!(off.wanted("k", 1, ASKING), 0);
        assert!(off.take("k", limits, 1).is_none());
    }

    #[test]
    fn the_rate_limit_of_a_lease_is_decided_on_its_copy_of_the_bucket() {
        let leases = Leases::new(256);
        // 10 a second, bursts of 10: a copy at the edge of its burst refuses (a request stamped
        // before the lease's time), the store decides that one, and the lease stays.
        let gcra =
            Gcra::new(&tollbridge_provider::RateLimitIr { requests: 10, period_seconds: 1, burst: 10 });
        let limits = (Some(gcra), None);
        let full = Counters { tat: 10 * gcra.interval(), quota: None };
        leases.record("k", limits, full, 4, 4, 0);
        assert!(leases.take("k", limits, 0).is_none());
        assert_eq!(leases.outstanding(0), 4);
        assert!(matches!(leases.take("k", limits, gcra.interval()), Some(Limited::Allowed(_))));
    }
}
