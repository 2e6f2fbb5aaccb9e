//! A stateful fake of the Azure Resource Manager endpoints of API Management that the
//! provider uses (api-version 2024-05-01), on 127.0.0.1, HTTP/1.1 (hyper).
//!
//! One [`FakeServer`] per test process, on a thread and runtime of its own (so that it outlives
//! each test's runtime), serves every test: each [`ApimFake`] is one API Management service in
//! an Azure subscription of its own (a fresh subscription id), with its own entities, fault
//! rules, long-running-operation setting and record of requests. Tests therefore run in
//! parallel without sharing state, and requests are told apart by their
//! `/subscriptions/{subscriptionId}` prefix.
//!
//! The server has two listeners:
//!
//! - the *front* ([`FakeServer::front_url`], what the provider is pointed at): records every
//!   request, and passes it to the validator (Prism, `scripts/prism`) when one is set, which
//!   checks it against Microsoft's description of the API and forwards it to the back, or
//!   refuses it (422 …) — the refusal is recorded with Prism's messages and passed on as it
//!   is. The status monitors of long-running operations (`…/locations/…/operationsStatuses/…`,
//!   `…/operationResults/…`) are not in the description: the front answers them itself.
//! - the *back* ([`FakeServer::back_url`], Prism's upstream): fault rules, then ARM's
//!   behaviour. A request sent to the back directly (not through the front) is recorded there,
//!   unvalidated.
//!
//! What the fake does, as ARM and API Management do (under
//! `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{svc}`):
//!
//! - `Authorization: Bearer <token>` required (401 `AuthenticationFailed` without,
//!   `InvalidAuthenticationToken` when [`ApimFake::require_token`] names another), then
//!   `api-version=2024-05-01` (400 `MissingApiVersionParameter` /
//!   `InvalidApiVersionParameter`); an unknown subscription, resource group or service → 404.
//! - Entities: `apis`, `apis/{a}/operations`, `apis/{a}/policies/policy`,
//!   `apis/{a}/operations/{o}/policies/policy`, `backends`, `products`, `products/{p}/apis`
//!   (links), `products/{p}/policies/policy`, `subscriptions` (+ `listSecrets`). Names are
//!   case-insensitive (`apis/Orders` is `apis/orders`), kept as first written. Bodies
//!   `{id, name, type, properties}`; every entity has an `ETag` (header) that changes on each
//!   write.
//! - GET gives the entity (a policy in `format=xml`, the default, or `rawxml`); HEAD answers
//!   200 with the ETag (204 for a product–API link) or 404, without a body; a product–API link
//!   has no GET (405, as in the description: list `products/{p}/apis`).
//! - PUT creates (201) or replaces (200) the properties (the service's defaults filled in, e.g.
//!   an API's `apiRevision`, `isCurrent`, `subscriptionRequired`,
//!   `subscriptionKeyParameterNames`; an operation's `templateParameters` and `responses`; a
//!   product's `state: notPublished` and `subscriptionRequired`; a subscription's `state:
//!   submitted`, `createdDate`, and its scope and owner as full resource ids). `If-Match` is
//!   optional on PUT (`*` always passes; a stale ETag → 412).
//! - PATCH (API, operation, backend, product, subscription) merges (JSON merge patch) into the
//!   properties; `If-Match` required. DELETE needs `If-Match` (`*` allowed; a product–API link
//!   takes none): 200 (204 for an API, as the description has it), or 204 when there was
//!   nothing; a stale ETag → 412 `PreconditionFailed`. Deleting an API deletes its operations,
//!   policies, product links and the subscriptions scoped to it; a product with subscriptions
//!   needs `deleteSubscriptions=true` (400 otherwise).
//! - The service's own checks, beyond the description: an API needs `displayName`, a `path` no
//!   other API has and an absolute `serviceUrl`; an operation needs `displayName`, `method`, a
//!   `urlTemplate` starting with `/` whose `{parameters}` are exactly those of
//!   `templateParameters`, and no other operation of the API with the same method and
//!   template; a backend needs an absolute `url`; a product can only require approval or limit
//!   subscriptions when it requires subscriptions; a subscription's `scope` must name `/apis`,
//!   an existing API or product; parents must exist (404). These are 400 `ValidationError`
//!   with `details` (the wording and codes are the fake's approximation of the service's).
//! - Policies are stored parsed and given back re-serialised (see [`super::policy_xml`]):
//!   `format` `xml` (default) or `rawxml` on PUT and on GET.
//! - Collections `{"value": [...], "count": N, "nextLink": "…"}`: pages of
//!   [`DEFAULT_PAGE_SIZE`] ([`ApimFake::set_page_size`]) or `$top`, `$skip`, and a simple
//!   `$filter` (`name`/`properties/x` with `eq`, `ne`, `startswith`, `endswith`, `contains`,
//!   joined by `and`). `nextLink` is absolute, on the URL the request came to (or where
//!   [`ApimFake::set_link_base`] says: a service sending clients to another host).
//! - Long-running operations ([`ApimFake::set_lro`]): a PUT (and optionally a DELETE) of an
//!   API answers 202 with `Azure-AsyncOperation` (and/or `Location`) naming a status monitor
//!   under `/subscriptions/{sub}/providers/Microsoft.ApiManagement/locations/westeurope/`;
//!   the API changes when the monitor has answered `InProgress` the set number of times and
//!   then `Succeeded` (or `Failed`: no change). A new write to the same API completes a pending
//!   operation first. `Retry-After` is sent with the 202 and while in progress, in seconds,
//!   or from the monitors as an HTTP-date ([`Lro::retry_after_date`]).
//!
//! - Reports by subscription (`reports/bySubscription`): the calls a test recorded with
//!   [`ApimFake::record_calls`], summed per subscription over the records whose hour falls in
//!   the `$filter`'s `timestamp ge datetime'…'` / `timestamp le datetime'…'` (both required,
//!   optionally `and subscriptionId eq '…'`), paged like a collection. Only subscriptions with
//!   calls in the range have a record, as in the service.
//!
//! Prism checks the fake's answers too: one that breaks the description becomes a 500
//! `VIOLATIONS`, recorded as a refusal (a bug of the fake, shown as such by
//! [`ApimFake::assert_no_refusals`]).
//!
//! Fault rules ([`Rule`], [`Fault`]) apply to requests that reach the back (so after
//! validation). The rules are those of `tollbridge_testkit::faults`, as the AWS fault proxy's;
//! the faults are ARM's: throttling (429 with `Retry-After: 1`), server errors, delays,
//! dropped connections, another writer's write just before a request
//! ([`Fault::ConcurrentWrite`]: the ETag the request carries is stale). Every request is
//! recorded ([`Seen`], with its arrival time).
//!
//! Not implemented (501 `NotImplemented` from the fake, so it shows): API import (`format` /
//! `value` in an API's properties), revisions (`;rev=`), policies by link, and the other
//! endpoints of the description.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tollbridge_testkit::faults::{self, is_write, Rules};

use super::policy_xml::{self, Format};

/// The api-version the fake serves (and requires).
pub const API_VERSION: &str = "2024-05-01";
/// Items per page of a collection when the request has no `$top`.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The region in the URLs of long-running operation monitors.
pub const LOCATION: &str = "westeurope";
/// How long the front waits for the validator's answer before answering 504 itself.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// The header with which the front tells the back which recorded request it forwards.
const SEEN_HEADER: &str = "x-tollbridge-fake-seen";
const ARM_PROVIDER: &str = "Microsoft.ApiManagement";

// ---------------------------------------------------------------------------------------
// Entities
// ---------------------------------------------------------------------------------------

/// The kinds of entity the fake keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `apis/{apiId}`
    Api,
    /// `apis/{apiId}/operations/{operationId}`
    Operation,
    /// `apis/{apiId}/policies/policy`
    ApiPolicy,
    /// `apis/{apiId}/operations/{operationId}/policies/policy`
    OperationPolicy,
    /// `backends/{backendId}`
    Backend,
    /// `products/{productId}`
    Product,
    /// `products/{productId}/apis/{apiId}` (the link of an API to a product)
    ProductApi,
    /// `products/{productId}/policies/policy`
    ProductPolicy,
    /// `subscriptions/{sid}`
    Subscription,
}

impl Kind {
    /// The ARM resource type, as in the bodies' `type`.
    pub fn arm_type(self) -> &'static str {
        match self {
            Kind::Api => "Microsoft.ApiManagement/service/apis",
            Kind::Operation => "Microsoft.ApiManagement/service/apis/operations",
            Kind::ApiPolicy => "Microsoft.ApiManagement/service/apis/policies",
            Kind::OperationPolicy => "Microsoft.ApiManagement/service/apis/operations/policies",
            Kind::Backend => "Microsoft.ApiManagement/service/backends",
            Kind::Product => "Microsoft.ApiManagement/service/products",
            Kind::ProductApi => "Microsoft.ApiManagement/service/products/apis",
            Kind::ProductPolicy => "Microsoft.ApiManagement/service/products/policies",
            Kind::Subscription => "Microsoft.ApiManagement/service/subscriptions",
        }
    }

    /// How the service names the kind in "… not found." messages.
    fn label(self) -> &'static str {
        match self {
            Kind::Api | Kind::ProductApi => "Api",
            Kind::Operation => "Operation",
            Kind::ApiPolicy | Kind::OperationPolicy | Kind::ProductPolicy => "Policy",
            Kind::Backend => "Backend",
            Kind::Product => "Product",
            Kind::Subscription => "Subscription",
        }
    }

    fn is_policy(self) -> bool {
        matches!(self, Kind::ApiPolicy | Kind::OperationPolicy | Kind::ProductPolicy)
    }
}

/// An entity as stored. Its `Debug` shows whether a subscription has keys, not the keys.
#[derive(Clone)]
pub struct Entity {
    pub kind: Kind,
    /// Path under the service, with the names as first written: `apis/Orders/operations/get`.
    pub path: String,
    /// The last segment of `path`.
    pub name: String,
    /// The current ETag, with its quotes (`"AAAAAAAAAB4="`), as in the `ETag` header.
    pub etag: String,
    /// The stored properties (for a policy: `{"format": "xml", "value": <as stored>}`; for a
    /// product–API link: `{}`). A subscription's keys are not among them (see
    /// [`ApimFake::secrets`]), as GET does not return them.
    pub properties: Value,
    policy: Option<policy_xml::Element>,
    secrets: Option<(String, String)>,
}

