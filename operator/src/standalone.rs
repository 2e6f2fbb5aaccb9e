//! The local data plane with its admin endpoint and live reload, fed by YAML files
//! (`tollbridge run`) or by a Gateway's config Secret (`tollbridge proxy`). Either way the
//! translator runs here; a bad edit keeps the last good configuration serving.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollbridge_local::counter_store::CounterStoreStatus;
use tollbridge_local::policy::PolicyState;
use tollbridge_local::{
    AdminDocs, CounterStore, CounterStoreSettings, LazyJson, LocalProvider, ServerSettings,
};
use tollbridge_provider::{GatewayIr, GatewayKey, Provider, ProviderSettings};

use crate::providers;
use crate::source::{config_secret, files};
use crate::translate::{self, programmed, Statuses};

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// YAML files and directories, polled for changes.
    Files(Vec<PathBuf>),
    /// The config Secret the operator writes for one Gateway, watched through the API server.
    Secret { namespace: String, name: String },
}

/// Options of `tollbridge run` and `tollbridge proxy`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub source: ConfigSource,
    /// What a field an object's kind does not have makes of its document.
    pub validation: files::Validation,
    /// Serve only this Gateway (`namespace/name`).
    pub only_gateway: Option<String>,
    pub admin_address: SocketAddr,
    pub state_dir: Option<PathBuf>,
    /// Count limits in this shared store instead of in the process.
    pub counter_store: Option<CounterStoreSettings>,
    pub poll_interval: Duration,
    pub drain_timeout: Duration,
    pub server: ServerSettings,
}

/// What `/status` serves: the statuses of the last good configuration, plus load errors of
/// the files as they are now (empty when they load).
#[derive(Serialize)]
struct StatusDoc<'a> {
    #[serde(flatten)]
    statuses: &'a Statuses,
    errors: &'a [String],
    #[serde(rename = "counterStore", skip_serializing_if = "Option::is_none")]
    counter_store: Option<&'a CounterStoreStatus>,
}

struct Standalone {
    options: RunOptions,
    provider: Arc<LocalProvider>,
    docs: Arc<ArcSwap<AdminDocs>>,
    applied: BTreeSet<GatewayKey>,
    statuses: Arc<Statuses>,
    config: Arc<Vec<Arc<GatewayIr>>>,
    /// The latest text of the config Secret (Secret source only).
    secret: Option<watch::Receiver<Option<Result<String, String>>>>,
    /// Documents parsed by earlier reloads: a reload parses only what changed.
    documents: files::DocumentCache,
    /// The load errors last published.
    errors: Vec<String>,
    /// Whether the counter store was up, and since when, as last published.
    store_state: Option<(bool, jiff::Timestamp)>,
}

/// The `Degraded` condition of a Gateway whose limits are counted in the shared store.
fn degraded(store: &CounterStoreStatus, since: jiff::Timestamp, others: &[Condition]) -> Condition {
    let (status, reason, message) = if store.up {
        ("False", "CounterStoreAvailable", format!("rate limits and quotas are counted in {}", store.url))
    } else {
        (
            "True",
            "CounterStoreUnavailable",
            format!(
                "the counter store {} does not answer; limits follow the failure mode {}",
                store.url,
                store.failure_mode.as_str()
            ),
        )
    };
    Condition {
        type_: "Degraded".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: others.first().and_then(|c| c.observed_generation),
        last_transition_time: Time(since),
    }
}

