//! QuotaPolicy attachment and conflict resolution, ApiKey resolution, and their statuses.
//!
//! The most specific target wins for a request (HTTPRoute rule > HTTPRoute > Gateway listener
//! then Gateway); among policies with the same target the oldest wins and the others
//! are `Conflicted`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use sha2::{Digest, Sha256};
use tollbridge_provider::{
    ActionIr, ApiKeyIr, ApiKeySettingsIr, AttachmentIr, Feature, JwksIr, JwtIr, QuotaIr, QuotaPolicyIr,
    RateLimitIr, RequiredClaimIr, RouteIr, SecretString,
};

use super::conditions::{reason, Stamp, ACCEPTED, READY};
use super::gateways::GatewayState;
use super::index::Index;
use super::listeners::secret_value;
use super::routes::Attachments;
use super::{Statuses, CONTROLLER_NAME};
use crate::api::gateway::{ParentReference, GROUP};
use crate::api::tollbridge::{
    ApiKey, ApiKeyStatus, PolicyAncestorStatus, PolicyStatus, QuotaPeriod, QuotaPolicy,
};
use crate::snapshot::subset::HASHED_KEY_SUFFIX;
use crate::snapshot::{age_key, name_of, namespace_of, object_id, Snapshot};

/// A policy target: (namespace, kind, name, sectionName).
type TargetKey = (String, String, String, Option<String>);
/// Creation time and load order: smaller is older.
type Age = (jiff::Timestamp, usize);
/// An ApiKey that cannot be used: the condition it fails, the reason and a message.
type KeyError = (&'static str, &'static str, String);

/// Where an accepted policy applies on one Gateway (by gateway index).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    RouteRule(usize, String, String),
    Route(usize, String),
    Listener(usize, String),
    Gateway(usize),
}

/// What one targetRef of a policy resolved to.
struct Target {
    /// Conflict key: (kind, name, sectionName) in the policy's namespace.
    key: TargetKey,
    /// (ancestor ref, scope on that ancestor) for every Gateway it reaches.
    reach: Vec<(ParentReference, Scope)>,
    /// Why it reaches nothing.
    not_found: Option<(ParentReference, String)>,
}

