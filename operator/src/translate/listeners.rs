//! Listener validation: protocol, conflicts, TLS certificate references and allowed routes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tollbridge_provider::{CertificateIr, ListenerProtocol, RouteKind, SecretBytes};

use super::conditions::{reason, Problem, Stamp, ACCEPTED, CONFLICTED, PROGRAMMED, RESOLVED_REFS};
use super::index::{Index, RefEnd};
use crate::api::gateway::{
    AllowedRoutes, FromNamespaces, Gateway, Listener, RouteGroupKind, GROUP as GATEWAY_GROUP,
};

/// A listener after validation.
pub struct ListenerState {
    pub name: String,
    pub port: i32,
    pub protocol: Option<ListenerProtocol>,
    pub hostname: Option<String>,
    pub allowed_routes: AllowedRoutes,
    pub supported_kinds: Vec<RouteGroupKind>,
    /// Accepted and not conflicted: routes may attach and it may be served.
    pub accepted: bool,
    /// Accepted with every reference resolved: the provider can program it.
    pub usable: bool,
    pub conditions: Vec<Condition>,
    pub certificates: Vec<CertificateIr>,
    pub attached_routes: i32,
}

impl ListenerState {
    /// Whether a route of `kind` from `route_namespace` may attach, per `allowedRoutes`.
    pub fn allows_route_from(
        &self,
        kind: RouteKind,
        gateway_namespace: &str,
        route_namespace: &str,
        index: &Index<'_>,
    ) -> bool {
        let kind_supported = self.supported_kinds.iter().any(|k| k.kind == kind.name());
        let namespaces = self.allowed_routes.namespaces.clone().unwrap_or_default();
        let namespace_ok = match namespaces.from.unwrap_or_default() {
            FromNamespaces::All => true,
            FromNamespaces::Same => gateway_namespace == route_namespace,
            FromNamespaces::Selector => {
                namespaces.selector.as_ref().is_some_and(|s| index.namespace_matches(route_namespace, s))
            }
            FromNamespaces::None => false,
        };
        kind_supported && namespace_ok
    }
}

const HTTP: &str = "HTTP";
const HTTPS: &str = "HTTPS";

/// Validates every listener of a Gateway; `grpc`: whether its provider carries GRPCRoutes.
pub fn validate(gateway: &Gateway, index: &Index<'_>, stamp: Stamp, grpc: bool) -> Vec<ListenerState> {
    let namespace = crate::snapshot::namespace_of(&gateway.metadata);
    let conflicts = conflicts(&gateway.spec.listeners);
    gateway
        .spec
        .listeners
        .iter()
        .map(|listener| {
            let conflict = conflicts.get(listener.name.as_str()).copied();
            validate_one(listener, namespace, conflict, index, stamp, grpc)
        })
        .collect()
}

