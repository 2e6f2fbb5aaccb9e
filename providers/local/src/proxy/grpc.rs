//! gRPC clients read an error from `grpc-status`, not from the HTTP status. What the gateway
//! itself answers a gRPC request (no route, a policy's refusal, a backend it cannot reach) goes
//! as a trailers-only gRPC response: HTTP 200 with `grpc-status` and `grpc-message`, no body.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// On a response the gateway made itself (never on a backend's): why, for a gRPC client.
#[derive(Clone, Debug)]
pub(crate) struct GatewayAnswer(pub(crate) Box<str>);

/// Whether a request (or response) is gRPC: its content type is `application/grpc` or one of
/// its `+format` variants.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        value.len() >= 16
            && value[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(value.get(16), None | Some(b'+' | b';'))
    })
}

/// `response`, the gateway's own, as gRPC says it: the same headers (rate-limit headers,
/// `Retry-After`, `WWW-Authenticate`) with the status and message in `grpc-status` and
/// `grpc-message`.
pub(crate) fn as_grpc(response: Response<Body>, message: &str) -> Response<Body> {
    // 421 tells the client to retry on another connection, which gRPC clients understand too.
    if response.status() == StatusCode::MISDIRECTED_REQUEST {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let code = code_for(parts.status);
    let message =
        if message.is_empty() { parts.status.canonical_reason().unwrap_or_default() } else { message };
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts.headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&percent_encoded(message.trim_end())) {
        parts.headers.insert("grpc-message", value);
    }
    Response::from_parts(parts, body::empty())
}

/// The gRPC status code for what the gateway answered in HTTP: gRPC's own table
/// (doc/http-grpc-status-mapping.md), made exact where the gateway knows more: a refused quota
/// or rate is RESOURCE_EXHAUSTED, a timeout DEADLINE_EXCEEDED.
fn code_for(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,       // INTERNAL: the request itself could not be carried
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 12,       // UNIMPLEMENTED: no route for this service or method
        408 | 504 => 4,  // DEADLINE_EXCEEDED
        413 | 431 => 8,  // RESOURCE_EXHAUSTED: larger than the gateway takes
        429 => 8,        // RESOURCE_EXHAUSTED: a rate limit or quota
        500 => 13,       // INTERNAL: the route's backend is invalid
        502 | 503 => 14, // UNAVAILABLE
        _ => 2,          // UNKNOWN
    }
}

/// `grpc-message` percent-encodes what is not printable ASCII, and `%` (gRPC over HTTP/2).
fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn grpc_is_told_by_its_content_type() {
        for yes in
            ["application/grpc", "application/grpc+proto", "Application/GRPC+json", "application/grpc;x=1"]
        {
            assert!(is_grpc(&content_type(yes)), "{yes}");
        }
        for no in ["application/grpc-web", "application/json", "application/grp", "text/plain"] {
            assert!(!is_grpc(&content_type(no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_gateway_answer_becomes_a_trailers_only_grpc_response() {
        let mut response = Response::new(body::full("no route matches this request\n"));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("29"));
        let answer = as_grpc(response, "monthly quota of 100% used\n");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()["grpc-status"], "8");
        assert_eq!(answer.headers()["grpc-message"], "monthly quota of 100%25 used");
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(answer.headers()[header::RETRY_AFTER], "3");
        assert!(answer.headers().get(header::CONTENT_LENGTH).is_none());
        assert!(hyper::body::Body::is_end_stream(answer.body()));
    }

    #[test]
    fn gateway_statuses_map_to_grpc_codes() {
        for (http, grpc) in
            [(404, 12), (503, 14), (502, 14), (504, 4), (429, 8), (401, 16), (500, 13), (418, 2)]
        {
            assert_eq!(code_for(StatusCode::from_u16(http).unwrap()), grpc, "{http}");
        }
    }
}
