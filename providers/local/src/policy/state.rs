//! Counters that outlive configuration reloads, and their persistence.
//!
//! Buckets are keyed by (policy id, key hash or anonymous). Only known keys and one anonymous
//! subject per policy ever get a bucket, so memory is bounded by the configuration. Buckets that
//! hold nothing a fresh bucket would not (a full rate bucket, a quota window that has ended) are
//! dropped by a sweep that runs on a shard at most once a minute.

use std::fmt;
use std::fs;
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::keys::KeyHash;
use super::quota::{Period, Window};
use super::rate::NANOS_PER_SECOND;
use crate::fast_hash::{FastMap, SeededState};

/// The file quota counters are kept in, inside the state directory.
pub const COUNTERS_FILE: &str = "quota-counters.json";
const FILE_VERSION: u32 = 1;
const SHARDS: usize = 64;
const SWEEP_INTERVAL_SECONDS: i64 = 60;

/// Who a bucket counts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Subject {
    /// Requests without a key on a policy that does not require one: one bucket per policy.
    Anonymous,
    Key(KeyHash),
}

/// Identifies one bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BucketKey {
    pub(crate) policy: Arc<str>,
    pub(crate) subject: Subject,
}

/// The counters of one bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// GCRA theoretical arrival time, nanoseconds since the epoch; 0 when never used.
    pub(crate) tat: i128,
    pub(crate) quota: Option<QuotaCount>,
}

/// Requests counted in one quota window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotaCount {
    pub(crate) period: Period,
    pub(crate) window: Window,
    pub(crate) count: u64,
}

impl Counters {
    /// Whether a fresh bucket would behave the same at `now` (nanoseconds).
    fn is_idle(&self, now: i128) -> bool {
        let quota_over =
            self.quota.is_none_or(|q| q.count == 0 || i128::from(q.window.end) * NANOS_PER_SECOND <= now);
        self.tat <= now && quota_over
    }
}

#[derive(Default)]
struct Shard {
    buckets: FastMap<BucketKey, Counters>,
    /// Second of the last sweep.
    swept_at: i64,
}

/// Counters that outlive configuration reloads (and, with a state dir, restarts).
///
/// Shared between request tasks through an `Arc`; each bucket lives in one of a fixed number of
/// mutex-guarded shards, locked only for the few arithmetic operations of one decision.
pub struct PolicyState {
    shards: Box<[Mutex<Shard>]>,
    hasher: SeededState,
}

/// Why quota counters could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read quota counters from {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write quota counters to {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is not a valid quota counter file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl StateError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Write { .. } => "write",
            Self::Corrupt { .. } => "corrupt",
        }
    }
}

/// The persisted form: quota counters only; rate buckets refill within seconds anyway.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CountersFile {
    version: u32,
    counters: Vec<SavedCounter>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SavedCounter {
    /// `namespace/name` of the QuotaPolicy.
    policy: String,
    /// Lower-case hex SHA-256 of the key, or `anonymous`.
    key: String,
    period: Period,
    window_start: Timestamp,
    count: u64,
}

const ANONYMOUS: &str = "anonymous";

