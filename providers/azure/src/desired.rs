//! What a Gateway becomes in an API Management service: the pure mapping from the IR to the
//! entities (with the exact request bodies), plus what cannot be expressed.
//!
//! Ownership is in the names: every entity id starts with `tb-<10 hex of sha256(owner)>-`, a
//! prefix no user entity has by accident; only ids with the Gateway's prefix are ever read
//! into a plan.
//!
//! Each operation and product carries in its `description` a marker of the policy written
//! under it ([`policy_marker`]): a plan reads a policy only when its container is not as
//! desired, or when an audit is due ([`crate::audit`]).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tollbridge_provider::reconcile::ResourceKind;
use tollbridge_provider::{
    ActionIr, ApiKeyIr, AzureSettings, BackendIr, BackendTarget, GatewayIr, GatewayKey, HeaderModifier,
    KeyValueMatch, PathMatch, PathModifier, QuotaPeriod, QuotaPolicyIr, RouteIr, StringMatch,
};

use crate::jwt;
use crate::retry;
use crate::xml::{csharp_string, csharp_verbatim, escape, interpreted};

/// Entity kinds, in creation order (a kind refers only to earlier kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Backend,
    PoolBackend,
    Api,
    Operation,
    OperationPolicy,
    Product,
    ProductApi,
    ProductPolicy,
    Subscription,
}

impl ResourceKind for Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Backend => "backend",
            Kind::PoolBackend => "pool-backend",
            Kind::Api => "api",
            Kind::Operation => "operation",
            Kind::OperationPolicy => "operation-policy",
            Kind::Product => "product",
            Kind::ProductApi => "product-api",
            Kind::ProductPolicy => "product-policy",
            Kind::Subscription => "subscription",
        }
    }
}

/// An entity: its kind and its path below the service (`apis/tb-…/operations/op-…`).
pub type EntityKey = (Kind, String);

/// The PUT body of an entity; policies are compared by their canonical XML. Its `Debug` hides
/// subscription keys.
#[derive(Clone, PartialEq)]
pub struct Desired {
    pub body: Value,
}

impl fmt::Debug for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Desired").field("body", &redacted(&self.body)).finish()
    }
}

/// Fields that hold secrets: a subscription's keys (written, never given back by a GET).
pub const SECRET_FIELDS: &[&str] = &["primaryKey", "secondaryKey"];

/// `value` with the value of every [`SECRET_FIELDS`] field, at any depth, replaced: for
/// `Debug` output and logs, never for what is sent.
pub fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = if SECRET_FIELDS.contains(&k.as_str()) && !v.is_null() {
                        Value::String("<redacted>".into())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// The owner of a Gateway's entities.
pub fn owner(cluster_id: &str, key: &GatewayKey) -> String {
    format!("{cluster_id}/{}/{}", key.namespace, key.name)
}

/// The id prefix of a Gateway's entities.
pub fn prefix(owner: &str) -> String {
    format!("tb-{}-", &hex::encode(Sha256::digest(owner.as_bytes()))[..10])
}

/// The marker of a policy: a hash of its canonical XML, carried by the operation or product
/// that holds it.
pub fn policy_marker(xml: &str) -> String {
    let hash = Sha256::digest(crate::xml::canonical(xml).as_bytes());
    format!("tollbridge policy {}", &hex::encode(hash)[..16])
}

/// The id of the subscription an ApiKey becomes under the Gateway's `prefix`.
pub fn subscription_id(prefix: &str, key: &ApiKeyIr) -> String {
    format!("{prefix}sb-{}-{}", short(&key.id), key.key_id())
}

fn short(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..5])
}

/// The entities of a Gateway and what could not be expressed.
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    pub entities: BTreeMap<EntityKey, Desired>,
    pub unprovisioned: Vec<String>,
}

