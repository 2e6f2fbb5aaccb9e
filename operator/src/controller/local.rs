//! The in-cluster proxies of Local Gateways, as the control loop sees them: whether one can
//! serve yet, whether someone edited its objects, removing it, and its gzipped configuration.

use std::hash::{Hash, Hasher};
use std::io::Write;

use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tollbridge_provider::{GatewayIr, GatewayKey, ProviderSettings};

use super::{at, infra, workers, Controller};

impl Controller {
    /// A Gateway whose class stopped being ours, or that was deleted without finalizer:
    /// remove what the Local provider created for it (cloud Gateways keep their finalizer).
    pub(super) async fn forget(&self, id: &str) {
        let Some((namespace, name)) = id.split_once('/') else { return };
        let key = GatewayKey { namespace: namespace.into(), name: name.into(), ..GatewayKey::default() };
        let deployment =
            self.owned.deployments.get(&ObjectRef::new(&infra::infra_name(name)).within(namespace));
        if deployment.is_some() {
            if let Err(e) = workers::delete_with_retries(self.local.as_ref(), &key, &self.metrics, 3).await {
                tracing::warn!(gateway = %id, error = %e, "cannot remove the proxy of a gateway that is no longer ours");
            }
        }
    }

    /// Why a Local Gateway's proxy cannot serve yet: no replica of its Deployment is available.
    pub(super) fn proxy_not_available(&self, ir: &GatewayIr) -> Option<String> {
        if !matches!(ir.provider, ProviderSettings::Local(_)) {
            return None;
        }
        let name = infra::infra_name(&ir.key.name);
        let deployment = self.owned.deployments.get(&ObjectRef::new(&name).within(&ir.key.namespace));
        let status = deployment.as_ref().and_then(|d| d.status.clone()).unwrap_or_default();
        let available = status.available_replicas.unwrap_or(0);
        if available < 1 {
            return Some(format!(
                "Waiting for the proxy: Deployment {name} has {available} of {} replicas available",
                status.replicas.unwrap_or(0)
            ));
        }
        // Traffic reaches a pod through the Service only once it is among its ready endpoints
        // (a Gateway without a listener has no Service).
        (infra::has_service(ir) && self.source.ready_endpoints(&ir.key.namespace, &name) == 0)
            .then(|| format!("Waiting for the proxy: Service {name} has no ready endpoint yet"))
    }

    /// Zero when every object we created for a Local Gateway is as we left it; otherwise a
    /// fingerprint of the versions someone else wrote (or of their absence).
    pub(super) fn edited_token(&self, key: &GatewayKey) -> u64 {
        let name = infra::infra_name(&key.name);
        let secret_name = infra::config_secret_name(&key.name);
        let ns = key.namespace.as_str();
        let seen = [
            (
                "Deployment",
                name.as_str(),
                self.owned
                    .deployments
                    .get(&at(ns, &name))
                    .and_then(|o| infra::edit_version("Deployment", o.meta())),
            ),
            (
                "ServiceAccount",
                &name,
                self.owned.service_accounts.get(&at(ns, &name)).and_then(|o| o.resource_version()),
            ),
            ("Role", &name, self.owned.roles.get(&at(ns, &name)).and_then(|o| o.resource_version())),
            (
                "RoleBinding",
                &name,
                self.owned.role_bindings.get(&at(ns, &name)).and_then(|o| o.resource_version()),
            ),
            ("Service", &name, self.source.services().get(&at(ns, &name)).and_then(|o| o.resource_version())),
            (
                "Secret",
                &secret_name,
                self.source.secret_metadata().get(&at(ns, &secret_name)).and_then(|o| o.resource_version()),
            ),
        ];
        let foreign: Vec<_> = seen
            .iter()
            .filter(|(kind, name, version)| {
                !self.written.is_ours(kind, &key.namespace, name, version.as_deref())
            })
            .collect();
        if foreign.is_empty() {
            return 0;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        foreign.hash(&mut hasher);
        hasher.finish().max(1)
    }
}

pub(super) fn gzip(text: &str) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).and_then(|_| encoder.finish()).map_err(|e| format!("gzip: {e}"))
}

/// Reverses [`gzip`] (used by `tollbridge proxy`).
pub fn gunzip(bytes: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(bytes), &mut text)
        .map_err(|e| format!("cannot decompress the configuration: {e}"))?;
    Ok(text)
}
