//! REST APIs (API Gateway v1): resources, methods with HTTP_PROXY integrations, deployments,
//! usage plans, API keys and their links. Read what a Gateway owns, and carry out changes.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_apigateway::types::{
    ApiKeySourceType, ApiStage, ConnectionType, EndpointConfiguration, EndpointType, IntegrationType, Op,
    PatchOperation, QuotaPeriodType, QuotaSettings, Resource, ThrottleSettings,
};
use tollbridge_provider::reconcile::ResourceKind;
use tollbridge_provider::{ProviderError, UsageRequest};

use crate::changes::{observe as record, Change, Kind, Observed, ResourceKey, Spec, Throttle};
use crate::client::Clients;
use crate::desired::{API_KEY, OWNER_TAG, REST_STAGE};
use crate::error::{classify, gone_ok, not_found};
use crate::pages::{self, REST_PAGE};
use crate::tags;

/// Tag naming the resource key of usage plans and API keys (the policy / key id).
pub const RESOURCE_TAG: &str = "tollbridge.dev/resource";

fn owned(map: Option<&HashMap<String, String>>, owner: &str) -> bool {
    map.and_then(|t| t.get(OWNER_TAG)).map(String::as_str) == Some(owner)
}

/// Requests counted against the usage-plan quota for each of `requests` (API Gateway counts
/// per day; the days from `first_day` to `last_day` are summed), `None` when the Gateway
/// `owner` has no usage plan for the policy or no API key for the ApiKey.
pub async fn key_usage(
    clients: &Clients,
    owner: &str,
    requests: &[UsageRequest],
) -> Result<Vec<Option<u64>>, ProviderError> {
    let v1 = &clients.v1;
    let plans = usage_plans(v1).await?;
    let keys = api_keys(v1).await?;
    let resource = |tags: Option<&HashMap<String, String>>| tags.and_then(|t| t.get(RESOURCE_TAG)).cloned();
    let plan_ids: HashMap<String, String> = plans
        .iter()
        .filter(|p| owned(p.tags(), owner))
        .filter_map(|p| Some((resource(p.tags())?, p.id()?.to_string())))
        .collect();
    // An API key's resource tag is `<ApiKey namespace/name> <key id>`.
    let key_ids: Vec<(String, String)> = keys
        .iter()
        .filter(|k| owned(k.tags(), owner))
        .filter_map(|k| Some((resource(k.tags())?, k.id()?.to_string())))
        .collect();
    // One GetUsage per usage plan (all its keys, paged), not one per key: a thousand keys must
    // not become a thousand calls a minute against the account's limits.
    let mut by_plan: HashMap<&str, HashMap<String, u64>> = HashMap::new();
    let mut out = Vec::with_capacity(requests.len());
    for request in requests {
        let prefix = format!("{} ", request.api_key);
        let key = key_ids.iter().rev().find(|(tag, _)| tag.starts_with(&prefix)).map(|(_, id)| id.as_str());
        let (Some(plan), Some(key)) = (plan_ids.get(&request.policy), key) else {
            out.push(None);
            continue;
        };
        if !by_plan.contains_key(plan.as_str()) {
            let used = plan_usage(clients, plan, &request.first_day, &request.last_day).await?;
            by_plan.insert(plan.as_str(), used);
        }
        out.push(Some(by_plan[plan.as_str()].get(key).copied().unwrap_or(0)));
    }
    Ok(out)
}

/// Requests used per API key id of usage plan `plan` from `first_day` to `last_day` (API
/// Gateway answers per day `[used, remaining]`; the days are summed).
async fn plan_usage(
    clients: &Clients,
    plan: &str,
    first_day: &str,
    last_day: &str,
) -> Result<HashMap<String, u64>, ProviderError> {
    let v1 = &clients.v1;
    let pages = pages::all("GetUsage", |token| async move {
        let page = v1
            .get_usage()
            .usage_plan_id(plan)
            .start_date(first_day)
            .end_date(last_day)
            .limit(REST_PAGE)
            .set_position(token)
            .send()
            .await
            .map_err(|e| classify("GetUsage", e))?;
        Ok((page.items.into_iter().flatten().collect::<Vec<_>>(), page.position))
    })
    .await?;
    let mut used = HashMap::new();
    for (key, days) in pages {
        let total: u64 = days.iter().filter_map(|day| day.first()).map(|&n| n.max(0).unsigned_abs()).sum();
        *used.entry(key).or_insert(0) += total;
    }
    Ok(used)
}

