//! Loads a [`Snapshot`] from YAML files and directories, as `tollbridge run` and `check` do.
//!
//! Files hold the objects a cluster would: multi-document YAML, `.yaml`/`.yml`, directories
//! walked recursively in name order. Objects without a namespace are in `default`; without a
//! generation they are at generation 1. Kinds tollbridge does not read are skipped with a
//! warning. Errors name the file, the document and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::snapshot::Snapshot;

/// One problem with one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file; 0 for file-level errors.
    pub document: usize,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{} (document {}): {}", self.file.display(), self.document, self.message)
        }
    }
}

/// Every error found while loading; loading goes on after an error so all are reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A loaded snapshot and notes about documents that were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
}

/// Loads every YAML file under `paths` into one snapshot.
pub fn load_paths(paths: &[PathBuf]) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader::default();
    for path in paths {
        match yaml_files(path) {
            Ok(files) => {
                for file in files {
                    match std::fs::read_to_string(&file) {
                        Ok(text) => loader.add_text(&file, &text),
                        Err(e) => loader.error(&file, 0, format!("cannot read: {e}")),
                    }
                }
            }
            Err(e) => loader.error(path, 0, e),
        }
    }
    loader.finish()
}

/// Loads YAML text (as if read from `origin`) into a snapshot.
pub fn load_str(origin: &Path, text: &str) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader::default();
    loader.add_text(origin, text);
    loader.finish()
}

/// The YAML files a path names: itself, or every `.yaml`/`.yml` below it, sorted.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list directory: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(yaml_files(&entry)?);
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(entry);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Default)]
struct Loader {
    snapshot: Snapshot,
    warnings: Vec<String>,
    errors: Vec<LoadError>,
    /// `Kind ns/name` → where it was first seen, to report duplicates.
    seen: BTreeMap<String, String>,
}

impl Loader {
    fn error(&mut self, file: &Path, document: usize, message: impl Into<String>) {
        self.errors.push(LoadError { file: file.to_path_buf(), document, message: message.into() });
    }

    fn finish(self) -> Result<Loaded, LoadErrors> {
        if self.errors.is_empty() {
            Ok(Loaded { snapshot: self.snapshot, warnings: self.warnings })
        } else {
            Err(LoadErrors(self.errors))
        }
    }

    fn add_text(&mut self, file: &Path, text: &str) {
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let number = i + 1;
            let value = match serde_yaml::Value::deserialize(document) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(value) => value,
                Err(e) => {
                    self.error(file, number, format!("invalid YAML: {e}"));
                    // The YAML stream cannot be resumed after a syntax error.
                    return;
                }
            };
            if let Err(message) = self.add_document(file, number, value) {
                self.error(file, number, message);
            }
        }
    }

    fn add_document(&mut self, file: &Path, number: usize, value: serde_yaml::Value) -> Result<(), String> {
        if let serde_yaml::Value::Sequence(_) | serde_yaml::Value::String(_) = value {
            return Err("expected a Kubernetes object (a mapping with apiVersion and kind)".into());
        }
        let type_meta = TypeMeta::deserialize(&value).map_err(|e| format!("invalid object: {e}"))?;
        if type_meta.kind == "List" {
            return Err("kind List is not supported; write one document per object".into());
        }
        let group = type_meta.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let s = &mut self.snapshot;
        let origin = format!("{} (document {number})", file.display());
        let id = match (group, type_meta.kind.as_str()) {
            ("gateway.networking.k8s.io", "GatewayClass") => push(&mut s.gateway_classes, value, false)?,
            ("gateway.networking.k8s.io", "Gateway") => push(&mut s.gateways, value, true)?,
            ("gateway.networking.k8s.io", "HTTPRoute") => push(&mut s.http_routes, value, true)?,
            ("gateway.networking.k8s.io", "ReferenceGrant") => push(&mut s.reference_grants, value, true)?,
            ("", "Namespace") => push(&mut s.namespaces, value, false)?,
            ("", "Service") => push(&mut s.services, value, true)?,
            ("", "Secret") => push(&mut s.secrets, value, true)?,
            ("discovery.k8s.io", "EndpointSlice") => push(&mut s.endpoint_slices, value, true)?,
            ("tollbridge.dev", "ProviderConfig") => push(&mut s.provider_configs, value, false)?,
            ("tollbridge.dev", "QuotaPolicy") => push(&mut s.quota_policies, value, true)?,
            ("tollbridge.dev", "ApiKey") => push(&mut s.api_keys, value, true)?,
            (_, "") => return Err("missing `kind`".into()),
            _ => {
                self.warnings.push(format!(
                    "{origin}: skipped {} {}: not a kind tollbridge reads",
                    type_meta.api_version, type_meta.kind
                ));
                return Ok(());
            }
        };
        let key = format!("{} {id}", type_meta.kind);
        if let Some(first) = self.seen.get(&key) {
            return Err(format!("duplicate {key}: already defined in {first}"));
        }
        self.seen.insert(key, origin);
        Ok(())
    }
}

/// Object types with Kubernetes metadata.
trait HasMeta {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),*) => {$(
        impl HasMeta for $t {
            fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
        }
    )*};
}

has_meta!(
    crate::api::gateway::GatewayClass,
    crate::api::gateway::Gateway,
    crate::api::gateway::HTTPRoute,
    crate::api::gateway::ReferenceGrant,
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Secret,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    crate::api::tollbridge::ProviderConfig,
    crate::api::tollbridge::QuotaPolicy,
    crate::api::tollbridge::ApiKey
);

/// Parses one object, fills in defaults, appends it and returns its `ns/name` (or `name`).
fn push<T: DeserializeOwned + HasMeta>(
    list: &mut Vec<T>,
    value: serde_yaml::Value,
    namespaced: bool,
) -> Result<String, String> {
    let mut object: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("field `{path}`: {inner}")
        }
    })?;
    let meta = object.meta_mut();
    let name = meta.name.clone().filter(|n| !n.is_empty()).ok_or("missing metadata.name")?;
    if namespaced {
        meta.namespace.get_or_insert_with(|| "default".to_string());
    } else {
        meta.namespace = None;
    }
    meta.generation.get_or_insert(1);
    let id = match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    };
    list.push(object);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, LoadErrors> {
        load_str(Path::new("test.yaml"), text)
    }

    #[test]
    fn fills_namespace_and_generation_defaults() {
        let loaded = load(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n",
        )
        .unwrap();
        let route = &loaded.snapshot.http_routes[0];
        assert_eq!(route.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(route.metadata.generation, Some(1));
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let err = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: c\n  listeners:\n  - name: http\n    port: eighty\n    protocol: HTTP\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("test.yaml (document 2)"), "{text}");
        assert!(text.contains("spec.listeners[0].port"), "{text}");
    }

    #[test]
    fn skips_unknown_kinds_with_a_warning_and_rejects_duplicates() {
        let loaded = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        let dup = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n";
        let err = load(&format!("{dup}---\n{dup}")).unwrap_err();
        assert!(err.to_string().contains("duplicate Service default/s"), "{err}");
    }

    #[test]
    fn invalid_yaml_is_reported_not_panicked() {
        let err = load("kind: [unclosed\n").unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
        assert!(load("- a\n- b\n").is_err());
        assert!(load("apiVersion: v1\nkind: Service\nmetadata: {}\n")
            .unwrap_err()
            .to_string()
            .contains("metadata.name"));
    }
}
