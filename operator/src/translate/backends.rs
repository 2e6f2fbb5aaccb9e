//! backendRef resolution: Service → port → ready endpoints (or an external URL).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use tollbridge_provider::{
    BackendIr, BackendProtocol, BackendTarget, BackendTlsIr, Capabilities, Endpoint, Feature, HeaderModifier,
};

use super::backend_tls::{unsupported_by, Applied};
use super::conditions::reason;
use super::index::{Index, RefEnd};
use crate::api::gateway::{BackendObjectReference, GROUP as GATEWAY_GROUP};

/// Overrides the URL cloud providers use for a Service (e.g. a VPC link target).
pub const BACKEND_URL_ANNOTATION: &str = "tollbridge.dev/backend-url";

/// Why a reference could not be resolved: a route `ResolvedRefs` reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefProblem {
    pub reason: &'static str,
    pub message: String,
}

/// Resolves one backend reference of a route in `route_namespace`, for a provider with `caps`.
pub fn resolve(
    backend: &BackendObjectReference,
    weight: u32,
    route_namespace: &str,
    index: &Index<'_>,
    caps: &Capabilities,
) -> (BackendIr, Option<RefProblem>) {
    let namespace = backend.namespace.as_deref().unwrap_or(route_namespace);
    let port = backend.port.unwrap_or(0);
    let name = match backend.kind.as_deref() {
        None | Some("Service") if backend.group.as_deref().unwrap_or("").is_empty() => {
            format!("{namespace}/{}:{port}", backend.name)
        }
        _ => format!("{namespace}/{}/{}:{port}", backend.kind.as_deref().unwrap_or("Service"), backend.name),
    };
    let target = target(backend, namespace, route_namespace, index, caps);
    let problem = match &target {
        Err(problem) => Some(problem.clone()),
        Ok(_) => None,
    };
    let (mut target, protocol, tls) = target
        .unwrap_or_else(|p| (BackendTarget::Invalid { reason: p.message }, BackendProtocol::Http1, None));
    // Cleartext HTTP/2 cannot reach an https:// URL; sending it there would be plaintext.
    if let BackendTarget::Url { url } = &target {
        if protocol == BackendProtocol::H2c && url.starts_with("https://") {
            let reason =
                format!("{url}: appProtocol kubernetes.io/h2c is cleartext HTTP/2, the URL asks for TLS");
            target = BackendTarget::Invalid { reason };
        }
    }
    // TLS the provider cannot speak as asked, or asked of a cleartext protocol: never plaintext.
    let tls = tls.map(|applied| {
        let policy = &applied.policy;
        let unusable = match &applied.tls {
            Err(why) => Some(format!("BackendTLSPolicy {policy}: {why}")),
            Ok(_) if protocol == BackendProtocol::H2c => {
                Some(format!("BackendTLSPolicy {policy} asks for TLS to a cleartext HTTP/2 (h2c) port"))
            }
            Ok(tls) => unsupported_by(tls, policy, caps).or_else(|| {
                // A cloud checks the host it connects to: the URL must be that host, in https.
                (!caps.supports(Feature::BackendTLSPolicy))
                    .then(|| to_checked_url(&mut target, tls, policy, &caps.provider))
                    .flatten()
            }),
        };
        if let Some(reason) = unusable {
            if !matches!(target, BackendTarget::Invalid { .. }) {
                target = BackendTarget::Invalid { reason };
            }
        }
        applied.tls.clone().unwrap_or_else(|_| BackendTlsIr {
            hostname: String::new(),
            ca_certificates_pem: Vec::new(),
            subject_alt_names: Vec::new(),
            policy: applied.policy.clone(),
        })
    });
    let ir = BackendIr {
        name,
        weight,
        target,
        protocol,
        tls,
        request_headers: HeaderModifier::default(),
        response_headers: HeaderModifier::default(),
    };
    (ir, problem)
}

/// For a cloud checking backends against the well-known CAs and the host it connects to: the
/// URL target made `https://`, or why the policy's hostname cannot be checked there.
fn to_checked_url(
    target: &mut BackendTarget,
    tls: &BackendTlsIr,
    policy: &str,
    provider: &str,
) -> Option<String> {
    let BackendTarget::Url { url } = target else { return None };
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return Some(format!(
            "BackendTLSPolicy {policy}: the backend URL {url:?} is not an http:// or https:// URL"
        ));
    };
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    if !host.eq_ignore_ascii_case(&tls.hostname) {
        return Some(format!(
            "BackendTLSPolicy {policy}: hostname {} is not the backend's host {host}; {provider} checks the \
             certificate against the host it connects to",
            tls.hostname
        ));
    }
    *url = format!("https://{rest}");
    None
}

