//! Which provider serves a Gateway, and what it can express.
//!
//! The tables come from the provider crates; the translator only ever sees them through
//! [`capabilities`].

use std::collections::HashMap;
use std::sync::Arc;

use tollbridge_provider::{Capabilities, Provider, ProviderSettings};

/// The capabilities of the provider a resolved ProviderConfig selects.
pub fn capabilities(settings: &ProviderSettings) -> Capabilities {
    match settings {
        ProviderSettings::Local(_) => Capabilities::everything("the tollbridge local proxy"),
        ProviderSettings::Aws(aws) => tollbridge_aws::capabilities_for(aws),
        ProviderSettings::Azure(_) => tollbridge_azure::capabilities(),
    }
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
            ProviderSettings::Azure(azure) => {
                match tollbridge_azure::AzureProvider::new(azure, &self.cluster_id, None) {
                    Ok(provider) => Arc::new(provider),
                    Err(e) => Arc::new(Unavailable::because(settings, e.to_string())),
                }
            }
            other => Arc::new(Unavailable::new(other)),
        };
        providers.insert(key, provider.clone());
        provider
    }
}

/// Stands in for a provider that cannot work (it could not be set up, e.g. no credentials):
/// every apply fails with the reason (not retried); delete succeeds, as nothing was provisioned.
pub struct Unavailable {
    reason: String,
    capabilities: Capabilities,
}

impl Unavailable {
    pub fn new(settings: &ProviderSettings) -> Self {
        let reason = format!("the {} provider is not part of this tollbridge build", settings.kind_name());
        Self::because(settings, reason)
    }

    pub fn because(settings: &ProviderSettings, reason: String) -> Self {
        Self { reason, capabilities: capabilities(settings) }
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
        Err(tollbridge_provider::ProviderError::Invalid(self.reason.clone()))
    }

    async fn delete(
        &self,
        _: &tollbridge_provider::GatewayKey,
    ) -> Result<(), tollbridge_provider::ProviderError> {
        Ok(())
    }
}
