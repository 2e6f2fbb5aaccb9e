//! bench/ceiling's minimal HTTP/1.1 reverse proxy on io_uring.
//!
//! usage: proxy-ceiling-uring LISTEN UPSTREAM (both `ip:port`)
//!
//! The same work as bench/ceiling, request for request: a task per client connection reads a
//! head, writes the forwarded head to a pooled upstream connection, reads the response
//! (Content-Length framing only) and writes it back whole. Reads and writes are io_uring
//! submissions (monoio) with owned buffers instead of readiness polling (tokio on epoll).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

type Pool = Rc<RefCell<Vec<TcpStream>>>;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: proxy-ceiling-uring LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is ip:port");
    let mut runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen)?;
        let pool = Pool::default();
        loop {
            let (client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            let pool = pool.clone();
            monoio::spawn(async move {
                let _ = serve(client, pool, upstream).await;
            });
        }
    })
}

async fn serve(mut client: TcpStream, pool: Pool, upstream: SocketAddr) -> io::Result<()> {
    let mut request = Vec::with_capacity(4096);
    let mut forwarded = Vec::with_capacity(1024);
    let mut response = Vec::with_capacity(4096);
    loop {
        let (head_len, close) = loop {
            match parse_request(&request, &mut forwarded) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(_) => return Ok(()),
            }
            let (read, buf) = read_more(&mut client, request).await;
            request = buf;
            if read? == 0 {
                return Ok(());
            }
        };
        request.drain(..head_len);

        let pooled = pool.borrow_mut().pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => {
                let connection = TcpStream::connect(upstream).await?;
                connection.set_nodelay(true)?;
                connection
            }
        };
        let (written, buf) = connection.write_all(forwarded).await;
        forwarded = buf;
        written?;
        response.clear();
        let (head_len, body_len) = loop {
            match parse_response(&response) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(_) => return Ok(()),
            }
            let (read, buf) = read_more(&mut connection, response).await;
            response = buf;
            if read? == 0 {
                return Ok(());
            }
        };
        while response.len() < head_len + body_len {
            let (read, buf) = read_more(&mut connection, response).await;
            response = buf;
            if read? == 0 {
                return Ok(());
            }
        }
        pool.borrow_mut().push(connection);
        response.truncate(head_len + body_len);
        let (written, buf) = client.write_all(response).await;
        response = buf;
        written?;
        if close {
            return Ok(());
        }
    }
}

/// Reads what comes next onto the end of `buf` (one submission).
async fn read_more(stream: &mut TcpStream, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let (len, capacity) = (buf.len(), buf.capacity());
    let (read, slice) = stream.read(buf.slice_mut(len..capacity)).await;
    (read, slice.into_inner())
}

/// The head's length and whether the client asked to close, with the upstream head written
/// into `out`; `None` while the head is incomplete.
fn parse_request(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<(usize, bool)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Request::new(&mut headers);
    let n = match head.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    out.clear();
    out.extend_from_slice(head.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut close = false;
    for header in head.headers.iter() {
        if header.name.eq_ignore_ascii_case("connection") {
            close = header.value.eq_ignore_ascii_case(b"close");
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: 127.0.0.1\r\n\r\n");
    Ok(Some((n, close)))
}

/// The response head's length and its body's (Content-Length); `None` while incomplete.
fn parse_response(buf: &[u8]) -> Result<Option<(usize, usize)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let n = match head.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let length = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    Ok(Some((n, length)))
}
