//! The tollbridge data plane: serves the routes of a [`GatewayIr`] (HTTP/1.1 of its own, HTTP/2
//! through hyper), enforcing API keys, rate limits and quotas.
//!
//! [`GatewayIr`]: tollbridge_provider::GatewayIr
#![forbid(unsafe_code)]

pub mod admin;
mod body;
pub mod counter_store;
pub mod echo;
pub mod fast_hash;
mod hostmatch;
pub mod http1;
pub mod metrics;
mod percent;
pub mod policy;
mod provider;
mod proxy;
mod request_check;
pub mod router;
mod runtime;
mod server;
mod tls;
mod upstream;

pub use admin::{AdminDocs, LazyJson};
pub use counter_store::{CounterStore, CounterStoreSettings, FailureMode, DEFAULT_LEASE_MAX};
pub use provider::LocalProvider;
pub use runtime::Bind;
pub use server::{ServerSettings, Shared};
pub use upstream::UpstreamSettings;
