//! The HTTP/1.1 server side of the proxy: client connections are read and written here, with
//! no protocol machinery between the socket and the request handler. HTTP/2 connections are
//! served by hyper.

mod chunked;
mod conn;
mod head;
mod response;

pub(crate) use conn::serve;
