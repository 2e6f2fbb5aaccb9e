//! One task per Gateway that hands its desired state to the provider, so a slow cloud never
//! delays another Gateway. Each task applies only the newest state, retries transient errors
//! with backoff, and reports the outcome (and an Event when it changes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tollbridge_provider::{GatewayIr, GatewayKey, Provider, ProviderError, Provisioned};

use super::infra::InCluster;
use super::metrics::{Metrics, ProviderCallLabels};

/// The desired state of one Gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub ir: GatewayIr,
    /// Local Gateways: the gzipped YAML their proxies read.
    pub config: Option<Vec<u8>>,
    /// Local Gateways: non-zero when an object we created for the Gateway was changed by
    /// someone else. Cloud Gateways: the resync count. A new value asks for a repair.
    pub edited: u64,
    pub object: ObjectReference,
}

/// What the provider last did with a Gateway.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub generation: i64,
    pub result: Result<Provisioned, ProviderError>,
}

/// Where a Gateway's desired state goes.
#[async_trait]
pub trait Deployer: Send + Sync {
    fn provider(&self) -> &'static str;
    /// Which provider instance this is: a Gateway whose resolved settings change gets another
    /// one (another region, account, service, or Local instead of a cloud), and a new task.
    fn identity(&self) -> usize;
    async fn apply(&self, job: &Job) -> Result<Provisioned, ProviderError>;
    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError>;
}

#[async_trait]
impl Deployer for InCluster {
    fn provider(&self) -> &'static str {
        "Local"
    }
    fn identity(&self) -> usize {
        self as *const Self as *const () as usize
    }
    async fn apply(&self, job: &Job) -> Result<Provisioned, ProviderError> {
        InCluster::apply(self, &job.ir, job.config.clone().unwrap_or_default(), job.edited).await
    }
    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError> {
        InCluster::delete(self, key).await
    }
}

/// A cloud provider behind the [`Provider`] trait.
pub struct Cloud(pub &'static str, pub Arc<dyn Provider>);

#[async_trait]
impl Deployer for Cloud {
    fn provider(&self) -> &'static str {
        self.0
    }
    fn identity(&self) -> usize {
        Arc::as_ptr(&self.1) as *const () as usize
    }
    async fn apply(&self, job: &Job) -> Result<Provisioned, ProviderError> {
        self.1.apply(&job.ir).await
    }
    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError> {
        self.1.delete(key).await
    }
}

struct Worker {
    jobs: watch::Sender<Option<Job>>,
    task: JoinHandle<()>,
    /// The deployer's identity (see [`Deployer::identity`]).
    deployer: usize,
}

/// The per-Gateway tasks, by `namespace/name`.
pub struct Workers {
    workers: HashMap<String, Worker>,
    outcomes: Arc<Mutex<HashMap<String, Outcome>>>,
    pending: Arc<Mutex<HashMap<String, bool>>>,
    /// Signalled when an outcome arrives, so statuses are written.
    done: Arc<Notify>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Whether this replica leads; a task applies nothing while it does not.
    leading: watch::Receiver<bool>,
}

impl Workers {
    pub fn new(
        done: Arc<Notify>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        leading: watch::Receiver<bool>,
    ) -> Self {
        Self {
            workers: HashMap::new(),
            outcomes: Arc::default(),
            pending: Arc::default(),
            done,
            recorder,
            metrics,
            leading,
        }
    }

    /// Hands `job` to the Gateway's task, starting one if needed, or a new one when the
    /// Gateway now goes to another provider.
    pub fn submit(&mut self, deployer: Arc<dyn Deployer>, job: Job) {
        let id = job.ir.key.id();
        if self.workers.get(&id).is_some_and(|w| w.deployer != deployer.identity()) {
            tracing::info!(gateway = %id, provider = deployer.provider(), "provider settings changed: new task");
            self.stop(&id);
        }
        if let Some(worker) = self.workers.get(&id) {
            worker.jobs.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&job);
                if changed {
                    *current = Some(job);
                }
                changed
            });
            return;
        }
        let (jobs, receiver) = watch::channel(Some(job));
        let identity = deployer.identity();
        let task = tokio::spawn(
            Task {
                id: id.clone(),
                deployer,
                outcomes: self.outcomes.clone(),
                pending: self.pending.clone(),
                done: self.done.clone(),
                recorder: self.recorder.clone(),
                metrics: self.metrics.clone(),
                leading: self.leading.clone(),
            }
            .run(receiver),
        );
        self.workers.insert(id, Worker { jobs, task, deployer: identity });
    }

    /// The Gateways that have a task.
    pub fn ids(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    /// Stops the Gateway's task and forgets its outcome.
    pub fn stop(&mut self, id: &str) {
        if let Some(worker) = self.workers.remove(id) {
            worker.task.abort();
        }
        if let Ok(mut outcomes) = self.outcomes.lock() {
            outcomes.remove(id);
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(id);
        }
        self.update_depth();
    }

    pub fn outcome(&self, id: &str) -> Option<Outcome> {
        self.outcomes.lock().ok().and_then(|o| o.get(id).cloned())
    }

    fn update_depth(&self) {
        let depth = self.pending.lock().map(|p| p.values().filter(|busy| **busy).count()).unwrap_or(0);
        self.metrics.queue_depth.set(depth as i64);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in self.workers.values() {
            worker.task.abort();
        }
    }
}

