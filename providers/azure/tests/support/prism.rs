//! Prism, the validating proxy (`scripts/prism`), for this test process.
//!
//! [`Prism::start`] runs `scripts/prism start DIR UPSTREAM` in a temporary directory (Prism
//! installed once in the cache, `~/.cache/tollbridge/prism`, by `scripts/test` or by this first
//! start) and leaves a detached watchdog that stops Prism and removes the directory once this
//! process has exited, even after a panic. Prism forwards to one upstream only, so each test
//! process has its own, in front of its own [`super::FakeServer`]; `TOLLBRIDGE_APIM_VALIDATOR`
//! is read from the `env` file `scripts/prism start` writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
        let script = repo_root().join("scripts/prism");
        if !script.is_file() {
            return Err(format!("{} not found", script.display()));
        }
        let dir = tempfile::Builder::new()
            .prefix("tollbridge-prism-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory for prism: {e}"))?
            .keep();
        // The watchdog first, so that even a start interrupted by the end of this process is
        // cleaned up.
        spawn_watchdog(&script, &dir)?;
        let log = dir.join("harness-start.log");
        run_logged(
            Command::new(&script).arg("start").arg(&dir).arg(upstream),
            &log,
            START_TIMEOUT,
            &format!("scripts/prism start {} {upstream}", dir.display()),
        )?;
        let env = dir.join("env");
        let text = fs::read_to_string(&env).map_err(|e| format!("cannot read {}: {e}", env.display()))?;
        let url = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export ").unwrap_or(l.trim()).split_once('='))
            .find(|(k, _)| k.trim() == VALIDATOR_ENV)
            .map(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
            .ok_or_else(|| format!("{} does not set {VALIDATOR_ENV}", env.display()))?;
        if !url.starts_with("http://127.0.0.1:") {
            return Err(format!("{VALIDATOR_ENV}={url} is not on 127.0.0.1"));
        }
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

/// The repository root (this crate is `providers/azure`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `setsid bash -c 'while kill -0 PID; do sleep 1; done; scripts/prism stop DIR; rm -rf DIR'`
fn spawn_watchdog(script: &Path, dir: &Path) -> Result<(), String> {
    const WATCH: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3"; rm -rf -- "$3""#;
    Command::new("setsid")
        .args(["bash", "-c", WATCH, "tollbridge-prism-watchdog"])
        .arg(std::process::id().to_string())
        .arg(script)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the watchdog (setsid bash): {e}"))
}

/// Runs `cmd` with stdout and stderr in `log`; killed after `timeout`.
fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration, what: &str) -> Result<(), String> {
    let file = fs::File::create(log).map_err(|e| format!("{what}: cannot create {}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| format!("{what}: cannot duplicate {}: {e}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    let tail = || {
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    match wait_deadline(&mut child, timeout).map_err(|e| format!("{what}: {e}"))? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("{what} failed ({status}); end of {}:\n{}", log.display(), tail())),
        None => {
            Err(format!("{what} did not finish within {timeout:?}; end of {}:\n{}", log.display(), tail()))
        }
    }
}

/// Waits for `child` up to `timeout`; kills it and returns `None` past that.
fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(100));
    }
}
