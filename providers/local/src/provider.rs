//! [`LocalProvider`]: applies Gateways to this process's data plane.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tollbridge_provider::{Capabilities, GatewayIr, GatewayKey, Provider, ProviderError, Provisioned};

use crate::counter_store::CounterStore;
use crate::metrics::Metrics;
use crate::policy::{ConsumerSink, PolicyState, SeenConsumer};
use crate::runtime::{CompiledGateway, Table};
use crate::server::{self, ServerSettings, Shared};

/// The built-in data plane as a provider: `apply` compiles the Gateway off the request path,
/// binds any new sockets and swaps the routing table in one step.
pub struct LocalProvider {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    gateways: BTreeMap<String, Arc<CompiledGateway>>,
    /// Bound sockets and the switch that stops their accept loop.
    sockets: HashMap<SocketAddr, watch::Sender<bool>>,
    /// Sockets that could not be bound, with the reason.
    failed: BTreeMap<SocketAddr, String>,
}

impl LocalProvider {
    /// A data plane counting in `state`, or in `counter_store` when given (then `state` is what
    /// its local failure mode counts in).
    pub fn new(
        settings: ServerSettings,
        state: Arc<PolicyState>,
        counter_store: Option<Arc<CounterStore>>,
    ) -> Self {
        let mut metrics = Metrics::default();
        crate::policy::count_key_set_fetches_in(metrics.key_set_fetches.clone());
        if let Some(store) = &counter_store {
            store.register(&mut metrics.registry);
        }
        Self {
            shared: Shared::new(settings, state, counter_store, Arc::new(metrics)),
            capabilities: Capabilities::everything("the tollbridge local proxy"),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether every socket the current Gateways need is bound.
    pub async fn ready(&self) -> bool {
        self.inner.lock().await.failed.is_empty()
    }

    /// Tries again to bind sockets that could not be bound (e.g. the port was busy). Returns
    /// whether any became bound, so callers can refresh statuses.
    pub async fn retry_failed_binds(&self) -> bool {
        let mut inner = self.inner.lock().await;
        let failed: Vec<SocketAddr> = inner.failed.keys().copied().collect();
        let mut recovered = false;
        for socket in failed {
            if let Ok(listener) = TcpListener::bind(socket).await {
                let (stop, stopped) = watch::channel(false);
                tokio::spawn(server::accept_loop(self.shared.clone(), listener, stopped));
                inner.sockets.insert(socket, stop);
                inner.failed.remove(&socket);
                tracing::info!(%socket, "listening (bound on retry)");
                recovered = true;
            }
        }
        recovered
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish within `deadline`.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.shared.drain(deadline).await
    }

    /// Makes the table match `gateways`: binds new sockets, swaps, stops unused sockets.
    async fn install(
        &self,
        inner: &mut Inner,
        gateways: BTreeMap<String, Arc<CompiledGateway>>,
    ) -> Result<(), String> {
        let table = Table::build(&gateways)?;
        // Pooled connections to endpoints that left the configuration are closed.
        let upstreams: HashSet<String> = gateways.values().flat_map(|g| g.upstream_addresses()).collect();
        self.shared.client.retain(|address| upstreams.contains(address));
        let wanted: BTreeSet<SocketAddr> = table.sockets.keys().copied().collect();
        inner.failed.retain(|socket, _| wanted.contains(socket));
        for socket in &wanted {
            if inner.sockets.contains_key(socket) {
                continue;
            }
            match TcpListener::bind(socket).await {
                Ok(listener) => {
                    let (stop, stopped) = watch::channel(false);
                    tokio::spawn(server::accept_loop(self.shared.clone(), listener, stopped));
                    inner.sockets.insert(*socket, stop);
                    inner.failed.remove(socket);
                    tracing::info!(%socket, "listening");
                }
                Err(e) => {
                    tracing::error!(%socket, error = %e, "cannot bind listener");
                    inner.failed.insert(*socket, e.to_string());
                }
            }
        }
        self.shared.table.store(Arc::new(table));
        self.shared.metrics.config_reloads.inc();
        inner.sockets.retain(|socket, stop| {
            let keep = wanted.contains(socket);
            if !keep {
                stop.send_replace(true);
                tracing::info!(%socket, "stopped listening");
            }
            keep
        });
        // Consumers no longer configured lose their series (token consumers seen go on while
        // their policy still checks tokens).
        let tokens: Vec<(&str, SeenConsumer)> = gateways
            .iter()
            .flat_map(|(id, gateway)| {
                gateway.policies.token_consumers().into_iter().map(move |t| (id.as_str(), t))
            })
            .collect();
        let mut consumers: HashSet<(&str, &str, &str)> = gateways
            .iter()
            .flat_map(|(id, gateway)| gateway.policies.consumers().map(move |(p, c)| (id.as_str(), p, c)))
            .collect();
        consumers.extend(tokens.iter().map(|(gateway, seen)| (*gateway, &*seen.policy, &*seen.consumer)));
        let mut quota_consumers: HashSet<(&str, &str, &str)> = gateways
            .iter()
            .flat_map(|(id, gateway)| {
                gateway.policies.quota_consumers().map(move |(p, c)| (id.as_str(), p, c))
            })
            .collect();
        let with_quota = tokens.iter().filter(|(_, seen)| seen.quota);
        quota_consumers.extend(with_quota.map(|(gateway, seen)| (*gateway, &*seen.policy, &*seen.consumer)));
        self.shared.metrics.consumer_requests.retain(
            |gateway, policy, consumer| consumers.contains(&(gateway, policy, consumer)),
            |gateway, policy, consumer| quota_consumers.contains(&(gateway, policy, consumer)),
        );
        inner.gateways = gateways;
        Ok(())
    }

    /// [`Provider::apply`] for a Gateway the caller keeps too: served without a copy.
    pub async fn apply_shared(&self, gateway: Arc<GatewayIr>) -> Result<Provisioned, ProviderError> {
        let settings = &self.shared.settings;
        let id = gateway.key.id();
        let mut compiled = CompiledGateway::compile(gateway, settings.bind_address, settings.bind)
            .map_err(|e| ProviderError::Invalid(format!("Gateway {id}: {e}")))?;
        let sink =
            ConsumerSink::new(self.shared.metrics.consumer_requests.clone(), Arc::new(compiled.id.clone()));
        compiled.policies.count_consumers(sink);
        let mut inner = self.inner.lock().await;
        if let Some(previous) = inner.gateways.get(&compiled.id) {
            compiled.policies.carry_token_consumers(&previous.policies);
        }
        let compiled = Arc::new(compiled);
        let mut gateways = inner.gateways.clone();
        gateways.insert(compiled.id.clone(), compiled.clone());
        self.install(&mut inner, gateways).await.map_err(ProviderError::Invalid)?;

        let mut provisioned = Provisioned::default();
        for (socket, config) in &compiled.sockets {
            if let Some(why) = inner.failed.get(socket) {
                for listener in config.router.listeners() {
                    provisioned
                        .failed_listeners
                        .insert(listener.clone(), format!("cannot bind {socket}: {why}"));
                }
            }
            let address = socket.ip().to_string();
            if !provisioned.addresses.contains(&address) {
                provisioned.addresses.push(address);
            }
        }
        Ok(provisioned)
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn apply(&self, gateway: &GatewayIr) -> Result<Provisioned, ProviderError> {
        self.apply_shared(Arc::new(gateway.clone())).await
    }

    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError> {
        let mut inner = self.inner.lock().await;
        let mut gateways = inner.gateways.clone();
        if gateways.remove(&key.id()).is_none() {
            return Ok(());
        }
        self.install(&mut inner, gateways).await.map_err(ProviderError::Invalid)
    }
}
