//! Helpers for the end-to-end tests of `tollbridge run`: the process under test, an HTTP
//! client, a backend that records what it receives, test certificates and YAML builders.
//!
//! Everything runs on 127.0.0.1. Every wait is bounded in time and every loop in count.

// Each test binary uses its own subset of the helpers.
#![allow(dead_code)]

pub mod client;
pub mod cluster;
pub mod doc_commands;
pub mod helm;
pub mod jwt;
pub mod moto;
pub mod process;
pub mod recorder;
pub mod redis;
pub mod tls;
pub mod yaml;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns true; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
