//! HTTP APIs (API Gateway v2): read what a Gateway owns, and carry out changes.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_apigatewayv2::types::{
    AuthorizationType, AuthorizerType, ConnectionType, DomainNameConfiguration, EndpointType,
    IntegrationType, JwtConfiguration, ProtocolType, RouteSettings, SecurityPolicy,
};
use tollbridge_provider::reconcile::ResourceKind;
use tollbridge_provider::ProviderError;

use crate::changes::{observe as record, Change, Kind, Observed, ResourceKey, Spec, Throttle};
use crate::client::Clients;
use crate::desired::{API_KEY, OWNER_TAG};
use crate::error::{classify, gone_ok};
use crate::pages::{self, HTTP_PAGE};
use crate::tags;

/// Marks integrations as ours and names them: `tollbridge:<key>`.
const INTEGRATION_PREFIX: &str = "tollbridge:";

/// Everything the Gateway `owner` has: its API (the oldest, when a crash left more than one:
/// the others are observed as extra APIs to delete), the API's integrations, JWT authorizers,
/// routes and stage,
/// and its tagged domain names with their mappings.
pub async fn observe(clients: &Clients, owner: &str) -> Result<Observed, ProviderError> {
    let mut observed = Observed::new();
    let v2 = &clients.v2;
    let listed = pages::all("GetApis", |token| async move {
        let page = v2
            .get_apis()
            .max_results(HTTP_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("GetApis", e))?;
        Ok((page.items.unwrap_or_default(), page.next_token))
    })
    .await?;
    let mut apis: Vec<_> = listed
        .into_iter()
        .filter(|api| api.tags().and_then(|t| t.get(OWNER_TAG)).map(String::as_str) == Some(owner))
        .collect();
    apis.sort_by_key(|a| (a.created_date().map(|d| d.secs()), a.api_id().map(str::to_string)));
    let mut apis = apis.into_iter();
    if let Some(api) = apis.next() {
        let api_id = api.api_id().unwrap_or_default().to_string();
        observed.insert(
            (Kind::Api, API_KEY.into()),
            (
                api_id.clone(),
                Spec::Api { name: api.name().unwrap_or_default().into(), tags: tags(api.tags()) },
            ),
        );
        observe_api(clients, &api_id, &mut observed).await?;
    }
    for extra in apis {
        let id = extra.api_id().unwrap_or_default().to_string();
        observed.insert(
            (Kind::Api, format!("duplicate {id}")),
            (id, Spec::Api { name: String::new(), tags: BTreeMap::new() }),
        );
    }
    observe_domains(clients, owner, &mut observed).await?;
    Ok(observed)
}

