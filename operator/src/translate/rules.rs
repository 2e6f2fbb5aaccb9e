//! Route rules (HTTPRoute, or GRPCRoute lowered to one) → IR entries, checked against the
//! provider's capabilities.

use tollbridge_provider::{
    ActionIr, BackendIr, BackendProtocol, BackendTarget, Capabilities, CorsIr, Feature, FiltersIr,
    HeaderModifier, HeaderValue, KeyValueMatch, MatchIr, MirrorIr, PathMatch, PathModifier, RedirectIr,
    RetryIr, RouteId, RouteIr, RouteKind, StringMatch, TimeoutsIr, UrlRewrite,
};

use super::backends::{self, RefProblem};
use super::conditions::reason;
use super::duration;
use super::index::Index;
use crate::api::gateway::{
    BackendObjectReference, HTTPHeaderFilter, HTTPPathModifier, HTTPRoute, HTTPRouteFilter,
    HTTPRouteFilterType, HTTPRouteMatch, HTTPRouteRule, PathMatchType, PathModifierType, StringMatchType,
};
use crate::snapshot::{name_of, namespace_of, object_id};

/// One rule: its entries (one per match), or why the provider cannot serve it.
pub struct RuleOutcome {
    pub entries: Vec<RouteIr>,
    pub dropped: Option<String>,
    /// `namespace/name` of the BackendTLSPolicies naming the Services of its backends and
    /// mirrors (applied, conflicted or unusable: each reports to the Gateways the rule is on).
    pub backend_tls_policies: Vec<String>,
    /// (policy, why) for each backend a BackendTLSPolicy applies to that cannot be reached as
    /// it asks (the backend answers 500).
    pub backend_tls_problems: Vec<(String, String)>,
}

/// All rules of a route for one provider, plus the first unresolved reference.
pub struct RulesOutcome {
    pub rules: Vec<RuleOutcome>,
    pub ref_problem: Option<RefProblem>,
}

impl RulesOutcome {
    pub fn dropped(&self) -> Vec<String> {
        self.rules.iter().filter_map(|r| r.dropped.clone()).collect()
    }
}

/// A route as the rules see it: an HTTPRoute, or a GRPCRoute lowered to one
/// ([`super::grpc`]) with what its shape could not say.
#[derive(Clone, Copy)]
pub struct RouteSource<'a> {
    pub route: &'a HTTPRoute,
    pub kind: RouteKind,
    /// Why rules are invalid before they are translated: (rule index, message).
    pub invalid: &'a [(usize, String)],
}

impl<'a> RouteSource<'a> {
    pub fn http(route: &'a HTTPRoute) -> Self {
        Self { route, kind: RouteKind::HTTPRoute, invalid: &[] }
    }

    pub fn grpc(lowered: &'a super::grpc::Lowered) -> Self {
        Self { route: &lowered.route, kind: RouteKind::GRPCRoute, invalid: &lowered.invalid }
    }

    /// How attachment and policies name the route: `namespace/name`, with the kind first for
    /// a GRPCRoute.
    pub fn id(&self) -> String {
        match self.kind {
            RouteKind::HTTPRoute => object_id(&self.route.metadata),
            kind => format!("{} {}", kind.name(), object_id(&self.route.metadata)),
        }
    }
}

pub fn translate(source: RouteSource<'_>, index: &Index<'_>, caps: &Capabilities) -> RulesOutcome {
    let route = source.route;
    let mut ref_problem = None;
    let rules = route
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let mut ctx = RuleContext {
                route,
                kind: source.kind,
                index,
                caps,
                rule_index: i,
                needs: Vec::new(),
                invalid: source.invalid.iter().filter(|(r, _)| *r == i).map(|(_, why)| why.clone()).collect(),
                ref_problem: None,
                backend_tls_policies: Vec::new(),
                backend_tls_problems: Vec::new(),
            };
            // The API server refuses duplicate rule names (Gateway API v1.7.0); files are
            // held to the same: the later rule is dropped.
            if let Some(name) = &rule.name {
                if let Some(first) = route.spec.rules[..i].iter().position(|r| r.name.as_ref() == Some(name))
                {
                    ctx.invalid.push(format!("rule name {name:?} is already the name of rule {first}"));
                }
            }
            let entries = ctx.entries(rule);
            if ref_problem.is_none() {
                ref_problem = ctx.ref_problem.take();
            }
            let dropped = ctx.verdict(rule);
            let backend_tls_policies = std::mem::take(&mut ctx.backend_tls_policies);
            let backend_tls_problems = std::mem::take(&mut ctx.backend_tls_problems);
            RuleOutcome {
                entries: if dropped.is_some() { Vec::new() } else { entries },
                dropped,
                backend_tls_policies,
                backend_tls_problems,
            }
        })
        .collect();
    RulesOutcome { rules, ref_problem }
}

