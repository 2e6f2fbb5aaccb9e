//! A Gateway compiled for serving, and the table mapping each bound socket to its Gateway.
//!
//! Compilation happens off the request path; the result is swapped in atomically.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::ServerConfig;
use tollbridge_provider::{ActionIr, BackendIr, BackendTarget, GatewayIr, ListenerIr, SubjectAltNameIr};

use crate::fast_hash::FastMap;
use crate::metrics::{Label, RouteMetrics};
use crate::policy::Policies;
use crate::proxy::RetryBudget;
use crate::router::PortRouter;
use crate::tls;
use crate::upstream::UpstreamTls;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("Gateway {gateway}: address {address:?} is not an IP address")]
    Address { gateway: String, address: String },
    #[error("routes on port {port}: {message}")]
    Routes { port: u16, message: String },
    #[error("TLS on port {port}: {source}")]
    Tls { port: u16, source: tls::TlsError },
}

/// The header a QuotaPolicy forwards the consumer in when it names none.
pub const DEFAULT_CONSUMER_HEADER: &str = "x-tollbridge-consumer";

/// Where listeners bind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bind {
    /// On the addresses the Gateway asks for (standalone: they are this machine's).
    #[default]
    Requested,
    /// Always on the default address: in a pod, the Gateway's addresses are its Service's.
    Default,
}

/// One Gateway ready to serve.
pub struct CompiledGateway {
    /// `namespace/name`.
    pub id: String,
    /// Per route entry: its request metrics (labelled with its HTTPRoute's `namespace/name`).
    pub route_metrics: Vec<RouteMetrics>,
    /// The metrics of requests no route matched.
    pub unrouted_metrics: RouteMetrics,
    /// The Gateway as translated (shared with whoever applied it, who may show it).
    pub ir: Arc<GatewayIr>,
    /// Per socket: the route table and, for HTTPS, the TLS configuration.
    pub sockets: BTreeMap<SocketAddr, SocketConfig>,
    pub policies: Policies,
    /// Headers this Gateway sets to say who the caller is (every policy's consumer header, and
    /// the default one): removed from every client request, on every route.
    pub identity_headers: Vec<http::HeaderName>,
    /// Round-robin position per (route entry, backend).
    round_robin: Vec<Vec<AtomicUsize>>,
    /// Where each backend's requests go, per (route entry, backend), built once.
    backend_plans: Vec<Vec<BackendPlan>>,
    /// The same for each mirror, per (route entry, mirror).
    mirror_plans: Vec<Vec<BackendPlan>>,
    /// Per route entry with `retry`: how many of its rule's requests are retrying (the entries
    /// of one rule share one).
    retry_budgets: Vec<Option<Arc<RetryBudget>>>,
}

/// Where one backend's requests go, worked out when the configuration is compiled.
pub struct BackendPlan {
    /// The upstream pool's key of each endpoint (of the URL's address, for a backend URL).
    pub keys: Vec<Arc<str>>,
    /// TLS to the backend, or why its TLS settings cannot be used.
    pub tls: Result<Option<Arc<UpstreamTls>>, String>,
    /// The path a backend URL puts requests under (`http://host/api` → `/api`).
    pub url_prefix: Option<String>,
}

/// TLS client settings made while compiling, by hostname and CAs: backends checked the same
/// way share one (and its session cache).
type TlsSettings = HashMap<(String, Vec<String>, Vec<SubjectAltNameIr>), Result<Arc<UpstreamTls>, String>>;

