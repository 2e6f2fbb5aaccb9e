//! The provider-neutral core of tollbridge: the gateway IR every provider consumes, the
//! [`Provider`] trait, [`Capabilities`], secret wrappers that never print their value, and the
//! observe → diff → execute kit of the cloud providers ([`reconcile`]).
#![forbid(unsafe_code)]

pub mod capabilities;
pub mod ir;
pub mod jwks;
pub mod provider;
pub mod ratelimit;
pub mod reconcile;
pub mod secret;

pub use capabilities::{Capabilities, Feature};
pub use ir::*;
pub use provider::{Provider, ProviderError, Provisioned, UsageRequest};
pub use secret::{SecretBytes, SecretString};
