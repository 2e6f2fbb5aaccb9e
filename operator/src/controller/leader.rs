//! Leader election with a coordination.k8s.io/v1 Lease, so that one replica reconciles at a time.
//!
//! [`decide`] looks at the lease and says what to do; [`campaign`] does it against the API server.
//! Every write carries the resourceVersion that was read, so of two replicas racing for a free
//! lease only one wins; the other gets 409 Conflict and waits. Expiry is judged by what this
//! replica observed, never by comparing the holder's clock (renewTime) with its own: another
//! holder's lease has expired once this replica has seen it unchanged for the lease's duration,
//! by its own monotonic clock.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Errors of the API server are logged at most this often; the ones in between are counted.
const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Settings of leader election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (holderIdentity).
    pub identity: String,
    /// How long a lease is valid after its last renewal (leaseDurationSeconds).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long gives up leadership.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings derived from a lease duration: renew deadline 2/3 of it, retry period 1/5 of it (at least 200 ms).
    pub fn from_duration(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration / 3 * 2,
            retry_period: (lease_duration / 5).max(Duration::from_millis(200)),
        }
    }

    /// `namespace/name` of the lease, for messages.
    fn lease_id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease (`namespace/name`) and why it was lost.
    #[error("lost the lease {0}: {1}")]
    Lost(String, String),
}

/// What to do about the lease, given its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// There is no lease: create it, held by me.
    Create,
    /// I hold the lease: renew it.
    Renew,
    /// Nobody holds the lease, or its holder let it expire: take it over.
    TakeOver,
    /// Another replica holds a valid lease.
    Wait,
}

/// Decides what `identity` does about `lease` (None: it does not exist), which it has seen
/// unchanged for `unchanged_for`. A lease without leaseDurationSeconds is valid for
/// `lease_duration`; one without renewTime has expired.
fn decide(lease: Option<&Lease>, identity: &str, lease_duration: Duration, unchanged_for: Duration) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    match (holder(lease), lease.spec.as_ref()) {
        (holder, _) if holder == identity => Step::Renew,
        ("", _) | (_, None) => Step::TakeOver,
        (_, Some(spec)) if expired(spec, lease_duration, unchanged_for) => Step::TakeOver,
        _ => Step::Wait,
    }
}

/// When this replica last saw the lease change (by its resourceVersion), on its own clock.
#[derive(Debug, Default)]
struct Observed {
    version: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    /// How long the lease has been seen as it is now (zero when it just changed).
    fn unchanged_for(&mut self, lease: Option<&Lease>, now: Instant) -> Duration {
        let version = lease.and_then(|l| l.metadata.resource_version.clone());
        if self.since.is_none() || version != self.version {
            self.version = version;
            self.since = Some(now);
        }
        now.duration_since(self.since.unwrap_or(now))
    }
}

/// The holderIdentity of `lease`; empty if it has none.
fn holder(lease: &Lease) -> &str {
    lease.spec.as_ref().and_then(|spec| spec.holder_identity.as_deref()).unwrap_or("")
}

/// Whether the holder of the lease failed to renew it in time: it has not changed for longer
/// than it is valid.
fn expired(spec: &LeaseSpec, lease_duration: Duration, unchanged_for: Duration) -> bool {
    if spec.renew_time.is_none() {
        return true;
    }
    let valid_for = spec
        .lease_duration_seconds
        .and_then(|seconds| u64::try_from(seconds).ok())
        .filter(|&seconds| seconds > 0)
        .map_or(lease_duration, Duration::from_secs);
    unchanged_for > valid_for
}