fn target(
    backend: &BackendObjectReference,
    namespace: &str,
    route_namespace: &str,
    index: &Index<'_>,
    caps: &Capabilities,
) -> Result<(BackendTarget, BackendProtocol, Option<Applied>), RefProblem> {
    let group = backend.group.as_deref().unwrap_or("");
    let kind = backend.kind.as_deref().unwrap_or("Service");
    let id = format!("{namespace}/{}", backend.name);
    let shown = if group.is_empty() { kind.to_string() } else { format!("{group}/{kind}") };
    let from = RefEnd { group: GATEWAY_GROUP, kind: "HTTPRoute", namespace: route_namespace };
    let to = RefEnd { group, kind, namespace };
    if !index.reference_allowed(from, to, &backend.name) {
        return Err(RefProblem {
            reason: reason::REF_NOT_PERMITTED,
            message: format!(
                "backendRef to {shown} {id} is not permitted by any ReferenceGrant in namespace {namespace}"
            ),
        });
    }
    if !group.is_empty() || kind != "Service" {
        return Err(RefProblem {
            reason: reason::INVALID_KIND,
            message: format!(
                "backendRef {id} has unsupported kind {shown}; only core Services are supported"
            ),
        });
    }
    let service = index.service(namespace, &backend.name).ok_or_else(|| RefProblem {
        reason: reason::BACKEND_NOT_FOUND,
        message: format!("Service {id} not found"),
    })?;
    let Some(port) = backend.port else {
        return Err(RefProblem {
            reason: reason::BACKEND_NOT_FOUND,
            message: format!("backendRef to Service {id} needs a port"),
        });
    };
    let spec = service.spec.clone().unwrap_or_default();
    let service_port = spec.ports.iter().flatten().find(|p| p.port == port);
    // Whatever the port leads to (endpoints, a backend URL, an external name), its protocol
    // must be one the provider speaks.
    let protocol =
        backend_protocol(service_port.and_then(|p| p.app_protocol.as_deref()), caps).map_err(|why| {
            RefProblem {
                reason: reason::UNSUPPORTED_PROTOCOL,
                message: format!("Service {id} port {port}: {why}"),
            }
        })?;
    let port_name = service_port.and_then(|p| p.name.as_deref());
    let tls = index.backend_tls.lookup(namespace, &backend.name, port_name).cloned();
    // WebSocket over TLS: the TLS is a BackendTLSPolicy's (which CAs, which name), as for any
    // backend; without one nothing says how to check the backend.
    let wss = service_port.and_then(|p| p.app_protocol.as_deref()) == Some("kubernetes.io/wss");
    if wss && tls.is_none() {
        return Err(RefProblem {
            reason: reason::UNSUPPORTED_PROTOCOL,
            message: format!(
                "Service {id} port {port}: appProtocol kubernetes.io/wss needs a BackendTLSPolicy for the port \
                 (the CAs and hostname to check)"
            ),
        });
    }
    if let Some(url) = annotation_url(service) {
        return Ok((BackendTarget::Url { url }, protocol, tls));
    }
    if spec.type_.as_deref() == Some("ExternalName") {
        let host = spec.external_name.clone().unwrap_or_default();
        return Ok((BackendTarget::Url { url: external_url(&host, port, service_port) }, protocol, tls));
    }
    let service_port = service_port.ok_or_else(|| RefProblem {
        reason: reason::BACKEND_NOT_FOUND,
        message: format!("Service {id} has no port {port}"),
    })?;
    let endpoints = ready_endpoints(index, namespace, &backend.name, service_port);
    Ok((BackendTarget::Endpoints { endpoints }, protocol, tls))
}

/// The protocol a Service port's `appProtocol` asks for, or why the provider cannot speak it.
/// Kubernetes' own protocols are checked; other values (`http`, a vendor's) change nothing.
fn backend_protocol(app_protocol: Option<&str>, caps: &Capabilities) -> Result<BackendProtocol, String> {
    let needs = |feature: Feature, protocol: BackendProtocol, what: &str| {
        if caps.supports(feature) {
            Ok(protocol)
        } else {
            Err(format!("appProtocol {what} is not supported by {}", caps.provider))
        }
    };
    match app_protocol {
        Some("kubernetes.io/ws") => needs(
            Feature::HTTPRouteBackendProtocolWebSocket,
            BackendProtocol::Http1,
            "kubernetes.io/ws (WebSocket)",
        ),
        Some("kubernetes.io/h2c") => needs(
            Feature::HTTPRouteBackendProtocolH2C,
            BackendProtocol::H2c,
            "kubernetes.io/h2c (HTTP/2 without TLS)",
        ),
        Some("kubernetes.io/wss") if caps.supports(Feature::BackendTLSPolicy) => needs(
            Feature::HTTPRouteBackendProtocolWebSocket,
            BackendProtocol::Http1,
            "kubernetes.io/wss (WebSocket over TLS)",
        ),
        Some("kubernetes.io/wss") => {
            Err(format!("appProtocol kubernetes.io/wss is not supported by {}", caps.provider))
        }
        _ => Ok(BackendProtocol::Http1),
    }
}

fn annotation_url(service: &Service) -> Option<String> {
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BACKEND_URL_ANNOTATION))
        .filter(|u| !u.is_empty())
        .cloned()
}

/// `https://host` for port 443 or a port named `https`, else `http://host:port`.
fn external_url(host: &str, port: i32, service_port: Option<&ServicePort>) -> String {
    let https = port == 443 || service_port.and_then(|p| p.name.as_deref()) == Some("https");
    match (https, port) {
        (true, 443) => format!("https://{host}"),
        (true, port) => format!("https://{host}:{port}"),
        (false, port) => format!("http://{host}:{port}"),
    }
}

/// Addresses of ready endpoints serving the Service port, sorted and without duplicates.
fn ready_endpoints(index: &Index<'_>, namespace: &str, service: &str, port: &ServicePort) -> Vec<Endpoint> {
    let port_name = port.name.as_deref().unwrap_or("");
    let mut out = BTreeSet::new();
    for slice in index.endpoint_slices(namespace, service) {
        let Some(slice_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        let Ok(slice_port) = u16::try_from(slice_port) else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                out.insert(Endpoint { address: address.clone(), port: slice_port });
            }
        }
    }
    out.into_iter().collect()
}