struct RuleContext<'a, 'i> {
    route: &'a HTTPRoute,
    kind: RouteKind,
    index: &'a Index<'i>,
    caps: &'a Capabilities,
    rule_index: usize,
    /// Features the rule uses.
    needs: Vec<Feature>,
    /// Values that make the rule invalid whatever the provider.
    invalid: Vec<String>,
    ref_problem: Option<RefProblem>,
    backend_tls_policies: Vec<String>,
    backend_tls_problems: Vec<(String, String)>,
}

impl RuleContext<'_, '_> {
    /// Last steps for a resolved backend (of `reference`): notes the BackendTLSPolicies that
    /// name its Service (they report to the Gateways the rule is on); for a GRPCRoute, speaks
    /// h2c to it, whatever its port's `appProtocol` says (gRPC needs HTTP/2; GRPCRoute's spec
    /// defaults to prior knowledge), and never in plaintext where TLS was asked for.
    fn finish_backend(&mut self, reference: &BackendObjectReference, backend: &mut BackendIr) {
        if reference.group.as_deref().unwrap_or("").is_empty()
            && reference.kind.as_deref().unwrap_or("Service") == "Service"
        {
            let namespace = reference.namespace.as_deref().unwrap_or(namespace_of(&self.route.metadata));
            for policy in self.index.backend_tls.naming(namespace, &reference.name) {
                if !self.backend_tls_policies.contains(policy) {
                    self.backend_tls_policies.push(policy.clone());
                }
            }
        }
        if self.kind == RouteKind::GRPCRoute && !matches!(backend.target, BackendTarget::Invalid { .. }) {
            Self::speak_grpc(backend);
        }
        // Why the policy could not be followed to this backend goes on the policy's status.
        if let (Some(tls), BackendTarget::Invalid { reason }) = (&backend.tls, &backend.target) {
            let problem = (tls.policy.clone(), reason.clone());
            if reason.starts_with("BackendTLSPolicy ") && !self.backend_tls_problems.contains(&problem) {
                self.backend_tls_problems.push(problem);
            }
        }
    }

    /// A GRPCRoute's backend: spoken to in h2c (gRPC needs HTTP/2), never in plaintext where
    /// TLS was asked for.
    fn speak_grpc(backend: &mut BackendIr) {
        backend.protocol = BackendProtocol::H2c;
        let unusable = match (&backend.tls, &backend.target) {
            (Some(tls), _) => Some(format!(
                "BackendTLSPolicy {}: gRPC over TLS to backends is not supported yet",
                tls.policy
            )),
            (None, BackendTarget::Url { url }) if url.starts_with("https://") => {
                Some(format!("{url}: gRPC over TLS to backends is not supported yet"))
            }
            _ => None,
        };
        if let Some(reason) = unusable {
            backend.target = BackendTarget::Invalid { reason };
        }
    }

    fn need(&mut self, feature: Feature) {
        if !self.needs.contains(&feature) {
            self.needs.push(feature);
        }
    }

    fn refs(&mut self, problem: Option<RefProblem>) {
        if self.ref_problem.is_none() {
            self.ref_problem = problem;
        }
    }

    /// Why the rule is dropped (unsupported or invalid), in a message naming rule and feature.
    fn verdict(&self, rule: &HTTPRouteRule) -> Option<String> {
        let label = match &rule.name {
            Some(name) => format!("rule {} ({name})", self.rule_index),
            None => format!("rule {}", self.rule_index),
        };
        let mut why: Vec<String> = self.invalid.clone();
        why.extend(
            self.needs
                .iter()
                .filter(|f| !self.caps.supports(**f))
                .map(|f| format!("{} is not supported by {}", f.name(), self.caps.provider)),
        );
        (!why.is_empty()).then(|| format!("{label}: {}", why.join("; ")))
    }

