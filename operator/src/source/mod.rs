//! Where snapshots come from: YAML files (standalone mode, `check`, `plan`) or, in-cluster, the
//! API server.

pub mod cluster;
pub mod config_secret;
pub mod files;
