//! One connection to the store: where it is (parsed from the URL), how to open it (TCP or TLS,
//! `AUTH`, `SELECT`) and one command or a pipeline of them on it. The task that sends a command
//! reads its reply itself: no task and no channel in between.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::resp::{self, Arg, Frame};
use super::{redacted, CounterStoreError, CounterStoreSettings};

/// Where the store is and how to log in, from its settings.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    username: Option<String>,
    password: Option<String>,
    database: u32,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

impl Endpoint {
    /// Parses `redis://[USER@]HOST[:PORT][/DB]` or `rediss://…`; refuses a password in the URL,
    /// a CA without TLS, and what is not such a URL, each with the reason.
    pub fn parse(settings: &CounterStoreSettings) -> Result<Self, CounterStoreError> {
        let url = &settings.url;
        let refused = |reason: &str| CounterStoreError::Url { url: redacted(url), reason: reason.to_owned() };
        let (tls, rest) = match url.split_once("://") {
            Some(("redis", rest)) => (false, rest),
            Some(("rediss", rest)) => (true, rest),
            _ => return Err(refused("expected redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]")),
        };
        if super::has_password(url) {
            return Err(refused(
                "a password in the URL is visible to anyone who can list processes or read the \
                 configuration; give it in a file or an environment variable instead",
            ));
        }
        let username = super::user_name(url).map(str::to_owned);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        if username.is_some() && settings.password.is_none() {
            return Err(refused(
                "a user name is given without a password: give the user's password in a file, an \
                 environment variable or a Secret (without one, the store would be used as its \
                 default user)",
            ));
        }
        if rest.contains(['?', '#']) {
            return Err(refused("query parameters and fragments are not supported"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = split_port(authority).ok_or_else(|| refused("expected HOST or HOST:PORT"))?;
        let database = match path.trim_end_matches('/') {
            "" => 0,
            db => db.parse().map_err(|_| refused("the database (after the host) must be a number"))?,
        };
        let tls = match (tls, &settings.ca_pem) {
            (false, Some(_)) => {
                return Err(refused("a CA certificate is given but the URL is not rediss://"))
            }
            (false, None) => None,
            (true, ca) => {
                let config = tls_config(ca.as_deref()).map_err(|reason| refused(&reason))?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| refused("the host is not a valid TLS server name"))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self { host, port, tls, username, password: settings.password.clone(), database })
    }

    /// A new connection, logged in and on its database.
    pub async fn open(&self) -> Result<Connection, CallError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        // Decisions are small writes: Nagle's algorithm would hold one back until the previous
        // is acknowledged.
        tcp.set_nodelay(true)?;
        let io: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
        };
        let mut connection = Connection { io, read: Vec::with_capacity(512), write: Vec::with_capacity(512) };
        if let Some(password) = &self.password {
            let mut args = vec![Arg::from("AUTH")];
            args.extend(self.username.as_deref().map(Arg::from));
            args.push(Arg::from(password.as_str()));
            connection.call(&args).await?.ok()?;
        }
        if self.database != 0 {
            connection.call(&[Arg::from("SELECT"), Arg::Int(i64::from(self.database))]).await?.ok()?;
        }
        Ok(connection)
    }
}

/// `host` and `port` (6379 when not given) of `host[:port]` or `[v6][:port]`.
fn split_port(authority: &str) -> Option<(String, u16)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']')? {
            (host, "") => (host, None),
            (host, rest) => (host, Some(rest.strip_prefix(':')?)),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok().filter(|&p| p != 0)?,
        None => 6379,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// TLS trusting `ca_pem`, or the system's certificates when none is given.
fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let roots = crate::upstream::trusted_roots(ca_pem.as_slice()).map_err(|why| match ca_pem {
        Some(_) => why,
        None => format!("{why}: give the store's CA"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The most a connection buffers of replies it has not parsed yet.
const MAX_REPLIES: usize = 8 << 20;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// An open connection. Commands are answered in order; a connection whose call was cut short
/// (timed out, failed) may still get that reply, so it is dropped, never reused.
pub struct Connection {
    io: Box<dyn Stream>,
    read: Vec<u8>,
    write: Vec<u8>,
}

impl Connection {
    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[Arg<'_>]) -> Result<Frame, CallError> {
        Ok(self.pipeline(std::slice::from_ref(&args)).await?.pop().unwrap_or(Frame::Array(None)))
    }

    /// Sends every command in one write and reads their replies.
    pub async fn pipeline(&mut self, commands: &[&[Arg<'_>]]) -> Result<Vec<Frame>, CallError> {
        self.write.clear();
        for args in commands {
            resp::encode(&mut self.write, args);
        }
        self.io.write_all(&self.write).await?;
        let mut replies = Vec::with_capacity(commands.len());
        let mut used = 0;
        while replies.len() < commands.len() {
            match resp::parse(&self.read[used..]).map_err(|e| CallError::Protocol(e.to_string()))? {
                Some((frame, len)) => {
                    replies.push(frame);
                    used += len;
                }
                None => {
                    if self.read.len() > MAX_REPLIES {
                        return Err(CallError::Protocol("the replies are larger than any expected".into()));
                    }
                    // Only a connection that got nothing of its replies may be retried: one that
                    // ended in the middle of them has had its commands run.
                    let started = !replies.is_empty() || used < self.read.len();
                    let mut chunk = [0u8; 4096];
                    let n = match self.io.read(&mut chunk).await {
                        Ok(0) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                        outcome => outcome,
                    };
                    match n {
                        Ok(n) => self.read.extend_from_slice(&chunk[..n]),
                        Err(error) if started => {
                            return Err(CallError::Protocol(format!(
                                "the connection ended in a reply: {error}"
                            )))
                        }
                        Err(error) => return Err(CallError::Io(error)),
                    }
                }
            }
        }
        self.read.drain(..used);
        if !self.read.is_empty() {
            // More than was asked for: the replies no longer line up with the commands.
            return Err(CallError::Protocol("the store sent more replies than commands".into()));
        }
        Ok(replies)
    }
}

/// Why a call got no usable reply.
#[derive(Debug)]
pub enum CallError {
    /// The connection failed (or the store closed it).
    Io(io::Error),
    /// The store answered with something that is not RESP.
    Protocol(String),
    /// The store refused the command: `-CODE message`.
    Refused(String),
}

impl CallError {
    /// The code of a refusal (`NOSCRIPT`, `READONLY`, `NOPERM`…).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused(message) => message.split_whitespace().next(),
            _ => None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => write!(f, "{error}"),
            Self::Protocol(reason) => f.write_str(reason),
            Self::Refused(message) => write!(f, "refused: {message}"),
        }
    }
}

impl From<io::Error> for CallError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl Frame {
    /// The reply, or the refusal it is.
    pub fn ok(self) -> Result<Frame, CallError> {
        match self {
            Frame::Error(message) => Err(CallError::Refused(message)),
            frame => Ok(frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Result<Endpoint, String> {
        Endpoint::parse(&super::super::tests::settings(url)).map_err(|e| e.to_string())
    }

    #[test]
    fn urls_give_host_port_database_and_user() {
        let endpoint = parsed("redis://limits@10.0.0.7:6380/3").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port, endpoint.database), ("10.0.0.7", 6380, 3));
        assert_eq!(endpoint.username.as_deref(), Some("limits"));
        let endpoint = parsed("redis://[::1]/").unwrap();
        assert_eq!((endpoint.host.as_str(), endpoint.port, endpoint.database), ("::1", 6379, 0));
        assert!(parsed("rediss://redis.example.com").unwrap().tls.is_some());
        let debug = format!("{:?}", parsed("redis://h:1").unwrap());
        assert!(!debug.contains("hunter2-secret"), "{debug}");
    }

    #[tokio::test]
    async fn replies_that_do_not_line_up_with_the_commands_end_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut command = [0u8; 1024];
            let _ = socket.read(&mut command).await;
            // Two replies, in one segment, to one command (AUTH).
            let _ = socket.write_all(b"+OK\r\n+EXTRA\r\n").await;
            let _ = socket.read(&mut command).await;
        });
        let endpoint = parsed(&format!("redis://127.0.0.1:{port}")).expect("endpoint");
        let error = endpoint.open().await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("more replies than commands"), "{error:?}");
    }

    #[test]
    fn what_is_not_a_store_url_is_refused_with_the_reason() {
        let mut no_password = super::super::tests::settings("redis://limits@h:1");
        no_password.password = None;
        let refused = Endpoint::parse(&no_password).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("without a password"), "{refused}");
        assert!(parsed("redis://[::1]junk").unwrap_err().contains("HOST:PORT"));
        assert!(parsed("redis://h:1/zero").unwrap_err().contains("database"));
        assert!(parsed("redis://h:99999").unwrap_err().contains("HOST:PORT"));
        assert!(parsed("redis://:1").unwrap_err().contains("HOST:PORT"));
        assert!(parsed("redis://h:1/?timeout=1").unwrap_err().contains("query"));
    }
}