/// Every API key of the account and region (without values: they are not needed, and the list
/// holds other people's keys).
async fn api_keys(
    v1: &aws_sdk_apigateway::Client,
) -> Result<Vec<aws_sdk_apigateway::types::ApiKey>, ProviderError> {
    pages::all("GetApiKeys", |token| async move {
        let page = v1
            .get_api_keys()
            .limit(REST_PAGE)
            .set_position(token)
            .send()
            .await
            .map_err(|e| classify("GetApiKeys", e))?;
        Ok((page.items.unwrap_or_default(), page.position))
    })
    .await
}

/// Every usage plan of the account and region.
async fn usage_plans(
    v1: &aws_sdk_apigateway::Client,
) -> Result<Vec<aws_sdk_apigateway::types::UsagePlan>, ProviderError> {
    pages::all("GetUsagePlans", |token| async move {
        let page = v1
            .get_usage_plans()
            .limit(REST_PAGE)
            .set_position(token)
            .send()
            .await
            .map_err(|e| classify("GetUsagePlans", e))?;
        Ok((page.items.unwrap_or_default(), page.position))
    })
    .await
}

/// Everything the Gateway `owner` has on REST APIs.
pub async fn observe(clients: &Clients, owner: &str) -> Result<Observed, ProviderError> {
    let v1 = &clients.v1;
    let mut observed = Observed::new();
    let apis = pages::all("GetRestApis", |token| async move {
        let page = v1
            .get_rest_apis()
            .limit(REST_PAGE)
            .set_position(token)
            .send()
            .await
            .map_err(|e| classify("GetRestApis", e))?;
        Ok((page.items.unwrap_or_default(), page.position))
    })
    .await?;
    let mut mine: Vec<_> = apis.into_iter().filter(|a| owned(a.tags(), owner)).collect();
    mine.sort_by_key(|a| (a.created_date().map(|d| d.secs()), a.id().map(str::to_string)));
    let mut mine = mine.into_iter();
    if let Some(api) = mine.next() {
        let id = api.id().unwrap_or_default().to_string();
        let spec = Spec::Api { name: api.name().unwrap_or_default().into(), tags: tags(api.tags()) };
        observed.insert((Kind::RestApi, API_KEY.into()), (id.clone(), spec));
        observe_api(clients, &id, &mut observed).await?;
    }
    for extra in mine {
        let id = extra.id().unwrap_or_default().to_string();
        observed.insert(
            (Kind::RestApi, format!("duplicate {id}")),
            (id, Spec::Api { name: String::new(), tags: BTreeMap::new() }),
        );
    }

    let keys = api_keys(v1).await?;
    let mut key_by_id = HashMap::new();
    for k in keys.iter().filter(|k| owned(k.tags(), owner)) {
        let id = k.id().unwrap_or_default().to_string();
        let key =
            k.tags().and_then(|t| t.get(RESOURCE_TAG)).cloned().unwrap_or_else(|| format!("untracked {id}"));
        key_by_id.insert(id.clone(), key.clone());
        let spec = Spec::ApiKey {
            name: k.name().unwrap_or_default().into(),
            value: None,
            enabled: k.enabled(),
            tags: tags(k.tags()),
        };
        record(&mut observed, (Kind::ApiKey, key), id, spec);
    }
    let plans = usage_plans(v1).await?;
    for p in plans.iter().filter(|p| owned(p.tags(), owner)) {
        let id = p.id().unwrap_or_default().to_string();
        let plan =
            p.tags().and_then(|t| t.get(RESOURCE_TAG)).cloned().unwrap_or_else(|| format!("untracked {id}"));
        let spec = Spec::UsagePlan {
            name: p.name().unwrap_or_default().into(),
            throttle: p.throttle().map(|t| Throttle { rate: t.rate_limit(), burst: t.burst_limit() }),
            quota: p
                .quota()
                .map(|q| (q.limit(), q.period().map(|p| p.as_str().to_string()).unwrap_or_default())),
            tags: tags(p.tags()),
        };
        record(&mut observed, (Kind::UsagePlan, plan.clone()), id.clone(), spec);
        let plan_id = id.as_str();
        let links = pages::all("GetUsagePlanKeys", |token| async move {
            let page = v1
                .get_usage_plan_keys()
                .usage_plan_id(plan_id)
                .limit(REST_PAGE)
                .set_position(token)
                .send()
                .await
                .map_err(|e| classify("GetUsagePlanKeys", e))?;
            Ok((page.items.unwrap_or_default(), page.position))
        })
        .await?;
        for link in &links {
            let key_id = link.id().unwrap_or_default().to_string();
            let key = key_by_id.get(&key_id).cloned().unwrap_or_else(|| format!("foreign {key_id}"));
            let spec = Spec::UsagePlanKey { plan: plan.clone(), key: key.clone() };
            record(
                &mut observed,
                (Kind::UsagePlanKey, format!("{plan} {key}")),
                format!("{id} {key_id}"),
                spec,
            );
        }
    }
    let domains = pages::all("GetDomainNames", |token| async move {
        let page = v1
            .get_domain_names()
            .limit(REST_PAGE)
            .set_position(token)
            .send()
            .await
            .map_err(|e| classify("GetDomainNames", e))?;
        Ok((page.items.unwrap_or_default(), page.position))
    })
    .await?;
    for d in domains.iter().filter(|d| owned(d.tags(), owner)) {
        let name = d.domain_name().unwrap_or_default().to_string();
        let spec = Spec::DomainName {
            certificate_arn: d.regional_certificate_arn().unwrap_or_default().into(),
            tags: tags(d.tags()),
        };
        observed.insert((Kind::RestDomainName, name.clone()), (name.clone(), spec));
        let domain = name.as_str();
        let mappings = pages::all("GetBasePathMappings", |token| async move {
            let page = v1
                .get_base_path_mappings()
                .domain_name(domain)
                .limit(REST_PAGE)
                .set_position(token)
                .send()
                .await
                .map_err(|e| classify("GetBasePathMappings", e))?;
            Ok((page.items.unwrap_or_default(), page.position))
        })
        .await?;
        if let Some(m) = mappings.first() {
            let spec = Spec::ApiMapping { stage: m.stage().unwrap_or_default().into() };
            observed.insert(
                (Kind::BasePathMapping, name.clone()),
                (m.base_path().unwrap_or("(none)").into(), spec),
            );
        }
    }
    Ok(observed)
}

