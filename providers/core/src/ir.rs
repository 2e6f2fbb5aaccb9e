//! The gateway IR: one provider-neutral description of a Gateway, its listeners, its routes in
//! Gateway API precedence order, and the quota policies that guard them.
//!
//! Produced by the translator, consumed by providers. Serializing it never reveals a secret.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{SecretBytes, SecretString};

/// Identifies a Gateway object.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
}

impl GatewayKey {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything a provider needs to serve one Gateway.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayIr {
    pub key: GatewayKey,
    pub provider: ProviderSettings,
    pub listeners: Vec<ListenerIr>,
    /// The IP addresses `spec.addresses` asks for, in order: where a standalone proxy binds,
    /// or the in-cluster Service's address. Empty: the provider's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// What `spec.infrastructure` asks to find on everything made for the Gateway.
    #[serde(default, skip_serializing_if = "InfrastructureMetadata::is_empty")]
    pub infrastructure: InfrastructureMetadata,
    /// Flattened (route, rule, match) entries, sorted by Gateway API precedence.
    pub routes: Vec<RouteIr>,
    pub policies: Vec<QuotaPolicyIr>,
}

/// Labels and annotations for the objects a provider makes for a Gateway (the Local provider's
/// ServiceAccount, Deployment, pods, Service, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InfrastructureMetadata {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl InfrastructureMetadata {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// The resolved ProviderConfig of the Gateway's class. Also what the operator records on a
/// cloud Gateway as the place it was provisioned into, so it can be cleaned up from there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ProviderSettings {
    Local(LocalSettings),
    #[serde(rename = "aws")]
    Aws(AwsSettings),
    Azure(AzureSettings),
}

impl ProviderSettings {
    /// Whether both settings provision into the same place (AWS: region, endpoint and role;
    /// Azure: subscription, resource group, service, endpoint and credential), whatever else
    /// differs (tags, API type, replicas...).
    pub fn same_target(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Local(_), Self::Local(_)) => true,
            (Self::Aws(a), Self::Aws(b)) => {
                (&a.region, &a.endpoint_url, &a.role_arn) == (&b.region, &b.endpoint_url, &b.role_arn)
            }
            (Self::Azure(a), Self::Azure(b)) => {
                (&a.subscription_id, &a.resource_group, &a.service_name, &a.endpoint, &a.credential)
                    == (&b.subscription_id, &b.resource_group, &b.service_name, &b.endpoint, &b.credential)
            }
            _ => false,
        }
    }

    /// The provider's name as written in a ProviderConfig (`Local`, `AWS`, `Azure`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Local(_) => "Local",
            Self::Aws(_) => "AWS",
            Self::Azure(_) => "Azure",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalSettings {
    pub replicas: i32,
    pub service_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CIDRs a Gateway's requested address must lie in (in a cluster); empty: none allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_addresses: Vec<String>,
    /// Where the proxy's replicas share their counters (in a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter_store: Option<CounterStoreIr>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            service_type: "LoadBalancer".into(),
            image: None,
            allowed_addresses: Vec::new(),
            counter_store: None,
        }
    }
}

/// A shared counter store, as the proxy's command line takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterStoreIr {
    /// `redis://` or `rediss://`, without a password.
    pub url: String,
    /// (Secret, key) in the Gateway's namespace holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<(String, String)>,
    /// (Secret, key) in the Gateway's namespace holding PEM CA certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<(String, String)>,
    /// `local`, `open` or `closed`.
    pub failure_mode: String,
    pub timeout_ms: u32,
    /// Most requests leased beyond one decision (`None`: the proxy's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_max: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AwsSettings {
    pub region: String,
    /// `Auto`, `HTTP` or `REST`.
    pub api_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_link_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AzureSettings {
    pub subscription_id: String,
    pub resource_group: String,
    pub service_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub credential: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ListenerProtocol {
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
}

/// One accepted listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerIr {
    pub name: String,
    pub port: u16,
    pub protocol: ListenerProtocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Certificates for HTTPS listeners; the first is the default when SNI picks none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateIr>,
}

