//! Header handling: hop-by-hop headers, the forwarding headers and header modifiers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tollbridge_provider::HeaderModifier;

use super::ConnInfo;

/// Headers that describe one hop and are never forwarded.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no hashing, settles it.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if let Some(listed) = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).map(str::to_string) {
        for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
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
/// What clients may claim about where a request came from; the gateway's own headers replace them.
static CLAIMED_ORIGIN: [HeaderName; 2] = [header::FORWARDED, HeaderName::from_static("x-real-ip")];

/// The forwarding headers, as an edge proxy sets them: what the client sent is replaced, never
/// extended, so a backend can trust them (the client's address as the gateway saw it, the
/// scheme and listener port it used, the authority it was routed by). `Forwarded` and
/// `X-Real-IP` from the client are removed.
pub(super) fn add_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, authority: Option<&HeaderValue>) {
    remove_all(headers, &CLAIMED_ORIGIN);
    headers.insert(X_FORWARDED_FOR, conn.client_ip.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    headers.insert(X_FORWARDED_PORT, conn.local_port.clone());
    match authority {
        Some(authority) => headers.insert(X_FORWARDED_HOST, authority.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// Applies set, add and remove (in that order, as Gateway API describes them).
pub(super) fn apply_header_modifier(modifier: &HeaderModifier, headers: &mut HeaderMap) {
    for h in &modifier.set {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value))
        {
            headers.insert(name, value);
        }
    }
    for h in &modifier.add {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value))
        {
            headers.append(name, value);
        }
    }
    for name in &modifier.remove {
        headers.remove(name.as_str());
    }
}