/// Runs until SIGTERM or Ctrl-C, then drains. Returns an error only for startup failures.
pub async fn run(options: RunOptions) -> Result<(), String> {
    let state = match &options.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create state dir {}: {e}", dir.display()))?;
            PolicyState::load(dir).map_err(|e| e.to_string())?
        }
        None => PolicyState::new(),
    };
    let counter_store = match options.counter_store.clone() {
        Some(settings) => Some(CounterStore::start(settings).map_err(|e| e.to_string())?),
        None => None,
    };
    let provider = Arc::new(LocalProvider::new(options.server.clone(), Arc::new(state), counter_store));
    let docs = Arc::new(ArcSwap::from_pointee(AdminDocs::default()));
    let admin = TcpListener::bind(options.admin_address)
        .await
        .map_err(|e| format!("cannot bind admin address {}: {e}", options.admin_address))?;
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(tollbridge_local::admin::serve(admin, provider.clone(), docs.clone(), admin_stopped));
    tracing::info!(address = %options.admin_address, "admin endpoint listening");

    let mut standalone = Standalone {
        options,
        provider,
        docs,
        applied: BTreeSet::new(),
        statuses: Arc::default(),
        config: Arc::default(),
        secret: None,
        documents: files::DocumentCache::default(),
        errors: Vec::new(),
        store_state: None,
    };
    let mut secret_changes = match &standalone.options.source {
        ConfigSource::Files(_) => {
            if let Err(errors) = standalone.reload().await {
                return Err(format!("cannot load the configuration:\n{}", errors.join("\n")));
            }
            None
        }
        ConfigSource::Secret { namespace, name } => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?;
            tracing::info!(secret = %format!("{namespace}/{name}"), "waiting for the configuration Secret");
            let receiver = config_secret::watch(client, namespace, name);
            standalone.secret = Some(receiver.clone());
            Some(receiver)
        }
    };

    let mut fingerprint = standalone.fingerprint();
    let mut poll = tokio::time::interval(standalone.options.poll_interval);
    let mut save = tokio::time::interval(Duration::from_secs(10));
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some(()) = next_change(&mut secret_changes) => {
                let _ = standalone.reload().await;
            }
            _ = poll.tick() => {
                standalone.publish_store_changes();
                let now = standalone.fingerprint();
                let rebound = !standalone.provider.ready().await
                    && standalone.provider.retry_failed_binds().await;
                if now != fingerprint || rebound {
                    fingerprint = now;
                    let _ = standalone.reload().await;
                }
            }
            _ = save.tick() => standalone.save_state(),
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(deadline = ?standalone.options.drain_timeout, "draining");
    let left = standalone.provider.drain(standalone.options.drain_timeout).await;
    if left > 0 {
        tracing::warn!(connections = left, "drain deadline passed with connections still open");
    }
    standalone.save_state();
    let _ = stop_admin.send(true);
    Ok(())
}

