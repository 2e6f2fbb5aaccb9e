//! `tollbridge operator`: reflectors → debounced snapshot → translate → one provider task per
//! Gateway → status by server-side apply. Only the leader writes.

pub mod apikeys;
mod cleanup;
pub mod infra;
pub mod leader;
mod local;
pub mod metrics;
pub mod status;
pub mod targets;
mod usage;
mod workers;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollbridge_provider::{GatewayIr, ProviderSettings};

use crate::api::gateway::Gateway;
use crate::snapshot::{self, name_of, object_id, Snapshot};
use crate::source::cluster::{ClusterSource, Scope};
use crate::translate::{self, programmed};
pub use cleanup::set_record;
use leader::LeaseSettings;
pub use local::gunzip;
use metrics::{KindLabels, Metrics};
use workers::{Cloud, Deployer, Job, Workers};

/// The finalizer on Gateways of cloud classes: their cloud resources go before the object.
pub const FINALIZER: &str = "tollbridge.dev/cleanup";
/// The field manager of the finalizer (kept apart from the status manager).
const FINALIZER_MANAGER: &str = "tollbridge-operator-finalizer";
/// How soon a pass skipped for want of a Secret is tried again.
const RETRY_SKIPPED_PASS: Duration = Duration::from_secs(5);

/// Options of `tollbridge operator`.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    pub scope: Scope,
    pub metrics_address: SocketAddr,
    /// `None` runs without leader election (a single replica).
    pub lease: Option<LeaseSettings>,
    /// Image of the in-cluster proxies when a ProviderConfig names none.
    pub proxy_image: String,
    /// Quiet time after a change before a snapshot is taken.
    pub debounce: Duration,
    /// A full pass this often even without changes (also repairs cloud drift).
    pub resync: Duration,
    /// How often the API keys' usage is read (and written when it changed).
    pub usage_interval: Duration,
    /// Goes into the ownership tag of cloud resources; `None`: the uid of `kube-system`.
    pub cluster_id: String,
    /// How the AWS provider talks to its accounts.
    pub aws: tollbridge_aws::AwsOptions,
}

/// Runs until SIGTERM or Ctrl-C. Errors: no API server, or leadership lost.
pub async fn run(mut options: OperatorOptions) -> Result<(), String> {
    let client =
        Client::try_default().await.map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?;
    if options.cluster_id.is_empty() {
        options.cluster_id = cluster_id(&client).await?;
    }
    tracing::info!(cluster_id = %options.cluster_id, "cluster identity for cloud ownership tags");
    let metrics = Arc::new(Metrics::default());
    let listener = TcpListener::bind(options.metrics_address)
        .await
        .map_err(|e| format!("cannot bind metrics address {}: {e}", options.metrics_address))?;
    let metrics_task = tokio::spawn(metrics::serve(listener, metrics.clone()));
    tracing::info!(address = %options.metrics_address, "metrics and health endpoint listening");

    let (leading_tx, mut leading) = watch::channel(options.lease.is_none());
    let (shutdown_tx, shutdown) = watch::channel(false);
    let campaign = options
        .lease
        .clone()
        .map(|lease| tokio::spawn(leader::campaign(client.clone(), lease, leading_tx, shutdown.clone())));

    let mut controller = Controller::new(client, &options, metrics.clone(), leading.clone());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install signal handler: {e}"))?;
    let changed = controller.source.changed();
    let mut resync = tokio::time::interval(options.resync);
    let mut usage_tick = tokio::time::interval(options.usage_interval);
    let mut waiting_logged = false;
    let outcome = loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = resync.tick() => controller.resyncs += 1,
            _ = usage_tick.tick() => {
                if *leading.borrow() {
                    controller.refresh_usage();
                }
                continue;
            }
            _ = tokio::time::sleep(RETRY_SKIPPED_PASS), if controller.retry_soon => controller.retry_soon = false,
            result = leading.changed() => {
                if result.is_err() {
                    // The campaign ended: leadership was lost.
                    break Err("leader election ended".to_string());
                }
                let now_leading = *leading.borrow();
                metrics.leader.set(i64::from(now_leading));
                if !now_leading {
                    break Err("lost leadership".to_string());
                }
                tracing::info!("leading: reconciling");
            }
            _ = terminate.recv() => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
        // Debounce: let a burst of changes settle into one pass.
        tokio::time::sleep(options.debounce).await;
        let unsynced = controller.source.unsynced();
        metrics.set_ready(unsynced.is_empty());
        if !unsynced.is_empty() {
            if !waiting_logged {
                tracing::warn!(kinds = ?unsynced, "waiting for watches to sync (are the CRDs installed?)");
                waiting_logged = true;
            }
            continue;
        }
        if waiting_logged {
            tracing::info!("all watches synced");
            waiting_logged = false;
        }
        if *leading.borrow() {
            // A pass stops as soon as leadership is lost, not at its end.
            let mut lost = leading.clone();
            tokio::select! {
                biased;
                _ = lost.wait_for(|leading| !leading) => {}
                () = controller.reconcile() => {}
            }
        }
    };
    // Nothing more is written: the providers' tasks and cleanups stop before the lease is let go.
    controller.stop();
    let _ = shutdown_tx.send(true);
    if let Some(campaign) = campaign {
        match tokio::time::timeout(Duration::from_secs(5), campaign).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "leader election"),
            Ok(_) => {}
            Err(_) => tracing::warn!("lease not released within 5 s"),
        }
    }
    metrics_task.abort();
    outcome
}

