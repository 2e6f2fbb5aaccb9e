//! Which provider serves a Gateway, and what it can express.
//!
//! The AWS tables come from the `tollbridge-aws` crate; Azure's (DESIGN §5) live here until its
//! crate exists. The translator only ever sees them through [`capabilities`].

use std::collections::HashMap;
use std::sync::Arc;

use tollbridge_provider::{Capabilities, Feature, Provider, ProviderSettings};

/// The capabilities of the provider a resolved ProviderConfig selects.
pub fn capabilities(settings: &ProviderSettings) -> Capabilities {
    match settings {
        ProviderSettings::Local(_) => Capabilities::everything("the tollbridge local proxy"),
        ProviderSettings::Aws(aws) => tollbridge_aws::capabilities_for(aws),
        ProviderSettings::Azure(_) => azure_api_management(),
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

/// The cloud providers in use, one per distinct ProviderConfig, created on first use and
/// shared by every Gateway that uses the same settings (and so the same call limiter).
pub struct Registry {
    cluster_id: String,
    aws: tollbridge_aws::AwsOptions,
    providers: tokio::sync::Mutex<HashMap<String, Arc<dyn Provider>>>,
}

impl Registry {
    /// `cluster_id` goes into the ownership tag of every cloud resource.
    pub fn new(cluster_id: String, aws: tollbridge_aws::AwsOptions) -> Self {
        Self { cluster_id, aws, providers: Default::default() }
    }

    /// The provider of cloud `settings` (not Local, which the caller serves itself).
    pub async fn get(&self, settings: &ProviderSettings) -> Arc<dyn Provider> {
        let key = serde_json::to_string(settings).unwrap_or_default();
        let mut providers = self.providers.lock().await;
        if let Some(provider) = providers.get(&key) {
            return provider.clone();
        }
        let provider: Arc<dyn Provider> = match settings {
            ProviderSettings::Aws(aws) => {
                Arc::new(tollbridge_aws::AwsProvider::new(aws, &self.cluster_id, self.aws.clone()).await)
            }
            other => Arc::new(Unavailable::new(other)),
        };
        providers.insert(key, provider.clone());
        provider
    }
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
impl Provider for Unavailable {
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