    fn entries(&mut self, rule: &HTTPRouteRule) -> Vec<RouteIr> {
        let filters = self.filters(&rule.filters);
        let timeouts = self.timeouts(rule);
        let retry = self.retry(rule);
        let backends = self.backends(rule);
        let default_match = [HTTPRouteMatch::default()];
        let matches = if rule.matches.is_empty() { &default_match[..] } else { &rule.matches[..] };
        let namespace = namespace_of(&self.route.metadata).to_string();
        let name = name_of(&self.route.metadata).to_string();
        let redirect = rule.filters.iter().find_map(|f| {
            f.request_redirect.as_ref().filter(|_| f.type_ == HTTPRouteFilterType::RequestRedirect)
        });
        let unresolvable_filter = rule.filters.iter().any(|f| f.type_ == HTTPRouteFilterType::ExtensionRef);
        let url_rewrite_path = rule.filters.iter().find_map(|f| {
            f.url_rewrite
                .as_ref()
                .filter(|_| f.type_ == HTTPRouteFilterType::URLRewrite)
                .and_then(|r| r.path.clone())
        });

        matches
            .iter()
            .enumerate()
            .map(|(match_index, m)| {
                let matcher = self.matcher(m);
                let matched_prefix = match &matcher.path {
                    PathMatch::Prefix(p) => Some(p.clone()),
                    _ => None,
                };
                let mut filters = filters.clone();
                if let Some(path) = &url_rewrite_path {
                    filters.url_rewrite.get_or_insert_with(UrlRewrite::default).path =
                        self.path_modifier(path, matched_prefix.as_deref());
                }
                let action = if unresolvable_filter {
                    ActionIr::Respond { status: 500 }
                } else if let Some(redirect) = redirect {
                    ActionIr::Redirect(RedirectIr {
                        scheme: redirect.scheme.clone(),
                        hostname: redirect.hostname.clone(),
                        port: redirect.port.and_then(|p| u16::try_from(p).ok()),
                        path: redirect
                            .path
                            .as_ref()
                            .and_then(|p| self.path_modifier(p, matched_prefix.as_deref())),
                        status: redirect.status_code.and_then(|s| u16::try_from(s).ok()).unwrap_or(302),
                    })
                } else {
                    forward_or_500(&backends)
                };
                RouteIr {
                    id: RouteId {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        rule: self.rule_index,
                        match_index,
                        rule_name: rule.name.clone(),
                        kind: self.kind,
                    },
                    attachments: Vec::new(),
                    matcher,
                    filters,
                    action,
                    timeouts: timeouts.clone(),
                    retry: retry.clone(),
                    policy: None,
                }
            })
            .collect()
    }

    fn matcher(&mut self, m: &HTTPRouteMatch) -> MatchIr {
        let path = m.path.clone().unwrap_or_default();
        let path = match path.type_ {
            PathMatchType::Exact => PathMatch::Exact(path.value),
            PathMatchType::PathPrefix => PathMatch::Prefix(normalize_prefix(&path.value)),
            PathMatchType::RegularExpression => {
                self.need(Feature::RegexMatching);
                self.check_regex(&path.value);
                PathMatch::Regex(path.value)
            }
        };
        let method = m.method.clone();
        if method.is_some() {
            self.need(Feature::HTTPRouteMethodMatching);
        }
        if !m.headers.is_empty() {
            self.need(Feature::HeaderMatching);
        }
        if !m.query_params.is_empty() {
            self.need(Feature::HTTPRouteQueryParamMatching);
        }
        let mut headers: Vec<KeyValueMatch> = Vec::new();
        for h in &m.headers {
            if !self.check_header_name(&h.name) {
                continue;
            }
            let name = h.name.to_ascii_lowercase();
            // The spec: among matches with the same (case-insensitive) name, the first wins.
            if headers.iter().all(|x| x.name != name) {
                headers.push(KeyValueMatch { name, value: self.string_match(h.type_, &h.value) });
            }
        }
        let mut query_params: Vec<KeyValueMatch> = Vec::new();
        for q in &m.query_params {
            if query_params.iter().all(|x| x.name != q.name) {
                query_params.push(KeyValueMatch {
                    name: q.name.clone(),
                    value: self.string_match(q.type_, &q.value),
                });
            }
        }
        MatchIr { path, method, headers, query_params }
    }