/// A TLS certificate chain and key from a Secret of type kubernetes.io/tls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIr {
    /// `namespace/name` of the Secret.
    pub secret: String,
    pub cert_chain_pem: SecretBytes,
    pub private_key_pem: SecretBytes,
}

/// Identifies one match of one rule of one route (an HTTPRoute or a GRPCRoute).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteId {
    pub namespace: String,
    pub name: String,
    pub rule: usize,
    #[serde(rename = "match")]
    pub match_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    #[serde(skip_serializing_if = "RouteKind::is_http")]
    pub kind: RouteKind,
}

impl RouteId {
    /// `namespace/name` of the route, with its kind when it is not an HTTPRoute (an HTTPRoute
    /// and a GRPCRoute may share a name).
    pub fn route(&self) -> String {
        match self.kind {
            RouteKind::HTTPRoute => format!("{}/{}", self.namespace, self.name),
            RouteKind::GRPCRoute => format!("GRPCRoute {}/{}", self.namespace, self.name),
        }
    }
}

/// The kind of route an entry comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RouteKind {
    #[default]
    HTTPRoute,
    /// Its rules match gRPC services and methods (as request paths), and its backends are
    /// spoken to in HTTP/2.
    GRPCRoute,
}

impl RouteKind {
    pub fn is_http(&self) -> bool {
        *self == Self::HTTPRoute
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::HTTPRoute => "HTTPRoute",
            Self::GRPCRoute => "GRPCRoute",
        }
    }
}

/// One (route, rule, match) entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteIr {
    pub id: RouteId,
    /// The listeners the route is attached to, with the hostnames it serves on each.
    pub attachments: Vec<AttachmentIr>,
    #[serde(rename = "match")]
    pub matcher: MatchIr,
    #[serde(skip_serializing_if = "FiltersIr::is_empty")]
    pub filters: FiltersIr,
    pub action: ActionIr,
    #[serde(skip_serializing_if = "TimeoutsIr::is_empty")]
    pub timeouts: TimeoutsIr,
    /// When a failed backend request is tried again (`None`: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryIr>,
    /// `namespace/name` of the QuotaPolicy guarding this entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentIr {
    pub listener: String,
    /// Hostnames served on this listener (the route's ∩ the listener's); empty means any host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// All conditions must hold for a request to match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchIr {
    pub path: PathMatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<KeyValueMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<KeyValueMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    /// Segment-aware prefix: `/a` matches `/a` and `/a/b`, not `/ab`.
    Prefix(String),
    Regex(String),
}

/// A header (name case-insensitive, stored lower case) or query parameter (case-sensitive) match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

/// Filters that modify the request or response on their way through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FiltersIr {
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub request_headers: HeaderModifier,
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub response_headers: HeaderModifier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorIr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsIr>,
}

