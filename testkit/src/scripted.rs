//! Servers and clusters a script starts in a temporary directory, with a watchdog to stop them.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::command::{run_captured, run_logged};
use crate::repo_root;

/// Upper bound of `SCRIPT stop DIR` run by [`Scripted::stop`] (the scripts bound their own
/// waits by less).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// A directory in which a script (`scripts/moto`, `scripts/control-plane`, …) starts what it
/// manages with `SCRIPT start DIR …`, guarded from its creation on by a watchdog: a detached
/// process that, once this test process has exited (even after a panic), runs
/// `SCRIPT stop DIR` and removes DIR only when the stop succeeded (a DIR whose stop failed
/// holds what a second stop needs).
#[derive(Debug)]
pub struct Scripted {
    /// The script as named to [`Scripted::new`], for messages.
    name: String,
    script: PathBuf,
    dir: PathBuf,
}

impl Scripted {
    /// Checks that `script` (a path under the repository root, e.g. `scripts/moto`) exists,
    /// makes a fresh temporary directory `tollbridge-PREFIX-…` and starts its watchdog
    /// (`tollbridge-PREFIX-watchdog`), first, so that even a start cut short by the end of
    /// this process is cleaned up.
    pub fn new(script: &str, prefix: &str) -> Result<Scripted, String> {
        let path = repo_root().join(script);
        if !path.is_file() {
            return Err(format!("{} not found", path.display()));
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("tollbridge-{prefix}-"))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory for {script}: {e}"))?
            .keep();
        spawn_watchdog(&format!("tollbridge-{prefix}-watchdog"), &path, &dir)?;
        Ok(Scripted { name: script.to_owned(), script: path, dir })
    }

    /// The directory the script keeps its state, logs and `env` file in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The script's path.
    pub fn script(&self) -> &Path {
        &self.script
    }

    /// Runs `SCRIPT ARGS…` with its output in `DIR/harness-LOG.log`; an error ending with that
    /// log when it fails or runs longer than `timeout` (then it is killed).
    pub fn run<S: AsRef<OsStr>>(&self, log: &str, args: &[S], timeout: Duration) -> Result<(), String> {
        let shown: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        let what = format!("{} {}", self.name, shown.join(" "));
        let mut cmd = Command::new(&self.script);
        cmd.args(args);
        run_logged(&mut cmd, &self.dir.join(format!("harness-{log}.log")), timeout, &what)
    }

    /// `SCRIPT start DIR ARGS…` (see [`Scripted::run`]; its log is `DIR/harness-start.log`).
    pub fn start(&self, args: &[&str], timeout: Duration) -> Result<(), String> {
        let mut all = vec![OsStr::new("start"), self.dir.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        self.run("start", &all, timeout)
    }

    /// The value `SCRIPT start` wrote for `key` to `DIR/env`.
    pub fn env(&self, key: &str) -> Result<String, String> {
        read_env(&self.dir, key)
    }

    /// Stops it now, for a test that wants it gone before the process ends: `SCRIPT stop DIR`,
    /// then DIR removed when that succeeded. The watchdog's stop later finds nothing to do.
    pub fn stop(&self) -> Result<(), String> {
        let what = format!("{} stop {}", self.name, self.dir.display());
        let out =
            run_captured(Command::new(&self.script).arg("stop").arg(&self.dir), None, STOP_TIMEOUT, &what);
        if !out.status.success() {
            return Err(format!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        fs::remove_dir_all(&self.dir).map_err(|e| format!("cannot remove {}: {e}", self.dir.display()))
    }
}

/// The value of `key` in `DIR/env`, a file of `export KEY=VALUE` lines as the scripts' `start`
/// writes it (quotes around the value removed).
pub fn read_env(dir: &Path, key: &str) -> Result<String, String> {
    let path = dir.join("env");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export ").unwrap_or(l.trim()).split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .ok_or_else(|| format!("{} does not set {key}", path.display()))
}

/// Starts `setsid bash -c 'while kill -0 PID; do sleep 1; done; SCRIPT stop DIR && rm -rf DIR'`
/// for this process, detached from it (own session, no inherited descriptors), as `NAME`.
fn spawn_watchdog(name: &str, script: &Path, dir: &Path) -> Result<(), String> {
    const WATCH: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3" && rm -rf --one-file-system -- "$3""#;
    Command::new("setsid")
        .args(["bash", "-c", WATCH, name])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_variable_of_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("env"), "export A=1\nexport URL=\"http://127.0.0.1:5\"\nB='x=y'\n")
            .unwrap();
        assert_eq!(read_env(dir.path(), "URL").unwrap(), "http://127.0.0.1:5");
        assert_eq!(read_env(dir.path(), "B").unwrap(), "x=y");
        let missing = read_env(dir.path(), "C").unwrap_err();
        assert!(missing.ends_with("does not set C"), "{missing}");
    }

    #[test]
    fn a_missing_script_is_an_error() {
        let err = Scripted::new("scripts/no-such-script", "testkit").unwrap_err();
        assert!(err.ends_with("no-such-script not found"), "{err}");
    }
}
