//! BackendTLSPolicy: which Service ports the gateway speaks TLS to, and how it checks them.
//!
//! Each policy is judged once per translation: its CA references (ConfigMaps with `ca.crt`, or
//! the system's well-known CAs), and, target by target, whether an older policy claims it
//! already (a Service, or one port of it by name; a port's own policy wins over its Service's).
//! A backend whose port a usable policy targets is spoken to in TLS; one whose policy cannot be
//! used gets 500, never plaintext. Its status goes to every Gateway whose routes send to a
//! Service it names.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tollbridge_provider::{BackendTlsIr, Capabilities, Feature, SubjectAltNameIr};

use super::conditions::{reason, Stamp, ACCEPTED, RESOLVED_REFS};
use super::CONTROLLER_NAME;
use crate::api::gateway::{BackendTLSPolicy, ParentReference, SubjectAltName, GROUP};
use crate::api::tollbridge::{PolicyAncestorStatus, PolicyStatus};
use crate::snapshot::{age_key, name_of, namespace_of, object_id, Snapshot};

/// The key in a CA ConfigMap that holds the certificates (PEM).
const CA_KEY: &str = "ca.crt";

/// A Service (`namespace/name`), or one port of it by name.
type Target = (String, Option<String>);

/// What applies to the backends a policy targets.
#[derive(Clone, Debug)]
pub struct Applied {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// TLS settings, or why the policy cannot be used.
    pub tls: Result<BackendTlsIr, String>,
}

/// Every policy judged, which one applies to each target, and which policies name each Service.
#[derive(Default)]
pub struct BackendTlsTable {
    applied: HashMap<Target, Applied>,
    /// Per Service (`namespace/name`): every policy targeting it, for their status.
    naming: HashMap<String, Vec<String>>,
    verdicts: Vec<Verdict>,
}

