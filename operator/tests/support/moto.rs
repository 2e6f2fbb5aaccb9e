//! moto's server for tests that provision AWS resources through the operator or the CLI.

use serde_json::Value;

/// moto's server: the one `scripts/test` started, or one started for this test.
pub struct MotoServer {
    pub url: String,
    dir: Option<tempfile::TempDir>,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        if let Ok(url) = std::env::var("TOLLBRIDGE_MOTO_URL") {
            return MotoServer { url, dir: None };
        }
        let dir = tempfile::tempdir().expect("temp dir for moto");
        let script = format!("{}/../scripts/moto", env!("CARGO_MANIFEST_DIR"));
        let status = std::process::Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .status()
            .expect("run scripts/moto");
        assert!(status.success(), "scripts/moto start failed");
        let env = std::fs::read_to_string(dir.path().join("env")).expect("moto env");
        let url = env.trim().trim_start_matches("export TOLLBRIDGE_MOTO_URL=").to_string();
        MotoServer { url, dir: Some(dir) }
    }

    /// `GET` an API Gateway path; moto picks the service from the credential scope.
    pub async fn get(&self, path: &str) -> Value {
        self.call(hyper::Method::GET, path).await.json()
    }

    pub async fn call(&self, method: hyper::Method, path: &str) -> super::client::Resp {
        self.call_in("us-east-1", method, path).await
    }

    /// `GET` an API Gateway path in `region` (moto keeps one state per region).
    pub async fn get_in(&self, region: &str, path: &str) -> Value {
        self.call_in(region, hyper::Method::GET, path).await.json()
    }

    pub async fn call_in(&self, region: &str, method: hyper::Method, path: &str) -> super::client::Resp {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/apigateway/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        let client = super::client::Client::new();
        client.request(method, &format!("{}{path}", self.url), &[("authorization", auth.as_str())], "").await
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let script = format!("{}/../scripts/moto", env!("CARGO_MANIFEST_DIR"));
            let _ = std::process::Command::new(script).arg("stop").arg(dir.path()).status();
        }
    }
}
