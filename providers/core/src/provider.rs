//! The contract between the operator and a provider.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

use crate::{Capabilities, GatewayIr, GatewayKey};

/// Applies gateways to one place (the local proxy, an AWS account, an APIM service).
#[async_trait]
pub trait Provider: Send + Sync {
    fn capabilities(&self) -> &Capabilities;
    /// Makes the provider match `gateway`; calling it again with the same IR changes nothing.
    async fn apply(&self, gateway: &GatewayIr) -> Result<Provisioned, ProviderError>;
    /// Removes everything the provider created for the gateway; deleting twice is not an error.
    async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError>;
    /// Requests each key of `requests` made against its quota in the period asked, as the
    /// service counts them (`None` for a key the service does not have). Default: this
    /// provider's usage cannot be read.
    async fn key_usage(
        &self,
        gateway: &GatewayIr,
        requests: &[UsageRequest],
    ) -> Result<Vec<Option<u64>>, ProviderError> {
        let _ = (gateway, requests);
        Err(ProviderError::Invalid("this provider's key usage cannot be read".into()))
    }
}

/// One API key's quota period to read the usage of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRequest {
    /// `namespace/name` of the QuotaPolicy.
    pub policy: String,
    /// `namespace/name` of the ApiKey.
    pub api_key: String,
    /// First and last day (UTC, `YYYY-MM-DD`) of what to count: the period's start and today.
    pub first_day: String,
    pub last_day: String,
}

/// What a provider reports after applying a gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provisioned {
    /// Addresses clients use (IPs or hostnames), for Gateway `status.addresses`.
    pub addresses: Vec<String>,
    /// Listeners that could not be programmed, with the reason.
    pub failed_listeners: BTreeMap<String, String>,
    /// Provider ids of what was created (API id, usage plan ids, ...), for events and debugging.
    pub resource_ids: BTreeMap<String, String>,
    /// Parts of the Gateway the provider could not express, each with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unprovisioned: Vec<String>,
    /// What this apply replaced with a resource of another kind, changing what clients must
    /// use (an HTTP API replaced by a REST API answers on a new hostname), one sentence each.
    /// Reported by the apply that made the replacement only: the operator turns each into a
    /// status message and a Warning Event. Empty when nothing was replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
}

/// Why a provider call failed. The variant decides retry behaviour and the metric label.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying with backoff (throttling, 5xx, timeouts).
    #[error("transient provider error: {0}")]
    Transient(String),
    /// The gateway cannot be provisioned as asked; retrying will not help until it changes.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// An address the Gateway asks for cannot be given to it (outside the range the provider
    /// hands out, taken, or more than it can serve); the Gateway stays unprogrammed until
    /// `spec.addresses` changes.
    #[error("address not usable: {0}")]
    AddressNotUsable(String),
    /// The provider refused our credentials or permissions.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    /// Anything else.
    #[error("provider error: {0}")]
    Other(String),
}

impl ProviderError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Invalid(_) => "invalid",
            Self::AddressNotUsable(_) => "address_not_usable",
            Self::Unauthorized(_) => "unauthorized",
            Self::Other(_) => "other",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Other(_))
    }
}