struct Verdict {
    id: String,
    generation: Option<i64>,
    /// The settings, when the policy has usable ones.
    tls: Option<BackendTlsIr>,
    /// Accepted: `Ok(note)`, or the reason and message it is not.
    accepted: Result<Option<String>, (&'static str, String)>,
    resolved: Result<(), (&'static str, String)>,
}

impl BackendTlsTable {
    pub fn new(snapshot: &Snapshot) -> Self {
        if snapshot.backend_tls_policies.is_empty() {
            return Self::default();
        }
        let config_maps: HashMap<String, &ConfigMap> =
            snapshot.config_maps.iter().map(|c| (object_id(&c.metadata), c)).collect();
        let services: HashMap<String, &Service> =
            snapshot.services.iter().map(|s| (object_id(&s.metadata), s)).collect();
        // Oldest first, then by namespace and name: the first to claim a target keeps it.
        let mut policies: Vec<(usize, &BackendTLSPolicy)> =
            snapshot.backend_tls_policies.iter().enumerate().collect();
        policies.sort_by_key(|(i, p)| (age_key(&p.metadata, *i), object_id(&p.metadata)));
        let mut table = Self::default();
        for (_, policy) in policies {
            table.judge(policy, &config_maps, &services);
        }
        table
    }

    /// Claims each target still free (each target on its own: a policy that loses one keeps
    /// the others), with the policy's settings, usable or not: a target whose policy cannot be
    /// used gets 500, never plaintext.
    fn judge(
        &mut self,
        policy: &BackendTLSPolicy,
        config_maps: &HashMap<String, &ConfigMap>,
        services: &HashMap<String, &Service>,
    ) {
        let id = object_id(&policy.metadata);
        let namespace = namespace_of(&policy.metadata);
        let (tls, resolved) = settings(policy, namespace, config_maps);
        let applied = Applied { policy: id.clone(), tls: tls.clone().map_err(|(_, message)| message) };
        let (mut won, mut lost, mut invalid) = (Vec::new(), Vec::new(), Vec::new());
        for target in &policy.spec.target_refs {
            let shown = match &target.section_name {
                Some(section) => format!("Service {namespace}/{} port {section}", target.name),
                None => format!("Service {namespace}/{}", target.name),
            };
            if !target.group.is_empty() || target.kind != "Service" {
                invalid
                    .push(format!("{}/{} {} is not a core Service", target.group, target.kind, target.name));
                continue;
            }
            let service = format!("{namespace}/{}", target.name);
            let naming = self.naming.entry(service.clone()).or_default();
            if !naming.contains(&id) {
                naming.push(id.clone());
            }
            // A port named that does not exist: the policy cannot attach there (the Service
            // itself may come later; then it is judged again).
            let port_missing = target.section_name.as_deref().is_some_and(|section| {
                services.get(&service).is_some_and(|svc| {
                    !svc.spec
                        .iter()
                        .flat_map(|s| s.ports.iter().flatten())
                        .any(|p| p.name.as_deref() == Some(section))
                })
            });
            if port_missing {
                invalid.push(format!("{shown} does not exist"));
                continue;
            }
            let key = (service, target.section_name.clone());
            match self.applied.get(&key) {
                Some(other) => lost.push(format!("{shown} (BackendTLSPolicy {} is older)", other.policy)),
                None => {
                    self.applied.insert(key, applied.clone());
                    won.push(shown);
                }
            }
        }
        let accepted = match (&tls, won.is_empty()) {
            (Err((reason, message)), _) => Err((*reason, message.clone())),
            (Ok(_), true) if !lost.is_empty() => {
                Err((reason::CONFLICTED, format!("another policy applies to {}", lost.join(", "))))
            }
            (Ok(_), true) => Err((reason::TARGET_NOT_FOUND, invalid.join("; "))),
            (Ok(_), false) => {
                let mut notes: Vec<String> = lost.iter().map(|l| format!("not applied to {l}")).collect();
                notes.extend(invalid.iter().cloned());
                Ok((!notes.is_empty()).then(|| notes.join("; ")))
            }
        };
        let tls = tls.ok();
        self.verdicts.push(Verdict { id, generation: policy.metadata.generation, tls, accepted, resolved });
    }

    /// The policy that applies to port `port_name` of Service `namespace/service`, if any.
    pub fn lookup(&self, namespace: &str, service: &str, port_name: Option<&str>) -> Option<&Applied> {
        let service = format!("{namespace}/{service}");
        let port = port_name.and_then(|p| self.applied.get(&(service.clone(), Some(p.to_string()))));
        port.or_else(|| self.applied.get(&(service, None)))
    }

    /// Every policy that targets Service `namespace/service` (applied there or not).
    pub fn naming(&self, namespace: &str, service: &str) -> &[String] {
        self.naming.get(&format!("{namespace}/{service}")).map_or(&[], Vec::as_slice)
    }

    /// Each policy's status: one ancestor per Gateway (`namespace/name`) whose routes send to
    /// a Service it targets (`naming`: the policies seen at each Gateway), Invalid where a
    /// backend it applies to could not be reached as it asks (`problems`, per Gateway and
    /// policy) or the Gateway's provider (`capabilities`, absent: unresolved) cannot speak TLS
    /// as it asks.
    pub fn statuses(
        &self,
        naming: &BTreeMap<String, BTreeSet<String>>,
        problems: &BTreeMap<String, BTreeMap<String, String>>,
        capabilities: &BTreeMap<String, Capabilities>,
        now: jiff::Timestamp,
    ) -> BTreeMap<String, PolicyStatus> {
        let mut out = BTreeMap::new();
        for verdict in &self.verdicts {
            let gateways =
                naming.iter().filter(|(_, policies)| policies.contains(&verdict.id)).map(|(g, _)| g);
            let stamp = Stamp::new(verdict.generation, now);
            let ancestors = gateways
                .map(|gateway| {
                    let (namespace, name) = gateway.split_once('/').unwrap_or(("default", gateway));
                    let problem = problems.get(gateway).and_then(|p| p.get(&verdict.id)).cloned();
                    let unsupported = problem.or_else(|| {
                        let caps = capabilities.get(gateway)?;
                        unsupported_by(verdict.tls.as_ref()?, &verdict.id, caps)
                    });
                    let accepted = match (&verdict.accepted, unsupported) {
                        (Err((why, message)), _) => stamp.no(ACCEPTED, why, message.clone()),
                        (Ok(_), Some(why)) => stamp.no(ACCEPTED, reason::INVALID, why),
                        (Ok(note), None) => {
                            let message = note.as_deref().map_or("Policy is accepted".to_string(), |n| {
                                format!("Policy is accepted; {n}")
                            });
                            stamp.yes(ACCEPTED, reason::ACCEPTED, message)
                        }
                    };
                    let resolved = match &verdict.resolved {
                        Ok(()) => stamp.yes(RESOLVED_REFS, reason::RESOLVED_REFS, "All references resolved"),
                        Err((why, message)) => stamp.no(RESOLVED_REFS, why, message.clone()),
                    };
                    PolicyAncestorStatus {
                        ancestor_ref: ParentReference {
                            group: Some(GROUP.to_string()),
                            kind: Some("Gateway".to_string()),
                            namespace: Some(namespace.to_string()),
                            name: name.to_string(),
                            section_name: None,
                            port: None,
                        },
                        controller_name: CONTROLLER_NAME.to_string(),
                        conditions: vec![accepted, resolved],
                    }
                })
                .collect::<Vec<_>>();
            if !ancestors.is_empty() {
                out.insert(verdict.id.clone(), PolicyStatus { ancestors });
            }
        }
        out
    }
}

/// Why a provider with `caps` cannot speak TLS as `policy` asks (`tls`), if it cannot. A cloud
/// without the whole of BackendTLSPolicy may still check backends against the well-known CAs
/// and the host it connects to.
pub fn unsupported_by(tls: &BackendTlsIr, policy: &str, caps: &Capabilities) -> Option<String> {
    let provider = &caps.provider;
    let sans = !tls.subject_alt_names.is_empty();
    if caps.supports(Feature::BackendTLSPolicy) {
        return (sans && !caps.supports(Feature::BackendTLSPolicySANValidation))
            .then(|| format!("BackendTLSPolicy {policy}: subjectAltNames are not supported by {provider}"));
    }
    if !caps.supports(Feature::BackendTlsWellKnownCas) {
        return Some(format!("BackendTLSPolicy {policy} is not supported by {provider}"));
    }
    if !tls.ca_certificates_pem.is_empty() {
        return Some(format!(
            "BackendTLSPolicy {policy}: CA certificates from ConfigMaps are not supported by {provider}, which \
             checks backends against the well-known CAs (wellKnownCACertificates: System)"
        ));
    }
    sans.then(|| format!("BackendTLSPolicy {policy}: subjectAltNames are not supported by {provider}"))
}

type Problem = (&'static str, String);

/// The policy's TLS settings (or why it cannot be used: the Accepted reason), and whether its
/// references resolve (or the ResolvedRefs reason they do not).
fn settings(
    policy: &BackendTLSPolicy,
    namespace: &str,
    config_maps: &HashMap<String, &ConfigMap>,
) -> (Result<BackendTlsIr, Problem>, Result<(), Problem>) {
    let validation = &policy.spec.validation;
    let mut resolved = Ok(());
    let mut pem = Vec::new();
    for reference in &validation.ca_certificate_refs {
        let shown = format!("{}/{} {}", reference.group, reference.kind, reference.name);
        if !reference.group.is_empty() || reference.kind != "ConfigMap" {
            resolved = resolved
                .and(Err((reason::INVALID_KIND, format!("caCertificateRef {shown} is not a ConfigMap"))));
            continue;
        }
        let found = config_maps.get(&format!("{namespace}/{}", reference.name));
        match found.and_then(|c| c.data.as_ref()?.get(CA_KEY)) {
            Some(text) if holds_certificates(text) => pem.push(text.clone()),
            Some(_) => {
                resolved = resolved.and(Err((
                    reason::INVALID_CA_CERTIFICATE_REF,
                    format!(
                        "ConfigMap {namespace}/{}: {CA_KEY} holds no valid PEM certificate",
                        reference.name
                    ),
                )))
            }
            None => {
                resolved = resolved.and(Err((
                    reason::INVALID_CA_CERTIFICATE_REF,
                    format!("ConfigMap {namespace}/{} with a {CA_KEY} key not found", reference.name),
                )))
            }
        }
    }
    let system = validation.well_known_ca_certificates.as_deref() == Some("System");
    let tls = if let Some(other) = validation.well_known_ca_certificates.as_deref().filter(|_| !system) {
        Err((reason::INVALID, format!("wellKnownCACertificates {other:?} is not supported; use System")))
    } else if let Some(why) = subject_alt_names(&validation.subject_alt_names).err() {
        Err((reason::INVALID, why))
    } else if rustls::pki_types::ServerName::try_from(validation.hostname.as_str()).is_err() {
        Err((reason::INVALID, format!("validation.hostname {:?} is not a DNS name", validation.hostname)))
    } else if pem.is_empty() && !system {
        let message = match &resolved {
            Err((_, message)) => message.clone(),
            Ok(()) => "no CA certificates: set caCertificateRefs or wellKnownCACertificates".to_string(),
        };
        Err((reason::NO_VALID_CA_CERTIFICATE, message))
    } else {
        Ok(BackendTlsIr {
            hostname: validation.hostname.clone(),
            ca_certificates_pem: if system { Vec::new() } else { pem },
            subject_alt_names: subject_alt_names(&validation.subject_alt_names).unwrap_or_default(),
            policy: format!("{namespace}/{}", name_of(&policy.metadata)),
        })
    };
    (tls, resolved)
}

/// The names a certificate may carry instead of the hostname, or what is wrong with one.
fn subject_alt_names(names: &[SubjectAltName]) -> Result<Vec<SubjectAltNameIr>, String> {
    let dns_name = |name: &str| rustls::pki_types::ServerName::try_from(name).is_ok();
    names
        .iter()
        .map(|name| match (name.type_.as_str(), &name.hostname, &name.uri) {
            ("Hostname", Some(hostname), _) if dns_name(hostname) => {
                Ok(SubjectAltNameIr::Hostname(hostname.clone()))
            }
            ("Hostname", hostname, _) => Err(format!(
                "subjectAltName hostname {:?} is not a DNS name (wildcards are not allowed)",
                hostname.as_deref().unwrap_or_default()
            )),
            ("URI", _, Some(uri)) if uri.contains(':') => Ok(SubjectAltNameIr::Uri(uri.clone())),
            ("URI", _, uri) => {
                Err(format!("subjectAltName uri {:?} is not a URI", uri.as_deref().unwrap_or_default()))
            }
            (other, _, _) => Err(format!("subjectAltName type {other:?} is not Hostname or URI")),
        })
        .collect()
}

/// Whether `text` holds at least one PEM certificate, and nothing that fails to parse as one.
fn holds_certificates(text: &str) -> bool {
    let mut certificates = CertificateDer::pem_slice_iter(text.as_bytes()).peekable();
    certificates.peek().is_some() && certificates.all(|c| c.is_ok())
}
