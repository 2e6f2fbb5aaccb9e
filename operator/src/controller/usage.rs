//! `ApiKey.status.usage`: each key's use of its quota in the current period, read from where its
//! Gateway counts it and written only when it changed, at most once per interval, under a field
//! manager of its own (the status writer neither writes nor compares it).
//!
//! Local Gateways whose class names a counter store are read from that store (the password and
//! CA from the Gateway's namespace, as its proxies get them); AWS Gateways from API Gateway's
//! usage-plan usage, Azure Gateways from API Management's reports by subscription. A Local
//! Gateway without a store counts in each proxy replica's memory, which the operator cannot see:
//! its keys get no usage.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tollbridge_local::counter_store::clean_password;
use tollbridge_local::policy::{usage_queries, KeyUsage, UsageQuery};
use tollbridge_local::{CounterStoreSettings, FailureMode};
use tollbridge_provider::{CounterStoreIr, GatewayIr, ProviderSettings, QuotaPolicyIr, UsageRequest};

use crate::api::tollbridge::{ApiKey, ApiKeyUsage};
use crate::providers::Registry;
use crate::translate::conditions::Stamp;
use crate::translate::listeners::secret_value;

/// The field manager of `status.usage`.
pub const USAGE_MANAGER: &str = "tollbridge-operator-usage";

/// Where one Gateway's keys are counted.
#[derive(Clone, Debug)]
enum Counter {
    /// The counter store of a Local Gateway (its Secrets in the Gateway's namespace).
    Store { gateway: String, namespace: String, store: CounterStoreIr },
    /// The cloud service the Gateway is provisioned on.
    Cloud(Box<GatewayIr>),
}

/// The policies of one Gateway, and where their keys are counted.
#[derive(Clone, Debug)]
pub struct UsageSource {
    counter: Counter,
    /// The policies with a quota and keys; their windows are taken at each read.
    policies: Vec<QuotaPolicyIr>,
}

/// How long one Gateway's usage may take to read: a slow cloud listing must not hold up the
/// other Gateways' usage and store health.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(30);

impl UsageSource {
    /// `namespace/name` of the Gateway.
    fn name(&self) -> String {
        match &self.counter {
            Counter::Store { gateway, .. } => gateway.clone(),
            Counter::Cloud(gateway) => gateway.key.id(),
        }
    }
}

/// The sources of every Gateway whose keys' usage can be read.
pub fn sources(gateways: &[GatewayIr]) -> Vec<UsageSource> {
    gateways
        .iter()
        .filter_map(|ir| {
            let counter = match &ir.provider {
                ProviderSettings::Local(local) => Counter::Store {
                    gateway: ir.key.id(),
                    namespace: ir.key.namespace.clone(),
                    store: local.counter_store.clone()?,
                },
                ProviderSettings::Aws(_) | ProviderSettings::Azure(_) => Counter::Cloud(Box::new(ir.clone())),
            };
            let policies: Vec<QuotaPolicyIr> =
                ir.policies.iter().filter(|p| p.quota.is_some() && !p.keys.is_empty()).cloned().collect();
            (!policies.is_empty()).then_some(UsageSource { counter, policies })
        })
        .collect()
}

/// What a cloud is asked for a key: its quota period from its first day to today (UTC).
fn cloud_request(query: &UsageQuery, now: jiff::Timestamp) -> UsageRequest {
    let day = |t: jiff::Timestamp| t.strftime("%Y-%m-%d").to_string();
    UsageRequest {
        policy: query.policy.clone(),
        api_key: query.api_key.clone(),
        first_day: day(query.period_start()),
        last_day: day(now),
    }
}

/// Per Local Gateway with a counter store (`namespace/name`): whether the operator could read
/// it at the last refresh (`None`) or why not.
pub type StoreHealth = BTreeMap<String, Option<String>>;

/// The type of the condition [`degraded`] makes.
pub const DEGRADED: &str = "Degraded";

/// The `Degraded` condition of a Local Gateway whose store the operator could (`None`) or could
/// not read.
pub fn degraded(health: &Option<String>, failure_mode: &str, stamp: &Stamp) -> Condition {
    match health {
        None => stamp.no(DEGRADED, "CounterStoreAvailable", "the counter store answers"),
        Some(reason) => stamp.yes(
            DEGRADED,
            "CounterStoreUnavailable",
            format!(
                "the operator cannot read the counter store ({reason}); proxies that cannot either \
                 follow the failure mode {failure_mode}"
            ),
        ),
    }
}