impl Default for PolicyState {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PolicyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buckets: usize = self.shards.iter().map(|shard| lock(shard).buckets.len()).sum();
        f.debug_struct("PolicyState").field("shards", &self.shards.len()).field("buckets", &buckets).finish()
    }
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave a bucket half-updated in a harmful way: every
    // update is a single assignment. Keep serving rather than poisoning all later requests.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PolicyState {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), hasher: SeededState::default() }
    }

    fn shard(&self, key: &BucketKey) -> &Mutex<Shard> {
        // The modulo of a u64 by a small constant always fits in usize.
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[index]
    }

    /// Runs `f` on the bucket `key` with its shard locked, creating the bucket if needed.
    pub(crate) fn with_bucket<R>(&self, key: &BucketKey, now: i128, f: impl FnOnce(&mut Counters) -> R) -> R {
        let mut shard = lock(self.shard(key));
        let second = i64::try_from(now.div_euclid(NANOS_PER_SECOND)).unwrap_or(i64::MAX);
        if second.saturating_sub(shard.swept_at) >= SWEEP_INTERVAL_SECONDS {
            shard.swept_at = second;
            shard.buckets.retain(|_, counters| !counters.is_idle(now));
        }
        if let Some(counters) = shard.buckets.get_mut(key) {
            return f(counters);
        }
        f(shard.buckets.entry(key.clone()).or_default())
    }

    /// Requests counted for the key of `query` in its current quota window.
    pub fn quota_count(&self, query: &super::UsageQuery) -> u64 {
        let key = BucketKey { policy: query.policy.as_str().into(), subject: Subject::Key(query.hash) };
        let shard = lock(self.shard(&key));
        let counted = shard.buckets.get(&key).and_then(|counters| counters.quota);
        counted.filter(|q| q.period == query.period && q.window == query.window).map_or(0, |q| q.count)
    }

    /// Number of buckets held (for tests and metrics).
    pub fn bucket_count(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).buckets.len()).sum()
    }

    /// Loads quota counters from `dir/quota-counters.json` (missing file = empty; corrupt file =
    /// error naming the file).
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(COUNTERS_FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let corrupt = |reason: String| StateError::Corrupt { path: path.clone(), reason };
        let file: CountersFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FILE_VERSION {
            return Err(corrupt(format!("unsupported version {} (expected {FILE_VERSION})", file.version)));
        }
        let state = Self::new();
        for saved in file.counters {
            let subject = if saved.key == ANONYMOUS {
                Subject::Anonymous
            } else {
                let hash = KeyHash::from_hex(&saved.key).ok_or_else(|| {
                    corrupt(format!("key of policy {} is not a SHA-256 hex digest", saved.policy))
                })?;
                Subject::Key(hash)
            };
            let start = saved.window_start.as_second();
            let window = Window::containing(saved.period, start);
            if window.start != start {
                return Err(corrupt(format!(
                    "window start {} of policy {} is not the start of a {:?}",
                    saved.window_start, saved.policy, saved.period
                )));
            }
            let key = BucketKey { policy: saved.policy.into(), subject };
            let count = QuotaCount { period: saved.period, window, count: saved.count };
            lock(state.shard(&key)).buckets.insert(key, Counters { tat: 0, quota: Some(count) });
        }
        Ok(state)
    }

    /// Atomically writes quota counters (write temp + rename). Rate-limit buckets are not
    /// persisted. Creates `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(COUNTERS_FILE);
        let mut counters = Vec::new();
        for shard in self.shards.iter() {
            for (key, bucket) in &lock(shard).buckets {
                let Some(quota) = bucket.quota.filter(|q| q.count > 0) else { continue };
                let Ok(window_start) = Timestamp::from_second(quota.window.start) else { continue };
                let key_text = match key.subject {
                    Subject::Anonymous => ANONYMOUS.to_owned(),
                    Subject::Key(hash) => hash.to_hex(),
                };
                counters.push(SavedCounter {
                    policy: key.policy.to_string(),
                    key: key_text,
                    period: quota.period,
                    window_start,
                    count: quota.count,
                });
            }
        }
        counters
            .sort_by(|a, b| (&a.policy, &a.key, a.window_start).cmp(&(&b.policy, &b.key, b.window_start)));
        let file = CountersFile { version: FILE_VERSION, counters };
        let mut text = serde_json::to_vec_pretty(&file)
            .map_err(|e| StateError::Write { path: path.clone(), source: io::Error::other(e) })?;
        text.push(b'\n');
        write_atomically(dir, &path, &text).map_err(|source| StateError::Write { path, source })
    }
}

