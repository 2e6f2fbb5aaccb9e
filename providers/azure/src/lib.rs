//! Azure API Management provider: a Gateway becomes an API (operations with policy XML,
//! backends, pools) in an existing API Management service, its QuotaPolicies products with
//! rate-limit and quota policies, its ApiKeys subscriptions to those products.
//!
//! Built as observe → diff → execute, like the AWS provider: [`AzureProvider::plan`] reads only
//! entities whose ids carry the Gateway's prefix, [`diff`] is pure, and
//! [`AzureProvider::execute`] sends each change through the ARM client (retries, long-running
//! operations).
//!
//! Optimistic concurrency: every update and delete carries, as `If-Match`, the ETag of the
//! read its change was decided from (a listing gives no ETags, so the plan reads each entity
//! it is about to update or delete, and decides from that read). A write that another writer
//! came before fails with 412 and is not made; [`Provider::apply`] then observes and plans
//! again (a few times at most), so a change is never made from a stale comparison.
//!
//! Reads: a plan lists each collection (only ids with the Gateway's prefix, where the service
//! can filter) and reads a policy only when its operation or product is not as desired, since
//! each of those carries a marker of its policy; every policy is read again on the schedule of
//! [`audit`] (first plan of the process, after a failed write, every hour).

pub mod arm;
pub mod audit;
pub mod desired;
pub mod jwt;
pub mod retry;
pub mod usage;
pub mod xml;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tollbridge_provider::reconcile::{self, Model, Summary, Verdict};
use tollbridge_provider::{
    AzureSettings, Capabilities, Feature, GatewayIr, GatewayKey, Provider, ProviderError, Provisioned,
    UsageRequest,
};

use arm::{ArmClient, TokenSource, WriteError};
use audit::PolicyAudit;
use desired::{Desired, EntityKey, Kind};

/// What API Management can express, as this provider provisions it (docs/providers.md).
pub fn capabilities() -> Capabilities {
    // Not (yet) mapped to policies: CORS, host rewrites, mirroring a share of requests. HTTP
    // APIs do not carry WebSockets (API Management has WebSocket APIs of their own), and speak
    // HTTP/1.1 to backends without TLS, so gRPC is not carried either. Backend certificates are
    // not checked against a BackendTLSPolicy's CAs (not mapped yet).
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
        Feature::HTTPRouteBackendProtocolWebSocket,
        Feature::HTTPRouteBackendProtocolH2C,
        Feature::GRPCRoute,
        Feature::GRPCRouteNamedRouteRule,
        Feature::BackendTLSPolicy,
        Feature::BackendTLSPolicySANValidation,
        // validate-jwt reads keys from an OpenID Connect discovery document or inline, not
        // from a bare key set URL.
        Feature::JwtKeySetUri,
    ];
    Capabilities::with(
        "Azure API Management",
        Feature::ALL.iter().copied().filter(|f| !unsupported.contains(f)),
    )
}

/// Passes of observe → plan → execute in one apply or delete when a write loses a race with
/// another writer (412).
const PASSES: u32 = 3;

/// An entity as found: its body, and the ETag it was read with (a collection listing gives
/// none; a GET does); or a policy not read, vouched for by the marker of its container. Its
/// `Debug` hides subscription keys.
#[derive(Clone)]
pub struct Found {
    pub body: Value,
    pub etag: Option<String>,
    /// A policy taken to be as desired, unread: its operation or product carries the desired
    /// policy's marker ([`desired::policy_marker`]).
    pub vouched: bool,
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found")
            .field("body", &desired::redacted(&self.body))
            .field("etag", &self.etag)
            .field("vouched", &self.vouched)
            .finish()
    }
}

impl Found {
    /// An entity as a listing gives it.
    pub fn listed(body: Value) -> Found {
        Found { body, etag: None, vouched: false }
    }

    /// An entity as a GET gives it.
    pub fn read(entity: arm::Entity) -> Found {
        Found { body: entity.body, etag: entity.etag, vouched: false }
    }

    /// A policy its container vouches for.
    pub fn vouched() -> Found {
        Found { body: Value::Null, etag: None, vouched: true }
    }
}

