//! moto's server for tests that provision AWS resources through the operator or the CLI.

use std::time::Duration;

use serde_json::Value;
use tollbridge_testkit::plain::{Call, Reply};
use tollbridge_testkit::scripted::Scripted;

/// Environment variable with the URL of a running moto server (`http://127.0.0.1:PORT`).
const MOTO_URL_ENV: &str = "TOLLBRIDGE_MOTO_URL";

/// Upper bound of `scripts/moto start` (a first run installs moto in a venv: about a minute;
/// pip is bounded by 15 minutes, the server's start by 60 s).
const START_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// moto's server: the one `scripts/test` started, or one started for this test (stopped when
/// dropped, or by its watchdog when the test process ends first).
pub struct MotoServer {
    pub url: String,
    own: Option<Scripted>,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        if let Ok(url) = std::env::var(MOTO_URL_ENV) {
            return MotoServer { url, own: None };
        }
        let own = Scripted::new("scripts/moto", "moto").unwrap_or_else(|e| panic!("no moto server: {e}"));
        own.start(&[], START_TIMEOUT).unwrap_or_else(|e| panic!("no moto server: {e}"));
        let url = own.env(MOTO_URL_ENV).unwrap_or_else(|e| panic!("no moto server: {e}"));
        MotoServer { url, own: Some(own) }
    }

    /// `GET` an API Gateway path; moto picks the service from the credential scope.
    pub async fn get(&self, path: &str) -> Value {
        self.call(hyper::Method::GET, path).await.json()
    }

    pub async fn call(&self, method: hyper::Method, path: &str) -> Reply {
        self.call_in("us-east-1", method, path).await
    }

    /// `GET` an API Gateway path in `region` (moto keeps one state per region).
    pub async fn get_in(&self, region: &str, path: &str) -> Value {
        self.call_in(region, hyper::Method::GET, path).await.json()
    }

    pub async fn call_in(&self, region: &str, method: hyper::Method, path: &str) -> Reply {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/apigateway/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        let call = Call::new(method.as_str(), &format!("{}{path}", self.url)).header("authorization", &auth);
        call.send().await.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let _ = own.stop();
        }
    }
}
