//! The tollbridge data plane: serves the routes of a [`GatewayIr`] with hyper, enforcing API
//! keys, rate limits and quotas.
#![forbid(unsafe_code)]

pub mod policy;
pub mod router;