struct Task {
    id: String,
    deployer: Arc<dyn Deployer>,
    outcomes: Arc<Mutex<HashMap<String, Outcome>>>,
    pending: Arc<Mutex<HashMap<String, bool>>>,
    done: Arc<Notify>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);

impl Task {
    async fn run(self, mut jobs: watch::Receiver<Option<Job>>) {
        let mut applied: Option<Job> = None;
        let mut last_message: Option<String> = None;
        let mut replaced: (i64, Vec<String>) = (0, Vec::new());
        let mut retry = FIRST_RETRY;
        loop {
            let job = jobs.borrow_and_update().clone();
            let Some(job) = job.filter(|j| applied.as_ref() != Some(j)) else {
                if jobs.changed().await.is_err() {
                    return;
                }
                continue;
            };
            // Only the leader writes: a task of a replica that lost the lease applies nothing.
            if !*self.leading.borrow() {
                return;
            }
            self.set_pending(true);
            let started = Instant::now();
            let mut result = self.deployer.apply(&job).await;
            // A replacement is reported by the apply that made it; it stays in the status until
            // the Gateway changes, and gets its own Warning Event.
            if let Ok(provisioned) = &mut result {
                if !provisioned.replaced.is_empty() {
                    self.announce_replacement(&job, &provisioned.replaced).await;
                    replaced = (job.ir.key.generation, provisioned.replaced.clone());
                } else if replaced.0 == job.ir.key.generation {
                    provisioned.replaced = replaced.1.clone();
                }
            }
            self.metrics
                .provider_calls
                .get_or_create(&ProviderCallLabels {
                    provider: self.deployer.provider().into(),
                    operation: "apply".into(),
                })
                .observe(started.elapsed().as_secs_f64());
            let retryable = result.as_ref().err().is_some_and(ProviderError::is_retryable);
            let message = self.report(&job, &result, &mut last_message).await;
            if let Err(e) = &result {
                self.metrics.error(e.metric_label());
                tracing::warn!(gateway = %self.id, error = %message, "provider could not apply the gateway");
            }
            match result {
                Ok(_) => {
                    applied = Some(job);
                    retry = FIRST_RETRY;
                    self.set_pending(false);
                }
                Err(_) if retryable => {
                    // Retry after a pause, sooner if a newer state arrives.
                    let _ = tokio::time::timeout(retry, jobs.changed()).await;
                    retry = (retry * 2).min(LAST_RETRY);
                }
                Err(_) => {
                    applied = Some(job);
                    self.set_pending(false);
                }
            }
        }
    }

    fn set_pending(&self, busy: bool) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(self.id.clone(), busy);
            let depth = pending.values().filter(|b| **b).count();
            self.metrics.queue_depth.set(depth as i64);
        }
    }

    /// A Warning Event for a resource the provider replaced with one of another kind (clients
    /// must follow: a new hostname, DNS to move).
    async fn announce_replacement(&self, job: &Job, replaced: &[String]) {
        let event = Event {
            type_: EventType::Warning,
            reason: "Replaced".into(),
            note: Some(replaced.join(" ")),
            action: "Provision".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &job.object).await {
            tracing::debug!(gateway = %self.id, error = %e, "cannot record event");
        }
        tracing::warn!(gateway = %self.id, replaced = %replaced.join(" "), "the provider replaced a resource of the gateway");
    }

    /// Stores the outcome, wakes the status writer, and records an Event when the outcome
    /// differs from the previous one. Returns the outcome's message.
    async fn report(
        &self,
        job: &Job,
        result: &Result<Provisioned, ProviderError>,
        last: &mut Option<String>,
    ) -> String {
        let outcome = Outcome { generation: job.ir.key.generation, result: result.clone() };
        if let Ok(mut outcomes) = self.outcomes.lock() {
            outcomes.insert(self.id.clone(), outcome);
        }
        self.done.notify_one();
        let (type_, reason, message) = match result {
            Ok(p) if p.addresses.is_empty() => (
                EventType::Normal,
                "Programmed",
                format!("Programmed by the {} provider", self.deployer.provider()),
            ),
            Ok(p) => (
                EventType::Normal,
                "Programmed",
                format!(
                    "Programmed by the {} provider at {}",
                    self.deployer.provider(),
                    p.addresses.join(", ")
                ),
            ),
            Err(e) => (EventType::Warning, "ProvisioningFailed", e.to_string()),
        };
        if last.as_deref() != Some(message.as_str()) {
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(message.clone()),
                action: "Provision".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &job.object).await {
                tracing::debug!(gateway = %self.id, error = %e, "cannot record event");
            }
            *last = Some(message.clone());
        }
        message
    }
}

/// Runs `deployer.delete` until it succeeds or `attempts` are used, with backoff.
pub async fn delete_with_retries(
    deployer: &dyn Deployer,
    key: &GatewayKey,
    metrics: &Metrics,
    attempts: u32,
) -> Result<(), ProviderError> {
    let mut retry = FIRST_RETRY;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let result = deployer.delete(key).await;
        metrics
            .provider_calls
            .get_or_create(&ProviderCallLabels {
                provider: deployer.provider().into(),
                operation: "delete".into(),
            })
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < attempts => {
                metrics.error(e.metric_label());
                tracing::warn!(gateway = %key.id(), error = %e, "cannot delete; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
            Err(e) => return Err(e),
        }
    }
}
