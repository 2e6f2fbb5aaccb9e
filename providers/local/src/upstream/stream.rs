//! An upstream connection's bytes: plain TCP, or TLS over it. Plain connections keep TCP's own
//! halves (no lock between reading and writing); TLS ones share their session between halves.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf as SharedRead, WriteHalf as SharedWrite};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }

    /// A reading and a writing half that can be used at once.
    pub fn split(&mut self) -> (StreamRead<'_>, StreamWrite<'_>) {
        match self {
            Self::Plain(tcp) => {
                let (read, write) = tcp.split();
                (StreamRead::Plain(read), StreamWrite::Plain(write))
            }
            Self::Tls(tls) => {
                let (read, write) = tokio::io::split(&mut **tls);
                (StreamRead::Tls(read), StreamWrite::Tls(write))
            }
        }
    }
}

pub enum StreamRead<'a> {
    Plain(ReadHalf<'a>),
    Tls(SharedRead<&'a mut TlsStream<TcpStream>>),
}

pub enum StreamWrite<'a> {
    Plain(WriteHalf<'a>),
    Tls(SharedWrite<&'a mut TlsStream<TcpStream>>),
}

/// Calls `$method` on whichever stream `$self` holds.
macro_rules! either {
    ($self:expr, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            Self::Plain($stream) => $call,
            Self::Tls($stream) => $call,
        }
    };
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncRead for StreamRead<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

/// Writing, on whichever stream it holds.
macro_rules! write_through {
    ($type:ty) => {
        impl AsyncWrite for $type {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                either!(self, s => Pin::new(s).poll_write(cx, buf))
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                either!(self, s => Pin::new(s).poll_flush(cx))
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                either!(self, s => Pin::new(s).poll_shutdown(cx))
            }
        }
    };
}

write_through!(UpstreamStream);
write_through!(StreamWrite<'_>);
