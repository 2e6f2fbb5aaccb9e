//! Per-Gateway state collected during translation, and its final status and IR.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use jiff::Timestamp;
use tollbridge_provider::{
    Capabilities, Feature, GatewayIr, GatewayKey, InfrastructureMetadata, ListenerIr, ProviderSettings,
    QuotaPolicyIr, RouteIr,
};

use super::conditions::{reason, Problem, Stamp, ACCEPTED, PROGRAMMED};
use super::gatewayclass::{self, ClassInfo};
use super::index::Index;
use super::listeners::{self, ListenerState};
use super::precedence::SortKey;
use super::CapabilityLookup;
use crate::api::gateway::{Gateway, GatewayStatus, ListenerStatus, ParametersReference};
use crate::snapshot::{name_of, namespace_of, object_id};

pub struct GatewayState<'a> {
    pub gateway: &'a Gateway,
    pub id: String,
    pub stamp: Stamp,
    pub settings: Option<ProviderSettings>,
    pub capabilities: Option<Capabilities>,
    /// Why the Gateway as a whole is not accepted (reason, message).
    pub rejected: Option<Problem>,
    pub listeners: Vec<ListenerState>,
    /// Per listener, the routes attached to it (for `attachedRoutes`).
    pub attached: Vec<BTreeSet<String>>,
    pub entries: Vec<(SortKey, RouteIr)>,
    /// Routes that already contributed entries (a route may list this Gateway twice).
    pub routes_seen: BTreeSet<String>,
    /// `namespace/name` of every BackendTLSPolicy applied to a backend of an attached route.
    pub backend_tls_policies: BTreeSet<String>,
    /// Per BackendTLSPolicy, why a backend it applies to could not be reached as it asks.
    pub backend_tls_problems: BTreeMap<String, String>,
    pub policies: Vec<QuotaPolicyIr>,
}

impl<'a> GatewayState<'a> {
    pub fn new(
        gateway: &'a Gateway,
        class: &ClassInfo,
        index: &Index<'_>,
        capabilities: CapabilityLookup<'_>,
        now: Timestamp,
    ) -> Self {
        let settings = match (&class.settings, gateway_parameters(gateway)) {
            (Err(why), _) => Err((
                reason::INVALID_PARAMETERS,
                format!("GatewayClass {} is not accepted: {why}", class.name),
            )),
            (Ok(_), Some(params))
                if params.group == crate::api::GROUP
                    && params.kind == "ProviderConfig"
                    && !class.allowed_overrides.contains(&params.name) =>
            {
                Err((
                    reason::INVALID_PARAMETERS,
                    format!(
                        "infrastructure.parametersRef: GatewayClass {} does not let its Gateways choose \
                     ProviderConfig {:?} (its ProviderConfig's allowedGatewayOverrides: {})",
                        class.name,
                        params.name,
                        if class.allowed_overrides.is_empty() {
                            "none".into()
                        } else {
                            class.allowed_overrides.join(", ")
                        }
                    ),
                ))
            }
            (Ok(_), Some(params)) => gatewayclass::provider_config(&params, index)
                .map_err(|why| (reason::INVALID_PARAMETERS, format!("infrastructure.parametersRef: {why}"))),
            (Ok(settings), None) => Ok(settings.clone()),
        };
        let stamp = Stamp::new(gateway.metadata.generation, now);
        let resolved = settings.map(|settings| {
            let caps = capabilities(&settings);
            (settings, caps)
        });
        // A Gateway whose provider is unknown admits no route, so its listeners name every kind.
        let grpc = resolved.as_ref().map_or(true, |(_, caps)| caps.supports(Feature::GRPCRoute));
        let listeners = listeners::validate(gateway, index, stamp, grpc);
        let attached = vec![BTreeSet::new(); listeners.len()];
        let mut state = Self {
            gateway,
            id: object_id(&gateway.metadata),
            stamp,
            settings: None,
            capabilities: None,
            rejected: None,
            listeners,
            attached,
            entries: Vec::new(),
            routes_seen: BTreeSet::new(),
            backend_tls_policies: BTreeSet::new(),
            backend_tls_problems: BTreeMap::new(),
            policies: Vec::new(),
        };
        match resolved {
            Ok((settings, caps)) => {
                state.rejected = address_problem(gateway, &caps);
                state.settings = Some(settings);
                state.capabilities = Some(caps);
            }
            Err(rejected) => state.rejected = Some(rejected),
        }
        state
    }

    pub fn namespace(&self) -> &str {
        namespace_of(&self.gateway.metadata)
    }

    pub fn name(&self) -> &str {
        name_of(&self.gateway.metadata)
    }

    /// Whether routes may attach: the Gateway is accepted with at least one valid listener.
    pub fn accepts_routes(&self) -> bool {
        self.rejected.is_none() && self.listeners.iter().any(|l| l.accepted)
    }