/// The lease `step` writes: `current` (None for [`Step::Create`]) held by this replica, renewed at `now`.
fn claimed(current: Option<&Lease>, step: Step, settings: &LeaseSettings, now: Timestamp) -> Lease {
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    match step {
        Step::Create => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(0);
        }
        Step::TakeOver => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        Step::Renew | Step::Wait => {}
    }
    spec.holder_identity = Some(settings.identity.clone());
    spec.lease_duration_seconds = Some(whole_seconds(settings.lease_duration));
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// `lease` given up by its holder: without holderIdentity, any replica may take it over at once.
fn released(lease: &Lease) -> Lease {
    let mut lease = lease.clone();
    if let Some(spec) = &mut lease.spec {
        spec.holder_identity = None;
    }
    lease
}

/// A duration as leaseDurationSeconds: rounded up, at least 1.
fn whole_seconds(duration: Duration) -> i32 {
    let seconds = duration.as_secs().saturating_add(u64::from(duration.subsec_nanos() > 0));
    i32::try_from(seconds).unwrap_or(i32::MAX).max(1)
}

/// Why a lease that is not ours is not ours, e.g. `held by replica-b`.
fn not_ours(lease: Option<&Lease>) -> String {
    match lease.map(holder) {
        None => "the lease was deleted".to_string(),
        Some("") => "the lease has no holder".to_string(),
        Some(holder) => format!("held by {holder}"),
    }
}

/// Campaigns for the lease until `shutdown` turns true. Sends `true` on `leading` when this replica
/// becomes the leader and `false` when it stops leading. Returns Err(Lost) when a leader could not
/// renew within the renew deadline or found another holder (the caller exits, as controllers do);
/// on shutdown a leader releases the lease (clears holderIdentity, so another replica takes over
/// at once) and returns Ok.
///
/// Dropping the sender of `shutdown` counts as shutdown. A leader sends `false` before it releases
/// the lease, so its work should stop on `false` without waiting for this function to return.
pub async fn campaign(
    client: kube::Client,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LeaderError> {
    if settings.renew_deadline >= settings.lease_duration {
        tracing::warn!(
            lease = %settings.lease_id(),
            renew_deadline = ?settings.renew_deadline,
            lease_duration = ?settings.lease_duration,
            "the renew deadline should be shorter than the lease duration; two replicas may lead at once"
        );
    }
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut warnings = Warnings::default();
    match follow(&api, &settings, &mut warnings, &mut shutdown).await {
        Some((lease, renewed)) => {
            lead(&api, &settings, &mut warnings, lease, renewed, &leading, &mut shutdown).await
        }
        None => Ok(()),
    }
}

/// Tries to acquire the lease every retry period: the lease as written and when the winning
/// attempt started, or None on shutdown.
async fn follow(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    warnings: &mut Warnings,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(Box<Lease>, Instant)> {
    let mut last_reason = String::new();
    let mut observed = Observed::default();
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = stopped(shutdown) => return None,
            outcome = attempt(api, settings, false, &mut observed) => outcome,
        };
        match outcome {
            Ok(Round::Held(lease)) => return Some((lease, started)),
            Ok(Round::NotOurs(reason)) => {
                if reason != last_reason {
                    tracing::info!(identity = %settings.identity, lease = %settings.lease_id(), "not leading: {reason}");
                    last_reason = reason;
                }
            }
            Ok(Round::Raced) => {
                tracing::debug!(identity = %settings.identity, lease = %settings.lease_id(), "another replica won the lease first");
            }
            Err(e) => warnings.warn(settings, "cannot acquire the lease", &e),
        }
        if pause(settings.retry_period, shutdown).await {
            return None;
        }
    }
}

