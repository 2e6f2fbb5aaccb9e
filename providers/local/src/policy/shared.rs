//! Counting in a shared store (Redis), so that every replica of a Gateway counts against one
//! bucket per (policy, key).
//!
//! One script call per decision does what [`limit`](super::limit) does on a local bucket,
//! atomically on the server: read the bucket, decide rate then quota, commit only when both
//! allow, and let the bucket expire when it holds nothing a fresh one would not. It answers with
//! the bucket as it was before the call, and [`Call::limited`] runs the same `limit` on that
//! state to build the very answer (and headers) the script committed to.
//!
//! Times in the store are whole microseconds since the Unix epoch (Lua numbers are doubles,
//! exact up to 2^53, which microseconds reach in the year 2255), so the rate limit's interval is
//! rounded up to a whole microsecond for both sides.

use jiff::Timestamp;

use super::quota::{Period, Window};
use super::rate::Gcra;
use super::state::{Counters, QuotaCount, Subject};
use super::{limit, Limited};

/// The decision script. KEYS[1]: the bucket, a hash of `tat` (µs), the quota window it counts
/// (`period`, `start` and `end` in seconds, `count`, and `seen`: when (µs) the last request was
/// counted) and `expires` (µs, by the replicas' clocks: when the bucket's lifetime last set
/// ends). ARGV: now (µs), rate interval (µs, 0: no rate limit), burst, quota (-1: no quota), the
/// period's name, and the start and end of the window holding `now` by this replica's clock.
///
/// A stored window of the same period that has not ended is counted against, even when this
/// replica's clock puts `now` in the next one (as the in-process counters do), so replicas a
/// second apart at a period's end do not reset each other's counts. The bucket's lifetime is
/// set relative to `now` (so the store's own clock does not matter), a minute past the end of
/// what it holds, and lengthened only when the new end is past `expires`: with a quota, once per
/// window, not once per request. The minute covers replicas whose clocks differ (`expires` is
/// written by whichever replica's clock): a replica behind another still finds the bucket.
///
/// Two commands per decision (`HMGET`, `HSET`), a third when the lifetime grows: each command a
/// script calls costs the store about a microsecond more, and a store is one thread shared by
/// every replica.
///
/// Answers `{tat, count, start, end}`: the bucket as it was, and the window it counted in.
pub const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local period = ARGV[5]
local window_start = ARGV[6]
local window_end = ARGV[7]
local stored = redis.call('HMGET', KEYS[1], 'tat', 'period', 'start', 'end', 'count', 'expires')
local tat = tonumber(stored[1]) or 0
local count = 0
if quota >= 0 and stored[2] == period and now < (tonumber(stored[4]) or 0) * 1000000 then
  window_start = stored[3]
  window_end = stored[4]
  count = tonumber(stored[5]) or 0
end
local new_tat = 0
local rate_allows = true
if interval > 0 then
  new_tat = math.max(tat, now) + interval
  rate_allows = new_tat - now <= interval * burst
end
if rate_allows and (quota < 0 or count < quota) then
  local fields = {}
  local lasts_until = new_tat
  if interval > 0 then
    fields = {'tat', string.format('%.0f', new_tat)}
  end
  if quota >= 0 then
    local n = #fields
    fields[n + 1] = 'period'
    fields[n + 2] = period
    fields[n + 3] = 'start'
    fields[n + 4] = window_start
    fields[n + 5] = 'end'
    fields[n + 6] = window_end
    fields[n + 7] = 'count'
    fields[n + 8] = string.format('%.0f', count + 1)
    fields[n + 9] = 'seen'
    fields[n + 10] = ARGV[1]
    lasts_until = math.max(lasts_until, tonumber(window_end) * 1000000)
  end
  local expires = lasts_until + 60000000
  local lengthen = expires > (tonumber(stored[6]) or 0)
  if lengthen then
    fields[#fields + 1] = 'expires'
    fields[#fields + 1] = string.format('%.0f', expires)
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  if lengthen then
    redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil((expires - now) / 1000)))
  end
end
return {tat, count, tonumber(window_start), tonumber(window_end)}
"#;

const NANOS_PER_MICRO: i128 = 1_000;

/// The store's key of the bucket of (`policy`, `subject`): `PREFIX:NAMESPACE/POLICY:SUBJECT`,
/// the subject being the key's SHA-256 in hex or `anonymous`.
pub(crate) fn bucket_name(prefix: &str, policy: &str, subject: Subject) -> String {
    match subject {
        Subject::Anonymous => format!("{prefix}:{policy}:anonymous"),
        Subject::Key(hash) => format!("{prefix}:{policy}:{}", hash.to_hex()),
    }
}

/// One decision to ask the store for: the bucket's key and the script's arguments.
#[derive(Debug)]
pub struct Call {
    key: String,
    now_micros: i64,
    rate: Option<Gcra>,
    quota: Option<(u64, Period, Window)>,
}

/// The bucket as the store held it before the call: `(tat in µs, requests counted in the
/// quota window, the window's start and end in seconds)`.
pub type Reply = (i64, u64, i64, i64);

impl Call {
    pub(crate) fn new(
        prefix: &str,
        policy: &str,
        subject: Subject,
        rate: Option<Gcra>,
        quota: Option<(u64, Period)>,
        now: Timestamp,
    ) -> Self {
        let now_micros = now.as_microsecond();
        let second = now_micros.div_euclid(1_000_000);
        Self {
            key: bucket_name(prefix, policy, subject),
            now_micros,
            rate: rate.map(|gcra| gcra.rounded_up_to(NANOS_PER_MICRO)),
            quota: quota.map(|(requests, period)| (requests, period, Window::containing(period, second))),
        }
    }

    /// The key of the bucket in the store.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The script's arguments, in order, as numbers and a name: the client writes them without
    /// a string allocated for each.
    pub fn args(&self) -> (i64, i64, u32, i64, &'static str, i64, i64) {
        let (interval, burst) = self.rate.map_or((0, 0), |gcra| {
            (i64::try_from(gcra.interval() / NANOS_PER_MICRO).unwrap_or(i64::MAX), gcra.burst())
        });
        let (quota, period, window) = match self.quota {
            Some((requests, period, window)) => {
                (i64::try_from(requests).unwrap_or(i64::MAX), period.name(), window)
            }
            None => (-1, "", Window { start: 0, end: 0 }),
        };
        (self.now_micros, interval, burst, quota, period, window.start, window.end)
    }

    /// The outcome the script committed to, from the bucket as it was before.
    pub(super) fn limited(&self, (tat_micros, count, start, end): Reply) -> Limited {
        let mut counters = Counters {
            tat: i128::from(tat_micros) * NANOS_PER_MICRO,
            quota: self.quota.map(|(_, period, window)| QuotaCount {
                period,
                // The window the store counted in: this replica's, or a stored one not yet over.
                window: if end > 0 { Window { start, end } } else { window },
                count,
            }),
        };
        let now = i128::from(self.now_micros) * NANOS_PER_MICRO;
        limit(self.rate, self.quota.map(|(requests, period, _)| (requests, period)), &mut counters, now)
    }
}
