//! What a Gateway becomes on Amazon API Gateway: the pure mapping from the IR to [`Resources`],
//! plus the parts that cannot be expressed (reported, never silently dropped).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use tollbridge_provider::{
    ActionIr, AwsSettings, BackendIr, BackendTarget, GatewayIr, GatewayKey, HeaderModifier, JwksIr,
    ListenerProtocol, PathMatch, PathModifier, QuotaPeriod, QuotaPolicyIr, RouteIr,
};

use crate::changes::{Kind, Resources, Spec, Throttle};

/// The tag that marks every resource tollbridge owns: `<clusterID>/<namespace>/<name>`.
pub const OWNER_TAG: &str = "tollbridge.dev/owner";
/// The stage of REST APIs (HTTP APIs use `$default`).
pub const REST_STAGE: &str = "live";
/// The stage of HTTP APIs.
pub const HTTP_STAGE: &str = "$default";
/// The key of the (single) API resource of a Gateway.
pub const API_KEY: &str = "api";
/// The longest integration timeout of HTTP APIs and of REST APIs, in milliseconds.
const HTTP_MAX_TIMEOUT_MS: u64 = 30_000;
const REST_MAX_TIMEOUT_MS: u64 = 29_000;
/// Headers API Gateway does not let an integration change.
const RESERVED_HEADERS: &[&str] =
    &["host", "connection", "content-length", "transfer-encoding", "upgrade", "authorization"];

/// HTTP API (v2) or REST API (v1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiType {
    Http,
    Rest,
}

impl std::fmt::Display for ApiType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiType::Http => "HTTP API",
            ApiType::Rest => "REST API",
        })
    }
}

/// The API type for a Gateway: as configured, or for `Auto`, REST when a policy needs API keys
/// or quotas (usage plans exist only there), HTTP otherwise.
pub fn api_type(settings: &AwsSettings, gateway: &GatewayIr) -> ApiType {
    match settings.api_type.as_str() {
        "HTTP" => ApiType::Http,
        "REST" => ApiType::Rest,
        _ if gateway.policies.iter().any(needs_usage_plan) => ApiType::Rest,
        _ => ApiType::Http,
    }
}

fn needs_usage_plan(policy: &QuotaPolicyIr) -> bool {
    policy.quota.is_some() || policy.api_key.as_ref().is_some_and(|k| k.required)
}

/// The owner tag value of a Gateway.
pub fn owner(cluster_id: &str, key: &GatewayKey) -> String {
    format!("{cluster_id}/{}/{}", key.namespace, key.name)
}

/// The resources of a Gateway and what could not be expressed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mapping {
    pub resources: Resources,
    pub unprovisioned: Vec<String>,
}

/// Maps a Gateway onto an API of `api_type`. `now` (seconds since the epoch) decides which keys
/// have expired.
pub fn map(
    gateway: &GatewayIr,
    settings: &AwsSettings,
    cluster_id: &str,
    api_type: ApiType,
    now: i64,
) -> Mapping {
    let mut tags = settings.tags.clone();
    tags.insert(OWNER_TAG.into(), owner(cluster_id, &gateway.key));
    let mut mapping = Mapping::default();
    let name = format!("tollbridge-{}-{}", gateway.key.namespace, gateway.key.name);
    let api_kind = match api_type {
        ApiType::Http => Kind::Api,
        ApiType::Rest => Kind::RestApi,
    };
    mapping.resources.insert((api_kind, API_KEY.into()), Spec::Api { name, tags: tags.clone() });
    let routes = usable_routes(gateway, &mut mapping.unprovisioned);
    match api_type {
        ApiType::Http => map_http(gateway, settings, &routes, &tags, &mut mapping),
        ApiType::Rest => map_rest(gateway, settings, &routes, &tags, now, &mut mapping),
    }
    map_domains(gateway, settings, &tags, api_type, &mut mapping);
    mapping
}

/// A route entry reduced to what API Gateway can serve: one backend URL.
struct Usable<'a> {
    route: &'a RouteIr,
    backend: &'a BackendIr,
    url: &'a str,
}

