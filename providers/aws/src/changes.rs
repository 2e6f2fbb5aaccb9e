//! The resources a Gateway needs, the ones found in the account, and the ordered change list
//! between them. Pure: no SDK types, no IO.

use std::collections::BTreeMap;

use tollbridge_provider::reconcile::{self, Model, ResourceKind, Verdict};
use tollbridge_provider::SecretString;

use crate::desired::API_KEY;

/// Resource kinds, in creation order: a kind may refer only to kinds before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    // HTTP APIs (API Gateway v2)
    Api,
    Integration,
    /// A JWT authorizer of an HTTP API, keyed by its name.
    Authorizer,
    Route,
    Stage,
    // REST APIs (API Gateway v1)
    RestApi,
    Resource,
    Method,
    /// A deployment of a REST API to its stage; "created" whenever the API changed.
    Deployment,
    UsagePlan,
    ApiKey,
    UsagePlanKey,
    /// A custom domain of a REST API (the v1 API's own domain names).
    RestDomainName,
    /// Maps a REST custom domain to the API's stage.
    BasePathMapping,
    // HTTP APIs' custom domains
    DomainName,
    ApiMapping,
}

impl ResourceKind for Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::Integration => "integration",
            Kind::Authorizer => "authorizer",
            Kind::Route => "route",
            Kind::Stage => "stage",
            Kind::RestApi => "rest-api",
            Kind::Resource => "resource",
            Kind::Method => "method",
            Kind::Deployment => "deployment",
            Kind::UsagePlan => "usage-plan",
            Kind::ApiKey => "api-key",
            Kind::UsagePlanKey => "usage-plan-key",
            Kind::RestDomainName => "rest-domain-name",
            Kind::BasePathMapping => "base-path-mapping",
            Kind::DomainName => "domain-name",
            Kind::ApiMapping => "api-mapping",
        }
    }
}

/// Identifies a resource within one Gateway: its kind and a key of ours (a route key, a path,
/// a policy id).
pub type ResourceKey = (Kind, String);

/// Throttling of a route or a usage plan. Unset fields are omitted (0 would block traffic).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    pub rate: f64,
    pub burst: i32,
}

/// The desired or observed content of one resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// An HTTP or REST API.
    Api {
        name: String,
        tags: BTreeMap<String, String>,
    },
    /// An HTTP_PROXY integration of an HTTP API.
    Integration {
        uri: String,
        vpc_link: Option<String>,
        timeout_ms: i32,
        parameters: BTreeMap<String, String>,
    },
    /// A JWT authorizer: the issuer (its keys from the issuer's OpenID Connect discovery) and
    /// the audiences (sorted), read from `Authorization: Bearer`.
    Authorizer {
        issuer: String,
        audiences: Vec<String>,
    },
    /// An HTTP API route (`ANY /a/{proxy+}`), the key of its integration and of its JWT
    /// authorizer, if any.
    Route {
        integration: String,
        authorizer: Option<String>,
    },
    /// The `$default` stage (auto-deploy) with per-route throttling.
    Stage {
        throttles: BTreeMap<String, Throttle>,
        tags: BTreeMap<String, String>,
    },
    /// A REST resource: its path (its parent is the path without the last segment).
    Resource,
    /// A REST method (`GET /a`) with its HTTP_PROXY integration.
    Method {
        api_key_required: bool,
        uri: String,
        vpc_link: Option<String>,
        timeout_ms: i32,
        parameters: BTreeMap<String, String>,
    },
    /// A REST deployment to the stage; `digest` identifies what it deployed.
    Deployment {
        stage: String,
        digest: String,
    },
    UsagePlan {
        name: String,
        throttle: Option<Throttle>,
        quota: Option<(i32, String)>,
        tags: BTreeMap<String, String>,
    },
    /// An API key. Its value is set when it is created and never read back (API Gateway
    /// cannot change it, and reading values would read other people's keys too): the
    /// resource key, `<ApiKey id> <first 8 hex digits of the value's SHA-256>`, says which
    /// value it has, so a new value is a new key.
    ApiKey {
        name: String,
        /// The value to create the key with; `None` in observed keys.
        value: Option<SecretString>,
        enabled: bool,
        tags: BTreeMap<String, String>,
    },
    /// Links the ApiKey (key) to the UsagePlan (plan) by our keys.
    UsagePlanKey {
        plan: String,
        key: String,
    },
    DomainName {
        certificate_arn: String,
        tags: BTreeMap<String, String>,
    },
    ApiMapping {
        stage: String,
    },
}