/// The ETag of the read a change was decided from, sent as `If-Match` (plan lines do not show
/// it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ETag(pub Option<String>);

impl ETag {
    /// The `If-Match` value: the ETag, or `*` when the service gave none with the read (it
    /// always does): then whatever is there is replaced.
    pub fn if_match(&self) -> &str {
        self.0.as_deref().unwrap_or("*")
    }
}

impl reconcile::Handle for ETag {
    fn shown(&self) -> Option<&str> {
        None
    }
}

/// One step of a plan. Updates and deletes carry the ETag of the read they were decided from.
pub type Change = reconcile::Change<EntityKey, Desired, ETag>;

/// Whether every field of `want` is in `have` with the same value (objects recursively;
/// other values, arrays included, must be equal). A relative reference we wrote (`scope:
/// /products/p`) comes back as a full resource id ending with it. Secrets (never given back)
/// are left out.
fn contains(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::String(w), Value::String(h)) if w.starts_with('/') => h == w || h.ends_with(w.as_str()),
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .filter(|(k, _)| !desired::SECRET_FIELDS.contains(&k.as_str()))
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(v, hv))),
        (w, h) => w == h,
    }
}

/// Whether the entity found is as desired: policies by canonical XML (or their container's
/// marker), the rest by fields.
pub fn satisfied(kind: Kind, desired: &Desired, found: &Found) -> bool {
    if found.vouched {
        return true;
    }
    match kind {
        Kind::OperationPolicy | Kind::ProductPolicy => {
            let value = |v: &Value| v["properties"]["value"].as_str().map(xml::canonical);
            value(&desired.body) == value(&found.body)
        }
        Kind::ProductApi => true,
        _ => contains(&desired.body["properties"], &found.body["properties"]),
    }
}

/// API Management entities as the diff sees them: an API takes its operations along when
/// deleted, an operation its policy, a product its policy and API links.
pub struct ApiManagement;

impl Model for ApiManagement {
    type Key = EntityKey;
    type Desired = Desired;
    type Observed = Found;
    type Handle = ETag;

    fn compare(key: &EntityKey, desired: &Desired, found: &Found) -> Verdict {
        if satisfied(key.0, desired, found) {
            Verdict::Satisfied
        } else {
            Verdict::Update
        }
    }

    fn handle(found: &Found) -> ETag {
        ETag(found.etag.clone())
    }

    /// The container in the entity's path: `apis/a/operations/o` is in `apis/a`.
    fn parent((kind, path): &EntityKey) -> Option<EntityKey> {
        let (parent, child_segment) = match kind {
            Kind::Operation => (Kind::Api, "/operations/"),
            Kind::OperationPolicy => (Kind::Operation, "/policies/"),
            Kind::ProductApi => (Kind::Product, "/apis/"),
            Kind::ProductPolicy => (Kind::Product, "/policies/"),
            _ => return None,
        };
        let (parent_path, _) = path.rsplit_once(child_segment)?;
        Some((parent, parent_path.to_string()))
    }
}

/// The changes from `found` to `desired` ([`reconcile::diff`]): creates and updates parents
/// first, then deletes children first; children of a deleted API, operation or product go with
/// it.
pub fn diff(desired: &BTreeMap<EntityKey, Desired>, found: &BTreeMap<EntityKey, Found>) -> Vec<Change> {
    reconcile::diff::<ApiManagement>(desired, found)
}

/// One API Management service, as a ProviderConfig describes it.
pub struct AzureProvider {
    settings: AzureSettings,
    cluster_id: String,
    client: ArmClient,
    capabilities: Capabilities,
    audit: PolicyAudit,
}