pub fn resolve(
    snapshot: &Snapshot,
    index: &Index<'_>,
    gateways: &mut [GatewayState<'_>],
    attachments: &Attachments,
    statuses: &mut Statuses,
) {
    // 1. Resolve targets and find the oldest policy per target.
    let mut targets: Vec<(usize, Vec<Target>)> = Vec::new();
    let mut owners: BTreeMap<TargetKey, (Age, String, usize)> = BTreeMap::new();
    for (i, policy) in snapshot.quota_policies.iter().enumerate() {
        let resolved: Vec<Target> =
            policy.spec.target_refs.iter().map(|t| target(policy, t, index, gateways, attachments)).collect();
        let rank = (age_key(&policy.metadata, i), object_id(&policy.metadata));
        for t in resolved.iter().filter(|t| t.not_found.is_none()) {
            let entry = owners.entry(t.key.clone()).or_insert((rank.0, rank.1.clone(), i));
            if (&rank.0, &rank.1) < (&entry.0, &entry.1) {
                *entry = (rank.0, rank.1.clone(), i);
            }
        }
        targets.push((i, resolved));
    }

    // 2. Ancestor conditions, and where each accepted policy applies.
    let mut applied: BTreeMap<Scope, Applied> = BTreeMap::new();
    let mut accepted_policies: BTreeMap<String, usize> = BTreeMap::new();
    for (i, resolved) in &targets {
        let policy = &snapshot.quota_policies[*i];
        let policy_id = object_id(&policy.metadata);
        let stamp = Stamp::new(policy.metadata.generation, snapshot.now);
        let mut ancestors: Vec<(ParentReference, Vec<Condition>)> = Vec::new();
        let mut add = |ancestor: ParentReference, condition: Condition| match ancestors
            .iter_mut()
            .find(|(a, _)| a == &ancestor)
        {
            Some((_, outcomes)) => outcomes.push(condition),
            None => ancestors.push((ancestor, vec![condition])),
        };
        for t in resolved {
            if let Some((ancestor, message)) = &t.not_found {
                add(ancestor.clone(), stamp.no(ACCEPTED, reason::TARGET_NOT_FOUND, message.clone()));
                continue;
            }
            let owner = owners[&t.key].2;
            for (ancestor, scope) in &t.reach {
                if owner != *i {
                    let winner = object_id(&snapshot.quota_policies[owner].metadata);
                    add(
                        ancestor.clone(),
                        stamp.no(
                            ACCEPTED,
                            reason::CONFLICTED,
                            format!(
                                "QuotaPolicy {winner} is older (or first by name) and targets the same {} {}",
                                t.key.1, t.key.2
                            ),
                        ),
                    );
                    continue;
                }
                match invalid(policy).or_else(|| unsupported(policy, &gateways[scope_gateway(scope)])) {
                    Some(message) => {
                        add(ancestor.clone(), stamp.no(ACCEPTED, reason::INVALID, message));
                        // Fail closed: what the policy guards is not served without it.
                        applied.insert(scope.clone(), Applied::Unenforceable);
                    }
                    None => {
                        add(ancestor.clone(), stamp.yes(ACCEPTED, reason::ACCEPTED, "Policy is accepted"));
                        applied.insert(scope.clone(), Applied::Policy(policy_id.clone()));
                        accepted_policies.insert(policy_id.clone(), *i);
                    }
                }
            }
        }
        statuses.quotapolicies.insert(
            policy_id,
            PolicyStatus {
                ancestors: ancestors
                    .into_iter()
                    .map(|(ancestor_ref, outcomes)| PolicyAncestorStatus {
                        ancestor_ref,
                        controller_name: CONTROLLER_NAME.to_string(),
                        conditions: vec![merge_outcomes(stamp, outcomes)],
                    })
                    .collect(),
            },
        );
    }

    // 3. API keys.
    let keys = api_keys(snapshot, index, &accepted_policies, statuses);

    // 4. Policy IR per Gateway, and the policy guarding each route entry.
    for (gw_index, gateway) in gateways.iter_mut().enumerate() {
        // Sized up front: entries are large, and growing the vector would copy them all.
        let room = Vec::with_capacity(gateway.entries.len());
        let entries = std::mem::replace(&mut gateway.entries, room);
        for (key, entry) in entries {
            let mut groups = split_by_policy(gw_index, &entry, &applied);
            // Most entries have one group: the entry itself is moved, not copied.
            let last = groups.pop();
            for (applied_here, attachments) in groups {
                let copy = with_policy(entry.clone(), applied_here, attachments);
                gateway.entries.push((key.clone(), copy));
            }
            if let Some((applied_here, attachments)) = last {
                gateway.entries.push((key, with_policy(entry, applied_here, attachments)));
            }
        }
        let mut on_gateway: Vec<&String> = applied
            .iter()
            .filter(|(scope, _)| scope_gateway(scope) == gw_index)
            .filter_map(|(_, applied)| match applied {
                Applied::Policy(id) => Some(id),
                Applied::Unenforceable => None,
            })
            .collect();
        on_gateway.sort();
        on_gateway.dedup();
        gateway.policies = on_gateway
            .into_iter()
            .map(|id| policy_ir(&snapshot.quota_policies[accepted_policies[id]], keys.get(id)))
            .collect();
    }
}

/// The entry on `attachments`, guarded by what applies there.
fn with_policy(mut entry: RouteIr, applied: Option<Applied>, attachments: Vec<AttachmentIr>) -> RouteIr {
    entry.attachments = attachments;
    match applied {
        Some(Applied::Policy(id)) => entry.policy = Some(id),
        Some(Applied::Unenforceable) => entry.action = ActionIr::Respond { status: 500 },
        None => {}
    }
    entry
}

/// What applies in a scope: an accepted policy, or one the provider cannot enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Applied {
    Policy(String),
    Unenforceable,
}

/// Groups the entry's attachments by the policy that applies on each (the most specific one:
/// rule, route, listener, Gateway); most entries give one group.
fn split_by_policy(
    gw_index: usize,
    entry: &RouteIr,
    applied: &BTreeMap<Scope, Applied>,
) -> Vec<(Option<Applied>, Vec<AttachmentIr>)> {
    let route = entry.id.route();
    let mut groups: Vec<(Option<Applied>, Vec<AttachmentIr>)> = Vec::new();
    for attachment in &entry.attachments {
        let scopes = entry
            .id
            .rule_name
            .clone()
            .map(|r| Scope::RouteRule(gw_index, route.clone(), r))
            .into_iter()
            .chain([
                Scope::Route(gw_index, route.clone()),
                Scope::Listener(gw_index, attachment.listener.clone()),
                Scope::Gateway(gw_index),
            ]);
        let here = scopes.into_iter().find_map(|s| applied.get(&s).cloned());
        match groups.iter_mut().find(|(a, _)| a == &here) {
            Some((_, list)) => list.push(attachment.clone()),
            None => groups.push((here, vec![attachment.clone()])),
        }
    }
    groups
}

