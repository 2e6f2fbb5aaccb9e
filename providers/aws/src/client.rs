//! The SDK clients of one account and region: credentials from the default chain (IRSA, EKS
//! Pod Identity, environment, profile), an optional role to assume, an optional endpoint
//! (emulators, special partitions), the client-side limiter, and a count of every call sent.
//!
//! The limiter sits in the HTTP client of the API Gateway clients: every attempt the SDK
//! transmits (first attempts, its own retries, every page of a list) waits there for the
//! limiter under its operation's name, so none bypasses it. The attempt timeout starts once
//! the limiter let the attempt through.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_apigatewayv2::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_apigatewayv2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
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

/// Every request attempt sent (let through by the limiter), by operation name (retries count
/// again).
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

    fn record(&self, operation: &str) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation.to_string()).or_default() += 1;
        }
    }
}

/// The operation name (`CreateApi`) of a request, for the limiter in [`LimitedHttpClient`].
#[derive(Clone, Debug)]
struct OperationName(String);

/// Names the operation of every attempt's request (a retried request is rebuilt without it).
#[derive(Debug)]
struct NameOperations;

impl Intercept for NameOperations {
    fn name(&self) -> &'static str {
        "tollbridge-operation-name"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            context.request_mut().add_extension(OperationName(metadata.name().to_string()));
        }
        Ok(())
    }
}

/// An HTTP client whose every request first waits for the limiter (under the operation its
/// [`OperationName`] says; unnamed requests are not limited), is counted, then must be
/// answered, body included, within the attempt timeout.
#[derive(Clone)]
struct LimitedHttpClient {
    inner: SharedHttpClient,
    limiter: Arc<CallLimiter>,
    calls: CallCounter,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for LimitedHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedHttpClient").field("attempt_timeout", &self.attempt_timeout).finish()
    }
}

impl HttpClient for LimitedHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(LimitedConnector {
            inner: self.inner.http_connector(settings, components),
            client: self.clone(),
        })
    }
}

#[derive(Debug)]
struct LimitedConnector {
    inner: SharedHttpConnector,
    client: LimitedHttpClient,
}

impl HttpConnector for LimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let LimitedHttpClient { limiter, calls, attempt_timeout, .. } = self.client.clone();
        HttpConnectorFuture::new(async move {
            match request.extension::<OperationName>().cloned() {
                Some(OperationName(operation)) => {
                    limiter.acquire(&operation).await;
                    calls.record(&operation);
                }
                None => calls.record("unknown"),
            }
            let exchange = async {
                let mut response = inner.call(request).await?;
                let body = ByteStream::new(response.take_body())
                    .collect()
                    .await
                    .map_err(|e| ConnectorError::io(e.into()))?
                    .into_bytes();
                *response.body_mut() = SdkBody::from(body);
                Ok(response)
            };
            tokio::time::timeout(attempt_timeout, exchange).await.unwrap_or_else(|_| {
                Err(ConnectorError::timeout(format!("no whole answer within {attempt_timeout:?}").into()))
            })
        })
    }
}

/// The clients of one ProviderConfig.
pub struct Clients {
    pub v2: aws_sdk_apigatewayv2::Client,
    pub v1: aws_sdk_apigateway::Client,
    pub limiter: Arc<CallLimiter>,
    pub calls: CallCounter,
    pub region: String,
}

impl Clients {
    /// Builds the clients. Throttling and 5xx answers are retried by the SDK (standard mode,
    /// 5 attempts, backoff with jitter) as a backstop; each retry waits for the limiter too.
    /// The operation timeout bounds a call's whole time, limiter waits included.
    pub async fn new(settings: &AwsSettings, options: AwsOptions) -> Self {
        let https = options.http_client.clone().unwrap_or_else(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                .build_https()
        });
        let region = aws_config::Region::new(settings.region.clone());
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(90))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(https.clone())
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
        let limiter = Arc::new(CallLimiter::new(options.limits));
        // Only the API Gateway clients are limited; credentials (STS, IMDS) use `https` as is.
        let limited = LimitedHttpClient {
            inner: https,
            limiter: limiter.clone(),
            calls: calls.clone(),
            attempt_timeout: options.attempt_timeout,
        };
        let v2 = aws_sdk_apigatewayv2::config::Builder::from(&config)
            .http_client(limited.clone())
            .interceptor(NameOperations)
            .build();
        let v1 = aws_sdk_apigateway::config::Builder::from(&config)
            .http_client(limited)
            .interceptor(NameOperations)
            .build();
        Self {
            v2: aws_sdk_apigatewayv2::Client::from_conf(v2),
            v1: aws_sdk_apigateway::Client::from_conf(v1),
            limiter,
            calls,
            region: settings.region.clone(),
        }
    }
}
