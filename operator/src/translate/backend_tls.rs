//! BackendTLSPolicy: which Service ports the gateway speaks TLS to, and how it checks them.
//!
//! Each policy is judged once per translation: its CA references (ConfigMaps with `ca.crt`, or
//! the system's well-known CAs), and whether an older policy already claims one of its
//! targets (a Service, or one port of it by name; a port's own policy wins over its Service's).
//! A backend whose port a usable policy targets is spoken to in TLS; one whose policy cannot be
//! used gets 500, never plaintext. Its status goes to every Gateway whose routes send there.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::ConfigMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tollbridge_provider::BackendTlsIr;

use super::conditions::{reason, Stamp, ACCEPTED, RESOLVED_REFS};
use super::CONTROLLER_NAME;
use crate::api::gateway::{BackendTLSPolicy, ParentReference, GROUP};
use crate::api::tollbridge::{PolicyAncestorStatus, PolicyStatus};
use crate::snapshot::{age_key, name_of, namespace_of, object_id, Snapshot};

/// The key in a CA ConfigMap that holds the certificates (PEM).
const CA_KEY: &str = "ca.crt";
const NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
const INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";

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

/// Every policy judged, and which one applies to each target.
#[derive(Default)]
pub struct BackendTlsTable {
    applied: HashMap<Target, Applied>,
    verdicts: Vec<Verdict>,
}

