//! GatewayClass acceptance: is the class ours, and does its ProviderConfig resolve?

use serde::Serialize;
use tollbridge_provider::{AwsSettings, AzureSettings, CounterStoreIr, LocalSettings, ProviderSettings};

use super::conditions::{reason, Stamp, ACCEPTED};
use super::index::Index;
use super::CapabilityLookup;
use crate::api::gateway::{GatewayClass, GatewayClassStatus, ParametersReference, SupportedFeature};
use crate::api::tollbridge::{CounterStoreSecretRef, CounterStoreSpec, ProviderConfigSpec, ProviderKind};
use crate::api::GROUP as OUR_GROUP;

/// A GatewayClass of our controller, with its provider resolved (or why it could not be).
pub struct ClassInfo {
    pub name: String,
    pub settings: Result<ProviderSettings, String>,
    /// ProviderConfigs its Gateways may choose instead (its ProviderConfig's
    /// `allowedGatewayOverrides`; none without a ProviderConfig).
    pub allowed_overrides: Vec<String>,
}

pub fn resolve(
    class: &GatewayClass,
    index: &Index<'_>,
    capabilities: CapabilityLookup<'_>,
    stamp: Stamp,
) -> (ClassInfo, GatewayClassStatus) {
    let name = class.metadata.name.clone().unwrap_or_default();
    let settings = match &class.spec.parameters_ref {
        None => Ok(ProviderSettings::Local(LocalSettings::default())),
        Some(params) => provider_config(params, index),
    };
    let capabilities = settings.as_ref().ok().map(capabilities);
    let status = match (&settings, &capabilities) {
        (Ok(settings), Some(caps)) => GatewayClassStatus {
            conditions: vec![stamp.yes(
                ACCEPTED,
                reason::ACCEPTED,
                format!("Accepted by tollbridge; provider {}", settings.kind_name()),
            )],
            supported_features: caps
                .supported_feature_names()
                .into_iter()
                .map(|name| SupportedFeature { name: name.to_string() })
                .collect(),
        },
        _ => GatewayClassStatus {
            conditions: vec![stamp.no(
                ACCEPTED,
                reason::INVALID_PARAMETERS,
                settings.as_ref().err().cloned().unwrap_or_default(),
            )],
            supported_features: Vec::new(),
        },
    };
    let allowed_overrides = class
        .spec
        .parameters_ref
        .as_ref()
        .filter(|p| p.group == OUR_GROUP && p.kind == "ProviderConfig")
        .and_then(|p| index.provider_config(&p.name))
        .and_then(|config| config.spec.allowed_gateway_overrides.clone())
        .unwrap_or_default();
    (ClassInfo { name, settings, allowed_overrides }, status)
}

/// Resolves a `parametersRef` to a ProviderConfig and converts it to provider settings.
pub fn provider_config(params: &ParametersReference, index: &Index<'_>) -> Result<ProviderSettings, String> {
    if params.group != OUR_GROUP || params.kind != "ProviderConfig" {
        return Err(format!(
            "parametersRef must point to a ProviderConfig of group {OUR_GROUP}, not {}/{}",
            params.group, params.kind
        ));
    }
    let config = index
        .provider_config(&params.name)
        .ok_or_else(|| format!("ProviderConfig {:?} not found", params.name))?;
    settings_from_spec(&params.name, &config.spec)
}