impl fmt::Debug for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entity")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("etag", &self.etag)
            .field("properties", &self.properties)
            .field("policy", &self.policy.is_some())
            .field("secrets", &self.secrets.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Entity {
    /// The stored policy document as `format` gives it back (policies only).
    pub fn policy(&self, format: Format) -> Option<String> {
        self.policy.as_ref().map(|p| policy_xml::serialize(p, format))
    }
}

/// A relative path split and classified: kind, canonical segments (collection names in the
/// service's casing, entity names as given) and the lower-case key.
#[derive(Clone, Debug)]
struct Target {
    kind: Kind,
    segs: Vec<String>,
    key: String,
}

impl Target {
    fn path(&self) -> String {
        self.segs.join("/")
    }

    fn name(&self) -> &str {
        self.segs.last().map(String::as_str).unwrap_or("")
    }

    /// The entities that must exist first (outermost first).
    fn parents(&self) -> Vec<Target> {
        let s = &self.segs;
        let t = |segs: &[String]| classify_segs(segs).expect("a parent path");
        match self.kind {
            Kind::Operation | Kind::ApiPolicy => vec![t(&s[..2])],
            Kind::OperationPolicy => vec![t(&s[..2]), t(&s[..4])],
            Kind::ProductApi => vec![t(&s[..2]), t(&s[2..4])],
            Kind::ProductPolicy => vec![t(&s[..2])],
            _ => Vec::new(),
        }
    }
}

fn canonical(seg: &str, canon: &str) -> bool {
    seg.eq_ignore_ascii_case(canon)
}

/// Classifies entity paths such as `apis/a/operations/o` (see [`Kind`]).
fn classify_segs(segs: &[String]) -> Option<Target> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (kind, canon): (Kind, Vec<String>) = match s.as_slice() {
        [c, a] if canonical(c, "apis") => (Kind::Api, vec!["apis".into(), a.to_string()]),
        [c, a, o, op] if canonical(c, "apis") && canonical(o, "operations") => {
            (Kind::Operation, vec!["apis".into(), a.to_string(), "operations".into(), op.to_string()])
        }
        [c, a, p, id] if canonical(c, "apis") && canonical(p, "policies") && canonical(id, "policy") => {
            (Kind::ApiPolicy, vec!["apis".into(), a.to_string(), "policies".into(), "policy".into()])
        }
        [c, a, o, op, p, id]
            if canonical(c, "apis")
                && canonical(o, "operations")
                && canonical(p, "policies")
                && canonical(id, "policy") =>
        {
            (
                Kind::OperationPolicy,
                vec![
                    "apis".into(),
                    a.to_string(),
                    "operations".into(),
                    op.to_string(),
                    "policies".into(),
                    "policy".into(),
                ],
            )
        }
        [c, b] if canonical(c, "backends") => (Kind::Backend, vec!["backends".into(), b.to_string()]),
        [c, p] if canonical(c, "products") => (Kind::Product, vec!["products".into(), p.to_string()]),
        [c, p, a, api] if canonical(c, "products") && canonical(a, "apis") => {
            (Kind::ProductApi, vec!["products".into(), p.to_string(), "apis".into(), api.to_string()])
        }
        [c, p, pol, id]
            if canonical(c, "products") && canonical(pol, "policies") && canonical(id, "policy") =>
        {
            (Kind::ProductPolicy, vec!["products".into(), p.to_string(), "policies".into(), "policy".into()])
        }
        [c, sid] if canonical(c, "subscriptions") => {
            (Kind::Subscription, vec!["subscriptions".into(), sid.to_string()])
        }
        _ => return None,
    };
    if canon.iter().any(|seg| seg.is_empty()) {
        return None;
    }
    let key = canon.join("/").to_lowercase();
    Some(Target { kind, segs: canon, key })
}

/// Classifies a relative path given by a test (`apis/orders`, `/apis/orders/`).
fn classify(path: &str) -> Option<Target> {
    let segs: Vec<String> = path.trim_matches('/').split('/').map(str::to_owned).collect();
    classify_segs(&segs)
}

// ---------------------------------------------------------------------------------------
// Faults and the record of requests
// ---------------------------------------------------------------------------------------

/// What the fake does to a request a [`Rule`] fires for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: 1` and `{"error": {"code": "TooManyRequests", …}}`, as ARM
    /// throttles. Not acted on.
    Throttle,
    /// 500 `InternalServerError`. Not acted on.
    InternalError,
    /// 503 `ServiceUnavailable` with `Retry-After: 1`. Not acted on.
    Unavailable,
    /// `status` with an ARM error body of this `code`. Not acted on.
    Error { status: u16, code: String },
    /// 307 Temporary Redirect to this URL. Not acted on.
    Redirect(String),
    /// Wait this long, then act and answer.
    Delay(Duration),
    /// Act at once, then hold the answer this long.
    DelayResponse(Duration),
    /// Close the connection without an answer. Not acted on.
    Drop,
    /// Act, then close the connection without an answer.
    DropResponse,
    /// Another writer rewrites the target entity (same properties, a new ETag) just before the
    /// request is acted on: a request carrying the ETag it read before gets 412, as the
    /// service answers a lost race.
    ConcurrentWrite,
}

/// A fault, when to inject it, and which requests it applies to (all by default). Rules are
/// tried in the order they were added; the first that fires decides, and the later ones do
/// not see (or count) that request. Paths (as sent, without the query) and queries
/// (percent-decoded) are compared case-insensitively, as ARM treats its paths: e.g.
/// `query_contains("$skip")` for the pages after the first.
pub type Rule = faults::Rule<Fault>;

/// Prism's refusal of a request (its answer, `application/problem+json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// The part after `#` of Prism's error type: `UNPROCESSABLE_ENTITY` (an invalid request),
    /// `NO_PATH_MATCHED_ERROR`, `NO_METHOD_MATCHED_ERROR`, `UNAUTHORIZED`, `VIOLATIONS` (an
    /// answer of the fake that breaks the description: a bug of the fake), …
    pub kind: String,
    pub title: String,
    pub detail: String,
    /// One line per violation: `location: message`.
    pub messages: Vec<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.status, self.kind, self.title)?;
        for m in &self.messages {
            write!(f, "\n      - {m}")?;
        }
        if self.messages.is_empty() && !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// One request as the fake received it, and what became of it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Unique in the process, increasing.
    pub id: u64,
    pub method: Method,
    /// The path as sent (percent-encoded), without the query.
    pub path: String,
    pub query: Option<String>,
    /// The request headers (names in lower case), hop-by-hop headers aside.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The status the client was sent; `None` while in progress, or when the connection was
    /// dropped.
    pub status: Option<StatusCode>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// Prism's refusal, if it refused the request (then it did not reach the fake).
    pub refusal: Option<Refusal>,
    /// Whether it went through the validator.
    pub validated: bool,
    /// Whether the fake's ARM logic handled it (and may have changed its state).
    pub reached_fake: bool,
    /// When it arrived.
    pub at: Instant,
}

impl Seen {
    /// POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        is_write(&self.method)
    }

    /// Whether a fault was injected into this request.
    pub fn injected(&self) -> bool {
        self.fault.is_some()
    }

    /// A request header (first value), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter (percent-decoded), e.g. `api-version`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_query(self.query.as_deref()).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The path under the service (`apis/orders`), or the whole path for other requests.
    pub fn rel_path(&self) -> String {
        let decoded = percent_decode(&self.path);
        let lower = decoded.to_lowercase();
        match lower.find("/service/") {
            Some(p) => {
                let rest = &decoded[p + "/service/".len()..];
                rest.split_once('/').map(|(_, r)| r.to_owned()).unwrap_or_default()
            }
            None => decoded,
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} {}", self.id, self.method, self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        match self.status {
            Some(s) => write!(f, " -> {}", s.as_u16())?,
            None => write!(f, " -> (no answer)")?,
        }
        if let Some(fault) = &self.fault {
            write!(f, " [injected {fault:?}]")?;
        }
        if let Some(r) = &self.refusal {
            write!(f, " [refused by Prism: {r}]")?;
        }
        if !self.validated {
            write!(f, " [not validated]")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Long-running operations
// ---------------------------------------------------------------------------------------

/// How writes of APIs run as long-running operations (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lro {
    /// How many times the monitor answers `InProgress` before `Succeeded`/`Failed`.
    pub polls: usize,
    /// Send `Azure-AsyncOperation` (the status monitor).
    pub async_operation: bool,
    /// Send `Location` (the result monitor: 202 while in progress, then the API with 200, or
    /// 204 after a delete).
    pub location: bool,
    /// DELETEs of APIs are long-running too (202), not only PUTs.
    pub deletes: bool,
    /// The `Retry-After` seconds sent with 202 and `InProgress`.
    pub retry_after: u64,
    /// The monitors send `Retry-After` as an HTTP-date (now + `retry_after` seconds, in whole
    /// seconds as the format has them) instead of a number of seconds. The 202 of the write
    /// keeps the number: it is validated, and the description Prism checks against
    /// (`scripts/prism spec`) types that header as an integer.
    pub retry_after_date: bool,
    /// End in `Failed` with this error code and message (the API is not changed).
    pub fail: Option<(String, String)>,
}

impl Lro {
    /// PUTs of APIs answer 202 with `Azure-AsyncOperation`; `polls` `InProgress` answers, then
    /// `Succeeded`.
    pub fn new(polls: usize) -> Lro {
        Lro {
            polls,
            async_operation: true,
            location: false,
            deletes: false,
            retry_after: 0,
            retry_after_date: false,
            fail: None,
        }
    }

    /// Also a `Location` header.
    pub fn with_location(mut self) -> Lro {
        self.location = true;
        self
    }

    /// Only a `Location` header, no `Azure-AsyncOperation`.
    pub fn location_only(mut self) -> Lro {
        self.location = true;
        self.async_operation = false;
        self
    }

    /// DELETEs of APIs too.
    pub fn on_deletes(mut self) -> Lro {
        self.deletes = true;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Lro {
        self.retry_after = seconds;
        self
    }

    /// The monitors' `Retry-After` as an HTTP-date, `seconds` from the answer (the 202's as
    /// `seconds`).
    pub fn retry_after_date(mut self, seconds: u64) -> Lro {
        self.retry_after = seconds;
        self.retry_after_date = true;
        self
    }

    /// The `Retry-After` header's value for a monitor's answer given now.
    fn retry_after_value(&self) -> String {
        if self.retry_after_date {
            http_date(SystemTime::now() + Duration::from_secs(self.retry_after))
        } else {
            self.retry_after.to_string()
        }
    }

    /// The operations end in `Failed` (nothing changes).
    pub fn failing(mut self, code: &str, message: &str) -> Lro {
        self.fail = Some((code.to_owned(), message.to_owned()));
        self
    }
}

#[derive(Clone, Debug)]
enum OpAction {
    Put { entity: Box<Entity> },
    Delete { target: Target },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed(String, String),
}

#[derive(Clone, Debug)]
struct PendingOp {
    action: OpAction,
    key: String,
    remaining: usize,
    outcome: Option<Outcome>,
    fail: Option<(String, String)>,
    /// The operation's setting, for its `Retry-After`.
    lro: Lro,
    start: String,
    end: Option<String>,
}

// ---------------------------------------------------------------------------------------
// ARM answers
// ---------------------------------------------------------------------------------------

/// An answer of the fake, before it becomes HTTP.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: Vec::new(),
            body: Some(body),
        }
    }

    fn empty(status: u16) -> Answer {
        Answer { status: StatusCode::from_u16(status).expect("status"), headers: Vec::new(), body: None }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

/// An ARM error: `{"error": {"code", "message", "details": [...]}}`.
#[derive(Debug)]
struct ArmError {
    status: u16,
    code: String,
    message: String,
    details: Vec<(String, String)>,
}

impl ArmError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> ArmError {
        ArmError { status, code: code.to_owned(), message: message.into(), details: Vec::new() }
    }

    /// 400 `ValidationError` as API Management words it, with one detail.
    fn validation(target: &str, message: impl Into<String>) -> ArmError {
        ArmError {
            status: 400,
            code: "ValidationError".to_owned(),
            message: "One or more fields contain incorrect values:".to_owned(),
            details: vec![(target.to_owned(), message.into())],
        }
    }

    fn not_found(kind: Kind) -> ArmError {
        ArmError::new(404, "ResourceNotFound", format!("{} not found.", kind.label()))
    }

    fn not_implemented(what: &str) -> ArmError {
        ArmError::new(501, "NotImplemented", format!("The tollbridge test fake does not implement {what}."))
    }

    fn precondition(etag: &str) -> ArmError {
        ArmError::new(
            412,
            "PreconditionFailed",
            format!("The resource was modified: the If-Match ETag {etag} is not the current one."),
        )
    }

    fn answer(&self) -> Answer {
        let mut error = json!({ "code": self.code, "message": self.message });
        if !self.details.is_empty() {
            error["details"] = Value::Array(
                self.details
                    .iter()
                    .map(|(target, message)| json!({ "code": self.code, "target": target, "message": message }))
                    .collect(),
            );
        }
        Answer::json(self.status, json!({ "error": error }))
    }
}