/// The resources of the REST API `api_id`, with their methods when `methods`.
async fn resources(clients: &Clients, api_id: &str, methods: bool) -> Result<Vec<Resource>, ProviderError> {
    let v1 = &clients.v1;
    pages::all("GetResources", |token| async move {
        let page = v1
            .get_resources()
            .rest_api_id(api_id)
            .limit(REST_PAGE)
            .set_embed(methods.then(|| vec!["methods".to_string()]))
            .set_position(token)
            .send()
            .await
            .map_err(|e| classify("GetResources", e))?;
        Ok((page.items.unwrap_or_default(), page.position))
    })
    .await
}

async fn observe_api(clients: &Clients, api_id: &str, observed: &mut Observed) -> Result<(), ProviderError> {
    for r in &resources(clients, api_id, true).await? {
        let path = r.path().unwrap_or_default().to_string();
        let id = r.id().unwrap_or_default().to_string();
        record(observed, (Kind::Resource, path.clone()), id.clone(), Spec::Resource);
        for (verb, method) in r.resource_methods().into_iter().flatten() {
            let integration = method.method_integration();
            let spec = Spec::Method {
                api_key_required: method.api_key_required().unwrap_or(false),
                uri: integration.and_then(|i| i.uri()).unwrap_or_default().into(),
                vpc_link: integration
                    .filter(|i| i.connection_type() == Some(&ConnectionType::VpcLink))
                    .map(|i| i.connection_id().unwrap_or_default().into()),
                timeout_ms: integration.map_or(29_000, |i| i.timeout_in_millis()),
                parameters: tags(integration.and_then(|i| i.request_parameters())),
            };
            record(observed, (Kind::Method, format!("{verb} {path}")), format!("{id} {verb}"), spec);
        }
    }
    let stages =
        clients.v1.get_stages().rest_api_id(api_id).send().await.map_err(|e| classify("GetStages", e))?;
    if let Some(stage) = stages.item().iter().find(|s| s.stage_name() == Some(REST_STAGE)) {
        let deployment = stage.deployment_id().unwrap_or_default().to_string();
        let digest =
            match clients.v1.get_deployment().rest_api_id(api_id).deployment_id(&deployment).send().await {
                Ok(d) => d.description().unwrap_or_default().to_string(),
                Err(e) => return Err(classify("GetDeployment", e)),
            };
        observed.insert(
            (Kind::Deployment, REST_STAGE.into()),
            (deployment, Spec::Deployment { stage: REST_STAGE.into(), digest }),
        );
    }
    Ok(())
}

