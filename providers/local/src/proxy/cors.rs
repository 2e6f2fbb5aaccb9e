//! CORS: preflight answers and the CORS headers of responses to allowed origins.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tollbridge_provider::CorsIr;

use crate::body::{self, Body};

/// Whether `req` is a CORS preflight: `OPTIONS` with `Access-Control-Request-Method`.
pub(super) fn is_preflight<B>(req: &Request<B>) -> bool {
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

/// The `Access-Control-Allow-Origin` value: `*` when any origin may read without credentials.
fn allow_origin_value(cors: &CorsIr, origin: &HeaderValue) -> HeaderValue {
    if cors.allow_origins.iter().any(|o| o == "*") && !cors.allow_credentials {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

/// The answer to a CORS preflight: the headers of an actual response (so clients that read
/// `access-control-expose-headers` from the preflight see it too) plus what may be sent.
pub(super) fn preflight(cors: &CorsIr, origin: &HeaderValue, request: &HeaderMap) -> Response<Body> {
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
pub(super) fn add_cors_headers(cors: &CorsIr, origin: &HeaderValue, headers: &mut HeaderMap) -> bool {
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
}
