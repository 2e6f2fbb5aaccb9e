//! The request handler: route lookup, policies, filters, and forwarding upstream.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::Rng;
use tokio::sync::mpsc;
use tollbridge_provider::{
    ActionIr, BackendIr, BackendTarget, CorsIr, HeaderModifier, MirrorIr, PathModifier, RedirectIr, RouteIr,
};

use crate::body::{self, Body, ChannelBody, TeeBody};
use crate::hostmatch::strip_port;
use crate::metrics::{PolicyLabels, RequestLabels, RouteLabels, UpstreamErrorLabels};
use crate::policy::Decision;
use crate::request_check;
use crate::router::RequestView;
use crate::runtime::{socket_address, url_upstream, CompiledGateway};
use crate::server::Shared;
use crate::upstream::UpstreamError;

/// What a connection knows about itself.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub tls: bool,
    /// The client's IP as a header value, for `x-forwarded-for` (built once per connection).
    pub client_ip: HeaderValue,
    /// The TLS server name (SNI) the client asked for.
    pub server_name: Option<Box<str>>,
}

impl ConnInfo {
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        let client_ip =
            HeaderValue::from_str(&remote.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
        Self { local, remote, tls: false, client_ip, server_name: None }
    }
}

/// Headers that describe one hop and are never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const MIRROR_CHANNEL_CHUNKS: usize = 16;

