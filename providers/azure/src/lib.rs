//! Azure API Management provider: a Gateway becomes an API (operations with policy XML,
//! backends, pools) in an existing API Management service, its QuotaPolicies products with
//! rate-limit and quota policies, its ApiKeys subscriptions to those products.
//!
//! Built as observe → diff → execute, like the AWS provider: [`AzureProvider::plan`] reads only
//! entities whose ids carry the Gateway's prefix, [`changes`] is pure, and
//! [`AzureProvider::execute`] sends each change through the ARM client (retries, long-running
//! operations, `If-Match`).

pub mod arm;
pub mod desired;
pub mod xml;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tollbridge_provider::{
    AzureSettings, Capabilities, Feature, GatewayIr, GatewayKey, Provider, ProviderError, Provisioned,
};

use arm::{ArmClient, TokenSource};
use desired::{Desired, EntityKey, Kind};

/// What API Management can express, as this provider provisions it (docs/providers.md).
pub fn capabilities() -> Capabilities {
    // Not (yet) mapped to policies: CORS, host rewrites, mirroring a share of requests.
    let unsupported = [
        Feature::GatewayStaticAddresses,
        Feature::GatewayAddressEmpty,
        Feature::GatewayInfrastructure,
        Feature::GatewayHTTPSListenerDetectMisdirectedRequests,
        Feature::HTTPRouteParentRefPort,
        Feature::GatewayPort8080,
        Feature::HTTPRouteCORS,
        Feature::HTTPRouteHostRewrite,
        Feature::HTTPRouteRequestPercentageMirror,
    ];
    Capabilities::with(
        "Azure API Management",
        Feature::ALL.iter().copied().filter(|f| !unsupported.contains(f)),
    )
}

/// An entity as found: its body (ids resolved from the collection listing).
#[derive(Clone, Debug)]
pub struct Found {
    pub body: Value,
}

/// One step of a plan.
#[derive(Clone, Debug)]
pub enum Change {
    Create { key: EntityKey, desired: Desired },
    Update { key: EntityKey, desired: Desired },
    Delete { key: EntityKey },
}

impl Change {
    pub fn key(&self) -> &EntityKey {
        match self {
            Change::Create { key, .. } | Change::Update { key, .. } | Change::Delete { key } => key,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create { key: (kind, path), .. } => write!(f, "+ create {} {path}", kind.name()),
            Change::Update { key: (kind, path), .. } => write!(f, "~ update {} {path}", kind.name()),
            Change::Delete { key: (kind, path) } => write!(f, "- delete {} {path}", kind.name()),
        }
    }
}

/// "N to create, N to update, N to delete".
pub fn summary(changes: &[Change]) -> String {
    let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
    format!(
        "{} to create, {} to update, {} to delete",
        count(|c| matches!(c, Change::Create { .. })),
        count(|c| matches!(c, Change::Update { .. })),
        count(|c| matches!(c, Change::Delete { .. }))
    )
}

/// Fields the service never gives back (secrets), left out of comparisons.
const WRITE_ONLY: &[&str] = &["primaryKey", "secondaryKey"];

/// Whether every field of `want` is in `have` with the same value (objects recursively;
/// other values, arrays included, must be equal). A relative reference we wrote (`scope:
/// /products/p`) comes back as a full resource id ending with it.
fn contains(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::String(w), Value::String(h)) if w.starts_with('/') => h == w || h.ends_with(w.as_str()),
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .filter(|(k, _)| !WRITE_ONLY.contains(&k.as_str()))
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(v, hv))),
        (w, h) => w == h,
    }
}

/// Whether the entity found is as desired: policies by canonical XML, the rest by fields.
pub fn satisfied(kind: Kind, desired: &Desired, found: &Found) -> bool {
    match kind {
        Kind::OperationPolicy | Kind::ProductPolicy => {
            let value = |v: &Value| v["properties"]["value"].as_str().map(xml::canonical);
            value(&desired.body) == value(&found.body)
        }
        Kind::ProductApi => true,
        _ => contains(&desired.body["properties"], &found.body["properties"]),
    }
}

