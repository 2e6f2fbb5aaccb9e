//! A small typed client for the Azure Resource Manager endpoints of one API Management service
//! (api-version 2024-05-01): bearer tokens from a [`TokenSource`], paging through `nextLink`,
//! long-running operations polled through `Azure-AsyncOperation`/`Location` as `Retry-After`
//! says, `If-Match` on updates and deletes, and 429 and 5xx retried (after `Retry-After`, or
//! with jittered backoff).
//!
//! Links the service gives (`nextLink`, the operation monitors) are followed only when they
//! lead to the endpoint the client was configured with (scheme, host and port), and redirects
//! not at all: the bearer token is never sent anywhere else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
/// How long one long-running operation may take before this apply gives up on it (the next
/// one starts over from what is there).
const LRO_DEADLINE: Duration = Duration::from_secs(600);
/// The wait between polls when the service names none.
const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// The longest single wait a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Pages of one listing before giving up.
const MAX_PAGES: u32 = 1000;

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
pub struct IdentityToken {
    credential: Arc<dyn azure_core::credentials::TokenCredential>,
    /// The ProviderConfig's name for it (`WorkloadIdentity`, …), for the errors.
    name: &'static str,
}

#[async_trait]
impl TokenSource for IdentityToken {
    async fn token(&self) -> Result<String, ProviderError> {
        let token = self
            .credential
            .get_token(&["https://management.azure.com/.default"], None)
            .await
            .map_err(|e| token_error(self.name, &e))?;
        Ok(token.token.secret().to_string())
    }
}

/// Why no token came, said as what to fix: a token endpoint that could not be reached or
/// failed on its side is transient (the credential wraps that cause in an error of its own, so
/// the whole chain is read); Entra ID's common refusals are named by their `AADSTS` code; anything
/// else names what the credential needs.
fn token_error(credential: &str, error: &azure_core::Error) -> ProviderError {
    let text = error.to_string();
    let detail = first_line(&text, 300);
    let start = format!("cannot get an Azure token with the {credential} credential");
    if endpoint_failed(error) {
        return ProviderError::Transient(format!(
            "{start}: {detail} (the token endpoint could not be reached or failed; if it lasts, check the pod's \
             egress to login.microsoftonline.com or to the managed identity endpoint)"
        ));
    }
    if let Some(code) = aadsts_code(&text) {
        let fix = match code {
            "AADSTS70021" | "AADSTS700211" | "AADSTS700212" => Some(
                "no federated credential of the managed identity or app matches this pod: its issuer must be the \
                 cluster's OIDC issuer URL and its subject system:serviceaccount:<namespace>:<service account> of the operator",
            ),
            "AADSTS700016" | "AADSTS90002" => {
                Some("AZURE_CLIENT_ID or AZURE_TENANT_ID names an application or tenant that does not exist")
            }
            "AADSTS7000215" | "AADSTS7000222" => Some("the client secret is wrong or has expired"),
            "AADSTS700024" => Some("the service account token is outside its validity (the pod's clock, or a stale token file)"),
            _ => None,
        };
        return ProviderError::Unauthorized(match fix {
            Some(fix) => format!("{start}: {fix} ({detail})"),
            None => format!("{start}: {detail}"),
        });
    }
    ProviderError::Unauthorized(format!("{start}: {detail}; {}", needs(credential)))
}

/// Whether an error in `error`'s chain is a connection or I/O failure, or an answer of the
/// endpoint's own trouble (5xx, 429, 408).
fn endpoint_failed(error: &azure_core::Error) -> bool {
    use azure_core::error::ErrorKind;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(azure) = current.downcast_ref::<azure_core::Error>() {
            match azure.kind() {
                ErrorKind::Connection | ErrorKind::Io => return true,
                ErrorKind::HttpResponse { status, .. } => {
                    let code = u16::from(*status);
                    if code >= 500 || code == 429 || code == 408 {
                        return true;
                    }
                }
                _ => {}
            }
        }
        next = current.source();
    }
    false
}