fn fault_answer(fault: &Fault) -> Option<Answer> {
    match fault {
        Fault::Throttle => Some(
            ArmError::new(429, "TooManyRequests", "Rate limit is exceeded. Try again in 1 seconds.")
                .answer()
                .header("retry-after", "1"),
        ),
        Fault::InternalError => Some(
            ArmError::new(
                500,
                "InternalServerError",
                "An internal error occurred (injected by the test fake).",
            )
            .answer(),
        ),
        Fault::Unavailable => Some(
            ArmError::new(
                503,
                "ServiceUnavailable",
                "The service is unavailable (injected by the test fake).",
            )
            .answer()
            .header("retry-after", "1"),
        ),
        Fault::Error { status, code } => {
            Some(ArmError::new(*status, code, "Injected by the test fake.").answer())
        }
        Fault::Redirect(url) => Some(
            ArmError::new(307, "TemporaryRedirect", "Moved (injected by the test fake).")
                .answer()
                .header("location", url.clone()),
        ),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// One fake service (tenant)
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct TenantState {
    entities: BTreeMap<String, Entity>,
    ops: HashMap<String, PendingOp>,
    lro: Option<Lro>,
    rules: Rules<Fault>,
    seen: Vec<Seen>,
    page_size: usize,
    token: Option<String>,
    /// Where links (`nextLink`, operation monitors) point instead of where the request came.
    link_base: Option<String>,
    /// Calls for the reports, as recorded by the tests.
    calls: Vec<Calls>,
}

/// Calls of one subscription in one hour (`YYYY-MM-DDTHH:00:00`, UTC), for the reports.
#[derive(Clone, Debug)]
struct Calls {
    subscription: String,
    hour: String,
    success: u64,
    blocked: u64,
    failed: u64,
}

impl TenantState {
    fn new() -> TenantState {
        TenantState {
            entities: BTreeMap::new(),
            ops: HashMap::new(),
            lro: None,
            rules: Rules::ignoring_case(),
            seen: Vec::new(),
            page_size: DEFAULT_PAGE_SIZE,
            token: None,
            link_base: None,
            calls: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Tenant {
    subscription: String,
    resource_group: String,
    service: String,
    state: Mutex<TenantState>,
}

impl Tenant {
    fn state(&self) -> MutexGuard<'_, TenantState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn service_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{ARM_PROVIDER}/service/{}",
            self.subscription, self.resource_group, self.service
        )
    }

    fn monitor_url(&self, base: &str, what: &str, id: &str) -> String {
        format!(
            "{base}/subscriptions/{}/providers/{ARM_PROVIDER}/locations/{LOCATION}/{what}/{id}?api-version={API_VERSION}",
            self.subscription
        )
    }
}

/// A parsed request for the ARM logic.
struct ArmRequest<'a> {
    method: &'a Method,
    /// Percent-decoded path segments.
    segs: Vec<String>,
    query: Vec<(String, String)>,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    /// `http://127.0.0.1:PORT` the request came to (for absolute links).
    base: &'a str,
    /// Path and query as sent, for `nextLink`.
    path: &'a str,
}

impl ArmRequest<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn if_match(&self) -> Option<String> {
        self.headers.get(header::IF_MATCH).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
    }

    fn json(&self) -> Result<Value, ArmError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ArmError::new(
                400,
                "InvalidRequestContent",
                "The request content was invalid: it is empty.",
            ));
        }
        serde_json::from_slice(self.body).map_err(|e| {
            ArmError::new(
                400,
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        })
    }

    /// The `properties` object of the JSON body.
    fn properties(&self) -> Result<Value, ArmError> {
        let body = self.json()?;
        match body.get("properties") {
            Some(p @ Value::Object(_)) => Ok(p.clone()),
            Some(_) => Err(ArmError::validation("properties", "'properties' must be an object")),
            None => Err(ArmError::validation("properties", "The request body has no 'properties'")),
        }
    }
}

/// The check of `If-Match` against an entity's ETag (`*` matches any).
fn etag_matches(if_match: &str, etag: &str) -> bool {
    let norm = |s: &str| s.trim().trim_start_matches("W/").trim_matches('"').to_owned();
    if_match.split(',').any(|m| m.trim() == "*" || norm(m) == norm(etag))
}

