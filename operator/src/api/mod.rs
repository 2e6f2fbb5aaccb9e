//! Kubernetes types: the Gateway API kinds we read and tollbridge's own CRDs.

pub mod gateway;
pub mod tollbridge;