/// What [`AzureProvider::plan`] found and would do.
#[derive(Debug)]
pub struct Plan {
    pub owner: String,
    pub changes: Vec<Change>,
    /// What the plan leaves otherwise than asked: what API Management cannot express, and
    /// what it keeps although the Gateway no longer wants it (a product others subscribed to).
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
            audit: PolicyAudit::new(audit::EVERY),
        })
    }

    /// Reads every policy again at least this often (default [`audit::EVERY`]; zero: on every
    /// plan); see [`audit`].
    pub fn with_policy_audit(mut self, every: Duration) -> Self {
        self.audit = PolicyAudit::new(every);
        self
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
        let prefix = desired::prefix(&owner);
        let started = Instant::now();
        let audit = self.audit.due(&owner, started);
        if audit {
            tracing::debug!(%owner, "reading every policy (audit)");
        }
        let mut found = self.observe(&prefix, &mapping.entities, audit).await?;
        if audit {
            self.audit.audited(&owner, started);
        }
        let (changes, kept) = self.decide(mapping.entities, &mut found, &prefix).await?;
        let mut unprovisioned = mapping.unprovisioned;
        unprovisioned.extend(kept);
        Ok(Plan { changes, owner, unprovisioned })
    }

    pub async fn plan_delete(&self, key: &GatewayKey) -> Result<Plan, ProviderError> {
        let owner = desired::owner(&self.cluster_id, key);
        let prefix = desired::prefix(&owner);
        let mut found = self.observe(&prefix, &BTreeMap::new(), false).await?;
        let (changes, kept) = self.decide(BTreeMap::new(), &mut found, &prefix).await?;
        Ok(Plan { changes, owner, unprovisioned: kept })
    }

    /// The changes from `found` to `desired`, and what is kept although not desired.
    ///
    /// A product to delete that has subscriptions we do not own is kept as it is, with them
    /// (its API links and policy still go, our subscriptions too); a product is deleted only
    /// once ours are gone, and never with `deleteSubscriptions`. Each update and delete is
    /// decided from a read that gave its entity's ETag: entities the listings gave (without
    /// ETags) that would be updated or deleted are read first, and the diff made again from
    /// those reads.
    async fn decide(
        &self,
        mut desired: BTreeMap<EntityKey, Desired>,
        found: &mut BTreeMap<EntityKey, Found>,
        prefix: &str,
    ) -> Result<(Vec<Change>, Vec<String>), ProviderError> {
        let mut kept = Vec::new();
        for change in diff(&desired, found) {
            let Change::Delete { key, .. } = change else { continue };
            let (Kind::Product, path) = &key else { continue };
            let theirs: Vec<String> = self
                .client
                .list(&format!("{path}/subscriptions"))
                .await?
                .iter()
                .filter_map(|s| s["name"].as_str())
                .filter(|name| !name.starts_with(prefix))
                .map(str::to_string)
                .collect();
            if theirs.is_empty() {
                continue;
            }
            kept.push(format!(
                "{path} is kept: it has subscriptions tollbridge does not manage ({}); it goes once they are \
                 deleted or moved to another product",
                theirs.join(", ")
            ));
            // Its policy, not desired, was not read (it would have gone with the product).
            let policy_key = (Kind::ProductPolicy, format!("{path}/policies/policy"));
            if let Some(policy) = self.client.get(&read_path(&policy_key)).await? {
                found.insert(policy_key, Found::read(policy));
            }
            let body = found[&key].body.clone();
            desired.insert(key, Desired { body });
        }
        let unread: Vec<EntityKey> = diff(&desired, found)
            .iter()
            .filter(|c| !matches!(c, Change::Create { .. }))
            .map(|c| c.key().clone())
            // A product's API link has no ETag and no GET.
            .filter(|key| key.0 != Kind::ProductApi && found.get(key).is_some_and(|f| f.etag.is_none()))
            .collect();
        for key in unread {
            match self.client.get(&read_path(&key)).await? {
                Some(entity) => found.insert(key, Found::read(entity)),
                None => found.remove(&key),
            };
        }
        Ok((diff(&desired, found), kept))
    }

    /// Everything whose id carries `prefix`. A policy is read when it is desired and its
    /// operation or product is not as desired (its marker is not the desired policy's), or on
    /// an `audit`; otherwise its container vouches for it. Policies not desired are not read:
    /// they go with their container.
    async fn observe(
        &self,
        prefix: &str,
        desired: &BTreeMap<EntityKey, Desired>,
        audit: bool,
    ) -> Result<BTreeMap<EntityKey, Found>, ProviderError> {
        let mut found = BTreeMap::new();
        let name = |item: &Value| item["name"].as_str().unwrap_or_default().to_string();
        // Only our ids, where the service filters (it may not: the prefix is checked again).
        let ours = |collection: &str| format!("{collection}?$filter=startswith(name,'{prefix}')");
        for item in self.client.list(&ours("backends")).await? {
            let id = name(&item);
            if id.starts_with(prefix) {
                let kind =
                    if item["properties"]["type"] == "Pool" { Kind::PoolBackend } else { Kind::Backend };
                found.insert((kind, format!("backends/{id}")), Found::listed(item));
            }
        }
        for item in self.client.list(&ours("apis")).await? {
            let id = name(&item);
            if !id.starts_with(prefix) {
                continue;
            }
            for op in self.client.list(&format!("apis/{id}/operations")).await? {
                let op_key = (Kind::Operation, format!("apis/{id}/operations/{}", name(&op)));
                let op = Found::listed(op);
                let policy_key = (Kind::OperationPolicy, format!("{}/policies/policy", op_key.1));
                if let Some(policy) = self.policy(&policy_key, &op_key, &op, desired, audit).await? {
                    found.insert(policy_key, policy);
                }
                found.insert(op_key, op);
            }
            found.insert((Kind::Api, format!("apis/{id}")), Found::listed(item));
        }
        for item in self.client.list(&ours("products")).await? {
            let id = name(&item);
            if !id.starts_with(prefix) {
                continue;
            }
            for api in self.client.list(&format!("products/{id}/apis")).await? {
                found.insert(
                    (Kind::ProductApi, format!("products/{id}/apis/{}", name(&api))),
                    Found::listed(api),
                );
            }
            let product_key = (Kind::Product, format!("products/{id}"));
            let product = Found::listed(item);
            let policy_key = (Kind::ProductPolicy, format!("products/{id}/policies/policy"));
            if let Some(policy) = self.policy(&policy_key, &product_key, &product, desired, audit).await? {
                found.insert(policy_key, policy);
            }
            found.insert(product_key, product);
        }
        for item in self.client.list(&ours("subscriptions")).await? {
            let id = name(&item);
            if id.starts_with(prefix) {
                found.insert((Kind::Subscription, format!("subscriptions/{id}")), Found::listed(item));
            }
        }
        Ok(found)
    }

    /// The policy under a container as found: read, vouched for by the container, or `None`
    /// (not there, or not desired and so not read).
    async fn policy(
        &self,
        key: &EntityKey,
        container_key: &EntityKey,
        container: &Found,
        desired: &BTreeMap<EntityKey, Desired>,
        audit: bool,
    ) -> Result<Option<Found>, ProviderError> {
        if !desired.contains_key(key) {
            return Ok(None);
        }
        let container_as_desired =
            desired.get(container_key).is_some_and(|want| satisfied(container_key.0, want, container));
        if container_as_desired && !audit {
            return Ok(Some(Found::vouched()));
        }
        Ok(self.client.get(&read_path(key)).await?.map(Found::read))
    }

    /// Carries out a plan in order; stops at the first error (the next apply goes on). A write
    /// another writer came before (412) is not made and is reported as a transient error.
    pub async fn execute(&self, plan: &Plan) -> Result<Provisioned, ProviderError> {
        self.run(plan).await?;
        Ok(self.provisioned(plan))
    }

    async fn run(&self, plan: &Plan) -> Result<(), WriteError> {
        let result = self.write(plan).await;
        if result.is_err() {
            // What the markers written so far vouch for may not be there.
            self.audit.write_failed(&plan.owner);
        }
        result
    }

    async fn write(&self, plan: &Plan) -> Result<(), WriteError> {
        for change in &plan.changes {
            tracing::debug!(owner = %plan.owner, %change, "executing");
            match change {
                Change::Create { key, desired } => {
                    self.client.put(&key.1, &desired.body, None).await?;
                }
                Change::Update { key, desired, handle } => {
                    self.client.put(&key.1, &desired.body, Some(handle.if_match())).await?;
                }
                Change::Delete { key, handle } => {
                    // A product goes without `deleteSubscriptions`: ours went before it (deletes
                    // run children first), and one made since the plan makes the service refuse.
                    let path = match key.0 {
                        Kind::Api => format!("{}?deleteRevisions=true", key.1),
                        _ => key.1.clone(),
                    };
                    // The link of an API to a product is deleted without an ETag.
                    let if_match = (key.0 != Kind::ProductApi).then(|| handle.if_match());
                    self.client.delete(&path, if_match).await?;
                }
            }
        }
        Ok(())
    }

    fn provisioned(&self, plan: &Plan) -> Provisioned {
        Provisioned {
            addresses: vec![format!("{}.azure-api.net", self.settings.service_name)],
            unprovisioned: plan.unprovisioned.clone(),
            resource_ids: [("service".to_string(), self.settings.service_name.clone())].into(),
            ..Provisioned::default()
        }
    }
}