impl Tenant {
    /// The whole ARM behaviour for one request (auth, api-version, routing).
    fn handle(&self, req: &ArmRequest<'_>) -> Answer {
        if let Err(e) = self.check_auth(req.headers) {
            return e.answer().header("www-authenticate", "Bearer");
        }
        match req.query("api-version") {
            None => {
                return ArmError::new(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
                .answer()
            }
            Some(v) if v != API_VERSION => {
                return ArmError::new(
                    400,
                    "InvalidApiVersionParameter",
                    format!("The api-version '{v}' is invalid. The supported versions are '{API_VERSION}'."),
                )
                .answer()
            }
            Some(_) => {}
        }
        // /subscriptions/{sub}/...
        let segs = &req.segs;
        let rest = &segs[2..];
        let result = match rest {
            [p, ns, l, _loc, what, id]
                if canonical(p, "providers")
                    && canonical(ns, ARM_PROVIDER)
                    && canonical(l, "locations")
                    && (canonical(what, "operationsStatuses") || canonical(what, "operationResults")) =>
            {
                if *req.method != Method::GET {
                    Err(ArmError::new(
                        405,
                        "MethodNotAllowed",
                        "Only GET is allowed on an operation monitor.",
                    ))
                } else {
                    Ok(self.monitor(req, id, canonical(what, "operationResults")))
                }
            }
            [rg, rg_name, p, ns, s, svc, tail @ ..]
                if canonical(rg, "resourceGroups")
                    && canonical(p, "providers")
                    && canonical(ns, ARM_PROVIDER)
                    && canonical(s, "service") =>
            {
                if !rg_name.eq_ignore_ascii_case(&self.resource_group) {
                    Err(ArmError::new(
                        404,
                        "ResourceGroupNotFound",
                        format!("Resource group '{rg_name}' could not be found."),
                    ))
                } else if !svc.eq_ignore_ascii_case(&self.service) {
                    Err(ArmError::new(
                        404,
                        "ResourceNotFound",
                        format!(
                            "The Resource '{ARM_PROVIDER}/service/{svc}' under resource group '{rg_name}' was not found."
                        ),
                    ))
                } else {
                    self.service_request(req, tail)
                }
            }
            _ => Err(ArmError::new(404, "NotFound", "No such resource path in the test fake.")),
        };
        result.unwrap_or_else(|e| e.answer())
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), ArmError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ArmError::new(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            ));
        };
        let value = String::from_utf8_lossy(value.as_bytes());
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                token.trim().to_owned()
            }
            _ => {
                return Err(ArmError::new(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                ))
            }
        };
        if let Some(expected) = &self.state().token {
            if &token != expected {
                return Err(ArmError::new(401, "InvalidAuthenticationToken", "The access token is invalid."));
            }
        }
        Ok(())
    }

    fn service_request(&self, req: &ArmRequest<'_>, tail: &[String]) -> Result<Answer, ArmError> {
        if tail.iter().any(|s| s.contains(";rev=")) {
            return Err(ArmError::not_implemented("API revisions"));
        }
        let t: Vec<&str> = tail.iter().map(String::as_str).collect();
        // Collections.
        let collection: Option<(Kind, Option<Vec<String>>)> = match t.as_slice() {
            [c] if canonical(c, "apis") => Some((Kind::Api, None)),
            [c, a, o] if canonical(c, "apis") && canonical(o, "operations") => {
                Some((Kind::Operation, Some(vec!["apis".into(), a.to_string()])))
            }
            [c, a, p] if canonical(c, "apis") && canonical(p, "policies") => {
                Some((Kind::ApiPolicy, Some(vec!["apis".into(), a.to_string()])))
            }
            [c, a, o, op, p]
                if canonical(c, "apis") && canonical(o, "operations") && canonical(p, "policies") =>
            {
                Some((
                    Kind::OperationPolicy,
                    Some(vec!["apis".into(), a.to_string(), "operations".into(), op.to_string()]),
                ))
            }
            [c] if canonical(c, "backends") => Some((Kind::Backend, None)),
            [c] if canonical(c, "products") => Some((Kind::Product, None)),
            [c, p, a] if canonical(c, "products") && canonical(a, "apis") => {
                Some((Kind::ProductApi, Some(vec!["products".into(), p.to_string()])))
            }
            [c, p, pol] if canonical(c, "products") && canonical(pol, "policies") => {
                Some((Kind::ProductPolicy, Some(vec!["products".into(), p.to_string()])))
            }
            [c] if canonical(c, "subscriptions") => Some((Kind::Subscription, None)),
            [c, p, s] if canonical(c, "products") && canonical(s, "subscriptions") => {
                Some((Kind::Subscription, Some(vec!["products".into(), p.to_string()])))
            }
            [c, a, p] if canonical(c, "apis") && canonical(p, "products") => {
                Some((Kind::Product, Some(vec!["apis".into(), a.to_string()])))
            }
            _ => None,
        };
        if let Some((kind, parent)) = collection {
            if *req.method != Method::GET {
                return Err(ArmError::new(405, "MethodNotAllowed", "Only GET is allowed on a collection."));
            }
            return self.list(req, kind, parent);
        }
        if let [c, by] = t.as_slice() {
            if canonical(c, "reports") && canonical(by, "bySubscription") {
                if *req.method != Method::GET {
                    return Err(ArmError::new(405, "MethodNotAllowed", "Only GET is allowed on reports."));
                }
                return self.report_by_subscription(req);
            }
        }
        if let [c, _, l] = t.as_slice() {
            if canonical(c, "subscriptions") && canonical(l, "listSecrets") {
                if *req.method != Method::POST {
                    return Err(ArmError::new(
                        405,
                        "MethodNotAllowed",
                        "Only POST is allowed on listSecrets.",
                    ));
                }
                let target = classify_segs(&tail[..2]).expect("a subscription path");
                let state = self.state();
                let e =
                    state.entities.get(&target.key).ok_or_else(|| ArmError::not_found(Kind::Subscription))?;
                let (primary, secondary) = e.secrets.clone().unwrap_or_default();
                return Ok(Answer::json(200, json!({ "primaryKey": primary, "secondaryKey": secondary }))
                    .header("etag", e.etag.clone()));
            }
        }
        let Some(target) = classify_segs(tail) else {
            return Err(ArmError::not_implemented(&format!("{} {}", req.method, tail.join("/"))));
        };
        let m = req.method;
        if *m == Method::GET || *m == Method::HEAD {
            self.get(req, &target)
        } else if *m == Method::PUT {
            self.put(req, &target)
        } else if *m == Method::PATCH {
            self.patch(req, &target)
        } else if *m == Method::DELETE {
            self.delete(req, &target)
        } else {
            Err(ArmError::new(405, "MethodNotAllowed", format!("{m} is not allowed here.")))
        }
    }

    /// The JSON body of an entity as GET gives it.
    fn body(&self, state: &TenantState, e: &Entity, format: Format) -> Value {
        let id = format!("{}/{}", self.service_id(), e.path);
        let properties = match e.kind {
            Kind::ProductApi => {
                let api_key = e.path.split('/').skip(2).collect::<Vec<_>>().join("/").to_lowercase();
                state.entities.get(&api_key).map(|api| api.properties.clone()).unwrap_or_else(|| json!({}))
            }
            k if k.is_policy() => json!({
                "format": format.name(),
                "value": e.policy(format).unwrap_or_default(),
            }),
            _ => e.properties.clone(),
        };
        json!({ "id": id, "type": e.kind.arm_type(), "name": e.name, "properties": properties })
    }

    fn check_parents(state: &TenantState, target: &Target) -> Result<(), ArmError> {
        for parent in target.parents() {
            if !state.entities.contains_key(&parent.key) {
                return Err(ArmError::not_found(parent.kind));
            }
        }
        Ok(())
    }

    fn get(&self, req: &ArmRequest<'_>, target: &Target) -> Result<Answer, ArmError> {
        let state = self.state();
        let head = *req.method == Method::HEAD;
        if target.kind == Kind::ProductApi && !head {
            return Err(ArmError::new(
                405,
                "MethodNotAllowed",
                "GET is not allowed on a product's API link.",
            ));
        }
        let Some(e) = state.entities.get(&target.key) else {
            if head {
                return Ok(Answer::empty(404));
            }
            Self::check_parents(&state, target)?;
            return Err(ArmError::not_found(target.kind));
        };
        if head {
            let status = if target.kind == Kind::ProductApi { 204 } else { 200 };
            return Ok(Answer::empty(status).header("etag", e.etag.clone()));
        }
        let format = if target.kind.is_policy() { policy_format(req.query("format"))? } else { Format::Xml };
        Ok(Answer::json(200, self.body(&state, e, format)).header("etag", e.etag.clone()))
    }

    fn list(
        &self,
        req: &ArmRequest<'_>,
        kind: Kind,
        parent: Option<Vec<String>>,
    ) -> Result<Answer, ArmError> {
        let state = self.state();
        let filter = match req.query("$filter") {
            Some(f) if !f.trim().is_empty() => {
                Some(Filter::parse(f).map_err(|e| ArmError::validation("$filter", e))?)
            }
            _ => None,
        };
        let (top, skip) = paging(req)?;
        // The parent must exist; which entities belong to it.
        let members: Vec<&Entity> = match &parent {
            None => state.entities.values().filter(|e| e.kind == kind).collect(),
            Some(p) => {
                let parent = classify_segs(p).expect("a parent path");
                if !state.entities.contains_key(&parent.key) {
                    return Err(ArmError::not_found(parent.kind));
                }
                match (parent.kind, kind) {
                    (Kind::Product, Kind::Subscription) => {
                        let scope = format!("{}/{}", self.service_id(), parent.path()).to_lowercase();
                        state
                            .entities
                            .values()
                            .filter(|e| {
                                e.kind == Kind::Subscription
                                    && e.properties["scope"]
                                        .as_str()
                                        .is_some_and(|s| s.to_lowercase() == scope)
                            })
                            .collect()
                    }
                    (Kind::Api, Kind::Product) => {
                        let api = parent.segs[1].to_lowercase();
                        state
                            .entities
                            .values()
                            .filter(|e| e.kind == Kind::Product)
                            .filter(|p| {
                                state.entities.contains_key(&format!("{}/apis/{api}", p.path.to_lowercase()))
                            })
                            .collect()
                    }
                    _ => {
                        let prefix = format!("{}/", parent.key);
                        state
                            .entities
                            .values()
                            .filter(|e| e.kind == kind && e.path.to_lowercase().starts_with(&prefix))
                            .collect()
                    }
                }
            }
        };
        let mut items: Vec<Value> = members.iter().map(|e| self.body(&state, e, Format::Xml)).collect();
        if let Some(f) = &filter {
            items.retain(|item| f.matches(item));
        }
        items.sort_by_key(|item| item["name"].as_str().unwrap_or("").to_lowercase());
        Ok(page_of(req, items, top, skip, state.page_size))
    }

    /// `reports/bySubscription`: the recorded calls in the `$filter`'s range, one record per
    /// subscription, paged.
    fn report_by_subscription(&self, req: &ArmRequest<'_>) -> Result<Answer, ArmError> {
        let range = ReportFilter::parse(req.query("$filter").unwrap_or_default())
            .map_err(|e| ArmError::validation("$filter", e))?;
        let (top, skip) = paging(req)?;
        let state = self.state();
        let mut totals: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for calls in state.calls.iter().filter(|c| range.matches(c)) {
            let total = totals.entry(calls.subscription.to_lowercase()).or_default();
            total.0 += calls.success;
            total.1 += calls.blocked;
            total.2 += calls.failed;
        }
        let records: Vec<Value> = totals
            .iter()
            .map(|(sid, (success, blocked, failed))| {
                let entity = state.entities.get(&format!("subscriptions/{sid}"));
                let name = entity.and_then(|e| e.properties["displayName"].as_str()).unwrap_or(sid);
                json!({
                    "name": name,
                    "subscriptionId": format!("/subscriptions/{sid}"),
                    "callCountSuccess": success,
                    "callCountBlocked": blocked,
                    "callCountFailed": failed,
                    "callCountOther": 0,
                    "callCountTotal": success + blocked + failed,
                })
            })
            .collect();
        Ok(page_of(req, records, top, skip, state.page_size))
    }

    fn put(&self, req: &ArmRequest<'_>, target: &Target) -> Result<Answer, ArmError> {
        let mut state = self.state();
        Self::check_parents(&state, target)?;
        // A pending long-running write of this entity completes first.
        self.complete_pending(&mut state, &target.key);
        let existing = state.entities.get(&target.key).cloned();
        if let Some(m) = req.if_match() {
            if m != "*" {
                match &existing {
                    Some(e) if etag_matches(&m, &e.etag) => {}
                    _ => return Err(ArmError::precondition(&m)),
                }
            }
        }
        let entity = if target.kind == Kind::ProductApi {
            // No body: the link.
            new_entity(target, existing.as_ref(), json!({}), None, None)
        } else {
            let props = req.properties()?;
            self.prepare(&state, target, props, existing.as_ref())?
        };
        let created = existing.is_none();
        if target.kind == Kind::Api {
            if let Some(lro) = state.lro.clone() {
                let id = random_id();
                state.ops.insert(
                    id.clone(),
                    PendingOp {
                        action: OpAction::Put { entity: Box::new(entity) },
                        key: target.key.clone(),
                        remaining: lro.polls,
                        outcome: None,
                        fail: lro.fail.clone(),
                        lro: lro.clone(),
                        start: now_iso(),
                        end: None,
                    },
                );
                return Ok(self.accepted(&lro, req.base, &id));
            }
        }
        let stored = store(&mut state, entity);
        let status = if created { 201 } else { 200 };
        let etag = stored.etag.clone();
        let body = self.body(&state, &stored, Format::Xml);
        Ok(Answer::json(status, body).header("etag", etag))
    }

    /// 202 with the monitors' URLs.
    fn accepted(&self, lro: &Lro, base: &str, id: &str) -> Answer {
        let mut answer = Answer::empty(202).header("retry-after", lro.retry_after.to_string());
        if lro.async_operation {
            answer = answer.header("azure-asyncoperation", self.monitor_url(base, "operationsStatuses", id));
        }
        if lro.location {
            answer = answer.header("location", self.monitor_url(base, "operationResults", id));
        }
        answer
    }

    fn patch(&self, req: &ArmRequest<'_>, target: &Target) -> Result<Answer, ArmError> {
        if !matches!(
            target.kind,
            Kind::Api | Kind::Operation | Kind::Backend | Kind::Product | Kind::Subscription
        ) {
            return Err(ArmError::new(405, "MethodNotAllowed", "PATCH is not allowed here."));
        }
        let Some(m) = req.if_match() else {
            return Err(ArmError::validation("If-Match", "The If-Match header is required."));
        };
        let mut state = self.state();
        Self::check_parents(&state, target)?;
        let Some(existing) = state.entities.get(&target.key).cloned() else {
            return Err(ArmError::not_found(target.kind));
        };
        if !etag_matches(&m, &existing.etag) {
            return Err(ArmError::precondition(&m));
        }
        let patch = req.properties()?;
        let mut merged = existing.properties.clone();
        if let Some((primary, secondary)) = &existing.secrets {
            // Keys are set through properties too: the merge sees them.
            merged["primaryKey"] = Value::String(primary.clone());
            merged["secondaryKey"] = Value::String(secondary.clone());
        }
        merge_patch(&mut merged, &patch);
        let entity = self.prepare(&state, target, merged, Some(&existing))?;
        let stored = store(&mut state, entity);
        let etag = stored.etag.clone();
        let body = self.body(&state, &stored, Format::Xml);
        Ok(Answer::json(200, body).header("etag", etag))
    }

    fn delete(&self, req: &ArmRequest<'_>, target: &Target) -> Result<Answer, ArmError> {
        // A product–API link has no ETag and its DELETE no If-Match (as in the description).
        let m = match req.if_match() {
            Some(m) => m,
            None if target.kind == Kind::ProductApi => "*".to_owned(),
            None => return Err(ArmError::validation("If-Match", "The If-Match header is required.")),
        };
        let mut state = self.state();
        self.complete_pending(&mut state, &target.key);
        let Some(existing) = state.entities.get(&target.key).cloned() else {
            return Ok(Answer::empty(204));
        };
        if !etag_matches(&m, &existing.etag) {
            return Err(ArmError::precondition(&m));
        }
        if target.kind == Kind::Product && req.query("deleteSubscriptions") != Some("true") {
            let scope = format!("{}/{}", self.service_id(), existing.path).to_lowercase();
            let has = state.entities.values().any(|e| {
                e.kind == Kind::Subscription
                    && e.properties["scope"].as_str().is_some_and(|s| s.to_lowercase() == scope)
            });
            if has {
                return Err(ArmError::validation(
                    "deleteSubscriptions",
                    format!(
                        "Product '{}' has subscriptions: delete them first, or use deleteSubscriptions=true",
                        existing.name
                    ),
                ));
            }
        }
        if target.kind == Kind::Api {
            if let Some(lro) = state.lro.clone().filter(|l| l.deletes) {
                let id = random_id();
                state.ops.insert(
                    id.clone(),
                    PendingOp {
                        action: OpAction::Delete { target: target.clone() },
                        key: target.key.clone(),
                        remaining: lro.polls,
                        outcome: None,
                        fail: lro.fail.clone(),
                        lro: lro.clone(),
                        start: now_iso(),
                        end: None,
                    },
                );
                return Ok(self.accepted(&lro, req.base, &id));
            }
        }
        self.remove_cascade(&mut state, target);
        // The description lists 202 and 204 for an API's DELETE (200 and 204 for the others).
        Ok(Answer::empty(if target.kind == Kind::Api { 204 } else { 200 }))
    }

    /// Stores the entity a request path names again, unchanged but with a new ETag (another
    /// writer's write); nothing when there is none.
    fn rewrite(&self, path: &str) {
        let segs: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
        let Some(at) = segs.iter().position(|s| canonical(s, "service")) else { return };
        let Some(target) = segs.get(at + 2..).and_then(classify_segs) else { return };
        let mut state = self.state();
        if let Some(e) = state.entities.get(&target.key).cloned() {
            store(&mut state, e);
        }
    }

    /// Removes an entity and what belongs to it (see the module docs).
    fn remove_cascade(&self, state: &mut TenantState, target: &Target) {
        let prefix = format!("{}/", target.key);
        let service = self.service_id().to_lowercase();
        let mut doomed: Vec<String> =
            state.entities.keys().filter(|k| **k == target.key || k.starts_with(&prefix)).cloned().collect();
        match target.kind {
            Kind::Api => {
                let api = target.segs[1].to_lowercase();
                let scope = format!("{service}/apis/{api}");
                for (k, e) in &state.entities {
                    let link = e.kind == Kind::ProductApi && k.ends_with(&format!("/apis/{api}"));
                    let sub = e.kind == Kind::Subscription
                        && e.properties["scope"].as_str().is_some_and(|s| s.to_lowercase() == scope);
                    if link || sub {
                        doomed.push(k.clone());
                    }
                }
            }
            Kind::Product => {
                let scope = format!("{service}/{}", target.key);
                for (k, e) in &state.entities {
                    if e.kind == Kind::Subscription
                        && e.properties["scope"].as_str().is_some_and(|s| s.to_lowercase() == scope)
                    {
                        doomed.push(k.clone());
                    }
                }
            }
            _ => {}
        }
        for k in doomed {
            state.entities.remove(&k);
        }
    }

    /// Completes a pending long-running operation on `key`, if any (a later write supersedes
    /// it).
    fn complete_pending(&self, state: &mut TenantState, key: &str) {
        let ids: Vec<String> = state
            .ops
            .iter()
            .filter(|(_, op)| op.key == key && op.outcome.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.finish(state, &id);
        }
    }

    /// Ends an operation: applies it (Succeeded) or not (Failed).
    fn finish(&self, state: &mut TenantState, id: &str) {
        let Some(op) = state.ops.get(id).cloned() else { return };
        if op.outcome.is_some() {
            return;
        }
        let outcome = match &op.fail {
            Some((code, message)) => Outcome::Failed(code.clone(), message.clone()),
            None => {
                match &op.action {
                    OpAction::Put { entity } => {
                        store(state, (**entity).clone());
                    }
                    OpAction::Delete { target } => self.remove_cascade(state, target),
                }
                Outcome::Succeeded
            }
        };
        if let Some(op) = state.ops.get_mut(id) {
            op.outcome = Some(outcome);
            op.end = Some(now_iso());
        }
    }

    /// `GET …/operationsStatuses/{id}` (status) or `…/operationResults/{id}` (result).
    fn monitor(&self, req: &ArmRequest<'_>, id: &str, result: bool) -> Answer {
        let mut state = self.state();
        let Some(op) = state.ops.get(id).cloned() else {
            return ArmError::new(404, "NotFound", format!("Operation '{id}' not found.")).answer();
        };
        if op.outcome.is_none() {
            if op.remaining > 0 {
                state.ops.get_mut(id).expect("the op").remaining -= 1;
            } else {
                self.finish(&mut state, id);
            }
        }
        let op = state.ops.get(id).cloned().expect("the op");
        let status_id = format!(
            "/subscriptions/{}/providers/{ARM_PROVIDER}/locations/{LOCATION}/operationsStatuses/{id}",
            self.subscription
        );
        match (&op.outcome, result) {
            (None, false) => Answer::json(
                200,
                json!({ "id": status_id, "name": id, "status": "InProgress", "startTime": op.start }),
            )
            .header("retry-after", op.lro.retry_after_value()),
            (None, true) => Answer::empty(202)
                .header("location", self.monitor_url(req.base, "operationResults", id))
                .header("retry-after", op.lro.retry_after_value()),
            (Some(Outcome::Succeeded), false) => Answer::json(
                200,
                json!({ "id": status_id, "name": id, "status": "Succeeded", "startTime": op.start,
                        "endTime": op.end }),
            ),
            (Some(Outcome::Failed(code, message)), false) => Answer::json(
                200,
                json!({ "id": status_id, "name": id, "status": "Failed", "startTime": op.start,
                        "endTime": op.end, "error": { "code": code, "message": message } }),
            ),
            (Some(Outcome::Failed(code, message)), true) => {
                ArmError::new(400, code, message.clone()).answer()
            }
            (Some(Outcome::Succeeded), true) => match &op.action {
                OpAction::Delete { .. } => Answer::empty(204),
                OpAction::Put { .. } => match state.entities.get(&op.key) {
                    Some(e) => {
                        Answer::json(200, self.body(&state, e, Format::Xml)).header("etag", e.etag.clone())
                    }
                    None => ArmError::not_found(Kind::Api).answer(),
                },
            },
        }
    }

    /// Checks a write and makes the entity to store: the service's validation and defaults.
    fn prepare(
        &self,
        state: &TenantState,
        target: &Target,
        mut props: Value,
        existing: Option<&Entity>,
    ) -> Result<Entity, ArmError> {
        let obj = props.as_object_mut().expect("properties is an object");
        let str_prop = |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut policy = None;
        let mut secrets = None;
        match target.kind {
            Kind::Api => {
                if obj.contains_key("format") || obj.contains_key("value") {
                    return Err(ArmError::not_implemented("importing an API definition (format/value)"));
                }
                if let Some(t) = obj.remove("apiType") {
                    obj.insert("type".into(), t);
                }
                for write_only in ["wsdlSelector", "translateRequiredQueryParameters"] {
                    obj.remove(write_only);
                }
                let display = str_prop(obj, "displayName").unwrap_or_default();
                if display.trim().is_empty() {
                    return Err(ArmError::validation("displayName", "'displayName' is required"));
                }
                let Some(path) = str_prop(obj, "path") else {
                    return Err(ArmError::validation("path", "'path' is required"));
                };
                let norm = |p: &str| p.trim_matches('/').to_lowercase();
                if let Some(other) = state.entities.values().find(|e| {
                    e.kind == Kind::Api
                        && e.path.to_lowercase() != target.key
                        && e.properties["path"].as_str().is_some_and(|p| norm(p) == norm(&path))
                }) {
                    return Err(ArmError::validation(
                        "path",
                        format!(
                            "Cannot create API '{}' with the same Path '{path}' as API '{}' unless it's a part of the same version set",
                            target.name(),
                            other.name
                        ),
                    ));
                }
                if let Some(url) = str_prop(obj, "serviceUrl").filter(|u| !u.is_empty()) {
                    let absolute =
                        ["http://", "https://", "ws://", "wss://"].iter().any(|s| url.starts_with(s));
                    if !absolute {
                        return Err(ArmError::validation(
                            "serviceUrl",
                            format!("'{url}' is not a valid absolute URL"),
                        ));
                    }
                }
                let keep = |k: &str, default: Value| {
                    existing.and_then(|e| e.properties.get(k).cloned()).unwrap_or(default)
                };
                let revision = keep("apiRevision", json!("1"));
                let current = keep("isCurrent", json!(true));
                obj.entry("apiRevision").or_insert(revision);
                obj.entry("isCurrent").or_insert(current);
                obj.entry("subscriptionRequired").or_insert(json!(true));
                obj.entry("subscriptionKeyParameterNames")
                    .or_insert(json!({ "header": "Ocp-Apim-Subscription-Key", "query": "subscription-key" }));
            }
            Kind::Operation => {
                for k in ["displayName", "method", "urlTemplate"] {
                    if str_prop(obj, k).is_none_or(|v| v.trim().is_empty()) {
                        return Err(ArmError::validation(k, format!("'{k}' is required")));
                    }
                }
                let template = str_prop(obj, "urlTemplate").unwrap_or_default();
                let method = str_prop(obj, "method").unwrap_or_default();
                if !template.starts_with('/') {
                    return Err(ArmError::validation(
                        "urlTemplate",
                        format!("UrlTemplate '{template}' must start with '/'"),
                    ));
                }
                let in_template: Vec<String> = template_parameters(&template);
                let defined: Vec<String> = obj
                    .get("templateParameters")
                    .and_then(Value::as_array)
                    .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).map(str::to_lowercase).collect())
                    .unwrap_or_default();
                let mut a = in_template.clone();
                let mut b = defined.clone();
                a.sort();
                b.sort();
                if a != b {
                    return Err(ArmError::validation(
                        "templateParameters",
                        format!(
                            "All template parameters used in the UriTemplate must be defined in the Operation, and vice-versa. (template: {in_template:?}, defined: {defined:?})"
                        ),
                    ));
                }
                let api_prefix = format!("{}/", target.segs[..2].join("/").to_lowercase());
                if let Some(other) = state.entities.values().find(|e| {
                    e.kind == Kind::Operation
                        && e.path.to_lowercase().starts_with(&api_prefix)
                        && e.path.to_lowercase() != target.key
                        && e.properties["method"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(&method))
                        && e.properties["urlTemplate"]
                            .as_str()
                            .is_some_and(|u| u.eq_ignore_ascii_case(&template))
                }) {
                    return Err(ArmError::validation(
                        "urlTemplate",
                        format!(
                            "Operation with the same method '{method}' and URL template '{template}' already exists: '{}'",
                            other.name
                        ),
                    ));
                }
                obj.entry("templateParameters").or_insert(json!([]));
                obj.entry("responses").or_insert(json!([]));
            }
            Kind::Backend => {
                let url = str_prop(obj, "url").unwrap_or_default();
                if url.is_empty() {
                    return Err(ArmError::validation("url", "'url' is required"));
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                    return Err(ArmError::validation(
                        "url",
                        format!("Backend url '{url}' is not an absolute URL"),
                    ));
                }
                if str_prop(obj, "protocol").is_none() {
                    return Err(ArmError::validation("protocol", "'protocol' is required"));
                }
            }
            Kind::Product => {
                if str_prop(obj, "displayName").is_none_or(|v| v.trim().is_empty()) {
                    return Err(ArmError::validation("displayName", "'displayName' is required"));
                }
                let required = obj.get("subscriptionRequired").and_then(Value::as_bool).unwrap_or(true);
                obj.insert("subscriptionRequired".into(), json!(required));
                obj.entry("state").or_insert(json!("notPublished"));
                if required {
                    obj.entry("approvalRequired").or_insert(json!(false));
                } else {
                    if obj.get("approvalRequired").and_then(Value::as_bool) == Some(true) {
                        return Err(ArmError::validation(
                            "approvalRequired",
                            "ApprovalRequired can be set only when SubscriptionRequired is true",
                        ));
                    }
                    if obj.get("subscriptionsLimit").is_some_and(|v| !v.is_null()) {
                        return Err(ArmError::validation(
                            "subscriptionsLimit",
                            "SubscriptionsLimit can be set only when SubscriptionRequired is true",
                        ));
                    }
                }
            }
            Kind::Subscription => {
                let Some(scope) = str_prop(obj, "scope") else {
                    return Err(ArmError::validation("scope", "'scope' is required"));
                };
                if str_prop(obj, "displayName").is_none_or(|v| v.trim().is_empty()) {
                    return Err(ArmError::validation("displayName", "'displayName' is required"));
                }
                let scope = self.resolve_scope(state, &scope)?;
                obj.insert("scope".into(), Value::String(scope));
                if let Some(owner) = str_prop(obj, "ownerId") {
                    if owner.starts_with("/users/") {
                        obj.insert("ownerId".into(), Value::String(format!("{}{owner}", self.service_id())));
                    }
                }
                let old = existing.and_then(|e| e.secrets.clone());
                let primary = obj
                    .remove("primaryKey")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .or_else(|| old.as_ref().map(|o| o.0.clone()))
                    .unwrap_or_else(|| random_hex(32));
                let secondary = obj
                    .remove("secondaryKey")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .or_else(|| old.as_ref().map(|o| o.1.clone()))
                    .unwrap_or_else(|| random_hex(32));
                secrets = Some((primary, secondary));
                let state_value = str_prop(obj, "state")
                    .or_else(|| existing.and_then(|e| e.properties["state"].as_str().map(str::to_owned)))
                    .unwrap_or_else(|| "submitted".to_owned());
                obj.insert("state".into(), Value::String(state_value.clone()));
                let created = existing
                    .and_then(|e| e.properties.get("createdDate").cloned())
                    .unwrap_or_else(|| Value::String(now_iso()));
                obj.insert("createdDate".into(), created);
                if state_value == "active" && !obj.contains_key("startDate") {
                    obj.insert("startDate".into(), Value::String(now_iso()));
                }
            }
            Kind::ApiPolicy | Kind::OperationPolicy | Kind::ProductPolicy => {
                let format = match str_prop(obj, "format").as_deref() {
                    None | Some("xml") => Format::Xml,
                    Some("rawxml") => Format::RawXml,
                    Some(f @ ("xml-link" | "rawxml-link")) => {
                        return Err(ArmError::not_implemented(&format!("policies given by link ({f})")))
                    }
                    Some(f) => return Err(ArmError::validation("format", format!("Unknown format '{f}'"))),
                };
                let value = str_prop(obj, "value").unwrap_or_default();
                if value.trim().is_empty() {
                    return Err(ArmError::validation("value", "'value' is required"));
                }
                let doc =
                    policy_xml::parse_policy(&value, format).map_err(|e| ArmError::validation("value", e))?;
                props = json!({ "format": "xml", "value": policy_xml::serialize(&doc, Format::Xml) });
                policy = Some(doc);
            }
            Kind::ProductApi => {}
        }
        Ok(new_entity(target, existing, props, policy, secrets))
    }

    /// A subscription's scope as the full resource id of what it names.
    fn resolve_scope(&self, state: &TenantState, scope: &str) -> Result<String, ArmError> {
        let service = self.service_id();
        let rel = if scope.to_lowercase().starts_with(&service.to_lowercase()) {
            &scope[service.len()..]
        } else if scope.starts_with("/subscriptions/") {
            return Err(ArmError::validation("scope", format!("Scope '{scope}' is not in this service")));
        } else {
            scope
        };
        let rel = rel.trim_end_matches('/');
        if rel.eq_ignore_ascii_case("/apis") {
            return Ok(format!("{service}/apis"));
        }
        match classify(rel) {
            Some(t) if matches!(t.kind, Kind::Api | Kind::Product) => match state.entities.get(&t.key) {
                Some(e) => Ok(format!("{service}/{}", e.path)),
                None => Err(ArmError::validation(
                    "scope",
                    format!("Scope '{scope}' names no existing {}", t.kind.label()),
                )),
            },
            _ => Err(ArmError::validation(
                "scope",
                format!("Scope '{scope}' is not '/apis', '/apis/{{apiId}}' or '/products/{{productId}}'"),
            )),
        }
    }
}

