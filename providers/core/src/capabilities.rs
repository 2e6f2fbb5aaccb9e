//! What a provider can express, keyed by Gateway API feature names plus tollbridge's own.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

macro_rules! features {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, upstream = $upstream:literal; )*) => {
        /// A feature a provider may or may not support.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum Feature {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl Feature {
            /// Every feature, in declaration order.
            pub const ALL: &'static [Feature] = &[$(Feature::$variant),*];

            /// The feature's name: the Gateway API conformance name where one exists.
            pub fn name(self) -> &'static str {
                match self { $(Feature::$variant => $name,)* }
            }

            /// Whether the name is an upstream Gateway API feature (reported in
            /// GatewayClass `supportedFeatures`).
            pub fn is_upstream(self) -> bool {
                match self { $(Feature::$variant => $upstream,)* }
            }
        }
    };
}

features! {
    Gateway = "Gateway", upstream = true;
    GatewayPort8080 = "GatewayPort8080", upstream = true;
    GatewayHTTPListenerIsolation = "GatewayHTTPListenerIsolation", upstream = true;
    /// 421 for an HTTPS request whose host belongs to another listener than its TLS server name.
    GatewayHTTPSListenerDetectMisdirectedRequests = "GatewayHTTPSListenerDetectMisdirectedRequests", upstream = true;
    GatewayStaticAddresses = "GatewayStaticAddresses", upstream = true;
    /// A `spec.addresses` entry without a value: the provider picks the address.
    GatewayAddressEmpty = "GatewayAddressEmpty", upstream = true;
    /// `spec.infrastructure`: labels and annotations on what the provider makes, and a
    /// Gateway-level `parametersRef`.
    GatewayInfrastructure = "GatewayInfrastructure", upstream = true;
    ReferenceGrant = "ReferenceGrant", upstream = true;
    HTTPRoute = "HTTPRoute", upstream = true;
    HTTPRouteMethodMatching = "HTTPRouteMethodMatching", upstream = true;
    HTTPRouteQueryParamMatching = "HTTPRouteQueryParamMatching", upstream = true;
    HTTPRouteResponseHeaderModification = "HTTPRouteResponseHeaderModification", upstream = true;
    HTTPRouteBackendRequestHeaderModification = "HTTPRouteBackendRequestHeaderModification", upstream = true;
    HTTPRouteHostRewrite = "HTTPRouteHostRewrite", upstream = true;
    HTTPRoutePathRewrite = "HTTPRoutePathRewrite", upstream = true;
    HTTPRoutePathRedirect = "HTTPRoutePathRedirect", upstream = true;
    HTTPRoutePortRedirect = "HTTPRoutePortRedirect", upstream = true;
    HTTPRouteSchemeRedirect = "HTTPRouteSchemeRedirect", upstream = true;
    HTTPRoute303RedirectStatusCode = "HTTPRoute303RedirectStatusCode", upstream = true;
    HTTPRoute307RedirectStatusCode = "HTTPRoute307RedirectStatusCode", upstream = true;
    HTTPRoute308RedirectStatusCode = "HTTPRoute308RedirectStatusCode", upstream = true;
    HTTPRouteRequestMirror = "HTTPRouteRequestMirror", upstream = true;
    HTTPRouteRequestMultipleMirrors = "HTTPRouteRequestMultipleMirrors", upstream = true;
    HTTPRouteRequestPercentageMirror = "HTTPRouteRequestPercentageMirror", upstream = true;
    HTTPRouteRequestTimeout = "HTTPRouteRequestTimeout", upstream = true;
    HTTPRouteBackendTimeout = "HTTPRouteBackendTimeout", upstream = true;
    /// HTTPRoute `retry.codes`: backend answers with these codes tried again.
    HTTPRouteRetryCodes = "HTTPRouteRetryCodes", upstream = true;
    /// HTTPRoute `retry`: backend requests whose connection could not be made tried again.
    HTTPRouteRetryConnectionError = "HTTPRouteRetryConnectionError", upstream = true;
    HTTPRouteParentRefPort = "HTTPRouteParentRefPort", upstream = true;
    HTTPRouteNamedRouteRule = "HTTPRouteNamedRouteRule", upstream = true;
    HTTPRouteCORS = "HTTPRouteCORS", upstream = true;
    /// Backends whose Service port has `appProtocol: kubernetes.io/ws`: WebSocket upgrades
    /// carried to them.
    HTTPRouteBackendProtocolWebSocket = "HTTPRouteBackendProtocolWebSocket", upstream = true;
    /// Backends whose Service port has `appProtocol: kubernetes.io/h2c`: HTTP/2 without TLS,
    /// with prior knowledge.
    HTTPRouteBackendProtocolH2C = "HTTPRouteBackendProtocolH2C", upstream = true;
    /// BackendTLSPolicy: TLS to backends, checked against the CAs and hostname it names.
    BackendTLSPolicy = "BackendTLSPolicy", upstream = true;
    /// BackendTLSPolicy `subjectAltNames` (hostnames and URIs) checked instead of the hostname.
    BackendTLSPolicySANValidation = "BackendTLSPolicySANValidation", upstream = true;
    /// BackendTLSPolicy as a cloud carries it: the well-known CAs (`wellKnownCACertificates:
    /// System`) and the backend URL's own host as the name checked.
    BackendTlsWellKnownCas = "tollbridge.dev/BackendTLSWellKnownCAs", upstream = false;
    /// GRPCRoute: gRPC services and methods routed to backends spoken to in HTTP/2.
    GRPCRoute = "GRPCRoute", upstream = true;
    /// GRPCRoute rules with a `name`.
    GRPCRouteNamedRouteRule = "GRPCRouteNamedRouteRule", upstream = true;
    /// Core header matching (some clouds cannot match on headers).
    HeaderMatching = "tollbridge.dev/HeaderMatching", upstream = false;
    /// Regular-expression path, header and query matches.
    RegexMatching = "tollbridge.dev/RegexMatching", upstream = false;
    /// More than one backend per rule, split by weight.
    WeightedBackends = "tollbridge.dev/WeightedBackends", upstream = false;
    /// Core request redirects (hostname and 301/302).
    RequestRedirect = "tollbridge.dev/RequestRedirect", upstream = false;
    /// Core request header modification.
    RequestHeaderModification = "tollbridge.dev/RequestHeaderModification", upstream = false;
    /// API keys (QuotaPolicy `apiKey`, ApiKey objects).
    ApiKeys = "ApiKeys", upstream = false;
    /// Calendar quotas per key (QuotaPolicy `quota`).
    Quotas = "Quotas", upstream = false;
    /// Request rate limits (QuotaPolicy `rateLimit`).
    RateLimits = "RateLimits", upstream = false;
    /// JSON Web Tokens (QuotaPolicy `jwt`) with keys found through OpenID Connect discovery.
    JwtAuthentication = "JWTAuthentication", upstream = false;
    /// JWT signing keys fetched from a key set URL (`jwks.uri`).
    JwtKeySetUri = "JWTKeySetURI", upstream = false;
    /// JWT signing keys given inline (`jwks.inline`).
    JwtInlineKeys = "JWTInlineKeys", upstream = false;
    /// JWT claims required with given values (`jwt.requiredClaims`).
    JwtRequiredClaims = "JWTRequiredClaims", upstream = false;
    /// Rate limits and quotas counted per token consumer (`jwt` with `rateLimit` or `quota`).
    JwtConsumerLimits = "JWTConsumerLimits", upstream = false;
}

