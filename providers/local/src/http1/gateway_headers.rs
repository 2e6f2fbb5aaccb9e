//! Headers the gateway writes into a message itself, from what it knows, instead of passing on
//! what the message carries under the same names: the rate-limit headers of a response, the
//! forwarding headers of a request. On HTTP/1.1 they are written straight into the head as
//! lines; where a header map is needed (HTTP/2, a filter that reads them) they are set in it.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName};

pub trait GatewayHeaders {
    /// Whether the message's own header `name` gives way to these.
    fn replaces(&self, name: &HeaderName) -> bool;
    /// Writes them as lines of an HTTP/1.1 head (`name: value\r\n`).
    fn write_lines(&self, out: &mut BytesMut);
    /// Sets them in `headers`, replacing (or removing) what the message carried.
    fn set_on(&self, headers: &mut HeaderMap);
}

/// No headers of the gateway's own.
impl GatewayHeaders for () {
    fn replaces(&self, _: &HeaderName) -> bool {
        false
    }

    fn write_lines(&self, _: &mut BytesMut) {}

    fn set_on(&self, _: &mut HeaderMap) {}
}