/// The changes from `found` to `desired`: creates and updates parents first, then deletes
/// children first; children of a deleted API or product go with it.
pub fn diff(desired: &BTreeMap<EntityKey, Desired>, found: &BTreeMap<EntityKey, Found>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, want) in desired {
        match found.get(key) {
            None => changes.push(Change::Create { key: key.clone(), desired: want.clone() }),
            Some(have) if !satisfied(key.0, want, have) => {
                changes.push(Change::Update { key: key.clone(), desired: want.clone() })
            }
            Some(_) => {}
        }
    }
    let gone: Vec<&EntityKey> = found.keys().filter(|k| !desired.contains_key(*k)).collect();
    let parent_gone = |key: &EntityKey| {
        gone.iter()
            .any(|g| matches!(g.0, Kind::Api | Kind::Product) && key.1.starts_with(&format!("{}/", g.1)))
    };
    let mut deletes: Vec<Change> =
        gone.iter().filter(|k| !parent_gone(k)).map(|k| Change::Delete { key: (*k).clone() }).collect();
    deletes.sort_by(|a, b| b.key().0.cmp(&a.key().0).then_with(|| b.key().1.cmp(&a.key().1)));
    changes.extend(deletes);
    changes
}

/// One API Management service, as a ProviderConfig describes it.
pub struct AzureProvider {
    settings: AzureSettings,
    cluster_id: String,
    client: ArmClient,
    capabilities: Capabilities,
}

/// What [`AzureProvider::plan`] found and would do.
#[derive(Debug)]
pub struct Plan {
    pub owner: String,
    pub changes: Vec<Change>,
    pub unprovisioned: Vec<String>,
}

impl AzureProvider {
    /// A provider with tokens from `tokens` (tests: [`arm::StaticToken`]) or, when `None`, from
    /// the credential the settings name.
    pub fn new(
        settings: &AzureSettings,
        cluster_id: &str,
        tokens: Option<Arc<dyn TokenSource>>,
    ) -> Result<Self, ProviderError> {
        let tokens = match tokens {
            Some(t) => t,
            None => arm::identity(&settings.credential)?,
        };
        Ok(Self {
            settings: settings.clone(),
            cluster_id: cluster_id.to_string(),
            client: ArmClient::new(settings, tokens)?,
            capabilities: capabilities(),
        })
    }

    /// Every call sent, by method and collection.
    pub fn calls(&self) -> &arm::CallCounter {
        &self.client.calls
    }

