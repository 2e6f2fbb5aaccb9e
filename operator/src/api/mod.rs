//! Kubernetes types: the Gateway API kinds we read and tollbridge's own CRDs.

pub mod gateway;
pub mod tollbridge;

/// The API group of tollbridge's own kinds.
pub const GROUP: &str = "tollbridge.dev";
