//! When a Gateway's policies must all be read again.
//!
//! Reading a policy costs a call per operation (the operation listing does not carry it), so a
//! plan reads a policy only when the operation or product that holds it is not as desired:
//! each one's `description` carries a hash of the policy we last wrote under it (the marker,
//! [`crate::desired`]), written in the same plan as the policy. An unchanged container vouches
//! for its policy. What the marker cannot see is a policy edited out of band under an
//! untouched container, or a policy write that failed after its marker was written; so every
//! policy is read again (an audit) when:
//!
//! - this process has not read the Gateway's policies yet (a restart, a new leader: a process
//!   that stopped between a marker and its policy leaves no trace in memory),
//! - a write for the Gateway failed since the last audit (its markers may vouch for policies
//!   that were not written),
//! - `every` has passed since the last audit: an out-of-band policy edit is repaired within
//!   that long.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a Gateway's policies are all read again when nothing else asks for it.
pub const EVERY: Duration = Duration::from_secs(3600);

/// The audit schedule of every Gateway of one provider.
#[derive(Debug)]
pub struct PolicyAudit {
    every: Duration,
    /// By owner: the last audit, and whether a write failed since.
    gateways: Mutex<HashMap<String, Last>>,
}

#[derive(Clone, Copy, Debug)]
struct Last {
    at: Instant,
    failed_since: bool,
}

impl PolicyAudit {
    /// Audits at least every `every` (zero: every plan reads every policy).
    pub fn new(every: Duration) -> PolicyAudit {
        PolicyAudit { every, gateways: Mutex::new(HashMap::new()) }
    }

    /// Whether a plan of `owner` made at `now` must read every policy.
    pub fn due(&self, owner: &str, now: Instant) -> bool {
        match self.gateways.lock().ok().and_then(|g| g.get(owner).copied()) {
            Some(last) => last.failed_since || now.saturating_duration_since(last.at) >= self.every,
            None => true,
        }
    }

    /// Every policy of `owner` was read by a plan that started at `at`.
    pub fn audited(&self, owner: &str, at: Instant) {
        if let Ok(mut gateways) = self.gateways.lock() {
            gateways.insert(owner.to_string(), Last { at, failed_since: false });
        }
    }

    /// A write for `owner` failed: its markers may vouch for what is not there.
    pub fn write_failed(&self, owner: &str) {
        if let Ok(mut gateways) = self.gateways.lock() {
            if let Some(last) = gateways.get_mut(owner) {
                last.failed_since = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_is_due_first_after_a_failed_write_and_once_every_period() {
        let audit = PolicyAudit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(audit.due("a", t0), "never read in this process");
        audit.audited("a", t0);
        assert!(!audit.due("a", t0 + Duration::from_secs(59)));
        assert!(audit.due("a", t0 + Duration::from_secs(60)), "the period has passed");
        assert!(audit.due("b", t0), "each Gateway on its own");

        audit.audited("a", t0 + Duration::from_secs(60));
        audit.write_failed("a");
        assert!(audit.due("a", t0 + Duration::from_secs(61)), "a write failed since");
        audit.audited("a", t0 + Duration::from_secs(62));
        assert!(!audit.due("a", t0 + Duration::from_secs(63)));
        // A failure before the first audit changes nothing: the first plan audits anyway.
        audit.write_failed("c");
        assert!(audit.due("c", t0));

        let always = PolicyAudit::new(Duration::ZERO);
        always.audited("a", t0);
        assert!(always.due("a", t0));
    }
}
