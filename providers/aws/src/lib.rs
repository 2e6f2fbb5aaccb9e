//! Amazon API Gateway provider: a Gateway becomes an HTTP API (API Gateway v2) or a REST API
//! (v1, when API keys or quotas need usage plans), its QuotaPolicies usage plans, its ApiKeys
//! API keys.
//!
//! Built as observe → diff → execute: [`AwsProvider::plan`] reads only resources tagged with
//! the Gateway's owner tag and computes the change list with the pure [`changes::diff`];
//! [`AwsProvider::execute`] sends it through the account's call limiter. Untagged resources are
//! never read into a plan, so they are never adopted or deleted.

pub mod capabilities;
pub mod changes;
mod client;
pub mod desired;
mod error;
mod http_api;
mod pages;
mod rest_api;

use std::collections::HashMap;

use async_trait::async_trait;
use tollbridge_provider::reconcile::{ResourceKind, Summary};
use tollbridge_provider::{
    AwsSettings, Capabilities, GatewayIr, GatewayKey, Provider, ProviderError, Provisioned, UsageRequest,
};

use changes::{Change, Kind, Observed, Replacement, Resources};
pub use client::{account_limits, AwsOptions, CallCounter};
use desired::{ApiType, API_KEY};

/// One AWS account and region, as a ProviderConfig describes it.
pub struct AwsProvider {
    settings: AwsSettings,
    cluster_id: String,
    clients: client::Clients,
    capabilities: Capabilities,
}

/// What [`AwsProvider::plan`] found and would do.
#[derive(Debug)]
pub struct Plan {
    pub owner: String,
    pub api_type: ApiType,
    pub changes: Vec<Change>,
    pub unprovisioned: Vec<String>,
    /// The Gateway's API of the other type this plan deletes, and so its default hostname;
    /// executing the plan reports it in [`Provisioned::replaced`].
    pub replacement: Option<Replacement>,
    observed: Observed,
}

impl AwsProvider {
    /// Clients for `settings`; `cluster_id` goes into the ownership tag of everything created.
    pub async fn new(settings: &AwsSettings, cluster_id: &str, options: AwsOptions) -> Self {
        let capabilities = match settings.api_type.as_str() {
            "HTTP" => capabilities::http_api(),
            _ => capabilities::rest_api(),
        };
        Self {
            settings: settings.clone(),
            cluster_id: cluster_id.to_string(),
            clients: client::Clients::new(settings, options).await,
            capabilities,
        }
    }

    /// The SDK clients (HTTP APIs, REST APIs), for tools and tests that look behind the plan.
    pub fn sdk(&self) -> (&aws_sdk_apigatewayv2::Client, &aws_sdk_apigateway::Client) {
        (&self.clients.v2, &self.clients.v1)
    }

    /// Every call this provider has sent, by operation.
    pub fn calls(&self) -> &CallCounter {
        &self.clients.calls
    }

    /// The account's call limiter, which every attempt of every call goes through.
    pub fn limiter(&self) -> &tollbridge_provider::ratelimit::CallLimiter {
        &self.clients.limiter
    }

    /// The changes that make the account match `gateway`.
    pub async fn plan(&self, gateway: &GatewayIr) -> Result<Plan, ProviderError> {
        let api_type = desired::api_type(&self.settings, gateway);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mapping = desired::map(gateway, &self.settings, &self.cluster_id, api_type, now);
        let owner = desired::owner(&self.cluster_id, &gateway.key);
        let observed = self.observe(&owner).await?;
        Ok(Plan {
            changes: changes::diff(&mapping.resources, &observed),
            replacement: changes::replacement(&mapping.resources, &observed),
            owner,
            api_type,
            unprovisioned: mapping.unprovisioned,
            observed,
        })
    }

    /// The changes that remove everything the Gateway `key` owns.
    pub async fn plan_delete(&self, key: &GatewayKey) -> Result<Plan, ProviderError> {
        let owner = desired::owner(&self.cluster_id, key);
        let observed = self.observe(&owner).await?;
        Ok(Plan {
            changes: changes::diff(&Resources::new(), &observed),
            owner,
            api_type: ApiType::Http,
            unprovisioned: Vec::new(),
            replacement: None,
            observed,
        })
    }

    async fn observe(&self, owner: &str) -> Result<Observed, ProviderError> {
        let mut observed = http_api::observe(&self.clients, owner).await?;
        observed.extend(rest_api::observe(&self.clients, owner).await?);
        Ok(observed)
    }