impl FiltersIr {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Header names are lower case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A header name (lower case) and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PathModifier {
    /// Replace the whole path.
    Full { path: String },
    /// Replace the matched prefix (the rule's PathPrefix value) with this one.
    Prefix { matched: String, replacement: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A copy of the request sent to another backend; its answer is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorIr {
    pub backend: BackendIr,
    /// Share of requests mirrored, as numerator/denominator.
    pub numerator: u32,
    pub denominator: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsIr {
    pub allow_origins: Vec<String>,
    pub allow_credentials: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    pub max_age_seconds: u32,
}

/// What the gateway does with a matched request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ActionIr {
    /// Proxy to one of the backends, chosen by weight.
    Forward {
        backends: Vec<BackendIr>,
    },
    Redirect(RedirectIr),
    /// Answer directly with a status code (e.g. 500 when a rule has no usable backend).
    Respond {
        status: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectIr {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    pub status: u16,
}

/// One weighted backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendIr {
    /// `namespace/service:port`.
    pub name: String,
    pub weight: u32,
    pub target: BackendTarget,
    /// How requests are spoken to the backend (its Service port's `appProtocol`).
    #[serde(skip_serializing_if = "BackendProtocol::is_http1")]
    pub protocol: BackendProtocol,
    /// TLS to the backend (a BackendTLSPolicy targets its Service port); plain when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTlsIr>,
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub request_headers: HeaderModifier,
    #[serde(skip_serializing_if = "HeaderModifier::is_empty")]
    pub response_headers: HeaderModifier,
}

/// How the gateway checks a backend it speaks TLS to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsIr {
    /// Sent as SNI; the backend's certificate must be valid for it.
    pub hostname: String,
    /// PEM certificates of the CAs to trust; empty: the system's well-known CAs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates_pem: Vec<String>,
    /// Names one of which the certificate must carry, instead of the hostname.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltNameIr>,
    /// `namespace/name` of the BackendTLSPolicy that asks for TLS.
    pub policy: String,
}

/// A subject alternative name a backend's certificate may carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum SubjectAltNameIr {
    /// A DNS name (a wildcard in the certificate matches as usual).
    Hostname(String),
    /// A URI, compared exactly (e.g. a SPIFFE ID).
    Uri(String),
}

/// The protocol a backend is spoken to in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BackendProtocol {
    /// HTTP/1.1 (and WebSocket upgrades over it).
    #[default]
    Http1,
    /// HTTP/2 without TLS, with prior knowledge (`appProtocol: kubernetes.io/h2c`).
    H2c,
}

impl BackendProtocol {
    pub fn is_http1(&self) -> bool {
        *self == Self::Http1
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum BackendTarget {
    /// Ready endpoints of a Service; empty means 503.
    Endpoints { endpoints: Vec<Endpoint> },
    /// A URL outside the cluster (ExternalName Service or the backend-url annotation).
    Url { url: String },
    /// The reference is invalid; its share of traffic gets 500.
    Invalid { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsIr {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_request_ms: Option<u64>,
}

impl TimeoutsIr {
    pub fn is_empty(&self) -> bool {
        self.request_ms.is_none() && self.backend_request_ms.is_none()
    }
}

/// An HTTPRoute rule's `retry`, with at least one attempt (zero attempts is no retry at all).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryIr {
    /// Backend response codes that are tried again (sorted, each once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// Backend requests made after the first, at most.
    pub attempts: u32,
    /// Base interval of the backoff between attempts; `None`: the provider's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

/// An accepted QuotaPolicy and its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaPolicyIr {
    /// `namespace/name`.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeySettingsIr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtIr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitIr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaIr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ApiKeyIr>,
}

/// JSON Web Tokens required on every request (`Authorization: Bearer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtIr {
    pub issuer: String,
    /// Empty: the audience is not checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub jwks: JwksIr,
    pub consumer_claim: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_claims: Vec<RequiredClaimIr>,
    /// Lower-case header the consumer name is forwarded in.
    pub consumer_header: String,
    /// Keep the `Authorization` header upstream.
    pub forward_token: bool,
}

/// Where the issuer's signing keys are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum JwksIr {
    /// From `<issuer>/.well-known/openid-configuration`'s `jwks_uri`.
    OpenIdDiscovery,
    /// An `https://` URL serving the key set.
    Uri(String),
    /// The key set's JSON, checked by [`crate::jwks::parse`] when translated.
    Inline(String),
}

impl JwtIr {
    /// The URL of the issuer's OpenID Connect discovery document.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'))
    }
}

/// A claim that must carry one of `values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequiredClaimIr {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySettingsIr {
    pub required: bool,
    /// Lower-case header carrying the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
    /// Lower-case header the consumer name is forwarded in.
    pub consumer_header: String,
}

/// `requests` per `period_seconds`, with bursts up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitIr {
    pub requests: u32,
    pub period_seconds: u64,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum QuotaPeriod {
    Day,
    Week,
    Month,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaIr {
    pub requests: u64,
    pub period: QuotaPeriod,
}

/// An accepted ApiKey: found by the SHA-256 of its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyIr {
    /// `namespace/name` of the ApiKey object.
    pub id: String,
    pub consumer: String,
    /// Lower-case hex SHA-256 of the key value.
    pub sha256: String,
    /// The key itself, for clouds that must be told it.
    pub value: SecretString,
    pub disabled: bool,
    /// Seconds since the Unix epoch after which the key is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl ApiKeyIr {
    /// The public key id: the first 8 hex digits of the SHA-256.
    pub fn key_id(&self) -> &str {
        &self.sha256[..8.min(self.sha256.len())]
    }
}