/// Converts a ProviderConfig spec into the IR's settings, checking the provider's section.
pub fn settings_from_spec(name: &str, spec: &ProviderConfigSpec) -> Result<ProviderSettings, String> {
    match spec.provider {
        ProviderKind::Local => {
            let local = spec.local.clone().unwrap_or_default();
            let defaults = LocalSettings::default();
            let mut allowed_addresses = Vec::new();
            for (i, cidr) in local.allowed_addresses.iter().flatten().enumerate() {
                let net: ipnet::IpNet = cidr.trim().parse().map_err(|_| {
                    format!("ProviderConfig {name:?}: local.allowedAddresses[{i}] {cidr:?} is not a CIDR such as 10.96.0.0/28")
                })?;
                allowed_addresses.push(net.trunc().to_string());
            }
            let counter_store =
                local.counter_store.as_ref().map(|store| counter_store(name, store)).transpose()?;
            Ok(ProviderSettings::Local(LocalSettings {
                replicas: local.replicas.unwrap_or(defaults.replicas),
                service_type: local.service_type.as_ref().map(wire_name).unwrap_or(defaults.service_type),
                image: local.image,
                allowed_addresses,
                counter_store,
            }))
        }
        ProviderKind::Aws => {
            let aws = spec
                .aws
                .as_ref()
                .ok_or_else(|| format!("ProviderConfig {name:?} has provider AWS but no `aws` section"))?;
            Ok(ProviderSettings::Aws(AwsSettings {
                region: aws.region.clone(),
                api_type: aws.api_type.as_ref().map(wire_name).unwrap_or_else(|| "Auto".into()),
                endpoint_url: non_empty(&aws.endpoint_url),
                vpc_link_id: non_empty(&aws.vpc_link_id),
                role_arn: non_empty(&aws.role_arn),
                certificate_arn: non_empty(&aws.certificate_arn),
                tags: aws.tags.clone(),
            }))
        }
        ProviderKind::Azure => {
            let azure = spec.azure.as_ref().ok_or_else(|| {
                format!("ProviderConfig {name:?} has provider Azure but no `azure` section")
            })?;
            Ok(ProviderSettings::Azure(AzureSettings {
                subscription_id: azure.subscription_id.clone(),
                resource_group: azure.resource_group.clone(),
                service_name: azure.service_name.clone(),
                endpoint: non_empty(&azure.endpoint),
                credential: azure
                    .credential
                    .as_ref()
                    .map(wire_name)
                    .unwrap_or_else(|| "WorkloadIdentity".into()),
                tier: non_empty(&azure.tier),
            }))
        }
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

/// The name an enum value has on the wire (its serde name).
/// Checks `local.counterStore` of ProviderConfig `name`: a Redis URL without a password, a CA
/// only for TLS.
fn counter_store(name: &str, store: &CounterStoreSpec) -> Result<CounterStoreIr, String> {
    let invalid = |what: &str| format!("ProviderConfig {name:?}: local.counterStore.{what}");
    let url = store.url.trim();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    if tollbridge_local::counter_store::has_password(url) {
        return Err(invalid("url carries a password: put it in a Secret and name it in passwordSecretRef"));
    }
    if !matches!(scheme, "redis" | "rediss") || rest.is_empty() {
        let shown = tollbridge_local::counter_store::redacted(url);
        return Err(invalid(&format!(
            "url {shown:?} is not redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]"
        )));
    }
    if tollbridge_local::counter_store::user_name(url).is_some() && store.password_secret_ref.is_none() {
        return Err(invalid(
            "url names a user but passwordSecretRef is not set: without the user's password the \
             store would be used as its default user",
        ));
    }
    if store.ca_secret_ref.is_some() && scheme != "rediss" {
        return Err(invalid("caSecretRef is set but the url is not rediss://"));
    }
    let secret = |r: &CounterStoreSecretRef, default_key: &str| {
        (r.name.clone(), r.key.clone().unwrap_or_else(|| default_key.to_owned()))
    };
    Ok(CounterStoreIr {
        url: url.to_owned(),
        password_secret: store.password_secret_ref.as_ref().map(|r| secret(r, "password")),
        ca_secret: store.ca_secret_ref.as_ref().map(|r| secret(r, "ca.crt")),
        failure_mode: wire_name(&store.failure_mode.unwrap_or_default()).to_lowercase(),
        timeout_ms: store.timeout_milliseconds.unwrap_or(50).clamp(1, 10_000).unsigned_abs(),
        lease_max: store.lease_max.map(|n| n.clamp(0, 4096).unsigned_abs()),
    })
}

fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> CounterStoreSpec {
        CounterStoreSpec { url: url.into(), ..CounterStoreSpec::default() }
    }

    #[test]
    fn a_counter_store_password_never_passes_or_shows_in_the_url() {
        for url in
            ["redis://:hunter2@redis:6379", "redis://u:hun/ter2@redis:6379/1", "rediss://u:a@b@redis:1"]
        {
            let error = counter_store("pc", &store(url)).unwrap_err();
            assert!(error.contains("carries a password") && !error.contains("hun"), "{url}: {error}");
        }
        let error = counter_store("pc", &store("valkey:secret-pw@redis:6379")).unwrap_err();
        assert!(error.contains("carries a password") && !error.contains("secret-pw"), "{error}");
        let error = counter_store("pc", &store("http://redis:6379")).unwrap_err();
        assert!(error.contains("is not redis://"), "{error}");
        let error = counter_store("pc", &store("redis://limits@redis:6379/2")).unwrap_err();
        assert!(error.contains("passwordSecretRef is not set"), "{error}");
        let with_password = CounterStoreSpec {
            password_secret_ref: Some(CounterStoreSecretRef { name: "redis-auth".into(), key: None }),
            ..store("redis://limits@redis:6379/2")
        };
        let ok = counter_store("pc", &with_password).unwrap();
        assert_eq!(
            (ok.url.as_str(), ok.failure_mode.as_str(), ok.timeout_ms, ok.lease_max),
            ("redis://limits@redis:6379/2", "local", 50, None)
        );
        let leases =
            |n| counter_store("pc", &CounterStoreSpec { lease_max: Some(n), ..store("redis://r:1") });
        assert_eq!(leases(0).unwrap().lease_max, Some(0));
        assert_eq!(leases(100_000).unwrap().lease_max, Some(4096), "files skip the CRD's bound: clamped");
    }
}