    fn string_match(&mut self, type_: StringMatchType, value: &str) -> StringMatch {
        match type_ {
            StringMatchType::Exact => StringMatch::Exact(value.to_string()),
            StringMatchType::RegularExpression => {
                self.need(Feature::RegexMatching);
                self.check_regex(value);
                StringMatch::Regex(value.to_string())
            }
        }
    }

    /// Header names must be HTTP tokens (the CRD enforces this in a cluster; files are not
    /// checked against the CRD schema).
    fn check_header_name(&mut self, name: &str) -> bool {
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            self.invalid.push(format!("invalid header name {name:?}"));
        }
        valid
    }

    fn header_modifier(&mut self, filter: Option<&HTTPHeaderFilter>) -> HeaderModifier {
        let Some(filter) = filter else { return HeaderModifier::default() };
        let pairs = |ctx: &mut Self, list: &[crate::api::gateway::HTTPHeader]| {
            list.iter()
                .filter(|h| ctx.check_header_name(&h.name) && ctx.check_header_value(&h.value))
                .map(|h| HeaderValue { name: h.name.to_ascii_lowercase(), value: h.value.clone() })
                .collect()
        };
        let set = pairs(self, &filter.set);
        let add = pairs(self, &filter.add);
        let remove = filter
            .remove
            .iter()
            .filter(|n| self.check_header_name(n))
            .map(|n| n.to_ascii_lowercase())
            .collect();
        HeaderModifier { set, add, remove }
    }

    /// Header values may not hold control characters (CR and LF above all).
    fn check_header_value(&mut self, value: &str) -> bool {
        let valid = value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        if !valid {
            self.invalid.push(format!("invalid header value {value:?}"));
        }
        valid
    }

    fn check_regex(&mut self, pattern: &str) {
        if let Err(e) = regex::Regex::new(pattern) {
            self.invalid
                .push(format!("invalid regular expression {pattern:?}: {}", last_line(&e.to_string())));
        }
    }

    fn filters(&mut self, filters: &[HTTPRouteFilter]) -> FiltersIr {
        let mut out = FiltersIr::default();
        for filter in filters {
            match filter.type_ {
                HTTPRouteFilterType::RequestHeaderModifier => {
                    self.need(Feature::RequestHeaderModification);
                    out.request_headers = self.header_modifier(filter.request_header_modifier.as_ref());
                }
                HTTPRouteFilterType::ResponseHeaderModifier => {
                    self.need(Feature::HTTPRouteResponseHeaderModification);
                    out.response_headers = self.header_modifier(filter.response_header_modifier.as_ref());
                }
                HTTPRouteFilterType::RequestRedirect => {
                    self.need(Feature::RequestRedirect);
                    if let Some(r) = &filter.request_redirect {
                        if r.scheme.is_some() {
                            self.need(Feature::HTTPRouteSchemeRedirect);
                        }
                        if r.port.is_some() {
                            self.need(Feature::HTTPRoutePortRedirect);
                        }
                        if r.path.is_some() {
                            self.need(Feature::HTTPRoutePathRedirect);
                        }
                        match r.status_code {
                            Some(303) => self.need(Feature::HTTPRoute303RedirectStatusCode),
                            Some(307) => self.need(Feature::HTTPRoute307RedirectStatusCode),
                            Some(308) => self.need(Feature::HTTPRoute308RedirectStatusCode),
                            None | Some(301) | Some(302) => {}
                            Some(other) => {
                                self.invalid.push(format!("redirect status code {other} is not allowed"))
                            }
                        }
                    }
                }
                HTTPRouteFilterType::URLRewrite => {
                    if let Some(r) = &filter.url_rewrite {
                        if r.hostname.is_some() {
                            self.need(Feature::HTTPRouteHostRewrite);
                        }
                        if r.path.is_some() {
                            self.need(Feature::HTTPRoutePathRewrite);
                        }
                        out.url_rewrite = Some(UrlRewrite { hostname: r.hostname.clone(), path: None });
                    }
                }
                HTTPRouteFilterType::RequestMirror => {
                    self.need(Feature::HTTPRouteRequestMirror);
                    if let Some(mirror) = &filter.request_mirror {
                        if let Some(m) = self.mirror(mirror) {
                            out.mirrors.push(m);
                        }
                    }
                }
                HTTPRouteFilterType::Cors => {
                    self.need(Feature::HTTPRouteCORS);
                    if let Some(cors) = &filter.cors {
                        out.cors = Some(CorsIr {
                            allow_origins: cors.allow_origins.clone(),
                            allow_credentials: cors.allow_credentials.unwrap_or(false),
                            allow_methods: cors.allow_methods.clone(),
                            allow_headers: cors.allow_headers.clone(),
                            expose_headers: cors.expose_headers.clone(),
                            max_age_seconds: cors.max_age.and_then(|a| u32::try_from(a).ok()).unwrap_or(5),
                        });
                    }
                }
                HTTPRouteFilterType::ExtensionRef => {
                    let what = filter
                        .extension_ref
                        .as_ref()
                        .map(|e| format!("ExtensionRef {}/{} {}", e.group, e.kind, e.name))
                        .unwrap_or_else(|| "ExtensionRef".into());
                    self.refs(Some(RefProblem {
                        reason: reason::INVALID_KIND,
                        message: format!("{what} is not supported; matching requests get 500"),
                    }));
                }
                HTTPRouteFilterType::Unknown => {
                    self.invalid.push("filter type is not a Gateway API standard filter".into());
                }
            }
        }
        if out.mirrors.len() > 1 {
            self.need(Feature::HTTPRouteRequestMultipleMirrors);
        }
        out
    }

    fn mirror(&mut self, mirror: &crate::api::gateway::HTTPRequestMirrorFilter) -> Option<MirrorIr> {
        let (numerator, denominator) = match (mirror.percent, mirror.fraction) {
            (Some(p), _) => (p, 100),
            (None, Some(f)) => (f.numerator, f.denominator),
            (None, None) => (100, 100),
        };
        if mirror.percent.is_some() || mirror.fraction.is_some() {
            self.need(Feature::HTTPRouteRequestPercentageMirror);
        }
        if denominator <= 0 || numerator < 0 || numerator > denominator {
            self.invalid.push(format!("mirror fraction {numerator}/{denominator} is not between 0 and 1"));
            return None;
        }
        let namespace = namespace_of(&self.route.metadata);
        let (mut backend, problem) =
            backends::resolve(&mirror.backend_ref, 1, namespace, self.index, self.caps);
        let resolved = problem.is_none();
        self.refs(problem);
        self.finish_backend(&mirror.backend_ref, &mut backend);
        resolved.then_some(MirrorIr { backend, numerator: numerator as u32, denominator: denominator as u32 })
    }

    fn path_modifier(
        &mut self,
        path: &HTTPPathModifier,
        matched_prefix: Option<&str>,
    ) -> Option<PathModifier> {
        match path.type_ {
            PathModifierType::ReplaceFullPath => Some(PathModifier::Full {
                path: path.replace_full_path.clone().unwrap_or_else(|| "/".into()),
            }),
            PathModifierType::ReplacePrefixMatch => match matched_prefix {
                Some(matched) => Some(PathModifier::Prefix {
                    matched: matched.to_string(),
                    replacement: path.replace_prefix_match.clone().unwrap_or_else(|| "/".into()),
                }),
                None => {
                    let msg = "ReplacePrefixMatch requires a PathPrefix match".to_string();
                    if !self.invalid.contains(&msg) {
                        self.invalid.push(msg);
                    }
                    None
                }
            },
        }
    }

    fn timeouts(&mut self, rule: &HTTPRouteRule) -> TimeoutsIr {
        let Some(t) = &rule.timeouts else { return TimeoutsIr::default() };
        let parse = |value: &Option<String>, feature: Feature, ctx: &mut Self| -> Option<u64> {
            let value = value.as_ref()?;
            ctx.need(feature);
            match duration::parse_millis(value) {
                Ok(0) => None,
                Ok(ms) => {
                    if let Some(max) = ctx.caps.max_timeout {
                        if u128::from(ms) > max.as_millis() {
                            ctx.invalid.push(format!(
                                "timeout {value} exceeds the {} s maximum of {}",
                                max.as_secs(),
                                ctx.caps.provider
                            ));
                        }
                    }
                    Some(ms)
                }
                Err(e) => {
                    ctx.invalid.push(e);
                    None
                }
            }
        };
        let request_ms = parse(&t.request, Feature::HTTPRouteRequestTimeout, self);
        let backend_request_ms = parse(&t.backend_request, Feature::HTTPRouteBackendTimeout, self);
        if let (Some(request), Some(backend)) = (request_ms, backend_request_ms) {
            if backend > request {
                self.invalid.push("backendRequest timeout must not exceed the request timeout".into());
            }
        }
        TimeoutsIr { request_ms, backend_request_ms }
    }

    /// The rule's `retry`; `None` when absent or with zero attempts (retries disabled).
    fn retry(&mut self, rule: &HTTPRouteRule) -> Option<RetryIr> {
        let retry = rule.retry.as_ref()?;
        let attempts = retry.attempts.unwrap_or(1);
        if !(0..=MAX_RETRY_ATTEMPTS).contains(&attempts) {
            self.invalid
                .push(format!("retry.attempts {attempts} must be between 0 and {MAX_RETRY_ATTEMPTS}"));
            return None;
        }
        let mut codes = Vec::with_capacity(retry.codes.len());
        for &code in &retry.codes {
            match u16::try_from(code).ok().filter(|c| (400..=599).contains(c)) {
                Some(code) => codes.push(code),
                None => {
                    self.invalid.push(format!("retry.codes {code} is not an HTTP status from 400 to 599"))
                }
            }
        }
        codes.sort_unstable();
        codes.dedup();
        let backoff_ms = match retry.backoff.as_deref().map(duration::parse_millis) {
            None => None,
            Some(Ok(ms)) => Some(ms),
            Some(Err(e)) => {
                self.invalid.push(format!("retry.backoff: {e}"));
                None
            }
        };
        if attempts == 0 {
            return None;
        }
        self.need(Feature::HTTPRouteRetryConnectionError);
        if !codes.is_empty() {
            self.need(Feature::HTTPRouteRetryCodes);
        }
        Some(RetryIr { codes, attempts: attempts as u32, backoff_ms })
    }

    fn backends(&mut self, rule: &HTTPRouteRule) -> Vec<BackendIr> {
        let namespace = namespace_of(&self.route.metadata).to_string();
        let mut out = Vec::new();
        for backend_ref in &rule.backend_refs {
            let weight = backend_ref.weight.unwrap_or(1).max(0) as u32;
            let reference = backend_ref.object();
            let (mut backend, problem) =
                backends::resolve(&reference, weight, &namespace, self.index, self.caps);
            self.refs(problem);
            self.finish_backend(&reference, &mut backend);
            for filter in &backend_ref.filters {
                match filter.type_ {
                    HTTPRouteFilterType::RequestHeaderModifier => {
                        self.need(Feature::HTTPRouteBackendRequestHeaderModification);
                        backend.request_headers =
                            self.header_modifier(filter.request_header_modifier.as_ref());
                    }
                    HTTPRouteFilterType::ResponseHeaderModifier => {
                        self.need(Feature::HTTPRouteBackendRequestHeaderModification);
                        self.need(Feature::HTTPRouteResponseHeaderModification);
                        backend.response_headers =
                            self.header_modifier(filter.response_header_modifier.as_ref());
                    }
                    ref other => self.invalid.push(format!(
                        "backendRef {} filter {other:?} is not supported; only header modifiers are",
                        backend.name
                    )),
                }
            }
            if weight > 0 {
                out.push(backend);
            }
        }
        if out.len() > 1 {
            self.need(Feature::WeightedBackends);
        }
        out
    }
}

/// The most retries one request may make: enough for any sane rule, and a bound on what one
/// request can cost a failing backend.
const MAX_RETRY_ATTEMPTS: i32 = 100;

/// Forward to the backends; 500 when there are none or none is valid.
fn forward_or_500(backends: &[BackendIr]) -> ActionIr {
    let any_valid = backends.iter().any(|b| !matches!(b.target, BackendTarget::Invalid { .. }));
    if any_valid {
        ActionIr::Forward { backends: backends.to_vec() }
    } else {
        ActionIr::Respond { status: 500 }
    }
}

/// `/a/` and `/a` match the same requests; keep one form (the root stays `/`).
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The last line of a (possibly multi-line) error message: the part that says what is wrong.
fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or(text).trim()
}