/// The `format` query of a policy GET.
fn policy_format(format: Option<&str>) -> Result<Format, ArmError> {
    match format {
        None | Some("xml") => Ok(Format::Xml),
        Some("rawxml") => Ok(Format::RawXml),
        Some(f) => Err(ArmError::validation("format", format!("Unknown format '{f}'"))),
    }
}

/// `{name}` and `{*name}` in a URL template, lower-cased.
fn template_parameters(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        let name = rest[open + 1..open + close].trim_start_matches('*');
        let name = name.split(':').next().unwrap_or(name).trim().to_lowercase();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
        rest = &rest[open + close + 1..];
    }
    out
}

/// An entity with the path casing of `existing` (if any) and a placeholder ETag (set by
/// [`store`]).
fn new_entity(
    target: &Target,
    existing: Option<&Entity>,
    properties: Value,
    policy: Option<policy_xml::Element>,
    secrets: Option<(String, String)>,
) -> Entity {
    let (path, name) = match existing {
        Some(e) => (e.path.clone(), e.name.clone()),
        None => (target.path(), target.name().to_owned()),
    };
    Entity { kind: target.kind, path, name, etag: String::new(), properties, policy, secrets }
}

/// Stores an entity with a new ETag; returns it as stored.
fn store(state: &mut TenantState, mut entity: Entity) -> Entity {
    entity.etag = next_etag();
    state.entities.insert(entity.path.to_lowercase(), entity.clone());
    entity
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// $filter
// ---------------------------------------------------------------------------------------

/// The OData subset the fake understands: clauses joined by `and`; a clause is
/// `$top` (at least 1, if given) and `$skip` (0 if not given) of a listing.
fn paging(req: &ArmRequest<'_>) -> Result<(Option<usize>, usize), ArmError> {
    let top =
        match req.query("$top") {
            Some(v) => Some(v.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                ArmError::validation("$top", format!("'{v}' is not a valid value for $top"))
            })?),
            None => None,
        };
    let skip = match req.query("$skip") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ArmError::validation("$skip", format!("'{v}' is not a valid value for $skip")))?,
        None => 0,
    };
    Ok((top, skip))
}