/// A route entry as API Gateway takes it: served from one backend URL, or closed (what it asks
/// cannot be provisioned, and its paths must not fall to a broader route).
enum Entry<'a> {
    Serve(Usable<'a>),
    Close(&'a RouteIr),
}

fn usable_routes<'a>(gateway: &'a GatewayIr, problems: &mut Vec<String>) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    for route in &gateway.routes {
        let id = route.id.route();
        let backend = match &route.action {
            ActionIr::Forward { backends } if backends.len() == 1 => &backends[0],
            ActionIr::Forward { backends } => {
                problems.push(format!(
                    "HTTPRoute {id}: {} weighted backends (API Gateway takes one)",
                    backends.len()
                ));
                out.push(Entry::Close(route));
                continue;
            }
            ActionIr::Redirect(_) => {
                problems.push(format!("HTTPRoute {id}: redirects are not provisioned on API Gateway"));
                out.push(Entry::Close(route));
                continue;
            }
            ActionIr::Respond { status } => {
                problems.push(format!(
                    "HTTPRoute {id}: a rule answering {status} (no usable backend) is not served"
                ));
                out.push(Entry::Close(route));
                continue;
            }
        };
        match &backend.target {
            BackendTarget::Url { url } => out.push(Entry::Serve(Usable { route, backend, url })),
            BackendTarget::Endpoints { .. } => {
                problems.push(format!(
                    "HTTPRoute {id}: backend {} is a cluster Service; API Gateway reaches an ExternalName Service, \
                     a tollbridge.dev/backend-url annotation, or a VPC link target",
                    backend.name
                ));
                out.push(Entry::Close(route));
            }
            BackendTarget::Invalid { reason } => {
                problems.push(format!("HTTPRoute {id}: backend {}: {reason}", backend.name));
                out.push(Entry::Close(route));
            }
        }
    }
    out
}

/// The paths a route entry needs: `(path, greedy)`; a prefix needs the path itself and a
/// greedy child. `None` for regular expressions.
fn route_paths(path: &PathMatch) -> Option<Vec<(String, bool)>> {
    match path {
        PathMatch::Exact(p) => Some(vec![(p.clone(), false)]),
        PathMatch::Prefix(p) if p == "/" => Some(vec![("/".into(), false), ("/".into(), true)]),
        PathMatch::Prefix(p) => Some(vec![(p.clone(), false), (p.clone(), true)]),
        PathMatch::Regex(_) => None,
    }
}

fn join(base: &str, tail: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), tail)
}

/// The path sent upstream for a request on `path` (greedy: plus the rest as `rest`).
fn upstream_path(route: &RouteIr, path: &str, greedy: bool, rest: &str) -> String {
    match route.filters.url_rewrite.as_ref().and_then(|r| r.path.as_ref()) {
        Some(PathModifier::Full { path }) => path.clone(),
        Some(PathModifier::Prefix { matched, replacement }) => {
            let kept = path.strip_prefix(matched.trim_end_matches('/')).unwrap_or("");
            let base = join(replacement, kept);
            if greedy {
                join(&base, &format!("/{rest}"))
            } else if base.is_empty() {
                "/".into()
            } else {
                base
            }
        }
        None if greedy => join(path, &format!("/{rest}")),
        None => path.to_string(),
    }
}

fn timeout_ms(route: &RouteIr, max: u64) -> i32 {
    let t = [route.timeouts.request_ms, route.timeouts.backend_request_ms].into_iter().flatten().min();
    t.unwrap_or(max).clamp(50, max) as i32
}

/// Header changes for the integration, or a problem for headers API Gateway reserves.
fn header_changes<'a>(route: &'a RouteIr, backend: &'a BackendIr) -> (Vec<&'a HeaderModifier>, Vec<String>) {
    let modifiers = vec![&route.filters.request_headers, &backend.request_headers];
    let mut problems = Vec::new();
    for m in &modifiers {
        let names =
            m.set.iter().chain(&m.add).map(|h| h.name.as_str()).chain(m.remove.iter().map(String::as_str));
        for name in names {
            if RESERVED_HEADERS.contains(&name) || name.starts_with("x-amz") {
                problems.push(format!(
                    "HTTPRoute {}: header {name} cannot be changed on API Gateway",
                    route.id.route()
                ));
            }
        }
    }
    (modifiers, problems)
}

fn short_hash<T: Hash>(value: &T) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

