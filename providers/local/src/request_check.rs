//! Request hygiene before routing: reject malformed request targets and normalize the path so
//! routes (and the policies guarding them) see the path the backend will act on.

use std::borrow::Cow;

use http::{header, Method, Request, StatusCode, Version};

use crate::percent;

/// Why a request is refused before routing.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: &'static str,
}

fn bad(message: &'static str) -> Rejection {
    Rejection { status: StatusCode::BAD_REQUEST, message }
}

/// Checks the parts of a request that HTTP/1.1 requires (RFC 9112 §3.2) and that routing needs,
/// and refuses requests that could be read one way here and another way by a backend.
pub fn check<B>(req: &Request<B>) -> Result<(), Rejection> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    if req.version() == Version::HTTP_11 && hosts == 0 && req.uri().authority().is_none() {
        return Err(bad("HTTP/1.1 request without Host"));
    }
    // An absolute-form target (HTTP/1.1) or `:authority` (HTTP/2) names the host the request is
    // routed and authorised for; a Host header naming another would reach the backend instead.
    if let (Some(authority), Some(host)) = (req.uri().authority(), req.headers().get(header::HOST)) {
        if !host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) {
            return Err(bad("the request target's authority and the Host header differ"));
        }
    }
    let path = req.uri().path();
    // One pass finds what the checks below look for; most paths have none of it.
    let (mut escapes, mut semicolons) = (false, false);
    for (i, byte) in path.bytes().enumerate() {
        match byte {
            // Some servers take `\` for `/`: `/public\..\admin` would pass routing as one segment.
            b'\\' => return Err(bad("backslash in the request path")),
            b'%' if percent::escape_at(path.as_bytes(), i) == Some(b'\\') => {
                return Err(bad("backslash in the request path"));
            }
            b'%' => escapes = true,
            b';' => semicolons = true,
            _ => {}
        }
    }
    // `..;x` and `.;x` are dot segments to servers that strip path parameters.
    if (semicolons || escapes) && path.split('/').any(|s| is_dot_segment_with_parameters(&percent::decode(s)))
    {
        return Err(bad("dot segment with parameters in the request path"));
    }
    if !req.uri().path().starts_with('/') {
        // Asterisk-form (`OPTIONS *`) and authority-form (`CONNECT host:port`) are not proxied.
        return Err(if req.method() == Method::CONNECT {
            Rejection { status: StatusCode::METHOD_NOT_ALLOWED, message: "CONNECT is not supported" }
        } else {
            bad("request target must be an absolute path")
        });
    }
    Ok(())
}

