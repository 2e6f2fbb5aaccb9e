//! tollbridge: Gateway API objects, API keys and quotas, provisioned onto Amazon API Gateway,
//! Azure API Management or a built-in proxy.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod crds;
mod parallel;
pub mod providers;
pub mod snapshot;
pub mod source;
pub mod standalone;
pub mod translate;
