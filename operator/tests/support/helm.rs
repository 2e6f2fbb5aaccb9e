//! helm from `scripts/helm path` (built from its Go module once and cached), run with its own
//! configuration directories and a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use super::cluster::{repo_root, run_captured};

/// Upper bound of `scripts/helm path` (a cold build takes a few minutes; the script also waits
/// for another build holding its lock).
const HELM_BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Upper bound of one helm run (install and uninstall talk to the API server).
const HELM_TIMEOUT: Duration = Duration::from_secs(240);

/// The chart.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/tollbridge")
}

/// The helm binary of `scripts/helm path`, built on first use.
pub fn helm_binary() -> &'static Path {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = HELM.get_or_init(|| {
        let script = repo_root().join("scripts/helm");
        let out =
            run_captured(Command::new(&script).arg("path"), None, HELM_BUILD_TIMEOUT, "scripts/helm path");
        if !out.status.success() {
            return Err(format!("scripts/helm path failed ({}):\n{}", out.status, stderr(&out)));
        }
        let path = PathBuf::from(stdout(&out).trim());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("scripts/helm path printed {path:?}, which is not a file"))
        }
    });
    match found {
        Ok(path) => path,
        Err(e) => panic!("no helm: {e}"),
    }
}

/// helm's own configuration, cache and data directories, shared by the tests of one binary
/// (so nothing is written to the home directory).
fn helm_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::Builder::new().prefix("tollbridge-helm-").tempdir().expect("helm home"))
        .path()
}

/// The environment that keeps helm's configuration, cache and data in [`helm_home`].
pub fn helm_env() -> [(&'static str, PathBuf); 3] {
    let home = helm_home();
    [
        ("HELM_CONFIG_HOME", home.join("config")),
        ("HELM_CACHE_HOME", home.join("cache")),
        ("HELM_DATA_HOME", home.join("data")),
    ]
}

/// `helm ARGS…` with a deadline (the kubeconfig comes from the arguments, never from the
/// environment).
pub fn helm(args: &[&str]) -> Output {
    let mut cmd = Command::new(helm_binary());
    cmd.args(args).envs(helm_env()).env_remove("KUBECONFIG");
    run_captured(&mut cmd, None, HELM_TIMEOUT, &format!("helm {}", args.join(" ")))
}

/// `helm ARGS…`, returning stdout; panics with stderr when it fails.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(out.status.success(), "helm {} failed ({}):\n{}", args.join(" "), out.status, stderr(&out));
    stdout(&out)
}

/// `helm ARGS…` expected to fail: returns stdout and stderr together.
pub fn helm_err(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        !out.status.success(),
        "helm {} succeeded but was expected to fail:\n{}",
        args.join(" "),
        stdout(&out)
    );
    format!("{}{}", stdout(&out), stderr(&out))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