fn validate_one(
    listener: &Listener,
    namespace: &str,
    conflict: Option<&'static str>,
    index: &Index<'_>,
    stamp: Stamp,
    grpc: bool,
) -> ListenerState {
    let protocol = match listener.protocol.as_str() {
        HTTP => Some(ListenerProtocol::Http),
        HTTPS => Some(ListenerProtocol::Https),
        _ => None,
    };
    let mut conditions = Vec::new();
    let (supported_kinds, kinds_problem) = route_kinds(listener, protocol.is_some(), grpc);
    let mut accepted = true;

    if protocol.is_none() {
        accepted = false;
        conditions.push(stamp.no(
            ACCEPTED,
            reason::UNSUPPORTED_PROTOCOL,
            format!("protocol {:?} is not supported; use HTTP or HTTPS", listener.protocol),
        ));
    } else if let Some(conflict) = conflict {
        accepted = false;
        conditions.push(stamp.no(ACCEPTED, conflict, conflict_message(conflict)));
    } else if !(1..=65535).contains(&listener.port) {
        accepted = false;
        conditions.push(stamp.no(
            ACCEPTED,
            reason::PORT_UNAVAILABLE,
            format!("port {} is out of range", listener.port),
        ));
    } else {
        conditions.push(stamp.yes(ACCEPTED, reason::ACCEPTED, "Listener is accepted"));
    }

    conditions.push(match conflict {
        Some(conflict) => stamp.yes(CONFLICTED, conflict, conflict_message(conflict)),
        None => stamp.no(CONFLICTED, reason::NO_CONFLICTS, "No conflicts"),
    });

    let (certificates, cert_problem) = if protocol == Some(ListenerProtocol::Https) {
        certificates(listener, namespace, index)
    } else {
        (Vec::new(), None)
    };
    // Certificates decide whether the listener can be served; unsupported route kinds are
    // reported but the supported ones still work.
    let certificates_ok = cert_problem.is_none();
    let ref_problem = cert_problem.or(kinds_problem);
    conditions.push(match ref_problem {
        None => stamp.yes(RESOLVED_REFS, reason::RESOLVED_REFS, "All references resolved"),
        Some((why, message)) => stamp.no(RESOLVED_REFS, why, message),
    });

    let usable = accepted && certificates_ok && !supported_kinds.is_empty();
    conditions.push(if usable {
        stamp.no(PROGRAMMED, reason::PENDING, "Waiting for the provider to program the listener")
    } else {
        stamp.no(PROGRAMMED, reason::INVALID, "Listener is invalid; see its other conditions")
    });

    ListenerState {
        name: listener.name.clone(),
        port: listener.port,
        protocol,
        hostname: listener.hostname.clone().filter(|h| !h.is_empty()),
        allowed_routes: listener.allowed_routes.clone().unwrap_or_default(),
        supported_kinds,
        accepted,
        usable,
        conditions,
        certificates,
        attached_routes: 0,
    }
}

fn conflict_message(conflict: &str) -> &'static str {
    if conflict == reason::PROTOCOL_CONFLICT {
        "Another listener uses the same port with a different protocol"
    } else {
        "Another listener uses the same port, protocol and hostname"
    }
}

/// Listeners that are not distinct: same port with different protocols, or the same port,
/// protocol and hostname. All of them are conflicted; none wins.
fn conflicts(listeners: &[Listener]) -> BTreeMap<&str, &'static str> {
    let mut out = BTreeMap::new();
    // Listeners of protocols we do not support are rejected on their own and conflict with none.
    let supported = |l: &Listener| l.protocol == HTTP || l.protocol == HTTPS;
    for (i, a) in listeners.iter().enumerate().filter(|(_, l)| supported(l)) {
        for (j, b) in listeners.iter().enumerate().filter(|(_, l)| supported(l)) {
            if i == j || a.port != b.port {
                continue;
            }
            if a.protocol != b.protocol {
                out.insert(a.name.as_str(), reason::PROTOCOL_CONFLICT);
            } else if a.hostname.as_deref().unwrap_or("") == b.hostname.as_deref().unwrap_or("") {
                out.entry(a.name.as_str()).or_insert(reason::HOSTNAME_CONFLICT);
            }
        }
    }
    out
}

/// The route kinds the listener supports, and a problem when it asks for unsupported ones.
/// HTTP and HTTPS listeners carry HTTPRoutes, and GRPCRoutes where the provider does (`grpc`).
fn route_kinds(listener: &Listener, http_like: bool, grpc: bool) -> (Vec<RouteGroupKind>, Option<Problem>) {
    let kind =
        |kind: RouteKind| RouteGroupKind { group: Some(GATEWAY_GROUP.to_string()), kind: kind.name().into() };
    let carried: &[RouteKind] = match (http_like, grpc) {
        (false, _) => &[],
        (true, false) => &[RouteKind::HTTPRoute],
        (true, true) => &[RouteKind::HTTPRoute, RouteKind::GRPCRoute],
    };
    let requested = listener.allowed_routes.as_ref().map(|a| a.kinds.as_slice()).unwrap_or_default();
    if requested.is_empty() {
        return (carried.iter().map(|k| kind(*k)).collect(), None);
    }
    let mut supported = Vec::new();
    let mut invalid = Vec::new();
    for asked in requested {
        let group = asked.group.as_deref().unwrap_or(GATEWAY_GROUP);
        match carried.iter().find(|k| group == GATEWAY_GROUP && k.name() == asked.kind) {
            Some(carried) if !supported.contains(&kind(*carried)) => supported.push(kind(*carried)),
            Some(_) => {}
            None => invalid.push(format!("{group}/{}", asked.kind)),
        }
    }
    let problem = (!invalid.is_empty())
        .then(|| (reason::INVALID_ROUTE_KINDS, format!("unsupported route kinds: {}", invalid.join(", "))));
    (supported, problem)
}