fn map_http(
    gateway: &GatewayIr,
    settings: &AwsSettings,
    routes: &[Entry<'_>],
    tags: &BTreeMap<String, String>,
    m: &mut Mapping,
) {
    let mut throttles = BTreeMap::new();
    for entry in routes {
        let usable = match entry {
            Entry::Serve(usable) => usable,
            Entry::Close(route) => {
                close(route, m);
                continue;
            }
        };
        let route = usable.route;
        let Some(paths) = route_paths(&route.matcher.path) else { continue };
        let (url, base_path) = split_url(usable.url);
        let (modifiers, problems) = header_changes(route, usable.backend);
        m.unprovisioned.extend(problems);
        let throttle = route_throttle(gateway, route);
        let authorizer = route_authorizer(gateway, route, m);
        for (path, greedy) in paths {
            let route_key = http_route_key(route.matcher.method.as_deref(), &path, greedy);
            if m.resources.contains_key(&(Kind::Route, route_key.clone())) {
                continue; // a higher-precedence entry already has this route key
            }
            let mut parameters = BTreeMap::new();
            let rewrite = route.filters.url_rewrite.as_ref().and_then(|r| r.path.as_ref());
            let upstream = match rewrite {
                None => "$request.path".to_string(),
                Some(PathModifier::Prefix { replacement, .. }) if route_key == "$default" => {
                    join(replacement, "$request.path")
                }
                Some(_) => upstream_path(route, &path, greedy, "$request.path.proxy"),
            };
            parameters.insert("overwrite:path".to_string(), join(&base_path, &upstream));
            if let Some((_, header, claim)) = authorizer.as_ref().filter(|(_, _, claim)| !claim.is_empty()) {
                parameters.insert(
                    format!("overwrite:header.{header}"),
                    format!("$context.authorizer.claims.{claim}"),
                );
            }
            for modifier in &modifiers {
                for h in &modifier.set {
                    parameters.insert(format!("overwrite:header.{}", h.name), h.value.clone());
                }
                for h in &modifier.add {
                    parameters.insert(format!("append:header.{}", h.name), h.value.clone());
                }
                for name in &modifier.remove {
                    parameters.insert(format!("remove:header.{name}"), "''".into());
                }
            }
            let (uri, vpc_link) = integration_target(&url, settings);
            let spec = Spec::Integration {
                uri,
                vpc_link,
                timeout_ms: timeout_ms(route, HTTP_MAX_TIMEOUT_MS),
                parameters,
            };
            let integration = format!("i-{}", short_hash(&format!("{spec:?}")));
            m.resources.insert((Kind::Integration, integration.clone()), spec);
            let authorizer = authorizer.as_ref().map(|(key, _, _)| key.clone());
            m.resources.insert((Kind::Route, route_key.clone()), Spec::Route { integration, authorizer });
            if let Some(t) = throttle {
                throttles.insert(route_key, t);
            }
        }
    }
    m.resources.insert((Kind::Stage, HTTP_STAGE.into()), Spec::Stage { throttles, tags: tags.clone() });
}

/// `ANY /a`, `GET /a/{proxy+}`, or `$default` for a greedy root without method.
fn http_route_key(method: Option<&str>, path: &str, greedy: bool) -> String {
    match (method, greedy) {
        (None, true) if path == "/" => "$default".into(),
        (m, true) => format!("{} {}", m.unwrap_or("ANY"), join(path, "/{proxy+}")),
        (m, false) => format!("{} {path}", m.unwrap_or("ANY")),
    }
}

/// The audience of the authorizer that refuses every token.
const DENY_AUDIENCE: &str = "tollbridge.dev/deny-all";
/// The issuer of that authorizer: a name that cannot resolve (RFC 6761 `.invalid`), so no key
/// can be found for it and no token, whatever its audience, passes.
const DENY_ISSUER: &str = "https://deny-all.invalid/";
/// Where closed routes point: never reached, their authorizer refuses first.
const DENY_TARGET: &str = "https://deny-all.invalid";

/// The authorizer refusing every token, added to `m`; its key.
fn deny_authorizer(m: &mut Mapping) -> String {
    let key = authorizer_key("deny-all");
    let deny =
        Spec::Authorizer { issuer: DENY_ISSUER.to_string(), audiences: vec![DENY_AUDIENCE.to_string()] };
    m.resources.insert((Kind::Authorizer, key.clone()), deny);
    key
}

/// Closes `route` on an HTTP API: its paths answer 401 (the deny-all authorizer) instead of
/// falling to a broader route (`ANY /{proxy+}`, `$default`) that would serve them unchecked.
fn close(route: &RouteIr, m: &mut Mapping) {
    let Some(paths) = route_paths(&route.matcher.path) else { return };
    let authorizer = deny_authorizer(m);
    let spec = Spec::Integration {
        uri: DENY_TARGET.to_string(),
        vpc_link: None,
        timeout_ms: 1_000,
        parameters: BTreeMap::new(),
    };
    let integration = format!("i-{}", short_hash(&format!("{spec:?}")));
    for (path, greedy) in paths {
        let route_key = http_route_key(route.matcher.method.as_deref(), &path, greedy);
        if m.resources.contains_key(&(Kind::Route, route_key.clone())) {
            continue;
        }
        m.resources.insert((Kind::Integration, integration.clone()), spec.clone());
        let closed = Spec::Route { integration: integration.clone(), authorizer: Some(authorizer.clone()) };
        m.resources.insert((Kind::Route, route_key), closed);
    }
    report(
        m,
        format!(
            "HTTPRoute {}: its paths answer 401 on this HTTP API (closed, not left to broader routes)",
            route.id.route()
        ),
    );
}

/// Adds `text` to what could not be expressed, once.
fn report(m: &mut Mapping, text: String) {
    if !m.unprovisioned.contains(&text) {
        m.unprovisioned.push(text);
    }
}

/// The JWT authorizer guarding `route` (added to `m`), with the consumer header and claim
/// forwarded (the claim empty: none). A route whose tokens an HTTP API cannot check as the
/// policy asks gets an authorizer that refuses every token, and the reason is reported: left
/// out, a broader route (`ANY /{proxy+}`, `$default`) would answer its paths unchecked.
fn route_authorizer(
    gateway: &GatewayIr,
    route: &RouteIr,
    m: &mut Mapping,
) -> Option<(String, String, String)> {
    let policy = gateway.policies.iter().find(|p| Some(&p.id) == route.policy.as_ref())?;
    let jwt = policy.jwt.as_ref()?;
    let problem = if jwt.jwks != JwksIr::OpenIdDiscovery {
        Some("JWT authorizers find keys through the issuer's OpenID Connect discovery only")
    } else if jwt.audiences.is_empty() {
        Some("JWT authorizers need at least one audience")
    } else if !jwt.required_claims.is_empty() {
        Some("JWT authorizers cannot require claims")
    } else if !jwt.consumer_claim.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Some("the consumer claim must be letters, digits and _ to be forwarded")
    } else {
        None
    };
    if let Some(why) = problem {
        report(m, format!("QuotaPolicy {}: {why}; its routes refuse every token", policy.id));
        return Some((deny_authorizer(m), jwt.consumer_header.clone(), String::new()));
    }
    if !jwt.forward_token {
        report(m, format!(
            "QuotaPolicy {}: API Gateway sends the Authorization header on to the backend (forwardToken: false is not carried)",
            policy.id
        ));
    }
    let mut audiences = jwt.audiences.clone();
    audiences.sort();
    audiences.dedup();
    let key = authorizer_key(&policy.id);
    m.resources
        .insert((Kind::Authorizer, key.clone()), Spec::Authorizer { issuer: jwt.issuer.clone(), audiences });
    Some((key, jwt.consumer_header.clone(), jwt.consumer_claim.clone()))
}