/// One condition per ancestor: accepted when the policy applies to any target there.
fn merge_outcomes(stamp: Stamp, outcomes: Vec<Condition>) -> Condition {
    let (accepted, refused): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|c| c.status == "True");
    match accepted.into_iter().next() {
        Some(mut condition) if !refused.is_empty() => {
            let notes: Vec<&str> = refused.iter().map(|c| c.message.as_str()).collect();
            condition.message = format!("Policy is accepted; not applied where: {}", notes.join("; "));
            condition
        }
        Some(condition) => condition,
        None => refused
            .into_iter()
            .next()
            .unwrap_or_else(|| stamp.no(ACCEPTED, reason::INVALID, "Policy has no target")),
    }
}

fn scope_gateway(scope: &Scope) -> usize {
    match scope {
        Scope::RouteRule(g, ..) | Scope::Route(g, _) | Scope::Listener(g, _) | Scope::Gateway(g) => *g,
    }
}

fn gateway_ref(gateway: &GatewayState<'_>, section: Option<String>) -> ParentReference {
    ParentReference {
        group: Some(GROUP.to_string()),
        kind: Some("Gateway".to_string()),
        namespace: Some(gateway.namespace().to_string()),
        name: gateway.name().to_string(),
        section_name: section,
        port: None,
    }
}

