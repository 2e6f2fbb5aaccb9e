//! tollbridge CRDs (group tollbridge.dev, version v1alpha1): ProviderConfig, QuotaPolicy, ApiKey.
//!
//! The Rust types are the source of truth: the YAML under `crds/` is generated from them (see
//! [`crate::crds`]). Doc comments become the field descriptions shown by `kubectl explain`, and
//! the `x_kube(validation = ...)` rules become `x-kubernetes-validations` checked by the API
//! server. Standalone mode reads these objects from files that no API server has seen, so code
//! consuming them must not assume those rules have run.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::gateway::ParentReference;

/// The API group of tollbridge's own kinds.
pub const GROUP: &str = "tollbridge.dev";
/// The API version of tollbridge's own kinds.
pub const VERSION: &str = "v1alpha1";

// ---------------------------------------------------------------------------------------------
// ProviderConfig

/// Where the Gateways of a GatewayClass run: the built-in proxy, Amazon API Gateway or Azure API
/// Management. Referenced from `GatewayClass.spec.parametersRef`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tollbridge.dev",
    version = "v1alpha1",
    kind = "ProviderConfig",
    doc = "Where the Gateways of a GatewayClass run: the built-in proxy (Local), Amazon API Gateway (AWS) or Azure API Management (Azure).",
    status = "ProviderConfigStatus",
    shortname = "tbpc",
    category = "tollbridge",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self.provider != 'AWS' || has(self.aws)")
        .message("aws is required when provider is AWS")
        .field_path(".aws")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.provider != 'Azure' || has(self.azure)")
        .message("azure is required when provider is Azure")
        .field_path(".azure")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfigSpec {
    /// Which provider runs the Gateways; its settings are read from the field of the same name.
    #[serde(default)]
    pub provider: ProviderKind,
    /// Settings of the built-in proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalProviderSpec>,
    /// Settings for Amazon API Gateway; required when provider is AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProviderSpec>,
    /// Settings for Azure API Management; required when provider is Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureProviderSpec>,
    /// When this ProviderConfig is a GatewayClass's: the ProviderConfigs a Gateway of the class
    /// may choose instead in `spec.infrastructure.parametersRef`. Default: none, so a Gateway's
    /// author cannot pick another team's account, role or service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub allowed_gateway_overrides: Option<Vec<String>>,
}

/// The provider that runs a GatewayClass's Gateways.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum ProviderKind {
    /// The built-in proxy: standalone, or one Deployment per Gateway in the cluster.
    #[default]
    Local,
    /// Amazon API Gateway.
    #[serde(rename = "AWS")]
    Aws,
    /// Azure API Management.
    Azure,
}

/// Settings of the built-in proxy when it runs in the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalProviderSpec {
    /// Proxy replicas per Gateway (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// Type of the Service in front of each Gateway's proxy (default LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Container image of the proxy (default: the operator's own image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Address ranges (CIDR, e.g. 10.96.0.0/28) from which a Gateway of this class may ask
    /// for its address in `spec.addresses` (its Service's cluster IP or load balancer IP).
    /// Default: none, so only the class's owner lets Gateways pick addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub allowed_addresses: Option<Vec<String>>,
    /// A Redis through which the proxy's replicas share their rate limits and quotas (one count
    /// per policy and key whatever replica answers, kept across pod restarts). Default: each
    /// replica counts alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter_store: Option<CounterStoreSpec>,
}

/// A shared counter store (Redis) for the Local proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterStoreSpec {
    /// `redis://HOST:PORT[/DB]`, or `rediss://HOST:PORT[/DB]` for TLS; a user name may be given
    /// (`redis://USER@HOST:PORT`, with its password in `passwordSecretRef`), a password may not.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// The password (or the ACL user's password): a key of a Secret in each Gateway's own
    /// namespace, so that every tenant brings its own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<CounterStoreSecretRef>,
    /// PEM CA certificates to trust for `rediss://` (default: the system's): a key of a Secret
    /// in each Gateway's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CounterStoreSecretRef>,
    /// What limited requests get while the store cannot answer (default Local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<CounterStoreFailureMode>,
    /// Milliseconds a decision waits for the store before following the failure mode
    /// (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub timeout_milliseconds: Option<i32>,
    /// Most requests a busy key may lease beyond the one decided (default 256): the store
    /// counts them at once and the proxy replica admits them without asking, only while the
    /// limits keep plenty of room. 0: every limited request asks the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4096))]
    pub lease_max: Option<i32>,
}

/// A key of a Secret in the Gateway's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterStoreSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data (default `password` for a password, `ca.crt` for CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// What limited requests get while the counter store cannot answer (default Local).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CounterStoreFailureMode {
    /// Each replica counts alone until the store is back (N replicas admit up to N times the
    /// limits meanwhile).
    #[default]
    Local,
    /// Requests go through uncounted.
    Open,
    /// Requests are refused with 503.
    Closed,
}

impl LocalProviderSpec {
    /// Replicas when `replicas` is unset.
    pub const DEFAULT_REPLICAS: i32 = 1;

    /// The replicas to run: `replicas`, or [`Self::DEFAULT_REPLICAS`].
    pub fn replicas_or_default(&self) -> i32 {
        self.replicas.unwrap_or(Self::DEFAULT_REPLICAS)
    }

    /// The Service type to create: `serviceType`, or LoadBalancer.
    pub fn service_type_or_default(&self) -> ServiceType {
        self.service_type.unwrap_or_default()
    }
}

/// Type of the Service in front of each Gateway's proxy (default LoadBalancer).
// Optional enums take their CRD description from the type, not the field: keep defaults here.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    ClusterIP,
    /// Reachable on a port of every node.
    NodePort,
    /// Reachable through the cluster's load balancer.
    #[default]
    LoadBalancer,
}

