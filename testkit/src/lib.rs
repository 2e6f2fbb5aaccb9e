//! What the integration tests of the tollbridge crates share (a dev-dependency only).

#![forbid(unsafe_code)]

pub mod command;
pub mod faults;
pub mod plain;
pub mod scripted;

use std::path::{Path, PathBuf};

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}
