//! Snapshots from the API server: one reflector per kind the translator reads, a change signal
//! for whoever builds snapshots, and Secrets fetched only when something references them.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::api::gateway::{BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant};
use crate::api::tollbridge::{ApiKey, ProviderConfig, QuotaPolicy};
use crate::snapshot::{name_of, namespace_of, referenced_config_map_ids, referenced_secret_ids, Snapshot};
use crate::translate::SERVICE_NAME_LABEL;

/// Which namespaces to read: all of them, or one (namespaced kinds only).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespace: Option<String>,
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// Watches run in the background and end when this is dropped.
#[derive(Default)]
pub struct Watches {
    changed: Arc<Notify>,
    synced: Vec<(&'static str, Arc<AtomicBool>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Watches {
    /// Signalled after any watched object changes.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Kinds whose first listing has not completed (their CRD may be missing).
    pub fn unsynced(&self) -> Vec<&'static str> {
        self.synced.iter().filter(|(_, done)| !done.load(Ordering::Relaxed)).map(|(kind, _)| *kind).collect()
    }

    /// Starts a reflector of `api` and returns its store. Errors (a missing CRD, a lost
    /// connection) are logged and retried with backoff; they never end the watch.
    pub fn watch<K>(&mut self, kind: &'static str, api: Api<K>, config: watcher::Config) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
    {
        let (store, writer) = reflector::store();
        let stream = watcher(api, config)
            .default_backoff()
            .modify(|object: &mut K| object.managed_fields_mut().clear())
            .reflect(writer);
        self.spawn(kind, store.clone(), stream);
        store
    }

    /// Like [`Watches::watch`] for object metadata only.
    pub fn watch_metadata<K>(
        &mut self,
        kind: &'static str,
        api: Api<PartialObjectMeta<K>>,
        config: watcher::Config,
    ) -> Store<PartialObjectMeta<K>>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
    {
        self.watch(kind, api, config)
    }

    fn spawn<K, S>(&mut self, kind: &'static str, store: Store<K>, stream: S)
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let synced = Arc::new(AtomicBool::new(false));
        self.synced.push((kind, synced.clone()));
        let changed = self.changed.clone();
        self.tasks.push(tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                synced.store(true, Ordering::Relaxed);
                tracing::debug!(kind, "watch synced");
                changed.notify_one();
            }
        }));
        let changed = self.changed.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut failing = false;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => {}
                    Ok(_) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!(kind, "watch recovered");
                        }
                        changed.notify_one();
                    }
                    Err(error) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(kind, %error, "cannot watch (is its CRD installed and readable?); retrying");
                        }
                    }
                }
            }
        }));
    }
}

/// The reflectors of every kind the translator reads.
pub struct ClusterSource {
    client: Client,
    watches: Watches,
    gateway_classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    http_routes: Store<HTTPRoute>,
    grpc_routes: Store<GRPCRoute>,
    backend_tls_policies: Store<BackendTLSPolicy>,
    reference_grants: Store<ReferenceGrant>,
    config_map_metadata: Store<PartialObjectMeta<ConfigMap>>,
    namespaces: Store<Namespace>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    secret_metadata: Store<PartialObjectMeta<Secret>>,
    provider_configs: Store<ProviderConfig>,
    quota_policies: Store<QuotaPolicy>,
    api_keys: Store<ApiKey>,
    /// Referenced Secrets fetched so far, by `namespace/name`, checked against the metadata
    /// watch's resourceVersion before use.
    secrets: Mutex<HashMap<String, Secret>>,
    /// Referenced ConfigMaps fetched so far, likewise.
    config_maps: Mutex<HashMap<String, ConfigMap>>,
}

impl ClusterSource {
    /// Starts the watches. Secrets are watched by metadata only; their data is read on demand.
    pub fn start(client: Client, scope: &Scope) -> Self {
        let mut w = Watches::default();
        let all = watcher::Config::default();
        Self {
            gateway_classes: w.watch("GatewayClass", Api::all(client.clone()), all.clone()),
            gateways: w.watch("Gateway", scope.api(&client), all.clone()),
            http_routes: w.watch("HTTPRoute", scope.api(&client), all.clone()),
            grpc_routes: w.watch("GRPCRoute", scope.api(&client), all.clone()),
            backend_tls_policies: w.watch("BackendTLSPolicy", scope.api(&client), all.clone()),
            config_map_metadata: w.watch_metadata::<ConfigMap>("ConfigMap", scope.api(&client), all.clone()),
            reference_grants: w.watch("ReferenceGrant", scope.api(&client), all.clone()),
            namespaces: w.watch("Namespace", Api::all(client.clone()), all.clone()),
            services: w.watch("Service", scope.api(&client), all.clone()),
            endpoint_slices: w.watch("EndpointSlice", scope.api(&client), all.clone()),
            secret_metadata: w.watch_metadata::<Secret>("Secret", scope.api(&client), all.clone()),
            provider_configs: w.watch("ProviderConfig", Api::all(client.clone()), all.clone()),
            quota_policies: w.watch("QuotaPolicy", scope.api(&client), all.clone()),
            api_keys: w.watch("ApiKey", scope.api(&client), all),
            secrets: Mutex::default(),
            config_maps: Mutex::default(),
            watches: w,
            client,
        }
    }

    pub fn watches(&mut self) -> &mut Watches {
        &mut self.watches
    }

    pub fn changed(&self) -> Arc<Notify> {
        self.watches.changed()
    }