/// The page of `items` that `$top` and `$skip` ask for (pages of `page_size` without `$top`),
/// with the link to the next page while there is one.
fn page_of(
    req: &ArmRequest<'_>,
    items: Vec<Value>,
    top: Option<usize>,
    skip: usize,
    page_size: usize,
) -> Answer {
    let count = items.len();
    let page = top.unwrap_or(page_size).max(1);
    let value: Vec<Value> = items.into_iter().skip(skip).take(page).collect();
    let mut body = json!({ "value": value, "count": count });
    if skip + page < count {
        body["nextLink"] = Value::String(next_link(req, top, skip + page));
    }
    Answer::json(200, body)
}

/// The same listing as `req`, from item `skip` on.
fn next_link(req: &ArmRequest<'_>, top: Option<usize>, skip: usize) -> String {
    let path = req.path.split('?').next().unwrap_or(req.path);
    let mut q = vec![("api-version".to_owned(), API_VERSION.to_owned())];
    if let Some(f) = req.query("$filter") {
        q.push(("$filter".to_owned(), f.to_owned()));
    }
    if let Some(t) = top {
        q.push(("$top".to_owned(), t.to_string()));
    }
    q.push(("$skip".to_owned(), skip.to_string()));
    let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
    format!("{}{path}?{}", req.base, query.join("&"))
}

/// The `$filter` of a report: `timestamp ge datetime'…' and timestamp le datetime'…'`, and
/// optionally `subscriptionId eq '…'` (the fields and operators the description lists for it).
#[derive(Debug, Default)]
struct ReportFilter {
    from: Option<String>,
    to: Option<String>,
    subscription: Option<String>,
}

impl ReportFilter {
    fn parse(s: &str) -> Result<ReportFilter, String> {
        let mut filter = ReportFilter::default();
        for part in split_and(s) {
            let words: Vec<&str> = part.split_whitespace().collect();
            let datetime = |w: &str| {
                w.strip_prefix("datetime'")
                    .and_then(|w| w.strip_suffix('\''))
                    .map(|w| w.trim_end_matches('Z').to_owned())
                    .filter(|w| w.len() == 19 && w.as_bytes()[10] == b'T')
                    .ok_or_else(|| format!("'{w}' is not a datetime'YYYY-MM-DDTHH:MM:SS' literal"))
            };
            match words.as_slice() {
                [f, op, w] if f.eq_ignore_ascii_case("timestamp") && op.eq_ignore_ascii_case("ge") => {
                    filter.from = Some(datetime(w)?)
                }
                [f, op, w] if f.eq_ignore_ascii_case("timestamp") && op.eq_ignore_ascii_case("le") => {
                    filter.to = Some(datetime(w)?)
                }
                [f, op, w] if f.eq_ignore_ascii_case("subscriptionId") && op.eq_ignore_ascii_case("eq") => {
                    let sid = w.trim_matches('\'');
                    filter.subscription = Some(sid.rsplit('/').next().unwrap_or(sid).to_lowercase())
                }
                _ => return Err(format!("Invalid $filter clause '{part}' for a report")),
            }
        }
        if filter.from.is_none() || filter.to.is_none() {
            return Err("a report needs 'timestamp ge' and 'timestamp le' in $filter".into());
        }
        Ok(filter)
    }

    fn matches(&self, calls: &Calls) -> bool {
        let after = self.from.as_ref().is_none_or(|from| calls.hour >= *from);
        let before = self.to.as_ref().is_none_or(|to| calls.hour <= *to);
        let subscription =
            self.subscription.as_ref().is_none_or(|sid| calls.subscription.eq_ignore_ascii_case(sid));
        after && before && subscription
    }
}

/// `FIELD eq|ne LITERAL` or `startswith|endswith|contains(FIELD, 'text')`; FIELD is `name`,
/// `properties/x` or `x` (a property); LITERAL a quoted string (`''` for a quote), `true`,
/// `false` or a number. Strings compare case-insensitively.
#[derive(Debug)]
struct Filter(Vec<Clause>);

#[derive(Debug)]
enum Clause {
    Compare { field: String, negate: bool, value: Value },
    Function { func: String, field: String, value: String },
}

impl Filter {
    fn parse(s: &str) -> Result<Filter, String> {
        let mut clauses = Vec::new();
        for part in split_and(s) {
            let part = part.trim();
            let lower = part.to_lowercase();
            if let Some(func) =
                ["startswith", "endswith", "contains"].iter().find(|f| lower.starts_with(&format!("{f}(")))
            {
                let inner = part[func.len() + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| format!("Invalid $filter clause '{part}'"))?;
                let (field, value) =
                    inner.split_once(',').ok_or_else(|| format!("Invalid $filter clause '{part}'"))?;
                let value = literal(value.trim())?;
                let Value::String(value) = value else {
                    return Err(format!("{func} needs a string in '{part}'"));
                };
                clauses.push(Clause::Function {
                    func: func.to_string(),
                    field: field.trim().to_owned(),
                    value,
                });
            } else {
                let words: Vec<&str> = part.splitn(3, ' ').collect();
                match words.as_slice() {
                    [field, op, value] if op.eq_ignore_ascii_case("eq") || op.eq_ignore_ascii_case("ne") => {
                        clauses.push(Clause::Compare {
                            field: field.to_string(),
                            negate: op.eq_ignore_ascii_case("ne"),
                            value: literal(value.trim())?,
                        })
                    }
                    _ => return Err(format!("Invalid $filter clause '{part}' (the test fake knows eq, ne, startswith, endswith, contains, and)")),
                }
            }
        }
        Ok(Filter(clauses))
    }

    fn matches(&self, item: &Value) -> bool {
        self.0.iter().all(|c| match c {
            Clause::Compare { field, negate, value } => {
                let v = field_value(item, field);
                let eq = match (&v, value) {
                    (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
                    (Some(a), b) => a == b,
                    (None, _) => false,
                };
                eq != *negate
            }
            Clause::Function { func, field, value } => {
                let Some(Value::String(v)) = field_value(item, field) else { return false };
                let (v, value) = (v.to_lowercase(), value.to_lowercase());
                match func.as_str() {
                    "startswith" => v.starts_with(&value),
                    "endswith" => v.ends_with(&value),
                    _ => v.contains(&value),
                }
            }
        })
    }
}

fn split_and(s: &str) -> Vec<String> {
    // ' and ' outside quotes.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && c == ' ' {
            let rest: String = chars[i..].iter().take(5).collect();
            if rest.eq_ignore_ascii_case(" and ") {
                parts.push(std::mem::take(&mut cur));
                i += 5;
                continue;
            }
        }
        cur.push(c);
        i += 1;
    }
    parts.push(cur);
    parts
}

fn literal(s: &str) -> Result<Value, String> {
    if let Some(inner) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(Value::String(inner.replace("''", "'")));
    }
    match s {
        "true" => Ok(json!(true)),
        "false" => Ok(json!(false)),
        "null" => Ok(Value::Null),
        _ => s.parse::<f64>().map(|n| json!(n)).map_err(|_| format!("Invalid literal '{s}' in $filter")),
    }
}

fn field_value(item: &Value, field: &str) -> Option<Value> {
    if field.eq_ignore_ascii_case("name") {
        return item.get("name").cloned();
    }
    let path = field.strip_prefix("properties/").unwrap_or(field);
    let mut v = item.get("properties")?;
    for part in path.split('/') {
        v = v.get(part)?;
    }
    Some(v.clone())
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

struct Shared {
    front_url: String,
    back_url: String,
    tenants: Mutex<HashMap<String, Arc<Tenant>>>,
    unattributed: Mutex<Vec<Seen>>,
    /// Prism's URL, once set.
    validator: OnceLock<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The fake's server for this test process (see the module docs).
pub struct FakeServer {
    shared: Arc<Shared>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_ETAG: AtomicU64 = AtomicU64::new(0x1000);
static NEXT_TENANT: AtomicU64 = AtomicU64::new(1);

impl FakeServer {
    /// The server of this test process, started on first use on a thread of its own.
    /// Panics when it cannot listen.
    pub fn shared() -> &'static FakeServer {
        static SERVER: OnceLock<FakeServer> = OnceLock::new();
        SERVER.get_or_init(|| FakeServer::start().unwrap_or_else(|e| panic!("cannot start the fake: {e}")))
    }

    fn start() -> Result<FakeServer, String> {
        let front = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let back = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        for l in [&front, &back] {
            l.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
        }
        let front_addr = front.local_addr().map_err(|e| e.to_string())?;
        let back_addr = back.local_addr().map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("apim-fake")
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let shared = {
            let _guard = runtime.enter();
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(Duration::from_secs(5)));
            // A new connection per request: no race with Prism closing idle ones.
            let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
            Arc::new(Shared {
                front_url: format!("http://{front_addr}"),
                back_url: format!("http://{back_addr}"),
                tenants: Mutex::new(HashMap::new()),
                unattributed: Mutex::new(Vec::new()),
                validator: OnceLock::new(),
                client,
            })
        };
        let (s1, s2) = (shared.clone(), shared.clone());
        std::thread::Builder::new()
            .name("apim-fake".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let front = TcpListener::from_std(front).expect("front listener");
                    let back = TcpListener::from_std(back).expect("back listener");
                    tokio::join!(serve(front, s1, true), serve(back, s2, false));
                });
            })
            .map_err(|e| format!("thread: {e}"))?;
        Ok(FakeServer { shared })
    }

    /// `http://127.0.0.1:PORT` of the front (through the validator once one is set).
    pub fn front_url(&self) -> &str {
        &self.shared.front_url
    }

    /// `http://127.0.0.1:PORT` of the fake itself (no validation): the validator's upstream.
    pub fn back_url(&self) -> &str {
        &self.shared.back_url
    }

    /// Sends the front's requests through the validator at `url` from now on (once).
    pub fn set_validator(&self, url: &str) {
        let _ = self.shared.validator.set(url.trim_end_matches('/').to_owned());
    }

    /// The validator's URL, when set.
    pub fn validator(&self) -> Option<&str> {
        self.shared.validator.get().map(String::as_str)
    }

    /// A new fake API Management service in a subscription of its own.
    pub fn service(&'static self) -> ApimFake {
        let n = NEXT_TENANT.fetch_add(1, Ordering::Relaxed);
        // A UUID (the description wants one), unique in the process and across processes.
        let subscription = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            std::process::id(),
            random_u64() & 0xffff,
            random_u64() & 0xfff,
            random_u64() & 0xfff,
            n & 0xffff_ffff_ffff
        );
        let tenant = Arc::new(Tenant {
            subscription: subscription.clone(),
            resource_group: "rg-tollbridge-test".to_owned(),
            service: format!("apim-test-{n}"),
            state: Mutex::new(TenantState::new()),
        });
        lock(&self.shared.tenants).insert(subscription.to_lowercase(), tenant.clone());
        ApimFake { server: self, tenant }
    }

    /// Requests that named no service of this process (an unknown subscription, or no
    /// `/subscriptions/…` path at all).
    pub fn unattributed(&self) -> Vec<Seen> {
        lock(&self.shared.unattributed).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn tenant_for(&self, path: &str) -> Option<Arc<Tenant>> {
        let mut segs = path.trim_start_matches('/').split('/');
        match (segs.next(), segs.next()) {
            (Some(s), Some(id)) if s.eq_ignore_ascii_case("subscriptions") => {
                lock(&self.tenants).get(&percent_decode(id).to_lowercase()).cloned()
            }
            _ => None,
        }
    }

    fn record(&self, tenant: Option<&Tenant>, seen: Seen) {
        match tenant {
            Some(t) => t.state().seen.push(seen),
            None => lock(&self.unattributed).push(seen),
        }
    }

    fn update_seen(&self, tenant: Option<&Tenant>, id: u64, f: impl FnOnce(&mut Seen)) {
        let mut guard_t;
        let mut guard_u;
        let list: &mut Vec<Seen> = match tenant {
            Some(t) => {
                guard_t = t.state();
                &mut guard_t.seen
            }
            None => {
                guard_u = lock(&self.unattributed);
                &mut guard_u
            }
        };
        if let Some(s) = list.iter_mut().rev().find(|s| s.id == id) {
            f(s);
        }
    }

    fn seen_fault(&self, tenant: Option<&Tenant>, id: u64) -> Option<Fault> {
        let mut out = None;
        self.update_seen(tenant, id, |s| out = s.fault.clone());
        out
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, front: bool) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    if front {
                        handle_front(shared, req).await
                    } else {
                        handle_back(shared, req).await
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The error that makes hyper close a connection without an answer.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by the test fake")
    }
}

