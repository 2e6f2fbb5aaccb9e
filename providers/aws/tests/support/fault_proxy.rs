//! An HTTP/1.1 reverse proxy on 127.0.0.1 in front of moto that injects faults.
//!
//! ```ignore
//! let proxy = FaultProxy::start(Moto::shared().url()).await;
//! proxy.add(Rule::next(2, Fault::Throttle).writes());          // next 2 writes: 429
//! proxy.add(Rule::every(3, Fault::InternalError));              // every 3rd request: 500
//! proxy.add(Rule::always(Fault::Delay(Duration::from_secs(30))).path_contains("/usageplans"));
//! // point the SDK's endpoint_url at proxy.url() …
//! assert_eq!(proxy.forwarded_writes(), 4);
//! ```
//!
//! Requests are forwarded unchanged (method, path, query, headers, body; hop-by-hop headers
//! aside), each over a new connection to the target. Every request is recorded as a
//! [`Seen`], whether a fault was injected or not.
//!
//! Rules are tried in the order they were added; the first that fires decides the request
//! and the rules after it do not see (or count) that request. A request no rule fires for is
//! forwarded as it is.
//!
//! [`FaultProxy::page_lists`] makes the proxy page list answers as API Gateway does (moto
//! answers every list whole): at most N items a page, fewer when the client asks for fewer
//! (`limit` for REST APIs, `maxResults` for HTTP APIs), and a token for the next page
//! (`position`, `nextToken`) that the client sends back to get it.
//!
//! The injected errors are what API Gateway sends and what the AWS SDK for Rust classifies:
//! the REST-JSON error code comes from the `x-amzn-ErrorType` header (before the body's
//! `code`/`__type`); `TooManyRequestsException` is in the SDK's throttling error codes, so a
//! [`Fault::Throttle`] is retried as throttling; a 500 is retried as a transient error by its
//! status code (500, 502, 503, 504).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tollbridge_testkit::faults::{self, is_write, Rules};

/// How long the proxy waits for the target's answer before answering 504 itself.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// What the proxy does to a request a [`Rule`] fires for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer 429 as API Gateway throttling does: header
    /// `x-amzn-ErrorType: TooManyRequestsException`, body `{"message":"Too Many Requests"}`.
    /// Not forwarded.
    Throttle,
    /// Answer 500 with `x-amzn-ErrorType: InternalFailure`. Not forwarded.
    InternalError,
    /// Answer `status` with `x-amzn-ErrorType: error_type` and a JSON `message`. Not forwarded.
    Error { status: u16, error_type: String },
    /// Wait this long, then forward (a client that times out first never reaches the target).
    Delay(Duration),
    /// Forward at once, then hold the answer this long (the target has acted even when the
    /// client times out).
    DelayResponse(Duration),
    /// Close the connection without an answer. Not forwarded.
    Drop,
    /// Forward, then close the connection without passing the answer on (the target has
    /// acted; the client sees a broken connection).
    DropResponse,
}

/// A fault, when to inject it, and which requests it applies to (all by default).
pub type Rule = faults::Rule<Fault>;

/// One request as the proxy received it, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: Method,
    /// The path as sent (percent-encoded), without the query.
    pub path: String,
    pub query: Option<String>,
    /// The status the client was sent; `None` when the connection was dropped, or the client
    /// gave up (e.g. timed out during a delay) before an answer.
    pub status: Option<StatusCode>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// Whether the request was passed on to the target (which may have acted on it).
    pub forwarded: bool,
    /// The body the client was sent (after paging), when it was sent one.
    pub response_body: Option<Bytes>,
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
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
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
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    rules: Rules<Fault>,
    seen: Vec<Seen>,
    /// Most items a list answer's page holds; `None`: lists are passed on whole.
    page_size: Option<usize>,
}

struct Shared {
    /// `http://HOST:PORT` of the target.
    target: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Mutex<State>,
}

