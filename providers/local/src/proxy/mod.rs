//! The request handler: route lookup, policies and the route's action; the filters and the
//! forwarding it applies live in the submodules.

mod cors;
mod forward;
mod grpc;
mod headers;
mod mirror;
mod path;
mod redirect;
mod retry;
pub(crate) mod upgrade;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use tokio::time::Sleep;
use tollbridge_provider::ActionIr;

use crate::body::{self, Body};
use crate::http1::GatewayHeaders;
use crate::metrics::PolicyLabels;
use crate::policy::{Decision, LimitHeaders};
use crate::request_check;
use crate::router::RequestView;
use crate::runtime::CompiledGateway;
use crate::server::Shared;

use self::cors::{add_cors_headers, is_preflight, preflight};
use self::forward::forward;
use self::headers::{remove_all, strip_hop_by_hop};
use self::path::with_path;
use self::redirect::redirect_response;
pub(crate) use self::retry::RetryBudget;

/// What a connection knows about itself.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) tls: bool,
    /// The client's IP as a header value, for `x-forwarded-for` (built once per connection).
    pub(crate) client_ip: HeaderValue,
    /// The listener's port as a header value, for `x-forwarded-port` (built once per connection).
    pub(crate) local_port: HeaderValue,
    /// The TLS server name (SNI) the client asked for.
    pub(crate) server_name: Option<Box<str>>,
}

impl ConnInfo {
    pub(crate) fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        let client_ip =
            HeaderValue::from_str(&remote.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
        let local_port = HeaderValue::from(local.port());
        Self { local, remote, tls: false, client_ip, local_port, server_name: None }
    }
}

/// A connection's own timer for the upstream timeouts of its requests, one after another: each
/// request moves it later instead of arming a timer of its own (moving a timer later costs an
/// atomic store, arming one takes the timer wheel's lock, twice per request).
pub(crate) type RequestTimer<'a> = Option<Pin<&'a mut Sleep>>;

/// A request's answer: the response, and the rate-limit headers that go on it, kept as the
/// numbers counted until its head is written (they replace any of the response's own).
pub(crate) struct Answer {
    pub(crate) response: Response<Body>,
    pub(crate) limits: LimitHeaders,
}

impl Answer {
    /// The response with the rate-limit headers set in its header map (HTTP/2: hyper writes
    /// the head).
    pub(crate) fn into_response(self) -> Response<Body> {
        let Self { mut response, limits } = self;
        limits.set_on(response.headers_mut());
        response
    }

    /// An answer that carries no rate-limit headers: one given before any policy counted the
    /// request, or a refusal (whose headers are in its map already).
    fn without_limits(response: Response<Body>) -> Self {
        Self { response, limits: LimitHeaders::new() }
    }
}