impl std::error::Error for Dropped {}

type Reply = Result<Response<Full<Bytes>>, Dropped>;

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| !hop_by_hop(n) && n.as_str() != SEEN_HEADER)
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

fn new_seen(parts: &hyper::http::request::Parts, body: &Bytes, validated: bool) -> Seen {
    Seen {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: recorded_headers(&parts.headers),
        body: body.clone(),
        status: None,
        fault: None,
        refusal: None,
        validated,
        reached_fake: false,
        at: Instant::now(),
    }
}

/// Is this the path of an operation monitor (not in the description)?
fn is_monitor_path(path: &str) -> bool {
    let lower = path.to_lowercase();
    lower.contains("/locations/")
        && (lower.contains("/operationsstatuses/") || lower.contains("/operationresults/"))
}

async fn handle_front(shared: Arc<Shared>, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let tenant = shared.tenant_for(parts.uri.path());
    let validator = shared.validator.get().cloned();
    let through_validator = validator.is_some() && !is_monitor_path(parts.uri.path());
    let seen = new_seen(&parts, &body, through_validator);
    let id = seen.id;
    shared.record(tenant.as_deref(), seen);

    let response = if let (true, Some(validator)) = (through_validator, validator) {
        let (response, refusal) = forward(&shared, &validator, &parts, body, id).await;
        // A connection the fake dropped on purpose: Prism's answer about it is no refusal.
        if let Some(Fault::Drop | Fault::DropResponse) = shared.seen_fault(tenant.as_deref(), id) {
            return Err(Dropped);
        }
        if let Some(r) = refusal {
            shared.update_seen(tenant.as_deref(), id, |s| s.refusal = Some(r));
        }
        response
    } else {
        let base = shared.front_url.clone();
        process(&shared, tenant.as_deref(), id, &parts, &body, &base).await?
    };
    shared.update_seen(tenant.as_deref(), id, |s| s.status = Some(response.status()));
    Ok(response)
}

async fn handle_back(shared: Arc<Shared>, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let tenant = shared.tenant_for(parts.uri.path());
    let from_front =
        parts.headers.get(SEEN_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match from_front {
        Some(id) => {
            // Links in the answer lead back to the front.
            let base = shared.front_url.clone();
            process(&shared, tenant.as_deref(), id, &parts, &body, &base).await
        }
        None => {
            let seen = new_seen(&parts, &body, false);
            let id = seen.id;
            shared.record(tenant.as_deref(), seen);
            let base = shared.back_url.clone();
            let response = process(&shared, tenant.as_deref(), id, &parts, &body, &base).await?;
            shared.update_seen(tenant.as_deref(), id, |s| s.status = Some(response.status()));
            Ok(response)
        }
    }
}

/// Fault rules, then the ARM logic.
async fn process(
    shared: &Shared,
    tenant: Option<&Tenant>,
    id: u64,
    parts: &hyper::http::request::Parts,
    body: &Bytes,
    base: &str,
) -> Reply {
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let fault = tenant.and_then(|t| t.state().rules.fire(&parts.method, path, &percent_decode(query)));
    if let Some(f) = &fault {
        shared.update_seen(tenant, id, |s| s.fault = Some(f.clone()));
    }
    let act = || {
        shared.update_seen(tenant, id, |s| s.reached_fake = true);
        let answer = arm(tenant, parts, body, base);
        to_response(answer)
    };
    match fault {
        None => Ok(act()),
        Some(Fault::Drop) => Err(Dropped),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(act())
        }
        Some(Fault::DelayResponse(d)) => {
            let response = act();
            tokio::time::sleep(d).await;
            Ok(response)
        }
        Some(Fault::DropResponse) => {
            let _ = act();
            Err(Dropped)
        }
        Some(Fault::ConcurrentWrite) => {
            if let Some(t) = tenant {
                t.rewrite(path);
            }
            Ok(act())
        }
        Some(f) => Ok(to_response(fault_answer(&f).expect("an error fault"))),
    }
}

fn arm(tenant: Option<&Tenant>, parts: &hyper::http::request::Parts, body: &Bytes, base: &str) -> Answer {
    let path = parts.uri.path();
    let segs: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
    let Some(tenant) = tenant else {
        let sub = segs.get(1).cloned().unwrap_or_default();
        return if segs.first().is_some_and(|s| s.eq_ignore_ascii_case("subscriptions")) && !sub.is_empty() {
            ArmError::new(
                404,
                "SubscriptionNotFound",
                format!("The subscription '{sub}' could not be found."),
            )
            .answer()
        } else {
            ArmError::new(404, "NotFound", "No such resource path in the test fake.").answer()
        };
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(path);
    let link_base = tenant.state().link_base.clone();
    let base = link_base.as_deref().unwrap_or(base);
    let req = ArmRequest {
        method: &parts.method,
        segs,
        query: parse_query(parts.uri.query()),
        headers: &parts.headers,
        body,
        base,
        path: path_and_query,
    };
    tenant.handle(&req)
}

fn to_response(answer: Answer) -> Response<Full<Bytes>> {
    let body = answer.body.as_ref().map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    if answer.body.is_some() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    }
    headers.insert("x-ms-request-id", HeaderValue::from_str(&random_uuid()).expect("a header value"));
    for (name, value) in answer.headers {
        headers.insert(name, HeaderValue::from_str(&value).expect("a header value"));
    }
    response
}

