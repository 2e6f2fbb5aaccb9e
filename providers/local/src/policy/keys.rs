//! Finding an API key in a request, hashing it, and removing it before the request is forwarded.

use std::borrow::Cow;
use std::fmt;

use http::header::HeaderName;
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use sha2::{Digest, Sha256};

use crate::percent;

/// The SHA-256 of an API key: the only form a key takes in memory.
///
/// Debug prints the public key id (the first 8 hex digits) only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes a presented key.
    pub(crate) fn of(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// Parses the lower- or upper-case hex SHA-256 of a configured key.
    pub(crate) fn from_hex(hex_digest: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Lower-case hex, as persisted.
    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The public key id: the first 8 hex digits.
    pub(crate) fn key_id(self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.key_id())
    }
}

/// Where a policy expects its key: a header first, else a query parameter.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyLocation {
    pub(crate) header: Option<HeaderName>,
    pub(crate) query_param: Option<String>,
}

impl KeyLocation {
    /// The hash of the key presented in `req`, if any. Empty values count as absent.
    pub(crate) fn find(&self, req: &Parts) -> Option<KeyHash> {
        if let Some(value) = self.header.as_ref().and_then(|name| req.headers.get(name)) {
            let value = value.as_bytes().trim_ascii();
            if !value.is_empty() {
                return Some(KeyHash::of(value));
            }
        }
        let name = self.query_param.as_deref()?;
        let value = query_value(req.uri.query()?, name)?;
        Some(KeyHash::of(&value))
    }

    /// The request URI without the key parameter, or `None` when it holds none.
    pub(crate) fn uri_without_key(&self, uri: &Uri) -> Result<Option<Uri>, http::Error> {
        let (Some(name), Some(query)) = (self.query_param.as_deref(), uri.query()) else {
            return Ok(None);
        };
        let Some(query) = query_without(query, name) else {
            return Ok(None);
        };
        let path_and_query = if query.is_empty() {
            PathAndQuery::try_from(uri.path())?
        } else {
            PathAndQuery::try_from(format!("{}?{query}", uri.path()))?
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        Ok(Some(Uri::from_parts(parts)?))
    }

    /// Removes every copy of the key header from `req`.
    pub(crate) fn strip_header(&self, req: &mut Parts) {
        if let Some(name) = &self.header {
            req.headers.remove(name);
        }
    }
}

/// The first non-empty value of query parameter `name` (compared after percent-decoding),
/// percent-decoded. `+` is kept as is: keys are base64-like, and a literal `+` in a hand-written
/// URL is more likely than a form-encoded space.
fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, [u8]>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (!value.is_empty() && *percent::decode(key) == *name.as_bytes()).then(|| percent::decode(value))
    })
}

/// `query` without any `name` or `name=...` pair, the other pairs kept in order and untouched;
/// `None` when no pair was removed.
fn query_without(query: &str, name: &str) -> Option<String> {
    let mut kept = String::with_capacity(query.len());
    let mut removed = false;
    for pair in query.split('&') {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        if *percent::decode(key) == *name.as_bytes() {
            removed = true;
            continue;
        }
        if !kept.is_empty() {
            kept.push('&');
        }
        kept.push_str(pair);
    }
    removed.then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn location(header: Option<&str>, query: Option<&str>) -> KeyLocation {
        KeyLocation {
            header: header.map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap()),
            query_param: query.map(str::to_owned),
        }
    }

    #[test]
    fn key_hash_matches_sha256_hex() {
        let hash = KeyHash::of(b"abc");
        assert_eq!(hash.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(KeyHash::from_hex(&hash.to_hex().to_uppercase()), Some(hash));
        assert_eq!(KeyHash::from_hex("ba7816bf"), None);
        assert_eq!(hash.key_id(), "ba7816bf");
        assert_eq!(format!("{hash:?}"), "KeyHash(ba7816bf)");
    }

    #[test]
    fn header_is_preferred_over_query() {
        let loc = location(Some("x-api-key"), Some("api_key"));
        let req = parts("/a?api_key=from-query", &[("x-api-key", "from-header")]);
        assert_eq!(loc.find(&req), Some(KeyHash::of(b"from-header")));
        let req = parts("/a?api_key=from-query", &[]);
        assert_eq!(loc.find(&req), Some(KeyHash::of(b"from-query")));
        let req = parts("/a?api_key=from-query", &[("x-api-key", "  ")]);
        assert_eq!(loc.find(&req), Some(KeyHash::of(b"from-query")), "an empty header counts as absent");
    }

    #[test]
    fn only_configured_places_are_read() {
        let req = parts("/a?api_key=q", &[("x-api-key", "h")]);
        assert_eq!(location(Some("x-api-key"), None).find(&parts("/a?api_key=q", &[])), None);
        assert_eq!(location(None, Some("api_key")).find(&parts("/a", &[("x-api-key", "h")])), None);
        assert_eq!(location(None, None).find(&req), None);
        assert_eq!(location(Some("x-api-key"), None).find(&req), Some(KeyHash::of(b"h")));
    }

    #[test]
    fn query_values_are_percent_decoded_and_names_exact() {
        let loc = location(None, Some("api_key"));
        let find = |uri: &str| loc.find(&parts(uri, &[]));
        assert_eq!(find("/?api_key=a%2Bb%3D"), Some(KeyHash::of(b"a+b=")));
        assert_eq!(find("/?api_key=a+b"), Some(KeyHash::of(b"a+b")));
        assert_eq!(find("/?api%5Fkey=k"), Some(KeyHash::of(b"k")));
        assert_eq!(find("/?api_key=&api_key=second"), Some(KeyHash::of(b"second")));
        assert_eq!(find("/?API_KEY=k&xapi_key=k&api_key"), None);
        assert_eq!(find("/?api_key=%zz%4"), Some(KeyHash::of(b"%zz%4")));
    }

    #[test]
    fn stripping_keeps_other_pairs_in_order_and_encoding() {
        let loc = location(Some("x-api-key"), Some("api_key"));
        let strip = |uri: &str| loc.uri_without_key(&uri.parse().unwrap()).unwrap().map(|u| u.to_string());
        assert_eq!(strip("/p?b=2&api_key=k&a=%20x+y&api_key=again&c"), Some("/p?b=2&a=%20x+y&c".into()));
        assert_eq!(strip("/p?api_key=k"), Some("/p".into()));
        assert_eq!(strip("/p?api_key"), Some("/p".into()));
        assert_eq!(strip("http://h:8080/p?x=1&api%5fkey=k"), Some("http://h:8080/p?x=1".into()));
        assert_eq!(strip("/p?x=1&&y=2"), None, "untouched when the key is absent");
        assert_eq!(strip("/p"), None);
        assert_eq!(
            location(Some("x-api-key"), None).uri_without_key(&"/p?api_key=k".parse().unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn strip_header_removes_every_copy() {
        let loc = location(Some("x-api-key"), None);
        let mut req = parts("/", &[("x-api-key", "a"), ("x-api-key", "b"), ("other", "c")]);
        loc.strip_header(&mut req);
        assert!(req.headers.get("x-api-key").is_none());
        assert_eq!(req.headers["other"], "c");
    }
}
