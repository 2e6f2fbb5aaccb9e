//! A real Kubernetes control plane for the tests (etcd, kube-apiserver and
//! kube-controller-manager from `scripts/control-plane`), namespaces that clean up after
//! themselves, and the `tollbridge operator` / `tollbridge proxy` processes under test.
//!
//! [`Cluster::shared`] uses the control plane that `scripts/test` started (its directory in
//! `TOLLBRIDGE_TEST_CLUSTER`) or, when there is none, starts one for this test process and
//! leaves a detached watchdog that stops it once the process has exited, even after a panic.
//!
//! There is no kubelet and no scheduler: Pods never run; Deployments and ReplicaSets exist
//! as objects only. The Gateway API standard CRDs and ours (`crds/`) are installed.
//!
//! Every wait is bounded in time: each `kubectl` run gets `--request-timeout=30s` and is
//! killed after [`KUBECTL_TIMEOUT`]; the control plane script is killed after
//! [`BUILD_TIMEOUT`] / [`START_TIMEOUT`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub use tollbridge_testkit::command::run_captured;
use tollbridge_testkit::command::run_logged;
pub use tollbridge_testkit::repo_root;
use tollbridge_testkit::scripted::{read_env, Scripted};

/// Environment variable naming a directory started by `scripts/control-plane start`.
pub const CLUSTER_ENV: &str = "TOLLBRIDGE_TEST_CLUSTER";

/// Environment variable naming a directory started by `scripts/node start` whose containerd
/// holds the tollbridge image.
pub const NODE_CLUSTER_ENV: &str = "TOLLBRIDGE_TEST_NODE_CLUSTER";

/// Field manager of everything the tests apply.
pub const FIELD_MANAGER: &str = "tollbridge-tests";
const FIELD_MANAGER_ARG: &str = "--field-manager=tollbridge-tests";

/// `controllerName` of tollbridge's GatewayClasses.
pub const CONTROLLER_NAME: &str = "tollbridge.dev/gateway-controller";

/// Upper bound of `scripts/control-plane build` (a cold build takes about 7 minutes; the
/// script also waits up to an hour for another build holding its lock).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(75 * 60);

/// Upper bound of `scripts/control-plane start` (each of its waits is bounded by 120 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Upper bound of one `kubectl` run (each request it makes is bounded by 30 s).
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long [`ClusterProcess::terminate`] waits for the exit after SIGTERM.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running control plane: where its kubeconfig, kubectl and API server are.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    api_server: String,
    /// Started by this test process (and stopped by its watchdog), not by `scripts/test`.
    owned: bool,
}

