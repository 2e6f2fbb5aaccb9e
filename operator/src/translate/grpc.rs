//! GRPCRoute → the HTTPRoute it routes like. A gRPC call is an HTTP/2 POST to
//! `/<service>/<method>`, so a method match is a path match, and headers, filters and backends
//! carry over as they are. What the shapes cannot say (a service or method that is not a
//! gRPC name) comes back beside the route, per rule.

use crate::api::gateway::{
    GRPCBackendRef, GRPCMethodMatch, GRPCRoute, GRPCRouteFilter, GRPCRouteFilterType, GRPCRouteRule,
    HTTPBackendRef, HTTPPathMatch, HTTPRoute, HTTPRouteFilter, HTTPRouteFilterType, HTTPRouteMatch,
    HTTPRouteRule, HTTPRouteSpec, PathMatchType, StringMatchType,
};

/// A GRPCRoute as an HTTPRoute, with why each of its rules is invalid (rule index, message).
pub struct Lowered {
    pub route: HTTPRoute,
    pub invalid: Vec<(usize, String)>,
}

pub fn lower(route: &GRPCRoute) -> Lowered {
    let mut invalid = Vec::new();
    let rules = route
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            lower_rule(rule, &mut |why| {
                if !invalid.contains(&(i, why.clone())) {
                    invalid.push((i, why));
                }
            })
        })
        .collect();
    let spec = HTTPRouteSpec {
        parent_refs: route.spec.parent_refs.clone(),
        hostnames: route.spec.hostnames.clone(),
        rules,
    };
    let mut lowered = HTTPRoute::new(&route.metadata.name.clone().unwrap_or_default(), spec);
    lowered.metadata = route.metadata.clone();
    Lowered { route: lowered, invalid }
}

fn lower_rule(rule: &GRPCRouteRule, invalid: &mut dyn FnMut(String)) -> HTTPRouteRule {
    HTTPRouteRule {
        name: rule.name.clone(),
        matches: rule
            .matches
            .iter()
            .map(|m| HTTPRouteMatch {
                path: m.method.as_ref().map(|method| path_match(method, invalid)),
                headers: m.headers.clone(),
                query_params: Vec::new(),
                method: None,
            })
            .collect(),
        filters: rule.filters.iter().map(lower_filter).collect(),
        backend_refs: rule.backend_refs.iter().map(lower_backend).collect(),
        timeouts: None,
        retry: None,
    }
}

/// The path match a method match is: `/service/method` exactly, `/service` as a prefix, or a
/// regular expression over both parts (the omitted part matches any name).
fn path_match(method: &GRPCMethodMatch, invalid: &mut dyn FnMut(String)) -> HTTPPathMatch {
    let service = method.service.as_deref().filter(|s| !s.is_empty());
    let name = method.method.as_deref().filter(|m| !m.is_empty());
    let (type_, value) = match method.type_ {
        StringMatchType::Exact => {
            for (what, value) in [("service", service), ("method", name)] {
                if let Some(value) = value.filter(|v| !is_grpc_name(v, what == "service")) {
                    invalid(format!("gRPC {what} {value:?} is not a valid {what} name"));
                }
            }
            match (service, name) {
                (Some(service), Some(name)) => (PathMatchType::Exact, format!("/{service}/{name}")),
                (Some(service), None) => (PathMatchType::PathPrefix, format!("/{service}")),
                (None, Some(name)) => {
                    (PathMatchType::RegularExpression, format!("/[^/]+/{}", regex::escape(name)))
                }
                (None, None) => {
                    invalid("a method match needs a service, a method or both".to_string());
                    (PathMatchType::PathPrefix, "/".to_string())
                }
            }
        }
        StringMatchType::RegularExpression => {
            for pattern in [service, name].into_iter().flatten() {
                if let Err(e) = regex::Regex::new(pattern) {
                    let why = e.to_string();
                    let why = why.lines().last().unwrap_or_default().trim();
                    invalid(format!("invalid regular expression {pattern:?}: {why}"));
                }
            }
            let part = |p: Option<&str>| p.map_or_else(|| "[^/]+".to_string(), |p| format!("(?:{p})"));
            (PathMatchType::RegularExpression, format!("/{}/{}", part(service), part(name)))
        }
    };
    HTTPPathMatch { type_, value }
}

