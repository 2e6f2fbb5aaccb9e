//! A small typed client for the Azure Resource Manager endpoints of one API Management service
//! (api-version 2024-05-01): bearer tokens from a [`TokenSource`], paging through `nextLink`,
//! long-running operations polled through `Azure-AsyncOperation`/`Location`, `If-Match` on
//! updates and deletes, and 429 (`Retry-After`) and 5xx retried with jittered backoff.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tollbridge_provider::{AzureSettings, ProviderError};

/// The API version every request uses.
pub const API_VERSION: &str = "2024-05-01";
/// The public Azure Resource Manager endpoint.
const DEFAULT_ENDPOINT: &str = "https://management.azure.com";
/// Attempts per call (the first and the retries).
const ATTEMPTS: u32 = 5;
/// Polls of one long-running operation before giving up on this apply.
const LRO_POLLS: u32 = 120;

/// Where bearer tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self) -> Result<String, ProviderError>;
}

/// A fixed token (tests against a local fake).
pub struct StaticToken(pub String);

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, ProviderError> {
        Ok(self.0.clone())
    }
}

/// Tokens from an `azure_identity` credential, for the Resource Manager scope.
pub struct IdentityToken(pub Arc<dyn azure_core::credentials::TokenCredential>);

#[async_trait]
impl TokenSource for IdentityToken {
    async fn token(&self) -> Result<String, ProviderError> {
        let token = self
            .0
            .get_token(&["https://management.azure.com/.default"], None)
            .await
            .map_err(|e| ProviderError::Unauthorized(format!("cannot get an Azure token: {e}")))?;
        Ok(token.token.secret().to_string())
    }
}

/// The credential a ProviderConfig names (`WorkloadIdentity`, `ManagedIdentity`,
/// `ClientSecret` from `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`, `AzureCli`).
pub fn identity(credential: &str) -> Result<Arc<dyn TokenSource>, ProviderError> {
    use azure_identity::*;
    // The credentials build HTTP clients of their own.
    install_tls();
    let fail =
        |e: azure_core::Error| ProviderError::Unauthorized(format!("Azure credential {credential}: {e}"));
    let credential: Arc<dyn azure_core::credentials::TokenCredential> = match credential {
        "ManagedIdentity" => ManagedIdentityCredential::new(None).map_err(fail)?,
        "AzureCli" => AzureCliCredential::new(None).map_err(fail)?,
        "ClientSecret" => {
            let var = |name: &str| {
                std::env::var(name)
                    .map_err(|_| ProviderError::Unauthorized(format!("ClientSecret credential needs {name}")))
            };
            ClientSecretCredential::new(
                &var("AZURE_TENANT_ID")?,
                var("AZURE_CLIENT_ID")?,
                azure_core::credentials::Secret::new(var("AZURE_CLIENT_SECRET")?),
                None,
            )
            .map_err(fail)?
        }
        _ => WorkloadIdentityCredential::new(None).map_err(fail)?,
    };
    Ok(Arc::new(IdentityToken(credential)))
}

/// Makes ring the process's TLS provider (reqwest is built without one, so that the whole
/// binary has a single TLS stack); already installed is fine.
fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An entity as read: its ETag and its JSON (`properties` and the rest).
#[derive(Clone, Debug)]
pub struct Entity {
    pub etag: Option<String>,
    pub body: Value,
}

/// Calls by `METHOD kind` (the first path segment after the service), every attempt counted.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    fn count(&self, method: &Method, path: &str) {
        let kind =
            path.trim_start_matches('/').split('/').next().unwrap_or("").split('?').next().unwrap_or("");
        if let Ok(mut calls) = self.0.lock() {
            *calls.entry(format!("{method} {kind}")).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Calls that change something (PUT, PATCH, DELETE, and POST but `listSecrets`).
    pub fn writes(&self) -> u64 {
        self.snapshot().iter().filter(|(k, _)| !k.starts_with("GET ")).map(|(_, n)| n).sum()
    }
}