/// Resolves the certificateRefs of an HTTPS listener.
fn certificates(
    listener: &Listener,
    gateway_namespace: &str,
    index: &Index<'_>,
) -> (Vec<CertificateIr>, Option<Problem>) {
    let refs = listener.tls.as_ref().map(|t| t.certificate_refs.as_slice()).unwrap_or_default();
    if refs.is_empty() {
        return (
            Vec::new(),
            Some((reason::INVALID_CERTIFICATE_REF, "HTTPS listener has no certificateRefs".into())),
        );
    }
    if listener.tls.as_ref().and_then(|t| t.mode.as_deref()).is_some_and(|m| m != "Terminate") {
        return (
            Vec::new(),
            Some((reason::INVALID_CERTIFICATE_REF, "HTTPS listeners support only TLS mode Terminate".into())),
        );
    }
    let mut certificates = Vec::new();
    for cert_ref in refs {
        let group = cert_ref.group.as_deref().unwrap_or("");
        let kind = cert_ref.kind.as_deref().unwrap_or("Secret");
        let namespace = cert_ref.namespace.as_deref().unwrap_or(gateway_namespace);
        let id = format!("{namespace}/{}", cert_ref.name);
        let shown_kind = if group.is_empty() { kind.to_string() } else { format!("{group}/{kind}") };
        let from = RefEnd { group: GATEWAY_GROUP, kind: "Gateway", namespace: gateway_namespace };
        let to = RefEnd { group, kind, namespace };
        if !index.reference_allowed(from, to, &cert_ref.name) {
            return (
                Vec::new(),
                Some((
                    reason::REF_NOT_PERMITTED,
                    format!("certificateRef to {shown_kind} {id} is not permitted by any ReferenceGrant"),
                )),
            );
        }
        if !group.is_empty() || kind != "Secret" {
            return (
                Vec::new(),
                Some((
                    reason::INVALID_CERTIFICATE_REF,
                    format!("certificateRef {shown_kind} {id} is not a core Secret"),
                )),
            );
        }
        match index.secret(namespace, &cert_ref.name).map(tls_pair) {
            Some(Ok((chain, key))) => certificates.push(CertificateIr {
                secret: id,
                cert_chain_pem: SecretBytes::new(chain),
                private_key_pem: SecretBytes::new(key),
            }),
            Some(Err(why)) => {
                return (Vec::new(), Some((reason::INVALID_CERTIFICATE_REF, format!("Secret {id}: {why}"))))
            }
            None => {
                return (
                    Vec::new(),
                    Some((reason::INVALID_CERTIFICATE_REF, format!("Secret {id} not found"))),
                )
            }
        }
    }
    (certificates, None)
}

/// The `tls.crt` / `tls.key` pair of a Secret, checked to be PEM.
fn tls_pair(secret: &Secret) -> Result<(Vec<u8>, Vec<u8>), String> {
    let chain = secret_value(secret, "tls.crt").ok_or("missing tls.crt")?;
    let key = secret_value(secret, "tls.key").ok_or("missing tls.key")?;
    if !contains(&chain, b"-----BEGIN CERTIFICATE-----") {
        return Err("tls.crt is not a PEM certificate".into());
    }
    if !contains(&key, b"PRIVATE KEY-----") {
        return Err("tls.key is not a PEM private key".into());
    }
    Ok((chain, key))
}

/// A Secret's value from `data` (decoded) or, for files, `stringData`.
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).map(|v| v.clone().into_bytes()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