impl Spec {
    /// Whether the observed resource `live` is as this desired spec asks. Tags added by
    /// others are ignored; ours must be there.
    pub fn satisfied_by(&self, live: &Spec) -> bool {
        let tags_kept = |want: &BTreeMap<String, String>, have: &BTreeMap<String, String>| {
            want.iter().all(|(k, v)| have.get(k) == Some(v))
        };
        match (self, live) {
            (Spec::Api { name, tags }, Spec::Api { name: n, tags: t }) => name == n && tags_kept(tags, t),
            (Spec::Stage { throttles, tags }, Spec::Stage { throttles: th, tags: t }) => {
                throttles == th && tags_kept(tags, t)
            }
            (
                Spec::UsagePlan { name, throttle, quota, tags },
                Spec::UsagePlan { name: n, throttle: th, quota: q, tags: t },
            ) => name == n && throttle == th && quota == q && tags_kept(tags, t),
            (Spec::ApiKey { name, enabled, tags, .. }, Spec::ApiKey { name: n, enabled: e, tags: t, .. }) => {
                name == n && enabled == e && tags_kept(tags, t)
            }
            (
                Spec::DomainName { certificate_arn, tags },
                Spec::DomainName { certificate_arn: c, tags: t },
            ) => certificate_arn == c && tags_kept(tags, t),
            (want, have) => want == have,
        }
    }
}

/// Everything a Gateway needs (or everything found for it), by resource key.
pub type Resources = BTreeMap<ResourceKey, Spec>;

/// Observed resources also carry their provider id.
pub type Observed = BTreeMap<ResourceKey, (String, Spec)>;

/// Records an observed resource; a second one with the same key (left by a retried create)
/// is recorded as a duplicate, which no desired resource matches, so it gets deleted.
pub fn observe(observed: &mut Observed, key: ResourceKey, id: String, spec: Spec) {
    if observed.contains_key(&key) {
        observed.insert((key.0, format!("duplicate {id}")), (id, spec));
    } else {
        observed.insert(key, (id, spec));
    }
}

/// One step of a plan; updates and deletes carry the resource's id, which plan lines show.
pub type Change = reconcile::Change<ResourceKey, Spec, String>;

/// API Gateway resources as the diff sees them: observed ones carry their id; an API takes
/// its routes, integrations, stage, resources, methods and deployments along when deleted.
pub struct ApiGateway;

impl Model for ApiGateway {
    type Key = ResourceKey;
    type Desired = Spec;
    type Observed = (String, Spec);
    type Handle = String;

    /// A REST deployment cannot change: one whose digest changed is created anew.
    fn compare(key: &ResourceKey, desired: &Spec, (_, live): &(String, Spec)) -> Verdict {
        if desired.satisfied_by(live) {
            Verdict::Satisfied
        } else if key.0 == Kind::Deployment {
            Verdict::Create
        } else {
            Verdict::Update
        }
    }

    fn handle((id, _): &(String, Spec)) -> String {
        id.clone()
    }

    /// Only the Gateway's API (not an extra one a crash left) has its parts observed.
    fn parent((kind, _): &ResourceKey) -> Option<ResourceKey> {
        let api = match kind {
            Kind::Integration | Kind::Authorizer | Kind::Route | Kind::Stage => Kind::Api,
            Kind::Resource | Kind::Method | Kind::Deployment => Kind::RestApi,
            _ => return None,
        };
        Some((api, API_KEY.to_string()))
    }
}

/// The changes that turn `observed` into `desired` ([`reconcile::diff`]): creates and updates
/// in kind order (parents first), then deletes in reverse kind order (children first), without
/// those the deletion of their API makes.
pub fn diff(desired: &Resources, observed: &Observed) -> Vec<Change> {
    reconcile::diff::<ApiGateway>(desired, observed)
}