fn target(
    policy: &QuotaPolicy,
    target: &crate::api::tollbridge::PolicyTargetReference,
    index: &Index<'_>,
    gateways: &[GatewayState<'_>],
    attachments: &Attachments,
) -> Target {
    let namespace = namespace_of(&policy.metadata);
    let key = (namespace.to_string(), target.kind.clone(), target.name.clone(), target.section_name.clone());
    let self_ref = ParentReference {
        group: Some(target.group.clone()),
        kind: Some(target.kind.clone()),
        namespace: Some(namespace.to_string()),
        name: target.name.clone(),
        section_name: target.section_name.clone(),
        port: None,
    };
    let missing = |message: String| Target {
        key: key.clone(),
        reach: Vec::new(),
        not_found: Some((self_ref.clone(), message)),
    };
    if target.group != GROUP {
        return missing(format!("target group {:?} is not {GROUP}", target.group));
    }
    match target.kind.as_str() {
        "Gateway" => {
            let Some(gw) =
                gateways.iter().position(|g| g.namespace() == namespace && g.name() == target.name)
            else {
                return missing(format!(
                    "Gateway {namespace}/{} of a tollbridge class not found",
                    target.name
                ));
            };
            let scope = match &target.section_name {
                None => Scope::Gateway(gw),
                Some(section) => {
                    if !gateways[gw].listeners.iter().any(|l| &l.name == section) {
                        return missing(format!(
                            "Gateway {namespace}/{} has no listener {section:?}",
                            target.name
                        ));
                    }
                    Scope::Listener(gw, section.clone())
                }
            };
            Target {
                key,
                reach: vec![(gateway_ref(&gateways[gw], target.section_name.clone()), scope)],
                not_found: None,
            }
        }
        kind @ ("HTTPRoute" | "GRPCRoute") => {
            // The route's metadata and rule names, and how attachment names it.
            let found = match kind {
                "HTTPRoute" => index.route(namespace, &target.name).map(|(_, route)| {
                    let rules: Vec<Option<&str>> =
                        route.spec.rules.iter().map(|r| r.name.as_deref()).collect();
                    (object_id(&route.metadata), rules)
                }),
                _ => index.grpc_route(namespace, &target.name).map(|route| {
                    let rules: Vec<Option<&str>> =
                        route.spec.rules.iter().map(|r| r.name.as_deref()).collect();
                    (format!("GRPCRoute {}", object_id(&route.metadata)), rules)
                }),
            };
            let Some((route_id, rule_names)) = found else {
                return missing(format!("{kind} {namespace}/{} not found", target.name));
            };
            if let Some(section) = &target.section_name {
                if !rule_names.contains(&Some(section.as_str())) {
                    return missing(format!(
                        "{kind} {namespace}/{} has no rule named {section:?}",
                        target.name
                    ));
                }
            }
            let reach: Vec<_> = attachments
                .get(&route_id)
                .into_iter()
                .flatten()
                .map(|(gw, _)| {
                    let scope = match &target.section_name {
                        Some(rule) => Scope::RouteRule(*gw, route_id.clone(), rule.clone()),
                        None => Scope::Route(*gw, route_id.clone()),
                    };
                    (gateway_ref(&gateways[*gw], None), scope)
                })
                .collect();
            if reach.is_empty() {
                return missing(format!(
                    "{kind} {namespace}/{} is not accepted by any tollbridge Gateway",
                    target.name
                ));
            }
            Target { key, reach, not_found: None }
        }
        other => {
            missing(format!("target kind {other:?} is not supported; use Gateway, HTTPRoute or GRPCRoute"))
        }
    }
}

/// What is wrong with a policy whatever its provider. The API server's rules catch most of this,
/// but files read by `tollbridge run` were never checked by one.
fn invalid(policy: &QuotaPolicy) -> Option<String> {
    let spec = &policy.spec;
    if spec.api_key.is_none() && spec.jwt.is_none() && spec.rate_limit.is_none() && spec.quota.is_none() {
        return Some("at least one of apiKey, jwt, rateLimit or quota must be set".into());
    }
    if spec.api_key.is_some() && spec.jwt.is_some() {
        return Some("apiKey and jwt cannot both be set: a policy identifies its consumers one way".into());
    }
    let jwt = spec.jwt.as_ref()?;
    if jwt.issuer.trim().is_empty() {
        return Some("jwt.issuer must not be empty".into());
    }
    let claim_names =
        std::iter::once(jwt.consumer_claim()).chain(jwt.required_claims.iter().map(|c| c.name.as_str()));
    for name in claim_names {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b)) {
            return Some(format!("jwt claim name {name:?} must be letters, digits and _ . : / -"));
        }
    }
    // Cloud policy languages read `{{name}}` as a stored value and a leading `@` as code.
    let texts = std::iter::once(("jwt.issuer", jwt.issuer.as_str()))
        .chain(jwt.audiences.iter().map(|a| ("jwt.audiences", a.as_str())))
        .chain(
            jwt.required_claims
                .iter()
                .flat_map(|c| c.values.iter().map(|v| ("jwt.requiredClaims values", v.as_str()))),
        );
    for (field, text) in texts {
        if text.contains("{{") || text.contains("}}") || text.starts_with('@') {
            return Some(format!("{field}: {text:?} must not contain {{{{ or }}}} nor start with @"));
        }
    }
    if let Some(claim) = jwt.required_claims.iter().find(|c| c.values.is_empty()) {
        return Some(format!("jwt.requiredClaims {:?} lists no values", claim.name));
    }
    let jwks = &jwt.jwks;
    match (jwks.openid_discovery, &jwks.uri, &jwks.inline) {
        (true, None, None) => {
            if !jwt.issuer.starts_with("https://") {
                return Some(format!(
                    "jwt.jwks.openIDDiscovery needs an https:// issuer, not {:?}",
                    jwt.issuer
                ));
            }
        }
        (false, Some(uri), None) => {
            if !uri.starts_with("https://") || uri.len() <= "https://".len() {
                return Some(format!("jwt.jwks.uri must be an https:// URL, not {uri:?}"));
            }
        }
        (false, None, Some(inline)) => {
            if let Err(error) = tollbridge_provider::jwks::parse(inline) {
                return Some(format!("jwt.jwks.inline: {error}"));
            }
        }
        _ => return Some("jwt.jwks: set exactly one of openIDDiscovery, uri or inline".into()),
    }
    None
}

/// Why a policy cannot be enforced by the Gateway's provider, naming feature and provider.
fn unsupported(policy: &QuotaPolicy, gateway: &GatewayState<'_>) -> Option<String> {
    let caps = gateway.capabilities.as_ref()?;
    let spec = &policy.spec;
    let jwt = spec.jwt.as_ref();
    let limited = spec.rate_limit.is_some() || spec.quota.is_some();
    let needed = [
        (spec.api_key.as_ref().is_some_and(|k| k.required), Feature::ApiKeys),
        (jwt.is_some(), Feature::JwtAuthentication),
        (jwt.is_some_and(|j| j.jwks.uri.is_some()), Feature::JwtKeySetUri),
        (jwt.is_some_and(|j| j.jwks.inline.is_some()), Feature::JwtInlineKeys),
        (jwt.is_some_and(|j| !j.required_claims.is_empty()), Feature::JwtRequiredClaims),
        (jwt.is_some() && limited, Feature::JwtConsumerLimits),
        (spec.rate_limit.is_some(), Feature::RateLimits),
        (spec.quota.is_some(), Feature::Quotas),
    ];
    let missing: Vec<&str> =
        needed.iter().filter(|(used, f)| *used && !caps.supports(*f)).map(|(_, f)| f.name()).collect();
    (!missing.is_empty()).then(|| format!("{} not supported by {}", missing.join(", "), caps.provider))
}