    pub async fn plan(&self, gateway: &GatewayIr) -> Result<Plan, ProviderError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mapping = desired::map(gateway, &self.settings, &self.cluster_id, now);
        let owner = desired::owner(&self.cluster_id, &gateway.key);
        let found = self.observe(&desired::prefix(&owner)).await?;
        Ok(Plan { changes: diff(&mapping.entities, &found), owner, unprovisioned: mapping.unprovisioned })
    }

    pub async fn plan_delete(&self, key: &GatewayKey) -> Result<Plan, ProviderError> {
        let owner = desired::owner(&self.cluster_id, key);
        let found = self.observe(&desired::prefix(&owner)).await?;
        Ok(Plan { changes: diff(&BTreeMap::new(), &found), owner, unprovisioned: Vec::new() })
    }

    /// Everything whose id carries `prefix`, with the policies of its operations and products.
    async fn observe(&self, prefix: &str) -> Result<BTreeMap<EntityKey, Found>, ProviderError> {
        let mut found = BTreeMap::new();
        let name = |item: &Value| item["name"].as_str().unwrap_or_default().to_string();
        for item in self.client.list("backends").await? {
            let id = name(&item);
            if id.starts_with(prefix) {
                let kind =
                    if item["properties"]["type"] == "Pool" { Kind::PoolBackend } else { Kind::Backend };
                found.insert((kind, format!("backends/{id}")), Found { body: item });
            }
        }
        for item in self.client.list("apis").await? {
            let id = name(&item);
            if !id.starts_with(prefix) {
                continue;
            }
            for op in self.client.list(&format!("apis/{id}/operations")).await? {
                let op_path = format!("apis/{id}/operations/{}", name(&op));
                if let Some(policy) =
                    self.client.get(&format!("{op_path}/policies/policy?format=rawxml")).await?
                {
                    found.insert(
                        (Kind::OperationPolicy, format!("{op_path}/policies/policy")),
                        Found { body: policy.body },
                    );
                }
                found.insert((Kind::Operation, op_path), Found { body: op });
            }
            found.insert((Kind::Api, format!("apis/{id}")), Found { body: item });
        }
        for item in self.client.list("products").await? {
            let id = name(&item);
            if !id.starts_with(prefix) {
                continue;
            }
            for api in self.client.list(&format!("products/{id}/apis")).await? {
                found.insert(
                    (Kind::ProductApi, format!("products/{id}/apis/{}", name(&api))),
                    Found { body: api },
                );
            }
            if let Some(policy) =
                self.client.get(&format!("products/{id}/policies/policy?format=rawxml")).await?
            {
                found.insert(
                    (Kind::ProductPolicy, format!("products/{id}/policies/policy")),
                    Found { body: policy.body },
                );
            }
            found.insert((Kind::Product, format!("products/{id}")), Found { body: item });
        }
        for item in self.client.list("subscriptions").await? {
            let id = name(&item);
            if id.starts_with(prefix) {
                found.insert((Kind::Subscription, format!("subscriptions/{id}")), Found { body: item });
            }
        }
        Ok(found)
    }

    /// Carries out a plan in order; stops at the first error (the next apply goes on).
    pub async fn execute(&self, plan: &Plan) -> Result<Provisioned, ProviderError> {
        for change in &plan.changes {
            tracing::debug!(owner = %plan.owner, %change, "executing");
            match change {
                Change::Create { key, desired } => {
                    self.client.put(&key.1, &desired.body, None).await?;
                }
                Change::Update { key, desired } => {
                    // Replace only the version we compared against; a concurrent change makes
                    // this fail (412) and the next pass starts from what is there then.
                    let etag = self.client.get(&key.1).await?.and_then(|e| e.etag);
                    self.client.put(&key.1, &desired.body, Some(etag.as_deref().unwrap_or("*"))).await?;
                }
                Change::Delete { key } => {
                    let path = match key.0 {
                        Kind::Api => format!("{}?deleteRevisions=true", key.1),
                        Kind::Product => format!("{}?deleteSubscriptions=true", key.1),
                        _ => key.1.clone(),
                    };
                    // The link of an API to a product is deleted without an ETag.
                    self.client.delete(&path, key.0 != Kind::ProductApi).await?;
                }
            }
        }
        Ok(Provisioned {
            addresses: vec![format!("{}.azure-api.net", self.settings.service_name)],
            unprovisioned: plan.unprovisioned.clone(),
            resource_ids: [("service".to_string(), self.settings.service_name.clone())].into(),
            ..Provisioned::default()
        })
    }
}

#[async_trait]
impl Provider for AzureProvider {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn apply(&self, gateway: &GatewayIr) -> Result<Provisioned, ProviderError> {
        let plan = self.plan(gateway).await?;
        if !plan.changes.is_empty() {
            tracing::info!(gateway = %gateway.key.id(), changes = %summary(&plan.changes), "applying to API Management");
        }
        self.execute(&plan).await
    }

    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError> {
        let plan = self.plan_delete(key).await?;
        self.execute(&plan).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn server_added_fields_and_secrets_do_not_make_a_change() {
        let want = Desired {
            body: json!({ "properties": { "scope": "/products/p", "state": "active", "primaryKey": "k" } }),
        };
        let have = Found {
            body: json!({ "name": "s", "properties": { "scope": "/products/p", "state": "active", "createdDate": "2026-01-01" } }),
        };
        assert!(satisfied(Kind::Subscription, &want, &have));
        let suspended =
            Found { body: json!({ "properties": { "scope": "/products/p", "state": "suspended" } }) };
        assert!(!satisfied(Kind::Subscription, &want, &suspended));
    }

    #[test]
    fn deletes_skip_children_of_a_deleted_api() {
        let found: BTreeMap<EntityKey, Found> = [
            ((Kind::Api, "apis/tb-x-api".to_string()), Found { body: json!({}) }),
            ((Kind::Operation, "apis/tb-x-api/operations/op-1".to_string()), Found { body: json!({}) }),
            ((Kind::Backend, "backends/tb-x-be-1".to_string()), Found { body: json!({}) }),
        ]
        .into();
        let plan: Vec<String> = diff(&BTreeMap::new(), &found).iter().map(ToString::to_string).collect();
        assert_eq!(plan, ["- delete api apis/tb-x-api", "- delete backend backends/tb-x-be-1"]);
    }
}