/// What was last written per ApiKey (`namespace/name`), to write only changes.
#[derive(Default)]
pub struct UsageWriter {
    written: HashMap<String, KeyUsage>,
    /// The problems of the last refresh, so that a lasting one is logged once.
    problems: Vec<String>,
}

impl UsageWriter {
    /// Reads every source (each key's window as of now) and writes the usage of the keys whose
    /// count changed. Returns the problems met (a store or cloud that does not answer, a write
    /// refused), one line each.
    pub async fn refresh(
        &mut self,
        client: &Client,
        clouds: &Registry,
        sources: &[UsageSource],
    ) -> (Vec<String>, StoreHealth) {
        let mut problems = Vec::new();
        let mut health = StoreHealth::new();
        let now = jiff::Timestamp::now();
        let mut served = Vec::new();
        for source in sources {
            let queries = usage_queries(&source.policies, now);
            served.extend(queries.iter().map(|q| q.api_key.clone()));
            let counts = tokio::time::timeout(SOURCE_TIMEOUT, read(client, clouds, source, &queries, now))
                .await
                .unwrap_or_else(|_| {
                    Err(format!("reading usage from {} took over {SOURCE_TIMEOUT:?}", source.name()))
                });
            if let Counter::Store { gateway, .. } = &source.counter {
                health.insert(gateway.clone(), counts.as_ref().err().cloned());
            }
            let counts = match counts {
                Ok(counts) => counts,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            for (query, used) in queries.iter().zip(counts) {
                let Some((used, last_seen)) = used else { continue };
                let usage = query.report(used, last_seen);
                if self.written.get(&query.api_key) == Some(&usage) {
                    continue;
                }
                match write(client, &usage).await {
                    Ok(()) => {
                        self.written.insert(query.api_key.clone(), usage);
                    }
                    Err(error) => {
                        problems.push(format!("cannot write the usage of ApiKey {}: {error}", query.api_key))
                    }
                }
            }
        }
        // Keys no longer served are forgotten (and written again should they come back).
        self.written.retain(|api_key, _| served.contains(api_key));
        (problems, health)
    }

    /// The problems of this refresh that the last one did not have.
    pub fn new_problems(&mut self, problems: Vec<String>) -> Vec<String> {
        let new = problems.iter().filter(|p| !self.problems.contains(p)).cloned().collect();
        self.problems = problems;
        new
    }
}

/// The count of each of `queries`, and when its last request came if the counter keeps that
/// (`None`: the counter does not know the key).
async fn read(
    client: &Client,
    clouds: &Registry,
    source: &UsageSource,
    queries: &[UsageQuery],
    now: jiff::Timestamp,
) -> Result<Vec<Option<(u64, Option<jiff::Timestamp>)>>, String> {
    match &source.counter {
        Counter::Store { namespace, store, .. } => {
            let settings = settings(client, namespace, store).await?;
            let counts = tollbridge_local::counter_store::quota_counts(&settings, queries)
                .await
                .map_err(|error| format!("cannot read usage from the counter store: {error}"))?;
            Ok(counts.into_iter().map(Some).collect())
        }
        Counter::Cloud(gateway) => {
            let requests: Vec<UsageRequest> = queries.iter().map(|q| cloud_request(q, now)).collect();
            let provider = clouds.get(&gateway.provider).await;
            let used = provider
                .key_usage(gateway, &requests)
                .await
                .map_err(|error| format!("cannot read the usage of Gateway {}: {error}", gateway.key.id()))?;
            Ok(used.into_iter().map(|used| used.map(|used| (used, None))).collect())
        }
    }
}

/// The store's settings, its password and CA read from the Gateway's namespace.
async fn settings(
    client: &Client,
    namespace: &str,
    store: &CounterStoreIr,
) -> Result<CounterStoreSettings, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |reference: Option<(String, String)>| {
        let secrets = secrets.clone();
        async move {
            let Some((name, key)) = reference else { return Ok(None) };
            let secret = secrets
                .get(&name)
                .await
                .map_err(|e| format!("cannot read Secret {namespace}/{name} of the counter store: {e}"))?;
            secret_value(&secret, &key)
                .map(Some)
                .ok_or_else(|| format!("Secret {namespace}/{name} has no key {key:?} for the counter store"))
        }
    };
    let password = read(store.password_secret.clone()).await?;
    let ca_pem = read(store.ca_secret.clone()).await?;
    let password = password
        .map(|bytes| String::from_utf8(bytes).map(|p| clean_password(&p).to_owned()))
        .transpose()
        .map_err(|_| format!("the counter store's password in namespace {namespace} is not UTF-8"))?;
    Ok(CounterStoreSettings {
        url: store.url.clone(),
        password,
        ca_pem,
        timeout: Duration::from_millis(u64::from(store.timeout_ms)),
        failure_mode: FailureMode::Local,
        prefix: "tollbridge".to_owned(),
        // Only reads counts: decides nothing.
        lease_max: 0,
    })
}