/// The path an entity is read at (policies as the raw XML we write).
fn read_path(key: &EntityKey) -> String {
    match key.0 {
        Kind::OperationPolicy | Kind::ProductPolicy => format!("{}?format=rawxml", key.1),
        _ => key.1.clone(),
    }
}

/// Whether a write failed because another writer came first: worth observing again at once.
fn lost_race(result: &Result<(), WriteError>, pass: u32, owner: &str) -> bool {
    match result {
        Err(WriteError::Changed(why)) if pass < PASSES => {
            tracing::info!(owner, pass, error = %why, "an entity changed since it was read; observing again");
            true
        }
        _ => false,
    }
}

#[async_trait]
impl Provider for AzureProvider {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn apply(&self, gateway: &GatewayIr) -> Result<Provisioned, ProviderError> {
        // Bounded: `lost_race` is false on the last pass.
        let mut pass = 0;
        loop {
            pass += 1;
            let plan = self.plan(gateway).await?;
            if !plan.changes.is_empty() {
                tracing::info!(gateway = %gateway.key.id(), changes = %Summary::of(&plan.changes), "applying to API Management");
            }
            let result = self.run(&plan).await;
            if !lost_race(&result, pass, &plan.owner) {
                result?;
                return Ok(self.provisioned(&plan));
            }
        }
    }