impl BackendPlan {
    fn of(backend: &BackendIr, made: &mut TlsSettings) -> Self {
        let url = match &backend.target {
            BackendTarget::Url { url } => url_upstream(url),
            _ => None,
        };
        let mut tls_for = |hostname: &str, ca: &[String], names: &[SubjectAltNameIr]| {
            made.entry((hostname.to_string(), ca.to_vec(), names.to_vec()))
                .or_insert_with(|| UpstreamTls::new(hostname, ca, names))
                .clone()
                .map(Some)
        };
        let tls = match (&backend.tls, &url) {
            (Some(tls), _) => tls_for(&tls.hostname, &tls.ca_certificates_pem, &tls.subject_alt_names),
            (None, Some(url)) if url.https => tls_for(&url.host, &[], &[]),
            _ => Ok(None),
        };
        let key = |address: String| match &tls {
            Ok(Some(tls)) => tls.pool_key(&address),
            _ => Arc::from(address),
        };
        let keys = match (&backend.target, &url) {
            (BackendTarget::Endpoints { endpoints }, _) => {
                endpoints.iter().map(|e| key(socket_address(&e.address, e.port))).collect()
            }
            (_, Some(url)) => vec![key(url.address.clone())],
            _ => Vec::new(),
        };
        Self { keys, tls, url_prefix: url.and_then(|u| u.prefix) }
    }
}

pub struct SocketConfig {
    pub port: u16,
    pub router: Arc<PortRouter>,
    pub tls: Option<Arc<ServerConfig>>,
}

impl CompiledGateway {
    /// Groups the listeners by socket: every requested address of the Gateway with
    /// `bind: Bind::Requested`, else (or when it asks for none) `default_bind`.
    pub fn compile(ir: Arc<GatewayIr>, default_bind: IpAddr, bind: Bind) -> Result<Self, CompileError> {
        let mut ips = Vec::new();
        if bind == Bind::Requested {
            for address in &ir.addresses {
                let ip = address
                    .parse::<IpAddr>()
                    .map_err(|_| CompileError::Address { gateway: ir.key.id(), address: address.clone() })?;
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            ips.push(default_bind);
        }
        ips.sort_unstable();
        ips.dedup();
        let mut by_port: BTreeMap<u16, Vec<&ListenerIr>> = BTreeMap::new();
        for listener in &ir.listeners {
            by_port.entry(listener.port).or_default().push(listener);
        }
        // One router and TLS configuration per port, shared by its sockets on every address.
        let mut sockets = BTreeMap::new();
        for (port, listeners) in by_port {
            let router = PortRouter::compile(&ir, port)
                .map_err(|e| CompileError::Routes { port, message: e.to_string() })?;
            let router = Arc::new(router);
            let tls = tls::server_config(&listeners).map_err(|source| CompileError::Tls { port, source })?;
            for &ip in &ips {
                let config = SocketConfig { port, router: router.clone(), tls: tls.clone() };
                sockets.insert(SocketAddr::new(ip, port), config);
            }
        }
        let round_robin = ir
            .routes
            .iter()
            .map(|r| match &r.action {
                ActionIr::Forward { backends } => backends.iter().map(|_| AtomicUsize::new(0)).collect(),
                _ => Vec::new(),
            })
            .collect();
        let id_label: Label = Arc::new(ir.key.id());
        let route_metrics =
            ir.routes.iter().map(|r| RouteMetrics::new(id_label.clone(), Arc::new(r.id.route()))).collect();
        let unrouted_metrics = RouteMetrics::new(id_label.clone(), Arc::new(String::new()));
        let mut made = TlsSettings::new();
        let mut plans = |backends: &mut dyn Iterator<Item = &BackendIr>| {
            backends.map(|backend| BackendPlan::of(backend, &mut made)).collect::<Vec<_>>()
        };
        let backend_plans = ir
            .routes
            .iter()
            .map(|r| match &r.action {
                ActionIr::Forward { backends } => plans(&mut backends.iter()),
                _ => Vec::new(),
            })
            .collect();
        let mirror_plans =
            ir.routes.iter().map(|r| plans(&mut r.filters.mirrors.iter().map(|m| &m.backend))).collect();
        let mut rule_budgets: HashMap<_, Arc<RetryBudget>> = HashMap::new();
        let retry_budgets = ir
            .routes
            .iter()
            .map(|r| {
                let rule = (r.id.kind, r.id.namespace.as_str(), r.id.name.as_str(), r.id.rule);
                r.retry.as_ref().map(|_| rule_budgets.entry(rule).or_insert_with(Default::default).clone())
            })
            .collect();
        let mut identity_headers = vec![http::HeaderName::from_static(DEFAULT_CONSUMER_HEADER)];
        let consumer_headers = ir.policies.iter().flat_map(|p| {
            let key = p.api_key.as_ref().map(|k| k.consumer_header.as_str());
            key.into_iter().chain(p.jwt.as_ref().map(|j| j.consumer_header.as_str()))
        });
        for name in consumer_headers {
            if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
                if !identity_headers.contains(&name) {
                    identity_headers.push(name);
                }
            }
        }
        Ok(Self {
            id: ir.key.id(),
            route_metrics,
            unrouted_metrics,
            policies: Policies::compile(&ir.policies),
            identity_headers,
            ir,
            sockets,
            round_robin,
            backend_plans,
            mirror_plans,
            retry_budgets,
        })
    }

