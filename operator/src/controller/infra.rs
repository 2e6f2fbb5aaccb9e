//! In-cluster infrastructure of a Local Gateway: the proxy's ServiceAccount, a Role that can
//! read only the Gateway's config Secret, its RoleBinding, the config Secret itself, the proxy
//! Deployment and its Service. All owned by the Gateway, so deleting it removes them.
//!
//! [`desired`] is pure; [`InCluster`] applies the objects by server-side apply, which also
//! repairs hand edits of the fields we own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities as LinuxCapabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, Sysctl, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::IPAddress;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tollbridge_provider::{
    CounterStoreIr, GatewayIr, GatewayKey, LocalSettings, ProviderError, ProviderSettings, Provisioned,
};

use super::status::FIELD_MANAGER;

/// The key of the config Secret that holds the gzipped YAML of the Gateway's objects.
pub const CONFIG_KEY: &str = "config.yaml.gz";
/// The port of the proxy's admin endpoint (health, readiness, metrics) inside the pod.
pub const ADMIN_PORT: u16 = 19001;
/// Label on every object we create.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tollbridge");
/// Label naming the Gateway an object belongs to.
pub const GATEWAY_LABEL: &str = "tollbridge.dev/gateway";
/// The Gateway API's own label for what an implementation makes for a Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The objects of one Local Gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Infra {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config: Secret,
    pub deployment: Deployment,
    /// None when the Gateway has no listener to serve (a Service needs at least one port).
    pub service: Option<Service>,
}

/// The name of a Gateway's objects: `tollbridge-<gateway>`, shortened with a hash when the
/// result would not be a valid DNS label.
pub fn infra_name(gateway: &str) -> String {
    dns_label(&format!("tollbridge-{gateway}"))
}

/// The name of a Gateway's config Secret.
pub fn config_secret_name(gateway: &str) -> String {
    dns_label(&format!("tollbridge-{gateway}-config"))
}

fn dns_label(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    format!("{}-{hash}", name[..54].trim_end_matches('-'))
}

/// Whether a Gateway's proxy has a Service: it needs a port, so a listener to serve.
pub fn has_service(ir: &GatewayIr) -> bool {
    !ir.listeners.is_empty()
}

