//! Request heads as a client sends them: parsed in place, refused when they could be read two
//! ways (RFC 9112 §6.3), and turned into `http` types that share the bytes read.

use std::mem::MaybeUninit;

#[cfg(test)]
use bytes::Bytes;
use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use smallvec::SmallVec;

use super::GatewayHeaders;

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head read whole.
#[derive(Debug)]
pub struct RequestHead {
    pub request: Request<()>,
    pub framing: Framing,
    /// The client may send another request on this connection afterwards.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

/// Why a request head is refused; the connection is answered with `status` and closed.
#[derive(Debug, PartialEq, Eq)]
pub struct HeadError {
    pub status: StatusCode,
    pub message: &'static str,
}

fn refused(status: StatusCode, message: &'static str) -> HeadError {
    HeadError { status, message }
}

fn bad(message: &'static str) -> HeadError {
    refused(StatusCode::BAD_REQUEST, message)
}

/// Limits on a request head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// Room for the parser's header slots; `HeadLimits::max_headers` is capped at this.
const HEADER_SLOTS: usize = 256;
/// The largest head read whatever `HeadLimits::max_bytes` says: offsets in a head are 32 bits.
const MAX_HEAD_BYTES: usize = u32::MAX as usize;

/// Where in the head one header's name and value are: (start, end) offsets, 32 bits each
/// (heads over `MAX_HEAD_BYTES` are refused).
#[derive(Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    fn name(self) -> std::ops::Range<usize> {
        self.name.0 as usize..self.name.1 as usize
    }

    fn value(self) -> std::ops::Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }
}

/// The spans of a head's headers: inline for the usual few, so that a head costs neither an
/// allocation nor the zeroing of room for the most it could have.
type Spans = SmallVec<[Span; 24]>;

/// Where `part`, a slice of the head read at `base`, starts and ends in it.
#[inline]
fn offset(part: &[u8], base: *const u8) -> (u32, u32) {
    let start = part.as_ptr() as usize - base as usize;
    (start as u32, (start + part.len()) as u32)
}

