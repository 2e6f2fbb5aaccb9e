//! Response heads, written into one buffer with the framing the body needs.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::GatewayHeaders;

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body is sent (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a body of unknown length).
    Close,
}

/// The framing of a response to a request with `method`, from the response's own
/// `Content-Length` or its body's known size; `http10` clients cannot read chunked bodies.
pub(crate) fn body_framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    exact_size: Option<u64>,
    http10: bool,
) -> BodyFraming {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return BodyFraming::None;
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared.or(exact_size) {
        Some(length) => BodyFraming::Length(length),
        None if http10 => BodyFraming::Close,
        None => BodyFraming::Chunked,
    }
}

/// Writes the status line and headers, then `own`. `framing` adds `Content-Length` when the
/// headers lack it (or `Transfer-Encoding: chunked`); `close` says `Connection: close`,
/// `keep_alive_10` tells an HTTP/1.0 client the connection stays. A `Date` is added when the
/// response has none.
pub fn write_head(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    own: &impl GatewayHeaders,
    framing: BodyFraming,
    close: bool,
    keep_alive_10: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_length = false;
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            // A 1xx or 204 carries no length; anything else (HEAD, 304) keeps the one declared.
            if status.is_informational() || status == StatusCode::NO_CONTENT {
                continue;
            }
            has_length = true;
        } else if name == header::TRANSFER_ENCODING || name == header::CONNECTION || own.replaces(name) {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    own.write_lines(out);
    match framing {
        BodyFraming::Length(length) if !has_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of a `101 Switching Protocols` to WebSocket: the backend's headers (its
/// `Sec-WebSocket-*` answer) and the two that say what the connection becomes.
pub(crate) fn write_switch_to_websocket(out: &mut BytesMut, headers: &HeaderMap, own: &impl GatewayHeaders) {
    write_head(out, StatusCode::SWITCHING_PROTOCOLS, headers, own, BodyFraming::None, false, false);
    // The head ends with its blank line: the two go before it.
    out.truncate(out.len() - 2);
    out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
}

/// A refusal written before any request was read whole: a short text body, then close.
pub(crate) fn write_refusal(out: &mut BytesMut, status: StatusCode, message: &str) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    write_head(out, status, &headers, &(), BodyFraming::Length(message.len() as u64 + 1), true, false);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"\n");
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue};

    use super::*;

    fn head(
        status: u16,
        headers: &[(&'static str, &'static str)],
        framing: BodyFraming,
        close: bool,
    ) -> String {
        head_with(status, headers, &(), framing, close)
    }

    fn head_with(
        status: u16,
        headers: &[(&'static str, &'static str)],
        own: &impl GatewayHeaders,
        framing: BodyFraming,
        close: bool,
    ) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        let mut out = BytesMut::new();
        write_head(&mut out, StatusCode::from_u16(status).unwrap(), &map, own, framing, close, false);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// Stands for the rate-limit headers: `x-own: gateway` in place of the response's own.
    struct Own;

    impl GatewayHeaders for Own {
        fn replaces(&self, name: &HeaderName) -> bool {
            name == "x-own"
        }

        fn write_lines(&self, out: &mut BytesMut) {
            out.extend_from_slice(b"x-own: gateway\r\n");
        }

        fn set_on(&self, _: &mut HeaderMap) {}
    }

    #[test]
    fn the_gateways_own_headers_replace_the_responses() {
        let backend = [("x-own", "backend"), ("x-own", "again"), ("date", "then"), ("x-other", "1")];
        let text = head_with(200, &backend, &Own, BodyFraming::Length(0), false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: then\r\nx-other: 1\r\nx-own: gateway\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn heads_carry_their_framing_once() {
        let text = head(200, &[("content-type", "text/plain")], BodyFraming::Length(5), false);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ndate: ")
        );
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
        let declared = head(200, &[("content-length", "5")], BodyFraming::Length(5), true);
        assert_eq!(declared.matches("content-length").count(), 1, "{declared}");
        assert!(declared.ends_with("connection: close\r\n\r\n"));
        let chunked =
            head(404, &[("transfer-encoding", "gzip"), ("connection", "x")], BodyFraming::Chunked, false);
        assert!(chunked.starts_with("HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n"), "{chunked}");
        assert!(!chunked.contains("gzip") && !chunked.contains("connection"), "{chunked}");
        let dated = head(204, &[("date", "then"), ("content-length", "0")], BodyFraming::None, false);
        assert_eq!(dated, "HTTP/1.1 204 No Content\r\ndate: then\r\n\r\n");
    }

    #[test]
    fn framing_follows_the_method_the_status_and_the_client() {
        let none = HeaderMap::new();
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        let ok = StatusCode::OK;
        assert_eq!(body_framing(&Method::HEAD, ok, &declared, None, false), BodyFraming::None);
        assert_eq!(
            body_framing(&Method::GET, StatusCode::NO_CONTENT, &none, Some(0), false),
            BodyFraming::None
        );
        assert_eq!(body_framing(&Method::GET, ok, &declared, None, false), BodyFraming::Length(7));
        assert_eq!(body_framing(&Method::GET, ok, &none, Some(3), false), BodyFraming::Length(3));
        assert_eq!(body_framing(&Method::GET, ok, &none, None, false), BodyFraming::Chunked);
        assert_eq!(body_framing(&Method::GET, ok, &none, None, true), BodyFraming::Close);
    }
}
