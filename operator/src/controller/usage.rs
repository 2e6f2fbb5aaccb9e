//! `ApiKey.status.usage`: each key's use of its quota in the current period, read from where its
//! Gateway counts it and written only when it changed, at most once per interval, under a field
//! manager of its own (the status writer neither writes nor compares it).
//!
//! Local Gateways whose class names a counter store are read from that store (the password and
//! CA from the Gateway's namespace, as its proxies get them). A Local Gateway without one counts
//! in each proxy replica's memory, which the operator cannot see: its keys get no usage.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tollbridge_local::policy::{usage_queries, KeyUsage, UsageQuery};
use tollbridge_local::{CounterStoreSettings, FailureMode};
use tollbridge_provider::{CounterStoreIr, GatewayIr, ProviderSettings};

use crate::api::tollbridge::{ApiKey, ApiKeyUsage};
use crate::translate::listeners::secret_value;

/// The field manager of `status.usage`.
pub const USAGE_MANAGER: &str = "tollbridge-operator-usage";

/// The keys counted in one Gateway's counter store.
#[derive(Clone, Debug)]
pub struct UsageSource {
    namespace: String,
    store: CounterStoreIr,
    queries: Vec<UsageQuery>,
}

/// The sources of every Local Gateway with a counter store and keys with a quota.
pub fn sources(gateways: &[GatewayIr], now: jiff::Timestamp) -> Vec<UsageSource> {
    gateways
        .iter()
        .filter_map(|ir| {
            let ProviderSettings::Local(local) = &ir.provider else { return None };
            let store = local.counter_store.clone()?;
            let queries = usage_queries(&ir.policies, now);
            (!queries.is_empty()).then(|| UsageSource { namespace: ir.key.namespace.clone(), store, queries })
        })
        .collect()
}

/// What was last written per ApiKey (`namespace/name`), to write only changes.
#[derive(Default)]
pub struct UsageWriter {
    written: HashMap<String, KeyUsage>,
}

impl UsageWriter {
    /// Reads every source and writes the usage of the keys whose count changed. Returns the
    /// problems met (a store that does not answer, a write refused), one line each.
    pub async fn refresh(&mut self, client: &Client, sources: &[UsageSource]) -> Vec<String> {
        let mut problems = Vec::new();
        for source in sources {
            let settings = match settings(client, source).await {
                Ok(settings) => settings,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            let counts = match tollbridge_local::counter_store::quota_counts(&settings, &source.queries).await
            {
                Ok(counts) => counts,
                Err(error) => {
                    problems.push(format!("cannot read usage from the counter store: {error}"));
                    continue;
                }
            };
            for (query, used) in source.queries.iter().zip(counts) {
                let usage = query.report(used);
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
        problems
    }
}

/// The store's settings, its password and CA read from the Gateway's namespace.
async fn settings(client: &Client, source: &UsageSource) -> Result<CounterStoreSettings, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &source.namespace);
    let read = |reference: Option<(String, String)>| {
        let secrets = secrets.clone();
        let namespace = source.namespace.clone();
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
    let password = read(source.store.password_secret.clone()).await?;
    let ca_pem = read(source.store.ca_secret.clone()).await?;
    let password = password
        .map(|bytes| String::from_utf8(bytes).map(|p| p.trim_end_matches(['\r', '\n']).to_owned()))
        .transpose()
        .map_err(|_| {
            format!("the counter store's password in namespace {} is not UTF-8", source.namespace)
        })?;
    Ok(CounterStoreSettings {
        url: source.store.url.clone(),
        password,
        ca_pem,
        timeout: Duration::from_millis(u64::from(source.store.timeout_ms)),
        failure_mode: FailureMode::Local,
        prefix: "tollbridge".to_owned(),
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
        observed_at: Time(jiff::Timestamp::now()),
    };
    let body = json!({
        "apiVersion": "tollbridge.dev/v1alpha1",
        "kind": "ApiKey",
        "status": { "usage": status },
    });
    api.patch_status(name, &PatchParams::apply(USAGE_MANAGER).force(), &Patch::Apply(&body)).await.map(|_| ())
}