/// A running proxy; it stops when dropped (or when the test's runtime ends).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target` (`http://HOST:PORT`, no
    /// path). Needs a tokio runtime; serves on it until dropped.
    pub async fn start(target: &str) -> FaultProxy {
        let target: Uri = target.trim_end_matches('/').parse().expect("target URL");
        assert!(
            target.scheme_str() == Some("http") && target.authority().is_some(),
            "FaultProxy target must be http://HOST:PORT, not {target}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        // A new connection per request: moto's server closes each after one answer anyway.
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        let shared = Arc::new(Shared { target, client, state: Mutex::new(State::default()) });
        let server = tokio::spawn(serve(listener, shared.clone()));
        FaultProxy { addr, shared, server }
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule after the existing ones.
    pub fn add(&self, rule: Rule) -> &Self {
        self.state().rules.add(rule);
        self
    }

    /// Pages list answers (see the module docs) with at most `size` items a page.
    pub fn page_lists(&self, size: usize) -> &Self {
        assert!(size >= 1, "page_lists needs a size >= 1");
        self.state().page_size = Some(size);
        self
    }

    /// Removes every rule: from now on every request is forwarded.
    pub fn clear_rules(&self) {
        self.state().rules.clear();
    }

    /// Every request received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_seen(&self) {
        self.state().seen.clear();
    }

    /// Requests received so far (injected or not).
    pub fn count(&self) -> usize {
        self.state().seen.len()
    }

    /// Write requests (POST, PUT, PATCH, DELETE) received so far, injected or not.
    pub fn writes(&self) -> usize {
        self.state().seen.iter().filter(|s| s.is_write()).count()
    }

    /// Write requests passed on to the target (those that may have changed its state).
    pub fn forwarded_writes(&self) -> usize {
        self.state().seen.iter().filter(|s| s.is_write() && s.forwarded).count()
    }

    /// Requests a fault was injected into.
    pub fn injected(&self) -> usize {
        self.state().seen.iter().filter(|s| s.injected()).count()
    }

    /// The requests received so far, one per line (for assertion messages).
    pub fn log(&self) -> String {
        self.seen().iter().map(|s| format!("{s}\n")).collect()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Ends the accept loop and, with its JoinSet, every connection.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
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
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let (index, fault, page_size) = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let fault = state.rules.fire(&parts.method, &path, query.as_deref().unwrap_or(""));
        state.seen.push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            status: None,
            fault: fault.clone(),
            forwarded: false,
            response_body: None,
        });
        (state.seen.len() - 1, fault, state.page_size)
    };
    let update = |status: Option<StatusCode>, forwarded: bool| {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = state.seen.get_mut(index) {
            seen.status = status;
            seen.forwarded |= forwarded;
        }
    };
    let is_get = parts.method == Method::GET;
    let paged = |response: Response<Bytes>| match page_size {
        Some(size) if is_get && response.status() == StatusCode::OK && is_paged_list(&path) => {
            match page(&path, query.as_deref(), response.body(), size) {
                Ok(body) => response.map(|_| body),
                Err(e) => aws_error(400, "BadRequestException", &e),
            }
        }
        _ => response,
    };

    let response = match fault {
        None => paged(forward(&shared, parts, body, || update(None, true)).await),
        Some(Fault::Throttle) => aws_error(429, "TooManyRequestsException", "Too Many Requests"),
        Some(Fault::InternalError) => aws_error(500, "InternalFailure", "Internal server error"),
        Some(Fault::Error { status, error_type }) => {
            aws_error(status, &error_type, "Injected by the fault proxy")
        }
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            paged(forward(&shared, parts, body, || update(None, true)).await)
        }
        Some(Fault::DelayResponse(d)) => {
            // Forwarded in its own task: the target gets the whole request even if the
            // client gives up meanwhile.
            let shared2 = shared.clone();
            let forwarded = tokio::spawn(async move { forward(&shared2, parts, body, || {}).await })
                .await
                .map_err(|_| Dropped)?;
            update(None, true);
            tokio::time::sleep(d).await;
            paged(forwarded)
        }
        Some(Fault::DropResponse) => {
            let shared2 = shared.clone();
            let _ = tokio::spawn(async move { forward(&shared2, parts, body, || {}).await }).await;
            update(None, true);
            return Err(Dropped);
        }
    };
    update(Some(response.status()), false);
    {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = state.seen.get_mut(index) {
            seen.response_body = Some(response.body().clone());
        }
    }
    Ok(response.map(Full::new))
}

