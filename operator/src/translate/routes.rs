//! Route (HTTPRoute and GRPCRoute) attachment to Gateways and listeners, and each route's
//! per-parent status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tollbridge_provider::{AttachmentIr, Feature, RouteKind};

use super::conditions::{reason, Problem, Stamp, ACCEPTED, PARTIALLY_INVALID, RESOLVED_REFS};
use super::gateways::GatewayState;
use super::hostnames;
use super::index::Index;
use super::precedence::SortKey;
use super::rules::{self, RouteSource, RulesOutcome};
use super::{Statuses, CONTROLLER_NAME};
use crate::api::gateway::{HTTPRouteStatus, ParentReference, RouteParentStatus, GROUP};
use crate::parallel;
use crate::snapshot::{age_key, name_of, namespace_of, object_id};

/// Where each route was accepted: route id → (gateway index, listener names).
pub type Attachments = BTreeMap<String, Vec<(usize, Vec<String>)>>;

/// Attaches every route to its parents, records route statuses and collects IR entries;
/// with many routes, their rules are first translated on every core.
pub fn attach_all(
    routes: &[RouteSource<'_>],
    now: jiff::Timestamp,
    index: &Index<'_>,
    gateways: &mut [GatewayState<'_>],
    statuses: &mut Statuses,
    on_every_core: bool,
) -> Attachments {
    let mut attachments = Attachments::new();
    let mut ahead = if on_every_core { rules_ahead(routes, index, gateways) } else { Vec::new() };
    // Room for the entries translated ahead: they are large, and growing the vector copies them.
    let mut entries_ahead = vec![0; gateways.len()];
    for (gw_index, rules) in ahead.iter().flatten() {
        entries_ahead[*gw_index] += rules.rules.iter().map(|rule| rule.entries.len()).sum::<usize>();
    }
    for (gateway, entries) in gateways.iter_mut().zip(entries_ahead) {
        gateway.entries.reserve(entries);
    }
    for (load_index, source) in routes.iter().enumerate() {
        let route = source.route;
        let mut route_ahead = ahead.get_mut(load_index).and_then(Option::take);
        let route_id = source.id();
        let stamp = Stamp::new(route.metadata.generation, now);
        let mut parents = Vec::new();
        let mut seen: Vec<&ParentReference> = Vec::new();
        for parent_ref in &route.spec.parent_refs {
            if seen.contains(&parent_ref) {
                continue;
            }
            seen.push(parent_ref);
            let Some(gw_index) = find_gateway(&route.metadata, parent_ref, gateways) else { continue };
            let gateway = &mut gateways[gw_index];
            let rules = route_ahead.take_if(|(ahead_for, _)| *ahead_for == gw_index).map(|(_, rules)| rules);
            let age = age_key(&route.metadata, load_index);
            let (conditions, listeners) = attach_one(*source, parent_ref, gateway, index, stamp, age, rules);
            if !listeners.is_empty() {
                attachments.entry(route_id.clone()).or_default().push((gw_index, listeners));
            }
            parents.push(RouteParentStatus {
                parent_ref: parent_ref.clone(),
                controller_name: CONTROLLER_NAME.to_string(),
                conditions,
            });
        }
        if !parents.is_empty() {
            let kept = match source.kind {
                RouteKind::HTTPRoute => &mut statuses.httproutes,
                RouteKind::GRPCRoute => &mut statuses.grpcroutes,
            };
            kept.insert(object_id(&route.metadata), HTTPRouteStatus { parents });
        }
    }
    attachments
}

/// Routes each thread translates the rules of at least: below this, one thread is faster.
const ROUTES_PER_THREAD: usize = 512;

/// Each route's rules translated ahead, on every core, for the first Gateway of ours it names
/// (when that Gateway's provider is resolved): the part of attachment no other route changes.
/// Empty when there are too few routes to split; attachment then translates them itself.
fn rules_ahead(
    routes: &[RouteSource<'_>],
    index: &Index<'_>,
    gateways: &[GatewayState<'_>],
) -> Vec<Option<(usize, RulesOutcome)>> {
    let parts = parallel::parts_for(routes.len(), ROUTES_PER_THREAD);
    if parts < 2 {
        return Vec::new();
    }
    let ahead = |source: &RouteSource<'_>| {
        let route = source.route;
        let gw_index = route
            .spec
            .parent_refs
            .iter()
            .find_map(|parent| find_gateway(&route.metadata, parent, gateways))?;
        let caps = gateways[gw_index].capabilities.as_ref()?;
        Some((gw_index, rules::translate(*source, index, caps)))
    };
    parallel::in_parts("tollbridge-translate", routes, parts, |part| {
        part.iter().map(ahead).collect::<Vec<_>>()
    })
    .map(|parts| parts.into_iter().flatten().collect())
    .unwrap_or_default()
}

/// The index of the Gateway of ours a parentRef of a route (with `route`'s metadata) points to.
fn find_gateway(
    route: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    parent: &ParentReference,
    gateways: &[GatewayState<'_>],
) -> Option<usize> {
    let group = parent.group.as_deref().unwrap_or(GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    if group != GROUP || kind != "Gateway" {
        return None;
    }
    let namespace = parent.namespace.as_deref().unwrap_or(namespace_of(route));
    gateways.iter().position(|g| g.namespace() == namespace && g.name() == parent.name)
}

/// Attaches a route to one parent Gateway: its conditions and the listeners it attached to.
/// `rules`: the route's rules already translated for this Gateway, if they were.
fn attach_one(
    source: RouteSource<'_>,
    parent: &ParentReference,
    gateway: &mut GatewayState<'_>,
    index: &Index<'_>,
    stamp: Stamp,
    age: (jiff::Timestamp, usize),
    rules: Option<RulesOutcome>,
) -> (Vec<Condition>, Vec<String>) {
    // Without a resolved provider the route is not accepted, but its references are still
    // checked so ResolvedRefs tells the truth.
    let unresolved;
    let caps = match &gateway.capabilities {
        Some(caps) => caps,
        None => {
            unresolved = tollbridge_provider::Capabilities::everything("an unresolved provider");
            &unresolved
        }
    };
    let route = source.route;
    let outcome = rules.unwrap_or_else(|| rules::translate(source, index, caps));
    let resolved = match &outcome.ref_problem {
        None => stamp.yes(RESOLVED_REFS, reason::RESOLVED_REFS, "All references resolved"),
        Some(problem) => stamp.no(RESOLVED_REFS, problem.reason, problem.message.clone()),
    };
    let selected = match select_listeners(source, parent, gateway, index, caps) {
        Ok(selected) => selected,
        Err((why, message)) => return (vec![stamp.no(ACCEPTED, why, message), resolved], Vec::new()),
    };

    let dropped = outcome.dropped();
    let all_dropped = !route.spec.rules.is_empty() && dropped.len() == route.spec.rules.len();
    let mut conditions = Vec::new();
    if all_dropped {
        conditions.push(stamp.no(ACCEPTED, reason::UNSUPPORTED_VALUE, dropped.join("; ")));
        return (with_resolved(conditions, resolved), Vec::new());
    }
    conditions.push(stamp.yes(ACCEPTED, reason::ACCEPTED, "Route is accepted"));
    if !dropped.is_empty() {
        conditions.push(stamp.yes(
            PARTIALLY_INVALID,
            reason::UNSUPPORTED_VALUE,
            format!("Dropped Rule(s): {}", dropped.join("; ")),
        ));
    }

    let route_id = source.id();
    let listener_names: Vec<String> =
        selected.iter().map(|(i, _)| gateway.listeners[*i].name.clone()).collect();
    for (listener, _) in &selected {
        gateway.attached[*listener].insert(route_id.clone());
    }
    let attachments: Vec<AttachmentIr> = selected
        .into_iter()
        .map(|(i, hostnames)| AttachmentIr { listener: gateway.listeners[i].name.clone(), hostnames })
        .collect();
    // A route listed twice under one Gateway (two parentRefs) merges its attachments.
    let seen_before = !gateway.routes_seen.insert(route_id.clone());
    for rule in outcome.rules {
        gateway.backend_tls_policies.extend(rule.backend_tls_policies);
        for (policy, problem) in rule.backend_tls_problems {
            gateway.backend_tls_problems.entry(policy).or_insert(problem);
        }
        for mut entry in rule.entries {
            let existing =
                if seen_before { gateway.entries.iter_mut().find(|(_, e)| e.id == entry.id) } else { None };
            if let Some((_, existing)) = existing {
                for a in &attachments {
                    if !existing.attachments.iter().any(|x| x.listener == a.listener) {
                        existing.attachments.push(a.clone());
                    }
                }
                continue;
            }
            entry.attachments = attachments.clone();
            gateway.entries.push((SortKey::new(&entry.matcher, &entry.id, age), entry));
        }
    }
    (with_resolved(conditions, resolved), listener_names)
}

fn with_resolved(mut conditions: Vec<Condition>, resolved: Condition) -> Vec<Condition> {
    conditions.push(resolved);
    conditions
}

/// The listeners (index, effective hostnames) a parentRef selects and admits, or why none does.
fn select_listeners(
    source: RouteSource<'_>,
    parent: &ParentReference,
    gateway: &GatewayState<'_>,
    index: &Index<'_>,
    caps: &tollbridge_provider::Capabilities,
) -> Result<Vec<(usize, Vec<String>)>, Problem> {
    if gateway.rejected.is_some() || !gateway.accepts_routes() {
        return Err((reason::NO_MATCHING_PARENT, format!("Gateway {} is not accepted", gateway.id)));
    }
    if parent.port.is_some() && !caps.supports(Feature::HTTPRouteParentRefPort) {
        return Err((
            reason::UNSUPPORTED_VALUE,
            format!("parentRef port is not supported by {}", caps.provider),
        ));
    }
    let candidates: Vec<usize> = gateway
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| parent.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.port))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        let what = match (&parent.section_name, parent.port) {
            (Some(s), Some(p)) => format!("listener {s:?} on port {p}"),
            (Some(s), None) => format!("listener {s:?}"),
            (None, Some(p)) => format!("listener on port {p}"),
            (None, None) => "listener".to_string(),
        };
        return Err((reason::NO_MATCHING_PARENT, format!("Gateway {} has no {what}", gateway.id)));
    }
    let route = source.route;
    let route_namespace = namespace_of(&route.metadata);
    let allowed: Vec<usize> = candidates
        .into_iter()
        .filter(|i| {
            gateway.listeners[*i].allows_route_from(source.kind, gateway.namespace(), route_namespace, index)
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            reason::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "no listener of Gateway {} allows {} {} (allowedRoutes)",
                gateway.id,
                source.kind.name(),
                name_of(&route.metadata)
            ),
        ));
    }
    let matched: Vec<(usize, Vec<String>)> = allowed
        .into_iter()
        .filter_map(|i| {
            hostnames::intersect(gateway.listeners[i].hostname.as_deref(), &route.spec.hostnames)
                .map(|h| (i, h))
        })
        .collect();
    if matched.is_empty() {
        return Err((
            reason::NO_MATCHING_LISTENER_HOSTNAME,
            "no listener hostname intersects the route's hostnames".to_string(),
        ));
    }
    Ok(matched)
}