struct Controller {
    client: Client,
    source: ClusterSource,
    owned: OwnedStores,
    workers: Workers,
    local: Arc<dyn Deployer>,
    /// Versions of the Local Gateways' objects that we wrote ourselves.
    written: Arc<infra::Written>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Resync periods so far: cloud Gateways are applied again on each.
    resyncs: u64,
    /// The cloud providers, one per ProviderConfig.
    clouds: Arc<crate::providers::Registry>,
    /// Gateways being cleaned up (finalizer still present), by `namespace/name`.
    cleaning: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Why the last cleanup of a Gateway failed, by `namespace/name`.
    cleanup_errors: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// The last pass was skipped (a referenced Secret could not be read): try again soon.
    retry_soon: bool,
    /// Whether this replica leads: checked before every write a background task makes.
    leading: watch::Receiver<bool>,
    /// The cleanup tasks running, aborted when leadership is lost.
    cleanups: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Where the API keys' usage is read, from the last pass.
    usage_sources: Vec<usage::UsageSource>,
    usage: Arc<tokio::sync::Mutex<usage::UsageWriter>>,
    /// The usage read in progress: a task of its own, so that a slow store or cloud never holds
    /// up a pass (or the reaction to a lost lease); aborted with the other tasks.
    usage_task: Option<tokio::task::JoinHandle<()>>,
    usage_interval: Duration,
    /// Whether the operator could read each Local Gateway's counter store, from the last read.
    store_health: Arc<std::sync::Mutex<usage::StoreHealth>>,
}

/// Stores of the objects we create for Local Gateways, so hand edits are seen and repaired.
struct OwnedStores {
    deployments: Store<Deployment>,
    service_accounts: Store<ServiceAccount>,
    roles: Store<Role>,
    role_bindings: Store<RoleBinding>,
}

