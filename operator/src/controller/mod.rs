//! `tollbridge operator`: reflectors → debounced snapshot → translate → one provider task per
//! Gateway → status by server-side apply. Only the leader writes.

pub mod apikeys;
pub mod infra;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod targets;
mod workers;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollbridge_provider::{GatewayIr, GatewayKey, ProviderSettings};

use crate::api::gateway::Gateway;
use crate::snapshot::{self, name_of, namespace_of, object_id, Snapshot};
use crate::source::cluster::{ClusterSource, Scope};
use crate::translate::{self, programmed};
use leader::LeaseSettings;
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
    let mut waiting_logged = false;
    let outcome = loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = resync.tick() => controller.resyncs += 1,
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
        }
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
        self.write_statuses(&snapshot, &statuses).await;
    }

    /// A Gateway whose class stopped being ours, or that was deleted without finalizer:
    /// remove what the Local provider created for it (cloud Gateways keep their finalizer).
    async fn forget(&self, id: &str) {
        let Some((namespace, name)) = id.split_once('/') else { return };
        let key = GatewayKey { namespace: namespace.into(), name: name.into(), ..GatewayKey::default() };
        let deployment =
            self.owned.deployments.get(&ObjectRef::new(&infra::infra_name(name)).within(namespace));
        if deployment.is_some() {
            if let Err(e) = workers::delete_with_retries(self.local.as_ref(), &key, &self.metrics, 3).await {
                tracing::warn!(gateway = %id, error = %e, "cannot remove the proxy of a gateway that is no longer ours");
            }
        }
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
            self.clean_targets(gateway.clone(), plan.stale);
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
            match snapshot::subset::to_yaml(&subset).map_err(|e| e.to_string()).and_then(|y| gzip(&y)) {
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

    /// Why a Local Gateway's proxy cannot serve yet: no replica of its Deployment is available.
    fn proxy_not_available(&self, ir: &GatewayIr) -> Option<String> {
        if !matches!(ir.provider, ProviderSettings::Local(_)) {
            return None;
        }
        let name = infra::infra_name(&ir.key.name);
        let deployment = self.owned.deployments.get(&ObjectRef::new(&name).within(&ir.key.namespace));
        let status = deployment.as_ref().and_then(|d| d.status.clone()).unwrap_or_default();
        let available = status.available_replicas.unwrap_or(0);
        if available < 1 {
            return Some(format!(
                "Waiting for the proxy: Deployment {name} has {available} of {} replicas available",
                status.replicas.unwrap_or(0)
            ));
        }
        // Traffic reaches a pod through the Service only once it is among its ready endpoints
        // (a Gateway without a listener has no Service).
        (infra::has_service(ir) && self.source.ready_endpoints(&ir.key.namespace, &name) == 0)
            .then(|| format!("Waiting for the proxy: Service {name} has no ready endpoint yet"))
    }

    /// Zero when every object we created for a Local Gateway is as we left it; otherwise a
    /// fingerprint of the versions someone else wrote (or of their absence).
    fn edited_token(&self, key: &GatewayKey) -> u64 {
        let name = infra::infra_name(&key.name);
        let secret_name = infra::config_secret_name(&key.name);
        let ns = key.namespace.as_str();
        let seen = [
            (
                "Deployment",
                name.as_str(),
                self.owned
                    .deployments
                    .get(&at(ns, &name))
                    .and_then(|o| infra::edit_version("Deployment", o.meta())),
            ),
            (
                "ServiceAccount",
                &name,
                self.owned.service_accounts.get(&at(ns, &name)).and_then(|o| o.resource_version()),
            ),
            ("Role", &name, self.owned.roles.get(&at(ns, &name)).and_then(|o| o.resource_version())),
            (
                "RoleBinding",
                &name,
                self.owned.role_bindings.get(&at(ns, &name)).and_then(|o| o.resource_version()),
            ),
            ("Service", &name, self.source.services().get(&at(ns, &name)).and_then(|o| o.resource_version())),
            (
                "Secret",
                &secret_name,
                self.source.secret_metadata().get(&at(ns, &secret_name)).and_then(|o| o.resource_version()),
            ),
        ];
        let foreign: Vec<_> = seen
            .iter()
            .filter(|(kind, name, version)| {
                !self.written.is_ours(kind, &key.namespace, name, version.as_deref())
            })
            .collect();
        if foreign.is_empty() {
            return 0;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        foreign.hash(&mut hasher);
        hasher.finish().max(1)
    }

    /// Deletes a deleted Gateway from every place it is recorded as provisioned into (or, for a
    /// Gateway provisioned before records existed, from where it resolves to now); the
    /// finalizer goes once the record is empty.
    fn delete_everywhere(&self, gateway: &Gateway, current: Option<&ProviderSettings>) {
        let id = object_id(&gateway.metadata);
        let targets = match targets::recorded(gateway) {
            Ok(recorded) if !recorded.is_empty() => recorded,
            Ok(_) => match current {
                Some(ProviderSettings::Local(_)) => Vec::new(),
                Some(cloud) => vec![cloud.clone()],
                None => {
                    let why = "no record of where this Gateway was provisioned, and its class no longer \
                               resolves to a provider: remove the finalizer tollbridge.dev/cleanup by hand \
                               once its cloud resources are gone";
                    self.set_cleanup_error(&id, Some(why.to_string()));
                    return;
                }
            },
            Err(e) => {
                self.set_cleanup_error(&id, Some(e));
                return;
            }
        };
        self.clean_targets(gateway.clone(), targets);
    }

    fn set_cleanup_error(&self, id: &str, error: Option<String>) {
        if let Ok(mut errors) = self.cleanup_errors.lock() {
            match error {
                Some(e) => errors.insert(id.to_string(), e),
                None => errors.remove(id),
            };
        }
    }

    /// Why the cleanup of a Gateway's old or last targets failed, if it did.
    fn cleanup_error(&self, id: &str) -> Option<String> {
        self.cleanup_errors.lock().ok().and_then(|e| e.get(id).cloned())
    }

    /// Deletes the Gateway's resources from each of `stale` in the background, dropping each from
    /// the record once its provider confirmed; with the record empty, the finalizer goes too. A
    /// target that cannot be cleaned (its provider fails, or cannot even be set up) stays in the
    /// record and is tried again at a later pass; an Event and the Gateway's status say why.
    fn clean_targets(&self, gateway: Gateway, stale: Vec<ProviderSettings>) {
        let id = object_id(&gateway.metadata);
        if !self.cleaning.lock().map(|mut c| c.insert(id.clone())).unwrap_or(false) {
            return;
        }
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let recorder = self.recorder.clone();
        let cleaning = self.cleaning.clone();
        let errors = self.cleanup_errors.clone();
        let clouds = self.clouds.clone();
        let leading = self.leading.clone();
        let task = tokio::spawn(async move {
            let key = GatewayKey {
                namespace: namespace_of(&gateway.metadata).into(),
                name: name_of(&gateway.metadata).into(),
                uid: gateway.metadata.uid.clone().unwrap_or_default(),
                generation: gateway.metadata.generation.unwrap_or(1),
            };
            let object = gateway.object_ref(&());
            let mut failure = None;
            for target in &stale {
                if !*leading.borrow() {
                    break;
                }
                let deployer = Cloud(target.kind_name(), clouds.get(target).await);
                let result = workers::delete_with_retries(&deployer, &key, &metrics, 4).await;
                let (type_, reason, note) = match &result {
                    Ok(()) => (
                        EventType::Normal,
                        "Deprovisioned",
                        format!("Removed everything provisioned for the gateway in {}", describe(target)),
                    ),
                    Err(e) => (
                        EventType::Warning,
                        "DeprovisioningFailed",
                        format!("Cannot remove what was provisioned in {}: {e}; retrying", describe(target)),
                    ),
                };
                let event = Event {
                    type_,
                    reason: reason.into(),
                    note: Some(note.clone()),
                    action: "Delete".into(),
                    secondary: None,
                };
                let _ = recorder.publish(&event, &object).await;
                if result.is_err() {
                    failure = Some(note);
                    break;
                }
                if let Err(e) = drop_from_record(&client, &gateway, Some(target)).await {
                    failure =
                        Some(format!("cannot update the record of where the gateway is provisioned: {e}"));
                    break;
                }
            }
            if stale.is_empty() {
                if let Err(e) = drop_from_record(&client, &gateway, None).await {
                    failure = Some(format!("cannot remove the finalizer: {e}"));
                }
            }
            if failure.is_some() {
                metrics.error("cleanup");
            }
            if let Ok(mut errors) = errors.lock() {
                match failure {
                    Some(why) => errors.insert(key.id(), why),
                    None => errors.remove(&key.id()),
                };
            }
            if let Ok(mut c) = cleaning.lock() {
                c.remove(&key.id());
            }
        });
        if let Ok(mut tasks) = self.cleanups.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Creates the Secret of every ApiKey that names a missing one.
    async fn generate_missing_keys(&self, snapshot: &Snapshot) {
        for api_key in snapshot.api_keys.iter().filter(|k| k.metadata.deletion_timestamp.is_none()) {
            let namespace = namespace_of(&api_key.metadata);
            if self.source.secret_exists(namespace, &api_key.spec.secret_ref.name) {
                continue;
            }
            match apikeys::generate(&self.client, api_key).await {
                Ok(Some(key_id)) => {
                    tracing::info!(apikey = %object_id(&api_key.metadata), secret = %api_key.spec.secret_ref.name, key_id, "generated an API key");
                    let event = Event {
                        type_: EventType::Normal,
                        reason: "KeyGenerated".into(),
                        note: Some(format!(
                            "Generated a key (id {key_id}) into Secret {}",
                            api_key.spec.secret_ref.name
                        )),
                        action: "GenerateKey".into(),
                        secondary: None,
                    };
                    let _ = self.recorder.publish(&event, &api_key.object_ref(&())).await;
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.error("apikey_secret");
                    tracing::warn!(apikey = %object_id(&api_key.metadata), error = %e, "cannot generate API key");
                }
            }
        }
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

/// Writes where a Gateway is provisioned (the annotation of [`targets`]) and the finalizer
/// that goes with a non-empty record, by server-side apply under its own field manager. The
/// write is for this Gateway only (its uid) and, with `as_seen`, only if it is unchanged since
/// it was read (its resourceVersion): concurrent writers of the record never drop an entry.
pub async fn set_record(
    client: &Client,
    gateway: &Gateway,
    record: &[ProviderSettings],
    as_seen: bool,
) -> Result<(), kube::Error> {
    let api: Api<Gateway> = Api::namespaced(client.clone(), namespace_of(&gateway.metadata));
    let finalizers: Vec<&str> = if record.is_empty() { Vec::new() } else { vec![FINALIZER] };
    let annotations = if record.is_empty() {
        json!({})
    } else {
        json!({ targets::PROVISIONED_INTO: targets::encode(record) })
    };
    let mut metadata = json!({
        "name": name_of(&gateway.metadata),
        "uid": gateway.metadata.uid,
        "finalizers": finalizers,
        "annotations": annotations,
    });
    if as_seen {
        metadata["resourceVersion"] = json!(gateway.metadata.resource_version);
    }
    let body = json!({
        "apiVersion": Gateway::api_version(&()),
        "kind": Gateway::kind(&()),
        "metadata": metadata,
    });
    match api
        .patch(name_of(&gateway.metadata), &PatchParams::apply(FINALIZER_MANAGER), &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 && record.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Drops `cleaned`'s target (or nothing) from the record of the Gateway as it is now: read
/// afresh and written only if unchanged meanwhile, retried a few times on conflict. A Gateway
/// that is gone, or was replaced by another of the same name, needs nothing.
async fn drop_from_record(
    client: &Client,
    gateway: &Gateway,
    cleaned: Option<&ProviderSettings>,
) -> Result<(), String> {
    let api: Api<Gateway> = Api::namespaced(client.clone(), namespace_of(&gateway.metadata));
    let name = name_of(&gateway.metadata);
    for _ in 0..5 {
        let live = match api.get_opt(name).await.map_err(|e| e.to_string())? {
            Some(live) if live.metadata.uid == gateway.metadata.uid => live,
            _ => return Ok(()),
        };
        let recorded = targets::recorded(&live)?;
        let record = cleaned.map_or(recorded.clone(), |c| targets::without(&recorded, c));
        match set_record(client, &live, &record, true).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the gateway kept changing while its record was updated".into())
}

/// A provider target in words, for Events and statuses.
fn describe(target: &ProviderSettings) -> String {
    match target {
        ProviderSettings::Local(_) => "the cluster".into(),
        ProviderSettings::Aws(aws) => format!("AWS region {}", aws.region),
        ProviderSettings::Azure(azure) => format!(
            "Azure API Management {}/{}/{}",
            azure.subscription_id, azure.resource_group, azure.service_name
        ),
    }
}

fn gzip(text: &str) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).and_then(|_| encoder.finish()).map_err(|e| format!("gzip: {e}"))
}

/// Reverses [`gzip`] (used by `tollbridge proxy`).
pub fn gunzip(bytes: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes), &mut text)
        .map_err(|e| format!("cannot decompress the configuration: {e}"))?;
    Ok(text)
}