/// Settings for Amazon API Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsProviderSpec {
    /// AWS region of the APIs, e.g. us-east-1.
    #[schemars(length(min = 1))]
    pub region: String,
    /// Which API Gateway flavour to create (default Auto: HTTP API unless API keys or quotas
    /// need a REST API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_type: Option<AwsApiType>,
    /// Overrides the API Gateway endpoint (for testing against an emulator).
    #[serde(default, rename = "endpointURL", skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// VPC link used by integrations that reach private backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_link_id: Option<String>,
    /// IAM role assumed for all API Gateway calls (default: the ambient credentials).
    #[serde(default, rename = "roleARN", skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// ACM certificate of the custom domains made for HTTPS listeners with a hostname.
    #[serde(default, rename = "certificateARN", skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    /// Extra tags on every resource created; the ownership tag is always added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The kind of Amazon API Gateway API to create (default Auto).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AwsApiType {
    /// HTTP API, or REST API when a QuotaPolicy needs API keys, rate limits or quotas.
    #[default]
    Auto,
    /// HTTP API (API Gateway v2).
    #[serde(rename = "HTTP")]
    Http,
    /// REST API (API Gateway v1).
    #[serde(rename = "REST")]
    Rest,
}

/// Settings for Azure API Management.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureProviderSpec {
    /// Azure subscription holding the API Management service.
    #[serde(rename = "subscriptionID")]
    #[schemars(length(min = 1))]
    pub subscription_id: String,
    /// Resource group of the API Management service.
    #[schemars(length(min = 1))]
    pub resource_group: String,
    /// Name of the existing API Management service.
    #[schemars(length(min = 1))]
    pub service_name: String,
    /// Overrides the Azure Resource Manager endpoint (for sovereign clouds or testing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// How the operator authenticates to Azure (default WorkloadIdentity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<AzureCredential>,
    /// The service's pricing tier, e.g. Developer or Consumption; unset means read it from the
    /// service. Some policies (quota-by-key) are not available on every tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// How the operator authenticates to Azure (default WorkloadIdentity).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AzureCredential {
    /// Federated token of the operator's Kubernetes service account.
    #[default]
    WorkloadIdentity,
    /// Managed identity of the node or VM.
    ManagedIdentity,
    /// Client ID and secret from the environment.
    ClientSecret,
    /// The logged-in Azure CLI (development only).
    AzureCli,
}

/// Observed state of a ProviderConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfigStatus {
    /// Conditions of the configuration, e.g. Accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

// ---------------------------------------------------------------------------------------------
// QuotaPolicy

/// API keys, rate limits and quotas for the HTTPRoutes, GRPCRoutes or Gateways it targets (a
/// Direct policy attachment, GEP-713).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
// Printer columns repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "tollbridge.dev",
    version = "v1alpha1",
    kind = "QuotaPolicy",
    namespaced,
    doc = "API keys, rate limits and quotas for the HTTPRoutes, GRPCRoutes or Gateways it targets.",
    status = "PolicyStatus",
    shortname = "qp",
    category = "tollbridge",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "Rate",
        type_ = "integer",
        description = "Requests allowed per unit",
        json_path = ".spec.rateLimit.requests"
    ),
    printcolumn(name = "Per", type_ = "string", json_path = ".spec.rateLimit.unit"),
    printcolumn(
        name = "Quota",
        type_ = "integer",
        description = "Requests allowed per period",
        json_path = ".spec.quota.requests"
    ),
    printcolumn(name = "Period", type_ = "string", json_path = ".spec.quota.period"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("has(self.apiKey) || has(self.jwt) || has(self.rateLimit) || has(self.quota)")
        .message("at least one of apiKey, jwt, rateLimit or quota must be set")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.apiKey) || !has(self.jwt)")
        .message("apiKey and jwt cannot both be set: a policy identifies its consumers one way")
        .field_path(".jwt")
)]
#[serde(rename_all = "camelCase")]
pub struct QuotaPolicySpec {
    /// The HTTPRoutes, GRPCRoutes or Gateways this policy applies to (same namespace).
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Require an API key (ApiKey objects referring to this policy) on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeySettings>,
    /// Require a JSON Web Token (`Authorization: Bearer`) on every request; its consumer claim
    /// is counted by the rate limit and quota as an API key's consumer is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// Request rate per key or token consumer (per target when neither is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Request quota per key over calendar windows in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// A Gateway API object in the policy's namespace, optionally one section of it (a listener of a
/// Gateway, a named rule of a route).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// API group of the target: gateway.networking.k8s.io.
    #[schemars(extend("enum" = ["gateway.networking.k8s.io"]))]
    pub group: String,
    /// Kind of the target: HTTPRoute, GRPCRoute or Gateway.
    #[schemars(extend("enum" = ["HTTPRoute", "GRPCRoute", "Gateway"]))]
    pub kind: String,
    /// Name of the target.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A listener name (Gateway) or rule name (HTTPRoute, GRPCRoute); unset means the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// Where requests carry their API key and what is forwarded upstream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.header) || self.header != '' || (has(self.queryParam) && self.queryParam != '')"
)
.message("header and queryParam must not both be empty: the key has to be read from somewhere"))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySettings {
    /// Reject requests without a valid key (401); when false, requests without a key pass
    /// but a key that is present must be valid.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Request header holding the key (default x-api-key unless only queryParam is set; empty
    /// means do not read a header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$"))]
    pub header: Option<String>,
    /// Query parameter holding the key (empty or unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub query_param: Option<String>,
    /// Request header set upstream to the key's consumer (default x-tollbridge-consumer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$"))]
    pub forward_consumer_header: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Default for ApiKeySettings {
    fn default() -> Self {
        Self { required: true, header: None, query_param: None, forward_consumer_header: None }
    }
}

impl ApiKeySettings {
    /// Header read when neither `header` nor `queryParam` is set.
    pub const DEFAULT_HEADER: &'static str = "x-api-key";
    /// Header forwarded upstream when `forwardConsumerHeader` is unset.
    pub const DEFAULT_CONSUMER_HEADER: &'static str = "x-tollbridge-consumer";

    /// The header holding the key: `header` when set and non-empty; none when only `queryParam`
    /// is set; otherwise [`Self::DEFAULT_HEADER`].
    pub fn header_name(&self) -> Option<&str> {
        match (non_empty(&self.header), non_empty(&self.query_param)) {
            (Some(header), _) => Some(header),
            (None, Some(_)) => None,
            (None, None) => Some(Self::DEFAULT_HEADER),
        }
    }

    /// The query parameter holding the key, when set and non-empty.
    pub fn query_param_name(&self) -> Option<&str> {
        non_empty(&self.query_param)
    }

    /// The header forwarded upstream with the consumer name: `forwardConsumerHeader` when set
    /// and non-empty, otherwise [`Self::DEFAULT_CONSUMER_HEADER`].
    pub fn consumer_header(&self) -> &str {
        non_empty(&self.forward_consumer_header).unwrap_or(Self::DEFAULT_CONSUMER_HEADER)
    }
}

/// `Some(s)` for a set, non-empty string: an empty string means "not used" in our specs.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

/// How requests prove who they are with a JSON Web Token (RFC 7519) signed by an issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSettings {
    /// The issuer (`iss`) every token must name, e.g. https://login.example.com/.
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,
    /// Tokens must name at least one of these in `aud`; empty means the audience is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 2048)))]
    pub audiences: Vec<String>,
    /// Where the issuer's public signing keys are found.
    pub jwks: JwksSource,
    /// The claim naming the consumer, counted by the rate limit and quota and forwarded upstream
    /// (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_.:/-]+$"))]
    pub consumer_claim: Option<String>,
    /// Claims a token must carry, each with one of the listed values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub required_claims: Vec<RequiredClaim>,
    /// Request header set upstream to the token's consumer (default x-tollbridge-consumer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]*$"))]
    pub forward_consumer_header: Option<String>,
    /// Keep the `Authorization` header on the request sent upstream (default: removed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_token: bool,
}