impl Controller {
    fn new(
        client: Client,
        options: &OperatorOptions,
        metrics: Arc<Metrics>,
        leading: watch::Receiver<bool>,
    ) -> Self {
        let mut source = ClusterSource::start(client.clone(), &options.scope);
        let owned_config =
            watcher::Config::default().labels(&format!("{}={}", infra::MANAGED_BY.0, infra::MANAGED_BY.1));
        let watches = source.watches();
        let owned = OwnedStores {
            deployments: watches.watch("Deployment", options.scope.api(&client), owned_config.clone()),
            service_accounts: watches.watch(
                "ServiceAccount",
                options.scope.api(&client),
                owned_config.clone(),
            ),
            roles: watches.watch("Role", options.scope.api(&client), owned_config.clone()),
            role_bindings: watches.watch("RoleBinding", options.scope.api(&client), owned_config),
        };
        let reporter = Reporter {
            controller: "tollbridge-operator".into(),
            instance: options.lease.as_ref().map(|l| l.identity.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let workers = Workers::new(source.changed(), recorder.clone(), metrics.clone(), leading.clone());
        let local = infra::InCluster::new(client.clone(), options.proxy_image.clone());
        let written = local.written();
        let local = Arc::new(local);
        let clouds =
            Arc::new(crate::providers::Registry::new(options.cluster_id.clone(), options.aws.clone()));
        Self {
            client,
            source,
            owned,
            workers,
            local,
            written,
            recorder,
            metrics,
            resyncs: 0,
            clouds,
            cleaning: Arc::default(),
            cleanup_errors: Arc::default(),
            retry_soon: false,
            leading,
            cleanups: Arc::default(),
            usage_sources: Vec::new(),
            usage: Arc::default(),
            usage_task: None,
            usage_interval: options.usage_interval,
            store_health: Arc::default(),
        }
    }

    /// Starts reading the API keys' usage (and writing what changed), unless a read is still
    /// running. A read gets at most two intervals.
    fn refresh_usage(&mut self) {
        if self.usage_task.as_ref().is_some_and(|task| !task.is_finished()) || self.usage_sources.is_empty() {
            return;
        }
        let (client, clouds, sources) =
            (self.client.clone(), self.clouds.clone(), self.usage_sources.clone());
        let (writer, metrics, deadline) = (self.usage.clone(), self.metrics.clone(), self.usage_interval * 2);
        let (store_health, changed) = (self.store_health.clone(), self.source.changed());
        self.usage_task = Some(tokio::spawn(async move {
            let mut writer = writer.lock().await;
            let refreshed = tokio::time::timeout(deadline, writer.refresh(&client, &clouds, &sources)).await;
            // An abandoned refresh leaves the stores' health as last known.
            let (problems, health) = match refreshed {
                Ok((problems, health)) => (problems, Some(health)),
                Err(_) => (vec![format!("reading the usage took over {deadline:?}; abandoned")], None),
            };
            for problem in writer.new_problems(problems) {
                metrics.error("usage");
                tracing::warn!(problem = %problem, "API key usage");
            }
            // A store that went away or came back changes its Gateways' Degraded condition:
            // a pass writes it.
            let mut known = store_health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(health) = health.filter(|health| *known != *health) {
                *known = health;
                changed.notify_one();
            }
        }));
    }

    /// Stops every provider task and cleanup: after this, this replica writes nothing.
    fn stop(&mut self) {
        for id in self.workers.ids() {
            self.workers.stop(&id);
        }
        if let Ok(mut tasks) = self.cleanups.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        if let Some(task) = self.usage_task.take() {
            task.abort();
        }
    }

    /// One pass: snapshot, keys, translate, hand Gateways to their tasks, write statuses.
    async fn reconcile(&mut self) {
        self.metrics.reconciles.inc();
        let snapshot = match self.source.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // Nothing is decided on a partial view; the next pass (a change, the resync, or
                // the retry below) tries again.
                self.metrics.error("secret_read");
                tracing::warn!(error = %e, "pass skipped");
                self.retry_soon = true;
                return;
            }
        };
        self.generate_missing_keys(&snapshot).await;

        let translation = translate::translate(&snapshot, &crate::providers::capabilities);
        self.usage_sources = usage::sources(&translation.gateways);
        let stores: Vec<(String, String, i64)> = translation
            .gateways
            .iter()
            .filter_map(|ir| match &ir.provider {
                ProviderSettings::Local(local) => local
                    .counter_store
                    .as_ref()
                    .map(|store| (ir.key.id(), store.failure_mode.clone(), ir.key.generation)),
                _ => None,
            })
            .collect();
        let mut statuses = translation.statuses;
        let mut live = HashSet::new();
        let mut cleaned = HashSet::new();
        let mut deleting = std::collections::HashMap::new();
        for ir in translation.gateways {
            let id = ir.key.id();
            let Some(gateway) = snapshot.gateways.iter().find(|g| object_id(&g.metadata) == id) else {
                continue;
            };
            if gateway.metadata.deletion_timestamp.is_some() {
                deleting.insert(id, ir.provider);
                continue;
            }
            live.insert(id.clone());
            let Some(job) = self.job_for(&snapshot, gateway, ir.clone()).await else { continue };
            let deployer = self.deployer_for(&ir.provider).await;
            self.workers.submit(deployer, job);
            if let (Some(status), Some(outcome)) = (statuses.gateways.get_mut(&id), self.workers.outcome(&id))
            {
                if outcome.generation == ir.key.generation {
                    programmed::mark(status, outcome.result.as_ref(), Some(ir.key.generation), snapshot.now);
                    if let (Ok(_), Some(why)) = (&outcome.result, self.proxy_not_available(&ir)) {
                        programmed::waiting(status, &why, Some(ir.key.generation), snapshot.now);
                    }
                }
            }
        }
        // Deleted Gateways with our finalizer: everything recorded is deleted from where it is,
        // whether or not the Gateway still resolves to a provider.
        for gateway in snapshot.gateways.iter().filter(|g| g.metadata.deletion_timestamp.is_some()) {
            let id = object_id(&gateway.metadata);
            cleaned.insert(id.clone());
            self.workers.stop(&id);
            if gateway.finalizers().iter().any(|f| f == FINALIZER) {
                self.delete_everywhere(gateway, deleting.get(&id));
            }
            if let (Some(status), Some(why)) = (statuses.gateways.get_mut(&id), self.cleanup_error(&id)) {
                programmed::waiting(status, &why, gateway.metadata.generation, snapshot.now);
            }
        }
        // Gateways of our classes that are not accepted now (a bad edit, a missing
        // ProviderConfig): a Local one's proxy keeps serving what it last accepted, and says so.
        let ours: HashSet<String> = snapshot
            .gateways
            .iter()
            .filter(|g| g.metadata.deletion_timestamp.is_none())
            .filter(|g| {
                snapshot.gateway_classes.iter().any(|c| {
                    name_of(&c.metadata) == g.spec.gateway_class_name
                        && c.spec.controller_name == translate::CONTROLLER_NAME
                })
            })
            .map(|g| object_id(&g.metadata))
            .collect();
        for id in ours.iter().filter(|id| !live.contains(*id)) {
            let (namespace, name) = id.split_once('/').unwrap_or_default();
            let serving = self.owned.deployments.get(&at(namespace, &infra::infra_name(name))).is_some();
            if let (true, Some(status)) = (serving, statuses.gateways.get_mut(id)) {
                let generation = snapshot.gateways.iter().find(|g| object_id(&g.metadata) == *id);
                programmed::keeps_serving(
                    status,
                    generation.and_then(|g| g.metadata.generation),
                    snapshot.now,
                );
            }
        }
        for id in self.workers.ids() {
            if !live.contains(&id) {
                self.workers.stop(&id);
                if !cleaned.contains(&id) && !ours.contains(&id) {
                    self.forget(&id).await;
                }
            }
        }
        // Local Gateways counting in a shared store: whether the operator could read it.
        let health = self.store_health.lock().map(|h| h.clone()).unwrap_or_default();
        for (id, failure_mode, generation) in stores {
            if let (Some(status), Some(known)) = (statuses.gateways.get_mut(&id), health.get(&id)) {
                let stamp = translate::conditions::Stamp::new(Some(generation), snapshot.now);
                status.conditions.push(usage::degraded(known, &failure_mode, &stamp));
            }
        }
        self.write_statuses(&snapshot, &statuses).await;
    }

