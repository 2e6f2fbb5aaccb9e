//! Prism, the validating proxy (`scripts/prism`), for this test process.
//!
//! [`Prism::start`] runs `scripts/prism start DIR UPSTREAM` in a temporary directory (Prism
//! installed once in the cache, `~/.cache/tollbridge/prism`, by `scripts/test` or by this first
//! start) and leaves a detached watchdog ([`Scripted`]) that stops Prism once this process
//! has exited, even after a panic. Prism forwards to one upstream only, so each test
//! process has its own, in front of its own [`super::FakeServer`]; `TOLLBRIDGE_APIM_VALIDATOR`
//! is read from the `env` file `scripts/prism start` writes.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use tollbridge_testkit::scripted::Scripted;

/// The variable `scripts/prism start` writes to `DIR/env`: Prism's URL.
pub const VALIDATOR_ENV: &str = "TOLLBRIDGE_APIM_VALIDATOR";

/// Upper bound of `scripts/prism start` (a first run installs Prism with npm: bounded by
/// 10 minutes; Prism's start by 60 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(12 * 60);

/// A running Prism started by this process.
#[derive(Debug)]
pub struct Prism {
    url: String,
    dir: PathBuf,
}

impl Prism {
    /// Starts Prism in front of `upstream` (`http://127.0.0.1:PORT`), with a watchdog.
    pub fn start(upstream: &str) -> Result<Prism, String> {
        let prism = Scripted::new("scripts/prism", "prism")?;
        prism.start(&[upstream], START_TIMEOUT)?;
        let url = prism.env(VALIDATOR_ENV)?;
        if !url.starts_with("http://127.0.0.1:") {
            return Err(format!("{VALIDATOR_ENV}={url} is not on 127.0.0.1"));
        }
        let dir = prism.dir().to_owned();
        eprintln!(
            "[prism] validating in front of {upstream} at {url} (log: {})",
            dir.join("prism.log").display()
        );
        Ok(Prism { url, dir })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Prism's log (one block per request, with its validation messages).
    pub fn log(&self) -> PathBuf {
        self.dir.join("prism.log")
    }

    /// The document Prism validates against.
    pub fn spec(&self) -> Option<PathBuf> {
        fs::read_to_string(self.dir.join("spec")).ok().map(|s| PathBuf::from(s.trim()))
    }
}