/// The Gateway's API of one type deleted because the Gateway now needs the other type
/// (`apiType: Auto` once a policy starts or stops needing API keys or quotas). Clients of the
/// old API's default hostname lose it; custom domains are recreated for the new API.
#[derive(Clone, Debug, PartialEq)]
pub struct Replacement {
    /// The kind ([`Kind::Api`] or [`Kind::RestApi`]) and id of the API deleted.
    pub old: (Kind, String),
    /// The kind of the API taking its place.
    pub new: Kind,
    /// Custom domains deleted with the old API and created again for the new one (their
    /// regional target, which DNS points at, changes).
    pub domains: Vec<String>,
}

/// The replacement a plan from `observed` to `desired` makes, if it makes one.
pub fn replacement(desired: &Resources, observed: &Observed) -> Option<Replacement> {
    let api = |kind: Kind| (kind, API_KEY.to_string());
    [(Kind::Api, Kind::RestApi), (Kind::RestApi, Kind::Api)].into_iter().find_map(|(old, new)| {
        let (id, _) = observed.get(&api(old))?;
        if !desired.contains_key(&api(new)) || desired.contains_key(&api(old)) {
            return None;
        }
        let (old_domain, new_domain) = match new {
            Kind::RestApi => (Kind::DomainName, Kind::RestDomainName),
            _ => (Kind::RestDomainName, Kind::DomainName),
        };
        let domains = desired
            .keys()
            .filter(|(kind, host)| *kind == new_domain && observed.contains_key(&(old_domain, host.clone())))
            .map(|(_, host)| host.clone())
            .collect();
        Some(Replacement { old: (old, id.clone()), new, domains })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(integration: &str) -> Spec {
        Spec::Route { integration: integration.into(), authorizer: None }
    }

    fn integration(uri: &str) -> Spec {
        Spec::Integration { uri: uri.into(), vpc_link: None, timeout_ms: 30_000, parameters: BTreeMap::new() }
    }

    #[test]
    fn creates_parents_first_and_deletes_children_first() {
        let desired: Resources = [
            ((Kind::Route, "ANY /b".into()), route("i2")),
            ((Kind::Integration, "i2".into()), integration("https://b")),
            ((Kind::Api, "api".into()), Spec::Api { name: "gw".into(), tags: BTreeMap::new() }),
        ]
        .into();
        let observed: Observed = [
            (
                (Kind::Api, "api".into()),
                ("a1".into(), Spec::Api { name: "gw".into(), tags: BTreeMap::new() }),
            ),
            ((Kind::Integration, "i1".into()), ("x1".into(), integration("https://a"))),
            ((Kind::Route, "ANY /a".into()), ("r1".into(), route("i1"))),
        ]
        .into();
        let plan: Vec<String> = diff(&desired, &observed).iter().map(ToString::to_string).collect();
        assert_eq!(
            plan,
            [
                "+ create integration i2",
                "+ create route ANY /b",
                "- delete route ANY /a (r1)",
                "- delete integration i1 (x1)"
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_all_is_as_desired() {
        let mut tags = BTreeMap::from([("tollbridge.dev/owner".to_string(), "c/ns/gw".to_string())]);
        let desired: Resources =
            [((Kind::Api, "api".into()), Spec::Api { name: "gw".into(), tags: tags.clone() })].into();
        tags.insert("team".into(), "added-by-hand".into());
        let observed: Observed =
            [((Kind::Api, "api".into()), ("a1".into(), Spec::Api { name: "gw".into(), tags }))].into();
        assert_eq!(diff(&desired, &observed), vec![]);
    }

    #[test]
    fn an_observed_api_key_is_compared_without_its_value() {
        let key = |value: Option<&str>, enabled: bool| Spec::ApiKey {
            name: "tollbridge apps/gw apps/alice".into(),
            value: value.map(SecretString::new),
            enabled,
            tags: BTreeMap::new(),
        };
        let resource = (Kind::ApiKey, "apps/alice abababab".to_string());
        let desired: Resources = [(resource.clone(), key(Some("alice-0123456789-abcdefghij"), true))].into();
        let observed: Observed = [(resource.clone(), ("k1".to_string(), key(None, true)))].into();
        assert_eq!(diff(&desired, &observed), vec![]);
        let disabled: Observed = [(resource.clone(), ("k1".to_string(), key(None, false)))].into();
        assert!(matches!(&diff(&desired, &disabled)[..], [Change::Update { handle, .. }] if handle == "k1"));
    }

    #[test]
    fn an_api_of_the_other_type_is_a_replacement() {
        let api = Spec::Api { name: "gw".into(), tags: BTreeMap::new() };
        let domain = Spec::DomainName { certificate_arn: "arn".into(), tags: BTreeMap::new() };
        let observed: Observed = [
            ((Kind::Api, "api".into()), ("h1".into(), api.clone())),
            ((Kind::DomainName, "a.example".into()), ("a.example".into(), domain.clone())),
        ]
        .into();
        let rest: Resources = [
            ((Kind::RestApi, "api".into()), api.clone()),
            ((Kind::RestDomainName, "a.example".into()), domain.clone()),
            ((Kind::RestDomainName, "b.example".into()), domain.clone()),
        ]
        .into();
        assert_eq!(
            replacement(&rest, &observed),
            Some(Replacement {
                old: (Kind::Api, "h1".into()),
                new: Kind::RestApi,
                domains: vec!["a.example".into()]
            })
        );
        let http: Resources = [((Kind::Api, "api".into()), api)].into();
        assert_eq!(replacement(&http, &observed), None, "same type");
        assert_eq!(replacement(&Resources::new(), &observed), None, "a delete replaces nothing");
    }

    #[test]
    fn a_changed_spec_is_updated_in_place() {
        let desired: Resources = [((Kind::Integration, "i1".into()), integration("https://new"))].into();
        let observed: Observed =
            [((Kind::Integration, "i1".into()), ("x1".into(), integration("https://old")))].into();
        assert_eq!(
            diff(&desired, &observed),
            vec![Change::Update {
                key: (Kind::Integration, "i1".into()),
                desired: integration("https://new"),
                handle: "x1".into()
            }]
        );
    }

    #[test]
    fn deleting_an_api_takes_its_parts_but_not_its_domains() {
        let api = Spec::Api { name: "gw".into(), tags: BTreeMap::new() };
        let observed: Observed = [
            ((Kind::Api, "api".into()), ("h1".into(), api.clone())),
            ((Kind::Integration, "i1".into()), ("x1".into(), integration("https://a"))),
            ((Kind::Route, "ANY /a".into()), ("r1".into(), route("i1"))),
            (
                (Kind::Stage, "$default".into()),
                ("$default".into(), Spec::Stage { throttles: BTreeMap::new(), tags: BTreeMap::new() }),
            ),
            (
                (Kind::DomainName, "a.example".into()),
                (
                    "a.example".into(),
                    Spec::DomainName { certificate_arn: "arn".into(), tags: BTreeMap::new() },
                ),
            ),
            (
                (Kind::ApiMapping, "a.example".into()),
                ("m1".into(), Spec::ApiMapping { stage: "$default".into() }),
            ),
            ((Kind::RestApi, "api".into()), ("r1".into(), api)),
            ((Kind::Resource, "/a".into()), ("res1".into(), Spec::Resource)),
        ]
        .into();
        let plan: Vec<String> = diff(&Resources::new(), &observed).iter().map(ToString::to_string).collect();
        assert_eq!(
            plan,
            [
                "- delete api-mapping a.example (m1)",
                "- delete domain-name a.example (a.example)",
                "- delete rest-api api (r1)",
                "- delete api api (h1)"
            ]
        );
    }

    #[test]
    fn a_new_deployment_when_the_rest_api_changed() {
        let deployment = |digest: &str| Spec::Deployment { stage: "live".into(), digest: digest.into() };
        let desired: Resources = [((Kind::Deployment, "live".into()), deployment("d2"))].into();
        let observed: Observed =
            [((Kind::Deployment, "live".into()), ("dep1".into(), deployment("d1")))].into();
        assert!(matches!(diff(&desired, &observed)[..], [Change::Create { .. }]));
    }
}
