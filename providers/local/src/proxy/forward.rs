//! Forwarding to a backend: backend choice, request transformations, timeouts and the
//! answers to upstream errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use rand::Rng;
use tollbridge_provider::{BackendIr, BackendTarget, RouteIr};

use crate::body::{Body, TeeBody};
use crate::http1::GatewayHeaders;
use crate::metrics::UpstreamErrorLabels;
use crate::runtime::CompiledGateway;
use crate::server::Shared;
use crate::upstream::UpstreamError;

use super::grpc;
use super::headers::{apply_header_modifier, remove_claimed_origin, Forwarding};
use super::mirror::start_mirrors;
use super::path::rewrite_path;
use super::retry::{self, Unanswered};
use super::upgrade::{self, WebSocketUpgrade};
use super::{plain, ConnInfo, RequestTimer};

/// Forwards the request to one of `backends` and returns the upstream answer (or the error
/// response when there is none).
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    shared: &Shared,
    gateway: &Arc<CompiledGateway>,
    index: usize,
    route: &RouteIr,
    backends: &[BackendIr],
    conn: &ConnInfo,
    mut parts: http::request::Parts,
    incoming: Body,
    timer: RequestTimer<'_>,
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
    let plan = gateway.backend_plan(index, chosen);
    let tls = match &plan.tls {
        Ok(tls) => tls.as_ref(),
        Err(why) => {
            upstream_error("tls_settings");
            tracing::debug!(gateway = %gateway.id, backend = %backend.name, error = %why, "backend TLS settings unusable");
            return plain(StatusCode::BAD_GATEWAY, "the backend's TLS settings cannot be used");
        }
    };
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
        BackendTarget::Url { .. } => match plan.keys.first() {
            Some(key) => key.clone(),
            None => {
                upstream_error("protocol");
                return plain(
                    StatusCode::BAD_GATEWAY,
                    "only http:// and https:// backend URLs are supported by the local proxy",
                );
            }
        },
    };
    // A backend URL may carry a path prefix (`http://host:8080/api`): requests go below it.
    let url_prefix = plan.url_prefix.as_deref();

    // Request transformations, in the order the spec lists them.
    // The authority the client sent (see `raw_authority`); a Host header is shared, not copied.
    let client_authority = match parts.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => parts.headers.get(header::HOST).filter(|host| host.to_str().is_ok()).cloned(),
    };
    remove_claimed_origin(&mut parts.headers);
    let forwarding = Forwarding { conn, authority: client_authority.clone() };
    // The forwarding headers go straight into the upstream's head, unless a filter, a mirror or
    // a retry reads the request's headers first: then they are set in the map here.
    let headers_read_here = !route.filters.request_headers.is_empty()
        || !backend.request_headers.is_empty()
        || !route.filters.mirrors.is_empty()
        || route.retry.is_some();
    if headers_read_here {
        forwarding.set_on(&mut parts.headers);
    }
    let own: &dyn GatewayHeaders = if headers_read_here { &() } else { &forwarding };
    apply_header_modifier(&route.filters.request_headers, &mut parts.headers);
    apply_header_modifier(&backend.request_headers, &mut parts.headers);
    let mut has_host = parts.headers.contains_key(header::HOST);
    let mut rewritten: Option<String> = None;
    if let Some(rewrite) = &route.filters.url_rewrite {
        if let Some(hostname) = &rewrite.hostname {
            if let Ok(value) = HeaderValue::from_str(hostname) {
                parts.headers.insert(header::HOST, value);
                has_host = true;
            }
        }
        if let Some(path) = &rewrite.path {
            rewritten = Some(rewrite_path(path, parts.uri.path(), parts.uri.query()));
        }
    }
    if !has_host {
        // HTTP/2 requests carry `:authority` instead; HTTP/1.1 upstreams need it as Host.
        if let Some(authority) = client_authority {
            parts.headers.insert(header::HOST, authority);
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

    let taps = start_mirrors(shared, gateway, index, &route.filters.mirrors, &parts, &path_and_query);
    // gRPC asks its server to accept trailers (hop-by-hop, so the client's own `te` is gone).
    if !backend.protocol.is_http1() && grpc::is_grpc(&parts.headers) {
        parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // Mirrors get the request, not the upgrade: only the backend answering it switches, and
    // only over HTTP/1.1 (an h2c backend gets the handshake as a plain GET).
    if let Some(asked) = parts.extensions.get::<WebSocketUpgrade>().filter(|_| backend.protocol.is_http1()) {
        upgrade::ask_upstream(&mut parts.headers, asked);
    }
    let body = TeeBody::new(incoming, taps, shared.settings.request_body_idle_timeout);
    // A WebSocket handshake is sent once: what it opens cannot be replayed.
    let retry = route.retry.as_ref().filter(|_| parts.extensions.get::<WebSocketUpgrade>().is_none());
    let result = match retry {
        // Boxed: the retrying call's state stays out of every other request's future.
        Some(retry) => {
            let target = retry::Target { shared, gateway, index, chosen, backend, tls, authority };
            Box::pin(retry::send(target, retry, &route.timeouts, parts, body)).await
        }
        None => {
            let timeout = [route.timeouts.request_ms, route.timeouts.backend_request_ms]
                .into_iter()
                .flatten()
                .min()
                .map(Duration::from_millis)
                .or(shared.settings.default_request_timeout);
            let request = Request::from_parts(parts, body.boxed());
            // Pinned here, once: the timing below holds only a reference to it.
            let call = shared.client.send_in(backend.protocol, &authority, tls, request, own);
            tokio::pin!(call);
            match timeout {
                Some(limit) => match within(limit, timer, call.as_mut()).await {
                    Some(result) => result.map_err(Unanswered::Failed),
                    None => Err(Unanswered::TimedOut),
                },
                None => call.await.map_err(Unanswered::Failed),
            }
        }
    };
    let upstream = match result {
        Ok(response) => response,
        Err(Unanswered::TimedOut) => {
            upstream_error("timeout");
            return plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out");
        }
        Err(Unanswered::Failed(UpstreamError::Saturated(_))) => {
            upstream_error("saturated");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream busy: every connection it may have is in use",
            );
        }
        Err(Unanswered::Failed(e)) if body_idle(&e) => {
            upstream_error("request_body_idle");
            return plain(StatusCode::REQUEST_TIMEOUT, "request body stalled");
        }
        Err(Unanswered::Failed(e)) => {
            upstream_error(match &e {
                UpstreamError::Tls(..) => "tls",
                e if e.is_connect() => "connect",
                _ => "protocol",
            });
            tracing::debug!(gateway = %gateway.id, backend = %backend.name, error = %e, "upstream request failed");
            return plain(StatusCode::BAD_GATEWAY, "upstream unavailable");
        }
    };
    // The upstream client passes on no hop-by-hop header (`http1::parse_response`).
    let (mut head, body) = upstream.into_parts();
    apply_header_modifier(&backend.response_headers, &mut head.headers);
    apply_header_modifier(&route.filters.response_headers, &mut head.headers);
    Response::from_parts(head, body)
}

/// What `call` returns, or `None` once `limit` has passed; timed on the connection's timer when
/// it has one.
async fn within<F: Future>(limit: Duration, timer: RequestTimer<'_>, call: Pin<&mut F>) -> Option<F::Output> {
    match timer {
        Some(mut timer) => {
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
            tokio::select! {
                biased;
                output = call => Some(output),
                () = timer => None,
            }
        }
        None => tokio::time::timeout(limit, call).await.ok(),
    }
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

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::time::Instant;

    use tollbridge_provider::HeaderModifier;

    use super::*;

    #[tokio::test]
    async fn a_connection_timer_times_each_request_whether_moved_later_or_earlier() {
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(30)));
        let never = std::future::pending::<()>;
        // Earlier than armed (re-armed), later (moved), then earlier again.
        for millis in [20, 300, 50] {
            let (limit, started) = (Duration::from_millis(millis), Instant::now());
            assert_eq!(within(limit, Some(timer.as_mut()), pin!(never())).await, None);
            let waited = started.elapsed();
            assert!(waited >= limit && waited < limit + Duration::from_secs(2), "{limit:?}: {waited:?}");
        }
        let quick = pin!(tokio::time::sleep(Duration::from_millis(5)));
        assert_eq!(within(Duration::from_secs(60), Some(timer.as_mut()), quick).await, Some(()));
        assert_eq!(within(Duration::from_millis(10), None, pin!(never())).await, None);
    }

    #[test]
    fn weights_zero_pick_nothing() {
        let backend = |weight| BackendIr {
            name: "b".into(),
            weight,
            target: BackendTarget::Url { url: "http://x".into() },
            protocol: Default::default(),
            tls: None,
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
        };
        assert_eq!(pick_backend(&[backend(0), backend(0)]), None);
        assert_eq!(pick_backend(&[backend(0), backend(3)]), Some(1));
    }
}
