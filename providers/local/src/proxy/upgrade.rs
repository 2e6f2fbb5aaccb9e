//! WebSocket upgrades over HTTP/1.1 (RFC 6455 §4.1, RFC 9110 §7.8): a request that asks for
//! one is forwarded with its upgrade, and the backend's `101` joins the two connections.
//! No other protocol is switched to (`h2c` included): such a request is served as a plain one.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use hyper::body::Body as _;

use crate::body::Body;
use crate::http1::list_tokens;

/// Marks a request that asked for a WebSocket upgrade, once its hop-by-hop headers are gone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WebSocketUpgrade;

/// Whether `req` asks to switch to WebSocket: an HTTP/1.1 GET without a body, with `upgrade`
/// among its `Connection` tokens and `websocket` among its `Upgrade` protocols.
pub(crate) fn asks_for_websocket(req: &Request<Body>) -> bool {
    req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req.body().is_end_stream()
        && has_token(req.headers(), header::CONNECTION, b"upgrade")
        && has_token(req.headers(), header::UPGRADE, b"websocket")
}

/// Adds the headers that ask the backend for the upgrade.
pub(crate) fn ask_upstream(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, wanted: &[u8]) -> bool {
    headers.get_all(name).iter().any(|value| {
        list_tokens(value).any(|token| {
            // A protocol may carry a version (`websocket/13`): the name is what counts.
            let name = token.split(|&b| b == b'/').next().unwrap_or(token);
            name.eq_ignore_ascii_case(wanted)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    fn request(method: Method, version: Version, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::builder().method(method).version(version).uri("/chat");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(body::empty()).unwrap()
    }

    #[test]
    fn only_a_websocket_upgrade_on_an_http11_get_is_one() {
        let asks = |method, version, headers: &[(&str, &str)]| {
            asks_for_websocket(&request(method, version, headers))
        };
        let upgrade = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")];
        assert!(asks(Method::GET, Version::HTTP_11, &upgrade));
        assert!(asks(
            Method::GET,
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", "foo, websocket/13")]
        ));
        assert!(!asks(Method::POST, Version::HTTP_11, &upgrade), "not a GET");
        assert!(!asks(Method::GET, Version::HTTP_10, &upgrade), "HTTP/1.0 has no upgrade");
        assert!(!asks(Method::GET, Version::HTTP_11, &[("upgrade", "websocket")]), "Connection must name it");
        assert!(
            !asks(Method::GET, Version::HTTP_11, &[("connection", "upgrade"), ("upgrade", "h2c")]),
            "h2c"
        );
        assert!(!asks(
            Method::GET,
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", "websockets")]
        ));
    }
}