/// Sends the request to the validator (with the id of its record) and returns its answer
/// (and Prism's refusal, if it is one), or 502 / 504 from the front itself when there is
/// none.
async fn forward(
    shared: &Shared,
    validator: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    id: u64,
) -> (Response<Full<Bytes>>, Option<Refusal>) {
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = match format!("{validator}{path_and_query}").parse() {
        Ok(u) => u,
        Err(e) => {
            return (to_response(ArmError::new(400, "BadRequest", format!("bad URI: {e}")).answer()), None)
        }
    };
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    for (name, value) in parts.headers.iter() {
        if !hop_by_hop(name) && name.as_str() != SEEN_HEADER && name != header::HOST {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    request
        .headers_mut()
        .insert(SEEN_HEADER, HeaderValue::from_str(&id.to_string()).expect("a header value"));
    let call = shared.client.request(request);
    let response = match tokio::time::timeout(UPSTREAM_TIMEOUT, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let error = ArmError::new(502, "BadGateway", format!("test front: the validator failed: {e}"));
            return (to_response(error.answer()), None);
        }
        Err(_) => {
            let error =
                ArmError::new(504, "GatewayTimeout", "test front: the validator did not answer in time");
            return (to_response(error.answer()), None);
        }
    };
    let (rparts, rbody) = response.into_parts();
    let rbody = match tokio::time::timeout(UPSTREAM_TIMEOUT, rbody.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => {
            let error = ArmError::new(502, "BadGateway", "test front: the validator's answer broke off");
            return (to_response(error.answer()), None);
        }
    };
    let refusal = refusal(&rparts, &rbody);
    let mut out = Response::new(Full::new(rbody));
    *out.status_mut() = rparts.status;
    for (name, value) in rparts.headers.iter() {
        if !hop_by_hop(name) && !name.as_str().starts_with("access-control-") {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    (out, refusal)
}

/// Prism's own answers: `application/problem+json` (the fake never sends it), with a Prism
/// error type in the body, or (for HEAD, whose answers have no body) the `sl-violations`
/// header or only the status.
fn refusal(parts: &hyper::http::response::Parts, body: &Bytes) -> Option<Refusal> {
    let is_problem = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if !is_problem {
        return None;
    }
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let violations: Value = parts
        .headers
        .get("sl-violations")
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
        .unwrap_or(Value::Null);
    let status = parts.status.as_u16();
    let kind = match doc["type"].as_str() {
        Some(t) => t.rsplit('#').next().unwrap_or(t).to_owned(),
        None if violations.is_array() => "VIOLATIONS".to_owned(),
        None => match status {
            401 => "UNAUTHORIZED",
            404 => "NO_PATH_MATCHED_ERROR",
            405 => "NO_METHOD_MATCHED_ERROR",
            422 => "UNPROCESSABLE_ENTITY",
            _ => "PRISM_ERROR",
        }
        .to_owned(),
    };
    let list = if doc["validation"].is_array() { &doc["validation"] } else { &violations };
    let messages = list
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    let location: Vec<String> = v["location"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map(str::to_owned).unwrap_or_else(|| p.to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    format!("{}: {}", location.join("."), v["message"].as_str().unwrap_or(""))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Refusal {
        status,
        kind,
        title: doc["title"].as_str().unwrap_or("(no body: a HEAD answer)").to_owned(),
        detail: doc["detail"].as_str().unwrap_or("").to_owned(),
        messages,
    })
}

// ---------------------------------------------------------------------------------------
// The handle of one fake service
// ---------------------------------------------------------------------------------------

/// One fake API Management service (in its own Azure subscription) on the process's
/// [`FakeServer`]: its identity, inspection, out-of-band changes, fault rules and record.
/// Dropping it forgets the service (its requests then get 404).
pub struct ApimFake {
    server: &'static FakeServer,
    tenant: Arc<Tenant>,
}

impl Drop for ApimFake {
    fn drop(&mut self) {
        lock(&self.server.shared.tenants).remove(&self.tenant.subscription.to_lowercase());
    }
}

impl fmt::Debug for ApimFake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApimFake({})", self.tenant.service_id())
    }
}

impl ApimFake {
    /// The Azure subscription id (a UUID of its own per fake service).
    pub fn subscription_id(&self) -> &str {
        &self.tenant.subscription
    }

    pub fn resource_group(&self) -> &str {
        &self.tenant.resource_group
    }

    pub fn service_name(&self) -> &str {
        &self.tenant.service
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{svc}`
    pub fn service_id(&self) -> String {
        self.tenant.service_id()
    }

    /// The full resource id of an entity path (`apis/orders` → `/subscriptions/…/apis/orders`).
    pub fn resource_id(&self, path: &str) -> String {
        format!("{}/{}", self.service_id(), path.trim_matches('/'))
    }

    /// The fake itself, without validation (`http://127.0.0.1:PORT`).
    pub fn fake_url(&self) -> &str {
        self.server.back_url()
    }

    /// The front (`http://127.0.0.1:PORT`): validated when a validator is set.
    pub fn front_url(&self) -> &str {
        self.server.front_url()
    }

    fn state(&self) -> MutexGuard<'_, TenantState> {
        self.tenant.state()
    }

    // --- settings ------------------------------------------------------------------------

    /// Requests must carry `Authorization: Bearer <token>` with exactly this token (`None`:
    /// any non-empty bearer token).
    pub fn require_token(&self, token: Option<&str>) {
        self.state().token = token.map(str::to_owned);
    }

    /// Long-running operations for writes of APIs (`None`: synchronous, the default).
    pub fn set_lro(&self, lro: Option<Lro>) {
        self.state().lro = lro;
    }

    /// Links in answers (`nextLink`, the `Azure-AsyncOperation` and `Location` of long-running
    /// operations) point to `base` (`http://127.0.0.1:PORT`) instead of where the request came
    /// (`None`, the default): a service that sends clients elsewhere.
    pub fn set_link_base(&self, base: Option<&str>) {
        self.state().link_base = base.map(|b| b.trim_end_matches('/').to_owned());
    }

    /// Items per page when a list has no `$top` (default [`DEFAULT_PAGE_SIZE`]).
    pub fn set_page_size(&self, n: usize) {
        assert!(n >= 1, "page size >= 1");
        self.state().page_size = n;
    }

    /// Forgets every entity, operation, rule, setting and recorded request.
    pub fn reset(&self) {
        *self.state() = TenantState::new();
    }

    // --- faults and the record ---------------------------------------------------------

    /// Adds a fault rule after the existing ones.
    pub fn add(&self, rule: Rule) -> &Self {
        self.state().rules.add(rule);
        self
    }

    /// Removes every fault rule.
    pub fn clear_rules(&self) {
        self.state().rules.clear();
    }

    /// Every request received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    pub fn clear_seen(&self) {
        self.state().seen.clear();
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.state().seen.len()
    }

    /// Write requests (POST, PUT, PATCH, DELETE) received, whatever became of them.
    pub fn writes(&self) -> usize {
        self.state().seen.iter().filter(|s| s.is_write()).count()
    }

    /// Write requests the fake acted on (validated, no fault that stopped them): those that
    /// may have changed its state.
    pub fn applied_writes(&self) -> usize {
        self.state().seen.iter().filter(|s| s.is_write() && s.reached_fake).count()
    }

    /// Requests a fault was injected into.
    pub fn injected(&self) -> usize {
        self.state().seen.iter().filter(|s| s.injected()).count()
    }

    /// The requests with this method (`""`: any) whose path (as sent) contains `path_contains`
    /// (case-insensitively), e.g. `requests("PUT", "/apis/")`.
    pub fn requests(&self, method: &str, path_contains: &str) -> Vec<Seen> {
        let needle = path_contains.to_lowercase();
        self.state()
            .seen
            .iter()
            .filter(|s| method.is_empty() || s.method.as_str().eq_ignore_ascii_case(method))
            .filter(|s| s.path.to_lowercase().contains(&needle))
            .cloned()
            .collect()
    }

    /// Requests Prism refused.
    pub fn refusals(&self) -> Vec<Seen> {
        self.state().seen.iter().filter(|s| s.refusal.is_some()).cloned().collect()
    }

    /// The requests received so far, one per line (for assertion messages).
    pub fn log(&self) -> String {
        self.seen().iter().map(|s| format!("{s}\n")).collect()
    }

    /// Panics, with Prism's messages and each refused request, when Prism refused any request:
    /// a request the real service would refuse (or an answer of the fake that breaks the
    /// description: `VIOLATIONS` on `response…`).
    pub fn assert_no_refusals(&self) {
        let refused = self.refusals();
        if refused.is_empty() {
            return;
        }
        let mut text = format!(
            "{} request(s) to the fake API Management service {} were refused by the validation against the API description (Prism):\n",
            refused.len(),
            self.service_id()
        );
        for s in &refused {
            let _ = std::fmt::Write::write_fmt(&mut text, format_args!("  {} {}", s.method, s.path));
            if let Some(q) = &s.query {
                text.push('?');
                text.push_str(q);
            }
            let r = s.refusal.as_ref().expect("a refusal");
            let _ = std::fmt::Write::write_fmt(&mut text, format_args!("\n    -> {r}\n"));
            if r.messages.iter().any(|m| m.starts_with("response")) {
                text.push_str("    (the fake's answer breaks the description: a bug of the test fake)\n");
            }
            if !s.body.is_empty() {
                let body = String::from_utf8_lossy(&s.body);
                let shown: String = body.chars().take(2000).collect();
                let _ = std::fmt::Write::write_fmt(&mut text, format_args!("    body: {shown}\n"));
            }
        }
        panic!("{text}");
    }

    // --- entities ------------------------------------------------------------------------

    /// The paths (as first written) of the entities of a kind, sorted case-insensitively.
    pub fn paths(&self, kind: Kind) -> Vec<String> {
        self.state().entities.values().filter(|e| e.kind == kind).map(|e| e.path.clone()).collect()
    }

    /// The names of the entities of a kind (last path segment), in the order of [`Self::paths`].
    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.state().entities.values().filter(|e| e.kind == kind).map(|e| e.name.clone()).collect()
    }

    /// Every entity, sorted by path.
    pub fn entities(&self) -> Vec<Entity> {
        self.state().entities.values().cloned().collect()
    }

    /// An entity by path (`apis/orders`, case-insensitive).
    pub fn entity(&self, path: &str) -> Option<Entity> {
        let target = classify(path)?;
        self.state().entities.get(&target.key).cloned()
    }

    pub fn exists(&self, path: &str) -> bool {
        self.entity(path).is_some()
    }

    /// The stored properties of an entity.
    pub fn properties(&self, path: &str) -> Option<Value> {
        self.entity(path).map(|e| e.properties)
    }

    /// The current ETag (with quotes).
    pub fn etag(&self, path: &str) -> Option<String> {
        self.entity(path).map(|e| e.etag)
    }

    /// A policy as stored, in `xml` format (`apis/a/policies/policy`, or the owner's path:
    /// `apis/a`, `products/p`, `apis/a/operations/o`).
    pub fn policy(&self, path: &str) -> Option<String> {
        self.policy_as(path, Format::Xml)
    }

    /// A policy as stored, in `format`.
    pub fn policy_as(&self, path: &str, format: Format) -> Option<String> {
        let path = policy_path(path);
        self.entity(&path).and_then(|e| e.policy(format))
    }

    /// Records calls of subscription `sid` in the hour starting at `hour`
    /// (`YYYY-MM-DDTHH:00:00`, UTC) for the reports: `success`, `blocked` (401, 403, 429) and
    /// `failed` (400, 5xx) as the service counts them.
    pub fn record_calls(&self, sid: &str, hour: &str, success: u64, blocked: u64, failed: u64) {
        assert!(hour.len() == 19 && hour.ends_with(":00:00"), "record_calls: {hour:?} is not an hour");
        let calls = Calls { subscription: sid.to_owned(), hour: hour.to_owned(), success, blocked, failed };
        self.state().calls.push(calls);
    }

    /// A subscription's keys (primary, secondary).
    pub fn secrets(&self, sid: &str) -> Option<(String, String)> {
        self.entity(&format!("subscriptions/{sid}")).and_then(|e| e.secrets)
    }

    /// Creates or replaces an entity behind the provider's back, with the service's checks and
    /// defaults (as a PUT: `properties` as in the request body's `properties`); no validator,
    /// fault, long-running operation or record. Returns the new ETag. Panics when the service
    /// would refuse it.
    pub fn put(&self, path: &str, properties: Value) -> String {
        let target = classify(path).unwrap_or_else(|| panic!("not an entity path of the fake: {path}"));
        let mut state = self.state();
        Tenant::check_parents(&state, &target).unwrap_or_else(|e| panic!("put {path}: {}", e.message));
        let existing = state.entities.get(&target.key).cloned();
        let entity = if target.kind == Kind::ProductApi {
            new_entity(&target, existing.as_ref(), json!({}), None, None)
        } else {
            assert!(properties.is_object(), "put {path}: properties must be a JSON object");
            self.tenant.prepare(&state, &target, properties, existing.as_ref()).unwrap_or_else(|e| {
                panic!("put {path}: {} {}: {} {:?}", e.status, e.code, e.message, e.details)
            })
        };
        store(&mut state, entity).etag
    }

    /// [`Self::put`] of an entity that must not exist yet: seeds entities that are not the
    /// provider's (look-alikes it must leave alone).
    pub fn seed(&self, path: &str, properties: Value) -> String {
        assert!(!self.exists(path), "seed {path}: it exists already");
        self.put(path, properties)
    }

    /// Sets a policy behind the provider's back (`path` as for [`Self::policy`]); `xml` is
    /// parsed as `rawxml`.
    pub fn put_policy(&self, path: &str, xml: &str) -> String {
        self.put(&policy_path(path), json!({ "format": "rawxml", "value": xml }))
    }

    /// Merges (JSON merge patch) into an entity's properties behind the provider's back, with
    /// the service's checks; returns the new ETag.
    pub fn patch(&self, path: &str, patch: Value) -> String {
        let mut props = self.properties(path).unwrap_or_else(|| panic!("patch {path}: no such entity"));
        merge_patch(&mut props, &patch);
        self.put(path, props)
    }

    /// Changes an entity's stored properties as `f` likes, without checks (drift of any kind);
    /// the ETag changes. Returns the new ETag.
    pub fn mutate(&self, path: &str, f: impl FnOnce(&mut Value)) -> String {
        let target = classify(path).unwrap_or_else(|| panic!("not an entity path of the fake: {path}"));
        let mut state = self.state();
        let mut entity = state
            .entities
            .get(&target.key)
            .cloned()
            .unwrap_or_else(|| panic!("mutate {path}: no such entity"));
        f(&mut entity.properties);
        store(&mut state, entity).etag
    }

    /// Deletes an entity (and what belongs to it, as DELETE does) behind the provider's back.
    /// Whether it existed.
    pub fn remove(&self, path: &str) -> bool {
        let target = classify(path).unwrap_or_else(|| panic!("not an entity path of the fake: {path}"));
        let mut state = self.state();
        let existed = state.entities.contains_key(&target.key);
        self.tenant.remove_cascade(&mut state, &target);
        existed
    }

    /// Long-running operations not finished yet.
    pub fn pending_operations(&self) -> usize {
        self.state().ops.values().filter(|op| op.outcome.is_none()).count()
    }
}

fn policy_path(path: &str) -> String {
    let p = path.trim_matches('/');
    if p.to_lowercase().ends_with("/policies/policy") {
        p.to_owned()
    } else {
        format!("{p}/policies/policy")
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers: URLs, ids, time
// ---------------------------------------------------------------------------------------

/// `a=b&c=d` → pairs, percent-decoded (`+` is a space).
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes what a query value may not hold as is.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b'$' | b'/' | b'\'' | b'(' | b')' | b',')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn random_u64() -> u64 {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        AtomicU64::new(nanos ^ ((std::process::id() as u64) << 32))
    });
    // splitmix64
    let mut z = state.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&format!("{:016x}", random_u64()));
    }
    s.truncate(n);
    s
}

fn random_uuid() -> String {
    let h = random_hex(32);
    format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn random_id() -> String {
    random_uuid()
}

/// A new ETag, quoted, in the service's style (base64 of a version number).
fn next_etag() -> String {
    let n = NEXT_ETAG.fetch_add(1, Ordering::Relaxed);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = n.to_be_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("\"{out}\"")
}

/// Now, as ARM writes times: `2026-01-02T03:04:05.678Z`.
pub fn now_iso() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (year, month, day, rem) = civil(d.as_secs() as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A time as an HTTP-date (IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (year, month, day, rem) = civil(secs);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Seconds since the epoch as (year, month, day, seconds into the day).
fn civil(secs: i64) -> (i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    (year, month, day, rem)
}