/// The client of one API Management service.
pub struct ArmClient {
    http: reqwest::Client,
    /// `{endpoint}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{svc}`
    service: String,
    endpoint: String,
    tokens: Arc<dyn TokenSource>,
    pub calls: CallCounter,
}

impl ArmClient {
    pub fn new(settings: &AzureSettings, tokens: Arc<dyn TokenSource>) -> Result<Self, ProviderError> {
        let endpoint = settings.endpoint.clone().unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let service = format!(
            "{endpoint}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/{}",
            settings.subscription_id, settings.resource_group, settings.service_name
        );
        install_tls();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::Other(format!("HTTP client: {e}")))?;
        Ok(Self { http, service, endpoint, tokens, calls: CallCounter::default() })
    }

    /// `GET` of an entity below the service (`apis/x`), `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Entity>, ProviderError> {
        match self.send(Method::GET, path, None, None).await {
            Ok(entity) => Ok(Some(entity)),
            Err(CallError::NotFound) => Ok(None),
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    /// Every item of a collection, following `nextLink`.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut next: Option<String> = Some(self.url(path));
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 1000 {
                return Err(ProviderError::Other(format!("{path}: more than 1000 pages")));
            }
            let page = match self.send_url(Method::GET, &url, None, None).await {
                Ok(page) => page.body,
                Err(CallError::NotFound) => return Ok(items),
                Err(CallError::Failed(e)) => return Err(e),
            };
            items.extend(page["value"].as_array().cloned().unwrap_or_default());
            next = page["nextLink"].as_str().filter(|l| !l.is_empty()).map(str::to_string);
        }
        Ok(items)
    }

    /// Creates or replaces an entity; `if_match` guards a replace against concurrent changes.
    pub async fn put(
        &self,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<Entity, ProviderError> {
        // A `null` body sends none (links such as a product's API take no body).
        let body = (!body.is_null()).then_some(body);
        self.send(Method::PUT, path, body, if_match).await.map_err(CallError::into_error)
    }

    /// Deletes an entity, with `If-Match: *` when `guarded` (links such as a product's API
    /// take none); one already gone is fine.
    pub async fn delete(&self, path: &str, guarded: bool) -> Result<(), ProviderError> {
        let if_match = guarded.then_some("*");
        match self.send(Method::DELETE, path, None, if_match).await {
            Ok(_) | Err(CallError::NotFound) => Ok(()),
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    fn url(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{}/{}{separator}api-version={API_VERSION}", self.service, path.trim_start_matches('/'))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Entity, CallError> {
        self.send_url(method, &self.url(path), body, if_match).await
    }

    /// One call with retries; a 202 is followed to the end of its long-running operation and
    /// the entity read back.
    async fn send_url(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Entity, CallError> {
        match self.attempts(&method, url, body, if_match).await? {
            Reply::Done(entity) => Ok(entity),
            Reply::Accepted(poll) => {
                let path = url.strip_prefix(&self.service).unwrap_or(url).to_string();
                self.wait_for(&poll, &method, &path).await?;
                if method == Method::DELETE {
                    return Ok(Entity { etag: None, body: Value::Null });
                }
                match self.attempts(&Method::GET, url, None, None).await? {
                    Reply::Done(entity) => Ok(entity),
                    Reply::Accepted(_) => {
                        Err(CallError::Failed(ProviderError::Transient(format!("{path}: still accepted"))))
                    }
                }
            }
        }
    }

    /// Sends one request until it gets an answer worth returning (429, 5xx and transport
    /// errors are retried with backoff, `ATTEMPTS` times at most).
    async fn attempts(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, CallError> {
        let path = url.strip_prefix(&self.service).unwrap_or(url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.calls.count(method, path);
            let token = self.tokens.token().await.map_err(CallError::Failed)?;
            let mut request = self.http.request(method.clone(), url).bearer_auth(token);
            if let Some(etag) = if_match {
                request = request.header("If-Match", etag);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, path, "retrying");
                    tokio::time::sleep(backoff(attempt, None)).await;
                    continue;
                }
                Err(e) => {
                    return Err(CallError::Failed(ProviderError::Transient(format!("{method} {path}: {e}"))))
                }
            };
            let status = response.status();
            let header =
                |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let retry_after =
                header("retry-after").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_secs);
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) && attempt < ATTEMPTS {
                tracing::debug!(%status, attempt, path, "retrying");
                tokio::time::sleep(backoff(attempt, retry_after)).await;
                continue;
            }
            let etag = header("etag");
            let operation = header("azure-asyncoperation").or_else(|| header("location"));
            let text = response.text().await.unwrap_or_default();
            let entity =
                || Entity { etag: etag.clone(), body: serde_json::from_str(&text).unwrap_or(Value::Null) };
            return match (status, operation) {
                (StatusCode::NOT_FOUND, _) => Err(CallError::NotFound),
                (StatusCode::ACCEPTED, Some(poll)) => Ok(Reply::Accepted(poll)),
                (s, _) if s.is_success() => Ok(Reply::Done(entity())),
                (s, _) => Err(CallError::Failed(classify(s, method, path, &text))),
            };
        }
    }

    /// Polls an operation status URL until it succeeds (or fails, or takes too long).
    async fn wait_for(&self, poll: &str, method: &Method, path: &str) -> Result<(), CallError> {
        let url =
            if poll.starts_with("http") { poll.to_string() } else { format!("{}{poll}", self.endpoint) };
        for _ in 0..LRO_POLLS {
            let token = self.tokens.token().await.map_err(CallError::Failed)?;
            self.calls.count(&Method::GET, "operationStatus");
            let response = self.http.get(&url).bearer_auth(token).send().await;
            let Ok(response) = response else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let code = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match body["status"].as_str() {
                Some("Succeeded") => return Ok(()),
                Some("Failed" | "Canceled") => {
                    let message = body["error"]["message"].as_str().unwrap_or("operation failed").to_string();
                    return Err(CallError::Failed(ProviderError::Invalid(format!(
                        "{method} {path}: {message}"
                    ))));
                }
                _ if code == StatusCode::OK && body["status"].is_null() => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(after.unwrap_or(1) * 200)).await,
            }
        }
        Err(CallError::Failed(ProviderError::Transient(format!(
            "{method} {path}: long-running operation not finished"
        ))))
    }
}