/// An authorizer's name: `jwt-` and 128 bits of the SHA-256 of what it stands for, so that no
/// policy can be named to collide with another's.
fn authorizer_key(of: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("jwt-{}", hex::encode(&Sha256::digest(of.as_bytes())[..16]))
}

/// The rate limit of the policy guarding a route when it applies to everyone (no keys).
fn route_throttle(gateway: &GatewayIr, route: &RouteIr) -> Option<Throttle> {
    let policy = gateway.policies.iter().find(|p| Some(&p.id) == route.policy.as_ref())?;
    let rate = policy.rate_limit?;
    Some(Throttle {
        rate: f64::from(rate.requests) / rate.period_seconds.max(1) as f64,
        burst: rate.burst as i32,
    })
}

/// Splits `http://host:port/base` into the origin and the base path (no trailing slash).
fn split_url(url: &str) -> (String, String) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => {
            (url[..after_scheme + i].to_string(), url[after_scheme + i..].trim_end_matches('/').to_string())
        }
        None => (url.to_string(), String::new()),
    }
}

/// An ARN target goes through the configured VPC link; anything else over the internet.
fn integration_target(url: &str, settings: &AwsSettings) -> (String, Option<String>) {
    match &settings.vpc_link_id {
        Some(link) if url.starts_with("arn:") => (url.to_string(), Some(link.clone())),
        _ => (url.to_string(), None),
    }
}