/// The issuer's public signing keys (a JSON Web Key Set, RFC 7517): exactly one source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(has(self.openIDDiscovery) && self.openIDDiscovery ? 1 : 0) + (has(self.uri) ? 1 : 0) + (has(self.inline) ? 1 : 0) == 1"
)
    .message("set exactly one of openIDDiscovery, uri or inline"))]
#[serde(rename_all = "camelCase")]
pub struct JwksSource {
    /// Read the key set's location from the issuer's OpenID Connect discovery document
    /// (`<issuer>/.well-known/openid-configuration`); every provider supports this.
    #[serde(default, rename = "openIDDiscovery", skip_serializing_if = "is_false")]
    pub openid_discovery: bool,
    /// An `https://` URL serving the key set; fetched, cached and refreshed by the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://"))]
    pub uri: Option<String>,
    /// The key set itself, as JSON (`{"keys": [...]}`): public RSA, EC (P-256, P-384) or Ed25519
    /// keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 65536))]
    pub inline: Option<String>,
}

/// A claim a token must carry with one of the listed values. For a list claim, or a string of
/// space-separated words such as `scope`, one of its items must be listed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequiredClaim {
    /// Name of the claim, e.g. `scope` or `tenant`.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_.:/-]+$"))]
    pub name: String,
    /// The accepted values.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 1024)))]
    pub values: Vec<String>,
}

impl JwtSettings {
    /// The consumer claim when `consumerClaim` is unset.
    pub const DEFAULT_CONSUMER_CLAIM: &'static str = "sub";

    /// The claim naming the consumer: `consumerClaim`, or [`Self::DEFAULT_CONSUMER_CLAIM`].
    pub fn consumer_claim(&self) -> &str {
        non_empty(&self.consumer_claim).unwrap_or(Self::DEFAULT_CONSUMER_CLAIM)
    }

    /// The header forwarded upstream with the consumer name.
    pub fn consumer_header(&self) -> &str {
        non_empty(&self.forward_consumer_header).unwrap_or(ApiKeySettings::DEFAULT_CONSUMER_HEADER)
    }
}

/// A token-bucket rate limit.
// Integer formats are int64 in the CRD: Kubernetes knows no uint32/uint64 and warns about them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.burst) || self.burst >= self.requests")
    .message("burst must be at least requests")
    .field_path(".burst"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests allowed per unit (the refill rate).
    #[schemars(range(min = 1, max = u32::MAX), extend("format" = "int64"))]
    pub requests: u32,
    /// The unit of time of `requests`.
    pub unit: RateLimitUnit,
    /// Requests allowed at once after a quiet period (default: requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX), extend("format" = "int64"))]
    pub burst: Option<u32>,
}

/// The unit of time of a rate limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum RateLimitUnit {
    Second,
    Minute,
    Hour,
}

impl RateLimitUnit {
    /// Length of the unit in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            RateLimitUnit::Second => 1,
            RateLimitUnit::Minute => 60,
            RateLimitUnit::Hour => 3600,
        }
    }
}

/// A request quota over calendar windows in UTC.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Requests allowed per period.
    #[schemars(range(min = 1), extend("format" = "int64"))]
    pub requests: u64,
    /// The calendar window the quota resets on.
    pub period: QuotaPeriod,
}