    pub fn unsynced(&self) -> Vec<&'static str> {
        self.watches.unsynced()
    }

    /// Whether a Secret exists (as far as the watch knows).
    pub fn secret_exists(&self, namespace: &str, name: &str) -> bool {
        self.secret_metadata.get(&ObjectRef::new(name).within(namespace)).is_some()
    }

    pub fn gateways(&self) -> Vec<Arc<Gateway>> {
        self.gateways.state()
    }

    pub fn services(&self) -> &Store<Service> {
        &self.services
    }

    /// Ready endpoints of Service `namespace/name`, over its EndpointSlices.
    pub fn ready_endpoints(&self, namespace: &str, name: &str) -> usize {
        self.endpoint_slices
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .filter(|s| {
                s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(String::as_str)
                    == Some(name)
            })
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .count()
    }

    pub fn secret_metadata(&self) -> &Store<PartialObjectMeta<Secret>> {
        &self.secret_metadata
    }

    /// Every watched object as of now, sorted by namespace and name; Secrets are those referenced
    /// by a Gateway listener or an ApiKey.
    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let mut snapshot = Snapshot {
            now: jiff::Timestamp::now(),
            gateway_classes: sorted(&self.gateway_classes),
            gateways: sorted(&self.gateways),
            http_routes: sorted(&self.http_routes),
            grpc_routes: sorted(&self.grpc_routes),
            backend_tls_policies: sorted(&self.backend_tls_policies),
            reference_grants: sorted(&self.reference_grants),
            namespaces: sorted(&self.namespaces),
            services: sorted(&self.services),
            endpoint_slices: sorted(&self.endpoint_slices),
            secrets: Vec::new(),
            config_maps: Vec::new(),
            provider_configs: sorted(&self.provider_configs),
            quota_policies: sorted(&self.quota_policies),
            api_keys: sorted(&self.api_keys),
        };
        let secrets = referenced_secret_ids(&snapshot);
        snapshot.secrets = self.referenced("Secret", secrets, &self.secret_metadata, &self.secrets).await?;
        let config_maps = referenced_config_map_ids(&snapshot);
        snapshot.config_maps =
            self.referenced("ConfigMap", config_maps, &self.config_map_metadata, &self.config_maps).await?;
        Ok(snapshot)
    }

    /// The objects of kind `K` (Secrets, ConfigMaps) the snapshot references (`ids`), watched by
    /// metadata only: from `cache` when their resourceVersion is unchanged, else read (several
    /// at a time). One that cannot be read is not taken for absent: its last good value is
    /// used, and when there is none the snapshot is refused (an absent API key would be deleted
    /// from a cloud, an absent certificate would take a listener down, an absent CA would fail
    /// a backend's TLS).
    async fn referenced<K>(
        &self,
        kind: &str,
        ids: std::collections::BTreeSet<(String, String)>,
        metadata: &Store<PartialObjectMeta<K>>,
        cache: &Mutex<HashMap<String, K>>,
    ) -> Result<Vec<K>, String>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        /// Objects read at once (the first pass after a start reads them all).
        const CONCURRENT_READS: usize = 8;
        let mut out = Vec::new();
        let mut to_read = Vec::new();
        for (namespace, name) in ids {
            let Some(meta) = metadata.get(&ObjectRef::new(&name).within(&namespace)) else {
                continue;
            };
            let id = format!("{namespace}/{name}");
            let cached = cache.lock().ok().and_then(|c| c.get(&id).cloned());
            match cached {
                Some(object) if object.meta().resource_version == meta.metadata.resource_version => {
                    out.push(object)
                }
                cached => to_read.push((namespace, name, id, cached)),
            }
        }
        let reads = futures::stream::iter(to_read.into_iter().map(|(namespace, name, id, cached)| {
            let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
            async move { (api.get_opt(&name).await, id, cached) }
        }))
        .buffer_unordered(CONCURRENT_READS)
        .collect::<Vec<_>>()
        .await;
        let mut unreadable = Vec::new();
        for (result, id, cached) in reads {
            match result {
                Ok(Some(mut object)) => {
                    object.meta_mut().managed_fields = None;
                    if let Ok(mut cache) = cache.lock() {
                        cache.insert(id, object.clone());
                    }
                    out.push(object);
                }
                Ok(None) => {}
                Err(error) => match cached {
                    Some(last_good) => {
                        tracing::warn!(kind, object = %id, %error, "cannot read a referenced object; using its last good value");
                        out.push(last_good);
                    }
                    None => {
                        tracing::error!(kind, object = %id, %error, "cannot read a referenced object");
                        unreadable.push(format!("{id}: {error}"));
                    }
                },
            }
        }
        if !unreadable.is_empty() {
            return Err(format!("cannot read referenced {kind}s: {}", unreadable.join("; ")));
        }
        if let Ok(mut cache) = cache.lock() {
            let keep: std::collections::HashSet<String> =
                out.iter().map(|o| crate::snapshot::object_id(o.meta())).collect();
            cache.retain(|id, _| keep.contains(id));
        }
        out.sort_by(|a, b| {
            (namespace_of(a.meta()), name_of(a.meta())).cmp(&(namespace_of(b.meta()), name_of(b.meta())))
        });
        Ok(out)
    }
}

fn sorted<K>(store: &Store<K>) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let mut items: Vec<K> = store.state().iter().map(|o| (**o).clone()).collect();
    items.sort_by(|a, b| {
        (namespace_of(a.meta()), name_of(a.meta())).cmp(&(namespace_of(b.meta()), name_of(b.meta())))
    });
    items
}
