//! A deliberately minimal HTTP/1.1 reverse proxy, the yardstick for the real one.
//!
//! usage: proxy-ceiling LISTEN UPSTREAM (both `ip:port`)
//!
//! Each client connection is one task that reads a request head, writes the forwarded head to a
//! pooled upstream connection, reads the response (Content-Length framing only) and writes it
//! back whole. No routing, no policy, no limits: what is left is the runtime and the sockets.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Pool = Rc<RefCell<Vec<TcpStream>>>;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: proxy-ceiling LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is ip:port");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let tasks = tokio::task::LocalSet::new();
    tasks.block_on(&runtime, async move {
        let listener = TcpListener::bind(&listen).await?;
        let pool = Pool::default();
        loop {
            let (client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(client, pool, upstream).await;
            });
        }
    })
}

async fn serve(mut client: TcpStream, pool: Pool, upstream: SocketAddr) -> std::io::Result<()> {
    let mut request = BytesMut::with_capacity(4096);
    let mut forwarded = BytesMut::with_capacity(1024);
    let mut response = BytesMut::with_capacity(4096);
    loop {
        let Some((head_len, close)) = read_head(&mut client, &mut request, |buf| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut head = httparse::Request::new(&mut headers);
            let n = match head.parse(buf)? {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => return Ok(None),
            };
            Ok(Some((n, forward_head(&head, &mut forwarded))))
        })
        .await?
        else {
            return Ok(());
        };
        let _ = request.split_to(head_len);

        let pooled = pool.borrow_mut().pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => {
                let connection = TcpStream::connect(upstream).await?;
                connection.set_nodelay(true)?;
                connection
            }
        };
        connection.write_all(&forwarded).await?;
        response.clear();
        let Some((head_len, body_len)) = read_head(&mut connection, &mut response, |buf| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut head = httparse::Response::new(&mut headers);
            let n = match head.parse(buf)? {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => return Ok(None),
            };
            Ok(Some((n, content_length(head.headers))))
        })
        .await?
        else {
            return Ok(());
        };
        while response.len() < head_len + body_len {
            if connection.read_buf(&mut response).await? == 0 {
                return Ok(());
            }
        }
        pool.borrow_mut().push(connection);
        client.write_all(&response[..head_len + body_len]).await?;
        if close {
            return Ok(());
        }
    }
}

/// Reads into `buf` until `parse` finds a whole head; `None` at end of stream or a bad head.
async fn read_head<T>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, httparse::Error>,
) -> std::io::Result<Option<T>> {
    loop {
        match parse(buf) {
            Ok(Some(parsed)) => return Ok(Some(parsed)),
            Ok(None) if stream.read_buf(buf).await? > 0 => {}
            _ => return Ok(None),
        }
    }
}

/// Writes the upstream request head into `out`; true when the client asked to close.
fn forward_head(head: &httparse::Request, out: &mut BytesMut) -> bool {
    out.clear();
    out.put_slice(head.method.unwrap_or("GET").as_bytes());
    out.put_u8(b' ');
    out.put_slice(head.path.unwrap_or("/").as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let mut close = false;
    for header in head.headers.iter() {
        if header.name.eq_ignore_ascii_case("connection") {
            close = header.value.eq_ignore_ascii_case(b"close");
            continue;
        }
        out.put_slice(header.name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(header.value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"x-forwarded-for: 127.0.0.1\r\n\r\n");
    close
}

fn content_length(headers: &[httparse::Header]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}