pub async fn handle(shared: Arc<Shared>, conn: ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let table = shared.table.load();
    let Some(gateway) = table.sockets.get(&conn.local).cloned() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "listener is being removed");
    };
    drop(table);
    let (response, route_index) = serve(&shared, &gateway, &conn, req).await;
    let code = response.status().as_u16();
    let route =
        route_index.map(|i| gateway.route_labels[i].clone()).unwrap_or_else(|| shared.no_route_label.clone());
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels { gateway: gateway.id_label.clone(), route: route.clone(), code })
        .inc();
    shared
        .metrics
        .latency
        .get_or_create(&RouteLabels { gateway: gateway.id_label.clone(), route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    if shared.settings.access_log {
        access_log(&gateway.id, &route, &conn, code, started.elapsed());
    }
    response
}

fn access_log(gateway: &str, route: &str, conn: &ConnInfo, code: u16, elapsed: Duration) {
    let line = serde_json::json!({
        "gateway": gateway,
        "route": route,
        "client": conn.remote.to_string(),
        "status": code,
        "duration_ms": elapsed.as_secs_f64() * 1000.0,
    });
    println!("{line}");
}

/// Serves one request; returns the response and the index of the route entry that matched.
async fn serve(
    shared: &Shared,
    gateway: &Arc<CompiledGateway>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> (Response<Body>, Option<usize>) {
    let Some(socket) = gateway.sockets.get(&conn.local) else {
        return (plain(StatusCode::NOT_FOUND, "no route"), None);
    };
    if let Err(rejection) = request_check::check(&req) {
        return (plain(rejection.status, rejection.message), None);
    }
    // Before anything reads the headers: hop-by-hop headers go (so `Connection: <name>` cannot
    // later delete a header the gateway adds), and so does any identity the client claims.
    strip_hop_by_hop(req.headers_mut());
    for name in &gateway.identity_headers {
        req.headers_mut().remove(name);
    }
    request_check::normalize_authority(&mut req);
    // Route on the normalized path and forward that same path, so `/public/../admin` can never
    // reach `/admin` past the policy guarding it.
    if let Cow::Owned(path) = request_check::normalize_path(req.uri().path()) {
        match with_path(req.uri(), &path) {
            Some(uri) => *req.uri_mut() = uri,
            None => return (plain(StatusCode::BAD_REQUEST, "invalid request path"), None),
        }
    }
    let host = raw_authority(req.uri(), req.headers()).unwrap_or("");
    // A request for another listener than the one its TLS server name chose (and whose
    // certificate the client checked) is refused, so that clients reusing a connection for
    // another host retry on a new one (RFC 9110 §15.5.20).
    if let Some(server_name) = &conn.server_name {
        let chosen = socket.router.listener_of(server_name);
        if chosen.is_some() && socket.router.listener_of(host) != chosen {
            return (
                plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    "this connection's TLS server name is for another listener",
                ),
                None,
            );
        }
    }
    let index = {
        let view = RequestView {
            host,
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
        };
        socket.router.lookup(&view)
    };
    let Some(index) = index else {
        return (plain(StatusCode::NOT_FOUND, "no route matches this request"), None);
    };
    let route = &gateway.ir.routes[index];
    let route_id = index;

    let origin = req.headers().get(header::ORIGIN).cloned();
    let cors = route.filters.cors.as_ref();
    if let (Some(cors), Some(origin)) = (cors, &origin) {
        if is_preflight(&req) {
            return (preflight(cors, origin, req.headers()), Some(route_id));
        }
    }

    let (mut parts, incoming) = req.into_parts();
    let mut policy_headers = HeaderMap::new();
    if let Some(policy) = &route.policy {
        match gateway.policies.check(&shared.state, policy, &mut parts, jiff::Timestamp::now()) {
            Decision::Allow { response_headers } => policy_headers = response_headers,
            Decision::Deny { status, headers, body } => {
                shared
                    .metrics
                    .policy_rejections
                    .get_or_create(&PolicyLabels {
                        gateway: gateway.id.clone(),
                        policy: policy.clone(),
                        code: status.as_u16(),
                    })
                    .inc();
                let mut response = Response::new(body::full(body));
                *response.status_mut() = status;
                response.headers_mut().extend(headers);
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                // Browsers can read the refusal only with the CORS headers.
                if let (Some(cors), Some(origin)) = (cors, &origin) {
                    add_cors_headers(cors, origin, response.headers_mut());
                }
                return (response, Some(route_id));
            }
        }
    }

    let mut response = match &route.action {
        ActionIr::Respond { status } => {
            plain(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "")
        }
        ActionIr::Redirect(redirect) => redirect_response(redirect, &parts, conn),
        ActionIr::Forward { backends } => {
            forward(shared, gateway, index, route, backends, conn, parts, incoming).await
        }
    };
    if let (Some(cors), Some(origin)) = (cors, &origin) {
        add_cors_headers(cors, origin, response.headers_mut());
    }
    response.headers_mut().extend(policy_headers);
    (response, Some(route_id))
}

/// The request's authority as sent (`:authority` or Host), port and case included.
fn raw_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority().map(|a| a.as_str()).or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// `uri` with its path replaced, keeping the query.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let mut response =
        Response::new(if message.is_empty() { body::empty() } else { body::full(format!("{message}\n")) });
    *response.status_mut() = status;
    if !message.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    response
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: &Shared,
    gateway: &Arc<CompiledGateway>,
    index: usize,
    route: &RouteIr,
    backends: &[BackendIr],
    conn: &ConnInfo,
    mut parts: http::request::Parts,
    incoming: Incoming,
) -> Response<Body> {
    let Some(chosen) = pick_backend(backends) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no backend");
    };
    let backend = &backends[chosen];
    let upstream_error = |kind: &str| {
        shared
            .metrics
            .upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                gateway: gateway.id.clone(),
                backend: backend.name.clone(),
                kind: kind.to_string(),
            })
            .inc();
    };
    // A backend URL may carry a path prefix (`http://host:8080/api`): requests go below it.
    let mut url_prefix: Option<String> = None;
    let authority = match &backend.target {
        BackendTarget::Invalid { .. } => {
            upstream_error("invalid_backend");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "backend is invalid");
        }
        BackendTarget::Endpoints { endpoints } if endpoints.is_empty() => {
            upstream_error("no_endpoints");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoints");
        }
        BackendTarget::Endpoints { .. } => match gateway.next_endpoint(index, chosen) {
            Some(address) => address.clone(),
            None => return plain(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoints"),
        },
        BackendTarget::Url { url } => match url_upstream(url) {
            Some((address, prefix)) => {
                url_prefix = prefix;
                Arc::from(address)
            }
            None => {
                upstream_error("protocol");
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "only http:// backend URLs are supported by the local proxy",
                );
            }
        },
    };

    // Request transformations, in the order the spec lists them.
    let client_authority =
        raw_authority(&parts.uri, &parts.headers).and_then(|a| HeaderValue::from_str(a).ok());
    add_forwarded(&mut parts.headers, conn, client_authority.as_ref());
    apply_header_modifier(&route.filters.request_headers, &mut parts.headers);
    apply_header_modifier(&backend.request_headers, &mut parts.headers);
    let original_host = parts.headers.get(header::HOST).cloned();
    let mut rewritten: Option<String> = None;
    if let Some(rewrite) = &route.filters.url_rewrite {
        if let Some(hostname) = &rewrite.hostname {
            if let Ok(value) = HeaderValue::from_str(hostname) {
                parts.headers.insert(header::HOST, value);
            }
        }
        if let Some(path) = &rewrite.path {
            rewritten = Some(rewrite_path(path, parts.uri.path(), parts.uri.query()));
        }
    }
    if !parts.headers.contains_key(header::HOST) {
        // HTTP/2 requests carry `:authority` instead; HTTP/1.1 upstreams need it as Host.
        if let Some(h) = original_host.or(client_authority) {
            parts.headers.insert(header::HOST, h);
        }
    }
    if let Some(prefix) = url_prefix {
        let current = rewritten.as_deref().or(parts.uri.path_and_query().map(|p| p.as_str())).unwrap_or("/");
        rewritten = Some(format!("{prefix}{current}"));
    }
    // Origin-form, as HTTP/1.1 sends it to an origin server; the Host header names the site.
    let path_and_query = match rewritten {
        Some(text) => match text.parse::<PathAndQuery>() {
            Ok(pq) => pq,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "rewritten path cannot be forwarded"),
        },
        None => parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    parts.uri = Uri::from(path_and_query.clone());
    parts.version = http::Version::HTTP_11;

    let taps = start_mirrors(shared, gateway, &route.filters.mirrors, &parts, &path_and_query);
    let body = TeeBody::new(incoming, taps, shared.settings.request_body_idle_timeout);
    let upstream_request = Request::from_parts(parts, body.boxed());

    let timeout = [route.timeouts.request_ms, route.timeouts.backend_request_ms]
        .into_iter()
        .flatten()
        .min()
        .map(Duration::from_millis)
        .or(shared.settings.default_request_timeout);
    let call = shared.client.send(&authority, upstream_request);
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => {
                upstream_error("timeout");
                return plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out");
            }
        },
        None => call.await,
    };
    let upstream = match result {
        Ok(response) => response,
        Err(UpstreamError::Saturated(_)) => {
            upstream_error("saturated");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream busy: every connection it may have is in use",
            );
        }
        Err(e) if body_idle(&e) => {
            upstream_error("request_body_idle");
            return plain(StatusCode::REQUEST_TIMEOUT, "request body stalled");
        }
        Err(e) => {
            upstream_error(if e.is_connect() { "connect" } else { "protocol" });
            tracing::debug!(gateway = %gateway.id, backend = %backend.name, error = %e, "upstream request failed");
            return plain(StatusCode::BAD_GATEWAY, "upstream unavailable");
        }
    };
    let (mut head, body) = upstream.into_parts();
    strip_hop_by_hop(&mut head.headers);
    apply_header_modifier(&backend.response_headers, &mut head.headers);
    apply_header_modifier(&route.filters.response_headers, &mut head.headers);
    Response::from_parts(head, body)
}

