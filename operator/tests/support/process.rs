//! The `tollbridge run` process under test, its configuration directory and free ports.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::client::Client;

/// How long `tollbridge run` gets to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Lowest port handed out by [`free_port`].
const FIRST_PORT: u16 = 10_000;

/// A port that was free a moment ago on 127.0.0.1 (bound, checked, released).
///
/// Ports come from below the kernel's ephemeral range: a port from `bind(0)` is in that range,
/// and between its release and the child's bind the kernel may give it to the local end of an
/// outgoing connection (the tests open many), which made parallel runs flaky. Within one test
/// binary the ports handed out are distinct; across processes the bind check stands guard.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicUsize> = OnceLock::new();
    let ceiling = ephemeral_low().max(FIRST_PORT + 1000);
    let span = usize::from(ceiling - FIRST_PORT);
    // Start where another test binary running at the same time is unlikely to.
    let next = NEXT.get_or_init(|| AtomicUsize::new((std::process::id() as usize).wrapping_mul(7919) % span));
    for _ in 0..1000 {
        let offset = next.fetch_add(1, Ordering::SeqCst) % span;
        let port = FIRST_PORT + u16::try_from(offset).expect("port offset");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {ceiling} after 1000 tries");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A temporary directory holding the YAML files (`config/`), the state dir (`state/`) and the
/// logs of the processes started on it. Removed on drop.
pub struct ConfigDir {
    root: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        let root = tempfile::Builder::new().prefix("tollbridge-e2e-").tempdir().expect("temp dir");
        fs::create_dir(root.path().join("config")).expect("create config dir");
        Self { root }
    }

    /// The directory passed to `tollbridge run -f`.
    pub fn config(&self) -> PathBuf {
        self.root.path().join("config")
    }

    /// A directory for `--state-dir` (created by tollbridge when missing).
    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Writes `config/<name>` atomically (a write beside it, then a rename), so that a reload
    /// never reads a half-written file.
    pub fn write(&self, name: &str, contents: &str) {
        let partial = self.root.path().join(format!(".{name}.partial"));
        fs::write(&partial, contents).expect("write config file");
        fs::rename(&partial, self.config().join(name)).expect("rename config file");
    }
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running `tollbridge run`, killed when dropped.
pub struct Tollbridge {
    child: Child,
    pub admin: SocketAddr,
    log: PathBuf,
    client: Client,
}

impl Tollbridge {
    /// The path of the binary under test.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_tollbridge")
    }

    /// Starts `tollbridge run -f <config> --admin-address 127.0.0.1:<free> --poll-interval-ms 100
    /// <extra…>` and waits until `/readyz` answers 200.
    pub async fn start(dir: &ConfigDir, extra: &[&str]) -> Self {
        let mut tollbridge = Self::spawn(dir, extra);
        tollbridge.wait_ready(READY_TIMEOUT).await;
        tollbridge
    }

    /// [`start`](Self::start) with extra environment variables.
    pub async fn start_with_env(dir: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut tollbridge = Self::spawn_with_env(dir, extra, env);
        tollbridge.wait_ready(READY_TIMEOUT).await;
        tollbridge
    }

    /// Starts the process without waiting for it.
    pub fn spawn(dir: &ConfigDir, extra: &[&str]) -> Self {
        Self::spawn_with_env(dir, extra, &[])
    }

    fn spawn_with_env(dir: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let log = dir.root().join(format!("tollbridge-{n}.log"));
        let stderr = fs::File::create(&log).expect("create log file");
        let child = Command::new(Self::binary())
            .arg("run")
            .arg("-f")
            .arg(dir.config())
            .args(["--admin-address", &admin.to_string(), "--poll-interval-ms", "100"])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start tollbridge");
        Self { child, admin, log, client: Client::new() }
    }

    /// Waits for `/readyz` to answer 200; panics with the log if the process exits or the
    /// deadline passes.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!("tollbridge exited with {status} before it was ready; log:\n{}", self.log());
            }
            let url = format!("http://{}/readyz", self.admin);
            if let Ok(resp) = self.client.try_get(&url, &[]).await {
                if resp.status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "tollbridge not ready after {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process wrote on stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET http://<admin><path>`.
    pub async fn admin_get(&self, path: &str) -> super::client::Resp {
        self.client.get(&format!("http://{}{path}", self.admin), &[]).await
    }

    /// The `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        self.admin_get("/status").await.json()
    }

    /// Sends SIGTERM (with the `kill` command) and waits up to `timeout` for the exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        self.wait_exit(timeout).await
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tollbridge still running after {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll child").is_none()
    }
}

impl Drop for Tollbridge {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
