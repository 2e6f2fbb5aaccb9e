//! How much of its quota each API key has used in the current window (`tollbridge usage`),
//! read from the same counters the proxy keeps: a state directory or the shared store.

use jiff::Timestamp;
use serde::Serialize;
use tollbridge_provider::QuotaPolicyIr;

use super::keys::KeyHash;
use super::quota::{Period, Window};
use super::shared::bucket_name;
use super::state::Subject;

/// One key of a policy with a quota, and the quota window `now` falls in.
#[derive(Clone, Debug)]
pub struct UsageQuery {
    pub policy: String,
    /// `namespace/name` of the ApiKey.
    pub api_key: String,
    pub consumer: String,
    pub(crate) hash: KeyHash,
    limit: u64,
    pub(crate) period: Period,
    pub(crate) window: Window,
}

/// A key's use of its quota in the current window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUsage {
    pub policy: String,
    pub api_key: String,
    pub consumer: String,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub used: u64,
    pub limit: u64,
    pub remaining: u64,
    /// When the key's last counted request came (when the counter keeps it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
}

fn instant(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Every key of every policy with a quota, each once, sorted by policy and key.
pub fn queries(policies: &[QuotaPolicyIr], now: Timestamp) -> Vec<UsageQuery> {
    let mut out: Vec<UsageQuery> = Vec::new();
    for policy in policies {
        let Some(quota) = policy.quota else { continue };
        let period = Period::from(quota.period);
        let window = Window::containing(period, now.as_second());
        for key in &policy.keys {
            let Some(hash) = KeyHash::from_hex(&key.sha256) else { continue };
            if out.iter().any(|q| q.policy == policy.id && q.api_key == key.id) {
                continue;
            }
            out.push(UsageQuery {
                policy: policy.id.clone(),
                api_key: key.id.clone(),
                consumer: key.consumer.clone(),
                hash,
                limit: quota.requests,
                period,
                window,
            });
        }
    }
    out.sort_by(|a, b| (&a.policy, &a.api_key).cmp(&(&b.policy, &b.api_key)));
    out
}

impl UsageQuery {
    /// The key's bucket in a shared store under `prefix`.
    pub fn store_key(&self, prefix: &str) -> String {
        bucket_name(prefix, &self.policy, Subject::Key(self.hash))
    }

    /// Whether a bucket the store holds for `period` from `start` counts this key's window.
    pub fn counts_in(&self, period: Option<&str>, start: Option<i64>) -> bool {
        period == Some(self.period.name()) && start == Some(self.window.start)
    }

    /// The usage when `used` requests were counted in the window.
    /// The start of the key's current quota period.
    pub fn period_start(&self) -> Timestamp {
        instant(self.window.start)
    }

    pub fn report(&self, used: u64, last_seen: Option<Timestamp>) -> KeyUsage {
        KeyUsage {
            policy: self.policy.clone(),
            api_key: self.api_key.clone(),
            consumer: self.consumer.clone(),
            period_start: self.period_start(),
            period_end: instant(self.window.end),
            used,
            limit: self.limit,
            remaining: self.limit.saturating_sub(used),
            last_seen,
        }
    }
}