/// Writes `path` through a temporary file in the same directory and a rename, so a crash leaves
/// either the old or the new file, never a torn one.
fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> io::Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{COUNTERS_FILE}.{}.{sequence}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // Make the rename itself durable; not every platform can sync a directory.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = NANOS_PER_SECOND;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollbridge-policy-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn key(policy: &str, subject: Subject) -> BucketKey {
        BucketKey { policy: policy.into(), subject }
    }

    fn day_count(second: i64, count: u64) -> QuotaCount {
        QuotaCount { period: Period::Day, window: Window::containing(Period::Day, second), count }
    }

    #[test]
    fn save_and_load_round_trip_quota_only() {
        let dir = temp_dir("round-trip");
        let state = PolicyState::new();
        let now = 1_710_000_000;
        let hash = KeyHash::of(b"k1");
        let week =
            QuotaCount { period: Period::Week, window: Window::containing(Period::Week, now), count: 7 };
        state.with_bucket(&key("ns/a", Subject::Key(hash)), i128::from(now) * S, |c| {
            *c = Counters { tat: 99, quota: Some(week) }
        });
        state.with_bucket(&key("ns/a", Subject::Anonymous), i128::from(now) * S, |c| {
            c.quota = Some(day_count(now, 3))
        });
        state.with_bucket(&key("ns/b", Subject::Anonymous), i128::from(now) * S, |c| c.tat = 5);
        state.save(&dir).unwrap();

        let text = fs::read_to_string(dir.join(COUNTERS_FILE)).unwrap();
        assert!(text.contains(&hash.to_hex()) && text.contains("\"anonymous\""), "{text}");
        assert!(!text.contains("ns/b"), "rate-only buckets are not saved: {text}");
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [COUNTERS_FILE], "no temporary file left behind");

        let loaded = PolicyState::load(&dir).unwrap();
        assert_eq!(loaded.bucket_count(), 2);
        let at = i128::from(now) * S;
        let got = loaded.with_bucket(&key("ns/a", Subject::Key(hash)), at, |c| c.clone());
        assert_eq!(got, Counters { tat: 0, quota: Some(week) });
        let got = loaded.with_bucket(&key("ns/a", Subject::Anonymous), at, |c| c.clone());
        assert_eq!(got.quota, Some(day_count(now, 3)));

        // Saving again replaces the file.
        loaded.with_bucket(&key("ns/a", Subject::Anonymous), at, |c| c.quota = Some(day_count(now, 4)));
        loaded.save(&dir).unwrap();
        let again = PolicyState::load(&dir).unwrap();
        assert_eq!(
            again.with_bucket(&key("ns/a", Subject::Anonymous), at, |c| c.quota),
            Some(day_count(now, 4))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_empty_and_corrupt_file_is_named() {
        let dir = temp_dir("corrupt");
        assert_eq!(PolicyState::load(&dir).unwrap().bucket_count(), 0);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(COUNTERS_FILE);
        let cases = [
            ("{not json", "not a valid quota counter file"),
            (r#"{"version": 2, "counters": []}"#, "unsupported version 2"),
            (
                r#"{"version": 1, "counters": [{"policy": "ns/a", "key": "xyz", "period": "Day",
                   "windowStart": "2024-03-10T00:00:00Z", "count": 1}]}"#,
                "key of policy ns/a is not a SHA-256 hex digest",
            ),
            (
                r#"{"version": 1, "counters": [{"policy": "ns/a", "key": "anonymous", "period": "Week",
                   "windowStart": "2024-03-10T00:00:00Z", "count": 1}]}"#,
                "is not the start of a Week",
            ),
        ];
        for (text, expected) in cases {
            fs::write(&path, text).unwrap();
            let error = PolicyState::load(&dir).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(expected), "{message}");
            assert_eq!(error.metric_label(), "corrupt");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_into_an_unwritable_place_names_the_file() {
        let dir = temp_dir("unwritable");
        fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join("file");
        fs::write(&blocker, "x").unwrap();
        let error = PolicyState::new().save(&blocker).unwrap_err();
        assert!(error.to_string().contains(&blocker.join(COUNTERS_FILE).display().to_string()), "{error}");
        assert_eq!(error.metric_label(), "write");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sweep_drops_only_idle_buckets() {
        let state = PolicyState::new();
        let t0 = 1_710_000_000i128 * S;
        let busy_rate = key("ns/a", Subject::Key(KeyHash::of(b"busy")));
        let busy_quota = key("ns/a", Subject::Key(KeyHash::of(b"quota")));
        let idle = key("ns/a", Subject::Anonymous);
        state.with_bucket(&busy_rate, t0, |c| c.tat = t0 + 3600 * S);
        state.with_bucket(&busy_quota, t0, |c| c.quota = Some(day_count(1_710_000_000, 2)));
        state.with_bucket(&idle, t0, |c| c.tat = t0 + S);
        assert_eq!(state.bucket_count(), 3);
        // Sixty seconds later the first touch of each shard sweeps it; 2000 probes touch them all.
        let later = t0 + 61 * S;
        for i in 0..2000u32 {
            state.with_bucket(&key("probe", Subject::Key(KeyHash::of(&i.to_le_bytes()))), later, |_| ());
        }
        assert_eq!(state.bucket_count(), 2000 + 2, "the idle bucket is gone, the busy ones remain");
        assert_eq!(state.with_bucket(&busy_rate, later, |c| c.tat), t0 + 3600 * S);
        assert_eq!(state.with_bucket(&busy_quota, later, |c| c.quota.map(|q| q.count)), Some(2));
    }

    #[test]
    fn idleness() {
        let now = 1_710_000_000i128 * S;
        assert!(Counters::default().is_idle(now));
        assert!(Counters { tat: now, quota: None }.is_idle(now));
        assert!(!Counters { tat: now + 1, quota: None }.is_idle(now));
        let running = Some(day_count(1_710_000_000, 1));
        assert!(!Counters { tat: 0, quota: running }.is_idle(now));
        assert!(Counters { tat: 0, quota: Some(day_count(1_710_000_000, 0)) }.is_idle(now));
        assert!(Counters { tat: 0, quota: running }.is_idle(now + 86_400 * S));
    }

    #[test]
    fn debug_shows_sizes_only() {
        let state = PolicyState::new();
        state.with_bucket(&key("ns/a", Subject::Key(KeyHash::of(b"plain"))), 0, |c| c.tat = 1);
        assert_eq!(format!("{state:?}"), "PolicyState { shards: 64, buckets: 1 }");
    }
}