/// Whether an upstream request failed because the client stopped sending its body.
fn body_idle(error: &UpstreamError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<crate::body::BodyIdle>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Chooses a backend at random in proportion to the weights; `None` when all weights are 0.
fn pick_backend(backends: &[BackendIr]) -> Option<usize> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    if backends.len() == 1 {
        return Some(0);
    }
    let mut point = rand::rng().random_range(0..total);
    for (i, backend) in backends.iter().enumerate() {
        let weight = u64::from(backend.weight);
        if point < weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).map(str::to_string) {
        for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The forwarding headers, as an edge proxy sets them: what the client sent is replaced, never
/// extended, so a backend can trust them (the client's address as the gateway saw it, the
/// scheme it used, the authority it was routed by). `Forwarded` from the client is removed.
fn add_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, authority: Option<&HeaderValue>) {
    headers.remove(header::FORWARDED);
    headers.insert("x-forwarded-for", conn.client_ip.clone());
    headers.insert("x-forwarded-proto", HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    match authority {
        Some(authority) => headers.insert("x-forwarded-host", authority.clone()),
        None => headers.remove("x-forwarded-host"),
    };
}

/// Applies set, add and remove (in that order, as Gateway API describes them).
pub fn apply_header_modifier(modifier: &HeaderModifier, headers: &mut HeaderMap) {
    for h in &modifier.set {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value))
        {
            headers.insert(name, value);
        }
    }
    for h in &modifier.add {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value))
        {
            headers.append(name, value);
        }
    }
    for name in &modifier.remove {
        headers.remove(name.as_str());
    }
}