impl Cluster {
    /// The control plane of this test process, started on first use (see the module docs).
    /// Panics with the reason when it cannot be started; every later call panics the same way
    /// without trying again.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        match SHARED.get_or_init(|| Self::attach_or_start(CLUSTER_ENV, Self::start_own)) {
            Ok(cluster) => cluster,
            Err(e) => panic!("no test cluster: {e}"),
        }
    }

    /// The one-node cluster of this test process (`scripts/node`: a kubelet, kube-proxy and a
    /// scheduler beside the control plane, the tollbridge image in its containerd): the one
    /// `scripts/test` started (`TOLLBRIDGE_TEST_NODE_CLUSTER`), else one started here (as root),
    /// stopped by a watchdog once this process has exited. Panics when there is none.
    pub fn node() -> &'static Cluster {
        static NODE: OnceLock<Result<Cluster, String>> = OnceLock::new();
        match NODE.get_or_init(|| Self::attach_or_start(NODE_CLUSTER_ENV, Self::start_own_node)) {
            Ok(cluster) => cluster,
            Err(e) => panic!("no one-node test cluster: {e}"),
        }
    }

    fn attach_or_start(env: &str, start: fn() -> Result<Cluster, String>) -> Result<Cluster, String> {
        if let Some(dir) = std::env::var_os(env).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            if dir.join("env").is_file() {
                return Self::from_env_file(&dir, false);
            }
            eprintln!(
                "[cluster] {env}={} has no env file: starting a cluster for this process",
                dir.display()
            );
        }
        start()
    }

    /// Reads `DIR/env` as written by `scripts/control-plane start DIR`.
    fn from_env_file(dir: &Path, owned: bool) -> Result<Cluster, String> {
        let path = dir.join("env");
        let cluster = Cluster {
            dir: dir.to_owned(),
            kubeconfig: read_env(dir, "KUBECONFIG")?.into(),
            kubectl: read_env(dir, "TOLLBRIDGE_KUBECTL")?.into(),
            api_server: read_env(dir, "TOLLBRIDGE_API_SERVER")?,
            owned,
        };
        if !cluster.kubeconfig.is_file() {
            return Err(format!(
                "kubeconfig {} (from {}) does not exist",
                cluster.kubeconfig.display(),
                path.display()
            ));
        }
        if !cluster.kubectl.is_file() {
            return Err(format!(
                "kubectl {} (from {}) does not exist",
                cluster.kubectl.display(),
                path.display()
            ));
        }
        Ok(cluster)
    }

    /// `scripts/control-plane build`, then `start` in a fresh temporary directory, guarded by a
    /// watchdog that stops it and removes the directory once this process has exited.
    fn start_own() -> Result<Cluster, String> {
        Self::start_with("scripts/control-plane", |_| Vec::new())
    }

    /// `scripts/node start` in a fresh temporary directory (guarded by a watchdog), then the
    /// tollbridge image built (`scripts/image build`, dev profile) and loaded into its containerd.
    fn start_own_node() -> Result<Cluster, String> {
        Self::start_with("scripts/node", |dir| {
            let archive = repo_root().join("target/image/tollbridge.oci.tar");
            let mut build = Command::new(repo_root().join("scripts/image"));
            build.arg("build").arg(&archive).env("IMAGE_PROFILE", "dev");
            let mut load = Command::new(repo_root().join("scripts/node"));
            load.arg("load").arg(dir).arg(&archive);
            vec![(build, "scripts/image build".into()), (load, "scripts/node load".into())]
        })
    }

    /// `SCRIPT build`, `SCRIPT start DIR` in a fresh temporary directory, then the commands of
    /// `then(DIR)`; a watchdog runs `SCRIPT stop DIR` once this process exits (and removes DIR
    /// when that succeeded).
    fn start_with(script: &str, then: impl Fn(&Path) -> Vec<(Command, String)>) -> Result<Cluster, String> {
        let scripted = Scripted::new(script, "cluster")?;
        let dir = scripted.dir();
        scripted.run("build", &["build"], BUILD_TIMEOUT)?;
        scripted.start(&[], START_TIMEOUT)?;
        for (i, (mut command, what)) in then(dir).into_iter().enumerate() {
            run_logged(&mut command, &dir.join(format!("harness-step-{i}.log")), BUILD_TIMEOUT, &what)?;
        }
        Self::from_env_file(dir, true)
    }

    /// The state directory of the control plane (`logs/` holds the component logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this test process started the control plane (rather than `scripts/test`).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// The admin (system:masters) kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `NAME` from the cluster's env file (e.g. `TOLLBRIDGE_NODE_NAME`); panics when missing.
    pub fn env_value(&self, name: &str) -> String {
        read_env(&self.dir, name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A kubectl of the control plane's version.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// The API server URL, `https://127.0.0.1:PORT`.
    pub fn api_server(&self) -> &str {
        &self.api_server
    }

    /// A kube client authenticated as the admin of the kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let path = self.kubeconfig.display();
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("read kubeconfig {path}: {e}"));
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("client config from kubeconfig {path}: {e}"));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("kube client for {path}: {e}"))
    }

    /// Runs `kubectl --kubeconfig KUBECONFIG --request-timeout=30s ARGS…`, with `stdin` as its
    /// standard input when given. Killed (and reported as failed) after [`KUBECTL_TIMEOUT`].
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--request-timeout=30s").args(args);
        let what = format!("kubectl {}", args.join(" "));
        run_captured(&mut cmd, stdin, KUBECTL_TIMEOUT, &what)
    }

    /// [`Self::kubectl`], returning stdout; panics with the command and its stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        if !out.status.success() {
            panic!(
                "kubectl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a fresh namespace named `PREFIX-PID-N` (a DNS label of at most 63 characters),
    /// deleted (without waiting) when the returned value is dropped.
    pub fn namespace(&self, prefix: &str) -> TestNamespace<'_> {
        let name = self.unique_name(prefix);
        self.kubectl_ok(&["create", "namespace", &name], None);
        TestNamespace { cluster: self, name }
    }

    /// A name unique to this test process and call: `PREFIX-PID-N`, lower-cased, other
    /// characters than `[a-z0-9-]` replaced by `-`, the prefix shortened so that the whole is
    /// a DNS label (at most 63 characters). For cluster-scoped objects such as GatewayClasses.
    pub fn unique_name(&self, prefix: &str) -> String {
        unique_name(prefix)
    }

    /// `kubectl apply --server-side` of objects without a namespace (GatewayClass,
    /// ProviderConfig). Returns stdout; panics with stderr on failure. They outlive the test:
    /// remove them with [`Self::delete_cluster_scoped`].
    pub fn apply_cluster_scoped(&self, yaml: &str) -> String {
        self.kubectl_ok(&apply_args(), Some(yaml))
    }

    /// Deletes a cluster-scoped object (e.g. `gatewayclass NAME`) without waiting for it to go;
    /// a missing object is not an error. Panics with stderr when kubectl fails otherwise.
    pub fn delete_cluster_scoped(&self, kind: &str, name: &str) {
        self.kubectl_ok(&["delete", kind, name, "--ignore-not-found", "--wait=false"], None);
    }

    /// A guard deleting the cluster-scoped `KIND NAME` when dropped (errors ignored), for
    /// objects such as GatewayClasses that the test's namespace does not take with it.
    pub fn delete_on_drop(&self, kind: &str, name: &str) -> ClusterScopedGuard<'_> {
        ClusterScopedGuard { cluster: self, kind: kind.to_owned(), name: name.to_owned() }
    }

    /// `kubectl get KIND NAME -o json` of a cluster-scoped object; panics when it fails.
    pub fn get_cluster_scoped_json(&self, kind: &str, name: &str) -> serde_json::Value {
        parse_json(&self.kubectl_ok(&["get", kind, name, "-o", "json"], None), kind, name)
    }
}

