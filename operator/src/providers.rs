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
/// shared by every Gateway that uses the same settings (and so the same call limiter). A
/// provider that could not be set up (say, a credential that failed) is tried again after a
/// backoff, so fixing the credential needs no restart.
pub struct Registry {
    cluster_id: String,
    aws: tollbridge_aws::AwsOptions,
    providers: tokio::sync::Mutex<HashMap<String, Entry>>,
}

struct Entry {
    provider: Arc<dyn Provider>,
    /// For a provider that could not be set up: when to try again, and the wait after that.
    retry: Option<(std::time::Instant, std::time::Duration)>,
}

/// First and last wait before setting up a failed provider again.
const SETUP_RETRY: (std::time::Duration, std::time::Duration) =
    (std::time::Duration::from_secs(10), std::time::Duration::from_secs(300));

impl Registry {
    /// `cluster_id` goes into the ownership tag of every cloud resource.
    pub fn new(cluster_id: String, aws: tollbridge_aws::AwsOptions) -> Self {
        Self { cluster_id, aws, providers: Default::default() }
    }

    /// The provider of cloud `settings` (not Local, which the caller serves itself).
    pub async fn get(&self, settings: &ProviderSettings) -> Arc<dyn Provider> {
        let key = serde_json::to_string(settings).unwrap_or_default();
        let mut providers = self.providers.lock().await;
        let now = std::time::Instant::now();
        let wait = match providers.get(&key) {
            Some(entry) if entry.retry.is_none_or(|(at, _)| now < at) => return entry.provider.clone(),
            Some(entry) => entry.retry.map_or(SETUP_RETRY.0, |(_, wait)| (wait * 2).min(SETUP_RETRY.1)),
            None => SETUP_RETRY.0,
        };
        let (provider, failed): (Arc<dyn Provider>, bool) = match settings {
            ProviderSettings::Aws(aws) => (
                Arc::new(tollbridge_aws::AwsProvider::new(aws, &self.cluster_id, self.aws.clone()).await),
                false,
            ),
            ProviderSettings::Azure(azure) => {
                match tollbridge_azure::AzureProvider::new(azure, &self.cluster_id, None) {
                    Ok(provider) => (Arc::new(provider), false),
                    Err(e) => (Arc::new(Unavailable::because(settings, e.to_string())), true),
                }
            }
            other => (Arc::new(Unavailable::new(other)), false),
        };
        let retry = failed.then(|| (now + wait, wait));
        providers.insert(key, Entry { provider: provider.clone(), retry });
        provider
    }
}

/// Stands in for a provider that cannot work (it could not be set up, e.g. no credentials):
/// every apply and every delete fails with the reason. A delete must not succeed: whatever was
/// provisioned before the provider broke is still there.
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
        Err(tollbridge_provider::ProviderError::Transient(format!("cannot delete: {}", self.reason)))
    }
}