fn policy_ir(policy: &QuotaPolicy, keys: Option<&Vec<ApiKeyIr>>) -> QuotaPolicyIr {
    let spec = &policy.spec;
    QuotaPolicyIr {
        id: object_id(&policy.metadata),
        api_key: spec.api_key.as_ref().map(|k| ApiKeySettingsIr {
            required: k.required,
            header: k.header_name().map(str::to_ascii_lowercase),
            query_param: k.query_param.clone().filter(|q| !q.is_empty()),
            consumer_header: k.consumer_header().to_ascii_lowercase(),
        }),
        jwt: spec.jwt.as_ref().map(|j| JwtIr {
            issuer: j.issuer.clone(),
            audiences: j.audiences.clone(),
            jwks: match (&j.jwks.uri, &j.jwks.inline) {
                (Some(uri), _) => JwksIr::Uri(uri.clone()),
                (None, Some(inline)) => JwksIr::Inline(inline.clone()),
                (None, None) => JwksIr::OpenIdDiscovery,
            },
            consumer_claim: j.consumer_claim().to_string(),
            required_claims: j
                .required_claims
                .iter()
                .map(|c| RequiredClaimIr { name: c.name.clone(), values: c.values.clone() })
                .collect(),
            consumer_header: j.consumer_header().to_ascii_lowercase(),
            forward_token: j.forward_token,
        }),
        rate_limit: spec.rate_limit.as_ref().map(|r| RateLimitIr {
            requests: r.requests,
            period_seconds: r.unit.seconds(),
            burst: r.burst.unwrap_or(r.requests),
        }),
        quota: spec.quota.as_ref().map(|q| QuotaIr {
            requests: q.requests,
            period: match q.period {
                QuotaPeriod::Day => tollbridge_provider::QuotaPeriod::Day,
                QuotaPeriod::Week => tollbridge_provider::QuotaPeriod::Week,
                QuotaPeriod::Month => tollbridge_provider::QuotaPeriod::Month,
            },
        }),
        keys: keys.cloned().unwrap_or_default(),
    }
}

/// Resolves every ApiKey, writes its status, and returns the usable keys per policy id.
fn api_keys(
    snapshot: &Snapshot,
    index: &Index<'_>,
    accepted_policies: &BTreeMap<String, usize>,
    statuses: &mut Statuses,
) -> BTreeMap<String, Vec<ApiKeyIr>> {
    let mut out: BTreeMap<String, Vec<ApiKeyIr>> = BTreeMap::new();
    let mut owners_by_hash: BTreeMap<String, (Age, String)> = BTreeMap::new();
    let mut resolved: Vec<(usize, Result<ResolvedKey, KeyError>)> = Vec::new();
    for (i, key) in snapshot.api_keys.iter().enumerate() {
        let result = resolve_key(key, index, snapshot.now);
        if let Ok(k) = &result {
            let age = age_key(&key.metadata, i);
            let entry = owners_by_hash.entry(k.ir.sha256.clone()).or_insert((age, k.ir.id.clone()));
            if (age, &k.ir.id) < (entry.0, &entry.1) {
                *entry = (age, k.ir.id.clone());
            }
        }
        resolved.push((i, result));
    }
    for (i, result) in resolved {
        let key = &snapshot.api_keys[i];
        let id = object_id(&key.metadata);
        let stamp = Stamp::new(key.metadata.generation, snapshot.now);
        let mut status = ApiKeyStatus::default();
        match result {
            Err((condition, why, message)) => {
                if condition == ACCEPTED {
                    status.conditions.push(stamp.no(ACCEPTED, why, message.clone()));
                    status.conditions.push(stamp.no(READY, why, message));
                } else {
                    status.conditions.push(stamp.yes(ACCEPTED, reason::ACCEPTED, "ApiKey is accepted"));
                    status.conditions.push(stamp.no(READY, why, message));
                }
            }
            Ok(k) => {
                status.key_id = Some(k.ir.key_id().to_string());
                let owner = &owners_by_hash[&k.ir.sha256].1;
                if owner != &id {
                    let message = format!("ApiKey {owner} is older and has the same key value");
                    status.conditions.push(stamp.no(ACCEPTED, reason::CONFLICTED, message.clone()));
                    status.conditions.push(stamp.no(READY, reason::CONFLICTED, message));
                } else {
                    status.conditions.push(stamp.yes(ACCEPTED, reason::ACCEPTED, "ApiKey is accepted"));
                    let ready = if k.ir.disabled {
                        stamp.no(READY, reason::DISABLED, "ApiKey is disabled")
                    } else if k.expired {
                        stamp.no(READY, reason::EXPIRED, "ApiKey has expired")
                    } else if !accepted_policies.contains_key(&k.policy) {
                        stamp.no(
                            READY,
                            reason::PENDING,
                            format!("QuotaPolicy {} is not accepted on any Gateway", k.policy),
                        )
                    } else {
                        stamp.yes(READY, reason::READY, "ApiKey is usable")
                    };
                    status.conditions.push(ready);
                    out.entry(k.policy).or_default().push(k.ir);
                }
            }
        }
        statuses.apikeys.insert(id, status);
    }
    for keys in out.values_mut() {
        keys.sort_by(|a, b| a.id.cmp(&b.id));
    }
    out
}

