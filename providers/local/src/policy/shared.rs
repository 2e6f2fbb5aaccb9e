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
/// A lease: ARGV[8] asks for that many requests more than this one, counted now and admitted
/// later by the replica without asking (see [`super::lease`]); they are granted, all or none,
/// only when this request is admitted and both limits keep room for at least 16 times as many
/// and ARGV[9] requests after them, so that near a limit every request is decided here.
///
/// Answers `{tat, count, start, end, granted}`: the bucket as it was, the window it counted in,
/// and the requests leased.
pub const SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local period = ARGV[5]
local window_start = ARGV[6]
local window_end = ARGV[7]
local extra = tonumber(ARGV[8])
local min_room = tonumber(ARGV[9])
local granted = 0
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
  if extra > 0 then
    local room = math.huge
    if interval > 0 then
      room = math.floor((now + interval * burst - new_tat) / interval)
    end
    if quota >= 0 then
      room = math.min(room, quota - count - 1)
    end
    if room - extra >= math.max(16 * extra, min_room) then
      granted = extra
      if interval > 0 then
        new_tat = new_tat + granted * interval
      end
    end
  end
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
    fields[n + 8] = string.format('%.0f', count + 1 + granted)
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
return {tat, count, tonumber(window_start), tonumber(window_end), granted}
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
    /// Requests to lease beyond this one (0: none).
    extra: u32,
}

/// The store's answer: the bucket as it was before the call and the requests leased.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Theoretical arrival time, µs.
    pub tat: i64,
    /// Requests counted in the quota window.
    pub count: u64,
    /// The window's start and end, seconds.
    pub start: i64,
    pub end: i64,
    /// Requests leased beyond this one.
    pub granted: u32,
}

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
            extra: 0,
        }
    }

    /// The same call, asking for `extra` requests more as a lease.
    pub(crate) fn with_lease(self, extra: u32) -> Self {
        Self { extra, ..self }
    }

    /// Requests asked for as a lease.
    pub(crate) fn extra(&self) -> u32 {
        self.extra
    }

    /// The limits this call counts against, as the store sees them (the rate's interval in
    /// whole microseconds).
    pub(crate) fn limits(&self) -> (Option<Gcra>, Option<(u64, Period)>) {
        (self.rate, self.quota.map(|(requests, period, _)| (requests, period)))
    }

    /// This call's time, nanoseconds since the epoch.
    pub(crate) fn now_nanos(&self) -> i128 {
        i128::from(self.now_micros) * NANOS_PER_MICRO
    }

    /// The key of the bucket in the store.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The script's arguments, in order, as numbers and a name: the client writes them without
    /// a string allocated for each.
    pub fn args(&self) -> (i64, i64, u32, i64, &'static str, i64, i64, u32, u64) {
        let (interval, burst) = self.rate.map_or((0, 0), |gcra| {
            (i64::try_from(gcra.interval() / NANOS_PER_MICRO).unwrap_or(i64::MAX), gcra.burst())
        });
        let (quota, period, window) = match self.quota {
            Some((requests, period, window)) => {
                (i64::try_from(requests).unwrap_or(i64::MAX), period.name(), window)
            }
            None => (-1, "", Window { start: 0, end: 0 }),
        };
        let (start, end) = (window.start, window.end);
        (self.now_micros, interval, burst, quota, period, start, end, self.extra, super::lease::MIN_ROOM)
    }

    /// The outcome the script committed to, from the bucket as it was before; and the bucket
    /// after this request alone (what a lease's requests are decided on).
    pub(super) fn limited(&self, reply: Reply) -> (Limited, Counters) {
        let Reply { tat, count, start, end, .. } = reply;
        let mut counters = Counters {
            tat: i128::from(tat) * NANOS_PER_MICRO,
            quota: self.quota.map(|(_, period, window)| QuotaCount {
                period,
                // The window the store counted in: this replica's, or a stored one not yet over.
                window: if end > 0 { Window { start, end } } else { window },
                count,
            }),
        };
        let (rate, quota) = self.limits();
        let limited = limit(rate, quota, &mut counters, self.now_nanos());
        (limited, counters)
    }
}
