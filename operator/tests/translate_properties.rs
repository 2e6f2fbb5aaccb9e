//! Property tests: for random gateways and route sets the translator never panics, is
//! deterministic, and keeps its structural promises (precedence order, valid attachments).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use tollbridge::api::gateway::*;
use tollbridge::providers;
use tollbridge::snapshot::Snapshot;
use tollbridge::translate::{translate, CONTROLLER_NAME};
use tollbridge_provider::PathMatch;

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        generation: Some(1),
        ..Default::default()
    }
}

fn hostname() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a.example.com".to_string()),
        Just("*.example.com".to_string()),
        Just("b.a.example.com".to_string()),
        Just("other.org".to_string()),
        Just("*.org".to_string()),
    ]
}

fn path_match() -> impl Strategy<Value = Option<HTTPPathMatch>> {
    let value = prop_oneof![
        Just("/".to_string()),
        Just("/a".to_string()),
        Just("/a/".to_string()),
        Just("/a/b".to_string()),
        Just("/ab".to_string()),
        Just("/(unclosed".to_string()),
        Just("/v[0-9]+".to_string()),
    ];
    let kind = prop_oneof![
        Just(PathMatchType::Exact),
        Just(PathMatchType::PathPrefix),
        Just(PathMatchType::RegularExpression)
    ];
    proptest::option::of((kind, value).prop_map(|(type_, value)| HTTPPathMatch { type_, value }))
}

fn route_match() -> impl Strategy<Value = HTTPRouteMatch> {
    (
        path_match(),
        proptest::option::of(prop_oneof![Just("GET".to_string()), Just("POST".to_string())]),
        proptest::collection::vec(("[a-c]", "[x-z]{1,2}"), 0..3),
        proptest::collection::vec(("[a-c]", "[x-z]{1,2}"), 0..2),
    )
        .prop_map(|(path, method, headers, query)| HTTPRouteMatch {
            path,
            method,
            headers: headers
                .into_iter()
                .map(|(name, value)| HTTPHeaderMatch { type_: StringMatchType::Exact, name, value })
                .collect(),
            query_params: query
                .into_iter()
                .map(|(name, value)| HTTPQueryParamMatch { type_: StringMatchType::Exact, name, value })
                .collect(),
        })
}

