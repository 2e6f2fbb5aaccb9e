//! Plain HTTP/1.1 calls to moto's API Gateway APIs (or a [`super::FaultProxy`] in front of
//! it), without the SDK: to set up or inspect state behind the provider's back, and to test
//! the harness itself.
//!
//! ```ignore
//! let apis = plain::call(moto.url(), "GET", "/v2/apis", None).await?.json();
//! let created = plain::call(url, "POST", "/restapis", Some(json!({"name": "r"}))).await?;
//! ```

use tollbridge_testkit::plain::Call;
pub use tollbridge_testkit::plain::Reply;

use super::moto;

/// `METHOD base_url + path_and_query` with a JSON `body` (if any), over a new connection,
/// signed for moto's `apigateway` service (see [`moto::authorization`]). `Err` when there
/// is no HTTP answer (refused, dropped, or over [`tollbridge_testkit::plain::TIMEOUT`]).
pub async fn call(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, String> {
    let url = format!("{}{path_and_query}", base_url.trim_end_matches('/'));
    let call = Call::new(method, &url)
        .header("authorization", &moto::authorization("apigateway"))
        .header("x-amz-date", "20260101T000000Z");
    let call = match body {
        Some(body) => call.json(&body),
        None => call.body("", "application/json"),
    };
    call.send().await
}

/// What API Gateway's answers say beyond the status.
pub trait AwsReply {
    /// The `x-amzn-ErrorType` header, if any.
    fn error_type(&self) -> Option<&str>;
}

impl AwsReply for Reply {
    fn error_type(&self) -> Option<&str> {
        self.header("x-amzn-errortype")
    }
}