/// Leads from the acquisition of `lease` (whose attempt started at `renewed`): renews it every
/// retry period until shutdown (then releases it) or until leadership is lost.
async fn lead(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    warnings: &mut Warnings,
    mut lease: Box<Lease>,
    mut renewed: Instant,
    leading: &watch::Sender<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), LeaderError> {
    tracing::info!(identity = %settings.identity, lease = %settings.lease_id(), "acquired leadership");
    leading.send_replace(true);
    let mut last_error = String::new();
    loop {
        if pause(settings.retry_period, shutdown).await {
            leading.send_replace(false);
            release(api, settings, &lease).await;
            return Ok(());
        }
        let started = Instant::now();
        let deadline = renewed + settings.renew_deadline;
        // A leader only renews its own lease: what it observed of others does not matter.
        let mut observed = Observed::default();
        let outcome = tokio::select! {
            biased;
            // The next pause returns at once.
            () = stopped(shutdown) => continue,
            outcome = tokio::time::timeout_at(deadline, attempt(api, settings, true, &mut observed)) => outcome,
        };
        match outcome {
            Ok(Ok(Round::Held(written))) => {
                lease = written;
                renewed = started;
            }
            Ok(Ok(Round::NotOurs(reason))) => return Err(lose(settings, leading, reason)),
            Ok(Ok(Round::Raced)) => last_error = "the lease changed between read and write".to_string(),
            Ok(Err(e)) => {
                warnings.warn(settings, "cannot renew the lease", &e);
                last_error = e.to_string();
            }
            Err(_) => last_error = "the API server did not answer in time".to_string(),
        }
        if Instant::now() >= renewed + settings.renew_deadline {
            let reason = format!("not renewed for {:?}; last error: {last_error}", settings.renew_deadline);
            return Err(lose(settings, leading, reason));
        }
    }
}

/// Stops leading: tells the caller and logs it.
fn lose(settings: &LeaseSettings, leading: &watch::Sender<bool>, reason: String) -> LeaderError {
    leading.send_replace(false);
    tracing::info!(identity = %settings.identity, lease = %settings.lease_id(), "lost leadership: {reason}");
    LeaderError::Lost(settings.lease_id(), reason)
}

/// Gives up `lease` (as last written by this replica) so another replica takes over at once; waits
/// one retry period at most. A failure is only logged: the lease then expires after its duration.
async fn release(api: &Api<Lease>, settings: &LeaseSettings, lease: &Lease) {
    let (free, params) = (released(lease), PostParams::default());
    let request = api.replace(&settings.name, &params, &free);
    let (identity, lease_id) = (&settings.identity, settings.lease_id());
    match tokio::time::timeout(settings.retry_period, request).await {
        Ok(Ok(_)) => tracing::info!(%identity, lease = %lease_id, "released leadership"),
        Ok(Err(kube::Error::Api(status))) if is_race(&status) => {
            tracing::info!(%identity, lease = %lease_id, "stopped leading; the lease changed since the last renewal, so it is not released")
        }
        Ok(Err(e)) => {
            tracing::warn!(%identity, lease = %lease_id, error = %e, "stopped leading; cannot release the lease, it expires on its own")
        }
        Err(_) => {
            tracing::warn!(%identity, lease = %lease_id, "stopped leading; releasing the lease timed out, it expires on its own")
        }
    }
}

/// The outcome of one attempt to acquire or renew the lease.
#[derive(Debug)]
enum Round {
    /// This replica holds the lease, as the API server returned it.
    Held(Box<Lease>),
    /// The lease is not ours; why.
    NotOurs(String),
    /// Another writer changed or created the lease between our read and our write.
    Raced,
}

/// Reads the lease and writes it as [`decide`] says. A leader (`leading`) only renews: a lease
/// that is gone, free or held by another is reported as not ours.
async fn attempt(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    leading: bool,
    observed: &mut Observed,
) -> Result<Round, kube::Error> {
    let current = api.get_opt(&settings.name).await?;
    let unchanged_for = observed.unchanged_for(current.as_ref(), Instant::now());
    let now = Timestamp::now();
    let step = decide(current.as_ref(), &settings.identity, settings.lease_duration, unchanged_for);
    if step == Step::Wait || (leading && step != Step::Renew) {
        return Ok(Round::NotOurs(not_ours(current.as_ref())));
    }
    let lease = claimed(current.as_ref(), step, settings, now);
    let written = match current {
        None => api.create(&PostParams::default(), &lease).await,
        Some(_) => api.replace(&settings.name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(lease) => Ok(Round::Held(Box::new(lease))),
        Err(kube::Error::Api(status)) if is_race(&status) => Ok(Round::Raced),
        Err(e) => Err(e),
    }
}

/// Whether a write failed because another writer got there first (409: Conflict, AlreadyExists).
fn is_race(status: &kube::core::Status) -> bool {
    status.code == 409 || status.is_conflict() || status.is_already_exists()
}

/// Sleeps for `period`; true if shutdown came first.
async fn pause(period: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        () = stopped(shutdown) => true,
        () = tokio::time::sleep(period) => false,
    }
}