    /// The upstream pool's key of every endpoint this Gateway may send to: its backends' and its
    /// mirrors'.
    pub fn upstream_addresses(&self) -> Vec<String> {
        let plans = self.backend_plans.iter().chain(&self.mirror_plans).flatten();
        plans.flat_map(|plan| plan.keys.iter().map(|key| key.to_string())).collect()
    }

    pub fn backend_plan(&self, route: usize, backend: usize) -> &BackendPlan {
        &self.backend_plans[route][backend]
    }

    pub fn mirror_plan(&self, route: usize, mirror: usize) -> &BackendPlan {
        &self.mirror_plans[route][mirror]
    }

    /// The retry budget of a route entry with `retry`.
    pub(crate) fn retry_budget(&self, route: usize) -> Option<&RetryBudget> {
        self.retry_budgets.get(route).and_then(Option::as_deref)
    }

    /// The pool key of the next endpoint of a backend, round robin.
    pub fn next_endpoint(&self, route: usize, backend: usize) -> Option<&Arc<str>> {
        let keys = &self.backend_plans[route][backend].keys;
        let counter = &self.round_robin[route][backend];
        keys.get(counter.fetch_add(1, Ordering::Relaxed) % keys.len().max(1))
    }
}

/// Which Gateway serves each bound socket.
#[derive(Default)]
pub struct Table {
    pub(crate) sockets: FastMap<SocketAddr, Arc<CompiledGateway>>,
}

impl Table {
    /// Builds the table from every Gateway, or names the socket two Gateways both want.
    pub fn build(gateways: &BTreeMap<String, Arc<CompiledGateway>>) -> Result<Self, String> {
        let mut sockets: FastMap<SocketAddr, Arc<CompiledGateway>> = FastMap::default();
        for gateway in gateways.values() {
            for socket in gateway.sockets.keys() {
                if let Some(other) = sockets.get(socket) {
                    return Err(format!(
                        "{socket} is used by both Gateway {} and Gateway {}",
                        other.id, gateway.id
                    ));
                }
                sockets.insert(*socket, gateway.clone());
            }
        }
        Ok(Self { sockets })
    }
}

/// `address:port`, with brackets around IPv6 addresses.
/// Where a backend URL points.
pub struct UrlUpstream {
    /// `host:port` (the scheme's port when the URL has none).
    pub address: String,
    pub host: String,
    pub https: bool,
    pub prefix: Option<String>,
}

/// The upstream of an `http://` or `https://` backend URL; None for any other URL.
pub fn url_upstream(url: &str) -> Option<UrlUpstream> {
    let uri = url.parse::<http::Uri>().ok()?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return None,
    };
    let authority = uri.authority()?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let prefix = uri.path().trim_end_matches('/');
    Some(UrlUpstream {
        address: socket_address(&host, port),
        host,
        https,
        prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
    })
}

pub fn socket_address(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}
