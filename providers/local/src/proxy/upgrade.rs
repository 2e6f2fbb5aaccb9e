//! WebSocket upgrades over HTTP/1.1 (RFC 6455 §4.1, RFC 9110 §7.8): a request that asks for
//! one is forwarded with its upgrade, and the backend's `101` joins the two connections once it
//! answers this very handshake. No other protocol is switched to (`h2c` included): such a
//! request is served as a plain one.
//!
//! Over HTTP/2 a WebSocket is an extended `CONNECT` with `:protocol websocket` (RFC 8441): it is
//! routed as the `GET` it stands for, and sent to the backend as an HTTP/1.1 handshake with a
//! key of the gateway's own, whose answer the backend's `101` must carry.

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use hyper::body::Body as _;
use sha1::{Digest, Sha1};

use crate::body::Body;
use crate::http1::list_tokens;

/// Marks a request that asked for a WebSocket upgrade, once its hop-by-hop headers are gone;
/// holds the `Sec-WebSocket-Accept` that proves a backend's `101` answers this handshake.
#[derive(Clone, Debug)]
pub(crate) struct WebSocketUpgrade {
    pub(crate) accept: HeaderValue,
    /// The key the gateway made for an HTTP/2 client's WebSocket (which has none of its own).
    pub(crate) key: Option<HeaderValue>,
}

impl WebSocketUpgrade {
    /// Whether the client asked over HTTP/2 (an extended `CONNECT`).
    pub(crate) fn over_http2(&self) -> bool {
        self.key.is_some()
    }
}

/// What `req` asks to switch to WebSocket with, if it does: an HTTP/1.1 GET without a body,
/// with `upgrade` among its `Connection` tokens, `websocket` among its `Upgrade` protocols, one
/// `Sec-WebSocket-Key` of 16 bytes and `Sec-WebSocket-Version: 13` (RFC 6455 §4.1); or an
/// HTTP/2 `CONNECT` with `:protocol websocket` and that version (RFC 8441 §5).
pub(crate) fn asks_for_websocket(req: &Request<Body>) -> Option<WebSocketUpgrade> {
    if req.version() == Version::HTTP_2 {
        return asks_over_http2(req);
    }
    let headers = req.headers();
    let asks = req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req.body().is_end_stream()
        && has_token(headers, header::CONNECTION, b"upgrade")
        && has_token(headers, header::UPGRADE, b"websocket")
        && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    if !asks {
        return None;
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = keys.next().filter(|_| keys.next().is_none())?;
    let nonce = base64::engine::general_purpose::STANDARD.decode(key.as_bytes()).ok()?;
    (nonce.len() == 16).then(|| WebSocketUpgrade { accept: accept_for(key.as_bytes()), key: None })
}

fn asks_over_http2(req: &Request<Body>) -> Option<WebSocketUpgrade> {
    let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
    let asks = req.method() == Method::CONNECT
        && protocol.as_str().eq_ignore_ascii_case("websocket")
        && req.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    if !asks {
        return None;
    }
    let nonce: [u8; 16] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let accept = accept_for(key.as_bytes());
    Some(WebSocketUpgrade {
        accept,
        key: Some(HeaderValue::from_str(&key).expect("base64 is a valid header value")),
    })
}

/// The `Sec-WebSocket-Accept` answering `key` (RFC 6455 §4.2.2).
fn accept_for(key: &[u8]) -> HeaderValue {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    let accept = base64::engine::general_purpose::STANDARD.encode(digest);
    HeaderValue::from_str(&accept).expect("base64 is a valid header value")
}

/// Sets the headers that ask the backend for the upgrade. Nothing else writes them on a
/// forwarded request: the client's hop-by-hop headers are gone, and header modifiers cannot
/// name them.
pub(crate) fn ask_upstream(headers: &mut HeaderMap, upgrade: &WebSocketUpgrade) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Some(key) = &upgrade.key {
        headers.insert(header::SEC_WEBSOCKET_KEY, key.clone());
    }
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

    const KEY: (&str, &str) = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    const VERSION: (&str, &str) = ("sec-websocket-version", "13");
    const UPGRADE: [(&str, &str); 2] = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")];

    fn asks(method: Method, version: Version, headers: &[(&str, &str)]) -> Option<WebSocketUpgrade> {
        let mut builder = Request::builder().method(method).version(version).uri("/chat");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        asks_for_websocket(&builder.body(body::empty()).unwrap())
    }

    /// A GET over HTTP/1.1 with a key and version 13, plus `headers`.
    fn handshake(headers: &[(&str, &str)]) -> bool {
        let all = [&[KEY, VERSION][..], headers].concat();
        asks(Method::GET, Version::HTTP_11, &all).is_some()
    }

    #[test]
    fn only_a_websocket_upgrade_on_an_http11_get_is_one() {
        assert!(handshake(&UPGRADE));
        assert!(handshake(&[("connection", "upgrade"), ("upgrade", "foo, websocket/13")]));
        let with_key = [&[KEY, VERSION][..], &UPGRADE].concat();
        assert!(asks(Method::POST, Version::HTTP_11, &with_key).is_none(), "not a GET");
        assert!(asks(Method::GET, Version::HTTP_10, &with_key).is_none(), "HTTP/1.0 has no upgrade");
        assert!(!handshake(&[("upgrade", "websocket")]), "Connection must name it");
        assert!(!handshake(&[("connection", "upgrade"), ("upgrade", "h2c")]), "h2c");
        assert!(!handshake(&[("connection", "upgrade"), ("upgrade", "websockets")]));
    }

    #[test]
    fn an_extended_connect_for_websocket_is_a_handshake_with_a_key_of_the_gateways() {
        let connect = |protocol: Option<&'static str>, version: Option<&str>| {
            let mut builder =
                Request::builder().method(Method::CONNECT).version(Version::HTTP_2).uri("/chat");
            if let Some(version) = version {
                builder = builder.header("sec-websocket-version", version);
            }
            if let Some(protocol) = protocol {
                builder = builder.extension(hyper::ext::Protocol::from_static(protocol));
            }
            asks_for_websocket(&builder.body(body::empty()).unwrap())
        };
        let upgrade = connect(Some("websocket"), Some("13")).expect("a WebSocket");
        assert!(upgrade.over_http2());
        let key = upgrade.key.clone().unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(key.as_bytes()).unwrap().len(), 16);
        assert_eq!(upgrade.accept, accept_for(key.as_bytes()));
        assert_ne!(connect(Some("websocket"), Some("13")).unwrap().key, Some(key), "a new key each time");
        assert!(connect(Some("connect-udp"), Some("13")).is_none(), "another protocol");
        assert!(connect(None, Some("13")).is_none(), "a plain CONNECT");
        assert!(connect(Some("websocket"), None).is_none(), "no version");
    }

    #[test]
    fn a_handshake_needs_one_key_of_16_bytes_and_version_13() {
        let with =
            |headers: &[(&str, &str)]| asks(Method::GET, Version::HTTP_11, &[&UPGRADE[..], headers].concat());
        assert!(with(&[KEY]).is_none(), "no version");
        assert!(with(&[KEY, ("sec-websocket-version", "8")]).is_none(), "an old version");
        assert!(with(&[VERSION]).is_none(), "no key");
        assert!(with(&[VERSION, ("sec-websocket-key", "c2hvcnQ=")]).is_none(), "a key not of 16 bytes");
        assert!(with(&[VERSION, KEY, KEY]).is_none(), "two keys");
        // RFC 6455 §1.3's sample handshake.
        assert_eq!(with(&[KEY, VERSION]).unwrap().accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