fn map_rest(
    gateway: &GatewayIr,
    settings: &AwsSettings,
    routes: &[Entry<'_>],
    tags: &BTreeMap<String, String>,
    now: i64,
    m: &mut Mapping,
) {
    let mut methods = BTreeMap::new();
    for entry in routes {
        let usable = match entry {
            Entry::Serve(usable) => usable,
            Entry::Close(route) => {
                close_rest(route, &mut methods, m);
                continue;
            }
        };
        let route = usable.route;
        let Some(paths) = route_paths(&route.matcher.path) else { continue };
        let (url, base_path) = split_url(usable.url);
        let (modifiers, problems) = header_changes(route, usable.backend);
        m.unprovisioned.extend(problems);
        let policy = gateway.policies.iter().find(|p| Some(&p.id) == route.policy.as_ref());
        let api_key_required = policy.and_then(|p| p.api_key.as_ref()).is_some_and(|k| k.required);
        for (path, greedy) in paths {
            let resource = if greedy { join(&path, "/{proxy+}") } else { path.clone() };
            let method_key = format!("{} {resource}", route.matcher.method.as_deref().unwrap_or("ANY"));
            if methods.contains_key(&method_key) {
                continue;
            }
            let mut parameters = BTreeMap::new();
            if greedy {
                parameters.insert(
                    "integration.request.path.proxy".to_string(),
                    "method.request.path.proxy".to_string(),
                );
            }
            for modifier in &modifiers {
                for h in modifier.set.iter().chain(&modifier.add) {
                    parameters
                        .insert(format!("integration.request.header.{}", h.name), format!("'{}'", h.value));
                }
                if !modifier.remove.is_empty() {
                    m.unprovisioned.push(format!(
                        "HTTPRoute {}: REST APIs cannot remove request headers",
                        route.id.route()
                    ));
                }
            }
            let upstream = upstream_path(route, &path, greedy, "{proxy}");
            let (uri, vpc_link) =
                integration_target(&format!("{url}{}", join(&base_path, &upstream)), settings);
            let spec = Spec::Method {
                api_key_required,
                uri,
                vpc_link,
                timeout_ms: timeout_ms(route, REST_MAX_TIMEOUT_MS),
                parameters,
            };
            for ancestor in ancestors(&resource) {
                m.resources.insert((Kind::Resource, ancestor), Spec::Resource);
            }
            methods.insert(method_key, spec);
        }
    }
    m.resources.insert((Kind::Resource, "/".into()), Spec::Resource);
    let digest = short_hash(&format!("{methods:?}"));
    for (key, spec) in methods {
        m.resources.insert((Kind::Method, key), spec);
    }
    m.resources
        .insert((Kind::Deployment, REST_STAGE.into()), Spec::Deployment { stage: REST_STAGE.into(), digest });
    map_usage_plans(gateway, tags, now, m);
}

/// Closes `route` on a REST API: its methods point at an address that cannot resolve, so they
/// answer 5xx instead of falling to a broader method that would serve their paths.
fn close_rest(route: &RouteIr, methods: &mut BTreeMap<String, Spec>, m: &mut Mapping) {
    let Some(paths) = route_paths(&route.matcher.path) else { return };
    for (path, greedy) in paths {
        let resource = if greedy { join(&path, "/{proxy+}") } else { path.clone() };
        let method_key = format!("{} {resource}", route.matcher.method.as_deref().unwrap_or("ANY"));
        if methods.contains_key(&method_key) {
            continue;
        }
        for ancestor in ancestors(&resource) {
            m.resources.insert((Kind::Resource, ancestor), Spec::Resource);
        }
        let closed = Spec::Method {
            api_key_required: false,
            uri: DENY_TARGET.to_string(),
            vpc_link: None,
            timeout_ms: 1_000,
            parameters: BTreeMap::new(),
        };
        methods.insert(method_key, closed);
    }
    report(
        m,
        format!(
            "HTTPRoute {}: its paths answer 5xx on this REST API (closed, not left to broader routes)",
            route.id.route()
        ),
    );
}

/// Every resource path from the first segment down to `path` (the root `/` exists already).
fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        current.push('/');
        current.push_str(segment);
        out.push(current.clone());
    }
    out
}