/// The new path (and the original query) after a path modifier.
pub fn rewrite_path(modifier: &PathModifier, path: &str, query: Option<&str>) -> String {
    let new_path = match modifier {
        PathModifier::Full { path } => path.clone(),
        PathModifier::Prefix { matched, replacement } => replace_prefix(path, matched, replacement),
    };
    match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    }
}

/// Replaces the matched prefix (segment-aware) by `replacement`, avoiding doubled or lost `/`.
fn replace_prefix(path: &str, matched: &str, replacement: &str) -> String {
    let rest = if matched == "/" { path } else { path.strip_prefix(matched).unwrap_or(path) };
    let rest = rest.trim_start_matches('/');
    let base = replacement.trim_end_matches('/');
    if rest.is_empty() {
        if base.is_empty() {
            "/".to_string()
        } else {
            base.to_string()
        }
    } else {
        format!("{base}/{rest}")
    }
}

fn redirect_response(redirect: &RedirectIr, parts: &http::request::Parts, conn: &ConnInfo) -> Response<Body> {
    let host = strip_port(raw_authority(&parts.uri, &parts.headers).unwrap_or("")).to_ascii_lowercase();
    let request_scheme = if conn.tls { "https" } else { "http" };
    let scheme = redirect.scheme.as_deref().unwrap_or(request_scheme);
    let hostname = redirect.hostname.as_deref().unwrap_or(&host);
    let port = match (redirect.port, &redirect.scheme) {
        (Some(port), _) => Some(port),
        (None, Some(_)) => None,
        (None, None) => Some(conn.local.port()),
    };
    let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
    let path_and_query = match &redirect.path {
        Some(modifier) => rewrite_path(modifier, parts.uri.path(), parts.uri.query()),
        None => parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
    };
    let location = match port {
        Some(port) => format!("{scheme}://{hostname}:{port}{path_and_query}"),
        None => format!("{scheme}://{hostname}{path_and_query}"),
    };
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Starts the mirror requests for this request and returns the taps feeding their bodies.
fn start_mirrors(
    shared: &Shared,
    gateway: &Arc<CompiledGateway>,
    mirrors: &[MirrorIr],
    parts: &http::request::Parts,
    path_and_query: &PathAndQuery,
) -> Vec<mpsc::Sender<Bytes>> {
    let mut taps = Vec::new();
    for mirror in mirrors {
        if mirror.numerator < mirror.denominator
            && rand::rng().random_range(0..mirror.denominator) >= mirror.numerator
        {
            continue;
        }
        let BackendTarget::Endpoints { endpoints } = &mirror.backend.target else { continue };
        let Some(endpoint) = endpoints.get(rand::rng().random_range(0..endpoints.len().max(1))) else {
            continue;
        };
        let labels = |kind: &str| UpstreamErrorLabels {
            gateway: gateway.id.clone(),
            backend: mirror.backend.name.clone(),
            kind: kind.to_string(),
        };
        // Mirrors are best effort: past the cap, a request is not mirrored (and that is counted).
        let Ok(slot) = shared.mirror_slots.clone().try_acquire_owned() else {
            shared.metrics.upstream_errors.get_or_create(&labels("mirror_dropped")).inc();
            continue;
        };
        let address: Arc<str> = Arc::from(socket_address(&endpoint.address, endpoint.port));
        let uri = Uri::from(path_and_query.clone());
        let (tx, rx) = mpsc::channel(MIRROR_CHANNEL_CHUNKS);
        let mut request = Request::new(ChannelBody::new(rx).boxed());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = parts.headers.clone();
        let client = shared.client.clone();
        let metrics = shared.metrics.clone();
        let failed = labels("mirror");
        tokio::spawn(async move {
            let _slot = slot;
            // The answer is read to the end (so the connection returns to the pool), all
            // within the mirror's time.
            let exchange = async {
                let response = client.send(&address, request).await.map_err(drop)?;
                response.into_body().collect().await.map(drop).map_err(drop)
            };
            if !matches!(tokio::time::timeout(Duration::from_secs(30), exchange).await, Ok(Ok(()))) {
                metrics.upstream_errors.get_or_create(&failed).inc();
            }
        });
        taps.push(tx);
    }
    taps
}

fn is_preflight(req: &Request<Incoming>) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Whether `origin` is allowed: `*`, an exact origin, or a wildcard host (`https://*.a.com`).
fn origin_allowed(cors: &CorsIr, origin: &str) -> bool {
    cors.allow_origins.iter().any(|allowed| {
        if allowed == "*" || allowed.eq_ignore_ascii_case(origin) {
            return true;
        }
        match allowed.split_once("://*") {
            Some((scheme, suffix)) => origin.split_once("://").is_some_and(|(s, host)| {
                s.eq_ignore_ascii_case(scheme) && host.len() > suffix.len() && host.ends_with(suffix)
            }),
            None => false,
        }
    })
}

fn allow_origin_value(cors: &CorsIr, origin: &HeaderValue) -> HeaderValue {
    if cors.allow_origins.iter().any(|o| o == "*") && !cors.allow_credentials {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

/// The answer to a CORS preflight: the headers of an actual response (so clients that read
/// `access-control-expose-headers` from the preflight see it too) plus what may be sent.
fn preflight(cors: &CorsIr, origin: &HeaderValue, request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::OK;
    if !add_cors_headers(cors, origin, response.headers_mut()) {
        return response;
    }
    let headers = response.headers_mut();
    let allowed = |list: &[String], asked: header::HeaderName| -> Option<HeaderValue> {
        if list.is_empty() {
            return None;
        }
        // Browsers read `*` literally on credentialed requests: name what was asked for.
        if cors.allow_credentials && list.iter().any(|m| m == "*") {
            return request.get(asked).cloned();
        }
        HeaderValue::from_str(&list.join(", ")).ok()
    };
    if let Some(methods) = allowed(&cors.allow_methods, header::ACCESS_CONTROL_REQUEST_METHOD) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    if let Some(names) = allowed(&cors.allow_headers, header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, names);
    }
    if cors.allow_credentials && cors.allow_methods.iter().chain(&cors.allow_headers).any(|v| v == "*") {
        // The answer now depends on what was asked: caches must keep them apart.
        headers.append(
            header::VARY,
            HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cors.max_age_seconds));
    response
}

/// Adds the CORS headers of a response to an allowed `origin`; false when it is not allowed.
fn add_cors_headers(cors: &CorsIr, origin: &HeaderValue, headers: &mut HeaderMap) -> bool {
    if !origin.to_str().is_ok_and(|o| origin_allowed(cors, o)) {
        return false;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin_value(cors, origin));
    if cors.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    if !cors.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cors.expose_headers.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_keeps_single_slashes() {
        assert_eq!(replace_prefix("/api/v1/users", "/api", "/"), "/v1/users");
        assert_eq!(replace_prefix("/api", "/api", "/"), "/");
        assert_eq!(replace_prefix("/api/", "/api", "/new"), "/new");
        assert_eq!(replace_prefix("/api/x", "/api", "/new/"), "/new/x");
        assert_eq!(replace_prefix("/x/y", "/", "/pre"), "/pre/x/y");
    }

    #[test]
    fn origins_match_exact_wildcard_and_star() {
        let cors = CorsIr {
            allow_origins: vec!["https://a.com".into(), "https://*.b.com".into()],
            ..Default::default()
        };
        assert!(origin_allowed(&cors, "https://a.com"));
        assert!(origin_allowed(&cors, "https://x.b.com"));
        assert!(!origin_allowed(&cors, "https://b.com"));
        assert!(!origin_allowed(&cors, "http://x.b.com"));
        let star = CorsIr { allow_origins: vec!["*".into()], ..Default::default() };
        assert!(origin_allowed(&star, "https://anything.example"));
    }

    #[test]
    fn weights_zero_pick_nothing() {
        let backend = |weight| BackendIr {
            name: "b".into(),
            weight,
            target: BackendTarget::Url { url: "http://x".into() },
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
        };
        assert_eq!(pick_backend(&[backend(0), backend(0)]), None);
        assert_eq!(pick_backend(&[backend(0), backend(3)]), Some(1));
    }
}