/// The features one provider supports, and its limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The provider's display name, used in status messages (e.g. "Amazon API Gateway (HTTP API)").
    pub provider: String,
    pub features: BTreeSet<Feature>,
    /// The longest request or backend timeout the provider accepts.
    pub max_timeout: Option<Duration>,
}

impl Capabilities {
    /// A provider that supports every feature, with no limits.
    pub fn everything(provider: impl Into<String>) -> Self {
        Self::with(provider, Feature::ALL.iter().copied())
    }

    pub fn with(provider: impl Into<String>, features: impl IntoIterator<Item = Feature>) -> Self {
        Self { provider: provider.into(), features: features.into_iter().collect(), max_timeout: None }
    }

    pub fn supports(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    /// The sorted upstream feature names, as GatewayClass `status.supportedFeatures` lists them.
    pub fn supported_feature_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.features.iter().filter(|f| f.is_upstream()).map(|f| f.name()).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_features_lists_only_upstream_names_sorted() {
        let caps = Capabilities::with(
            "test",
            [Feature::HTTPRouteQueryParamMatching, Feature::ApiKeys, Feature::HTTPRoute],
        );
        assert_eq!(caps.supported_feature_names(), ["HTTPRoute", "HTTPRouteQueryParamMatching"]);
        assert!(caps.supports(Feature::ApiKeys));
        assert!(!caps.supports(Feature::Quotas));
    }

    #[test]
    fn features_gateway_api_v1_7_removed_are_never_claimed() {
        let everything = Capabilities::everything("test").supported_feature_names();
        for removed in ["HTTPRouteRetry", "HTTPRouteRetryBackendTimeout", "HTTPRouteBackendRequestRedirect"] {
            assert!(!everything.contains(&removed), "{removed} was removed in Gateway API v1.7.0");
        }
        assert!(
            everything.contains(&"HTTPRouteRetryCodes")
                && everything.contains(&"HTTPRouteRetryConnectionError")
        );
    }

    #[test]
    fn feature_names_are_unique() {
        let names: BTreeSet<_> = Feature::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Feature::ALL.len());
    }
}