/// The objects that serve `ir` with the config `config` (gzipped YAML), running `image`.
pub fn desired(ir: &GatewayIr, settings: &LocalSettings, image: &str, config: Vec<u8>) -> Infra {
    let key = &ir.key;
    let name = infra_name(&key.name);
    let secret_name = config_secret_name(&key.name);
    // The Gateway's `spec.infrastructure` labels first, so that ours (the selector among
    // them) win a clash.
    let mut labels = ir.infrastructure.labels.clone();
    labels.extend(
        [
            ("app.kubernetes.io/name", "tollbridge-proxy".to_string()),
            ("app.kubernetes.io/instance", name.clone()),
            (MANAGED_BY.0, MANAGED_BY.1.to_string()),
            (GATEWAY_LABEL, dns_label(&key.name)),
            (GATEWAY_NAME_LABEL, dns_label(&key.name)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v)),
    );
    let annotations =
        (!ir.infrastructure.annotations.is_empty()).then(|| ir.infrastructure.annotations.clone());
    let selector: BTreeMap<String, String> =
        [("app.kubernetes.io/instance".to_string(), name.clone())].into();
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(key.namespace.clone()),
        labels: Some(labels.clone()),
        annotations: annotations.clone(),
        owner_references: Some(vec![owner(key)]),
        ..ObjectMeta::default()
    };
    let requested = ir.addresses.first();
    let load_balancer = settings.service_type == "LoadBalancer";
    let mut ports: Vec<u16> = ir.listeners.iter().map(|l| l.port).collect();
    ports.sort_unstable();
    ports.dedup();

    Infra {
        service_account: ServiceAccount {
            metadata: meta(&name),
            automount_service_account_token: Some(true),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta(&name),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                resource_names: Some(vec![secret_name.clone()]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..PolicyRule::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: meta(&name),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                namespace: Some(key.namespace.clone()),
                ..Subject::default()
            }]),
        },
        config: Secret {
            metadata: meta(&secret_name),
            type_: Some("Opaque".into()),
            data: Some([(CONFIG_KEY.to_string(), ByteString(config))].into()),
            ..Secret::default()
        },
        deployment: Deployment {
            metadata: meta(&name),
            spec: DeploymentSpec {
                replicas: Some(settings.replicas),
                selector: LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        annotations: annotations.clone(),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(pod_spec(
                        key,
                        &name,
                        &secret_name,
                        image,
                        &ports,
                        settings.counter_store.as_ref(),
                    )),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        },
        service: has_service(ir).then(|| Service {
            metadata: meta(&name),
            spec: Some(ServiceSpec {
                type_: Some(settings.service_type.clone()),
                // A requested address is the Service's: its cluster IP, or the load balancer's.
                cluster_ip: requested.filter(|_| !load_balancer).cloned(),
                load_balancer_ip: requested.filter(|_| load_balancer).cloned(),
                selector: Some(selector),
                ports: Some(
                    ports
                        .iter()
                        .map(|&port| ServicePort {
                            name: Some(format!("port-{port}")),
                            port: port.into(),
                            target_port: Some(IntOrString::Int(port.into())),
                            protocol: Some("TCP".into()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }),
    }
}

fn owner(key: &GatewayKey) -> OwnerReference {
    OwnerReference {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        name: key.name.clone(),
        uid: key.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Where the counter store's CA certificates are mounted in the proxy's container.
const COUNTER_STORE_CA_DIR: &str = "/etc/tollbridge/counter-store-ca";
/// The file name of the CA certificates in that directory.
const COUNTER_STORE_CA_FILE: &str = "ca.crt";

/// The proxy's arguments, environment and volumes for a shared counter store: the password
/// from the Secret by the kubelet (never in the arguments, which anyone who can read the pod
/// sees), the CA certificates as a read-only file.
fn counter_store_wiring(store: &CounterStoreIr) -> (Vec<String>, Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
    let mut args = vec![
        "--counter-store".to_owned(),
        store.url.clone(),
        "--counter-store-failure-mode".to_owned(),
        store.failure_mode.clone(),
        "--counter-store-timeout-ms".to_owned(),
        store.timeout_ms.to_string(),
    ];
    if let Some(lease_max) = store.lease_max {
        args.extend(["--counter-store-lease-max".to_owned(), lease_max.to_string()]);
    }
    let env = store
        .password_secret
        .iter()
        .map(|(name, key)| EnvVar {
            name: "TOLLBRIDGE_COUNTER_STORE_PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: name.clone(),
                    key: key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect();
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    if let Some((name, key)) = &store.ca_secret {
        args.extend([
            "--counter-store-ca".to_owned(),
            format!("{COUNTER_STORE_CA_DIR}/{COUNTER_STORE_CA_FILE}"),
        ]);
        volumes.push(Volume {
            name: "counter-store-ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                items: Some(vec![KeyToPath {
                    key: key.clone(),
                    path: COUNTER_STORE_CA_FILE.into(),
                    ..KeyToPath::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "counter-store-ca".into(),
            mount_path: COUNTER_STORE_CA_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    (args, env, volumes, mounts)
}

fn pod_spec(
    key: &GatewayKey,
    name: &str,
    secret: &str,
    image: &str,
    ports: &[u16],
    counter_store: Option<&CounterStoreIr>,
) -> PodSpec {
    let (store_args, env, volumes, mounts) = counter_store.map(counter_store_wiring).unwrap_or_default();
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    };
    let quantity = |q: &str| Quantity(q.into());
    let mut container_ports: Vec<ContainerPort> = ports
        .iter()
        .map(|&p| ContainerPort {
            container_port: p.into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        })
        .collect();
    container_ports.push(ContainerPort {
        name: Some("admin".into()),
        container_port: ADMIN_PORT.into(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    });
    PodSpec {
        service_account_name: Some(name.into()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            // Lets the non-root proxy bind the listener ports below 1024 (a namespaced, safe sysctl).
            sysctls: Some(vec![Sysctl {
                name: "net.ipv4.ip_unprivileged_port_start".into(),
                value: "0".into(),
            }]),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: "proxy".into(),
            image: Some(image.into()),
            args: Some(
                [
                    "proxy",
                    "--gateway",
                    &key.id(),
                    "--config-secret",
                    secret,
                    "--bind-address",
                    "0.0.0.0",
                    "--admin-address",
                    &format!("0.0.0.0:{ADMIN_PORT}"),
                ]
                .map(String::from)
                .into_iter()
                .chain(store_args)
                .collect(),
            ),
            env: (!env.is_empty()).then_some(env),
            volume_mounts: (!mounts.is_empty()).then_some(mounts),
            ports: Some(container_ports),
            readiness_probe: Some(probe("/readyz")),
            liveness_probe: Some(probe("/healthz")),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [("cpu".into(), quantity("100m")), ("memory".into(), quantity("64Mi"))].into(),
                ),
                limits: Some([("memory".into(), quantity("512Mi"))].into()),
                ..ResourceRequirements::default()
            }),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(LinuxCapabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..LinuxCapabilities::default()
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..PodSpec::default()
    }
}

/// The addresses clients use: the load balancer's, else the cluster IP.
pub fn service_addresses(service: &Service) -> Vec<String> {
    let ingress =
        service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    let mut out: Vec<String> =
        ingress.into_iter().flatten().filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone())).collect();
    if out.is_empty() {
        let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.clone());
        out.extend(cluster_ip.filter(|ip| !ip.is_empty() && ip != "None"));
    }
    out
}

/// Resource versions this operator wrote, per object, to tell its own writes from hand edits.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, VecDeque<String>>>);

impl Written {
    /// Versions remembered per object: enough for the watch to lag a few writes behind.
    const KEEP: usize = 4;

    /// Forgets an object this operator deleted, so its absence is not taken for a hand edit.
    fn forget(&self, kind: &str, namespace: &str, name: &str) {
        if let Ok(mut all) = self.0.lock() {
            all.remove(&format!("{kind}/{namespace}/{name}"));
        }
    }

    fn record(&self, kind: &str, namespace: &str, name: &str, version: Option<String>) {
        let (Some(version), Ok(mut all)) = (version, self.0.lock()) else { return };
        let versions = all.entry(format!("{kind}/{namespace}/{name}")).or_default();
        versions.push_back(version);
        if versions.len() > Self::KEEP {
            versions.pop_front();
        }
    }

    /// Whether the object as last seen (`None`: absent) is as this operator left it.
    pub fn is_ours(&self, kind: &str, namespace: &str, name: &str, version: Option<&str>) -> bool {
        let Ok(all) = self.0.lock() else { return true };
        match (all.get(&format!("{kind}/{namespace}/{name}")), version) {
            (Some(versions), Some(v)) => versions.iter().any(|w| w == v),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

/// What was last applied for a Gateway (by uid), so unchanged objects are not sent again.
#[derive(Clone, Debug, Default)]
struct Applied {
    infra: u64,
    config: u64,
    /// The hand-edit token last repaired.
    repaired: u64,
    addresses: Vec<String>,
}

/// Applies and deletes the infrastructure of Local Gateways.
pub struct InCluster {
    client: Client,
    /// The proxy image when the ProviderConfig names none.
    default_image: String,
    written: Arc<Written>,
    applied: Mutex<HashMap<String, Applied>>,
}

impl InCluster {
    pub fn new(client: Client, default_image: String) -> Self {
        Self { client, default_image, written: Arc::default(), applied: Mutex::default() }
    }

    pub fn written(&self) -> Arc<Written> {
        self.written.clone()
    }

    /// Makes the Gateway's objects match `ir` and `config`; returns the Service's addresses.
    /// Sends only what changed since the last apply, everything when `edited` is a new
    /// hand-edit token (non-zero).
    pub async fn apply(
        &self,
        ir: &GatewayIr,
        config: Vec<u8>,
        edited: u64,
    ) -> Result<Provisioned, ProviderError> {
        let ProviderSettings::Local(settings) = &ir.provider else {
            return Err(ProviderError::Invalid("not a Local gateway".into()));
        };
        if let Some(why) = address_problem(ir, settings) {
            return Err(ProviderError::AddressNotUsable(why));
        }
        let image = settings.image.as_deref().unwrap_or(&self.default_image);
        let infra = desired(ir, settings, image, config);
        let memo_key = format!("{}/{}", ir.key.id(), ir.key.uid);
        let last = self.applied.lock().ok().and_then(|a| a.get(&memo_key).cloned());
        let repair = edited != 0 && last.as_ref().is_none_or(|l| l.repaired != edited);
        let infra_hash = hash_json(&(
            &infra.service_account,
            &infra.role,
            &infra.role_binding,
            &infra.deployment,
            &infra.service,
        ));
        let config_hash = hash_json(&infra.config);
        let ns = &ir.key.namespace;
        let mut addresses = last.as_ref().map(|l| l.addresses.clone()).unwrap_or_default();
        // The configuration first, so that new proxy pods find it when they start.
        if repair || last.as_ref().is_none_or(|l| l.config != config_hash) {
            self.apply_one(ns, &infra.config).await?;
        }
        if repair || last.as_ref().is_none_or(|l| l.infra != infra_hash) {
            self.apply_one(ns, &infra.service_account).await?;
            self.apply_one(ns, &infra.role).await?;
            self.apply_one(ns, &infra.role_binding).await?;
            self.apply_one(ns, &infra.deployment).await?;
            addresses = match &infra.service {
                Some(service) => service_addresses(&self.apply_service(ns, service).await?),
                None => {
                    let name = infra_name(&ir.key.name);
                    delete::<Service>(&self.client, ns, &name).await?;
                    self.written.forget("Service", ns, &name);
                    Vec::new()
                }
            };
        }
        let repaired = if edited != 0 { edited } else { last.map_or(0, |l| l.repaired) };
        if let Ok(mut applied) = self.applied.lock() {
            let memo =
                Applied { infra: infra_hash, config: config_hash, repaired, addresses: addresses.clone() };
            applied.insert(memo_key, memo);
        }
        let mut provisioned = Provisioned { addresses, ..Provisioned::default() };
        provisioned.resource_ids.insert("deployment".into(), format!("{ns}/{}", infra_name(&ir.key.name)));
        Ok(provisioned)
    }

    async fn apply_one<K>(&self, namespace: &str, object: &K) -> Result<K, ProviderError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + serde::de::DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let live = apply(&self.client, namespace, object).await?;
        let name = live.meta().name.clone().unwrap_or_default();
        self.written.record(&K::kind(&()), namespace, &name, edit_version(&K::kind(&()), live.meta()));
        Ok(live)
    }

    /// Applies the Service. A requested address the cluster cannot give (outside the Service
    /// range, or taken) is `AddressNotUsable`; a changed cluster IP replaces the Service (a
    /// cluster IP cannot change in place), but only once the new address is known to be usable.
    async fn apply_service(&self, namespace: &str, service: &Service) -> Result<Service, ProviderError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let name = service.metadata.name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let live = match api.patch(&name, &params, &Patch::Apply(service)).await {
            Ok(live) => live,
            Err(kube::Error::Api(s)) if is_address_refusal(&s) && s.message.contains("may not change") => {
                self.replace_service(&api, namespace, &name, service).await?
            }
            Err(e) => return Err(service_error(&name, e)),
        };
        self.written.record("Service", namespace, &name, edit_version("Service", &live.metadata));
        Ok(live)
    }

    /// Deletes and re-creates a Service for its new cluster IP, after a dry run (the address is
    /// in the Service range) and a look at the cluster's IPAddress objects (no other Service
    /// holds it) say the new one will be given. A Gateway whose new address is not usable keeps
    /// its old Service.
    async fn replace_service(
        &self,
        api: &Api<Service>,
        namespace: &str,
        name: &str,
        service: &Service,
    ) -> Result<Service, ProviderError> {
        let mut probe = service.clone();
        probe.metadata = ObjectMeta {
            name: Some(format!("{}-address-check", &name[..name.len().min(40)])),
            ..ObjectMeta::default()
        };
        let dry_run = kube::api::PostParams { dry_run: true, ..Default::default() };
        api.create(&dry_run, &probe).await.map_err(|e| service_error(name, e))?;
        let address = service.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap_or_default();
        if let Some(holder) = self.address_holder(&address).await? {
            return Err(ProviderError::AddressNotUsable(format!(
                "{address} is already the address of {holder}"
            )));
        }
        tracing::info!(service = %format!("{namespace}/{name}"), %address, "address changed: replacing the Service");
        self.written.forget("Service", namespace, name);
        delete::<Service>(&self.client, namespace, name).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(service)).await.map_err(|e| service_error(name, e))
    }

    /// Who holds a cluster IP (`namespace/name` of its Service), as the API server's IPAddress
    /// object for it says; None when it is free.
    async fn address_holder(&self, address: &str) -> Result<Option<String>, ProviderError> {
        let canonical = address.parse::<std::net::IpAddr>().map(|ip| ip.to_string()).unwrap_or_default();
        let api: Api<IPAddress> = Api::all(self.client.clone());
        match api.get_opt(&canonical).await {
            Ok(found) => Ok(found.map(|ip| {
                let p = ip.spec.parent_ref;
                format!("{} {}/{}", p.resource, p.namespace.unwrap_or_default(), p.name)
            })),
            Err(e) => Err(kube_error("IPAddress".into(), &canonical, e)),
        }
    }

    /// Deletes the Gateway's objects (when its class stops being Local; a deleted Gateway's
    /// objects go by owner reference).
    pub async fn delete(&self, key: &GatewayKey) -> Result<(), ProviderError> {
        if let Ok(mut applied) = self.applied.lock() {
            applied.retain(|k, _| !k.starts_with(&format!("{}/", key.id())));
        }
        let ns = &key.namespace;
        let name = infra_name(&key.name);
        delete::<Deployment>(&self.client, ns, &name).await?;
        delete::<Service>(&self.client, ns, &name).await?;
        delete::<Secret>(&self.client, ns, &config_secret_name(&key.name)).await?;
        delete::<RoleBinding>(&self.client, ns, &name).await?;
        delete::<Role>(&self.client, ns, &name).await?;
        delete::<ServiceAccount>(&self.client, ns, &name).await
    }
}

/// The version of an object that changes with edits: the generation for Deployments (whose
/// status the cluster rewrites all the time), the resourceVersion for the rest.
pub fn edit_version(kind: &str, meta: &ObjectMeta) -> Option<String> {
    match kind {
        "Deployment" => meta.generation.map(|g| format!("generation {g}")),
        _ => meta.resource_version.clone(),
    }
}

fn hash_json<T: Serialize>(value: &T) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(value).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, ProviderError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object)).await.map_err(|e| kube_error(K::kind(&()), &name, e))
}

async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), ProviderError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_error(K::kind(&()), name, e)),
    }
}

/// Whether the API server refused a Service because of its requested address.
fn is_address_refusal(status: &kube::core::Status) -> bool {
    status.code == 422
        && status.details.as_ref().is_some_and(|d| {
            d.causes.iter().any(|c| c.field.starts_with("spec.clusterIP") || c.field == "spec.loadBalancerIP")
        })
}

/// A Service write's error: `AddressNotUsable` when its address was refused.
fn service_error(name: &str, error: kube::Error) -> ProviderError {
    match error {
        kube::Error::Api(s) if is_address_refusal(&s) => ProviderError::AddressNotUsable(s.message.clone()),
        e => kube_error("Service".into(), name, e),
    }
}

/// Why the addresses a Gateway asks for cannot be its Service's: more than one, or one outside
/// what the class's ProviderConfig allows (`local.allowedAddresses`).
pub fn address_problem(ir: &GatewayIr, settings: &LocalSettings) -> Option<String> {
    match ir.addresses.as_slice() {
        [] => None,
        [address] => {
            let ip = address.parse::<std::net::IpAddr>().ok()?;
            let mut allowed =
                settings.allowed_addresses.iter().filter_map(|c| c.parse::<ipnet::IpNet>().ok());
            if settings.allowed_addresses.is_empty() {
                return Some(format!(
                    "{address}: the class's ProviderConfig lets no Gateway pick its address \
                     (local.allowedAddresses is empty)"
                ));
            }
            (!allowed.any(|net| net.contains(&ip))).then(|| {
                format!(
                    "{address} is not in local.allowedAddresses of the class's ProviderConfig ({})",
                    settings.allowed_addresses.join(", ")
                )
            })
        }
        more => Some(format!(
            "a Local Gateway in a cluster has one address, its Service's; spec.addresses asks for {}",
            more.join(", ")
        )),
    }
}

fn kube_error(kind: std::borrow::Cow<'_, str>, name: &str, error: kube::Error) -> ProviderError {
    // The API server's own sentence, not the client's Debug form of the whole Status.
    let message = match &error {
        kube::Error::Api(s) => format!("{kind} {name}: {} ({})", s.message, s.code),
        _ => format!("{kind} {name}: {error}"),
    };
    match &error {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => ProviderError::Unauthorized(message),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => ProviderError::Invalid(message),
        _ => ProviderError::Transient(message),
    }
}

#[cfg(test)]
mod tests {
    use tollbridge_provider::{ListenerIr, ListenerProtocol};

    use super::*;

    fn ir(name: &str, ports: &[u16]) -> GatewayIr {
        GatewayIr {
            key: GatewayKey {
                namespace: "apps".into(),
                name: name.into(),
                uid: "uid-1".into(),
                generation: 1,
            },
            provider: ProviderSettings::Local(LocalSettings::default()),
            listeners: ports
                .iter()
                .enumerate()
                .map(|(i, &port)| ListenerIr {
                    name: format!("l{i}"),
                    port,
                    protocol: ListenerProtocol::Http,
                    hostname: None,
                    certificates: Vec::new(),
                })
                .collect(),
            addresses: Vec::new(),
            infrastructure: Default::default(),
            routes: Vec::new(),
            policies: Vec::new(),
        }
    }

    #[test]
    fn objects_are_owned_by_the_gateway_and_named_after_it() {
        let infra = desired(&ir("web", &[80, 443, 80]), &LocalSettings::default(), "img:1", vec![1, 2]);
        assert_eq!(infra.deployment.metadata.name.as_deref(), Some("tollbridge-web"));
        assert_eq!(infra.config.metadata.name.as_deref(), Some("tollbridge-web-config"));
        let service = infra.service.as_ref().expect("a Service for a Gateway with listeners");
        for meta in [&infra.service_account.metadata, &infra.role.metadata, &service.metadata] {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("Gateway", "uid-1", Some(true))
            );
            assert_eq!(meta.namespace.as_deref(), Some("apps"));
        }
        let ports: Vec<i32> =
            service.spec.as_ref().unwrap().ports.as_ref().unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [80, 443]);
        assert_eq!(service.spec.as_ref().unwrap().type_.as_deref(), Some("LoadBalancer"));
    }

    #[test]
    fn a_counter_store_reaches_the_proxy_with_its_secrets_by_reference() {
        let settings = LocalSettings {
            replicas: 3,
            counter_store: Some(CounterStoreIr {
                url: "rediss://redis.shared:6380/2".into(),
                password_secret: Some(("redis-auth".into(), "password".into())),
                ca_secret: Some(("redis-ca".into(), "ca.crt".into())),
                failure_mode: "closed".into(),
                timeout_ms: 80,
                lease_max: Some(0),
            }),
            ..LocalSettings::default()
        };
        let pod =
            desired(&ir("web", &[80]), &settings, "img:1", Vec::new()).deployment.spec.template.spec.unwrap();
        let container = &pod.containers[0];
        let args = container.args.as_ref().unwrap().join(" ");
        assert!(
            args.ends_with(
                "--counter-store rediss://redis.shared:6380/2 --counter-store-failure-mode closed \
                 --counter-store-timeout-ms 80 --counter-store-lease-max 0 \
                 --counter-store-ca /etc/tollbridge/counter-store-ca/ca.crt"
            ),
            "{args}"
        );
        let env = &container.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "TOLLBRIDGE_COUNTER_STORE_PASSWORD");
        let from = env.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((from.name.as_str(), from.key.as_str()), ("redis-auth", "password"));
        assert!(env.value.is_none(), "the password is the kubelet's to read, not in the pod spec");
        let volume = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("redis-ca"));
        assert_eq!(container.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));

        let plain = desired(&ir("web", &[80]), &LocalSettings::default(), "img:1", Vec::new());
        let pod = plain.deployment.spec.template.spec.unwrap();
        assert!(pod.volumes.is_none() && pod.containers[0].env.is_none());
        assert!(!pod.containers[0].args.as_ref().unwrap().iter().any(|a| a.starts_with("--counter-store")));
    }

    #[test]
    fn a_gateway_without_listeners_gets_a_proxy_but_no_service() {
        // Every listener invalid (e.g. a malformed certificate): a Service needs a port, but the
        // proxy still runs, so that it serves as soon as a listener is fixed.
        let infra = desired(&ir("web", &[]), &LocalSettings::default(), "img:1", Vec::new());
        assert!(infra.service.is_none());
        assert_eq!(infra.deployment.spec.replicas, Some(1));
    }

    #[test]
    fn infrastructure_labels_and_annotations_reach_every_object_but_not_the_selector() {
        let mut gateway = ir("web", &[80]);
        gateway.infrastructure.labels = [
            ("team".to_string(), "a".to_string()),
            ("app.kubernetes.io/instance".to_string(), "x".to_string()),
        ]
        .into();
        gateway.infrastructure.annotations = [("note".to_string(), "b".to_string())].into();
        let infra = desired(&gateway, &LocalSettings::default(), "img:1", Vec::new());
        let service = infra.service.unwrap();
        let pod = infra.deployment.spec.template.metadata.unwrap();
        for meta in [&infra.service_account.metadata, &service.metadata, &pod] {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["team"], "a");
            assert_eq!(labels["app.kubernetes.io/instance"], "tollbridge-web");
            assert_eq!(labels[GATEWAY_NAME_LABEL], "web");
            assert_eq!(meta.annotations.as_ref().unwrap()["note"], "b");
        }
        assert_eq!(service.spec.unwrap().selector.unwrap()["app.kubernetes.io/instance"], "tollbridge-web");
    }

    #[test]
    fn requested_addresses_are_one_and_allowed_by_the_class() {
        let mut gateway = ir("web", &[80]);
        let allowing = |cidrs: &[&str]| LocalSettings {
            allowed_addresses: cidrs.iter().map(|c| c.to_string()).collect(),
            ..LocalSettings::default()
        };
        assert_eq!(address_problem(&gateway, &LocalSettings::default()), None);
        gateway.addresses = vec!["10.0.0.14".into()];
        let denied = address_problem(&gateway, &LocalSettings::default()).unwrap();
        assert!(denied.contains("lets no Gateway pick its address"), "{denied}");
        assert_eq!(address_problem(&gateway, &allowing(&["10.0.0.0/28"])), None);
        let outside = address_problem(&gateway, &allowing(&["10.0.0.0/29", "fd00::/64"])).unwrap();
        assert!(outside.contains("not in local.allowedAddresses"), "{outside}");
        gateway.addresses.push("10.0.0.15".into());
        let two = address_problem(&gateway, &allowing(&["10.0.0.0/28"])).unwrap();
        assert!(two.contains("one address"), "{two}");
    }

    #[test]
    fn the_role_reads_only_the_config_secret() {
        let infra = desired(&ir("web", &[80]), &LocalSettings::default(), "img:1", Vec::new());
        let rules = infra.role.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].resources.as_deref(), Some(&["secrets".to_string()][..]));
        assert_eq!(rules[0].resource_names.as_deref(), Some(&["tollbridge-web-config".to_string()][..]));
        assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    }

    #[test]
    fn the_proxy_runs_non_root_for_this_gateway() {
        let settings =
            LocalSettings { replicas: 3, service_type: "ClusterIP".into(), ..LocalSettings::default() };
        let infra = desired(&ir("web", &[80]), &settings, "img:1", Vec::new());
        let spec = infra.deployment.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(&args[..3], ["proxy", "--gateway", "apps/web"]);
        assert_eq!(pod.containers[0].image.as_deref(), Some("img:1"));
    }

    #[test]
    fn long_names_stay_valid_labels() {
        let long = "g".repeat(80);
        let name = infra_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert_ne!(infra_name(&format!("{long}x")), name);
        assert!(config_secret_name(&long).len() <= 63);
    }
}