    /// The Gateway's status (keyed by id) and its IR when it is accepted.
    pub fn finish(mut self) -> ((String, GatewayStatus), Option<GatewayIr>) {
        let stamp = self.stamp;
        for (listener, routes) in self.listeners.iter_mut().zip(&self.attached) {
            listener.attached_routes = routes.len() as i32;
        }
        let invalid: Vec<&str> =
            self.listeners.iter().filter(|l| !l.accepted).map(|l| l.name.as_str()).collect();
        let accepted = self.rejected.is_none() && self.listeners.iter().any(|l| l.accepted);
        let accepted_condition = match (&self.rejected, invalid.is_empty(), accepted) {
            (Some((why, message)), _, _) => stamp.no(ACCEPTED, why, message.clone()),
            (None, true, _) => stamp.yes(ACCEPTED, reason::ACCEPTED, "Gateway is accepted"),
            (None, false, true) => stamp.yes(
                ACCEPTED,
                reason::LISTENERS_NOT_VALID,
                format!("Listeners not accepted: {}; the others are", invalid.join(", ")),
            ),
            (None, false, false) => stamp.no(
                ACCEPTED,
                reason::LISTENERS_NOT_VALID,
                format!("No listener is valid: {}", invalid.join(", ")),
            ),
        };
        if !accepted {
            for listener in &mut self.listeners {
                for c in listener.conditions.iter_mut().filter(|c| c.type_ == PROGRAMMED) {
                    *c = stamp.no(PROGRAMMED, reason::INVALID, "Gateway is not accepted");
                }
            }
        }
        let programmed = if accepted {
            stamp.no(PROGRAMMED, reason::PENDING, "Waiting for the provider to program the Gateway")
        } else {
            stamp.no(PROGRAMMED, reason::INVALID, "Gateway is not accepted")
        };
        let status = GatewayStatus {
            addresses: Vec::new(),
            conditions: vec![accepted_condition, programmed],
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    name: l.name.clone(),
                    supported_kinds: l.supported_kinds.clone(),
                    attached_routes: l.attached_routes,
                    conditions: l.conditions.clone(),
                })
                .collect(),
            attached_listener_sets: None,
        };
        let id = self.id.clone();
        let ir = match (accepted, self.settings.take()) {
            (true, Some(provider)) => Some(self.ir(provider)),
            _ => None,
        };
        ((id, status), ir)
    }

    fn ir(mut self, provider: ProviderSettings) -> GatewayIr {
        let addresses = self
            .gateway
            .spec
            .addresses
            .iter()
            .filter(|a| !a.value.is_empty())
            .map(|a| a.value.clone())
            .collect();
        let infrastructure = self
            .gateway
            .spec
            .infrastructure
            .as_ref()
            .map(|i| InfrastructureMetadata { labels: i.labels.clone(), annotations: i.annotations.clone() })
            .unwrap_or_default();
        let usable: BTreeSet<String> =
            self.listeners.iter().filter(|l| l.usable).map(|l| l.name.clone()).collect();
        let listeners = self
            .listeners
            .iter()
            .filter(|l| l.usable)
            .filter_map(|l| {
                Some(ListenerIr {
                    name: l.name.clone(),
                    port: u16::try_from(l.port).ok()?,
                    protocol: l.protocol?,
                    hostname: l.hostname.clone(),
                    certificates: l.certificates.clone(),
                })
            })
            .collect();
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let routes = self
            .entries
            .into_iter()
            .filter_map(|(_, mut entry)| {
                entry.attachments.retain(|a| usable.contains(&a.listener));
                (!entry.attachments.is_empty()).then_some(entry)
            })
            .collect::<Vec<_>>();
        let used: BTreeSet<&str> = routes.iter().filter_map(|r| r.policy.as_deref()).collect();
        let mut policies: Vec<QuotaPolicyIr> =
            self.policies.into_iter().filter(|p| used.contains(p.id.as_str())).collect();
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        GatewayIr {
            key: GatewayKey {
                namespace: namespace_of(&self.gateway.metadata).to_string(),
                name: name_of(&self.gateway.metadata).to_string(),
                uid: self.gateway.metadata.uid.clone().unwrap_or_default(),
                generation: self.gateway.metadata.generation.unwrap_or(1),
            },
            provider,
            listeners,
            addresses,
            infrastructure,
            routes,
            policies,
        }
    }
}

/// A Gateway-level ProviderConfig overriding the class's (`spec.infrastructure.parametersRef`).
fn gateway_parameters(gateway: &Gateway) -> Option<ParametersReference> {
    let params = gateway.spec.infrastructure.as_ref()?.parameters_ref.as_ref()?;
    Some(ParametersReference {
        group: params.group.clone(),
        kind: params.kind.clone(),
        name: params.name.clone(),
        namespace: None,
    })
}

/// Requested addresses must be IP addresses the provider can bind.
fn address_problem(gateway: &Gateway, caps: &Capabilities) -> Option<Problem> {
    let addresses = &gateway.spec.addresses;
    // An address without a value asks the provider to pick one (its default).
    if addresses.iter().any(|a| a.value.is_empty()) && !caps.supports(Feature::GatewayAddressEmpty) {
        return Some((
            reason::UNSUPPORTED_ADDRESS,
            format!("spec.addresses entries without a value are not supported by {}", caps.provider),
        ));
    }
    if addresses.iter().any(|a| !a.value.is_empty()) && !caps.supports(Feature::GatewayStaticAddresses) {
        return Some((
            reason::UNSUPPORTED_ADDRESS,
            format!("spec.addresses are not supported by {}", caps.provider),
        ));
    }
    for address in addresses.iter().filter(|a| !a.value.is_empty()) {
        let type_ = address.type_.as_deref().unwrap_or("IPAddress");
        if type_ != "IPAddress" {
            return Some((
                reason::UNSUPPORTED_ADDRESS,
                format!("address type {type_} is not supported; use IPAddress"),
            ));
        }
        if address.value.parse::<IpAddr>().is_err() {
            return Some((
                reason::UNSUPPORTED_ADDRESS,
                format!("address {:?} is not an IP address", address.value),
            ));
        }
    }
    None
}
