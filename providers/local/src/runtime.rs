//! A Gateway compiled for serving, and the table mapping each bound socket to its Gateway.
//!
//! Compilation happens off the request path; the result is swapped in atomically.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::ServerConfig;
use tollbridge_provider::{ActionIr, BackendTarget, GatewayIr, ListenerIr};

use crate::fast_hash::FastMap;
use crate::metrics::{Label, RouteMetrics};
use crate::policy::Policies;
use crate::router::PortRouter;
use crate::tls;

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
    /// `address:port` of every endpoint, per (route entry, backend), built once.
    endpoint_addresses: Vec<Vec<Vec<Arc<str>>>>,
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
        let endpoint_addresses = ir
            .routes
            .iter()
            .map(|r| match &r.action {
                ActionIr::Forward { backends } => backends
                    .iter()
                    .map(|b| match &b.target {
                        BackendTarget::Endpoints { endpoints } => {
                            endpoints.iter().map(|e| Arc::from(socket_address(&e.address, e.port))).collect()
                        }
                        _ => Vec::new(),
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let mut identity_headers = vec![http::HeaderName::from_static(DEFAULT_CONSUMER_HEADER)];
        for name in ir.policies.iter().filter_map(|p| p.api_key.as_ref()).map(|k| k.consumer_header.as_str())
        {
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
            endpoint_addresses,
        })
    }

    /// Every upstream address this Gateway may send to: its backends' and its mirrors'.
    pub fn upstream_addresses(&self) -> Vec<String> {
        let mut out = Vec::new();
        for route in &self.ir.routes {
            let backends = match &route.action {
                ActionIr::Forward { backends } => backends.as_slice(),
                _ => &[],
            };
            let mirrors = route.filters.mirrors.iter().map(|m| &m.backend);
            for backend in backends.iter().chain(mirrors) {
                match &backend.target {
                    BackendTarget::Endpoints { endpoints } => {
                        out.extend(endpoints.iter().map(|e| socket_address(&e.address, e.port)))
                    }
                    BackendTarget::Url { url } => out.extend(url_upstream(url).map(|(address, _)| address)),
                    _ => {}
                }
            }
        }
        out
    }

    /// The `address:port` of the next endpoint of a backend, round robin.
    pub fn next_endpoint(&self, route: usize, backend: usize) -> Option<&Arc<str>> {
        let addresses = &self.endpoint_addresses[route][backend];
        let counter = &self.round_robin[route][backend];
        addresses.get(counter.fetch_add(1, Ordering::Relaxed) % addresses.len().max(1))
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
/// The upstream address (`host:port`) and path prefix of an `http://` backend URL; None for any
/// other URL.
pub fn url_upstream(url: &str) -> Option<(String, Option<String>)> {
    let uri = url.parse::<http::Uri>().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?.as_str();
    let address = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let prefix = uri.path().trim_end_matches('/');
    Some((address, (!prefix.is_empty()).then(|| prefix.to_string())))
}

pub fn socket_address(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}