struct ResolvedKey {
    policy: String,
    ir: ApiKeyIr,
    expired: bool,
}

/// Resolves one ApiKey: its policy, its Secret and its expiry. An error names the condition it
/// fails (`Accepted` or `Ready`), the reason and a message.
fn resolve_key(key: &ApiKey, index: &Index<'_>, now: jiff::Timestamp) -> Result<ResolvedKey, KeyError> {
    let namespace = namespace_of(&key.metadata);
    let policy_name = &key.spec.policy_ref.name;
    let Some((_, policy)) = index.policy(namespace, policy_name) else {
        return Err((
            ACCEPTED,
            reason::POLICY_NOT_FOUND,
            format!("QuotaPolicy {namespace}/{policy_name} not found"),
        ));
    };
    if policy.spec.api_key.is_none() {
        return Err((
            ACCEPTED,
            reason::INVALID,
            format!("QuotaPolicy {namespace}/{policy_name} does not use API keys (no spec.apiKey)"),
        ));
    }
    let expires_at = match &key.spec.expires_at {
        None => None,
        Some(text) => match text.parse::<jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(e) => {
                return Err((
                    ACCEPTED,
                    reason::INVALID,
                    format!("expiresAt {text:?} is not an RFC 3339 time: {e}"),
                ))
            }
        },
    };
    let secret_name = &key.spec.secret_ref.name;
    let secret_key = key.spec.secret_ref.key_or_default();
    let Some(secret) = index.secret(namespace, secret_name) else {
        return Err((READY, reason::SECRET_NOT_FOUND, format!("Secret {namespace}/{secret_name} not found")));
    };
    let value = secret_value(secret, secret_key)
        .and_then(|v| String::from_utf8(v).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    // Or only the key's hash (`KEY.sha256`): enough for the built-in proxy, which compares
    // hashes; the in-cluster proxies get keys in this form only.
    let hashed = || {
        secret_value(secret, &format!("{secret_key}{HASHED_KEY_SUFFIX}"))
            .and_then(|v| String::from_utf8(v).ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let (sha256, value) = match (value, hashed()) {
        (Some(value), _) => (hex::encode(Sha256::digest(value.as_bytes())), value),
        (None, Some(sha256)) => (sha256, String::new()),
        (None, None) => {
            return Err((
                READY,
                reason::SECRET_NOT_FOUND,
                format!(
                    "Secret {namespace}/{secret_name} has no non-empty UTF-8 key {secret_key:?} \
                     (nor {secret_key}{HASHED_KEY_SUFFIX} with the key's SHA-256)"
                ),
            ))
        }
    };
    Ok(ResolvedKey {
        policy: format!("{namespace}/{policy_name}"),
        expired: expires_at.is_some_and(|t| t <= now),
        ir: ApiKeyIr {
            id: object_id(&key.metadata),
            consumer: key
                .spec
                .consumer
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| name_of(&key.metadata).to_string()),
            sha256,
            value: SecretString::new(value),
            disabled: key.spec.disabled,
            expires_at: expires_at.map(|t| t.as_second()),
        },
    })
}
