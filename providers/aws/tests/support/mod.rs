//! Real-components harness for the Amazon API Gateway provider's integration tests.
//!
//! - [`moto::Moto`]: moto's server (`scripts/moto`), the AWS API imitation the provider talks
//!   to: the one `scripts/test` started (`TOLLBRIDGE_MOTO_URL`) or one started for this test
//!   process. Its state is shared by every test of a binary: hold [`moto::Moto::fresh`] (or
//!   [`moto::Moto::exclusive`]) for the duration of a test.
//! - [`fault_proxy::FaultProxy`]: an HTTP/1.1 reverse proxy in front of moto that forwards
//!   requests unchanged, answers chosen ones with AWS-style throttling or server errors,
//!   delays or drops them, and records every request (to count write calls).
//! - [`plain`]: plain HTTP calls to moto's API Gateway APIs (no SDK), for setting up or
//!   inspecting state behind the provider's back.
//!
//! Everything listens and connects on 127.0.0.1 only. Every wait is bounded in time.

// Each test binary uses its own subset of the helpers.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod moto;
pub mod plain;

// Not every binary names every type.
#[allow(unused_imports)]
pub use fault_proxy::{Fault, FaultProxy, Rule, Seen};
pub use moto::Moto;
#[allow(unused_imports)]
pub use plain::AwsReply;
