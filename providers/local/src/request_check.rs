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

/// Checks the parts of a request that HTTP/1.1 requires (RFC 9112 §3.2) and that routing needs.
pub fn check<B>(req: &Request<B>) -> Result<(), Rejection> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    if req.version() == Version::HTTP_11 && hosts == 0 && req.uri().authority().is_none() {
        return Err(bad("HTTP/1.1 request without Host"));
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

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes a request path: percent-encoded unreserved characters are decoded, `.` and `..`
/// segments removed (RFC 3986 §5.2.4), and repeated slashes merged. Encoded reserved characters
/// such as `%2F` stay encoded. Borrowed when nothing changes (the common case).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let needs_work = path.contains("//")
        || path.contains('%')
        || path.split('/').any(|segment| segment == "." || segment == "..");
    if !needs_work {
        return Cow::Borrowed(path);
    }
    // 1. Decode unreserved characters only.
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
        decoded.push(bytes[i] as char);
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
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(normalize_path("/a/b.c/d"), Cow::Borrowed("/a/b.c/d")));
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