/// Drops a trailing dot from the request's host (`a.example.` is `a.example`), in the Host
/// header and the target's authority alike, so that routing, policies and the backend all see
/// the same name.
pub fn normalize_authority<B>(req: &mut Request<B>) {
    fn without_dot(authority: &str) -> Option<String> {
        let host = crate::hostmatch::strip_port(authority);
        let port = &authority[host.len()..];
        let host = host.strip_suffix('.').filter(|h| !h.is_empty())?;
        Some(format!("{host}{port}"))
    }
    if let Some(fixed) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).and_then(without_dot) {
        if let Ok(value) = http::HeaderValue::from_str(&fixed) {
            req.headers_mut().insert(header::HOST, value);
        }
    }
    if let Some(fixed) = req.uri().authority().and_then(|a| without_dot(a.as_str())) {
        let mut parts = req.uri().clone().into_parts();
        if let Ok(authority) = fixed.parse() {
            parts.authority = Some(authority);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
}

fn is_dot_segment_with_parameters(segment: &[u8]) -> bool {
    match segment.iter().position(|b| *b == b';') {
        Some(at) => matches!(&segment[..at], b"." | b".."),
        None => false,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes a request path: percent-encoded unreserved characters are decoded, `.` and `..`
/// segments removed (RFC 3986 §5.2.4), and repeated slashes merged. Encoded reserved characters
/// such as `%2F` stay encoded. Borrowed when nothing changes (the common case).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    // In one pass: an escape, a byte outside ASCII, `//`, or a segment starting with a dot (a
    // superset of `.` and `..`) sends the path through the work below.
    let mut after_slash = false;
    let needs_work = path.starts_with('.')
        || path.bytes().any(|byte| {
            let suspect = byte == b'%' || !byte.is_ascii() || (after_slash && matches!(byte, b'/' | b'.'));
            after_slash = byte == b'/';
            suspect
        });
    if !needs_work {
        return Cow::Borrowed(path);
    }
    // 1. Decode unreserved characters only; bytes outside ASCII are percent-encoded (as the
    //    UTF-8 they are, never re-read as Latin-1).
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(value) = percent::escape_at(bytes, i) {
            if is_unreserved(value) {
                decoded.push(value as char);
            } else {
                // Keep reserved and non-ASCII escapes as they are, upper-cased.
                decoded.push('%');
                decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
            continue;
        }
        if bytes[i].is_ascii() {
            decoded.push(bytes[i] as char);
        } else {
            decoded.push_str(&format!("%{:02X}", bytes[i]));
        }
        i += 1;
    }
    // 2. Remove dot segments and empty segments; keep a trailing slash.
    let trailing_slash =
        decoded.len() > 1 && (decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/.."));
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    // `/.well-known/x` is looked at above and left as it was.
    if out == path {
        return Cow::Borrowed(path);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(normalize_path("/a/b.c/d"), Cow::Borrowed("/a/b.c/d")));
        assert!(matches!(normalize_path("/.well-known/a.b"), Cow::Borrowed("/.well-known/a.b")));
        assert!(matches!(normalize_path("/"), Cow::Borrowed("/")));
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        assert_eq!(normalize_path("/public/../admin"), "/admin");
        assert_eq!(normalize_path("/a/./b/"), "/a/b/");
        assert_eq!(normalize_path("/../../x"), "/x");
        assert_eq!(normalize_path("//gold"), "/gold");
        assert_eq!(normalize_path("/a//b///c"), "/a/b/c");
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/.."), "/");
    }

    #[test]
    fn only_unreserved_escapes_are_decoded() {
        assert_eq!(normalize_path("/%67old"), "/gold");
        assert_eq!(normalize_path("/%2e%2e/admin"), "/admin");
        assert_eq!(normalize_path("/a%2Fb"), "/a%2Fb");
        assert_eq!(normalize_path("/a%2fb"), "/a%2Fb");
        assert_eq!(normalize_path("/caf%C3%A9"), "/caf%C3%A9");
        assert_eq!(normalize_path("/bad%zz"), "/bad%zz");
        assert_eq!(normalize_path("/end%4"), "/end%4");
    }

    #[test]
    fn non_ascii_bytes_stay_the_bytes_they_were() {
        assert_eq!(normalize_path("/café"), "/caf%C3%A9");
        assert_eq!(normalize_path("/ö/../x"), "/x");
        assert_eq!(normalize_path("/%C3%A9/é"), "/%C3%A9/%C3%A9");
    }

    #[test]
    fn backslashes_and_dot_segments_with_parameters_are_refused() {
        let req = |uri: &str| Request::builder().uri(uri).header("host", "a").body(()).unwrap();
        for uri in
            ["/public\\..\\admin", "/a%5Cb", "/a%5cb", "/public/..;/admin", "/x/.;a/y", "/p/%2e%2e;/admin"]
        {
            assert_eq!(check(&req(uri)).unwrap_err().status, StatusCode::BAD_REQUEST, "{uri}");
        }
        assert!(check(&req("/a;b/c")).is_ok());
        assert!(check(&req("/..a;/c")).is_ok());
    }

    #[test]
    fn the_target_authority_and_host_must_agree() {
        let absolute =
            |host: &str| Request::builder().uri("http://a.example/x").header("host", host).body(()).unwrap();
        assert!(check(&absolute("a.example")).is_ok());
        assert!(check(&absolute("A.Example")).is_ok());
        assert_eq!(check(&absolute("b.example")).unwrap_err().status, StatusCode::BAD_REQUEST);
        let only_authority = Request::builder().uri("http://a.example/x").body(()).unwrap();
        assert!(check(&only_authority).is_ok());
    }

    #[test]
    fn a_trailing_dot_in_the_host_is_dropped_everywhere() {
        let mut req = Request::builder()
            .uri("http://a.example.:8080/x")
            .header("host", "a.example.:8080")
            .body(())
            .unwrap();
        normalize_authority(&mut req);
        assert_eq!(req.headers()["host"], "a.example:8080");
        assert_eq!(req.uri().authority().unwrap().as_str(), "a.example:8080");
        let mut plain = Request::builder().uri("/x").header("host", "b.example.").body(()).unwrap();
        normalize_authority(&mut plain);
        assert_eq!(plain.headers()["host"], "b.example");
        let mut untouched = Request::builder().uri("/x").header("host", "c.example").body(()).unwrap();
        normalize_authority(&mut untouched);
        assert_eq!(untouched.headers()["host"], "c.example");
    }

    #[test]
    fn malformed_targets_are_rejected() {
        let ok = Request::builder().uri("/x").header("host", "a").body(()).unwrap();
        assert!(check(&ok).is_ok());
        let no_host = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(check(&no_host).unwrap_err().status, StatusCode::BAD_REQUEST);
        let http10 = Request::builder().uri("/x").version(Version::HTTP_10).body(()).unwrap();
        assert!(check(&http10).is_ok());
        let two_hosts =
            Request::builder().uri("/x").header("host", "a").header("host", "b").body(()).unwrap();
        assert!(check(&two_hosts).is_err());
        let star = Request::builder().method("OPTIONS").uri("*").header("host", "a").body(()).unwrap();
        assert!(check(&star).is_err());
    }
}