    async fn deployer_for(&self, settings: &ProviderSettings) -> Arc<dyn Deployer> {
        match settings {
            ProviderSettings::Local(_) => self.local.clone(),
            other => Arc::new(Cloud(other.kind_name(), self.clouds.get(other).await)),
        }
    }

    /// The job of one Gateway: for Local ones with the config their proxies read; for cloud
    /// ones after making sure the finalizer is on.
    async fn job_for(&self, snapshot: &Snapshot, gateway: &Gateway, ir: GatewayIr) -> Option<Job> {
        let object = gateway.object_ref(&());
        let id = ir.key.id();
        // Where the Gateway was provisioned before: the record is brought up to date (before
        // anything is provisioned in a new place), and places it left are cleaned up.
        let recorded = match targets::recorded(gateway) {
            Ok(recorded) => recorded,
            Err(e) => {
                self.metrics.error("record");
                tracing::warn!(gateway = %id, error = %e, "cannot read where the gateway was provisioned");
                return None;
            }
        };
        let plan = targets::plan(&recorded, &ir.provider);
        let has_finalizer = gateway.finalizers().iter().any(|f| f == FINALIZER);
        if plan.record != recorded || has_finalizer == plan.record.is_empty() {
            if let Err(e) = set_record(&self.client, gateway, &plan.record, true).await {
                self.metrics.error("finalizer");
                tracing::warn!(gateway = %id, error = %e, "cannot record where the gateway is provisioned");
                return None;
            }
        }
        if !plan.stale.is_empty() {
            self.clean_targets(gateway.clone(), plan.stale, cleanup::DeletionPolicy::Delete);
        }
        if !matches!(ir.provider, ProviderSettings::Local(_)) {
            // A proxy left from when the Gateway was Local goes.
            if self.owned.deployments.get(&at(&ir.key.namespace, &infra::infra_name(&ir.key.name))).is_some()
            {
                self.forget(&id).await;
            }
            // A new resync count makes the task apply again, which observes the account and
            // repairs changes made out of band (writing nothing when there are none).
            return Some(Job { ir, config: None, edited: self.resyncs, object });
        }
        let subset = snapshot::subset::for_gateway(snapshot, &ir.key.namespace, &ir.key.name)?;
        let config =
            match snapshot::subset::to_yaml(&subset).map_err(|e| e.to_string()).and_then(|y| local::gzip(&y))
            {
                Ok(config) => config,
                Err(e) => {
                    self.metrics.error("config");
                    tracing::error!(gateway = %id, error = %e, "cannot encode the proxy configuration");
                    return None;
                }
            };
        let edited = self.edited_token(&ir.key);
        Some(Job { ir, config: Some(config), edited, object })
    }

    async fn write_statuses(&self, snapshot: &Snapshot, statuses: &translate::Statuses) {
        for patch in status::plan(snapshot, statuses) {
            match status::write(&self.client, &patch).await {
                Ok(()) => {
                    self.metrics
                        .status_writes
                        .get_or_create(&KindLabels { kind: patch.resource.kind.clone() })
                        .inc();
                }
                // Deleted meanwhile: the next pass will not see it.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    self.metrics.error("status_write");
                    tracing::warn!(object = %patch.describe(), error = %e, "cannot write status");
                }
            }
        }
    }
}

/// The uid of the kube-system namespace: stable for the life of the cluster.
async fn cluster_id(client: &Client) -> Result<String, String> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match namespaces.get("kube-system").await {
        Ok(ns) => Ok(ns.metadata.uid.unwrap_or_default()),
        Err(e) => {
            Err(format!("cannot read namespace kube-system for the cluster id (or pass --cluster-id): {e}"))
        }
    }
}

/// The reference of object `namespace/name` in a store.
fn at<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectRef<K> {
    ObjectRef::new(name).within(namespace)
}
