//! Header handling: hop-by-hop headers, the forwarding headers and header modifiers.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tollbridge_provider::HeaderModifier;

use super::ConnInfo;
use crate::http1::{list_tokens, GatewayHeaders, HOP_BY_HOP};

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, no hashing, finds which are here: most messages carry none, or
    // only `Connection: keep-alive`, and only those present are looked up to go.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let listed: Vec<HeaderValue> = headers.get_all(header::CONNECTION).iter().cloned().collect();
    for value in &listed {
        for token in list_tokens(value) {
            // The usual tokens name no header beyond those of the list, which go below if present.
            if token.is_empty()
                || token.eq_ignore_ascii_case(b"keep-alive")
                || token.eq_ignore_ascii_case(b"close")
            {
                continue;
            }
            if let Some(name) = HeaderName::from_bytes(token).ok().filter(may_be_listed) {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Whether `Connection` may name `name` for removal: not one of the list (removed anyway), nor
/// what says where the message goes and where it ends, which the gateway has already read.
fn may_be_listed(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(name) && *name != header::HOST && *name != header::CONTENT_LENGTH
}

/// Removes each of `names` the message carries.
pub(super) fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    if headers.keys().any(|name| names.contains(name)) {
        for name in names {
            headers.remove(name);
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The forwarding headers, all of them the gateway's to write.
static FORWARDING: [HeaderName; 4] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_PORT, X_FORWARDED_HOST];
/// What clients may claim about where a request came from; the gateway's own headers replace them.
static CLAIMED_ORIGIN: [HeaderName; 2] = [header::FORWARDED, HeaderName::from_static("x-real-ip")];

/// Removes `Forwarded` and `X-Real-IP`: a client's word on where the request came from, which
/// the forwarding headers say instead.
pub(super) fn remove_claimed_origin(headers: &mut HeaderMap) {
    remove_all(headers, &CLAIMED_ORIGIN);
}

/// The forwarding headers, as an edge proxy sets them: what the client sent is replaced, never
/// extended, so a backend can trust them (the client's address as the gateway saw it, the
/// scheme and listener port it used, the authority it was routed by; without one, a client's
/// `X-Forwarded-Host` is dropped).
pub(super) struct Forwarding<'a> {
    pub(super) conn: &'a ConnInfo,
    pub(super) authority: Option<HeaderValue>,
}

impl Forwarding<'_> {
    fn proto(&self) -> &'static str {
        if self.conn.tls {
            "https"
        } else {
            "http"
        }
    }
}

impl GatewayHeaders for Forwarding<'_> {
    fn replaces(&self, name: &HeaderName) -> bool {
        // By length first: most names are none of the four.
        matches!(name.as_str().len(), 15..=17) && FORWARDING.contains(name)
    }

    fn write_lines(&self, out: &mut BytesMut) {
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(self.conn.client_ip.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto().as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-port: ");
        out.extend_from_slice(self.conn.local_port.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(authority) = &self.authority {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(authority.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    fn set_on(&self, headers: &mut HeaderMap) {
        headers.insert(X_FORWARDED_FOR, self.conn.client_ip.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto()));
        headers.insert(X_FORWARDED_PORT, self.conn.local_port.clone());
        match &self.authority {
            Some(authority) => headers.insert(X_FORWARDED_HOST, authority.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
}

/// Applies set, add and remove (in that order, as Gateway API describes them). Hop-by-hop
/// headers are the gateway's to write: a modifier naming one is not applied (it could ask a
/// backend to switch protocols, or frame a message differently from what is sent).
pub(super) fn apply_header_modifier(modifier: &HeaderModifier, headers: &mut HeaderMap) {
    let parse = |name: &str, value: &str| match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        (Ok(name), Ok(value)) if !HOP_BY_HOP.contains(&name) => Some((name, value)),
        _ => None,
    };
    for (name, value) in modifier.set.iter().filter_map(|h| parse(&h.name, &h.value)) {
        headers.insert(name, value);
    }
    for (name, value) in modifier.add.iter().filter_map(|h| parse(&h.name, &h.value)) {
        headers.append(name, value);
    }
    for name in &modifier.remove {
        headers.remove(name.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        headers.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn forwarding_headers_written_as_lines_are_those_set_in_a_map() {
        let local = "127.0.0.1:8443".parse().unwrap();
        let conn = ConnInfo { tls: true, ..ConnInfo::new(local, "192.0.2.7:5000".parse().unwrap()) };
        for authority in [Some(HeaderValue::from_static("shop.test")), None] {
            let forwarding = Forwarding { conn: &conn, authority };
            // Set in a map, a client's claims under the same names are replaced; written as
            // lines, they are the same headers.
            let mut map = headers(&[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-host", "bank.test")]);
            forwarding.set_on(&mut map);
            let set: String = map.iter().map(|(n, v)| format!("{n}: {}\r\n", v.to_str().unwrap())).collect();
            let mut lines = BytesMut::new();
            forwarding.write_lines(&mut lines);
            let mut written: Vec<&str> =
                std::str::from_utf8(&lines).unwrap().split_inclusive("\r\n").collect();
            let mut expected: Vec<&str> = set.split_inclusive("\r\n").collect();
            written.sort_unstable();
            expected.sort_unstable();
            assert_eq!(written, expected);
            assert!(
                written.contains(&"x-forwarded-proto: https\r\n")
                    && written.contains(&"x-forwarded-port: 8443\r\n")
            );
        }
        let forwarding = Forwarding { conn: &conn, authority: None };
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-host"] {
            assert!(forwarding.replaces(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["x-forwarded-by", "forwarded", "host", "x-forwarded-hosts"] {
            assert!(!forwarding.replaces(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn a_head_written_with_forwarding_carries_none_of_the_clients_copies() {
        let mut buf = BytesMut::from(
            "GET /a HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 203.0.113.9\r\n\
             x-forwarded-FOR: 203.0.113.10\r\nX-FORWARDED-HOST: bank.test\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Port: 443\r\nX-Kept: 1\r\n\r\n",
        );
        let limits = crate::http1::HeadLimits { max_bytes: 4096, max_headers: 32 };
        let head = crate::http1::head::parse_request(&mut buf, limits).expect("valid").expect("whole");
        let (parts, ()) = head.request.into_parts();
        let conn = ConnInfo::new("127.0.0.1:8080".parse().unwrap(), "192.0.2.7:5000".parse().unwrap());
        for authority in [Some(HeaderValue::from_static("shop.test")), None] {
            let has_authority = authority.is_some();
            let mut out = BytesMut::new();
            crate::http1::write_request_head(&mut out, &parts, &Forwarding { conn: &conn, authority }, false);
            let text = std::str::from_utf8(&out).unwrap().to_ascii_lowercase();
            assert!(
                !text.contains("203.0.113") && !text.contains("bank.test") && !text.contains("443"),
                "{text}"
            );
            assert_eq!(text.matches("x-forwarded-for: 192.0.2.7\r\n").count(), 1, "{text}");
            assert_eq!(text.matches("x-forwarded-proto: http\r\n").count(), 1, "{text}");
            assert_eq!(text.matches("x-forwarded-port: 8080\r\n").count(), 1, "{text}");
            assert_eq!(text.matches("x-forwarded-host: shop.test\r\n").count(), usize::from(has_authority));
            assert!(text.contains("x-kept: 1\r\n") && text.ends_with("\r\n\r\n"), "{text}");
        }
    }

    #[test]
    fn a_header_modifier_cannot_write_hop_by_hop_headers() {
        let header =
            |name: &str| tollbridge_provider::HeaderValue { name: name.into(), value: "websocket".into() };
        let modifier = HeaderModifier {
            set: vec![header("Upgrade"), header("x-set")],
            add: vec![header("connection"), header("x-added")],
            remove: Vec::new(),
        };
        let mut message = HeaderMap::new();
        apply_header_modifier(&modifier, &mut message);
        assert_eq!(names(&message), ["x-set", "x-added"]);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut message = headers(&[
            ("connection", "keep-alive, X-Secret ,upgrade,,bad name"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut message);
        assert_eq!(names(&message), ["content-length", "x-kept"]);
    }

    #[test]
    fn connection_names_on_every_line_go_but_never_host_or_content_length() {
        let mut message = headers(&[
            ("connection", "x-first"),
            ("connection", "x-second, host, Content-Length"),
            ("host", "a.example"),
            ("content-length", "5"),
            ("x-first", "1"),
            ("x-second", "2"),
        ]);
        strip_hop_by_hop(&mut message);
        let mut left = names(&message);
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host"]);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_alone() {
        let mut message = headers(&[("x-secret", "1"), ("content-length", "3")]);
        strip_hop_by_hop(&mut message);
        assert_eq!(names(&message), ["x-secret", "content-length"]);
        let mut keep_alive = headers(&[("connection", "keep-alive"), ("server", "nginx")]);
        strip_hop_by_hop(&mut keep_alive);
        assert_eq!(names(&keep_alive), ["server"]);
    }
}