fn map_usage_plans(gateway: &GatewayIr, tags: &BTreeMap<String, String>, now: i64, m: &mut Mapping) {
    let mut key_names = BTreeSet::new();
    for policy in gateway.policies.iter().filter(|p| needs_usage_plan(p) || p.rate_limit.is_some()) {
        if let Some(settings) = &policy.api_key {
            if settings.query_param.is_some() || settings.header.as_deref().is_some_and(|h| h != "x-api-key")
            {
                m.unprovisioned.push(format!(
                    "QuotaPolicy {}: REST APIs read keys from the x-api-key header only",
                    policy.id
                ));
            }
        }
        let throttle = policy.rate_limit.map(|r| Throttle {
            rate: f64::from(r.requests) / r.period_seconds.max(1) as f64,
            burst: r.burst as i32,
        });
        let quota = policy.quota.map(|q| {
            let period = match q.period {
                QuotaPeriod::Day => "DAY",
                QuotaPeriod::Week => "WEEK",
                QuotaPeriod::Month => "MONTH",
            };
            (q.requests.min(i32::MAX as u64) as i32, period.to_string())
        });
        let name = format!("tollbridge {}/{} {}", gateway.key.namespace, gateway.key.name, policy.id);
        m.resources.insert(
            (Kind::UsagePlan, policy.id.clone()),
            Spec::UsagePlan { name, throttle, quota, tags: tags.clone() },
        );
        for key in &policy.keys {
            let key_name = format!("tollbridge {}/{} {}", gateway.key.namespace, gateway.key.name, key.id);
            // The key id carries the value's hash: a new value is a new API key (values are immutable).
            let resource = format!("{} {}", key.id, key.key_id());
            if !key_names.insert(resource.clone()) {
                continue;
            }
            let enabled = !key.disabled && key.expires_at.is_none_or(|at| at > now);
            let spec =
                Spec::ApiKey { name: key_name, value: Some(key.value.clone()), enabled, tags: tags.clone() };
            m.resources.insert((Kind::ApiKey, resource.clone()), spec);
            let link = Spec::UsagePlanKey { plan: policy.id.clone(), key: resource.clone() };
            m.resources.insert((Kind::UsagePlanKey, format!("{} {resource}", policy.id)), link);
        }
    }
}

fn map_domains(
    gateway: &GatewayIr,
    settings: &AwsSettings,
    tags: &BTreeMap<String, String>,
    api_type: ApiType,
    m: &mut Mapping,
) {
    for listener in &gateway.listeners {
        let Some(host) = listener.hostname.as_deref() else { continue };
        if listener.protocol != ListenerProtocol::Https {
            continue;
        }
        if host.starts_with('*') {
            m.unprovisioned.push(format!(
                "listener {}: wildcard hostnames need a wildcard certificate; not mapped",
                listener.name
            ));
            continue;
        }
        let Some(certificate_arn) = settings.certificate_arn.clone() else {
            m.unprovisioned.push(format!(
                "listener {}: custom domain {host} needs aws.certificateARN in the ProviderConfig",
                listener.name
            ));
            continue;
        };
        let (domain, mapping, stage) = match api_type {
            ApiType::Http => (Kind::DomainName, Kind::ApiMapping, HTTP_STAGE),
            ApiType::Rest => (Kind::RestDomainName, Kind::BasePathMapping, REST_STAGE),
        };
        m.resources.insert((domain, host.into()), Spec::DomainName { certificate_arn, tags: tags.clone() });
        m.resources.insert((mapping, host.into()), Spec::ApiMapping { stage: stage.into() });
    }
}

#[cfg(test)]
mod tests {
    use tollbridge_provider::{
        ApiKeyIr, ApiKeySettingsIr, AttachmentIr, FiltersIr, LocalSettings, MatchIr, ProviderSettings,
        QuotaIr, RateLimitIr, RouteId, SecretString, TimeoutsIr, UrlRewrite,
    };

    use super::*;

    fn backend(url: &str) -> BackendIr {
        BackendIr {
            name: "apps/web:80".into(),
            weight: 1,
            target: BackendTarget::Url { url: url.into() },
            protocol: Default::default(),
            tls: None,
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
        }
    }

    fn route(name: &str, path: PathMatch, url: &str) -> RouteIr {
        RouteIr {
            id: RouteId { namespace: "apps".into(), name: name.into(), ..RouteId::default() },
            attachments: vec![AttachmentIr { listener: "http".into(), hostnames: Vec::new() }],
            matcher: MatchIr { path, method: None, headers: Vec::new(), query_params: Vec::new() },
            filters: FiltersIr::default(),
            action: ActionIr::Forward { backends: vec![backend(url)] },
            timeouts: TimeoutsIr::default(),
            retry: None,
            policy: None,
        }
    }

    fn gateway(routes: Vec<RouteIr>, policies: Vec<QuotaPolicyIr>) -> GatewayIr {
        GatewayIr {
            key: GatewayKey { namespace: "apps".into(), name: "gw".into(), uid: "u".into(), generation: 1 },
            provider: ProviderSettings::Local(LocalSettings::default()),
            listeners: Vec::new(),
            addresses: Vec::new(),
            infrastructure: Default::default(),
            routes,
            policies,
        }
    }