async fn observe_api(clients: &Clients, api_id: &str, observed: &mut Observed) -> Result<(), ProviderError> {
    let v2 = &clients.v2;
    let integrations = pages::all("GetIntegrations", |token| async move {
        let page = v2
            .get_integrations()
            .api_id(api_id)
            .max_results(HTTP_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("GetIntegrations", e))?;
        Ok((page.items.unwrap_or_default(), page.next_token))
    })
    .await?;
    let mut integration_keys = HashMap::new();
    for i in &integrations {
        let id = i.integration_id().unwrap_or_default().to_string();
        let key = match i.description().and_then(|d| d.strip_prefix(INTEGRATION_PREFIX)) {
            // A second integration with the same key (a retried create) is a duplicate: routes
            // pointing at it are moved to the first, then it is deleted.
            Some(key) if observed.contains_key(&(Kind::Integration, key.to_string())) => {
                format!("duplicate {id}")
            }
            Some(key) => key.to_string(),
            None => format!("unnamed {id}"),
        };
        integration_keys.insert(id.clone(), key.clone());
        let spec = Spec::Integration {
            uri: i.integration_uri().unwrap_or_default().into(),
            vpc_link: (i.connection_type() == Some(&ConnectionType::VpcLink))
                .then(|| i.connection_id().unwrap_or_default().into()),
            timeout_ms: i.timeout_in_millis().unwrap_or(30_000),
            parameters: tags(i.request_parameters()),
        };
        record(observed, (Kind::Integration, key), id, spec);
    }
    let authorizers = pages::all("GetAuthorizers", |token| async move {
        let page = v2
            .get_authorizers()
            .api_id(api_id)
            .max_results(HTTP_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("GetAuthorizers", e))?;
        Ok((page.items.unwrap_or_default(), page.next_token))
    })
    .await?;
    let mut authorizer_keys = HashMap::new();
    for a in &authorizers {
        let id = a.authorizer_id().unwrap_or_default().to_string();
        let key = a.name().unwrap_or_default().to_string();
        authorizer_keys.insert(id.clone(), key.clone());
        let jwt = a.jwt_configuration();
        let mut audiences: Vec<String> = jwt.map(|j| j.audience().to_vec()).unwrap_or_default();
        audiences.sort();
        let spec =
            Spec::Authorizer { issuer: jwt.and_then(|j| j.issuer()).unwrap_or_default().into(), audiences };
        record(observed, (Kind::Authorizer, key), id, spec);
    }
    let routes = pages::all("GetRoutes", |token| async move {
        let page = v2
            .get_routes()
            .api_id(api_id)
            .max_results(HTTP_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("GetRoutes", e))?;
        Ok((page.items.unwrap_or_default(), page.next_token))
    })
    .await?;
    for r in &routes {
        let target = r.target().and_then(|t| t.strip_prefix("integrations/")).unwrap_or_default();
        let integration =
            integration_keys.get(target).cloned().unwrap_or_else(|| format!("unknown {target}"));
        let id = r.route_id().unwrap_or_default().to_string();
        let authorizer = match r.authorization_type() {
            Some(AuthorizationType::Jwt) => Some(
                r.authorizer_id()
                    .map(|a| authorizer_keys.get(a).cloned().unwrap_or_else(|| format!("unknown {a}")))
                    .unwrap_or_default(),
            ),
            // NONE, or a kind tollbridge does not make (compared as different from ours).
            Some(AuthorizationType::None) | None => None,
            Some(other) => Some(format!("{} authorizer", other.as_str())),
        };
        record(
            observed,
            (Kind::Route, r.route_key().unwrap_or_default().into()),
            id,
            Spec::Route { integration, authorizer },
        );
    }
    let stages = pages::all("GetStages", |token| async move {
        let page = v2
            .get_stages()
            .api_id(api_id)
            .max_results(HTTP_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("GetStages", e))?;
        Ok((page.items.unwrap_or_default(), page.next_token))
    })
    .await?;
    for s in &stages {
        let name = s.stage_name().unwrap_or_default().to_string();
        let throttles = s
            .route_settings()
            .map(|settings| {
                settings
                    .iter()
                    .filter_map(|(route, rs)| {
                        let rate = rs.throttling_rate_limit()?;
                        Some((
                            route.clone(),
                            Throttle { rate, burst: rs.throttling_burst_limit().unwrap_or(0) },
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        observed.insert((Kind::Stage, name.clone()), (name, Spec::Stage { throttles, tags: tags(s.tags()) }));
    }
    Ok(())
}

async fn observe_domains(
    clients: &Clients,
    owner: &str,
    observed: &mut Observed,
) -> Result<(), ProviderError> {
    let v2 = &clients.v2;
    let domains = pages::all("GetDomainNames", |token| async move {
        let page = v2
            .get_domain_names()
            .max_results(HTTP_PAGE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("GetDomainNames", e))?;
        Ok((page.items.unwrap_or_default(), page.next_token))
    })
    .await?;
    for d in &domains {
        if d.tags().and_then(|t| t.get(OWNER_TAG)).map(String::as_str) != Some(owner) {
            continue;
        }
        let name = d.domain_name().unwrap_or_default().to_string();
        let certificate_arn = d
            .domain_name_configurations()
            .first()
            .and_then(|c| c.certificate_arn())
            .unwrap_or_default()
            .to_string();
        observed.insert(
            (Kind::DomainName, name.clone()),
            (name.clone(), Spec::DomainName { certificate_arn, tags: tags(d.tags()) }),
        );
        let domain = name.as_str();
        let mappings = pages::all("GetApiMappings", |token| async move {
            let page = v2
                .get_api_mappings()
                .domain_name(domain)
                .max_results(HTTP_PAGE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify("GetApiMappings", e))?;
            Ok((page.items.unwrap_or_default(), page.next_token))
        })
        .await?;
        if let Some(m) = mappings.first() {
            let spec = Spec::ApiMapping { stage: m.stage().unwrap_or_default().into() };
            observed.insert(
                (Kind::ApiMapping, name.clone()),
                (m.api_mapping_id().unwrap_or_default().into(), spec),
            );
        }
    }
    Ok(())
}

/// Carries out one change. `ids` holds the provider id of every resource known so far and
/// learns those of created ones.
pub async fn execute(
    clients: &Clients,
    change: &Change,
    ids: &mut HashMap<ResourceKey, String>,
) -> Result<(), ProviderError> {
    let api = || ids.get(&(Kind::Api, API_KEY.to_string())).cloned().unwrap_or_default();
    let v2 = &clients.v2;
    match change {
        Change::Create { key, desired: Spec::Api { name, tags } } => {
            let out = v2
                .create_api()
                .name(name)
                .protocol_type(ProtocolType::Http)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("CreateApi", e))?;
            ids.insert(key.clone(), out.api_id().unwrap_or_default().into());
        }
        Change::Update { handle: id, desired: Spec::Api { name, tags }, .. } => {
            v2.update_api().api_id(id).name(name).send().await.map_err(|e| classify("UpdateApi", e))?;
            tag(clients, &format!("arn:aws:apigateway:{}::/apis/{id}", clients.region), tags).await?;
        }
        Change::Create { key, desired: Spec::Integration { uri, vpc_link, timeout_ms, parameters } } => {
            let out = v2
                .create_integration()
                .api_id(api())
                .integration_type(IntegrationType::HttpProxy)
                .integration_method("ANY")
                .integration_uri(uri)
                .payload_format_version("1.0")
                .timeout_in_millis(*timeout_ms)
                .description(format!("{INTEGRATION_PREFIX}{}", key.1))
                .set_request_parameters(
                    (!parameters.is_empty()).then(|| parameters.clone().into_iter().collect()),
                )
                .connection_type(if vpc_link.is_some() {
                    ConnectionType::VpcLink
                } else {
                    ConnectionType::Internet
                })
                .set_connection_id(vpc_link.clone())
                .send()
                .await
                .map_err(|e| classify("CreateIntegration", e))?;
            ids.insert(key.clone(), out.integration_id().unwrap_or_default().into());
        }
        Change::Update {
            key,
            handle: id,
            desired: Spec::Integration { uri, vpc_link, timeout_ms, parameters },
        } => {
            v2.update_integration()
                .api_id(api())
                .integration_id(id)
                .integration_uri(uri)
                .timeout_in_millis(*timeout_ms)
                .description(format!("{INTEGRATION_PREFIX}{}", key.1))
                .set_request_parameters(Some(parameters.clone().into_iter().collect()))
                .connection_type(if vpc_link.is_some() {
                    ConnectionType::VpcLink
                } else {
                    ConnectionType::Internet
                })
                .set_connection_id(vpc_link.clone())
                .send()
                .await
                .map_err(|e| classify("UpdateIntegration", e))?;
        }
        Change::Create { key, desired: Spec::Authorizer { issuer, audiences } } => {
            let out = v2
                .create_authorizer()
                .api_id(api())
                .name(&key.1)
                .authorizer_type(AuthorizerType::Jwt)
                .identity_source("$request.header.Authorization")
                .jwt_configuration(jwt_configuration(issuer, audiences))
                .send()
                .await
                .map_err(|e| classify("CreateAuthorizer", e))?;
            ids.insert(key.clone(), out.authorizer_id().unwrap_or_default().into());
        }
        Change::Update { key, handle: id, desired: Spec::Authorizer { issuer, audiences } } => {
            v2.update_authorizer()
                .api_id(api())
                .authorizer_id(id)
                .name(&key.1)
                .authorizer_type(AuthorizerType::Jwt)
                .identity_source("$request.header.Authorization")
                .jwt_configuration(jwt_configuration(issuer, audiences))
                .send()
                .await
                .map_err(|e| classify("UpdateAuthorizer", e))?;
        }
        Change::Create { key, desired: Spec::Route { integration, authorizer } } => {
            let target = integration_target(ids, integration)?;
            let (kind, authorizer) = authorization(ids, authorizer.as_deref())?;
            let out = v2
                .create_route()
                .api_id(api())
                .route_key(&key.1)
                .target(target)
                .authorization_type(kind)
                .set_authorizer_id(authorizer)
                .send()
                .await
                .map_err(|e| classify("CreateRoute", e))?;
            ids.insert(key.clone(), out.route_id().unwrap_or_default().into());
        }
        Change::Update { handle: id, desired: Spec::Route { integration, authorizer }, .. } => {
            let target = integration_target(ids, integration)?;
            let (kind, authorizer) = authorization(ids, authorizer.as_deref())?;
            v2.update_route()
                .api_id(api())
                .route_id(id)
                .target(target)
                .authorization_type(kind)
                .set_authorizer_id(authorizer)
                .send()
                .await
                .map_err(|e| classify("UpdateRoute", e))?;
        }
        Change::Create { key, desired: Spec::Stage { throttles, tags } } => {
            v2.create_stage()
                .api_id(api())
                .stage_name(&key.1)
                .auto_deploy(true)
                .set_route_settings(Some(route_settings(throttles)))
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("CreateStage", e))?;
            ids.insert(key.clone(), key.1.clone());
        }
        Change::Update { key, desired: Spec::Stage { throttles, .. }, .. } => {
            // Route settings of routes no longer throttled are removed one by one.
            let api_id = api();
            v2.update_stage()
                .api_id(&api_id)
                .stage_name(&key.1)
                .auto_deploy(true)
                .set_route_settings(Some(route_settings(throttles)))
                .send()
                .await
                .map_err(|e| classify("UpdateStage", e))?;
        }
        Change::Create { key, desired: Spec::DomainName { certificate_arn, tags } } => {
            let configuration = DomainNameConfiguration::builder()
                .certificate_arn(certificate_arn)
                .endpoint_type(EndpointType::Regional)
                .security_policy(SecurityPolicy::Tls12)
                .build();
            v2.create_domain_name()
                .domain_name(&key.1)
                .domain_name_configurations(configuration)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(|e| classify("CreateDomainName", e))?;
            ids.insert(key.clone(), key.1.clone());
        }
        Change::Update { key, desired: Spec::DomainName { certificate_arn, .. }, .. } => {
            let configuration = DomainNameConfiguration::builder()
                .certificate_arn(certificate_arn)
                .endpoint_type(EndpointType::Regional)
                .security_policy(SecurityPolicy::Tls12)
                .build();
            v2.update_domain_name()
                .domain_name(&key.1)
                .domain_name_configurations(configuration)
                .send()
                .await
                .map_err(|e| classify("UpdateDomainName", e))?;
        }
        Change::Create { key, desired: Spec::ApiMapping { stage } } => {
            let out = v2
                .create_api_mapping()
                .domain_name(&key.1)
                .api_id(api())
                .stage(stage)
                .send()
                .await
                .map_err(|e| classify("CreateApiMapping", e))?;
            ids.insert(key.clone(), out.api_mapping_id().unwrap_or_default().into());
        }
        Change::Update { key, handle: id, desired: Spec::ApiMapping { stage } } => {
            v2.update_api_mapping()
                .domain_name(&key.1)
                .api_mapping_id(id)
                .api_id(api())
                .stage(stage)
                .send()
                .await
                .map_err(|e| classify("UpdateApiMapping", e))?;
        }
        Change::Delete { key, handle: id } => delete(clients, key, id, &api()).await?,
        other => return Err(ProviderError::Other(format!("not an HTTP API change: {other}"))),
    }
    Ok(())
}

fn integration_target(
    ids: &HashMap<ResourceKey, String>,
    integration: &str,
) -> Result<String, ProviderError> {
    ids.get(&(Kind::Integration, integration.to_string()))
        .map(|id| format!("integrations/{id}"))
        .ok_or_else(|| ProviderError::Other(format!("integration {integration} has no id")))
}

/// How a route is authorised: by the JWT authorizer of key `authorizer` (by its id), or not.
fn authorization(
    ids: &HashMap<ResourceKey, String>,
    authorizer: Option<&str>,
) -> Result<(AuthorizationType, Option<String>), ProviderError> {
    let Some(key) = authorizer else { return Ok((AuthorizationType::None, None)) };
    let id = ids
        .get(&(Kind::Authorizer, key.to_string()))
        .ok_or_else(|| ProviderError::Other(format!("authorizer {key} has no id")))?;
    Ok((AuthorizationType::Jwt, Some(id.clone())))
}

fn jwt_configuration(issuer: &str, audiences: &[String]) -> JwtConfiguration {
    JwtConfiguration::builder().issuer(issuer).set_audience(Some(audiences.to_vec())).build()
}

fn route_settings(throttles: &BTreeMap<String, Throttle>) -> HashMap<String, RouteSettings> {
    throttles
        .iter()
        .map(|(route, t)| {
            let settings = RouteSettings::builder()
                .throttling_rate_limit(t.rate)
                .throttling_burst_limit(t.burst)
                .build();
            (route.clone(), settings)
        })
        .collect()
}

async fn tag(clients: &Clients, arn: &str, tags: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    clients
        .v2
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags.clone().into_iter().collect()))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify("TagResource", e))
}

/// Deletes one resource; one that is already gone is not an error.
async fn delete(clients: &Clients, key: &ResourceKey, id: &str, api: &str) -> Result<(), ProviderError> {
    let v2 = &clients.v2;
    let operation = match key.0 {
        Kind::Api => "DeleteApi",
        Kind::Integration => "DeleteIntegration",
        Kind::Authorizer => "DeleteAuthorizer",
        Kind::Route => "DeleteRoute",
        Kind::Stage => "DeleteStage",
        Kind::DomainName => "DeleteDomainName",
        Kind::ApiMapping => "DeleteApiMapping",
        other => return Err(ProviderError::Other(format!("not an HTTP API resource: {}", other.name()))),
    };
    match key.0 {
        Kind::Api => gone_ok(operation, v2.delete_api().api_id(id).send().await),
        Kind::Integration => {
            gone_ok(operation, v2.delete_integration().api_id(api).integration_id(id).send().await)
        }
        Kind::Route => gone_ok(operation, v2.delete_route().api_id(api).route_id(id).send().await),
        Kind::Authorizer => {
            gone_ok(operation, v2.delete_authorizer().api_id(api).authorizer_id(id).send().await)
        }
        Kind::Stage => gone_ok(operation, v2.delete_stage().api_id(api).stage_name(id).send().await),
        Kind::DomainName => gone_ok(operation, v2.delete_domain_name().domain_name(id).send().await),
        _ => gone_ok(operation, v2.delete_api_mapping().domain_name(&key.1).api_mapping_id(id).send().await),
    }
}