/// A gRPC service name (`package.Service`, dot-separated identifiers) or method name (one
/// identifier), as the GRPCRoute schema allows them.
fn is_grpc_name(text: &str, dotted: bool) -> bool {
    let identifier = |part: &str| {
        let mut bytes = part.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if dotted {
        text.split('.').all(identifier)
    } else {
        identifier(text)
    }
}

fn lower_filter(filter: &GRPCRouteFilter) -> HTTPRouteFilter {
    let type_ = match filter.type_ {
        GRPCRouteFilterType::RequestHeaderModifier => HTTPRouteFilterType::RequestHeaderModifier,
        GRPCRouteFilterType::ResponseHeaderModifier => HTTPRouteFilterType::ResponseHeaderModifier,
        GRPCRouteFilterType::RequestMirror => HTTPRouteFilterType::RequestMirror,
        GRPCRouteFilterType::ExtensionRef => HTTPRouteFilterType::ExtensionRef,
        GRPCRouteFilterType::Unknown => HTTPRouteFilterType::Unknown,
    };
    HTTPRouteFilter {
        type_,
        request_header_modifier: filter.request_header_modifier.clone(),
        response_header_modifier: filter.response_header_modifier.clone(),
        request_mirror: filter.request_mirror.clone(),
        extension_ref: filter.extension_ref.clone(),
        ..HTTPRouteFilter::default()
    }
}

fn lower_backend(backend: &GRPCBackendRef) -> HTTPBackendRef {
    HTTPBackendRef {
        group: backend.group.clone(),
        kind: backend.kind.clone(),
        name: backend.name.clone(),
        namespace: backend.namespace.clone(),
        port: backend.port,
        weight: backend.weight,
        filters: backend.filters.iter().map(lower_filter).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(type_: StringMatchType, service: Option<&str>, method: Option<&str>) -> GRPCMethodMatch {
        GRPCMethodMatch { type_, service: service.map(Into::into), method: method.map(Into::into) }
    }

    fn path(m: GRPCMethodMatch) -> (HTTPPathMatch, Vec<String>) {
        let mut invalid = Vec::new();
        let path = path_match(&m, &mut |why| invalid.push(why));
        (path, invalid)
    }

    #[test]
    fn method_matches_are_path_matches() {
        use StringMatchType::{Exact, RegularExpression};
        let cases = [
            (method(Exact, Some("pkg.Echo"), Some("Say")), PathMatchType::Exact, "/pkg.Echo/Say"),
            (method(Exact, Some("pkg.Echo"), None), PathMatchType::PathPrefix, "/pkg.Echo"),
            (method(Exact, None, Some("Say")), PathMatchType::RegularExpression, "/[^/]+/Say"),
            (
                method(RegularExpression, Some(r"pkg\..*"), Some("Say|Shout")),
                PathMatchType::RegularExpression,
                r"/(?:pkg\..*)/(?:Say|Shout)",
            ),
            (
                method(RegularExpression, None, Some("S.*")),
                PathMatchType::RegularExpression,
                "/[^/]+/(?:S.*)",
            ),
        ];
        for (m, type_, value) in cases {
            let (path, invalid) = path(m);
            assert_eq!((path.type_, path.value.as_str()), (type_, value));
            assert!(invalid.is_empty(), "{invalid:?}");
        }
    }

    #[test]
    fn names_that_are_not_grpc_names_are_invalid() {
        for (service, name) in
            [(Some("a/b"), Some("c")), (Some("pkg.Echo"), Some("Say/../x")), (Some(".x"), None)]
        {
            let (_, invalid) = path(method(StringMatchType::Exact, service, name));
            assert_eq!(invalid.len(), 1, "{service:?} {name:?}: {invalid:?}");
        }
        let (_, invalid) = path(method(StringMatchType::Exact, None, None));
        assert_eq!(invalid, ["a method match needs a service, a method or both"]);
        let (_, invalid) = path(method(StringMatchType::RegularExpression, Some("("), None));
        assert!(invalid[0].starts_with("invalid regular expression \"(\""), "{invalid:?}");
    }
}