/// Carries out one change; `ids` learns the ids of created resources.
pub async fn execute(
    clients: &Clients,
    change: &Change,
    ids: &mut HashMap<ResourceKey, String>,
) -> Result<(), ProviderError> {
    let api = || ids.get(&(Kind::RestApi, API_KEY.to_string())).cloned().unwrap_or_default();
    let v1 = &clients.v1;
    match change {
        Change::Create { key, desired: Spec::Api { name, tags } } => {
            let out = v1
                .create_rest_api()
                .name(name)
                .api_key_source(ApiKeySourceType::Header)
                .endpoint_configuration(
                    EndpointConfiguration::builder().types(EndpointType::Regional).build(),
                )
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("CreateRestApi", e))?;
            let id = out.id().unwrap_or_default().to_string();
            let created = resources(clients, &id, false).await?;
            if let Some(root) = created.iter().find(|r| r.path() == Some("/")) {
                ids.insert((Kind::Resource, "/".into()), root.id().unwrap_or_default().into());
            }
            ids.insert(key.clone(), id);
        }
        Change::Update { handle: id, desired: Spec::Api { name, tags }, .. } => {
            v1.update_rest_api()
                .rest_api_id(id)
                .patch_operations(replace("/name", name))
                .send()
                .await
                .map_err(|e| classify("UpdateRestApi", e))?;
            let arn = format!("arn:aws:apigateway:{}::/restapis/{id}", clients.region);
            v1.tag_resource()
                .resource_arn(arn)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("TagResource", e))?;
        }
        Change::Create { key, desired: Spec::Resource } if key.1 == "/" => {} // every API has its root
        Change::Create { key, desired: Spec::Resource } => {
            let (parent, part) = key.1.rsplit_once('/').unwrap_or(("", &key.1));
            let parent = if parent.is_empty() { "/" } else { parent };
            let parent_id = ids
                .get(&(Kind::Resource, parent.to_string()))
                .cloned()
                .ok_or_else(|| ProviderError::Other(format!("resource {parent} has no id")))?;
            let out = v1
                .create_resource()
                .rest_api_id(api())
                .parent_id(parent_id)
                .path_part(part)
                .send()
                .await
                .map_err(|e| classify("CreateResource", e))?;
            ids.insert(key.clone(), out.id().unwrap_or_default().into());
        }
        Change::Create { key, desired: spec } | Change::Update { key, desired: spec, .. }
            if key.0 == Kind::Method =>
        {
            put_method(clients, &api(), key, spec, matches!(change, Change::Update { .. }), ids).await?;
        }
        Change::Create { desired: Spec::Deployment { stage, digest }, .. } => {
            v1.create_deployment()
                .rest_api_id(api())
                .stage_name(stage)
                .description(digest)
                .send()
                .await
                .map_err(|e| classify("CreateDeployment", e))?;
        }
        Change::Create { key, desired: Spec::UsagePlan { name, throttle, quota, tags } } => {
            let mut tags = tags.clone();
            tags.insert(RESOURCE_TAG.into(), key.1.clone());
            let out = v1
                .create_usage_plan()
                .name(name)
                .api_stages(ApiStage::builder().api_id(api()).stage(REST_STAGE).build())
                .set_throttle(
                    throttle
                        .map(|t| ThrottleSettings::builder().rate_limit(t.rate).burst_limit(t.burst).build()),
                )
                .set_quota(quota.as_ref().map(|(limit, period)| {
                    QuotaSettings::builder()
                        .limit(*limit)
                        .period(QuotaPeriodType::from(period.as_str()))
                        .build()
                }))
                .set_tags(Some(tags.into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("CreateUsagePlan", e))?;
            ids.insert(key.clone(), out.id().unwrap_or_default().into());
        }
        Change::Update { handle: id, desired: Spec::UsagePlan { name, throttle, quota, .. }, .. } => {
            let mut ops = vec![replace("/name", name)];
            if let Some(t) = throttle {
                ops.push(replace("/throttle/rateLimit", &t.rate.to_string()));
                ops.push(replace("/throttle/burstLimit", &t.burst.to_string()));
            }
            if let Some((limit, period)) = quota {
                ops.push(replace("/quota/limit", &limit.to_string()));
                ops.push(replace("/quota/period", period));
            }
            v1.update_usage_plan()
                .usage_plan_id(id)
                .set_patch_operations(Some(ops))
                .send()
                .await
                .map_err(|e| classify("UpdateUsagePlan", e))?;
        }
        Change::Create { key, desired: Spec::ApiKey { name, value, enabled, tags } } => {
            let value = value.as_ref().ok_or_else(|| {
                ProviderError::Other(format!("API key {} has no value to create it with", key.1))
            })?;
            let mut tags = tags.clone();
            tags.insert(RESOURCE_TAG.into(), key.1.clone());
            let out = v1
                .create_api_key()
                .name(name)
                .value(value.expose())
                .enabled(*enabled)
                .set_tags(Some(tags.into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("CreateApiKey", e))?;
            ids.insert(key.clone(), out.id().unwrap_or_default().into());
        }
        Change::Update { handle: id, desired: Spec::ApiKey { name, enabled, .. }, .. } => {
            v1.update_api_key()
                .api_key(id)
                .patch_operations(replace("/name", name))
                .patch_operations(replace("/enabled", &enabled.to_string()))
                .send()
                .await
                .map_err(|e| classify("UpdateApiKey", e))?;
        }
        Change::Create { key, desired: Spec::UsagePlanKey { plan, key: api_key } } => {
            let plan_id = ids.get(&(Kind::UsagePlan, plan.clone())).cloned().unwrap_or_default();
            let key_id = ids.get(&(Kind::ApiKey, api_key.clone())).cloned().unwrap_or_default();
            v1.create_usage_plan_key()
                .usage_plan_id(&plan_id)
                .key_id(&key_id)
                .key_type("API_KEY")
                .send()
                .await
                .map_err(|e| classify("CreateUsagePlanKey", e))?;
            ids.insert(key.clone(), format!("{plan_id} {key_id}"));
        }
        Change::Create { key, desired: Spec::DomainName { certificate_arn, tags } }
            if key.0 == Kind::RestDomainName =>
        {
            v1.create_domain_name()
                .domain_name(&key.1)
                .regional_certificate_arn(certificate_arn)
                .endpoint_configuration(
                    EndpointConfiguration::builder().types(EndpointType::Regional).build(),
                )
                .security_policy(aws_sdk_apigateway::types::SecurityPolicy::Tls12)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("CreateDomainName", e))?;
            ids.insert(key.clone(), key.1.clone());
        }
        Change::Update { key, desired: Spec::DomainName { certificate_arn, .. }, .. }
            if key.0 == Kind::RestDomainName =>
        {
            v1.update_domain_name()
                .domain_name(&key.1)
                .patch_operations(replace("/regionalCertificateArn", certificate_arn))
                .send()
                .await
                .map_err(|e| classify("UpdateDomainName", e))?;
        }
        Change::Create { key, desired: Spec::ApiMapping { stage } } if key.0 == Kind::BasePathMapping => {
            let out = v1
                .create_base_path_mapping()
                .domain_name(&key.1)
                .rest_api_id(api())
                .stage(stage)
                .send()
                .await
                .map_err(|e| classify("CreateBasePathMapping", e))?;
            ids.insert(key.clone(), out.base_path().unwrap_or("(none)").into());
        }
        Change::Update { key, handle: id, desired: Spec::ApiMapping { stage } }
            if key.0 == Kind::BasePathMapping =>
        {
            v1.update_base_path_mapping()
                .domain_name(&key.1)
                .base_path(id)
                .patch_operations(replace("/stage", stage))
                .send()
                .await
                .map_err(|e| classify("UpdateBasePathMapping", e))?;
        }
        Change::Delete { key, handle: id } => delete(clients, key, id, &api()).await?,
        other => return Err(ProviderError::Other(format!("not a REST API change: {other}"))),
    }
    Ok(())
}