    fn settings(api_type: &str) -> AwsSettings {
        AwsSettings { region: "us-east-1".into(), api_type: api_type.into(), ..AwsSettings::default() }
    }

    fn keys_of(m: &Mapping, kind: Kind) -> Vec<String> {
        m.resources.keys().filter(|(k, _)| *k == kind).map(|(_, key)| key.clone()).collect()
    }

    #[test]
    fn http_route_keys_for_exact_prefix_and_root() {
        let gw = gateway(
            vec![
                route("a", PathMatch::Exact("/exact".into()), "https://a.example.com"),
                route("b", PathMatch::Prefix("/orders".into()), "https://b.example.com/base"),
                route("c", PathMatch::Prefix("/".into()), "https://c.example.com"),
            ],
            Vec::new(),
        );
        let m = map(&gw, &settings("HTTP"), "c1", ApiType::Http, 0);
        assert_eq!(
            keys_of(&m, Kind::Route),
            ["$default", "ANY /", "ANY /exact", "ANY /orders", "ANY /orders/{proxy+}"]
        );
        let Spec::Route { integration, .. } = &m.resources[&(Kind::Route, "ANY /orders/{proxy+}".into())]
        else {
            panic!()
        };
        let Spec::Integration { uri, parameters, timeout_ms, .. } =
            &m.resources[&(Kind::Integration, integration.clone())]
        else {
            panic!()
        };
        assert_eq!(uri, "https://b.example.com");
        assert_eq!(parameters["overwrite:path"], "/base$request.path");
        assert_eq!(*timeout_ms, 30_000);
        let Spec::Api { tags, .. } = &m.resources[&(Kind::Api, API_KEY.into())] else { panic!() };
        assert_eq!(tags[OWNER_TAG], "c1/apps/gw");
        assert!(m.unprovisioned.is_empty(), "{:?}", m.unprovisioned);
    }

    #[test]
    fn prefix_rewrite_and_headers_become_parameter_mapping() {
        let mut r = route("a", PathMatch::Prefix("/v1".into()), "https://a.example.com");
        r.filters.url_rewrite = Some(UrlRewrite {
            hostname: None,
            path: Some(PathModifier::Prefix { matched: "/v1".into(), replacement: "/api".into() }),
        });
        r.filters
            .request_headers
            .set
            .push(tollbridge_provider::HeaderValue { name: "x-env".into(), value: "prod".into() });
        r.filters.request_headers.remove.push("host".into());
        r.timeouts.request_ms = Some(90_000);
        let m = map(&gateway(vec![r], Vec::new()), &settings("HTTP"), "c1", ApiType::Http, 0);
        let integrations: Vec<&Spec> =
            m.resources.iter().filter(|((k, _), _)| *k == Kind::Integration).map(|(_, s)| s).collect();
        let paths: Vec<&str> = integrations
            .iter()
            .map(|s| match s {
                Spec::Integration { parameters, timeout_ms, .. } => {
                    assert_eq!(*timeout_ms, 30_000, "capped at the HTTP API maximum");
                    assert_eq!(parameters["overwrite:header.x-env"], "prod");
                    parameters["overwrite:path"].as_str()
                }
                _ => unreachable!(),
            })
            .collect();
        assert!(paths.contains(&"/api") && paths.contains(&"/api/$request.path.proxy"), "{paths:?}");
        assert_eq!(m.unprovisioned, ["HTTPRoute apps/a: header host cannot be changed on API Gateway"]);
    }

    #[test]
    fn cluster_services_and_redirects_are_reported_not_dropped() {
        let mut internal = route("internal", PathMatch::Prefix("/in".into()), "unused");
        internal.action = ActionIr::Forward {
            backends: vec![BackendIr {
                target: BackendTarget::Endpoints { endpoints: Vec::new() },
                ..backend("x")
            }],
        };
        let m = map(&gateway(vec![internal], Vec::new()), &settings("HTTP"), "c1", ApiType::Http, 0);
        assert!(m.unprovisioned[0].contains("is a cluster Service"), "{:?}", m.unprovisioned);
        // Closed, not left out: a broader route must not answer its paths.
        assert_eq!(keys_of(&m, Kind::Route), ["ANY /in", "ANY /in/{proxy+}"]);
        let Spec::Route { authorizer: Some(deny), .. } = &m.resources[&(Kind::Route, "ANY /in".into())]
        else {
            panic!("the closed route has no authorizer");
        };
        let Spec::Authorizer { issuer, audiences } = &m.resources[&(Kind::Authorizer, deny.clone())] else {
            panic!("no authorizer {deny}");
        };
        assert_eq!(
            (issuer.as_str(), audiences.as_slice()),
            (DENY_ISSUER, [DENY_AUDIENCE.to_string()].as_slice())
        );
        assert!(m.unprovisioned[1].contains("its paths answer 401"), "{:?}", m.unprovisioned);
        // A REST API closes it too: its methods point where nothing answers.
        let rest =
            map(&gateway(vec![internal_route()], Vec::new()), &settings("REST"), "c1", ApiType::Rest, 0);
        assert_eq!(keys_of(&rest, Kind::Method), ["ANY /in", "ANY /in/{proxy+}"]);
        let Spec::Method { uri, .. } = &rest.resources[&(Kind::Method, "ANY /in".into())] else {
            panic!("no method")
        };
        assert_eq!(uri, DENY_TARGET);
    }