struct Verdict {
    id: String,
    generation: Option<i64>,
    targets: Vec<Target>,
    /// Accepted: `Ok(())`, or the reason and message it is not.
    accepted: Result<(), (&'static str, String)>,
    resolved: Result<(), (&'static str, String)>,
}

impl BackendTlsTable {
    pub fn new(snapshot: &Snapshot) -> Self {
        let config_maps: HashMap<String, &ConfigMap> =
            snapshot.config_maps.iter().map(|c| (object_id(&c.metadata), c)).collect();
        // Oldest first, then by namespace and name: the first to claim a target keeps it.
        let mut policies: Vec<(usize, &BackendTLSPolicy)> =
            snapshot.backend_tls_policies.iter().enumerate().collect();
        policies.sort_by_key(|(i, p)| (age_key(&p.metadata, *i), object_id(&p.metadata)));
        let mut table = Self::default();
        for (_, policy) in policies {
            table.judge(policy, &config_maps);
        }
        table
    }

    fn judge(&mut self, policy: &BackendTLSPolicy, config_maps: &HashMap<String, &ConfigMap>) {
        let id = object_id(&policy.metadata);
        let namespace = namespace_of(&policy.metadata);
        let targets: Vec<Target> = policy
            .spec
            .target_refs
            .iter()
            .filter(|t| t.group.is_empty() && t.kind == "Service")
            .map(|t| (format!("{namespace}/{}", t.name), t.section_name.clone()))
            .collect();
        let (tls, resolved) = settings(policy, namespace, config_maps);
        let mut accepted = match &tls {
            Ok(_) => Ok(()),
            Err((reason, message)) => Err((*reason, message.clone())),
        };
        if let Some(other) = targets.iter().find_map(|t| self.applied.get(t)) {
            accepted =
                Err((reason::CONFLICTED, format!("BackendTLSPolicy {} targets it already", other.policy)));
        } else if targets.len() < policy.spec.target_refs.len() {
            accepted = Err((reason::INVALID, "only core Services can be targeted".to_string()));
        } else {
            let tls = tls.map_err(|(_, message)| message);
            for target in &targets {
                self.applied.insert(target.clone(), Applied { policy: id.clone(), tls: tls.clone() });
            }
        }
        self.verdicts.push(Verdict {
            id,
            generation: policy.metadata.generation,
            targets,
            accepted,
            resolved,
        });
    }

    /// The policy that applies to port `port_name` of Service `namespace/service`, if any.
    pub fn lookup(&self, namespace: &str, service: &str, port_name: Option<&str>) -> Option<&Applied> {
        let service = format!("{namespace}/{service}");
        let port = port_name.and_then(|p| self.applied.get(&(service.clone(), Some(p.to_string()))));
        port.or_else(|| self.applied.get(&(service, None)))
    }

    /// Each policy's status: one ancestor per Gateway (`namespace/name`) whose routes send to
    /// what it targets, by way of the policies `used` there. `unsupported`: the Gateways whose
    /// provider cannot speak TLS as a policy asks, with why.
    pub fn statuses(
        &self,
        used: &BTreeMap<String, BTreeSet<String>>,
        unsupported: &BTreeMap<String, String>,
        now: jiff::Timestamp,
    ) -> BTreeMap<String, PolicyStatus> {
        let mut out = BTreeMap::new();
        for verdict in &self.verdicts {
            // The Gateways that send to any of its targets, through whichever policy won there.
            let winners: BTreeSet<&str> = verdict
                .targets
                .iter()
                .filter_map(|t| self.applied.get(t))
                .map(|a| a.policy.as_str())
                .collect();
            let gateways: BTreeSet<&String> = used
                .iter()
                .filter(|(_, policies)| policies.iter().any(|p| winners.contains(p.as_str())))
                .map(|(gateway, _)| gateway)
                .collect();
            let stamp = Stamp::new(verdict.generation, now);
            let ancestors = gateways
                .into_iter()
                .map(|gateway| {
                    let (namespace, name) = gateway.split_once('/').unwrap_or(("default", gateway));
                    let accepted = match (&verdict.accepted, unsupported.get(gateway)) {
                        (Err((why, message)), _) => stamp.no(ACCEPTED, why, message.clone()),
                        (Ok(()), Some(why)) => stamp.no(ACCEPTED, reason::INVALID, why.clone()),
                        (Ok(()), None) => stamp.yes(ACCEPTED, reason::ACCEPTED, "Policy is accepted"),
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
                    INVALID_CA_CERTIFICATE_REF,
                    format!(
                        "ConfigMap {namespace}/{}: {CA_KEY} holds no valid PEM certificate",
                        reference.name
                    ),
                )))
            }
            None => {
                resolved = resolved.and(Err((
                    INVALID_CA_CERTIFICATE_REF,
                    format!("ConfigMap {namespace}/{} with a {CA_KEY} key not found", reference.name),
                )))
            }
        }
    }
    let system = validation.well_known_ca_certificates.as_deref() == Some("System");
    let tls = if let Some(other) = validation.well_known_ca_certificates.as_deref().filter(|_| !system) {
        Err((reason::INVALID, format!("wellKnownCACertificates {other:?} is not supported; use System")))
    } else if !validation.subject_alt_names.is_empty() {
        Err((
            reason::INVALID,
            "subjectAltNames are not supported yet: the hostname is what is checked".to_string(),
        ))
    } else if rustls::pki_types::ServerName::try_from(validation.hostname.as_str()).is_err() {
        Err((reason::INVALID, format!("validation.hostname {:?} is not a DNS name", validation.hostname)))
    } else if pem.is_empty() && !system {
        let message = match &resolved {
            Err((_, message)) => message.clone(),
            Ok(()) => "no CA certificates: set caCertificateRefs or wellKnownCACertificates".to_string(),
        };
        Err((NO_VALID_CA_CERTIFICATE, message))
    } else {
        Ok(BackendTlsIr {
            hostname: validation.hostname.clone(),
            ca_certificates_pem: if system { Vec::new() } else { pem },
            policy: format!("{namespace}/{}", name_of(&policy.metadata)),
        })
    };
    (tls, resolved)
}

/// Whether `text` holds at least one PEM certificate, and nothing that fails to parse as one.
fn holds_certificates(text: &str) -> bool {
    let mut certificates = CertificateDer::pem_slice_iter(text.as_bytes()).peekable();
    certificates.peek().is_some() && certificates.all(|c| c.is_ok())
}