fn replace(path: &str, value: &str) -> PatchOperation {
    PatchOperation::builder().op(Op::Replace).path(path).value(value).build()
}

/// Creates a method with its integration; an update replaces both.
async fn put_method(
    clients: &Clients,
    api: &str,
    key: &ResourceKey,
    spec: &Spec,
    replacing: bool,
    ids: &HashMap<ResourceKey, String>,
) -> Result<(), ProviderError> {
    let Spec::Method { api_key_required, uri, vpc_link, timeout_ms, parameters } = spec else {
        return Err(ProviderError::Other(format!("method {} without a method spec", key.1)));
    };
    let (verb, path) = key.1.split_once(' ').unwrap_or(("ANY", &key.1));
    let resource = ids
        .get(&(Kind::Resource, path.to_string()))
        .cloned()
        .ok_or_else(|| ProviderError::Other(format!("resource {path} has no id")))?;
    let v1 = &clients.v1;
    if replacing {
        let sent = v1.delete_method().rest_api_id(api).resource_id(&resource).http_method(verb).send().await;
        gone_ok("DeleteMethod", sent)?;
    }
    let greedy = path.ends_with("{proxy+}");
    v1.put_method()
        .rest_api_id(api)
        .resource_id(&resource)
        .http_method(verb)
        .authorization_type("NONE")
        .api_key_required(*api_key_required)
        .set_request_parameters(
            greedy.then(|| HashMap::from([("method.request.path.proxy".to_string(), true)])),
        )
        .send()
        .await
        .map_err(|e| classify("PutMethod", e))?;
    v1.put_integration()
        .rest_api_id(api)
        .resource_id(&resource)
        .http_method(verb)
        .r#type(IntegrationType::HttpProxy)
        .integration_http_method("ANY")
        .uri(uri)
        .timeout_in_millis(*timeout_ms)
        .set_request_parameters((!parameters.is_empty()).then(|| parameters.clone().into_iter().collect()))
        .connection_type(if vpc_link.is_some() { ConnectionType::VpcLink } else { ConnectionType::Internet })
        .set_connection_id(vpc_link.clone())
        .send()
        .await
        .map_err(|e| classify("PutIntegration", e))?;
    Ok(())
}