    fn internal_route() -> RouteIr {
        let mut internal = route("internal", PathMatch::Prefix("/in".into()), "unused");
        internal.action = ActionIr::Forward {
            backends: vec![BackendIr {
                target: BackendTarget::Endpoints { endpoints: Vec::new() },
                ..backend("x")
            }],
        };
        internal
    }

    fn gold_policy(with_keys: bool) -> QuotaPolicyIr {
        QuotaPolicyIr {
            jwt: None,
            id: "apps/gold".into(),
            api_key: with_keys.then(|| ApiKeySettingsIr {
                required: true,
                header: Some("x-api-key".into()),
                query_param: None,
                consumer_header: "x-consumer".into(),
            }),
            rate_limit: Some(RateLimitIr { requests: 10, period_seconds: 1, burst: 20 }),
            quota: with_keys.then_some(QuotaIr { requests: 1000, period: QuotaPeriod::Day }),
            keys: if with_keys {
                vec![ApiKeyIr {
                    id: "apps/alice".into(),
                    consumer: "alice".into(),
                    sha256: "ab".repeat(32),
                    value: SecretString::new("k"),
                    disabled: false,
                    expires_at: Some(100),
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn auto_picks_rest_for_keys_and_http_otherwise() {
        let mut r = route("a", PathMatch::Prefix("/a".into()), "https://a.example.com");
        r.policy = Some("apps/gold".into());
        assert_eq!(
            api_type(&settings("Auto"), &gateway(vec![r.clone()], vec![gold_policy(true)])),
            ApiType::Rest
        );
        assert_eq!(api_type(&settings("Auto"), &gateway(vec![r], vec![gold_policy(false)])), ApiType::Http);
    }

    #[test]
    fn rest_api_with_usage_plan_keys_and_guarded_methods() {
        let mut r = route("a", PathMatch::Prefix("/a/b".into()), "https://a.example.com");
        r.policy = Some("apps/gold".into());
        let gw = gateway(vec![r], vec![gold_policy(true)]);
        let m = map(&gw, &settings("REST"), "c1", ApiType::Rest, 50);
        assert_eq!(keys_of(&m, Kind::Resource), ["/", "/a", "/a/b", "/a/b/{proxy+}"]);
        assert_eq!(keys_of(&m, Kind::Method), ["ANY /a/b", "ANY /a/b/{proxy+}"]);
        let Spec::Method { api_key_required, uri, parameters, .. } =
            &m.resources[&(Kind::Method, "ANY /a/b/{proxy+}".into())]
        else {
            panic!()
        };
        assert!(*api_key_required);
        assert_eq!(uri, "https://a.example.com/a/b/{proxy}");
        assert_eq!(parameters["integration.request.path.proxy"], "method.request.path.proxy");
        let Spec::UsagePlan { throttle, quota, .. } = &m.resources[&(Kind::UsagePlan, "apps/gold".into())]
        else {
            panic!()
        };
        assert_eq!(*throttle, Some(Throttle { rate: 10.0, burst: 20 }));
        assert_eq!(*quota, Some((1000, "DAY".to_string())));
        let Spec::ApiKey { enabled, .. } = &m.resources[&(Kind::ApiKey, "apps/alice abababab".into())] else {
            panic!()
        };
        assert!(*enabled, "not expired at 50");
        assert_eq!(keys_of(&m, Kind::UsagePlanKey), ["apps/gold apps/alice abababab"]);
        let later = map(&gw, &settings("REST"), "c1", ApiType::Rest, 200);
        let Spec::ApiKey { enabled, .. } = &later.resources[&(Kind::ApiKey, "apps/alice abababab".into())]
        else {
            panic!()
        };
        assert!(!*enabled, "expired at 200");
    }
}