/// Server-side applies `status.usage` of the ApiKey.
async fn write(client: &Client, usage: &KeyUsage) -> Result<(), kube::Error> {
    let (namespace, name) = usage.api_key.split_once('/').unwrap_or(("", &usage.api_key));
    let api: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let status = ApiKeyUsage {
        period_start: Time(usage.period_start),
        period_end: Time(usage.period_end),
        used: signed(usage.used),
        limit: signed(usage.limit),
        remaining: signed(usage.remaining),
        last_seen: usage.last_seen.map(Time),
        observed_at: Time(jiff::Timestamp::now()),
    };
    let body = json!({
        "apiVersion": "tollbridge.dev/v1alpha1",
        "kind": "ApiKey",
        "status": { "usage": status },
    });
    api.patch_status(name, &PatchParams::apply(USAGE_MANAGER).force(), &Patch::Apply(&body)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gold() -> QuotaPolicyIr {
        QuotaPolicyIr {
            jwt: None,
            id: "shop/gold".into(),
            api_key: None,
            rate_limit: None,
            quota: Some(tollbridge_provider::QuotaIr {
                requests: 9,
                period: tollbridge_provider::QuotaPeriod::Month,
            }),
            keys: vec![tollbridge_provider::ApiKeyIr {
                id: "shop/alice".into(),
                consumer: "alice".into(),
                sha256: "ab".repeat(32),
                value: tollbridge_provider::SecretString::new("k"),
                disabled: false,
                expires_at: None,
            }],
        }
    }

    #[test]
    fn a_cloud_is_asked_from_the_first_day_of_the_period_to_today() {
        let now: jiff::Timestamp = "2026-12-06T15:00:00Z".parse().unwrap();
        let queries = usage_queries(&[gold()], now);
        let request = cloud_request(&queries[0], now);
        assert_eq!((request.first_day.as_str(), request.last_day.as_str()), ("2026-12-01", "2026-12-06"));
        assert_eq!((request.policy.as_str(), request.api_key.as_str()), ("shop/gold", "shop/alice"));
    }

    #[test]
    fn usage_is_read_for_both_clouds_and_for_local_gateways_with_a_store_only() {
        let gateway = |name: &str, provider: ProviderSettings| GatewayIr {
            key: tollbridge_provider::GatewayKey {
                namespace: "shop".into(),
                name: name.into(),
                uid: "u".into(),
                generation: 1,
            },
            provider,
            listeners: Vec::new(),
            addresses: Vec::new(),
            infrastructure: Default::default(),
            routes: Vec::new(),
            policies: vec![gold()],
        };
        let store = CounterStoreIr {
            url: "redis://127.0.0.1:6379".into(),
            password_secret: None,
            ca_secret: None,
            failure_mode: "local".into(),
            timeout_ms: 50,
            lease_max: None,
        };
        let local = tollbridge_provider::LocalSettings::default();
        let stored = tollbridge_provider::LocalSettings { counter_store: Some(store), ..local.clone() };
        let gateways = [
            gateway("aws", ProviderSettings::Aws(Default::default())),
            gateway("azure", ProviderSettings::Azure(Default::default())),
            gateway("in-memory", ProviderSettings::Local(local)),
            gateway("stored", ProviderSettings::Local(stored)),
        ];
        let read: Vec<String> = sources(&gateways)
            .iter()
            .map(|source| match &source.counter {
                Counter::Cloud(gateway) => gateway.key.name.clone(),
                Counter::Store { gateway, .. } => gateway.clone(),
            })
            .collect();
        assert_eq!(read, ["aws", "azure", "shop/stored"]);
    }
}