/// The list reads API Gateway pages (by path, as sent). A REST API's stages are not paged.
fn is_paged_list(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["restapis" | "apikeys" | "usageplans" | "domainnames"]
            | ["usageplans", _, "keys"]
            | ["domainnames", _, "basepathmappings"]
            | ["restapis", _, "resources" | "deployments"]
            | ["v2", "apis" | "domainnames"]
            | ["v2", "apis", _, "integrations" | "routes" | "stages"]
            | ["v2", "domainnames", _, "apimappings"]
    )
}

/// The page of a whole list answer `body` that the query asks for: items from the offset
/// its token names (`offset-N`, the first page without one), at most `max` (or its page
/// size parameter, if smaller), and the next page's token when items are left.
fn page(path: &str, query: Option<&str>, body: &Bytes, max: usize) -> Result<Bytes, String> {
    let (items_key, token_key, size_key) = if path.starts_with("/v2/") {
        ("items", "nextToken", "maxResults")
    } else {
        ("item", "position", "limit")
    };
    let param = |name: &str| {
        query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    };
    let size = match param(size_key) {
        Some(v) => v.parse::<usize>().map_err(|_| format!("{size_key}={v} is not a number"))?.clamp(1, max),
        None => max,
    };
    let offset = match param(token_key) {
        Some(token) => token
            .strip_prefix("offset-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| format!("{token_key}={token} is not a token this service gave"))?,
        None => 0,
    };
    let mut answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the target's list answer is not JSON: {e}"))?;
    let whole =
        answer.get_mut(items_key).and_then(|v| v.as_array_mut()).map(std::mem::take).unwrap_or_default();
    let end = offset.saturating_add(size).min(whole.len());
    let items: Vec<_> = whole.get(offset.min(whole.len())..end).unwrap_or_default().to_vec();
    let object = answer.as_object_mut().ok_or("the target's list answer is not an object")?;
    object.insert(items_key.into(), serde_json::Value::Array(items));
    object.remove(token_key);
    if end < whole.len() {
        object.insert(token_key.into(), format!("offset-{end}").into());
    }
    Ok(Bytes::from(answer.to_string()))
}

/// The answer API Gateway gives for an error: JSON body, `x-amzn-ErrorType` header.
fn aws_error(status: u16, error_type: &str, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status code");
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static("x-amzn-errortype"),
        HeaderValue::from_str(error_type).expect("an error type usable as a header value"),
    );
    headers.insert(HeaderName::from_static("x-amzn-requestid"), HeaderValue::from_static("fault-proxy"));
    response
}

/// Headers that describe one connection, not the message.
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

/// Sends the request to the target (calling `sent` once it is on its way) and returns the
/// target's answer, or 502 / 504 from the proxy itself when there is none.
async fn forward(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    body: Bytes,
    sent: impl FnOnce(),
) -> Response<Bytes> {
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = format!("{}{}", shared.target.to_string().trim_end_matches('/'), path_and_query)
        .parse()
        .expect("target URI");
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    // The Host header goes along as the client sent it (part of what it signed).
    for (name, value) in parts.headers.iter() {
        if !hop_by_hop(name) {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    let call = shared.client.request(request);
    sent();
    let response = match tokio::time::timeout(UPSTREAM_TIMEOUT, call).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return aws_error(502, "BadGateway", &format!("fault proxy: target failed: {e}")),
        Err(_) => return aws_error(504, "GatewayTimeout", "fault proxy: target did not answer in time"),
    };
    let (parts, body) = response.into_parts();
    let body = match tokio::time::timeout(UPSTREAM_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => return aws_error(502, "BadGateway", "fault proxy: target's answer broke off"),
    };
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    for (name, value) in parts.headers.iter() {
        if !hop_by_hop(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}