async fn delete(clients: &Clients, key: &ResourceKey, id: &str, api: &str) -> Result<(), ProviderError> {
    let v1 = &clients.v1;
    match key.0 {
        Kind::RestApi => gone_ok("DeleteRestApi", v1.delete_rest_api().rest_api_id(id).send().await),
        Kind::Resource => {
            gone_ok("DeleteResource", v1.delete_resource().rest_api_id(api).resource_id(id).send().await)
        }
        Kind::Method => {
            let (resource, verb) = id.split_once(' ').unwrap_or((id, "ANY"));
            let sent =
                v1.delete_method().rest_api_id(api).resource_id(resource).http_method(verb).send().await;
            gone_ok("DeleteMethod", sent)
        }
        // Deployments go with their API; an old one left behind serves nothing new.
        Kind::Deployment => Ok(()),
        Kind::UsagePlan => {
            // A plan still attached to a stage cannot be deleted.
            let plan = match v1.get_usage_plan().usage_plan_id(id).send().await {
                Ok(plan) => plan,
                Err(e) if not_found(&e) => return Ok(()),
                Err(e) => return Err(classify("GetUsagePlan", e)),
            };
            for stage in plan.api_stages() {
                let value =
                    format!("{}:{}", stage.api_id().unwrap_or_default(), stage.stage().unwrap_or_default());
                let op = PatchOperation::builder().op(Op::Remove).path("/apiStages").value(value).build();
                gone_ok(
                    "UpdateUsagePlan",
                    v1.update_usage_plan().usage_plan_id(id).patch_operations(op).send().await,
                )?;
            }
            gone_ok("DeleteUsagePlan", v1.delete_usage_plan().usage_plan_id(id).send().await)
        }
        Kind::ApiKey => gone_ok("DeleteApiKey", v1.delete_api_key().api_key(id).send().await),
        Kind::UsagePlanKey => {
            let (plan, key_id) = id.split_once(' ').unwrap_or((id, ""));
            let sent = v1.delete_usage_plan_key().usage_plan_id(plan).key_id(key_id).send().await;
            gone_ok("DeleteUsagePlanKey", sent)
        }
        Kind::RestDomainName => {
            gone_ok("DeleteDomainName", v1.delete_domain_name().domain_name(id).send().await)
        }
        Kind::BasePathMapping => {
            let sent = v1.delete_base_path_mapping().domain_name(&key.1).base_path(id).send().await;
            gone_ok("DeleteBasePathMapping", sent)
        }
        other => Err(ProviderError::Other(format!("not a REST API resource: {}", other.name()))),
    }
}
