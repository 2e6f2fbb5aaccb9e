//! What Amazon API Gateway can express, per API type (docs/providers.md), as far as this provider
//! provisions it.

use std::time::Duration;

use tollbridge_provider::{Capabilities, Feature};

/// Features of both API types.
const BASE: &[Feature] = &[
    Feature::Gateway,
    Feature::HTTPRoute,
    Feature::ReferenceGrant,
    Feature::HTTPRouteMethodMatching,
    Feature::HTTPRouteNamedRouteRule,
    Feature::RequestHeaderModification,
    Feature::HTTPRoutePathRewrite,
    Feature::HTTPRouteRequestTimeout,
    Feature::HTTPRouteBackendTimeout,
    Feature::BackendTlsWellKnownCas,
];

/// HTTP APIs (API Gateway v2): route throttling, JWT authorizers (keys found through the
/// issuer's OpenID Connect discovery), no keys or quotas.
pub fn http_api() -> Capabilities {
    Capabilities {
        max_timeout: Some(Duration::from_secs(30)),
        ..Capabilities::with(
            "Amazon API Gateway (HTTP API)",
            BASE.iter().copied().chain([Feature::RateLimits, Feature::JwtAuthentication]),
        )
    }
}

/// REST APIs (API Gateway v1), also used for `apiType: Auto`: keys, usage plans.
pub fn rest_api() -> Capabilities {
    let extra = [Feature::ApiKeys, Feature::Quotas, Feature::RateLimits];
    Capabilities {
        max_timeout: Some(Duration::from_secs(29)),
        ..Capabilities::with("Amazon API Gateway (REST API)", BASE.iter().copied().chain(extra))
    }
}