/// Maps a Gateway onto API Management. `now` (seconds since the epoch) decides which keys have
/// expired.
pub fn map(gateway: &GatewayIr, settings: &AzureSettings, cluster_id: &str, now: i64) -> Mapping {
    let owner = owner(cluster_id, &gateway.key);
    let prefix = prefix(&owner);
    let mut m = Mapping::default();
    let api_id = format!("{prefix}api");
    let key_settings = gateway.policies.iter().find_map(|p| p.api_key.as_ref().filter(|k| k.required));
    let mut key_names = serde_json::Map::new();
    if let Some(k) = key_settings {
        key_names.insert(
            "header".into(),
            json!(k.header.clone().unwrap_or_else(|| "ocp-apim-subscription-key".into())),
        );
        key_names.insert(
            "query".into(),
            json!(k.query_param.clone().unwrap_or_else(|| "subscription-key".into())),
        );
    }
    let mut api = json!({
        "properties": {
            "displayName": format!("{}/{} (tollbridge)", gateway.key.namespace, gateway.key.name),
            "description": format!("Managed by tollbridge for Gateway {owner}"),
            "path": format!("{}-{}", gateway.key.namespace, gateway.key.name),
            "protocols": ["https"],
            "subscriptionRequired": key_settings.is_some(),
        }
    });
    if !key_names.is_empty() {
        api["properties"]["subscriptionKeyParameterNames"] = Value::Object(key_names);
    }
    m.entities.insert((Kind::Api, format!("apis/{api_id}")), Desired { body: api });

    // Operations: one per method and URL template, each with the rules that land on it.
    let mut operations: BTreeMap<(String, String), Vec<&RouteIr>> = BTreeMap::new();
    for route in &gateway.routes {
        let method = route.matcher.method.clone().unwrap_or_else(|| "*".into());
        for template in templates(&route.matcher.path) {
            operations.entry((method.clone(), template)).or_default().push(route);
        }
    }
    let mut backends: BTreeMap<String, String> = BTreeMap::new();
    for ((method, template), routes) in &operations {
        let op_id = format!("op-{}", short(&format!("{method} {template}")));
        let op_path = format!("apis/{api_id}/operations/{op_id}");
        let policy =
            operation_policy(routes, gateway, settings, &prefix, &mut backends, &mut m.unprovisioned);
        let body = json!({
            "properties": {
                "displayName": format!("{method} {template}"),
                "method": method,
                "urlTemplate": template,
                "description": policy_marker(&policy),
            }
        });
        m.entities.insert((Kind::Operation, op_path.clone()), Desired { body });
        m.entities
            .insert((Kind::OperationPolicy, format!("{op_path}/policies/policy")), policy_body(&policy));
    }
    for (url, id) in &backends {
        let mut body = json!({ "properties": { "url": url, "protocol": "http", "description": format!("tollbridge {owner}") } });
        if url.starts_with("https://") {
            // The chain against the well-known CAs, and the URL's host as the name (what a
            // BackendTLSPolicy carried to API Management asks), said rather than defaulted.
            body["properties"]["tls"] =
                json!({ "validateCertificateChain": true, "validateCertificateName": true });
        }
        m.entities.insert((Kind::Backend, format!("backends/{id}")), Desired { body });
    }
    for route in &gateway.routes {
        if let ActionIr::Forward { backends: list } = &route.action {
            if list.len() > 1 {
                if let Some((id, body)) = pool(list, &prefix) {
                    m.entities.insert((Kind::PoolBackend, format!("backends/{id}")), Desired { body });
                }
            }
        }
    }
    for policy in &gateway.policies {
        map_product(gateway, policy, &prefix, &api_id, settings, now, &mut m);
    }
    m
}

/// URL templates of a path match: exact paths as they are, prefixes as the path and the path
/// with a wildcard below it; regexes on a wildcard operation (checked in the policy).
fn templates(path: &PathMatch) -> Vec<String> {
    match path {
        PathMatch::Exact(p) => vec![p.clone()],
        PathMatch::Prefix(p) if p == "/" => vec!["/*".into()],
        PathMatch::Prefix(p) => vec![p.clone(), format!("{}/*", p.trim_end_matches('/'))],
        PathMatch::Regex(_) => vec!["/*".into()],
    }
}

fn policy_body(xml: &str) -> Desired {
    Desired { body: json!({ "properties": { "format": "rawxml", "value": xml } }) }
}

/// The id of the backend entity for a URL.
fn backend_id(prefix: &str, url: &str) -> String {
    format!("{prefix}be-{}", short(url))
}