/// Serves one request on a connection and records its metrics (and access log line).
pub(crate) async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Body>,
    timer: RequestTimer<'_>,
) -> Answer {
    let started = Instant::now();
    let table = shared.table.load();
    let Some(gateway) = table.sockets.get(&conn.local).cloned() else {
        return Answer::without_limits(plain(StatusCode::SERVICE_UNAVAILABLE, "listener is being removed"));
    };
    drop(table);
    let grpc = grpc::is_grpc(req.headers());
    let (Answer { mut response, limits }, route_index) = serve(shared, &gateway, conn, req, timer).await;
    // Metrics and the access log keep the HTTP status a gRPC client hears as `grpc-status`.
    let code = response.status().as_u16();
    if grpc {
        if let Some(answer) = response.extensions_mut().remove::<grpc::GatewayAnswer>() {
            response = grpc::as_grpc(response, &answer.0);
        }
    }
    let metrics = route_index.map_or(&gateway.unrouted_metrics, |i| &gateway.route_metrics[i]);
    let elapsed = started.elapsed();
    metrics.record(&shared.metrics, code, elapsed.as_secs_f64());
    if shared.settings.access_log {
        access_log(&gateway.id, metrics.route(), conn, code, elapsed);
    }
    Answer { response, limits }
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
    mut req: Request<Body>,
    timer: RequestTimer<'_>,
) -> (Answer, Option<usize>) {
    let Some(socket) = gateway.sockets.get(&conn.local) else {
        return (Answer::without_limits(plain(StatusCode::NOT_FOUND, "no route")), None);
    };
    if let Err(rejection) = request_check::check(&req) {
        return (Answer::without_limits(plain(rejection.status, rejection.message)), None);
    }
    // Read before the hop-by-hop headers that ask for it go.
    if let Some(upgrade) = upgrade::asks_for_websocket(&req) {
        if upgrade.over_http2() {
            // Routed, checked and sent on as the GET it stands for.
            *req.method_mut() = Method::GET;
        }
        req.extensions_mut().insert(upgrade);
    } else if req.method() == Method::CONNECT {
        // An extended CONNECT for another protocol: nothing here tunnels it.
        return (
            Answer::without_limits(plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported")),
            None,
        );
    }
    // Before anything reads the headers: hop-by-hop headers go (so `Connection: <name>` cannot
    // later delete a header the gateway adds), and so does any identity the client claims.
    strip_hop_by_hop(req.headers_mut());
    remove_all(req.headers_mut(), &gateway.identity_headers);
    request_check::normalize_authority(&mut req);
    // Route on the normalized path and forward that same path, so `/public/../admin` can never
    // reach `/admin` past the policy guarding it.
    if let Cow::Owned(path) = request_check::normalize_path(req.uri().path()) {
        match with_path(req.uri(), &path) {
            Some(uri) => *req.uri_mut() = uri,
            None => {
                return (Answer::without_limits(plain(StatusCode::BAD_REQUEST, "invalid request path")), None)
            }
        }
    }
    let host = raw_authority(req.uri(), req.headers()).unwrap_or("");
    // A request for another listener than the one its TLS server name chose (and whose
    // certificate the client checked) is refused, so that clients reusing a connection for
    // another host retry on a new one (RFC 9110 §15.5.20).
    if let Some(server_name) = &conn.server_name {
        let chosen = socket.router.listener_of(server_name);
        if chosen.is_some() && socket.router.listener_of(host) != chosen {
            let misdirected = plain(
                StatusCode::MISDIRECTED_REQUEST,
                "this connection's TLS server name is for another listener",
            );
            return (Answer::without_limits(misdirected), None);
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
        return (Answer::without_limits(plain(StatusCode::NOT_FOUND, "no route matches this request")), None);
    };
    let route = &gateway.ir.routes[index];
    let route_id = index;

    let origin = req.headers().get(header::ORIGIN).cloned();
    let cors = route.filters.cors.as_ref();
    if let (Some(cors), Some(origin)) = (cors, &origin) {
        if is_preflight(&req) {
            return (Answer::without_limits(preflight(cors, origin, req.headers())), Some(route_id));
        }
    }

    let (mut parts, incoming) = req.into_parts();
    let mut policy_headers = LimitHeaders::new();
    if let Some(policy) = &route.policy {
        let now = jiff::Timestamp::now();
        let decision = match &shared.counter_store {
            // Boxed: the store's round trip is a large state, kept out of every other request's.
            Some(store) => {
                Box::pin(gateway.policies.check_shared(store, &shared.state, policy, &mut parts, now)).await
            }
            None => gateway.policies.check(&shared.state, policy, &mut parts, now),
        };
        match decision {
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
                // A gRPC client is told in `grpc-message` what the JSON body says.
                let grpc_message = grpc::is_grpc(&parts.headers).then(|| {
                    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    grpc::GatewayAnswer(body["message"].as_str().unwrap_or_default().into())
                });
                let mut response = Response::new(body::full(body));
                *response.status_mut() = status;
                if let Some(answer) = grpc_message {
                    response.extensions_mut().insert(answer);
                }
                response.headers_mut().extend(headers);
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                // Browsers can read the refusal only with the CORS headers.
                if let (Some(cors), Some(origin)) = (cors, &origin) {
                    add_cors_headers(cors, origin, response.headers_mut());
                }
                return (Answer::without_limits(response), Some(route_id));
            }
        }
    }

    let mut response = match &route.action {
        ActionIr::Respond { status } => {
            plain(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "")
        }
        ActionIr::Redirect(redirect) => redirect_response(redirect, &parts, conn),
        ActionIr::Forward { backends } => {
            forward(shared, gateway, index, route, backends, conn, parts, incoming, timer).await
        }
    };
    if let (Some(cors), Some(origin)) = (cors, &origin) {
        add_cors_headers(cors, origin, response.headers_mut());
    }
    // The gateway's limits replace whatever the backend said of its own.
    (Answer { response, limits: policy_headers }, Some(route_id))
}

/// The request's authority as sent (`:authority` or Host), port and case included.
fn raw_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority().map(|a| a.as_str()).or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// A response with `status` and `message` as its plain-text body (no body when empty).
pub(crate) fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let mut response =
        Response::new(if message.is_empty() { body::empty() } else { body::full(format!("{message}\n")) });
    *response.status_mut() = status;
    response.extensions_mut().insert(grpc::GatewayAnswer(message.into()));
    if !message.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    response
}
