//! Request redirects: the response of a `RequestRedirect` filter.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tollbridge_provider::RedirectIr;

use crate::body::{self, Body};
use crate::hostmatch::strip_port;

use super::path::rewrite_path;
use super::{raw_authority, ConnInfo};

/// The redirect answer: `Location` built from the request and the filter's scheme, host, port
/// and path.
pub(super) fn redirect_response(
    redirect: &RedirectIr,
    parts: &http::request::Parts,
    conn: &ConnInfo,
) -> Response<Body> {
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