/// Deletes a cluster-scoped object when dropped; see [`Cluster::delete_on_drop`].
pub struct ClusterScopedGuard<'c> {
    cluster: &'c Cluster,
    kind: String,
    name: String,
}

impl ClusterScopedGuard<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ClusterScopedGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", &self.kind, &self.name, "--ignore-not-found", "--wait=false"], None);
    }
}

/// A namespace created for one test; deleted (`--wait=false`, errors ignored) on drop.
pub struct TestNamespace<'c> {
    cluster: &'c Cluster,
    name: String,
}

impl TestNamespace<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &Cluster {
        self.cluster
    }

    /// `kubectl -n NS ARGS…` (see [`Cluster::kubectl`]).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.cluster.kubectl(&self.with_namespace(args), stdin)
    }

    /// `kubectl -n NS ARGS…`, returning stdout; panics with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.cluster.kubectl_ok(&self.with_namespace(args), stdin)
    }

    fn with_namespace<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        all
    }

    /// `kubectl apply --server-side --field-manager=tollbridge-tests -n NS -f -` of `yaml`
    /// (one or more documents). Returns stdout; panics with stderr and the input on failure.
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_ok(&apply_args(), Some(yaml))
    }

    /// The same apply, expected to be refused: returns kubectl's stderr; panics when it succeeds.
    pub fn apply_err(&self, yaml: &str) -> String {
        let out = self.kubectl(&apply_args(), Some(yaml));
        assert!(
            !out.status.success(),
            "kubectl apply in {} succeeded but was expected to fail; stdout:\n{}\ninput:\n{yaml}",
            self.name,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Deletes `KIND NAME` without waiting for it to go (finalizers may hold it); panics when
    /// kubectl fails (a missing object included).
    pub fn delete(&self, kind: &str, name: &str) {
        self.kubectl_ok(&["delete", kind, name, "--wait=false"], None);
    }

    /// `kubectl get KIND NAME -o json`; panics when it fails.
    pub fn get_json(&self, kind: &str, name: &str) -> serde_json::Value {
        parse_json(&self.kubectl_ok(&["get", kind, name, "-o", "json"], None), kind, name)
    }

    /// Polls (every 200 ms, blocking the thread) until `KIND NAME` no longer exists; panics
    /// after `timeout` with the object as it is then.
    pub fn wait_deleted(&self, kind: &str, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(object) = self.try_get_json(kind, name) else { return };
            assert!(
                Instant::now() < deadline,
                "{kind} {name} in {} still present {timeout:?} after its deletion:\n{object:#}",
                self.name
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubectl get KIND NAME -o json`, or `None` when the object does not exist; panics on
    /// any other failure.
    pub fn try_get_json(&self, kind: &str, name: &str) -> Option<serde_json::Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json", "--ignore-not-found"], None);
        if !out.status.success() {
            panic!(
                "kubectl -n {} get {kind} {name} failed ({}):\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        (!stdout.trim().is_empty()).then(|| parse_json(&stdout, kind, name))
    }
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"], None);
    }
}

fn apply_args() -> [&'static str; 5] {
    ["apply", "--server-side", FIELD_MANAGER_ARG, "-f", "-"]
}

fn parse_json(text: &str, kind: &str, name: &str) -> serde_json::Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("kubectl get {kind} {name}: output is not JSON ({e}):\n{text}"))
}

/// See [`Cluster::unique_name`].
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let suffix = format!("-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
    let mut head: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    head.truncate(63 - suffix.len());
    let head = head.trim_matches('-');
    let head = if head.is_empty() { "t" } else { head };
    format!("{head}{suffix}")
}

/// Serializes the tests that hold the guard (e.g. those running an operator, which acts on the
/// whole cluster). Tests of one binary run on parallel threads, each with its own runtime;
/// the lock is shared by all of them. A panicking holder releases it (no poisoning).
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

// ---------------------------------------------------------------------------------------------
// The operator and proxy processes
// ---------------------------------------------------------------------------------------------

/// `tollbridge operator ARGS…` against a [`Cluster`]; killed when dropped.
///
/// Expected flags: `--namespace NS --lease-namespace NS --metrics-address 127.0.0.1:PORT
/// --identity ID --lease-duration-seconds N`.
pub struct Operator(ClusterProcess);

impl Operator {
    pub fn spawn(cluster: &Cluster, args: &[&str]) -> Operator {
        Operator(ClusterProcess::spawn(cluster, "operator", args))
    }
}

/// `tollbridge proxy ARGS…` against a [`Cluster`]; killed when dropped.
///
/// Expected flags: `--gateway NS/NAME --admin-address 127.0.0.1:PORT`.
pub struct Proxy(ClusterProcess);

impl Proxy {
    pub fn spawn(cluster: &Cluster, args: &[&str]) -> Proxy {
        Proxy(ClusterProcess::spawn(cluster, "proxy", args))
    }
}

impl std::ops::Deref for Operator {
    type Target = ClusterProcess;
    fn deref(&self) -> &ClusterProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Operator {
    fn deref_mut(&mut self) -> &mut ClusterProcess {
        &mut self.0
    }
}

impl std::ops::Deref for Proxy {
    type Target = ClusterProcess;
    fn deref(&self) -> &ClusterProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Proxy {
    fn deref_mut(&mut self) -> &mut ClusterProcess {
        &mut self.0
    }
}

/// A `tollbridge SUBCOMMAND` process with `KUBECONFIG` set to the cluster's admin kubeconfig
/// and `RUST_LOG=info,tollbridge=debug`; stdout and stderr go to a log file in its own
/// temporary directory. Killed (SIGKILL) when dropped; when dropped during a panic its log
/// is written to stderr (shown with the failed test's output).
pub struct ClusterProcess {
    child: Child,
    subcommand: &'static str,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClusterProcess {
    /// The path of the binary under test.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_tollbridge")
    }

    fn spawn(cluster: &Cluster, subcommand: &'static str, args: &[&str]) -> ClusterProcess {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tollbridge-{subcommand}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("temporary directory for tollbridge {subcommand}: {e}"));
        let log = dir.path().join(format!("{subcommand}.log"));
        let stdout = fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let stderr = stdout.try_clone().unwrap_or_else(|e| panic!("duplicate {}: {e}", log.display()));
        let child = Command::new(Self::binary())
            .arg(subcommand)
            .args(args)
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "info,tollbridge=debug")
            // Never ask an instance metadata service for AWS credentials (no traffic off loopback).
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {subcommand} {}: {e}", Self::binary(), args.join(" ")));
        ClusterProcess { child, subcommand, log, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the process wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(status) => status.is_none(),
            Err(e) => panic!("poll tollbridge {}: {e}", self.subcommand),
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or_else(|e| panic!("poll tollbridge {}: {e}", self.subcommand))
    }

    /// SIGKILL, then reaps the process. A process that already exited is left as it is.
    pub fn kill(&mut self) -> ExitStatus {
        if self.try_status().is_none() {
            let _ = self.child.kill();
        }
        self.child.wait().unwrap_or_else(|e| panic!("wait for tollbridge {}: {e}", self.subcommand))
    }

    /// SIGTERM, then waits up to [`TERMINATE_TIMEOUT`] for the exit; panics with the log when
    /// the process is still running then (and kills it).
    pub async fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        signal(self.pid(), "TERM");
        self.wait_exit(TERMINATE_TIMEOUT).await
    }

    /// Waits up to `timeout` for the process to exit; panics with the log (and kills it)
    /// when it is still running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "tollbridge {} still running after {timeout:?}; log:\n{}",
                    self.subcommand,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` for the log to contain `needle`; panics with the log when it does
    /// not, or when the process exits first.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return;
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "tollbridge {} exited ({status}) before logging {needle:?}; log:\n{log}",
                    self.subcommand
                );
            }
            assert!(
                Instant::now() < deadline,
                "tollbridge {} did not log {needle:?} within {timeout:?}; log:\n{log}",
                self.subcommand
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "----- log of tollbridge {} -----\n{}----- end of log -----",
                self.subcommand,
                self.log()
            );
        }
    }
}

/// Sends SIG`name` to `pid` with the `kill` command; panics when that fails.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run kill -{name} {pid}: {e}"));
    assert!(status.success(), "kill -{name} {pid} failed ({status})");
}
