//! Plain HTTP/1.1 calls (no SDK, no provider) to the fake, through the validator or not: to
//! set up or inspect state behind the provider's back, and to test the harness itself.
//!
//! ```ignore
//! let reply = plain::put(&apim.arm_url("apis/orders")).json(&json!({"properties": {…}})).send().await?;
//! let reply = plain::delete(&url).header("If-Match", "*").send().await?;
//! let next = plain::get(reply.json()["nextLink"].as_str().unwrap()).send().await?;
//! ```
//!
//! Every call sends `Authorization: Bearer` [`TOKEN`] unless told otherwise
//! ([`Call::no_auth`]), and is bounded by [`tollbridge_testkit::plain::TIMEOUT`].

pub use tollbridge_testkit::plain::{Call, Reply};

/// The bearer token the tests send (the fake takes any non-empty token unless told to
/// require one).
pub const TOKEN: &str = "tollbridge-test-token";

/// `METHOD url` with `Authorization: Bearer` [`TOKEN`].
pub fn call(method: &str, url: &str) -> Call {
    Call::new(method, url).bearer(TOKEN)
}

pub fn get(url: &str) -> Call {
    call("GET", url)
}

pub fn put(url: &str) -> Call {
    call("PUT", url)
}

pub fn patch(url: &str) -> Call {
    call("PATCH", url)
}

pub fn post(url: &str) -> Call {
    call("POST", url)
}

pub fn delete(url: &str) -> Call {
    call("DELETE", url)
}

/// What ARM's answers say beyond the status.
pub trait ArmReply {
    /// `error.code` of an ARM error body.
    fn error_code(&self) -> Option<String>;
}

impl ArmReply for Reply {
    fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
    }
}
