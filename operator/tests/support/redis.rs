//! A real `redis-server` on 127.0.0.1 for the shared-counter tests: plain or TLS, with or
//! without a password, stopped and started again on the same port. Killed when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::free_port;
use super::tls::TestCert;

/// How a server is started.
#[derive(Clone, Default)]
pub struct RedisOptions {
    pub password: Option<String>,
    /// Serve TLS only, with this certificate (for `localhost`).
    pub tls: Option<(String, String)>,
}

pub struct Redis {
    pub port: u16,
    options: RedisOptions,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

/// The `redis-server` binary: `$REDIS_SERVER`, else from PATH.
fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl Redis {
    pub fn start(options: RedisOptions) -> Self {
        let dir = tempfile::Builder::new().prefix("tollbridge-redis-").tempdir().expect("temp dir");
        let mut redis = Self { port: free_port(), options, dir, child: None, starts: 0 };
        redis.start_again();
        redis
    }

    /// A TLS server for `localhost` and the certificate its clients must trust.
    pub fn start_tls(password: Option<&str>) -> (Self, TestCert) {
        let cert = TestCert::self_signed("localhost");
        let options = RedisOptions {
            password: password.map(str::to_owned),
            tls: Some((cert.cert_pem.clone(), cert.key_pem.clone())),
        };
        (Self::start(options), cert)
    }

    /// The URL tollbridge is given (no password: that goes in a file).
    pub fn url(&self) -> String {
        match self.options.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server (again) on its port, without persistence, and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--dir".into(), self.dir.path().display().to_string()]);
        // DEBUG SLEEP makes the server stall, as a slow one does.
        args.extend(["--enable-debug-command".into(), "local".into()]);
        if let Some(password) = &self.options.password {
            args.extend(["--requirepass".into(), password.clone()]);
        }
        match &self.options.tls {
            Some((cert, key)) => {
                let (cert_file, key_file) =
                    (self.dir.path().join("tls.crt"), self.dir.path().join("tls.key"));
                fs::write(&cert_file, cert).expect("write redis certificate");
                fs::write(&key_file, key).expect("write redis key");
                args.extend(["--port".into(), "0".into(), "--tls-port".into(), self.port.to_string()]);
                args.extend(["--tls-cert-file".into(), cert_file.display().to_string()]);
                args.extend(["--tls-key-file".into(), key_file.display().to_string()]);
                args.extend(["--tls-auth-clients".into(), "no".into()]);
            }
            None => args.extend(["--port".into(), self.port.to_string()]),
        }
        let log =
            fs::File::create(self.dir.path().join(format!("redis-{}.log", self.starts))).expect("redis log");
        self.starts += 1;
        let child = Command::new(binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} (install redis-server; scripts/test does): {e}", binary())
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: what a crash or a lost node does) and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli` against the server (plain servers only) and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.options.password {
            command.env("REDISCLI_AUTH", password);
        }
        let out = command.args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A file holding the password (for `--counter-store-password-file`).
    pub fn password_file(&self) -> PathBuf {
        let path = self.dir.path().join("password");
        fs::write(&path, format!("{}\n", self.options.password.as_deref().unwrap_or("")))
            .expect("password file");
        path
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