fn filter() -> impl Strategy<Value = HTTPRouteFilter> {
    prop_oneof![
        Just(HTTPRouteFilter {
            type_: HTTPRouteFilterType::RequestHeaderModifier,
            request_header_modifier: Some(HTTPHeaderFilter {
                set: vec![HTTPHeader { name: "X-A".into(), value: "1".into() }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        Just(HTTPRouteFilter {
            type_: HTTPRouteFilterType::RequestRedirect,
            request_redirect: Some(HTTPRequestRedirectFilter {
                path: Some(HTTPPathModifier {
                    type_: PathModifierType::ReplacePrefixMatch,
                    replace_full_path: None,
                    replace_prefix_match: Some("/new".into()),
                }),
                status_code: Some(301),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Just(HTTPRouteFilter { type_: HTTPRouteFilterType::ExtensionRef, ..Default::default() }),
        Just(HTTPRouteFilter {
            type_: HTTPRouteFilterType::RequestMirror,
            request_mirror: Some(HTTPRequestMirrorFilter {
                backend_ref: BackendObjectReference {
                    name: "svc-1".into(),
                    port: Some(80),
                    ..Default::default()
                },
                percent: Some(50),
                fraction: None,
            }),
            ..Default::default()
        }),
    ]
}

fn backend() -> impl Strategy<Value = HTTPBackendRef> {
    ("svc-[0-3]", proptest::option::of(0..3i32), proptest::option::of(Just(80))).prop_map(
        |(name, weight, port)| HTTPBackendRef {
            name,
            port,
            weight,
            filters: Vec::new(),
            ..Default::default()
        },
    )
}

fn rule() -> impl Strategy<Value = HTTPRouteRule> {
    (
        proptest::collection::vec(route_match(), 0..3),
        proptest::collection::vec(filter(), 0..2),
        proptest::collection::vec(backend(), 0..3),
        proptest::option::of(prop_oneof![Just("1s".to_string()), Just("bogus".to_string())]),
    )
        .prop_map(|(matches, filters, backend_refs, timeout)| HTTPRouteRule {
            matches,
            filters,
            backend_refs,
            timeouts: timeout.map(|t| HTTPRouteTimeouts { request: Some(t), backend_request: None }),
            ..Default::default()
        })
}

fn route(index: usize) -> impl Strategy<Value = HTTPRoute> {
    (
        proptest::collection::vec(hostname(), 0..3),
        proptest::collection::vec(rule(), 0..4),
        proptest::option::of(prop_oneof![
            Just("http".to_string()),
            Just("https".to_string()),
            Just("nope".to_string())
        ]),
        proptest::option::of(prop_oneof![Just(80), Just(8080)]),
        prop_oneof![Just("default"), Just("team")],
    )
        .prop_map(move |(hostnames, rules, section_name, port, namespace)| HTTPRoute {
            metadata: meta(&format!("route-{index}"), Some(namespace)),
            spec: HTTPRouteSpec {
                parent_refs: vec![ParentReference {
                    name: "gw".into(),
                    namespace: Some("default".into()),
                    section_name,
                    port,
                    ..Default::default()
                }],
                hostnames,
                rules,
            },
            status: None,
        })
}

fn listener() -> impl Strategy<Value = Listener> {
    (
        prop_oneof![Just("http"), Just("https"), Just("alt")],
        proptest::option::of(hostname()),
        prop_oneof![Just(80), Just(8080)],
        prop_oneof![Just("HTTP"), Just("HTTPS"), Just("TCP")],
        prop_oneof![Just(FromNamespaces::Same), Just(FromNamespaces::All)],
    )
        .prop_map(|(name, hostname, port, protocol, from)| Listener {
            name: name.to_string(),
            hostname,
            port,
            protocol: protocol.to_string(),
            tls: None,
            allowed_routes: Some(AllowedRoutes {
                namespaces: Some(RouteNamespaces { from: Some(from), selector: None }),
                kinds: Vec::new(),
            }),
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        proptest::collection::vec(listener(), 1..4),
        proptest::collection::vec(any::<u8>(), 0..8).prop_flat_map(|seeds| {
            let routes: Vec<_> = (0..seeds.len()).map(route).collect();
            routes
        }),
    )
        .prop_map(|(listeners, http_routes)| {
            let services = (0..2)
                .map(|i| Service {
                    metadata: meta(&format!("svc-{i}"), Some("default")),
                    spec: Some(ServiceSpec {
                        ports: Some(vec![ServicePort { port: 80, ..Default::default() }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect();
            Snapshot {
                gateway_classes: vec![GatewayClass {
                    metadata: meta("tb", None),
                    spec: GatewayClassSpec { controller_name: CONTROLLER_NAME.into(), ..Default::default() },
                    status: None,
                }],
                gateways: vec![Gateway {
                    metadata: meta("gw", Some("default")),
                    spec: GatewaySpec { gateway_class_name: "tb".into(), listeners, ..Default::default() },
                    status: None,
                }],
                http_routes,
                services,
                ..Default::default()
            }
        })
}

fn path_rank(path: &PathMatch) -> (u8, std::cmp::Reverse<usize>) {
    match path {
        PathMatch::Exact(p) => (0, std::cmp::Reverse(p.len())),
        PathMatch::Regex(p) => (1, std::cmp::Reverse(p.len())),
        PathMatch::Prefix(p) => (2, std::cmp::Reverse(p.len())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn translation_is_total_deterministic_and_ordered(snap in snapshot()) {
        let first = translate(&snap, &providers::capabilities);
        let second = translate(&snap, &providers::capabilities);
        prop_assert_eq!(
            serde_json::to_string(&first.statuses).unwrap(),
            serde_json::to_string(&second.statuses).unwrap()
        );
        prop_assert_eq!(
            serde_json::to_string(&first.gateways).unwrap(),
            serde_json::to_string(&second.gateways).unwrap()
        );

        for gw in &first.gateways {
            let listeners: Vec<&str> = gw.listeners.iter().map(|l| l.name.as_str()).collect();
            for pair in gw.routes.windows(2) {
                prop_assert!(path_rank(&pair[0].matcher.path) <= path_rank(&pair[1].matcher.path));
            }
            for route in &gw.routes {
                prop_assert!(!route.attachments.is_empty());
                for a in &route.attachments {
                    prop_assert!(listeners.contains(&a.listener.as_str()));
                }
            }
        }

        // attachedRoutes equals the number of routes accepted through that listener.
        let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
        for status in first.statuses.httproutes.values() {
            for parent in &status.parents {
                let ok = parent.conditions.iter().any(|c| c.type_ == "Accepted" && c.status == "True");
                if ok {
                    *accepted.entry(parent.parent_ref.section_name.clone().unwrap_or_default()).or_default() += 1;
                }
            }
        }
        if let Some(gw) = first.statuses.gateways.get("default/gw") {
            let total: i32 = gw.listeners.iter().map(|l| l.attached_routes).sum();
            let routes_accepted: usize = accepted.values().sum();
            prop_assert!(total as usize >= routes_accepted);
        }
    }
}