fn pool(list: &[BackendIr], prefix: &str) -> Option<(String, Value)> {
    let services: Vec<Value> = list
        .iter()
        .filter_map(|b| match &b.target {
            BackendTarget::Url { url } => {
                Some(json!({ "id": format!("/backends/{}", backend_id(prefix, url)), "weight": b.weight }))
            }
            _ => None,
        })
        .collect();
    if services.is_empty() {
        return None;
    }
    let id = format!("{prefix}pool-{}", short(&format!("{services:?}")));
    // The 2024-05-01 description requires `url` and `protocol` on every backend, pools too:
    // the first member's URL stands in.
    let url = list.iter().find_map(|b| match &b.target {
        BackendTarget::Url { url } => Some(url.clone()),
        _ => None,
    });
    let body = json!({ "properties": {
        "type": "Pool",
        "url": url,
        "protocol": "http",
        "description": "tollbridge weighted backends",
        "pool": { "services": services },
    } });
    Some((id, body))
}

/// The `<choose>` of an operation: one `<when>` per rule, in precedence order; no match → 404.
fn operation_policy(
    routes: &[&RouteIr],
    gateway: &GatewayIr,
    settings: &AzureSettings,
    prefix: &str,
    backends: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> String {
    let mut inbound = String::new();
    let mut outbound = String::new();
    let mut timeout = None;
    let mut retried = Vec::new();
    for (rule, route) in routes.iter().enumerate() {
        let condition = condition(route);
        inbound.push_str(&format!("<when condition=\"{}\">", escape(&condition)));
        inbound.push_str(&format!("<set-variable name=\"tb-rule\" value=\"{rule}\" />"));
        // A JWT policy is checked in the route's own branch, whatever subscription the
        // request names (a product's policy runs only for its own subscriptions).
        let policy = gateway.policies.iter().find(|p| Some(&p.id) == route.policy.as_ref());
        // A keyed route answers only to its own policy's product: the API takes any of its
        // products' subscriptions, and another policy's key must not open this route (403).
        if let Some(policy) = policy.filter(|p| p.api_key.as_ref().is_some_and(|k| k.required)) {
            inbound.push_str(&format!(
                "<choose><when condition=\"{}\">{}</when></choose>",
                escape(&format!(
                    "@(context.Product == null || context.Product.Id != {})",
                    csharp_string(&product_id(prefix, &policy.id))
                )),
                "<return-response><set-status code=\"403\" reason=\"Forbidden\" /></return-response>"
            ));
        }
        if let Some((policy, jwt)) = policy.and_then(|p| Some((p, p.jwt.as_ref()?))) {
            let mut reported = Vec::new();
            let tier = settings.tier.as_deref().unwrap_or_default();
            inbound.push_str(&jwt::guard(policy, jwt, prefix, tier, &mut reported));
            for problem in reported {
                report_once(problems, problem);
            }
        }
        inbound.push_str(&headers(route, &route.filters.request_headers, problems));
        if let Some(rewrite) = route.filters.url_rewrite.as_ref().and_then(|r| r.path.as_ref()) {
            // The path below the API's own path segment, with the matched prefix replaced.
            let template = match rewrite {
                PathModifier::Full { path } => path.clone(),
                PathModifier::Prefix { matched, replacement } => format!(
                    "@({} + context.Request.OriginalUrl.Path.Substring(context.Api.Path.Length + 1 + {}))",
                    csharp_string(replacement.trim_end_matches('/')),
                    matched.trim_end_matches('/').len()
                ),
            };
            inbound.push_str(&format!(
                "<rewrite-uri template=\"{}\" copy-unmatched-params=\"true\" />",
                escape(&template)
            ));
        }
        for mirror in &route.filters.mirrors {
            if let BackendTarget::Url { url } = &mirror.backend.target {
                inbound.push_str(&format!(
                    "<send-one-way-request mode=\"copy\"><set-url>@(\"{}\" + context.Request.Url.Path)</set-url></send-one-way-request>",
                    escape(url.trim_end_matches('/'))
                ));
            }
        }
        match &route.action {
            ActionIr::Forward { backends: list } => match list.as_slice() {
                [one] => match &one.target {
                    BackendTarget::Url { url } => {
                        let id =
                            backends.entry(url.clone()).or_insert_with(|| backend_id(prefix, url)).clone();
                        inbound.push_str(&format!("<set-backend-service backend-id=\"{id}\" />"));
                        inbound.push_str(&headers(route, &one.request_headers, problems));
                    }
                    other => {
                        problems.push(unreachable_backend(route, one, other));
                        inbound.push_str(&respond(500));
                    }
                },
                many => {
                    for b in many {
                        if let BackendTarget::Url { url } = &b.target {
                            backends.entry(url.clone()).or_insert_with(|| backend_id(prefix, url));
                        } else {
                            problems.push(unreachable_backend(route, b, &b.target));
                        }
                    }
                    match pool(many, prefix) {
                        Some((id, _)) => {
                            inbound.push_str(&format!("<set-backend-service backend-id=\"{id}\" />"))
                        }
                        None => inbound.push_str(&respond(500)),
                    }
                }
            },
            ActionIr::Redirect(redirect) => inbound.push_str(&redirect_response(redirect)),
            ActionIr::Respond { status } => inbound.push_str(&respond(*status)),
        }
        inbound.push_str("</when>");
        if !route.filters.response_headers.is_empty() {
            outbound.push_str(&format!(
                "<when condition=\"{}\">{}</when>",
                escape(&format!(
                    "@(context.Variables.GetValueOrDefault<string>(\"tb-rule\", \"\") == \"{rule}\")"
                )),
                headers(route, &route.filters.response_headers, problems)
            ));
        }
        if timeout.is_none() {
            timeout =
                [route.timeouts.request_ms, route.timeouts.backend_request_ms].into_iter().flatten().min();
        }
        if let Some(retry) = &route.retry {
            for problem in retry::problems(route, retry) {
                report_once(problems, problem);
            }
            retried.push((rule, retry));
        }
    }
    let forward_with = |buffered: bool| {
        let timeout =
            timeout.map(|ms| format!(" timeout=\"{}\"", ms.div_ceil(1000).max(1))).unwrap_or_default();
        let buffer = if buffered { " buffer-request-body=\"true\"" } else { "" };
        format!("<forward-request{timeout}{buffer} />")
    };
    let forward = if retried.is_empty() {
        forward_with(false)
    } else {
        // Each retrying rule's requests go through its own `<retry>` (their bodies buffered to be
        // sent again); the others are forwarded once.
        let mut branches = String::new();
        for (rule, retry) in retried {
            branches.push_str(&format!(
                "<when condition=\"{}\">{}</when>",
                escape(&format!(
                    "@(context.Variables.GetValueOrDefault<string>(\"tb-rule\", \"\") == \"{rule}\")"
                )),
                retry::around(retry, &forward_with(true))
            ));
        }
        format!("<choose>{branches}<otherwise>{}</otherwise></choose>", forward_with(false))
    };
    let outbound = if outbound.is_empty() { String::new() } else { format!("<choose>{outbound}</choose>") };
    format!(
        "<policies><inbound><base /><choose>{inbound}<otherwise>{}</otherwise></choose></inbound>\
         <backend>{forward}</backend><outbound><base />{outbound}</outbound><on-error><base /></on-error></policies>",
        respond(404)
    )
}

/// Adds `problem` to what is reported unless it is there already (an operation's rules and
/// matches often say the same).
fn report_once(problems: &mut Vec<String>, problem: String) {
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

fn unreachable_backend(route: &RouteIr, backend: &BackendIr, target: &BackendTarget) -> String {
    match target {
        BackendTarget::Invalid { reason } => format!("HTTPRoute {}: backend {}: {reason}", route.id.route(), backend.name),
        _ => format!(
            "HTTPRoute {}: backend {} is a cluster Service; API Management reaches an ExternalName Service or a \
             tollbridge.dev/backend-url annotation",
            route.id.route(),
            backend.name
        ),
    }
}

/// The product a QuotaPolicy with keys or limits becomes.
fn product_id(prefix: &str, policy: &str) -> String {
    format!("{prefix}pr-{}", short(policy))
}

fn respond(status: u16) -> String {
    format!("<return-response><set-status code=\"{status}\" /></return-response>")
}

fn redirect_response(redirect: &tollbridge_provider::RedirectIr) -> String {
    let scheme = redirect
        .scheme
        .clone()
        .map_or("context.Request.OriginalUrl.Scheme".to_string(), |s| format!("\"{s}\""));
    let host = redirect
        .hostname
        .clone()
        .map_or("context.Request.OriginalUrl.Host".to_string(), |h| format!("\"{h}\""));
    let port = redirect.port.map_or(String::new(), |p| format!(" + \":{p}\""));
    let path = match &redirect.path {
        Some(PathModifier::Full { path }) => format!("\"{path}\""),
        _ => "context.Request.OriginalUrl.Path".to_string(),
    };
    let location = format!("@({scheme} + \"://\" + {host}{port} + {path})");
    format!(
        "<return-response><set-status code=\"{}\" /><set-header name=\"Location\" exists-action=\"override\"><value>{}</value></set-header></return-response>",
        redirect.status,
        escape(&location)
    )
}

/// A route's header changes; a value API Management would read as a named value or an
/// expression is left out and reported (a route's author must not reach the service's secrets).
fn headers(route: &RouteIr, modifier: &HeaderModifier, problems: &mut Vec<String>) -> String {
    let mut out = String::new();
    let changes =
        modifier.set.iter().map(|h| (h, "override")).chain(modifier.add.iter().map(|h| (h, "append")));
    for (h, action) in changes {
        if interpreted(&h.value) {
            let problem = format!(
                "HTTPRoute {}: header {} is not set: API Management would read {:?} as a named value or an expression",
                route.id.route(),
                h.name,
                h.value
            );
            report_once(problems, problem);
            continue;
        }
        out.push_str(&format!(
            "<set-header name=\"{}\" exists-action=\"{action}\"><value>{}</value></set-header>",
            escape(&h.name),
            escape(&h.value)
        ));
    }
    for name in &modifier.remove {
        out.push_str(&format!("<set-header name=\"{}\" exists-action=\"delete\" />", escape(name)));
    }
    out
}

/// The C# condition selecting a rule: hostnames, path regex, headers and query parameters.
fn condition(route: &RouteIr) -> String {
    let mut parts = Vec::new();
    let hosts: Vec<&String> = route.attachments.iter().flat_map(|a| &a.hostnames).collect();
    if !hosts.is_empty() {
        let checks: Vec<String> = hosts
            .iter()
            .map(|h| match h.strip_prefix('*') {
                Some(suffix) => {
                    format!("context.Request.OriginalUrl.Host.EndsWith({})", csharp_string(suffix))
                }
                None => format!("context.Request.OriginalUrl.Host == {}", csharp_string(h)),
            })
            .collect();
        parts.push(format!("({})", checks.join(" || ")));
    }
    if let PathMatch::Regex(re) = &route.matcher.path {
        parts.push(format!(
            "System.Text.RegularExpressions.Regex.IsMatch(context.Request.Url.Path, {})",
            csharp_verbatim(&format!("^(?:{re})$"))
        ));
    }
    let value_check = |source: &str, m: &KeyValueMatch| match &m.value {
        StringMatch::Exact(v) => {
            format!("{source}.GetValueOrDefault({}, \"\") == {}", csharp_string(&m.name), csharp_string(v))
        }
        StringMatch::Regex(re) => format!(
            "System.Text.RegularExpressions.Regex.IsMatch({source}.GetValueOrDefault({}, \"\"), {})",
            csharp_string(&m.name),
            csharp_verbatim(&format!("^(?:{re})$"))
        ),
    };
    for h in &route.matcher.headers {
        parts.push(value_check("context.Request.Headers", h));
    }
    for q in &route.matcher.query_params {
        parts.push(value_check("context.Request.Url.Query", q));
    }
    if parts.is_empty() {
        "@(true)".into()
    } else {
        format!("@({})", parts.join(" && "))
    }
}

/// Tiers without the `-by-key` quota (Consumption and the v2 tiers).
fn consumption_tier(settings: &AzureSettings) -> bool {
    settings.tier.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("Consumption") || t.ends_with("V2"))
}

fn map_product(
    gateway: &GatewayIr,
    policy: &QuotaPolicyIr,
    prefix: &str,
    api_id: &str,
    settings: &AzureSettings,
    now: i64,
    m: &mut Mapping,
) {
    let keyed = policy.api_key.as_ref().is_some_and(|k| k.required);
    // JWT policies live in the operations of their routes (see operation_policy).
    if policy.jwt.is_some() || (!keyed && policy.quota.is_none() && policy.rate_limit.is_none()) {
        return;
    }
    let product = product_id(prefix, &policy.id);
    m.entities.insert(
        (Kind::ProductApi, format!("products/{product}/apis/{api_id}")),
        Desired { body: Value::Null },
    );
    let mut limits = String::new();
    // Who the limits count: the subscription (keys), or the caller's IP.
    let counter = "@(context.Request.IpAddress)";
    if let Some(rate) = policy.rate_limit {
        let calls = u64::from(rate.requests).max(1);
        let period = rate.period_seconds.max(1);
        let tag = if keyed { "rate-limit" } else { "rate-limit-by-key" };
        let key = if keyed { String::new() } else { format!(" counter-key=\"{counter}\"") };
        limits.push_str(&format!("<{tag} calls=\"{calls}\" renewal-period=\"{period}\"{key} />"));
    }
    if let Some(quota) = policy.quota {
        let period = match quota.period {
            QuotaPeriod::Day => 86_400,
            QuotaPeriod::Week => 604_800,
            QuotaPeriod::Month => 2_592_000,
        };
        if keyed || consumption_tier(settings) {
            limits.push_str(&format!("<quota calls=\"{}\" renewal-period=\"{period}\" />", quota.requests));
        } else {
            limits.push_str(&format!(
                "<quota-by-key calls=\"{}\" renewal-period=\"{period}\" counter-key=\"{counter}\" />",
                quota.requests
            ));
        }
        if quota.period == QuotaPeriod::Month {
            m.unprovisioned.push(format!(
                "QuotaPolicy {}: API Management quotas renew every 30 days, not on calendar months",
                policy.id
            ));
        }
    }
    let xml = format!(
        "<policies><inbound><base />{limits}</inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"
    );
    let body = json!({
        "properties": {
            "displayName": format!("{} ({}/{})", policy.id, gateway.key.namespace, gateway.key.name),
            "description": format!("tollbridge QuotaPolicy {}; {}", policy.id, policy_marker(&xml)),
            "subscriptionRequired": keyed,
            "approvalRequired": false,
            "state": "published",
        }
    });
    m.entities.insert((Kind::Product, format!("products/{product}")), Desired { body });
    m.entities
        .insert((Kind::ProductPolicy, format!("products/{product}/policies/policy")), policy_body(&xml));
    for key in &policy.keys {
        let id = subscription_id(prefix, key);
        let active = !key.disabled && key.expires_at.is_none_or(|at| at > now);
        let body = json!({
            "properties": {
                "scope": format!("/products/{product}"),
                "displayName": format!("{} ({})", key.consumer, key.id),
                "primaryKey": key.value.expose(),
                "state": if active { "active" } else { "suspended" },
            }
        });
        m.entities.insert((Kind::Subscription, format!("subscriptions/{id}")), Desired { body });
    }
}

#[cfg(test)]
mod tests {
    use tollbridge_provider::*;

    use super::*;

    fn route(name: &str, path: PathMatch, url: &str) -> RouteIr {
        RouteIr {
            id: RouteId { namespace: "shop".into(), name: name.into(), ..RouteId::default() },
            attachments: vec![AttachmentIr {
                listener: "https".into(),
                hostnames: vec!["api.example.com".into()],
            }],
            matcher: MatchIr { path, method: None, headers: Vec::new(), query_params: Vec::new() },
            filters: FiltersIr::default(),
            action: ActionIr::Forward {
                backends: vec![BackendIr {
                    name: "shop/a:443".into(),
                    weight: 1,
                    target: BackendTarget::Url { url: url.into() },
                    protocol: Default::default(),
                    tls: None,
                    request_headers: HeaderModifier::default(),
                    response_headers: HeaderModifier::default(),
                }],
            },
            timeouts: TimeoutsIr::default(),
            retry: None,
            policy: None,
        }
    }

    fn gateway(routes: Vec<RouteIr>) -> GatewayIr {
        GatewayIr {
            key: GatewayKey { namespace: "shop".into(), name: "gw".into(), uid: "u".into(), generation: 1 },
            provider: ProviderSettings::Local(LocalSettings::default()),
            listeners: Vec::new(),
            addresses: Vec::new(),
            infrastructure: Default::default(),
            routes,
            policies: Vec::new(),
        }
    }

    #[test]
    fn every_entity_id_carries_the_owner_prefix() {
        let m = map(
            &gateway(vec![route("a", PathMatch::Prefix("/a".into()), "https://a.example.com")]),
            &AzureSettings::default(),
            "c",
            0,
        );
        let prefix = prefix("c/shop/gw");
        for (_, path) in m.entities.keys() {
            let id = path.split('/').nth(1).unwrap();
            assert!(id.starts_with(&prefix), "{path}");
        }
        let kinds: Vec<Kind> = m.entities.keys().map(|(k, _)| *k).collect();
        assert!(kinds.contains(&Kind::Backend) && kinds.contains(&Kind::OperationPolicy));
    }

    #[test]
    fn a_mapping_shows_no_key_in_debug_output() {
        let mut gw = gateway(vec![route("a", PathMatch::Prefix("/a".into()), "https://a.example.com")]);
        gw.policies.push(QuotaPolicyIr {
            jwt: None,
            id: "shop/gold".into(),
            api_key: Some(ApiKeySettingsIr {
                required: true,
                header: None,
                query_param: None,
                consumer_header: "x-consumer".into(),
            }),
            rate_limit: None,
            quota: None,
            keys: vec![ApiKeyIr {
                id: "shop/alice".into(),
                consumer: "alice".into(),
                sha256: "ab".repeat(32),
                value: SecretString::new("alice-plaintext-key-42"),
                disabled: false,
                expires_at: None,
            }],
        });
        let m = map(&gw, &AzureSettings::default(), "c", 0);
        let subscription = m.entities.iter().find(|((k, _), _)| *k == Kind::Subscription).unwrap().1;
        assert_eq!(subscription.body["properties"]["primaryKey"], "alice-plaintext-key-42");
        for shown in [format!("{m:?}"), format!("{m:#?}"), format!("{subscription:?}")] {
            assert!(!shown.contains("alice-plaintext-key-42"), "{shown}");
        }
    }

    #[test]
    fn route_text_cannot_become_code_or_reach_named_values() {
        let mut r = route("a", PathMatch::Regex(r#"/items/\d+"#.into()), "https://a.example.com");
        r.matcher.headers.push(KeyValueMatch {
            name: "x-tenant".into(),
            value: StringMatch::Exact(r#"acme\" || true || \""#.into()),
        });
        let condition = condition(&r);
        // The value stays one C# literal; the regex keeps its backslash in a verbatim literal.
        assert!(condition.contains(r#"== "acme\\\" || true || \\\"""#), "{condition}");
        assert!(condition.contains(r#"@"^(?:/items/\d+)$""#), "{condition}");

        r.filters
            .request_headers
            .set
            .push(HeaderValue { name: "x-secret".into(), value: "{{backend-key}}".into() });
        r.filters.request_headers.add.push(HeaderValue { name: "x-code".into(), value: "@(1)".into() });
        r.filters.request_headers.set.push(HeaderValue { name: "x-fine".into(), value: "plain".into() });
        let mut problems = Vec::new();
        let xml = headers(&r, &r.filters.request_headers, &mut problems);
        assert_eq!(
            xml,
            r#"<set-header name="x-fine" exists-action="override"><value>plain</value></set-header>"#
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("header x-secret is not set"), "{problems:?}");
    }

    #[test]
    fn rules_sharing_a_path_become_one_operation_with_a_choose() {
        let mut by_header = route("a", PathMatch::Exact("/a".into()), "https://v2.example.com");
        by_header
            .matcher
            .headers
            .push(KeyValueMatch { name: "x-version".into(), value: StringMatch::Exact("2".into()) });
        let plain = route("b", PathMatch::Exact("/a".into()), "https://v1.example.com");
        let m = map(&gateway(vec![by_header, plain]), &AzureSettings::default(), "c", 0);
        let policies: Vec<&Desired> =
            m.entities.iter().filter(|((k, _), _)| *k == Kind::OperationPolicy).map(|(_, d)| d).collect();
        assert_eq!(policies.len(), 1);
        let xml = policies[0].body["properties"]["value"].as_str().unwrap();
        let first = xml.find("x-version").unwrap();
        let second = xml.rfind("<when ").unwrap();
        assert!(first < second, "rules keep their precedence: {xml}");
        assert!(xml.contains("<otherwise><return-response><set-status code=\"404\" />"), "{xml}");
    }
}