    /// Carries out a plan, in order; stops at the first error (the next apply observes again
    /// and goes on from where this one stopped).
    pub async fn execute(&self, plan: &Plan) -> Result<Provisioned, ProviderError> {
        let mut ids: HashMap<_, _> =
            plan.observed.iter().map(|(k, (id, _))| (k.clone(), id.clone())).collect();
        for change in &plan.changes {
            tracing::debug!(owner = %plan.owner, %change, "executing");
            let done = match change.key().0 {
                Kind::Api
                | Kind::Integration
                | Kind::Authorizer
                | Kind::Route
                | Kind::Stage
                | Kind::DomainName
                | Kind::ApiMapping => http_api::execute(&self.clients, change, &mut ids).await,
                _ => rest_api::execute(&self.clients, change, &mut ids).await,
            };
            done.map_err(|e| error::during(change.action(), e))?;
            if let Change::Delete { key, .. } = change {
                ids.remove(key);
            }
        }
        let api_kind = match plan.api_type {
            ApiType::Http => Kind::Api,
            ApiType::Rest => Kind::RestApi,
        };
        let mut provisioned =
            Provisioned { unprovisioned: plan.unprovisioned.clone(), ..Provisioned::default() };
        let api_id = ids.get(&(api_kind, API_KEY.to_string()));
        if let Some(id) = api_id {
            provisioned.addresses.push(self.hostname(id));
            provisioned.resource_ids.insert("api".into(), id.clone());
        }
        provisioned.addresses.extend(
            ids.keys()
                .filter(|(kind, _)| matches!(kind, Kind::DomainName | Kind::RestDomainName))
                .map(|(_, d)| d.clone()),
        );
        if let Some(replacement) = &plan.replacement {
            provisioned.replaced.push(self.describe(replacement, api_id.map(String::as_str)));
        }
        Ok(provisioned)
    }

    /// The default hostname of the API `id`.
    fn hostname(&self, id: &str) -> String {
        format!("{id}.execute-api.{}.amazonaws.com", self.settings.region)
    }

    /// One sentence for [`Provisioned::replaced`]: what was replaced, why, and what clients
    /// and DNS records must move to.
    fn describe(&self, replacement: &Replacement, new_id: Option<&str>) -> String {
        let (kind, id) = &replacement.old;
        let type_of = |kind: Kind| if kind == Kind::RestApi { ApiType::Rest } else { ApiType::Http };
        let new_type = type_of(replacement.new);
        let why = match (self.settings.api_type.as_str(), new_type) {
            ("Auto", ApiType::Rest) => {
                "apiType Auto: a QuotaPolicy needs API keys or quotas, which only REST APIs have"
            }
            ("Auto", ApiType::Http) => "apiType Auto: no QuotaPolicy needs API keys or quotas any more",
            _ => "the ProviderConfig's apiType changed",
        };
        let (new_api, new_host) = match new_id {
            Some(new_id) => (format!("{new_type} {new_id}"), self.hostname(new_id)),
            None => (new_type.to_string(), "the new API's hostname".to_string()),
        };
        let mut sentence = format!(
            "{} {id} was replaced by {new_api} ({why}): {} no longer answers, clients must use {new_host}",
            type_of(*kind),
            self.hostname(id),
        );
        if !replacement.domains.is_empty() {
            sentence.push_str(&format!(
                "; custom domains {} were created again for the new API: DNS records must point at their new \
                 regional targets",
                replacement.domains.join(", ")
            ));
        }
        sentence
    }
}

/// The tags of a listed resource, sorted.
fn tags(map: Option<&HashMap<String, String>>) -> std::collections::BTreeMap<String, String> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

#[async_trait]
impl Provider for AwsProvider {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn apply(&self, gateway: &GatewayIr) -> Result<Provisioned, ProviderError> {
        let plan = self.plan(gateway).await?;
        if let Some(Replacement { old: (kind, id), new, .. }) = &plan.replacement {
            tracing::warn!(gateway = %gateway.key.id(), old = %id, from = kind.name(), to = new.name(), "replacing the API with one of the other type: its hostname changes");
        }
        if !plan.changes.is_empty() {
            tracing::info!(gateway = %gateway.key.id(), changes = %Summary::of(&plan.changes), "applying to API Gateway");
        }
        self.execute(&plan).await
    }

    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError> {
        let plan = self.plan_delete(key).await?;
        self.execute(&plan).await.map(|_| ())
    }

    async fn key_usage(
        &self,
        gateway: &GatewayIr,
        requests: &[UsageRequest],
    ) -> Result<Vec<Option<u64>>, ProviderError> {
        let owner = desired::owner(&self.cluster_id, &gateway.key);
        rest_api::key_usage(&self.clients, &owner, requests).await
    }
}

/// The capabilities of a ProviderConfig's API type (`Auto` may need REST, so it gets REST's).
pub fn capabilities_for(settings: &AwsSettings) -> Capabilities {
    match settings.api_type.as_str() {
        "HTTP" => capabilities::http_api(),
        _ => capabilities::rest_api(),
    }
}