/// What one request came back with.
enum Reply {
    Done(Entity),
    /// 202 Accepted: poll this URL.
    Accepted(String),
}

enum CallError {
    NotFound,
    Failed(ProviderError),
}

impl CallError {
    fn into_error(self) -> ProviderError {
        match self {
            CallError::NotFound => ProviderError::Invalid("not found".into()),
            CallError::Failed(e) => e,
        }
    }
}

/// Exponential backoff with jitter, or the server's `Retry-After`.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after.min(Duration::from_secs(30));
    }
    let base = Duration::from_millis(200 * 2u64.pow(attempt.min(6)));
    let jitter = rand::random::<u64>() % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
}

/// An ARM error as a [`ProviderError`], with the service's code and message.
fn classify(status: StatusCode, method: &Method, path: &str, body: &str) -> ProviderError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = parsed["error"]["code"].as_str().unwrap_or("");
    let message = parsed["error"]["message"].as_str().unwrap_or(body);
    let text = format!("{method} {path}: {status} {code}: {message}");
    match status.as_u16() {
        401 | 403 => ProviderError::Unauthorized(text),
        409 | 412 | 429 => ProviderError::Transient(text),
        500..=599 => ProviderError::Transient(text),
        _ => ProviderError::Invalid(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_can_be_built_before_any_client() {
        // A credential builds its own HTTP client; this must not need a TLS provider installed
        // by someone else first (building it sends nothing).
        std::env::set_var("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000");
        std::env::set_var("AZURE_CLIENT_ID", "client");
        std::env::set_var("AZURE_CLIENT_SECRET", "secret");
        assert!(identity("ClientSecret").is_ok());
        assert!(matches!(identity("WorkloadIdentity"), Err(ProviderError::Unauthorized(_)) | Ok(_)));
    }
}