    /// Counted from the service's reports by subscription: one report per distinct period,
    /// and one listing of the Gateway's subscriptions to tell a key the service lacks (`None`).
    async fn key_usage(
        &self,
        gateway: &GatewayIr,
        requests: &[UsageRequest],
    ) -> Result<Vec<Option<u64>>, ProviderError> {
        let prefix = desired::prefix(&desired::owner(&self.cluster_id, &gateway.key));
        let subscriptions: HashSet<String> = self
            .client
            .list(&format!("subscriptions?$filter=startswith(name,'{prefix}')"))
            .await?
            .iter()
            .filter_map(|item| item["name"].as_str().map(str::to_ascii_lowercase))
            .collect();
        let mut reports: HashMap<(&str, &str), HashMap<String, u64>> = HashMap::new();
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            let id = usage::subscription(gateway, &prefix, request).map(|id| id.to_ascii_lowercase());
            let Some(id) = id.filter(|id| subscriptions.contains(id)) else {
                out.push(None);
                continue;
            };
            let period = (request.first_day.as_str(), request.last_day.as_str());
            let counted = match reports.entry(period) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(new) => {
                    let records = self.client.list(&usage::report_path(period.0, period.1)).await?;
                    new.insert(usage::counted(&records))
                }
            };
            out.push(Some(counted.get(&id).copied().unwrap_or(0)));
        }
        Ok(out)
    }

    /// Deletes what the Gateway owns; what is kept (a product others subscribed to) is
    /// reported as an error once everything else is gone.
    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError> {
        let mut pass = 0;
        loop {
            pass += 1;
            let plan = self.plan_delete(key).await?;
            let result = self.run(&plan).await;
            if !lost_race(&result, pass, &plan.owner) {
                result?;
                if !plan.unprovisioned.is_empty() {
                    return Err(ProviderError::Invalid(plan.unprovisioned.join("; ")));
                }
                return Ok(());
            }
        }
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
        let have = Found::listed(
            json!({ "name": "s", "properties": { "scope": "/products/p", "state": "active", "createdDate": "2026-01-01" } }),
        );
        assert!(satisfied(Kind::Subscription, &want, &have));
        let suspended =
            Found::listed(json!({ "properties": { "scope": "/products/p", "state": "suspended" } }));
        assert!(!satisfied(Kind::Subscription, &want, &suspended));
    }

    #[test]
    fn debug_output_never_shows_a_subscription_key() {
        let secret = "sk-0123456789-do-not-print";
        let desired = Desired {
            body: json!({ "properties": { "scope": "/products/p", "primaryKey": secret, "secondaryKey": secret } }),
        };
        let key = (Kind::Subscription, "subscriptions/tb-x-sb-1".to_string());
        let create = Change::Create { key: key.clone(), desired: desired.clone() };
        let update =
            Change::Update { key: key.clone(), desired: desired.clone(), handle: ETag(Some("\"e\"".into())) };
        let plan = Plan {
            owner: "c/ns/gw".into(),
            changes: vec![create.clone(), update],
            unprovisioned: Vec::new(),
        };
        // As the service may give keys back (a PUT's answer, listSecrets).
        let found = Found::listed(
            json!({ "properties": { "primaryKey": secret, "nested": [{ "secondaryKey": secret }] } }),
        );
        let entity =
            arm::Entity { etag: None, body: json!({ "primaryKey": secret, "secondaryKey": secret }) };
        let mapping =
            desired::Mapping { entities: [(key, desired.clone())].into(), unprovisioned: Vec::new() };
        for text in [
            format!("{desired:?}"),
            format!("{create:?}"),
            format!("{plan:?}"),
            format!("{plan:#?}"),
            format!("{found:?}"),
            format!("{entity:?}"),
            format!("{mapping:?}"),
        ] {
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains("primaryKey"), "the field is named, its value hidden: {text}");
        }
        // Redaction is for output only: the body sent keeps the key.
        assert_eq!(desired.body["properties"]["primaryKey"], secret);
    }

    #[test]
    fn an_operation_deleted_takes_its_policy_and_a_vouched_policy_is_as_desired() {
        let api = (Kind::Api, "apis/tb-x-api".to_string());
        let op = (Kind::Operation, "apis/tb-x-api/operations/op-1".to_string());
        let policy = (Kind::OperationPolicy, "apis/tb-x-api/operations/op-1/policies/policy".to_string());
        let want = |body: Value| Desired { body };
        let found: BTreeMap<EntityKey, Found> = [
            (api.clone(), Found::listed(json!({ "properties": { "path": "p" } }))),
            (op.clone(), Found::listed(json!({}))),
            (policy.clone(), Found::read(arm::Entity { etag: Some("\"1\"".into()), body: json!({}) })),
        ]
        .into();
        let desired: BTreeMap<EntityKey, Desired> =
            [(api.clone(), want(json!({ "properties": { "path": "p" } })))].into();
        let plan: Vec<String> = diff(&desired, &found).iter().map(ToString::to_string).collect();
        assert_eq!(plan, ["- delete operation apis/tb-x-api/operations/op-1"]);

        let policy_xml = json!({ "properties": { "format": "rawxml", "value": "<policies />" } });
        let desired: BTreeMap<EntityKey, Desired> = [(policy.clone(), want(policy_xml))].into();
        assert!(satisfied(Kind::OperationPolicy, &desired[&policy], &Found::vouched()));
        assert!(!satisfied(Kind::OperationPolicy, &desired[&policy], &Found::listed(json!({}))));
    }

    #[test]
    fn deletes_skip_children_of_a_deleted_api() {
        let found: BTreeMap<EntityKey, Found> = [
            ((Kind::Api, "apis/tb-x-api".to_string()), Found::listed(json!({}))),
            ((Kind::Operation, "apis/tb-x-api/operations/op-1".to_string()), Found::listed(json!({}))),
            ((Kind::Backend, "backends/tb-x-be-1".to_string()), Found::listed(json!({}))),
        ]
        .into();
        let plan: Vec<String> = diff(&BTreeMap::new(), &found).iter().map(ToString::to_string).collect();
        assert_eq!(plan, ["- delete api apis/tb-x-api", "- delete backend backends/tb-x-be-1"]);
    }
}