/// A calendar window in UTC: a day, an ISO week (from Monday) or a month.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum QuotaPeriod {
    Day,
    Week,
    Month,
}

/// Observed state of a policy, per ancestor (Gateway) it affects (GEP-713 shape).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// One entry per Gateway affected by the policy, written by the controller named in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// Status of a policy with respect to one ancestor (a Gateway).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The Gateway (optionally one listener of it) this entry is about.
    pub ancestor_ref: ParentReference,
    /// The controller that wrote this entry: tollbridge.dev/gateway-controller.
    pub controller_name: String,
    /// Conditions for this ancestor, e.g. Accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

// ---------------------------------------------------------------------------------------------
// ApiKey

/// One API key of a QuotaPolicy; the key itself lives in a Secret.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
// Printer columns repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "tollbridge.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    namespaced,
    doc = "One API key of a QuotaPolicy in the same namespace; the key itself lives in a Secret.",
    status = "ApiKeyStatus",
    shortname = "tbkey",
    category = "tollbridge",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Policy", type_ = "string", json_path = ".spec.policyRef.name"),
    printcolumn(name = "Consumer", type_ = "string", json_path = ".spec.consumer"),
    printcolumn(name = "KeyID", type_ = "string", json_path = ".status.keyId"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.usage.used"),
    printcolumn(name = "Remaining", type_ = "integer", json_path = ".status.usage.remaining"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// The QuotaPolicy (same namespace) this key belongs to.
    pub policy_ref: PolicyReference,
    /// Name of the key's owner, forwarded upstream in the policy's consumer header (default:
    /// the ApiKey's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[\x21-\x7E]([\x20-\x7E]*[\x21-\x7E])?$"))]
    pub consumer: Option<String>,
    /// The Secret (same namespace) holding the key; in a cluster a missing Secret is generated.
    pub secret_ref: SecretKeyRef,
    /// Refuse this key (401, as an unknown key) without deleting it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// When the key stops being accepted (RFC 3339); unset means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl ApiKey {
    /// The consumer name forwarded upstream: `spec.consumer`, or the ApiKey's name.
    pub fn consumer_name(&self) -> &str {
        non_empty(&self.spec.consumer).or(self.metadata.name.as_deref()).unwrap_or_default()
    }
}

/// A reference to a QuotaPolicy in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReference {
    /// Name of the QuotaPolicy.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data (default api-key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The Secret data key used when `key` is unset.
    pub const DEFAULT_KEY: &'static str = "api-key";

    /// The Secret data key holding the API key: `key`, or [`Self::DEFAULT_KEY`].
    pub fn key_or_default(&self) -> &str {
        non_empty(&self.key).unwrap_or(Self::DEFAULT_KEY)
    }
}

/// Observed state of an ApiKey.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// Conditions of the key: Accepted (the policy exists) and Ready (the key is usable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// First 8 hex digits of the SHA-256 of the key: identifies it without revealing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The key's use of its policy's quota in the current period, as its Gateway counts it
    /// (Local Gateways with a counter store). Written when the count changes, at most once per
    /// the operator's usage interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ApiKeyUsage>,
}

