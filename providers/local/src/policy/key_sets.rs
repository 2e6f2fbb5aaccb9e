//! Issuers' key sets fetched over HTTPS: one background fetcher per location, shared by every
//! policy (and every reload) naming it, refreshed every few minutes and soon after a token names
//! a key the set lacks.
//!
//! Bounds: one request at a time per location, 10 seconds per fetch, 512 KiB per document, at
//! most one early refresh per 10 seconds however many unknown keys arrive. A failed fetch keeps
//! the last good set; the fetcher retries with backoff (1 s doubling to 60 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{ACCEPT, HOST};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::jwt::KeySet;
use crate::metrics::KeySetFetchLabels;
use crate::upstream::UpstreamTls;

/// How often a good set is fetched again.
const REFRESH: Duration = Duration::from_secs(300);
/// The shortest time between two early refreshes asked for by unknown keys.
const EARLY_REFRESH_SECONDS: i64 = 10;
/// Longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Time one fetch (connect, TLS, request, body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest document read.
const MAX_DOCUMENT: usize = 512 * 1024;

/// Where a set is found.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Location {
    /// A key set URL.
    KeySet(String),
    /// An OpenID Connect discovery document whose `jwks_uri` names the set, and whose
    /// `issuer` must be `issuer`.
    Discovery { issuer: String, url: String },
}

/// A policy's keys: given inline, or fetched.
#[derive(Debug)]
pub(crate) enum KeySource {
    Fixed(Arc<KeySet>),
    Fetched(Arc<RemoteKeys>),
}

impl KeySource {
    /// The keys now; `None` while a fetched set has never arrived.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        match self {
            Self::Fixed(set) => Some(set.clone()),
            Self::Fetched(remote) => remote.current.load_full(),
        }
    }

    /// Asks for an early fetch (a token named a key the set lacks).
    pub(crate) fn refresh_soon(&self) {
        if let Self::Fetched(remote) = self {
            remote.refresh_soon();
        }
    }
}

/// A fetched set and its fetcher's doorbell.
pub(crate) struct RemoteKeys {
    location: Location,
    current: ArcSwapOption<KeySet>,
    wake: Arc<Notify>,
    /// Seconds since the epoch of the last early refresh asked for.
    last_early: AtomicI64,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("location", &self.location)
            .field("keys", &self.current.load().as_ref().map(|set| set.len()))
            .finish()
    }
}

/// Fetches by location and outcome.
type Fetches = Family<KeySetFetchLabels, Counter>;

/// Where fetches are counted: the process's proxy metrics (set once by the provider).
static FETCHES: OnceLock<Fetches> = OnceLock::new();

/// Counts every fetch of a key set in `fetches` from now on (the first caller's family wins).
pub fn count_fetches_in(fetches: Fetches) {
    let _ = FETCHES.set(fetches);
}

fn count_fetch(location: &Location, outcome: &'static str) {
    if let Some(fetches) = FETCHES.get() {
        let location = match location {
            Location::KeySet(url) | Location::Discovery { url, .. } => url.clone(),
        };
        fetches.get_or_create(&KeySetFetchLabels { location, outcome }).inc();
    }
}

fn registry() -> &'static Mutex<HashMap<Location, Weak<RemoteKeys>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Location, Weak<RemoteKeys>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl RemoteKeys {
    /// The set at `location`, shared with whoever holds it already; a new one starts its
    /// fetcher (when called inside a Tokio runtime; outside one it never has keys).
    pub(crate) fn shared(location: Location) -> Arc<Self> {
        let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
        registry.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = registry.get(&location).and_then(Weak::upgrade) {
            return existing;
        }
        let keys = Arc::new(Self {
            location: location.clone(),
            current: ArcSwapOption::empty(),
            wake: Arc::new(Notify::new()),
            last_early: AtomicI64::new(0),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(fetcher(Arc::downgrade(&keys), keys.wake.clone()));
            }
            Err(_) => tracing::error!(?location, "no runtime to fetch the key set in"),
        }
        registry.insert(location, Arc::downgrade(&keys));
        keys
    }

    fn refresh_soon(&self) {
        let now = jiff::Timestamp::now().as_second();
        let last = self.last_early.load(Ordering::Relaxed);
        if now - last >= EARLY_REFRESH_SECONDS
            && self.last_early.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.wake.notify_one();
        }
    }
}

/// Fetches the set until nobody holds it.
async fn fetcher(keys: Weak<RemoteKeys>, wake: Arc<Notify>) {
    let mut failures: u32 = 0;
    loop {
        let Some(remote) = keys.upgrade() else { return };
        let location = remote.location.clone();
        let wait = match tokio::time::timeout(FETCH_TIMEOUT, fetch(&location)).await {
            Ok(Ok(set)) => {
                count_fetch(&location, "fetched");
                if failures > 0 || remote.current.load().is_none() {
                    tracing::info!(?location, keys = set.len(), "signing keys fetched");
                }
                remote.current.store(Some(Arc::new(set)));
                failures = 0;
                REFRESH
            }
            outcome => {
                count_fetch(&location, "failed");
                let error = match outcome {
                    Ok(Err(error)) => error,
                    _ => format!("no answer within {} seconds", FETCH_TIMEOUT.as_secs()),
                };
                if failures == 0 {
                    let kept = remote.current.load().is_some();
                    tracing::warn!(?location, %error, kept_last_good_keys = kept, "cannot fetch signing keys");
                }
                failures = failures.saturating_add(1);
                Duration::from_secs(1u64 << failures.min(6).saturating_sub(1)).min(MAX_BACKOFF)
            }
        };
        drop(remote);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}

/// The key set at `location`.
async fn fetch(location: &Location) -> Result<KeySet, String> {
    let url = match location {
        Location::KeySet(url) => url.clone(),
        Location::Discovery { issuer, url } => {
            let document: serde_json::Value = serde_json::from_slice(&get(url).await?)
                .map_err(|e| format!("the discovery document at {url} is not JSON: {e}"))?;
            let named = document.get("issuer").and_then(|v| v.as_str());
            if named.map(|n| n.trim_end_matches('/')) != Some(issuer.trim_end_matches('/')) {
                return Err(format!(
                    "the discovery document at {url} names issuer {named:?}, not {issuer:?}"
                ));
            }
            let jwks_uri = document
                .get("jwks_uri")
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("the discovery document at {url} has no jwks_uri"))?;
            jwks_uri.to_string()
        }
    };
    let body = get(&url).await?;
    let text = std::str::from_utf8(&body).map_err(|_| format!("the key set at {url} is not UTF-8"))?;
    let (set, skipped) = KeySet::parse_served(text).map_err(|e| format!("the key set at {url}: {e}"))?;
    if !skipped.is_empty() {
        tracing::debug!(%url, ?skipped, "keys of the set that cannot verify tokens are left out");
    }
    Ok(set)
}

/// The body of a 200 answer to a GET of an `https://` URL, checked against the system's CAs.
async fn get(url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url} is not an https:// URL"));
    }
    let host = uri.host().ok_or_else(|| format!("{url} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let tls = UpstreamTls::new(host, &[], &[])?;
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let stream = tls.handshake(tcp).await.map_err(|e| format!("TLS to {url} failed: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("cannot speak HTTP to {url}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = http::Request::get(path)
        .header(HOST, authority)
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("GET {url} failed: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("GET {url} answered {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| format!("reading {url} failed (at most {MAX_DOCUMENT} bytes are read): {e}"))?;
    Ok(body.to_bytes())
}