/// Returns once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which counts as shutdown.
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Rate-limits warnings about errors of the API server.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    suppressed: u32,
}

impl Warnings {
    fn warn(&mut self, settings: &LeaseSettings, what: &str, error: &dyn fmt::Display) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_INTERVAL) {
            self.suppressed = self.suppressed.saturating_add(1);
            return;
        }
        self.last = Some(now);
        let suppressed = std::mem::take(&mut self.suppressed);
        tracing::warn!(
            identity = %settings.identity,
            lease = %settings.lease_id(),
            error = %error,
            suppressed,
            "{what}; retrying"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid timestamp")
    }

    fn lease(holder: Option<&str>, renewed: Option<Timestamp>, duration_seconds: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("tollbridge".into()),
                namespace: Some("system".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renewed.map(MicroTime),
                acquire_time: renewed.map(MicroTime),
                lease_duration_seconds: duration_seconds,
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn settings() -> LeaseSettings {
        LeaseSettings::from_duration("system", "tollbridge", "me", DURATION)
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "me", DURATION, secs(0)), Step::Create);
    }

    #[test]
    fn my_lease_is_renewed() {
        let mine = lease(Some("me"), Some(at(0)), Some(15));
        assert_eq!(decide(Some(&mine), "me", DURATION, secs(5)), Step::Renew);
        // Even when expired: nobody else has written it since.
        assert_eq!(decide(Some(&mine), "me", DURATION, secs(60)), Step::Renew);
    }

    #[test]
    fn fresh_lease_of_another_is_waited_for() {
        let theirs = lease(Some("other"), Some(at(0)), Some(15));
        assert_eq!(decide(Some(&theirs), "me", DURATION, secs(5)), Step::Wait);
        assert_eq!(decide(Some(&theirs), "me", DURATION, secs(15)), Step::Wait);
    }

    #[test]
    fn expired_lease_of_another_is_taken_over() {
        let theirs = lease(Some("other"), Some(at(0)), Some(15));
        assert_eq!(decide(Some(&theirs), "me", DURATION, secs(16)), Step::TakeOver);
    }

    #[test]
    fn lease_duration_of_the_lease_wins_over_mine() {
        let theirs = lease(Some("other"), Some(at(0)), Some(60));
        assert_eq!(decide(Some(&theirs), "me", DURATION, secs(30)), Step::Wait);
        let no_duration = lease(Some("other"), Some(at(0)), None);
        assert_eq!(decide(Some(&no_duration), "me", DURATION, secs(10)), Step::Wait);
        assert_eq!(decide(Some(&no_duration), "me", DURATION, secs(16)), Step::TakeOver);
    }

    #[test]
    fn lease_without_holder_is_taken_over() {
        let free = lease(None, Some(at(0)), Some(15));
        assert_eq!(decide(Some(&free), "me", DURATION, secs(1)), Step::TakeOver);
        let empty = lease(Some(""), Some(at(0)), Some(15));
        assert_eq!(decide(Some(&empty), "me", DURATION, secs(1)), Step::TakeOver);
        let no_spec = Lease { spec: None, ..free };
        assert_eq!(decide(Some(&no_spec), "me", DURATION, secs(1)), Step::TakeOver);
    }

    #[test]
    fn expiry_is_judged_by_observed_renewals_not_by_the_holders_clock() {
        // The holder's clock runs an hour ahead: its renewTime is in our future. Seen unchanged
        // for longer than the lease's duration, the lease has expired all the same.
        let ahead =
            lease(Some("other"), Some(Timestamp::now() + jiff::SignedDuration::from_hours(1)), Some(15));
        let mut observed = Observed::default();
        let start = Instant::now();
        let seen =
            |observed: &mut Observed, after: u64| observed.unchanged_for(Some(&ahead), start + secs(after));
        assert_eq!(decide(Some(&ahead), "me", DURATION, seen(&mut observed, 0)), Step::Wait);
        assert_eq!(decide(Some(&ahead), "me", DURATION, seen(&mut observed, 10)), Step::Wait);
        assert_eq!(decide(Some(&ahead), "me", DURATION, seen(&mut observed, 16)), Step::TakeOver);
        // A renewal (a new resourceVersion) starts the count again, whatever its renewTime says.
        let mut renewed = ahead.clone();
        renewed.metadata.resource_version = Some("43".into());
        renewed.spec.as_mut().unwrap().renew_time = Some(MicroTime(at(-3600)));
        let unchanged = observed.unchanged_for(Some(&renewed), start + secs(17));
        assert_eq!(decide(Some(&renewed), "me", DURATION, unchanged), Step::Wait);
    }

    #[test]
    fn missing_renew_time_is_expired() {
        let theirs = lease(Some("other"), None, Some(15));
        assert_eq!(decide(Some(&theirs), "me", DURATION, secs(0)), Step::TakeOver);
    }

    #[test]
    fn from_duration_derives_deadline_and_period() {
        let s = settings();
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str(), s.identity.as_str()),
            ("system", "tollbridge", "me")
        );
        assert_eq!(s.lease_duration, DURATION);
        assert_eq!(s.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.retry_period, Duration::from_secs(3));
        let short = LeaseSettings::from_duration("ns", "l", "me", Duration::from_millis(600));
        assert_eq!(short.renew_deadline, Duration::from_millis(400));
        assert_eq!(short.retry_period, Duration::from_millis(200));
    }

    #[test]
    fn create_claims_a_new_lease() {
        let created = claimed(None, Step::Create, &settings(), at(0));
        assert_eq!(created.metadata.name.as_deref(), Some("tollbridge"));
        assert_eq!(created.metadata.namespace.as_deref(), Some("system"));
        assert_eq!(created.metadata.resource_version, None);
        let spec = created.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
    }

    #[test]
    fn take_over_counts_a_transition_and_keeps_the_resource_version() {
        let theirs = lease(Some("other"), Some(at(0)), Some(60));
        let taken = claimed(Some(&theirs), Step::TakeOver, &settings(), at(100));
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("42"));
        let spec = taken.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(100))));
    }

    #[test]
    fn renew_keeps_acquire_time_and_transitions() {
        let mine = lease(Some("me"), Some(at(0)), Some(15));
        let renewed = claimed(Some(&mine), Step::Renew, &settings(), at(3));
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("42"));
        let spec = renewed.spec.expect("spec");
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(3))));
    }

    #[test]
    fn released_lease_has_no_holder_and_is_taken_over_at_once() {
        let mine = lease(Some("me"), Some(at(0)), Some(15));
        let free = released(&mine);
        assert_eq!(free.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(holder(&free), "");
        assert_eq!(decide(Some(&free), "other", DURATION, secs(1)), Step::TakeOver);
    }

    #[test]
    fn lease_duration_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_secs(15)), 15);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::MAX), i32::MAX);
    }

    #[test]
    fn reasons_name_the_holder() {
        assert_eq!(not_ours(None), "the lease was deleted");
        assert_eq!(not_ours(Some(&lease(Some("other"), None, None))), "held by other");
        assert_eq!(not_ours(Some(&lease(None, None, None))), "the lease has no holder");
    }
}