/// A key's use of its quota in the current period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyUsage {
    /// Start of the current quota period.
    pub period_start: Time,
    /// End of the current quota period (the count starts again then).
    pub period_end: Time,
    /// Requests counted in the period.
    pub used: i64,
    /// The quota of the period.
    pub limit: i64,
    /// Requests left in the period.
    pub remaining: i64,
    /// When the key's last counted request came (Local Gateways with a counter store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// When this count was read.
    pub observed_at: Time,
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::core::cel::{analyze_rule, compile_schema, ScopeContext, Validator};
    use kube::CustomResourceExt;
    use serde_json::{json, Value};

    use super::*;

    /// Parses `yaml` as `T` and checks that serializing it gives back exactly the same document,
    /// so every JSON field name and enum spelling is exercised both ways.
    fn parse_exact<T>(yaml: &str) -> T
    where
        T: serde::de::DeserializeOwned + Serialize,
    {
        let typed: T = serde_yaml::from_str(yaml).expect("parses");
        let document: Value = serde_yaml::from_str(yaml).expect("parses as JSON value");
        assert_eq!(serde_json::to_value(&typed).unwrap(), document);
        typed
    }

    /// The openAPIV3Schema of a CRD as JSON.
    fn schema(crd: &CustomResourceDefinition) -> Value {
        let version = &crd.spec.versions[0];
        serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref()).unwrap()
    }

    /// The node at `pointer` (a JSON pointer) of `value`, which must exist.
    fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
        value.pointer(pointer).unwrap_or_else(|| panic!("no {pointer} in schema"))
    }

    /// The CEL rules attached to the schema node at `pointer`.
    fn rules_at(schema: &Value, pointer: &str) -> Vec<String> {
        at(schema, &format!("{pointer}/x-kubernetes-validations"))
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["rule"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Messages of the CEL rules that `object` (YAML) violates, as the API server would report.
    fn cel_failures(crd: &CustomResourceDefinition, object: &str) -> Vec<String> {
        let object: Value = serde_yaml::from_str(object).unwrap();
        match Validator::new().validate(&schema(crd), &object, None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// Every `x-kubernetes-validations` rule in `schema`, with its JSON pointer.
    fn all_rules(schema: &Value, pointer: String, out: &mut Vec<(String, String)>) {
        match schema {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "x-kubernetes-validations" {
                        for rule in child.as_array().unwrap() {
                            let rule = rule["rule"].as_str().unwrap().to_owned();
                            out.push((pointer.clone(), rule));
                        }
                    } else {
                        all_rules(child, format!("{pointer}/{key}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    all_rules(child, format!("{pointer}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// Every value of `key` anywhere in `schema`.
    fn all_values<'a>(schema: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
        match schema {
            Value::Object(map) => {
                for (k, child) in map {
                    if k == key {
                        out.push(child);
                    }
                    all_values(child, key, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|child| all_values(child, key, out)),
            _ => {}
        }
    }

    fn crds() -> [CustomResourceDefinition; 3] {
        [ProviderConfig::crd(), QuotaPolicy::crd(), ApiKey::crd()]
    }

    // -- parsing --------------------------------------------------------------------------------

    #[test]
    fn parses_a_full_aws_provider_config() {
        let config: ProviderConfig = parse_exact(
            r#"
apiVersion: tollbridge.dev/v1alpha1
kind: ProviderConfig
metadata:
  name: aws-prod
spec:
  provider: AWS
  local:
    replicas: 2
    serviceType: NodePort
    image: registry.example/tollbridge:1.0
  aws:
    region: eu-west-1
    apiType: REST
    endpointURL: http://127.0.0.1:5000
    vpcLinkId: vl-123
    roleARN: arn:aws:iam::123456789012:role/tollbridge
    tags:
      team: payments
status:
  conditions:
  - type: Accepted
    status: "True"
    reason: Accepted
    message: ""
    lastTransitionTime: "2025-01-02T03:04:05Z"
    observedGeneration: 1
"#,
        );
        let spec = &config.spec;
        assert_eq!(spec.provider, ProviderKind::Aws);
        let local = spec.local.as_ref().unwrap();
        assert_eq!(local.replicas_or_default(), 2);
        assert_eq!(local.service_type_or_default(), ServiceType::NodePort);
        let aws = spec.aws.as_ref().unwrap();
        assert_eq!(aws.region, "eu-west-1");
        assert_eq!(aws.api_type, Some(AwsApiType::Rest));
        assert_eq!(aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(aws.vpc_link_id.as_deref(), Some("vl-123"));
        assert_eq!(aws.role_arn.as_deref(), Some("arn:aws:iam::123456789012:role/tollbridge"));
        assert_eq!(aws.tags["team"], "payments");
        assert_eq!(config.status.unwrap().conditions[0].type_, "Accepted");
    }

    #[test]
    fn parses_a_full_azure_provider_config() {
        let config: ProviderConfig = parse_exact(
            r#"
apiVersion: tollbridge.dev/v1alpha1
kind: ProviderConfig
metadata:
  name: azure
spec:
  provider: Azure
  azure:
    subscriptionID: 00000000-0000-0000-0000-000000000001
    resourceGroup: rg-apis
    serviceName: apim-prod
    endpoint: http://127.0.0.1:8443
    credential: ClientSecret
    tier: Developer
"#,
        );
        let azure = config.spec.azure.unwrap();
        assert_eq!(config.spec.provider, ProviderKind::Azure);
        assert_eq!(azure.subscription_id, "00000000-0000-0000-0000-000000000001");
        assert_eq!(azure.resource_group, "rg-apis");
        assert_eq!(azure.service_name, "apim-prod");
        assert_eq!(azure.credential, Some(AzureCredential::ClientSecret));
        assert_eq!(azure.tier.as_deref(), Some("Developer"));
    }

    #[test]
    fn provider_config_defaults() {
        let config: ProviderConfig = serde_yaml::from_str(
            "{apiVersion: tollbridge.dev/v1alpha1, kind: ProviderConfig, metadata: {name: x}, spec: {local: {}}}",
        )
        .unwrap();
        assert_eq!(config.spec.provider, ProviderKind::Local);
        let local = config.spec.local.unwrap();
        assert_eq!(local.replicas_or_default(), 1);
        assert_eq!(local.service_type_or_default(), ServiceType::LoadBalancer);
        assert_eq!(AwsApiType::default(), AwsApiType::Auto);
        assert_eq!(AzureCredential::default(), AzureCredential::WorkloadIdentity);
    }

    #[test]
    fn parses_a_full_quota_policy() {
        let policy: QuotaPolicy = parse_exact(
            r#"
apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata:
  name: gold
  namespace: shop
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    name: orders
    sectionName: create
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: public
  apiKey:
    required: false
    header: x-key
    queryParam: key
    forwardConsumerHeader: x-consumer
  rateLimit:
    requests: 10
    unit: Second
    burst: 20
  quota:
    requests: 1000
    period: Month
status:
  ancestors:
  - ancestorRef:
      group: gateway.networking.k8s.io
      kind: Gateway
      namespace: shop
      name: public
    controllerName: tollbridge.dev/gateway-controller
    conditions:
    - type: Accepted
      status: "True"
      reason: Accepted
      message: Policy accepted
      lastTransitionTime: "2025-01-02T03:04:05Z"
"#,
        );
        let spec = &policy.spec;
        assert_eq!(spec.target_refs.len(), 2);
        assert_eq!(spec.target_refs[0].section_name.as_deref(), Some("create"));
        assert_eq!(spec.target_refs[1].kind, "Gateway");
        let api_key = spec.api_key.as_ref().unwrap();
        assert!(!api_key.required);
        assert_eq!(api_key.header_name(), Some("x-key"));
        assert_eq!(api_key.query_param_name(), Some("key"));
        assert_eq!(api_key.consumer_header(), "x-consumer");
        let rate = spec.rate_limit.as_ref().unwrap();
        assert_eq!((rate.requests, rate.unit, rate.burst), (10, RateLimitUnit::Second, Some(20)));
        let quota = spec.quota.as_ref().unwrap();
        assert_eq!((quota.requests, quota.period), (1000, QuotaPeriod::Month));
        let status = policy.status.unwrap();
        assert_eq!(status.ancestors[0].ancestor_ref.name, "public");
        assert_eq!(status.ancestors[0].controller_name, "tollbridge.dev/gateway-controller");
    }

    #[test]
    fn api_key_settings_default_to_a_required_x_api_key_header() {
        let policy: QuotaPolicy = serde_yaml::from_str(
            r#"
apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  apiKey: {}
"#,
        )
        .unwrap();
        let api_key = policy.spec.api_key.unwrap();
        assert_eq!(api_key, ApiKeySettings::default());
        assert!(api_key.required);
        assert_eq!(api_key.header_name(), Some("x-api-key"));
        assert_eq!(api_key.query_param_name(), None);
        assert_eq!(api_key.consumer_header(), "x-tollbridge-consumer");
    }

    #[test]
    fn header_name_follows_header_and_query_param() {
        let settings = |header: Option<&str>, query: Option<&str>| ApiKeySettings {
            header: header.map(str::to_owned),
            query_param: query.map(str::to_owned),
            ..ApiKeySettings::default()
        };
        assert_eq!(settings(None, None).header_name(), Some("x-api-key"));
        assert_eq!(settings(None, Some("key")).header_name(), None);
        assert_eq!(settings(Some(""), Some("key")).header_name(), None);
        assert_eq!(settings(Some("x-k"), Some("key")).header_name(), Some("x-k"));
        assert_eq!(settings(Some("x-k"), None).header_name(), Some("x-k"));
        assert_eq!(settings(None, Some("")).header_name(), Some("x-api-key"));
        assert_eq!(settings(None, Some("")).query_param_name(), None);
        let empty_consumer =
            ApiKeySettings { forward_consumer_header: Some(String::new()), ..ApiKeySettings::default() };
        assert_eq!(empty_consumer.consumer_header(), "x-tollbridge-consumer");
    }

    #[test]
    fn rate_limit_units_in_seconds() {
        assert_eq!(RateLimitUnit::Second.seconds(), 1);
        assert_eq!(RateLimitUnit::Minute.seconds(), 60);
        assert_eq!(RateLimitUnit::Hour.seconds(), 3600);
    }

    #[test]
    fn parses_a_full_api_key() {
        let key: ApiKey = parse_exact(
            r#"
apiVersion: tollbridge.dev/v1alpha1
kind: ApiKey
metadata:
  name: acme
  namespace: shop
spec:
  policyRef:
    name: gold
  consumer: Acme Corp
  secretRef:
    name: acme-key
    key: token
  disabled: true
  expiresAt: "2026-01-01T00:00:00Z"
status:
  conditions:
  - type: Ready
    status: "True"
    reason: Ready
    message: ""
    lastTransitionTime: "2025-01-02T03:04:05Z"
  keyId: 0123abcd
"#,
        );
        assert_eq!(key.spec.policy_ref.name, "gold");
        assert_eq!(key.consumer_name(), "Acme Corp");
        assert_eq!(key.spec.secret_ref.key_or_default(), "token");
        assert!(key.spec.disabled);
        assert_eq!(key.spec.expires_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(key.status.unwrap().key_id.as_deref(), Some("0123abcd"));
    }

    #[test]
    fn api_key_defaults() {
        let key: ApiKey = serde_yaml::from_str(
            r#"
apiVersion: tollbridge.dev/v1alpha1
kind: ApiKey
metadata: {name: acme}
spec:
  policyRef: {name: gold}
  secretRef: {name: acme-key}
"#,
        )
        .unwrap();
        assert_eq!(key.consumer_name(), "acme");
        assert_eq!(key.spec.secret_ref.key_or_default(), "api-key");
        assert!(!key.spec.disabled);
        // `disabled: false` is the default and is left out when writing.
        assert!(serde_json::to_value(&key.spec).unwrap().get("disabled").is_none());
    }

    // -- generated schema -----------------------------------------------------------------------

    #[test]
    fn crd_names_scopes_and_subresources() {
        let [provider, policy, key] = crds();
        assert_eq!(provider.metadata.name.as_deref(), Some("providerconfigs.tollbridge.dev"));
        assert_eq!(provider.spec.scope, "Cluster");
        assert_eq!(policy.metadata.name.as_deref(), Some("quotapolicies.tollbridge.dev"));
        assert_eq!(policy.spec.scope, "Namespaced");
        assert_eq!(key.metadata.name.as_deref(), Some("apikeys.tollbridge.dev"));
        assert_eq!(key.spec.scope, "Namespaced");
        for crd in [&provider, &policy, &key] {
            assert_eq!(crd.spec.group, GROUP);
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            assert!(version.subresources.as_ref().unwrap().status.is_some());
            assert_eq!(crd.spec.names.categories.as_deref(), Some(&["tollbridge".to_owned()][..]));
        }
    }

    #[test]
    fn printer_columns() {
        let columns = |crd: &CustomResourceDefinition| -> Vec<(String, String)> {
            crd.spec.versions[0]
                .additional_printer_columns
                .as_ref()
                .unwrap()
                .iter()
                .map(|c| (c.name.clone(), c.json_path.clone()))
                .collect()
        };
        let [provider, policy, key] = crds();
        assert_eq!(
            columns(&provider),
            [
                ("Provider".to_owned(), ".spec.provider".to_owned()),
                ("Age".to_owned(), ".metadata.creationTimestamp".to_owned()),
            ]
        );
        let names = |crd| columns(crd).into_iter().map(|(name, _)| name).collect::<Vec<_>>();
        assert_eq!(names(&policy), ["Rate", "Per", "Quota", "Period", "Age"]);
        assert_eq!(names(&key), ["Policy", "Consumer", "KeyID", "Used", "Remaining", "Ready", "Age"]);
        assert_eq!(columns(&key)[5].1, r#".status.conditions[?(@.type=="Ready")].status"#);
        assert_eq!(columns(&key)[3].1, ".status.usage.used");
    }

    #[test]
    fn provider_config_schema() {
        let s = schema(&ProviderConfig::crd());
        let spec = "/properties/spec";
        assert_eq!(at(&s, &format!("{spec}/properties/provider/enum")), &json!(["Local", "AWS", "Azure"]));
        assert_eq!(at(&s, &format!("{spec}/properties/provider/default")), "Local");
        let local = format!("{spec}/properties/local/properties");
        assert_eq!(at(&s, &format!("{local}/replicas/minimum")), 1.0);
        assert_eq!(
            at(&s, &format!("{local}/serviceType/enum")),
            &json!(["ClusterIP", "NodePort", "LoadBalancer"])
        );
        let aws = format!("{spec}/properties/aws");
        assert_eq!(at(&s, &format!("{aws}/required")), &json!(["region"]));
        assert_eq!(at(&s, &format!("{aws}/properties/apiType/enum")), &json!(["Auto", "HTTP", "REST"]));
        for field in ["region", "apiType", "endpointURL", "vpcLinkId", "roleARN", "tags"] {
            at(&s, &format!("{aws}/properties/{field}"));
        }
        let azure = format!("{spec}/properties/azure");
        assert_eq!(
            at(&s, &format!("{azure}/required")),
            &json!(["resourceGroup", "serviceName", "subscriptionID"])
        );
        assert_eq!(
            at(&s, &format!("{azure}/properties/credential/enum")),
            &json!(["WorkloadIdentity", "ManagedIdentity", "ClientSecret", "AzureCli"])
        );
        assert_eq!(
            rules_at(&s, spec),
            ["self.provider != 'AWS' || has(self.aws)", "self.provider != 'Azure' || has(self.azure)",]
        );
        assert_eq!(
            at(&s, "/properties/status/properties/conditions/x-kubernetes-list-map-keys"),
            &json!(["type"])
        );
    }

    #[test]
    fn quota_policy_schema() {
        let s = schema(&QuotaPolicy::crd());
        let spec = "/properties/spec";
        assert_eq!(at(&s, &format!("{spec}/required")), &json!(["targetRefs"]));
        let refs = format!("{spec}/properties/targetRefs");
        assert_eq!(at(&s, &format!("{refs}/minItems")), 1);
        assert_eq!(at(&s, &format!("{refs}/maxItems")), 16);
        let target = format!("{refs}/items");
        assert_eq!(at(&s, &format!("{target}/required")), &json!(["group", "kind", "name"]));
        assert_eq!(at(&s, &format!("{target}/properties/group/enum")), &json!(["gateway.networking.k8s.io"]));
        assert_eq!(
            at(&s, &format!("{target}/properties/kind/enum")),
            &json!(["HTTPRoute", "GRPCRoute", "Gateway"])
        );
        let api_key = format!("{spec}/properties/apiKey");
        assert_eq!(at(&s, &format!("{api_key}/properties/required/default")), true);
        let rate = format!("{spec}/properties/rateLimit");
        assert_eq!(at(&s, &format!("{rate}/required")), &json!(["requests", "unit"]));
        assert_eq!(at(&s, &format!("{rate}/properties/requests/minimum")), 1.0);
        assert_eq!(at(&s, &format!("{rate}/properties/burst/minimum")), 1.0);
        assert_eq!(at(&s, &format!("{rate}/properties/unit/enum")), &json!(["Second", "Minute", "Hour"]));
        let quota = format!("{spec}/properties/quota");
        assert_eq!(at(&s, &format!("{quota}/required")), &json!(["period", "requests"]));
        assert_eq!(at(&s, &format!("{quota}/properties/requests/minimum")), 1.0);
        assert_eq!(at(&s, &format!("{quota}/properties/period/enum")), &json!(["Day", "Week", "Month"]));
        assert_eq!(
            rules_at(&s, spec),
            [
                "has(self.apiKey) || has(self.jwt) || has(self.rateLimit) || has(self.quota)",
                "!has(self.apiKey) || !has(self.jwt)"
            ]
        );
        let jwt = format!("{spec}/properties/jwt");
        assert_eq!(at(&s, &format!("{jwt}/required")), &json!(["issuer", "jwks"]));
        assert_eq!(at(&s, &format!("{jwt}/properties/jwks/properties/uri/pattern")), "^https://");
        assert_eq!(rules_at(&s, &rate), ["!has(self.burst) || self.burst >= self.requests"]);
        assert_eq!(
            rules_at(&s, &api_key),
            ["!has(self.header) || self.header != '' || (has(self.queryParam) && self.queryParam != '')"]
        );
        let ancestor = "/properties/status/properties/ancestors/items";
        assert_eq!(at(&s, &format!("{ancestor}/required")), &json!(["ancestorRef", "controllerName"]));
        assert_eq!(at(&s, &format!("{ancestor}/properties/conditions/x-kubernetes-list-type")), "map");
    }

    #[test]
    fn api_key_schema() {
        let s = schema(&ApiKey::crd());
        let spec = "/properties/spec";
        assert_eq!(at(&s, &format!("{spec}/required")), &json!(["policyRef", "secretRef"]));
        assert_eq!(at(&s, &format!("{spec}/properties/policyRef/required")), &json!(["name"]));
        assert_eq!(at(&s, &format!("{spec}/properties/secretRef/required")), &json!(["name"]));
        assert_eq!(at(&s, &format!("{spec}/properties/expiresAt/format")), "date-time");
        assert_eq!(at(&s, &format!("{spec}/properties/disabled/type")), "boolean");
        at(&s, "/properties/status/properties/keyId");
        assert_eq!(
            at(&s, "/properties/status/properties/conditions/x-kubernetes-list-map-keys"),
            &json!(["type"])
        );
    }

    #[test]
    fn schemas_use_only_formats_and_enums_kubernetes_accepts() {
        for crd in crds() {
            let s = schema(&crd);
            let mut formats = Vec::new();
            all_values(&s, "format", &mut formats);
            for format in formats {
                let format = format.as_str().unwrap();
                assert!(
                    ["int32", "int64", "date-time"].contains(&format),
                    "{}: format {format}",
                    crd.spec.names.kind
                );
            }
            let mut enums = Vec::new();
            all_values(&s, "enum", &mut enums);
            for values in enums {
                assert!(
                    values.as_array().unwrap().iter().all(Value::is_string),
                    "{}: enum {values}",
                    crd.spec.names.kind
                );
            }
        }
    }

    // -- CEL rules, evaluated as the API server would ---------------------------------------------

    #[test]
    fn every_cel_rule_compiles_within_budget_and_scope() {
        let mut total = 0;
        for crd in crds() {
            let s = schema(&crd);
            let compiled = compile_schema(&s);
            let mut rules = Vec::new();
            all_rules(&s, String::new(), &mut rules);
            total += rules.len();
            for (pointer, rule) in rules {
                let warnings = analyze_rule(&rule, &compiled, ScopeContext::CrdValidation);
                assert!(warnings.is_empty(), "{pointer}: {rule}: {warnings:?}");
                kube::core::cel::cel::Program::compile(&rule)
                    .unwrap_or_else(|e| panic!("{pointer}: {rule} does not compile: {e}"));
            }
        }
        assert_eq!(total, 7, "a rule was added or lost: update the rule tests");
    }

    #[test]
    fn provider_config_requires_the_selected_provider_settings() {
        let crd = ProviderConfig::crd();
        let object = |spec: &str| {
            format!("{{apiVersion: tollbridge.dev/v1alpha1, kind: ProviderConfig, metadata: {{name: x}}, spec: {spec}}}")
        };
        assert_eq!(cel_failures(&crd, &object("{}")), Vec::<String>::new());
        assert_eq!(cel_failures(&crd, &object("{provider: Local}")), Vec::<String>::new());
        assert_eq!(
            cel_failures(&crd, &object("{provider: AWS}")),
            ["spec.aws: aws is required when provider is AWS"]
        );
        assert_eq!(
            cel_failures(&crd, &object("{provider: AWS, aws: {region: us-east-1}}")),
            Vec::<String>::new()
        );
        assert_eq!(
            cel_failures(&crd, &object("{provider: Azure, aws: {region: us-east-1}}")),
            ["spec.azure: azure is required when provider is Azure"]
        );
        assert_eq!(
            cel_failures(
                &crd,
                &object("{provider: Azure, azure: {subscriptionID: s, resourceGroup: g, serviceName: n}}")
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn quota_policy_rules() {
        let crd = QuotaPolicy::crd();
        let object = |rest: &str| {
            format!(
                "{{apiVersion: tollbridge.dev/v1alpha1, kind: QuotaPolicy, metadata: {{name: p}}, \
                 spec: {{targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]{rest}}}}}"
            )
        };
        let ok = Vec::<String>::new();
        assert_eq!(
            cel_failures(&crd, &object("")),
            ["spec: at least one of apiKey, jwt, rateLimit or quota must be set"]
        );
        let jwt = |jwks: &str| format!(", jwt: {{issuer: 'https://id.example', jwks: {{{jwks}}}}}");
        assert_eq!(cel_failures(&crd, &object(&jwt("openIDDiscovery: true"))), ok);
        assert_eq!(cel_failures(&crd, &object(&jwt("uri: 'https://id.example/keys'"))), ok);
        assert_eq!(cel_failures(&crd, &object(&jwt("inline: '{\"keys\": []}'"))), ok);
        let one_source = "spec.jwt.jwks: set exactly one of openIDDiscovery, uri or inline";
        assert_eq!(cel_failures(&crd, &object(&jwt(""))), [one_source]);
        assert_eq!(cel_failures(&crd, &object(&jwt("openIDDiscovery: false"))), [one_source]);
        assert_eq!(
            cel_failures(&crd, &object(&jwt("openIDDiscovery: true, uri: 'https://id.example/keys'"))),
            [one_source]
        );
        assert_eq!(
            cel_failures(&crd, &object(&(jwt("openIDDiscovery: true") + ", apiKey: {}"))),
            ["spec.jwt: apiKey and jwt cannot both be set: a policy identifies its consumers one way"]
        );
        assert_eq!(cel_failures(&crd, &object(", apiKey: {}")), ok);
        assert_eq!(cel_failures(&crd, &object(", quota: {requests: 5, period: Day}")), ok);
        assert_eq!(cel_failures(&crd, &object(", rateLimit: {requests: 5, unit: Second}")), ok);
        assert_eq!(cel_failures(&crd, &object(", rateLimit: {requests: 5, unit: Second, burst: 5}")), ok);
        assert_eq!(
            cel_failures(&crd, &object(", rateLimit: {requests: 5, unit: Second, burst: 4}")),
            ["spec.rateLimit.burst: burst must be at least requests"]
        );
        let empty_location =
            "spec.apiKey: header and queryParam must not both be empty: the key has to be read from somewhere";
        assert_eq!(cel_failures(&crd, &object(", apiKey: {header: '', queryParam: ''}")), [empty_location]);
        assert_eq!(cel_failures(&crd, &object(", apiKey: {header: ''}")), [empty_location]);
        assert_eq!(cel_failures(&crd, &object(", apiKey: {header: '', queryParam: key}")), ok);
        assert_eq!(cel_failures(&crd, &object(", apiKey: {queryParam: ''}")), ok);
    }
}
