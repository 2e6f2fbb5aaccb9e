//! The harness the Azure API Management provider is tested with: a stateful fake of the ARM
//! endpoints of API Management the provider uses, behind a validator that checks every request
//! against Microsoft's own description of the API (api-version 2024-05-01, vendored in
//! `tests/specs/`), so that a request the real service would refuse fails the test.
//!
//! ```text
//!   provider ──► front (records) ──► Prism (validates: 422 …) ──► fake (faults, ARM logic)
//!                apim.url()                                        apim.fake_url()
//! ```
//!
//! ```ignore
//! let apim = Apim::start().await;                 // a fresh service; Prism started once per process
//! // configure the provider: endpoint apim.url(), apim.subscription_id(), apim.resource_group(),
//! // apim.service_name(), a static bearer token (plain::TOKEN)
//! apim.add(Rule::next(2, Fault::Throttle).writes());
//! apim.set_lro(Some(Lro::new(2)));
//! … run the provider …
//! assert_eq!(apim.names(Kind::Api), ["orders"]);
//! assert!(apim.policy("apis/orders").unwrap().contains("<rate-limit"));
//! // dropping `apim` asserts that Prism refused no request (see Apim::expect_refusals)
//! ```
//!
//! - [`Apim`]: one fake API Management service (its own subscription id: tests run in
//!   parallel without sharing state) reached through the validator. It dereferences to
//!   [`ApimFake`], the fake's inspection, out-of-band changes, fault rules, long-running
//!   operation setting and record of requests.
//! - [`apim_fake`]: the fake and its server (one per test process, on its own thread).
//! - [`prism`]: Prism (`scripts/prism`), started once per test process in front of the
//!   fake, stopped by a watchdog when the process exits.
//! - [`policy_xml`]: how the fake parses and re-serialises policy documents.
//! - [`plain`]: plain HTTP calls for setting state up behind the provider's back and for
//!   testing the harness.
//! - [`recorder`]: a server on another 127.0.0.1 port that records what it gets: where a
//!   service's links must not lead the provider.
//!
//! Everything listens and connects on 127.0.0.1 only. Every wait is bounded in time.

// Each test binary uses its own subset of the helpers.
#![allow(dead_code)]

pub mod apim_fake;
pub mod plain;
pub mod policy_xml;
pub mod prism;
pub mod recorder;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

// Not every binary names every type.
#[allow(unused_imports)]
pub use apim_fake::{
    ApimFake, Entity, FakeServer, Fault, Kind, Lro, Refusal, Rule, Seen, API_VERSION, DEFAULT_PAGE_SIZE,
};
#[allow(unused_imports)]
pub use plain::{ArmReply, Call, Reply, TOKEN};
#[allow(unused_imports)]
pub use policy_xml::Format;
#[allow(unused_imports)]
pub use recorder::Recorder;

/// One fake API Management service behind the validator (see the module docs).
///
/// When it is dropped (at the end of the test) it asserts that Prism refused none of its
/// requests, unless the test said it sends invalid ones on purpose
/// ([`Apim::expect_refusals`]), or is panicking already.
pub struct Apim {
    fake: ApimFake,
    url: String,
    check_refusals: AtomicBool,
}

impl Apim {
    /// A new, empty fake service reached through the validator. The first call of the process
    /// starts the fake's server and Prism (`scripts/prism start`; a first run on the machine
    /// installs Prism with npm, about a minute). Panics when there is no validator.
    pub async fn start() -> Apim {
        let validated = tokio::task::spawn_blocking(|| validator().map(|p| p.url().to_owned()))
            .await
            .expect("the validator's start panicked");
        if let Err(e) = validated {
            panic!("no validator for the Azure API Management tests: {e}");
        }
        let server = FakeServer::shared();
        Apim {
            fake: server.service(),
            url: server.front_url().to_owned(),
            check_refusals: AtomicBool::new(true),
        }
    }

    /// The endpoint the provider must use (`http://127.0.0.1:PORT`, as ARM's
    /// `https://management.azure.com`): every request through Prism to the fake.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The fake service (also what `Apim` dereferences to).
    pub fn fake(&self) -> &ApimFake {
        &self.fake
    }

    /// The fake itself, unvalidated (`http://127.0.0.1:PORT`).
    pub fn fake_url(&self) -> &str {
        self.fake.fake_url()
    }

    /// The validated URL of a path under the service, with the api-version:
    /// `arm_url("apis/orders")` → `{url}/subscriptions/…/service/{svc}/apis/orders?api-version=2024-05-01`;
    /// a query in `rel` is kept (`apis?$top=5`).
    pub fn arm_url(&self, rel: &str) -> String {
        arm_url(&self.url, &self.fake.service_id(), rel)
    }

    /// [`Apim::arm_url`] on the fake itself (unvalidated).
    pub fn fake_arm_url(&self, rel: &str) -> String {
        arm_url(self.fake.fake_url(), &self.fake.service_id(), rel)
    }

    /// The bearer token to give the provider (any non-empty token is taken unless
    /// [`ApimFake::require_token`] says otherwise).
    pub fn token(&self) -> &'static str {
        TOKEN
    }

    /// This test sends requests Prism refuses on purpose: no check when dropped.
    pub fn expect_refusals(&self) {
        self.check_refusals.store(false, Ordering::Relaxed);
    }

    /// Prism's log (this process's Prism).
    pub fn prism_log(&self) -> Option<PathBuf> {
        validator().ok().map(|p| p.log())
    }

    /// The document Prism validates against.
    pub fn prism_spec(&self) -> Option<PathBuf> {
        validator().ok().and_then(|p| p.spec())
    }
}

impl Deref for Apim {
    type Target = ApimFake;

    fn deref(&self) -> &ApimFake {
        &self.fake
    }
}

impl Drop for Apim {
    fn drop(&mut self) {
        if self.check_refusals.load(Ordering::Relaxed) && !std::thread::panicking() {
            self.fake.assert_no_refusals();
        }
    }
}

fn arm_url(base: &str, service_id: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches('/');
    let sep = if rel.contains('?') { '&' } else { '?' };
    let rel = if rel.is_empty() { String::new() } else { format!("/{rel}") };
    format!("{base}{service_id}{rel}{sep}api-version={API_VERSION}")
}

/// Prism of this process, in front of the fake's server: started on first use (blocking).
fn validator() -> Result<&'static prism::Prism, String> {
    static VALIDATOR: OnceLock<Result<prism::Prism, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let server = FakeServer::shared();
            let prism = prism::Prism::start(server.back_url())?;
            server.set_validator(prism.url());
            Ok(prism)
        })
        .as_ref()
        .map_err(Clone::clone)
}