/// The first `AADSTS<digits>` code in `text`.
fn aadsts_code(text: &str) -> Option<&str> {
    let start = text.find("AADSTS")?;
    let digits = text[start + 6..].bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| &text[start..start + 6 + digits])
}

/// `text`'s first line, cut at `max` characters.
fn first_line(text: &str, max: usize) -> &str {
    let line = text.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(max) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

/// The credential a ProviderConfig names (`WorkloadIdentity`, `ManagedIdentity`,
/// `ClientSecret` from `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`, `AzureCli`).
pub fn identity(credential: &str) -> Result<Arc<dyn TokenSource>, ProviderError> {
    use azure_identity::*;
    // The credentials build HTTP clients of their own.
    install_tls();
    // A credential that cannot even be made is missing its configuration: said as such, with
    // what it needs (retrying does not make it appear).
    let fail = |e: azure_core::Error| ProviderError::Invalid(format!("{}: {e}", needs(credential)));
    let name = match credential {
        "ManagedIdentity" => "ManagedIdentity",
        "AzureCli" => "AzureCli",
        "ClientSecret" => "ClientSecret",
        _ => "WorkloadIdentity",
    };
    let credential: Arc<dyn azure_core::credentials::TokenCredential> = match name {
        "ManagedIdentity" => ManagedIdentityCredential::new(None).map_err(fail)?,
        "AzureCli" => AzureCliCredential::new(None).map_err(fail)?,
        "ClientSecret" => {
            let var = |name: &str| {
                std::env::var(name).map_err(|_| {
                    ProviderError::Invalid(format!("{name} is not set: {}", needs("ClientSecret")))
                })
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
    Ok(Arc::new(IdentityToken { credential, name }))
}

/// What the credential a ProviderConfig names (`azure.credential`) needs, in a sentence or two.
fn needs(credential: &str) -> String {
    let what = match credential {
        "ManagedIdentity" => "the ManagedIdentity credential needs a managed identity assigned to the node or pod (IMDS, or IDENTITY_ENDPOINT in App Service and Arc)",
        "AzureCli" => "the AzureCli credential needs `az` installed and `az login` done for the user running tollbridge",
        "ClientSecret" => "the ClientSecret credential needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET in the environment",
        _ => "the WorkloadIdentity credential (the default) needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE, which AKS injects into pods of a workload-identity ServiceAccount: install the chart with azure.workloadIdentity.enabled=true and clientId set",
    };
    format!("{what}; or name another credential in the ProviderConfig (azure.credential: WorkloadIdentity, ManagedIdentity, ClientSecret or AzureCli)")
}

/// Makes ring the process's TLS provider (reqwest is built without one, so that the whole
/// binary has a single TLS stack); already installed is fine.
fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// 412: the entity is no longer the version the `If-Match` ETag named: another writer came
    /// between our observation and this write, which was not made.
    #[error("{0}")]
    Changed(String),
    #[error(transparent)]
    Failed(#[from] ProviderError),
}

impl From<WriteError> for ProviderError {
    fn from(e: WriteError) -> ProviderError {
        match e {
            WriteError::Changed(why) => ProviderError::Transient(why),
            WriteError::Failed(e) => e,
        }
    }
}

/// An entity as read: its ETag and its JSON (`properties` and the rest). Its `Debug` hides
/// subscription keys (a PUT's answer or `listSecrets` may carry them).
#[derive(Clone)]
pub struct Entity {
    pub etag: Option<String>,
    pub body: Value,
}

impl std::fmt::Debug for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entity")
            .field("etag", &self.etag)
            .field("body", &crate::desired::redacted(&self.body))
            .finish()
    }
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

/// Where a URL leads: scheme, host and port (the default port of the scheme when it names
/// none), as compared before a link is followed with the token.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn of(url: &reqwest::Url) -> Origin {
        Origin {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_known_default(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// The client of one API Management service.
pub struct ArmClient {
    http: reqwest::Client,
    /// `{endpoint}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{svc}`
    service: String,
    endpoint: String,
    /// The endpoint's origin: the only one links are followed to.
    origin: Origin,
    tokens: Arc<dyn TokenSource>,
    pub calls: CallCounter,
}

impl ArmClient {
    pub fn new(settings: &AzureSettings, tokens: Arc<dyn TokenSource>) -> Result<Self, ProviderError> {
        let endpoint = settings.endpoint.clone().unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let origin =
            reqwest::Url::parse(&endpoint).ok().filter(|u| u.has_host()).map(|u| Origin::of(&u)).ok_or_else(
                || ProviderError::Invalid(format!("ARM endpoint {endpoint} is not an absolute URL")),
            )?;
        let service = format!(
            "{endpoint}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/{}",
            settings.subscription_id, settings.resource_group, settings.service_name
        );
        install_tls();
        // No redirects: ARM answers its API calls itself, and a redirect could lead the token
        // elsewhere; a 3xx is an error like any other.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::Other(format!("HTTP client: {e}")))?;
        Ok(Self { http, service, endpoint, origin, tokens, calls: CallCounter::default() })
    }

    /// `GET` of an entity below the service (`apis/x`), `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Entity>, ProviderError> {
        match self.send(Method::GET, path, None, None).await {
            Ok(entity) => Ok(Some(entity)),
            Err(CallError::NotFound) => Ok(None),
            Err(e) => Err(e.into_error().into()),
        }
    }

    /// Every item of a collection, following `nextLink` on the endpoint only. A collection
    /// whose first page is 404 (its parent is gone) is empty; a 404 on a later page is an
    /// error (the listing is incomplete, and a plan must not be made from it).
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, ProviderError> {
        let mut items = Vec::new();
        let mut next: Option<String> = Some(self.url(path));
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(ProviderError::Other(format!("GET {path}: more than {MAX_PAGES} pages")));
            }
            let page = match self.send_url(Method::GET, &url, None, None).await {
                Ok(page) => page.body,
                Err(CallError::NotFound) if pages == 1 => return Ok(items),
                Err(CallError::NotFound) => {
                    return Err(ProviderError::Transient(format!(
                        "GET {path}: page {pages} of the listing is gone (404); the listing is incomplete"
                    )))
                }
                Err(e) => return Err(e.into_error().into()),
            };
            items.extend(page["value"].as_array().cloned().unwrap_or_default());
            if let Some(link) = page["nextLink"].as_str().filter(|l| !l.is_empty()) {
                let link =
                    self.follow(link).map_err(|origin| self.elsewhere("GET", path, "nextLink", &origin))?;
                next = Some(link);
            }
        }
        Ok(items)
    }

    /// Creates or replaces an entity; `if_match` (the ETag it was read with) makes a replace
    /// fail with [`WriteError::Changed`] when another writer changed it since.
    pub async fn put(&self, path: &str, body: &Value, if_match: Option<&str>) -> Result<Entity, WriteError> {
        // A `null` body sends none (links such as a product's API take no body).
        let body = (!body.is_null()).then_some(body);
        self.send(Method::PUT, path, body, if_match).await.map_err(CallError::into_error)
    }

    /// Deletes an entity, with `If-Match` when given (links such as a product's API take none);
    /// one already gone is fine.
    pub async fn delete(&self, path: &str, if_match: Option<&str>) -> Result<(), WriteError> {
        match self.send(Method::DELETE, path, None, if_match).await {
            Ok(_) | Err(CallError::NotFound) => Ok(()),
            Err(e) => Err(e.into_error()),
        }
    }

    /// A link the service gave, made absolute; `Err` with where it leads when that is not the
    /// configured endpoint.
    fn follow(&self, link: &str) -> Result<String, Origin> {
        // A path on the endpoint; `//host/…` names another host.
        let relative = link.starts_with('/') && !link.starts_with("//");
        let url = if relative { format!("{}{link}", self.endpoint) } else { link.to_string() };
        match reqwest::Url::parse(&url) {
            Ok(parsed) if Origin::of(&parsed) == self.origin => Ok(url),
            Ok(parsed) => Err(Origin::of(&parsed)),
            Err(_) => Err(Origin { scheme: String::new(), host: "(not a URL)".into(), port: None }),
        }
    }

    /// The refusal to follow a link to `origin`.
    fn elsewhere(&self, method: &str, path: &str, what: &str, origin: &Origin) -> ProviderError {
        ProviderError::Invalid(format!(
            "{method} {path}: the service's {what} leads to {origin}, not the configured ARM endpoint {}; \
             not followed (the bearer token goes to that endpoint only)",
            self.origin
        ))
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
            Reply::Accepted { poll, after } => {
                let path = url.strip_prefix(&self.service).unwrap_or(url).to_string();
                self.wait_for(&poll, after, &method, &path).await?;
                if method == Method::DELETE {
                    return Ok(Entity { etag: None, body: Value::Null });
                }
                match self.attempts(&Method::GET, url, None, None).await? {
                    Reply::Done(entity) => Ok(entity),
                    Reply::Accepted { .. } => {
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
            let retry_after = header("retry-after").and_then(|v| retry_after(&v, SystemTime::now()));
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
                (StatusCode::PRECONDITION_FAILED, _) => Err(CallError::Changed(format!(
                    "{}; changed since it was read, not written",
                    describe(status, method, path, &text)
                ))),
                (StatusCode::ACCEPTED, Some(poll)) => Ok(Reply::Accepted { poll, after: retry_after }),
                (s, _) if s.is_success() => Ok(Reply::Done(entity())),
                (s, _) => Err(CallError::Failed(classify(s, method, path, &text))),
            };
        }
    }

    /// Polls an operation monitor (`Azure-AsyncOperation`, else `Location`) until the operation
    /// succeeds, fails, or takes too long: first after the 202's `Retry-After`, then after each
    /// answer's. A monitor that is not on the endpoint is not polled.
    async fn wait_for(
        &self,
        poll: &str,
        first: Option<Duration>,
        method: &Method,
        path: &str,
    ) -> Result<(), CallError> {
        let url = self.follow(poll).map_err(|origin| {
            CallError::Failed(self.elsewhere(
                method.as_str(),
                path,
                "long-running operation monitor",
                &origin,
            ))
        })?;
        let deadline = Instant::now() + LRO_DEADLINE;
        let mut wait = first;
        for _ in 0..LRO_POLLS {
            let delay = wait.unwrap_or(DEFAULT_POLL);
            if Instant::now() + delay > deadline {
                break;
            }
            tokio::time::sleep(delay).await;
            let token = self.tokens.token().await.map_err(CallError::Failed)?;
            self.calls.count(&Method::GET, "operationStatus");
            let Ok(response) = self.http.get(&url).bearer_auth(token).send().await else {
                wait = None;
                continue;
            };
            wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, SystemTime::now()));
            let code = response.status();
            let text = response.text().await.unwrap_or_default();
            if code == StatusCode::TOO_MANY_REQUESTS || code.is_server_error() || code == StatusCode::ACCEPTED
            {
                continue;
            }
            if !code.is_success() {
                return Err(CallError::Failed(classify(code, method, path, &text)));
            }
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match body["status"].as_str() {
                Some("Succeeded") => return Ok(()),
                Some("Failed" | "Canceled") => {
                    let message = body["error"]["message"].as_str().unwrap_or("operation failed").to_string();
                    return Err(CallError::Failed(ProviderError::Invalid(format!(
                        "{method} {path}: {message}"
                    ))));
                }
                // The result monitor (`Location`) answers 200 with the entity, or 204, when done.
                None => return Ok(()),
                Some(_) => {}
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
    /// 202 Accepted: poll this URL, first after this long.
    Accepted {
        poll: String,
        after: Option<Duration>,
    },
}

enum CallError {
    NotFound,
    /// 412 Precondition Failed.
    Changed(String),
    Failed(ProviderError),
}

impl CallError {
    fn into_error(self) -> WriteError {
        match self {
            CallError::NotFound => WriteError::Failed(ProviderError::Invalid("not found".into())),
            CallError::Changed(why) => WriteError::Changed(why),
            CallError::Failed(e) => WriteError::Failed(e),
        }
    }
}

/// Exponential backoff with jitter, or the server's `Retry-After`.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after;
    }
    let base = Duration::from_millis(200 * 2u64.pow(attempt.min(6)));
    let jitter = rand::random::<u64>() % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
}

/// A `Retry-After` value as a wait from `now`: delay-seconds, or an HTTP-date (a date already
/// past is no wait); at most [`MAX_RETRY_AFTER`]. `None` when it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        http_date(value)?.duration_since(now).unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An HTTP-date in any of the three forms HTTP allows: IMF-fixdate (`Sun, 06 Nov 1994
/// 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6
/// 08:49:37 1994`).
fn http_date(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let words: Vec<&str> = value.split_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        [_, day, month, year, time, "GMT"] => (*day, *month, year.parse::<i64>().ok()?, *time),
        [_, date, time, "GMT"] => {
            let mut parts = date.split('-');
            let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?.parse::<i64>().ok()?);
            // Two-digit years: the nearest century that is not more than 50 years ahead.
            let year = if year < 100 {
                if year < 70 {
                    2000 + year
                } else {
                    1900 + year
                }
            } else {
                year
            };
            (day, month, year, *time)
        }
        [_, month, day, time, year] => (*day, *month, year.parse::<i64>().ok()?, *time),
        _ => return None,
    };
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// An ARM error answer in one line, with the service's code and message.
fn describe(status: StatusCode, method: &Method, path: &str, body: &str) -> String {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = parsed["error"]["code"].as_str().unwrap_or("");
    let message = parsed["error"]["message"].as_str().unwrap_or(body);
    format!("{method} {path}: {status} {code}: {message}")
}

/// An ARM error as a [`ProviderError`], with the service's code and message.
fn classify(status: StatusCode, method: &Method, path: &str, body: &str) -> ProviderError {
    let text = describe(status, method, path, body);
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
    fn retry_after_takes_seconds_and_each_http_date_form() {
        // 1994-11-06T08:49:37Z
        let date = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = date - Duration::from_secs(7);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        for form in
            ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"]
        {
            assert_eq!(retry_after(form, now), Some(Duration::from_secs(7)), "{form}");
        }
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_835_481_599))
        );
        // Past dates are no wait; long waits are cut; nonsense is no answer.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("86400", now), Some(MAX_RETRY_AFTER));
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT"]
        {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn links_are_followed_on_the_configured_endpoint_only() {
        let settings = AzureSettings {
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            service_name: "svc".into(),
            endpoint: Some("https://management.azure.com/".into()),
            ..AzureSettings::default()
        };
        let client = ArmClient::new(&settings, Arc::new(StaticToken("t".into()))).unwrap();
        for same in [
            "https://management.azure.com/subscriptions/s/x?api-version=1",
            "https://MANAGEMENT.azure.com:443/x",
            "/subscriptions/s/x",
        ] {
            assert!(client.follow(same).is_ok(), "{same}");
        }
        for other in [
            "http://management.azure.com/x",
            "https://management.azure.com:8443/x",
            "https://management.azure.com.evil.example/x",
            "https://evil.example/x",
            "//evil.example/x",
            "not a url",
        ] {
            assert!(client.follow(other).is_err(), "{other}");
        }
    }

    #[test]
    fn a_refused_token_says_what_to_fix() {
        use azure_core::error::ErrorKind;
        // As azure_identity reports every failure: a Credential error around the cause.
        let wrapped = |credential: &str, cause: azure_core::Error| {
            let message = format!("{credential}Credential authentication failed. {cause}");
            azure_core::Error::with_error(ErrorKind::Credential, cause, message)
        };
        let entra = |text: &str| azure_core::Error::with_message(ErrorKind::Credential, text.to_owned());
        let refused = |text: &str| token_error("WorkloadIdentity", &wrapped("WorkloadIdentity", entra(text)));
        // As Entra ID answers a workload identity whose federated credential does not match.
        let text = "WorkloadIdentityCredential authentication failed. AADSTS70021: No matching federated \
                    identity record found for presented assertion. Assertion Issuer: 'https://oidc.example'.\n\
                    Trace ID: 1\nCorrelation ID: 2";
        match refused(text) {
            ProviderError::Unauthorized(message) => {
                assert!(message.starts_with("cannot get an Azure token with the WorkloadIdentity credential: no federated credential"), "{message}");
                assert!(message.contains("system:serviceaccount:"), "{message}");
                assert!(message.contains("AADSTS70021") && !message.contains("Trace ID"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let secret = token_error(
            "ClientSecret",
            &wrapped("ClientSecret", entra("AADSTS7000215: Invalid client secret provided.")),
        );
        assert!(secret.to_string().contains("the client secret is wrong or has expired"), "{secret}");
        // Unknown codes are passed on, one line, bounded.
        let other = refused(&format!("AADSTS50000: {}", "x".repeat(1000)));
        assert!(matches!(other, ProviderError::Unauthorized(ref m) if m.len() < 400), "{other:?}");
        // No answer at all is transient; any other failure names what the credential needs.
        let refused_connection = azure_core::Error::with_message(ErrorKind::Connection, "connection refused");
        let unreachable = token_error("ManagedIdentity", &wrapped("ManagedIdentity", refused_connection));
        assert!(
            matches!(unreachable, ProviderError::Transient(ref m) if m.contains("egress")),
            "{unreachable:?}"
        );
        let outage = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::ServiceUnavailable,
                error_code: Some("AADSTS90033".into()),
                raw_response: None,
            },
            "AADSTS90033: A transient error has occurred.",
        );
        let outage = token_error("WorkloadIdentity", &wrapped("WorkloadIdentity", outage));
        assert!(matches!(outage, ProviderError::Transient(_)), "Entra's own outage is transient: {outage:?}");
        let odd = token_error("AzureCli", &wrapped("AzureCli", entra("az: not found")));
        assert!(matches!(odd, ProviderError::Unauthorized(ref m) if m.contains("az login")), "{odd:?}");
        assert_eq!(aadsts_code("x AADSTS700016: y"), Some("AADSTS700016"));
        assert_eq!(aadsts_code("AADSTS: none"), None);
        assert_eq!(first_line("é".repeat(5).as_str(), 2), "éé");
    }

    #[test]
    fn a_credential_without_its_configuration_says_what_it_needs() {
        let workload = needs("WorkloadIdentity");
        for needle in
            ["AZURE_FEDERATED_TOKEN_FILE", "azure.workloadIdentity.enabled=true", "azure.credential"]
        {
            assert!(workload.contains(needle), "{needle}: {workload}");
        }
        assert!(needs("ClientSecret").contains("AZURE_CLIENT_SECRET"));
        assert!(needs("AzureCli").contains("az login"));
        // No test sets the federated token file: the default credential cannot be made here.
        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_none() {
            match identity("WorkloadIdentity") {
                Err(ProviderError::Invalid(message)) => {
                    assert!(message.starts_with(&workload), "{message}");
                    assert!(message.len() < 600, "{message}");
                }
                Err(other) => panic!("not a configuration error: {other}"),
                Ok(_) => panic!("made without its configuration"),
            }
        }
    }

    #[test]
    fn credentials_can_be_built_before_any_client() {
        // A credential builds its own HTTP client; this must not need a TLS provider installed
        // by someone else first (building it sends nothing).
        std::env::set_var("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000");
        std::env::set_var("AZURE_CLIENT_ID", "client");
        std::env::set_var("AZURE_CLIENT_SECRET", "secret");
        assert!(identity("ClientSecret").is_ok());
        assert!(matches!(identity("WorkloadIdentity"), Err(ProviderError::Invalid(_)) | Ok(_)));
    }
}
