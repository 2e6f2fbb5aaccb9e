//! The SDK clients of one account and region: credentials from the default chain (IRSA, EKS
//! Pod Identity, environment, profile), an optional role to assume, an optional endpoint
//! (emulators, special partitions), the client-side limiter, and a count of every call sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_apigatewayv2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_apigatewayv2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use tollbridge_provider::ratelimit::{CallLimiter, Limits};
use tollbridge_provider::AwsSettings;

/// Account-wide limits of API Gateway's control plane (per account and region).
pub fn account_limits() -> Limits {
    Limits {
        rate: 10.0,
        burst: 40.0,
        per_operation: HashMap::from([
            ("CreateDeployment", Duration::from_secs(5)),
            ("CreateRestApi", Duration::from_secs(3)),
            ("ImportRestApi", Duration::from_secs(3)),
            ("UpdateUsagePlan", Duration::from_secs(20)),
            ("CreateVpcLink", Duration::from_secs(15)),
        ]),
    }
}

/// How the provider talks to the account.
#[derive(Clone, Debug)]
pub struct AwsOptions {
    /// Client-side limits of control-plane calls (default: the account's).
    pub limits: Limits,
    /// How long one attempt of a call may take before it is retried.
    pub attempt_timeout: Duration,
    /// The HTTP client (default: hyper with rustls); tests plug in the SDK's replay client.
    pub http_client: Option<aws_smithy_runtime_api::client::http::SharedHttpClient>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self { limits: account_limits(), attempt_timeout: Duration::from_secs(20), http_client: None }
    }
}

/// Every request attempt sent, by operation name (retries count again).
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Attempts of operations that change something (every name not starting with Get).
    pub fn writes(&self) -> u64 {
        self.snapshot().iter().filter(|(op, _)| !op.starts_with("Get")).map(|(_, n)| n).sum()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "tollbridge-call-counter"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation =
            cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_else(|| "unknown".into());
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// The clients of one ProviderConfig.
pub struct Clients {
    pub v2: aws_sdk_apigatewayv2::Client,
    pub v1: aws_sdk_apigateway::Client,
    pub limiter: CallLimiter,
    pub calls: CallCounter,
    pub region: String,
}

impl Clients {
    /// Builds the clients. Throttling and 5xx answers are retried by the SDK (standard mode,
    /// 5 attempts, backoff with jitter) as a backstop behind the limiter.
    pub async fn new(settings: &AwsSettings, options: AwsOptions) -> Self {
        let https = options.http_client.clone().unwrap_or_else(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                .build_https()
        });
        let region = aws_config::Region::new(settings.region.clone());
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(options.attempt_timeout)
            .operation_timeout(Duration::from_secs(90))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(https)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(timeouts);
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let mut config = loader.load().await;
        if let Some(role) = &settings.role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("tollbridge")
                .configure(&config)
                .build()
                .await;
            config = config
                .into_builder()
                .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                    provider,
                ))
                .build();
        }
        let calls = CallCounter::default();
        let v2 = aws_sdk_apigatewayv2::config::Builder::from(&config).interceptor(calls.clone()).build();
        let v1 = aws_sdk_apigateway::config::Builder::from(&config).interceptor(calls.clone()).build();
        Self {
            v2: aws_sdk_apigatewayv2::Client::from_conf(v2),
            v1: aws_sdk_apigateway::Client::from_conf(v1),
            limiter: CallLimiter::new(options.limits),
            calls,
            region: settings.region.clone(),
        }
    }
}
