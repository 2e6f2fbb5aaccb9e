//! `tollbridge operator`: reflectors → debounced snapshot → translate → one provider task per
//! Gateway → status by server-side apply. Only the leader writes.

pub mod apikeys;
pub mod infra;
pub mod leader;
pub mod metrics;
pub mod status;
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

    let mut controller = Controller::new(client, &options, metrics.clone());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install signal handler: {e}"))?;
    let changed = controller.source.changed();
    let mut resync = tokio::time::interval(options.resync);
    let mut waiting_logged = false;
    let outcome = loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = resync.tick() => controller.resyncs += 1,
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
            controller.reconcile().await;
        }
    };
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
}

/// Stores of the objects we create for Local Gateways, so hand edits are seen and repaired.
struct OwnedStores {
    deployments: Store<Deployment>,
    service_accounts: Store<ServiceAccount>,
    roles: Store<Role>,
    role_bindings: Store<RoleBinding>,
}

impl Controller {
    fn new(client: Client, options: &OperatorOptions, metrics: Arc<Metrics>) -> Self {
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
        let workers = Workers::new(source.changed(), recorder.clone(), metrics.clone());
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
        }
    }

    /// One pass: snapshot, keys, translate, hand Gateways to their tasks, write statuses.
    async fn reconcile(&mut self) {
        self.metrics.reconciles.inc();
        let snapshot = self.source.snapshot().await;
        self.generate_missing_keys(&snapshot).await;

        let translation = translate::translate(&snapshot, &crate::providers::capabilities);
        let mut statuses = translation.statuses;
        let mut live = HashSet::new();
        let mut cleaned = HashSet::new();
        for ir in translation.gateways {
            let id = ir.key.id();
            let Some(gateway) = snapshot.gateways.iter().find(|g| object_id(&g.metadata) == id) else {
                continue;
            };
            if gateway.metadata.deletion_timestamp.is_some() {
                cleaned.insert(id);
                self.clean_up(gateway.clone(), ir.provider);
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
        // Deleted Gateways of classes no longer ours: nothing left to clean, let them go.
        for gateway in snapshot.gateways.iter().filter(|g| g.metadata.deletion_timestamp.is_some()) {
            let id = object_id(&gateway.metadata);
            if !cleaned.contains(&id) && gateway.finalizers().iter().any(|f| f == FINALIZER) {
                tracing::warn!(gateway = %id, "deleted gateway no longer resolves to a provider; removing the finalizer");
                if let Err(e) = set_finalizer(&self.client, gateway, false).await {
                    tracing::warn!(gateway = %id, error = %e, "cannot remove finalizer");
                }
            }
        }
        for id in self.workers.ids() {
            if !live.contains(&id) {
                self.workers.stop(&id);
                if !cleaned.contains(&id) {
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
        if !matches!(ir.provider, ProviderSettings::Local(_)) {
            if !gateway.finalizers().iter().any(|f| f == FINALIZER) {
                if let Err(e) = set_finalizer(&self.client, gateway, true).await {
                    self.metrics.error("finalizer");
                    tracing::warn!(gateway = %id, error = %e, "cannot add finalizer");
                    return None;
                }
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

    /// Starts the cleanup of a deleted cloud Gateway: provider delete, then finalizer off.
    fn clean_up(&mut self, gateway: Gateway, settings: ProviderSettings) {
        let id = object_id(&gateway.metadata);
        self.workers.stop(&id);
        if !gateway.finalizers().iter().any(|f| f == FINALIZER) {
            return;
        }
        if !self.cleaning.lock().map(|mut c| c.insert(id.clone())).unwrap_or(false) {
            return;
        }
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let recorder = self.recorder.clone();
        let cleaning = self.cleaning.clone();
        let clouds = self.clouds.clone();
        tokio::spawn(async move {
            let key = GatewayKey {
                namespace: namespace_of(&gateway.metadata).into(),
                name: name_of(&gateway.metadata).into(),
                uid: gateway.metadata.uid.clone().unwrap_or_default(),
                generation: gateway.metadata.generation.unwrap_or(1),
            };
            let deployer = Cloud(settings.kind_name(), clouds.get(&settings).await);
            let result = workers::delete_with_retries(&deployer, &key, &metrics, 8).await;
            let (type_, reason, note) = match &result {
                Ok(()) => (
                    EventType::Normal,
                    "Deprovisioned",
                    "Removed everything provisioned for the gateway".to_string(),
                ),
                Err(e) => (EventType::Warning, "DeprovisioningFailed", e.to_string()),
            };
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(note),
                action: "Delete".into(),
                secondary: None,
            };
            let _ = recorder.publish(&event, &gateway.object_ref(&())).await;
            if result.is_ok() {
                if let Err(e) = set_finalizer(&client, &gateway, false).await {
                    tracing::warn!(gateway = %key.id(), error = %e, "cannot remove finalizer");
                }
            }
            if let Ok(mut c) = cleaning.lock() {
                c.remove(&key.id());
            }
        });
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

/// Adds or removes our finalizer by server-side apply under its own field manager.
async fn set_finalizer(client: &Client, gateway: &Gateway, present: bool) -> Result<(), kube::Error> {
    let api: Api<Gateway> = Api::namespaced(client.clone(), namespace_of(&gateway.metadata));
    let finalizers: Vec<&str> = if present { vec![FINALIZER] } else { Vec::new() };
    let body = json!({
        "apiVersion": Gateway::api_version(&()),
        "kind": Gateway::kind(&()),
        "metadata": { "name": name_of(&gateway.metadata), "finalizers": finalizers },
    });
    match api
        .patch(name_of(&gateway.metadata), &PatchParams::apply(FINALIZER_MANAGER), &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 && !present => Ok(()),
        Err(e) => Err(e),
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