/// Records where each of `headers`, parsed from the head read at `base`, is (filled in place:
/// the spans are not moved once more on their way out).
#[inline]
fn record_spans(spans: &mut Spans, headers: &[httparse::Header<'_>], base: *const u8) {
    spans.extend(headers.iter().map(|header| Span {
        name: offset(header.name.as_bytes(), base),
        value: offset(header.value, base),
    }));
}

/// Room left in a request's header map for headers the proxy may add (forwarding headers where
/// a filter reads them, `Host` for an HTTP/2 client, a consumer header). A response's map gets
/// none: the rate-limit headers are written into its head, not added to it.
const ADDED_REQUEST_HEADERS: usize = 4;

/// Takes a whole request head off the front of `buf`. `Ok(None)`: more bytes are needed (and
/// `buf` is still under the size limit).
pub fn parse_request(buf: &mut BytesMut, limits: HeadLimits) -> Result<Option<RequestHead>, HeadError> {
    // Clients may send empty lines before a request (RFC 9112 §2.2).
    let blank = buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
    if blank > 0 {
        let _ = buf.split_to(blank);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.clamp(1, HEADER_SLOTS)];
    let base = buf.as_ptr();

    let mut parsed = httparse::Request::new(&mut []);
    let status = parsed.parse_with_uninit_headers(buf, slots);
    let length = match status {
        Ok(httparse::Status::Complete(length)) if length > limits.max_bytes.min(MAX_HEAD_BYTES) => {
            return Err(refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_bytes.min(MAX_HEAD_BYTES) => {
            return Err(refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers"));
        }
        Err(httparse::Error::Version) => {
            return Err(refused(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "unsupported HTTP version"));
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    let method = match parsed.method {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| bad("invalid method"))?,
        None => return Err(bad("malformed request head")),
    };
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let target = offset(parsed.path.unwrap_or_default().as_bytes(), base);
    let mut spans = Spans::new();
    record_spans(&mut spans, parsed.headers, base);

    let head = buf.split_to(length).freeze();
    let target = head.slice(target.0 as usize..target.1 as usize);
    let uri = Uri::from_maybe_shared(target).map_err(|_| bad("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_REQUEST_HEADERS);
    let mut framing = Framing::Empty;
    let mut lengths: Option<u64> = None;
    let mut chunked = false;
    let mut close = version == Version::HTTP_10;
    let mut expect_continue = false;
    for &span in &spans {
        let name = HeaderName::from_bytes(&head[span.name()]).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value()))
            .map_err(|_| bad("invalid header value"))?;
        match name {
            http::header::CONTENT_LENGTH => {
                let length = content_length(value.as_bytes())?;
                if lengths.is_some_and(|known| known != length) {
                    return Err(bad("conflicting Content-Length headers"));
                }
                lengths = Some(length);
            }
            http::header::TRANSFER_ENCODING => {
                if version == Version::HTTP_10 {
                    return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
                }
                // Only `chunked`, once and alone: any other coding is a body we cannot delimit.
                if chunked || !value.as_bytes().eq_ignore_ascii_case(b"chunked") {
                    return Err(refused(StatusCode::NOT_IMPLEMENTED, "unsupported Transfer-Encoding"));
                }
                chunked = true;
            }
            http::header::CONNECTION => {
                for token in list_tokens(&value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                        close = false;
                    }
                }
            }
            http::header::EXPECT if version == Version::HTTP_11 => {
                if !value.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                    return Err(refused(StatusCode::EXPECTATION_FAILED, "unsupported expectation"));
                }
                expect_continue = true;
            }
            _ => {}
        }
        headers.append(name, value);
    }
    if chunked && lengths.is_some() {
        // Read one way here and another by the backend, this is how requests are smuggled.
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if chunked {
        framing = Framing::Chunked;
    } else if let Some(length) = lengths.filter(|l| *l > 0) {
        framing = Framing::Length(length);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(RequestHead {
        request,
        framing,
        keep_alive: !close,
        expect_continue: expect_continue && framing != Framing::Empty,
    }))
}

/// A response head as an upstream sent it.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body's framing: `Content-Length`, chunked, or (`None`) until the upstream closes.
    pub framing: Option<Framing>,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Why an upstream's response head cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("upstream response head: {0}")]
pub struct BadResponse(pub(crate) &'static str);

/// Takes a whole response head off the front of `buf`; `Ok(None)`: more bytes are needed.
/// `head_request`: the request was HEAD, so no body follows whatever the head says.
pub fn parse_response(
    buf: &mut BytesMut,
    limits: HeadLimits,
    head_request: bool,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.clamp(1, HEADER_SLOTS)];
    let base = buf.as_ptr();
    let mut parsed = httparse::Response::new(&mut []);
    let length =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, slots) {
            Ok(httparse::Status::Complete(length)) if length <= limits.max_bytes.min(MAX_HEAD_BYTES) => {
                length
            }
            Ok(httparse::Status::Partial) if buf.len() <= limits.max_bytes.min(MAX_HEAD_BYTES) => {
                return Ok(None)
            }
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too large")),
            Err(_) => return Err(BadResponse("malformed")),
        };
    let status =
        parsed.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(BadResponse("invalid status"))?;
    let http10 = parsed.version == Some(0);
    let mut spans = Spans::new();
    record_spans(&mut spans, parsed.headers, base);
    let head = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut keep_alive = !http10;
    // `Connection` values that name headers to drop (rare: most say only keep-alive or close).
    let mut naming: Vec<HeaderValue> = Vec::new();
    for &span in &spans {
        let name =
            HeaderName::from_bytes(&head[span.name()]).map_err(|_| BadResponse("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value()))
            .map_err(|_| BadResponse("invalid header value"))?;
        match name {
            http::header::CONTENT_LENGTH => {
                let declared =
                    content_length(value.as_bytes()).map_err(|_| BadResponse("invalid Content-Length"))?;
                if length.is_some_and(|known| known != declared) {
                    return Err(BadResponse("conflicting Content-Length headers"));
                }
                length = Some(declared);
            }
            http::header::TRANSFER_ENCODING => {
                // The last coding decides: chunked is read here, anything else runs to the close.
                let last = value.as_bytes().rsplit(|b| *b == b',').next().unwrap_or_default().trim_ascii();
                chunked = last.eq_ignore_ascii_case(b"chunked");
                other_coding |= !chunked;
            }
            http::header::CONNECTION => {
                for token in list_tokens(&value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive |= http10;
                    } else if !token.is_empty() && naming.last() != Some(&value) {
                        naming.push(value.clone());
                    }
                }
            }
            _ => {}
        }
        // What describes the connection to the upstream is read above and never passed on.
        if !HOP_BY_HOP.contains(&name) {
            headers.append(name, value);
        }
    }
    for value in &naming {
        for token in list_tokens(value) {
            // The length was read for the framing above, and the client is told it too.
            match HeaderName::from_bytes(token) {
                Ok(http::header::CONTENT_LENGTH) | Err(_) => {}
                Ok(name) => drop(headers.remove(name)),
            }
        }
    }
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Some(Framing::Empty)
    } else if chunked && !other_coding {
        // A length beside chunked coding is ignored (RFC 9112 §6.3), and so is the connection.
        keep_alive &= length.is_none();
        Some(Framing::Chunked)
    } else if chunked || other_coding {
        None
    } else {
        match length {
            Some(0) => Some(Framing::Empty),
            Some(length) => Some(Framing::Length(length)),
            None => None,
        }
    };
    Ok(Some(ResponseHead { status, headers, framing, keep_alive: keep_alive && framing.is_some() }))
}

/// The comma-separated items of a list header such as `Connection`, trimmed (empty ones kept).
pub(crate) fn list_tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// Headers that describe one hop of a connection (RFC 9110 §7.6.1), never forwarded.
pub(crate) static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Writes a request head for an upstream: origin-form target, the headers as they are (those
/// `own` replaces aside), then `own`, and `Transfer-Encoding: chunked` when the body's length
/// is not known. `own` is a trait object: which headers the gateway writes is chosen per request.
pub fn write_request_head(
    out: &mut BytesMut,
    parts: &http::request::Parts,
    own: &dyn GatewayHeaders,
    chunked: bool,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if own.replaces(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    own.write_lines(out);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits only (no sign, no list, no spaces inside).
fn content_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad("invalid Content-Length"));
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The bytes of a request head a test or a caller wants parsed at once.
#[cfg(test)]
fn parse_all(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut buf = BytesMut::from(bytes);
    parse_request(&mut buf, HeadLimits { max_bytes: 64 * 1024, max_headers: 100 })
}

/// Unused bytes after a head, kept for the body or the next request.
#[cfg(test)]
fn rest_after(bytes: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(bytes);
    let _ = parse_request(&mut buf, HeadLimits { max_bytes: 64 * 1024, max_headers: 100 });
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &str) -> RequestHead {
        parse_all(bytes.as_bytes()).expect("valid").expect("complete")
    }

    fn refusal(bytes: &str) -> StatusCode {
        parse_all(bytes.as_bytes()).expect_err("refused").status
    }

    #[test]
    fn a_response_passes_on_no_hop_by_hop_header() {
        let text =
            "HTTP/1.1 200 OK\r\nServer: n\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                    X-Hop: 1\r\nTrailer: x\r\nUpgrade: h2c\r\nTE: trailers\r\nProxy-Connection: x\r\n\
                    Transfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n";
        let mut buf = BytesMut::from(text);
        let limits = HeadLimits { max_bytes: 64 * 1024, max_headers: 100 };
        let response = parse_response(&mut buf, limits, false).expect("valid").expect("whole");
        let names: Vec<&str> = response.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["server", "x-kept"]);
        assert_eq!((response.framing, response.keep_alive), (Some(Framing::Chunked), true));
    }

    #[test]
    fn a_simple_head_becomes_a_request_and_leaves_the_rest() {
        let parsed = head("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\n\r\n");
        assert_eq!(parsed.request.method(), Method::GET);
        assert_eq!(parsed.request.uri().path(), "/a");
        assert_eq!(parsed.request.uri().query(), Some("b=c"));
        assert_eq!(parsed.request.headers()["x-api-key"], "k");
        assert_eq!(
            (parsed.framing, parsed.keep_alive, parsed.expect_continue),
            (Framing::Empty, true, false)
        );
        assert_eq!(&rest_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next")[..], b"GET /next");
        assert!(parse_all(b"GET / HTTP/1.1\r\nHost: x\r\n").expect("partial is fine").is_none());
    }

    #[test]
    fn body_framing_and_connection_handling() {
        let length = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(length.framing, Framing::Length(12));
        let same_twice = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(same_twice.framing, Framing::Length(3));
        let chunked =
            head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!((chunked.framing, chunked.expect_continue), (Framing::Chunked, true));
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        // Nothing to wait for without a body.
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert_eq!(head("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").request.uri().path(), "/");
    }

    #[test]
    fn heads_that_could_be_read_two_ways_are_refused() {
        let smuggled =
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refusal(smuggled), StatusCode::BAD_REQUEST);
        assert_eq!(
            refusal("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        for value in ["-1", "+4", "4, 4", " ", "0x10", "99999999999999999999"] {
            let request = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(refusal(&request), StatusCode::BAD_REQUEST, "{value:?}");
        }
        for coding in ["gzip", "chunked, chunked", "gzip, chunked", "identity"] {
            let request = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n");
            assert_eq!(refusal(&request), StatusCode::NOT_IMPLEMENTED, "{coding:?}");
        }
        let twice =
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refusal(twice), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(refusal("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), StatusCode::BAD_REQUEST);
        // Folded header lines and junk are malformed.
        assert_eq!(refusal("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(refusal("GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(refusal("GET / HTTP/1.1 extra\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(refusal("GET / HTTP/2.0\r\n\r\n"), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
        assert_eq!(refusal("GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n"), StatusCode::EXPECTATION_FAILED);
    }

    #[test]
    fn heads_over_the_limits_are_refused() {
        let limits = HeadLimits { max_bytes: 64, max_headers: 2 };
        let mut long = BytesMut::from(format!("GET /{} HTTP/1.1\r\n", "a".repeat(80)).as_str());
        let refused = parse_request(&mut long, limits).expect_err("too large");
        assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let mut many = BytesMut::from("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        let refused = parse_request(&mut many, limits).expect_err("too many");
        assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
