//! moto's server for the tests (see `scripts/moto`).
//!
//! [`Moto::shared`] uses the server that `scripts/test` started (its URL in
//! `TOLLBRIDGE_MOTO_URL`) or, when there is none, runs `scripts/moto start` in a temporary
//! directory once per test process and leaves a detached watchdog ([`Scripted`]) that stops
//! the server once the process has exited, even after a panic.
//!
//! moto keeps one in-memory state for every client: tests of one binary run in parallel, so
//! a test that creates or lists resources holds [`Moto::fresh`] (the lock, then a reset) or
//! [`Moto::exclusive`] until it ends.
//!
//! Credentials and region: moto accepts any access key; it takes the service and region
//! from the SigV4 `Authorization` header (an unsigned request is taken for S3), and the
//! account is always [`ACCOUNT_ID`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tollbridge_testkit::scripted::Scripted;

/// Environment variable with the URL of a running moto server (`http://127.0.0.1:PORT`).
pub const MOTO_URL_ENV: &str = "TOLLBRIDGE_MOTO_URL";

/// Region the tests use (any region works; moto keeps one state per region).
pub const REGION: &str = "us-east-1";
/// Access key the tests use (moto accepts any).
pub const ACCESS_KEY_ID: &str = "testing";
/// Secret key the tests use (moto checks no signature).
pub const SECRET_ACCESS_KEY: &str = "testing";
/// The account moto puts every resource in (its default).
pub const ACCOUNT_ID: &str = "123456789012";

/// Upper bound of `scripts/moto start` (a first run installs moto in a venv: about a minute;
/// pip is bounded by 15 minutes, the server's start by 60 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Upper bound of one call to moto's own API (`/moto-api/reset`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    url: String,
    addr: SocketAddr,
    /// The state directory (`moto.log`) when this process started the server.
    dir: Option<PathBuf>,
}

impl Moto {
    /// The moto server of this test process, attached or started on first use (see the
    /// module docs). Panics with the reason when there is none; every later call panics the
    /// same way without trying again.
    pub fn shared() -> &'static Moto {
        static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();
        match SHARED.get_or_init(Self::attach_or_start) {
            Ok(moto) => moto,
            Err(e) => panic!("no moto server: {e}"),
        }
    }

    /// Serializes the tests that use moto's state. Tests of one binary run on parallel
    /// threads, each with its own runtime; the lock is shared by all of them. A panicking
    /// holder releases it (no poisoning).
    pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
        static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        LOCK.lock().await
    }

    /// [`Moto::exclusive`], then [`Moto::reset`]: the usual first line of a test.
    /// Keep the guard until the test ends: `let _moto = Moto::fresh().await;`
    pub async fn fresh() -> tokio::sync::MutexGuard<'static, ()> {
        let guard = Self::exclusive().await;
        Self::shared().reset();
        guard
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url` or a [`super::FaultProxy`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this test process started the server (rather than `scripts/test`).
    pub fn is_owned(&self) -> bool {
        self.dir.is_some()
    }

    /// The server's log when this process started it.
    pub fn log(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("moto.log"))
    }

    /// Empties every moto backend (`POST /moto-api/reset`). A short blocking call, usable
    /// from async tests too. Panics when moto does not confirm within [`CALL_TIMEOUT`].
    pub fn reset(&self) {
        match blocking_call(self.addr, "POST", "/moto-api/reset") {
            Ok((200, body)) if body.contains("ok") => {}
            Ok((status, body)) => panic!("moto reset at {}: HTTP {status}: {body}", self.url),
            Err(e) => panic!("moto reset at {}: {e}", self.url),
        }
    }

    fn attach_or_start() -> Result<Moto, String> {
        if let Some(url) = std::env::var(MOTO_URL_ENV).ok().filter(|u| !u.trim().is_empty()) {
            let moto = Self::at(url.trim(), None)?;
            // The environment names this server: one that does not answer is an error, not
            // a reason to start another.
            TcpStream::connect_timeout(&moto.addr, Duration::from_secs(5))
                .map_err(|e| format!("{MOTO_URL_ENV}={url} does not answer: {e}"))?;
            return Ok(moto);
        }
        Self::start_own()
    }

    fn at(url: &str, dir: Option<PathBuf>) -> Result<Moto, String> {
        let url = url.trim_end_matches('/').to_owned();
        let hostport =
            url.strip_prefix("http://").ok_or_else(|| format!("moto URL {url:?} is not http://HOST:PORT"))?;
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("moto URL {url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("moto URL {url:?} resolves to no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("moto URL {url:?} is not on the loopback interface"));
        }
        Ok(Moto { url, addr, dir })
    }

    /// `scripts/moto start` in a fresh temporary directory, guarded by a watchdog that stops
    /// it and removes the directory once this process has exited.
    fn start_own() -> Result<Moto, String> {
        let moto = Scripted::new("scripts/moto", "moto")?;
        moto.start(&[], START_TIMEOUT)?;
        let url = moto.env(MOTO_URL_ENV)?;
        let dir = moto.dir().to_owned();
        eprintln!("[moto] started for this test process at {url} (log: {})", dir.join("moto.log").display());
        Self::at(&url, Some(dir))
    }
}

/// A SigV4-shaped `Authorization` header for a plain request to moto: moto routes by the
/// service and region of its credential scope and checks no signature.
/// `service` is the signing name: `apigateway` for both API Gateway APIs.
pub fn authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000"
    )
}

/// `METHOD PATH` with an empty body over a fresh connection: (status, body). Bounded by
/// [`CALL_TIMEOUT`] for the connection and for each read and write.
fn blocking_call(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, CALL_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head:?}"))?;
    Ok((status, body.to_owned()))
}
