//! HTTP/1.1 as the proxy speaks it: client connections are read and written here, and so are
//! the messages to upstreams, with no protocol machinery between the sockets and the request
//! handler. HTTP/2 client connections are served by hyper.

mod chunked;
mod conn;
mod decode;
mod gateway_headers;
pub mod head;
pub mod response;
pub(crate) mod tunnel;

pub(crate) use chunked::{chunk_start, Decoded, CHUNK_END, LAST_CHUNK};
pub(crate) use conn::serve;
pub(crate) use decode::BodyDecoder;
pub use gateway_headers::GatewayHeaders;
pub(crate) use head::{
    list_tokens, parse_response, write_request_head, BadResponse, HeadLimits, ResponseHead, HOP_BY_HOP,
};
