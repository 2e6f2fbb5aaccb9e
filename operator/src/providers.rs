//! Which provider serves a Gateway, and what it can express.
//!
//! The capability tables follow DESIGN §5. They live here until each cloud provider crate
//! declares its own; the translator only ever sees them through [`capabilities`].

use std::time::Duration;

use tollbridge_provider::{Capabilities, Feature, ProviderSettings};

/// The capabilities of the provider a resolved ProviderConfig selects.
pub fn capabilities(settings: &ProviderSettings) -> Capabilities {
    match settings {
        ProviderSettings::Local(_) => Capabilities::everything("the tollbridge local proxy"),
        ProviderSettings::Aws(aws) if aws.api_type == "HTTP" => aws_http_api(),
        ProviderSettings::Aws(_) => aws_rest_api(),
        ProviderSettings::Azure(_) => azure_api_management(),
    }
}

/// Features every provider has.
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
];

fn aws_http_api() -> Capabilities {
    let extra = [Feature::HTTPRouteResponseHeaderModification, Feature::RateLimits];
    Capabilities {
        max_timeout: Some(Duration::from_secs(30)),
        ..Capabilities::with("Amazon API Gateway (HTTP API)", BASE.iter().copied().chain(extra))
    }
}

/// REST APIs, also used for `apiType: Auto` (REST when keys or quotas are attached).
fn aws_rest_api() -> Capabilities {
    let extra = [
        Feature::HTTPRouteResponseHeaderModification,
        Feature::RequestRedirect,
        Feature::HTTPRouteSchemeRedirect,
        Feature::HTTPRoutePathRedirect,
        Feature::HTTPRoutePortRedirect,
        Feature::HTTPRouteHostRewrite,
        Feature::ApiKeys,
        Feature::Quotas,
        Feature::RateLimits,
    ];
    Capabilities {
        max_timeout: Some(Duration::from_secs(29)),
        ..Capabilities::with("Amazon API Gateway (REST API)", BASE.iter().copied().chain(extra))
    }
}

fn azure_api_management() -> Capabilities {
    let unsupported =
        [Feature::GatewayStaticAddresses, Feature::HTTPRouteParentRefPort, Feature::GatewayPort8080];
    Capabilities::with(
        "Azure API Management",
        Feature::ALL.iter().copied().filter(|f| !unsupported.contains(f)),
    )
}

/// Stands in for a cloud provider this build does not include: every apply fails with a
/// message saying so (not retried); delete succeeds, as nothing was ever provisioned.
pub struct Unavailable {
    name: &'static str,
    capabilities: Capabilities,
}

impl Unavailable {
    pub fn new(settings: &ProviderSettings) -> Self {
        Self { name: settings.kind_name(), capabilities: capabilities(settings) }
    }
}

#[async_trait::async_trait]
impl tollbridge_provider::Provider for Unavailable {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn apply(
        &self,
        _: &tollbridge_provider::GatewayIr,
    ) -> Result<tollbridge_provider::Provisioned, tollbridge_provider::ProviderError> {
        Err(tollbridge_provider::ProviderError::Invalid(format!(
            "the {} provider is not part of this tollbridge build yet",
            self.name
        )))
    }

    async fn delete(
        &self,
        _: &tollbridge_provider::GatewayKey,
    ) -> Result<(), tollbridge_provider::ProviderError> {
        Ok(())
    }
}