/// Resolves when the config Secret changed; never when there is none (or its watch ended).
async fn next_change(changes: &mut Option<watch::Receiver<Option<Result<String, String>>>>) -> Option<()> {
    match changes {
        Some(receiver) => receiver.changed().await.ok(),
        None => std::future::pending().await,
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(kind).map_err(|e| format!("cannot install signal handler: {e}"))
}

impl Standalone {
    /// Loads, translates and applies the files. On load errors the last good configuration
    /// keeps serving and the errors are published on `/status`.
    async fn reload(&mut self) -> Result<(), Vec<String>> {
        let started = std::time::Instant::now();
        let loaded = match self.load() {
            Ok(loaded) => loaded,
            Err(errors) => {
                let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                for e in &errors {
                    tracing::error!(error = %e, "configuration not applied; the last good one keeps serving");
                }
                self.publish(&errors);
                return Err(errors);
            }
        };
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let mut loaded = loaded;
        loaded.snapshot.now = jiff::Timestamp::now();
        let snapshot = &loaded.snapshot;
        let loaded_at = started.elapsed();
        let translation = translate::translate(snapshot, &providers::capabilities);
        let translated_at = started.elapsed();
        let mut statuses = translation.statuses;
        let mut served = BTreeSet::new();
        let mut config = Vec::new();
        for gateway in translation.gateways {
            let id = gateway.key.id();
            if self.options.only_gateway.as_ref().is_some_and(|only| *only != id) {
                continue;
            }
            let Some(status) = statuses.gateways.get_mut(&id) else { continue };
            if !matches!(gateway.provider, ProviderSettings::Local(_)) {
                tracing::warn!(gateway = %id, provider = gateway.provider.kind_name(), "skipped: `tollbridge run` serves Local Gateways only");
                continue;
            }
            let gateway = Arc::new(gateway);
            let result = self.provider.apply_shared(gateway.clone()).await;
            programmed::mark(status, result.as_ref(), Some(gateway.key.generation), snapshot.now);
            match result {
                Ok(_) => {
                    served.insert(gateway.key.clone());
                    config.push(gateway);
                }
                Err(e) => tracing::error!(gateway = %id, error = %e, "gateway not applied"),
            }
        }
        for gone in self.applied.difference(&served) {
            if let Err(e) = self.provider.delete(gone).await {
                tracing::error!(gateway = %gone.id(), error = %e, "cannot remove gateway");
            }
        }
        self.applied = served;
        for problem in statuses.problems() {
            tracing::warn!("{problem}");
        }
        self.statuses = Arc::new(statuses);
        self.config = Arc::new(config);
        self.publish(&[]);
        tracing::info!(
            gateways = self.applied.len(),
            routes = self.config.iter().map(|g| g.routes.len()).sum::<usize>(),
            load_ms = loaded_at.as_millis() as u64,
            translate_ms = (translated_at - loaded_at).as_millis() as u64,
            apply_ms = (started.elapsed() - translated_at).as_millis() as u64,
            "configuration applied"
        );
        // After serving: the previous load's objects are freed here.
        self.documents.remember(loaded);
        Ok(())
    }

    fn load(&mut self) -> Result<files::Loaded, files::LoadErrors> {
        match (&self.options.source, &self.secret) {
            (ConfigSource::Files(paths), _) => {
                files::load_paths_cached(paths, &mut self.documents, self.options.validation)
            }
            (ConfigSource::Secret { namespace, name }, Some(receiver)) => {
                let origin = PathBuf::from(format!("Secret {namespace}/{name}"));
                match &*receiver.borrow() {
                    Some(Ok(text)) => {
                        files::load_str_cached(&origin, text, &mut self.documents, self.options.validation)
                    }
                    Some(Err(message)) => Err(files::LoadErrors(vec![files::LoadError {
                        file: origin,
                        document: 0,
                        message: message.clone(),
                    }])),
                    None => Err(files::LoadErrors(vec![files::LoadError {
                        file: origin,
                        document: 0,
                        message: "not read yet".into(),
                    }])),
                }
            }
            (ConfigSource::Secret { .. }, None) => Ok(files::Loaded::default()),
        }
    }

    /// Publishes the status again when the counter store went down or came back.
    fn publish_store_changes(&mut self) {
        let Some(store) = &self.provider.shared().counter_store else { return };
        if self.store_state.map(|(up, _)| up) != Some(store.is_up()) {
            let errors = std::mem::take(&mut self.errors);
            self.publish(&errors);
        }
    }

    fn publish(&mut self, errors: &[String]) {
        self.errors = errors.to_vec();
        let store = self.provider.shared().counter_store.as_ref().map(|store| store.status());
        // The Gateways whose limits the store counts, and since when it is up or down.
        let mut counted = Vec::new();
        if let Some(store) = &store {
            let since = match self.store_state {
                Some((up, since)) if up == store.up => since,
                _ => jiff::Timestamp::now(),
            };
            self.store_state = Some((store.up, since));
            counted = self
                .config
                .iter()
                .filter(|g| g.policies.iter().any(|p| p.rate_limit.is_some() || p.quota.is_some()))
                .map(|g| g.key.id())
                .collect();
        }
        let since = self.store_state.map(|(_, since)| since);
        let (statuses, errors) = (self.statuses.clone(), self.errors.clone());
        let status = LazyJson::new(move || {
            let mut statuses = std::borrow::Cow::Borrowed(&*statuses);
            if let (Some(store), Some(since)) = (&store, since) {
                for id in &counted {
                    if let Some(status) = statuses.to_mut().gateways.get_mut(id) {
                        status.conditions.push(degraded(store, since, &status.conditions));
                    }
                }
            }
            let doc = StatusDoc { statuses: &statuses, errors: &errors, counter_store: store.as_ref() };
            serde_json::to_vec_pretty(&doc).unwrap_or_default()
        });
        let gateways = self.config.clone();
        let config = LazyJson::new(move || {
            let gateways: Vec<&GatewayIr> = gateways.iter().map(|gateway| &**gateway).collect();
            serde_json::to_vec_pretty(&gateways).unwrap_or_default()
        });
        let configured = self.docs.load().configured || self.errors.is_empty();
        self.docs.store(Arc::new(AdminDocs { status, config, configured }));
    }

    fn save_state(&self) {
        if let Some(dir) = &self.options.state_dir {
            if let Err(e) = self.provider.shared().state.save(dir) {
                tracing::error!(error = %e, "cannot save quota counters");
            }
        }
    }

    /// Changes when any watched file is added, removed, or modified.
    fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let ConfigSource::Files(paths) = &self.options.source else { return 0 };
        for path in paths {
            for file in files::yaml_files(path).unwrap_or_default() {
                file.hash(&mut hasher);
                if let Ok(meta) = std::fs::metadata(&file) {
                    meta.len().hash(&mut hasher);
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH).hash(&mut hasher);
                }
            }
        }
        hasher.finish()
    }
}
