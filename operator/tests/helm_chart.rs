//! The Helm chart `charts/tollbridge`: lint and schema, CRDs in sync with `crds/`, every values
//! file of `ci/` accepted by the test API server (server-side dry run), and the operator running
//! with exactly the RBAC the chart grants.
//!
//! For the last, the chart is installed into the test cluster (tests/support/cluster.rs; no
//! kubelet, so its pods never run) and the operator binary runs outside the cluster as the
//! chart's ServiceAccount: a token from the TokenRequest API in a kubeconfig of its own, the
//! container args of the installed Deployment, the environment of its downward API. Every
//! request it makes is then authorized by the chart's ClusterRole and Roles, and a verb missing
//! there shows up as "forbidden" in its log (the last test checks that it does).
//!
//! helm comes from `scripts/helm path` (built from its Go module once and cached). Everything
//! runs on 127.0.0.1; every command and every wait is bounded in time.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use support::cluster::{
    exclusive, repo_root, run_captured, unique_name, Cluster, TestNamespace, CONTROLLER_NAME,
};
use support::eventually;
use support::helm::{chart_dir, helm, helm_err, helm_ok, stderr, stdout};
use support::process::free_port;

/// Upper bound of one kubectl run of this file (each request is bounded by 30 s).
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the operator gets to reach each state.
const CONVERGE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Running helm and other commands with a deadline
// ---------------------------------------------------------------------------------------------

/// `helm template tollbridge charts/tollbridge --namespace NS ARGS…`.
fn template(namespace: &str, args: &[&str]) -> String {
    let chart = chart_dir();
    let mut all = vec!["template", "tollbridge", chart.to_str().unwrap(), "--namespace", namespace];
    all.extend_from_slice(args);
    helm_ok(&all)
}

// ---------------------------------------------------------------------------------------------
// Rendered manifests
// ---------------------------------------------------------------------------------------------

/// The documents of a multi-document YAML stream, as JSON (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The objects of kind `kind`.
fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The only object of kind `kind`; panics when there is not exactly one.
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}: {docs:#?}", found.len());
    found[0]
}

/// `apiGroup resource [resourceNames] verb` for every verb of every rule.
fn grants(rules: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().into_iter().flatten() {
        let names: Vec<&str> =
            rule["resourceNames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for group in rule["apiGroups"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    let group = group.as_str().unwrap_or("?");
                    let resource = resource.as_str().unwrap_or("?");
                    let verb = verb.as_str().unwrap_or("?");
                    out.insert(format!("{group} {resource} {names:?} {verb}"));
                }
            }
        }
    }
    out
}

fn ci_values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(chart_dir().join("ci"))
        .expect("charts/tollbridge/ci")
        .map(|e| e.expect("ci entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "expected the ci values files, found {files:?}");
    files
}

// ---------------------------------------------------------------------------------------------
// Lint, schema, CRDs, rendering (no cluster)
// ---------------------------------------------------------------------------------------------

#[test]
fn the_chart_lints_strictly_with_every_values_file() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    helm_ok(&["lint", "--strict", chart]);
    let mut files = ci_values_files();
    // The install examples of the repository use this chart too.
    if let Ok(entries) = fs::read_dir(repo_root().join("examples")) {
        files.extend(entries.flatten().map(|e| e.path().join("values.yaml")).filter(|p| p.is_file()));
    }
    for file in files {
        let out = helm(&["lint", "--strict", chart, "--values", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "helm lint --strict with {} failed:\n{}{}",
            file.display(),
            stdout(&out),
            stderr(&out)
        );
    }
}

#[test]
fn values_that_break_the_schema_are_refused_with_their_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        "replicaCount: two\nimage:\n  tagg: v1\nleaderElection:\n  leaseDurationSeconds: 1\n\
         gatewayClasses:\n  - name: Not_A_Name\n    provider: AWS\n  - name: ok\n    provider: GCP\n",
    )
    .unwrap();
    let chart = chart_dir();
    let (chart, bad) = (chart.to_str().unwrap(), bad.to_str().unwrap());
    for output in [
        helm_err(&["lint", "--strict", chart, "--values", bad]),
        helm_err(&["template", "t", chart, "--values", bad]),
    ] {
        for expected in [
            "values don't meet the specifications of the schema",
            "/replicaCount",
            "want integer",
            "additional properties 'tagg' not allowed",
            "/leaderElection/leaseDurationSeconds",
            "/gatewayClasses/0/name",
            "missing property 'aws'",
            "/gatewayClasses/1/provider",
        ] {
            assert!(output.contains(expected), "{expected:?} not in:\n{output}");
        }
    }

    // What a schema cannot say clearly, the templates say (at template / install time).
    let cases: [(&[&str], &str); 5] = [
        (
            &["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"],
            "replicaCount is 2 but leaderElection.enabled is false",
        ),
        (
            &["--set", "azure.workloadIdentity.enabled=true"],
            "azure.workloadIdentity.enabled needs azure.workloadIdentity.clientId",
        ),
        (
            &["--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
        (&["--set", "gatewayClasses[0].name=a", "--set", "gatewayClasses[1].name=a"], "\"a\" appears twice"),
        (
            &[
                "--set",
                "gatewayClasses[0].name=a",
                "--set",
                "gatewayClasses[1].name=b",
                "--set",
                "gatewayClasses[1].providerConfigName=a",
            ],
            "ProviderConfig \"a\" would be made twice",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["template", "t", chart];
        all.extend_from_slice(args);
        let output = helm_err(&all);
        assert!(output.contains(expected), "helm template {args:?}: {expected:?} not in:\n{output}");
    }
}

#[test]
fn the_chart_crds_are_the_repository_crds() {
    let read = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&p).expect("read")))
            .collect()
    };
    let repo = read(&repo_root().join("crds"));
    let chart = read(&chart_dir().join("crds"));
    assert!(!repo.is_empty());
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&chart), names(&repo), "charts/tollbridge/crds/ and crds/ hold other files");
    for (name, content) in &repo {
        assert!(
            chart[name] == *content,
            "charts/tollbridge/crds/{name} differs from crds/{name}: run `cp crds/*.yaml charts/tollbridge/crds/`"
        );
    }
}

#[test]
fn the_default_rendering_is_hardened_and_grants_no_wildcards() {
    let docs = documents(&template("tollbridge-system", &[]));
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    let expected: BTreeSet<&str> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ]
    .into();
    assert_eq!(
        kinds, expected,
        "off by default: PodDisruptionBudget, NetworkPolicy, ServiceMonitor, classes"
    );

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "tollbridge-system");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], one(&docs, "ServiceAccount")["metadata"]["name"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/tollbridge-dev/tollbridge:0.1.0", "tag = appVersion");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(args[0], "operator");
    for arg in [
        "--metrics-address=0.0.0.0:8080",
        "--leader-elect=true",
        "--proxy-image=ghcr.io/tollbridge-dev/tollbridge:0.1.0",
    ] {
        assert!(args.contains(&arg), "{arg} not in {args:?}");
    }
    let env: BTreeMap<&str, &Value> =
        container["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
    assert_eq!(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");

    // Only named verbs, no wildcards; the Lease Role names its Lease for get and update.
    let all = grants(&one(&docs, "ClusterRole")["rules"]);
    for grant in &all {
        assert!(!grant.contains('*'), "wildcard grant: {grant}");
        let verb = grant.rsplit(' ').next().unwrap();
        assert!(["get", "list", "watch", "create", "patch", "delete"].contains(&verb), "{grant}");
    }
    let lease_role = one(&docs, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], "tollbridge-system");
    let lease = grants(&lease_role["rules"]);
    let expected: BTreeSet<String> = [
        "coordination.k8s.io leases [] create",
        "coordination.k8s.io leases [\"tollbridge-operator\"] get",
        "coordination.k8s.io leases [\"tollbridge-operator\"] update",
    ]
    .map(String::from)
    .into();
    assert_eq!(lease, expected);
    assert!(args.contains(&"--lease-name=tollbridge-operator"));

    // Watching one namespace moves the namespaced grants into a Role there, nothing else.
    let scoped = documents(&template("tollbridge-system", &["--set", "watchNamespace=team-a"]));
    let roles = of_kind(&scoped, "Role");
    let team_role = roles.iter().find(|r| r["metadata"]["namespace"] == "team-a").expect("Role in team-a");
    let cluster_part = grants(&one(&scoped, "ClusterRole")["rules"]);
    let namespaced_part = grants(&team_role["rules"]);
    assert!(cluster_part.iter().all(|g| !g.contains("secrets")), "{cluster_part:?}");
    assert_eq!(&cluster_part | &namespaced_part, all);
    let binding = of_kind(&scoped, "RoleBinding")
        .into_iter()
        .find(|r| r["metadata"]["namespace"] == "team-a")
        .expect("RoleBinding in team-a");
    assert_eq!(binding["subjects"][0]["namespace"], "tollbridge-system");
    let args = one(&scoped, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(args.as_array().unwrap().contains(&json!("--namespace=team-a")), "{args}");
}

#[test]
fn the_values_files_render_what_they_promise() {
    let ci = chart_dir().join("ci");
    let render = |file: &str| documents(&template("tb", &["--values", ci.join(file).to_str().unwrap()]));

    let eks = render("eks-irsa.yaml");
    let annotations = &one(&eks, "ServiceAccount")["metadata"]["annotations"];
    assert!(annotations["eks.amazonaws.com/role-arn"]
        .as_str()
        .is_some_and(|a| a.starts_with("arn:aws:iam::")));
    let config = one(&eks, "ProviderConfig");
    assert_eq!(config["metadata"]["name"], "aws-eu-west-1-ci");
    assert_eq!(config["spec"]["provider"], "AWS");
    assert_eq!(config["spec"]["aws"]["region"], "eu-west-1");
    let class = one(&eks, "GatewayClass");
    assert_eq!(class["spec"]["controllerName"], CONTROLLER_NAME);
    assert_eq!(
        class["spec"]["parametersRef"],
        json!({"group": "tollbridge.dev", "kind": "ProviderConfig", "name": config["metadata"]["name"]})
    );
    let args = one(&eks, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(args.as_array().unwrap().contains(&json!("--cluster-id=eks-prod-eu-west-1")), "{args}");

    let aks = render("aks-workload-identity.yaml");
    let annotations = &one(&aks, "ServiceAccount")["metadata"]["annotations"];
    assert_eq!(annotations["azure.workload.identity/client-id"], "00000000-0000-0000-0000-000000000001");
    let labels = &one(&aks, "Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["azure.workload.identity/use"], "true");
    assert_eq!(one(&aks, "ProviderConfig")["spec"]["azure"]["credential"], "WorkloadIdentity");

    let kind = render("kind-local.yaml");
    assert_eq!(one(&kind, "ProviderConfig")["spec"]["local"]["serviceType"], "NodePort");
    let container = &one(&kind, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "tollbridge:dev");
    assert!(container["args"].as_array().unwrap().contains(&json!("--proxy-image=tollbridge:dev")));

    let ha = render("ha.yaml");
    let deployment = one(&ha, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap();
    assert!(image.starts_with("ghcr.io/tollbridge-dev/tollbridge@sha256:"), "{image}");
    let spread = &deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
    assert_eq!(spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"], "tollbridge");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let pdb = one(&ha, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    let policy = one(&ha, "NetworkPolicy");
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], selector);
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "metrics");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert!(of_kind(&ha, "ServiceMonitor").is_empty());

    // ServiceMonitor: its CRD is not in the test cluster, so only the rendering is checked.
    let monitored = documents(&template(
        "tb",
        &["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prometheus"],
    ));
    let monitor = one(&monitored, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service = one(&monitored, "Service");
    let service_labels = service["metadata"]["labels"].as_object().unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(service_labels.get(key), Some(value), "the ServiceMonitor selects the metrics Service");
    }
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], json!(["tb"]));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

// ---------------------------------------------------------------------------------------------
// Against the test API server
// ---------------------------------------------------------------------------------------------

#[test]
fn every_values_file_is_accepted_by_the_api_server() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("helm-dry-run");
    // Pod Security admission warns about workloads that the "restricted" standard would refuse.
    ns.kubectl_ok(&["label", "namespace", ns.name(), "pod-security.kubernetes.io/warn=restricted"], None);
    let mut files: Vec<Option<PathBuf>> = vec![None];
    files.extend(ci_values_files().into_iter().map(Some));
    for file in files {
        let shown = file.as_ref().map_or("default values".to_string(), |f| f.display().to_string());
        let mut args: Vec<String> = Vec::new();
        if let Some(file) = &file {
            args.extend(["--values".to_string(), file.display().to_string()]);
            // Its Role goes into the watched namespace, which must exist.
            if fs::read_to_string(file).unwrap_or_default().contains("watchNamespace:") {
                args.extend(["--set".to_string(), format!("watchNamespace={}", ns.name())]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rendered = template(ns.name(), &args);
        let out = cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
        assert!(
            out.status.success(),
            "the API server refused the chart rendered with {shown}:\n{}\n{rendered}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("PodSecurity"),
            "the chart rendered with {shown} breaks the restricted Pod Security Standard:\n{}",
            stderr(&out)
        );
        let applied = stdout(&out);
        assert_eq!(
            applied.lines().count(),
            documents(&rendered).len(),
            "every object of {shown} applied:\n{applied}"
        );
    }
}

/// A release installed into a fresh namespace; uninstalled (and its namespace deleted) on drop.
struct Release<'c> {
    cluster: &'c Cluster,
    name: String,
    namespace: String,
}

impl<'c> Release<'c> {
    fn install(cluster: &'c Cluster, extra: &[&str]) -> Release<'c> {
        let release = Release { cluster, name: unique_name("tb"), namespace: unique_name("tb-system") };
        let chart = chart_dir();
        let kubeconfig = cluster.kubeconfig().to_str().unwrap().to_owned();
        let mut args = vec![
            "install",
            &release.name,
            chart.to_str().unwrap(),
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            &release.namespace,
            "--create-namespace",
            "--timeout",
            "120s",
        ];
        args.extend_from_slice(extra);
        let notes = helm_ok(&args);
        assert!(notes.contains("STATUS: deployed"), "{notes}");
        assert!(notes.contains(&format!("kubectl -n {} get lease", release.namespace)), "NOTES:\n{notes}");
        release
    }

    /// `kubectl -n RELEASE-NS get KIND NAME -o json`.
    fn get(&self, kind: &str, name: &str) -> Value {
        let text = self.cluster.kubectl_ok(&["-n", &self.namespace, "get", kind, name, "-o", "json"], None);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
    }

    /// The operator Deployment: the only one with the release's instance label.
    fn deployment(&self) -> Value {
        let selector = format!("app.kubernetes.io/instance={}", self.name);
        let text = self
            .cluster
            .kubectl_ok(&["-n", &self.namespace, "get", "deployments", "-l", &selector, "-o", "json"], None);
        let list: Value = serde_json::from_str(&text).expect("deployment list");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "one operator Deployment: {list:#}");
        items[0].clone()
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let kubeconfig = self.cluster.kubeconfig().to_str().unwrap_or_default().to_owned();
        let out = helm(&[
            "uninstall",
            &self.name,
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            &self.namespace,
            "--timeout",
            "60s",
        ]);
        if !out.status.success() && !thread::panicking() {
            eprintln!("helm uninstall {} failed: {}", self.name, stderr(&out));
        }
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.namespace, "--wait=false", "--ignore-not-found"], None);
    }
}

/// A kubeconfig for the release's ServiceAccount: a token from the TokenRequest API, the test
/// cluster's server and CA (as `scripts/control-plane` writes them into the admin kubeconfig).
fn service_account_kubeconfig(cluster: &Cluster, namespace: &str, account: &str, dir: &Path) -> PathBuf {
    let token = cluster
        .kubectl_ok(&["create", "token", account, "-n", namespace, "--duration", "1h"], None)
        .trim()
        .to_owned();
    assert!(token.split('.').count() == 3, "not a JWT: {token}");
    let admin: Value =
        serde_yaml::from_str(&fs::read_to_string(cluster.kubeconfig()).expect("admin kubeconfig"))
            .expect("admin kubeconfig YAML");
    let entry = &admin["clusters"][0]["cluster"];
    let ca = match (entry["certificate-authority-data"].as_str(), entry["certificate-authority"].as_str()) {
        (Some(data), _) => data.to_owned(),
        (None, Some(path)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(fs::read(path).expect("CA file"))
        }
        (None, None) => panic!("the admin kubeconfig has no CA: {entry}"),
    };
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": cluster.api_server(), "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": account, "namespace": namespace}}],
        "current-context": "test",
    });
    let path = dir.join("kubeconfig");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600) // it holds a token
        .open(&path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(serde_yaml::to_string(&kubeconfig).unwrap().as_bytes()).expect("write kubeconfig");
    path
}

/// `kubectl --kubeconfig KUBECONFIG ARGS…` (not the admin's).
fn kubectl_as(cluster: &Cluster, kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(cluster.kubectl_path());
    cmd.arg("--kubeconfig").arg(kubeconfig).arg("--request-timeout=30s").args(args);
    run_captured(&mut cmd, None, KUBECTL_TIMEOUT, "kubectl")
}

/// `tollbridge ARGS…` as the chart's ServiceAccount, outside the cluster; killed when dropped
/// (its log is printed when that happens during a panic).
struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    fn spawn(kubeconfig: &Path, env: &[(&str, &str)], args: &[String], dir: &Path) -> OperatorProcess {
        let log = dir.join("operator.log");
        let out = fs::File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollbridge"));
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,tollbridge=debug")
            // No traffic off loopback: no instance metadata service, no cloud credentials; the
            // in-cluster configuration is never used.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for name in [
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "AZURE_CLIENT_ID",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_AUTHORITY_HOST",
            "TOLLBRIDGE_WATCH_NAMESPACE",
            "TOLLBRIDGE_PROXY_IMAGE",
            "TOLLBRIDGE_CLUSTER_ID",
        ] {
            cmd.env_remove(name);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start tollbridge {}: {e}", args.join(" ")));
        OperatorProcess { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the log to contain `needle`; panics when the process exits first.
    async fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll operator") {
                panic!("the operator exited ({status}) before logging {needle:?}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the operator did not log {needle:?} within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits up to 15 s for the exit (then SIGKILL and panic).
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent =
            run_captured(Command::new("kill").args(["-TERM", &pid]), None, Duration::from_secs(10), "kill");
        assert!(sent.status.success(), "kill -TERM {pid}: {}", stderr(&sent));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll operator") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the operator did not exit within 15 s of SIGTERM:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("----- log of the operator -----\n{}----- end of log -----", self.log());
        }
    }
}

/// The lines of the log that say a request was refused (or could not be made).
fn refusals(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden")
                || l.contains("cannot watch")
                || l.contains("cannot write status")
                || l.contains("cannot record event")
                || l.contains("cannot acquire the lease")
                || l.contains("cannot renew the lease")
                || l.contains("unauthorized")
        })
        .collect()
}

/// The status of condition `type_` in `conditions` ("" when absent).
fn condition<'a>(conditions: &'a Value, type_: &str) -> (&'a str, &'a str) {
    conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| (c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or("")))
        .unwrap_or(("", ""))
}

/// The installed release's operator, started as its ServiceAccount, scoped to `ns`. Returns the
/// process, its metrics port and the identity it uses in the Lease.
async fn start_operator(
    release: &Release<'_>,
    ns: &TestNamespace<'_>,
    dir: &Path,
) -> (OperatorProcess, u16, String, PathBuf) {
    let cluster = release.cluster;
    let deployment = release.deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().expect("serviceAccountName").to_owned();
    let container = &pod["containers"][0];
    let env: Vec<&Value> = container["env"].as_array().unwrap().iter().collect();
    let field = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
            .unwrap_or_else(|| panic!("env {name} from the downward API: {container:#}"))
            .to_owned()
    };
    assert_eq!(
        (field("POD_NAME"), field("POD_NAMESPACE")),
        ("metadata.name".into(), "metadata.namespace".into())
    );

    // The container's args, as the kubelet would pass them, with the metrics endpoint on a free
    // loopback port and the operator scoped to the test namespace (other test binaries share
    // this cluster).
    let port = free_port();
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .map(|a| {
            if a.starts_with("--metrics-address=") {
                format!("--metrics-address=127.0.0.1:{port}")
            } else {
                a
            }
        })
        .collect();
    assert_eq!(args[0], "operator");
    assert!(args.iter().any(|a| a.starts_with("--metrics-address=127.0.0.1:")), "{args:?}");
    let scope = format!("--namespace={}", ns.name());
    if !args.contains(&scope) {
        assert!(!args.iter().any(|a| a.starts_with("--namespace")), "{args:?}");
        args.push(scope);
    }

    let kubeconfig = service_account_kubeconfig(cluster, &release.namespace, &account, dir);
    let whoami =
        kubectl_as(cluster, &kubeconfig, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert!(whoami.status.success(), "kubectl auth whoami: {}", stderr(&whoami));
    assert_eq!(stdout(&whoami), format!("system:serviceaccount:{}:{account}", release.namespace));

    let identity = format!("{}-5d8f7c9b6-x2x7q", deployment["metadata"]["name"].as_str().unwrap());
    let process = OperatorProcess::spawn(
        &kubeconfig,
        &[("POD_NAME", &identity), ("POD_NAMESPACE", &release.namespace)],
        &args,
        dir,
    );
    (process, port, identity, kubeconfig)
}

fn lease_name(release: &Release<'_>) -> String {
    let args = release.deployment()["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    args.as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str().and_then(|a| a.strip_prefix("--lease-name=")).map(String::from))
        .expect("--lease-name in the Deployment")
}

/// Applies, as the admin, a Local class with a Gateway, a route, a QuotaPolicy and an ApiKey
/// without Secret, and an Azure class (no credentials: it can never reach a network) with a
/// Gateway that gets the cleanup finalizer.
fn apply_objects(cluster: &Cluster, ns: &TestNamespace<'_>, local: &str, azure: &str, port: u16) {
    cluster.apply_cluster_scoped(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {local}}}\n\
         spec: {{controllerName: {CONTROLLER_NAME}}}\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: ProviderConfig\nmetadata: {{name: {azure}}}\n\
         spec: {{provider: Azure, azure: {{subscriptionID: 00000000-0000-0000-0000-000000000000, resourceGroup: rg, serviceName: apim}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {azure}}}\n\
         spec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: tollbridge.dev, kind: ProviderConfig, name: {azure}}}\n"
    ));
    ns.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec:\n  gatewayClassName: {local}\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  annotations: {{tollbridge.dev/backend-url: \"http://127.0.0.1:9\"}}\n\
         spec: {{ports: [{{port: 80}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: orders}}\nspec:\n  \
         parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /orders}}}}]\n    \
         backendRefs: [{{name: echo, port: 80}}]\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: QuotaPolicy\nmetadata: {{name: gold}}\nspec:\n  \
         targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}}]\n  \
         apiKey: {{required: true, header: X-Api-Key}}\n  quota: {{requests: 1000, period: Day}}\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: alice}}\nspec:\n  \
         policyRef: {{name: gold}}\n  secretRef: {{name: alice-key}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: cloud}}\n\
         spec:\n  gatewayClassName: {azure}\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n"
    ));
}

/// Removes the finalizers of Gateway `name` when dropped, so that the namespace of a failed test
/// (whose operator is gone before it could clean up) is not held in Terminating.
struct DropFinalizers<'n, 'c>(&'n TestNamespace<'c>, &'static str);

impl Drop for DropFinalizers<'_, '_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(
            &["patch", "gateway", self.1, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#],
            None,
        );
    }
}

/// Everything the operator does with its API server, as the chart's ServiceAccount: watches
/// (ready), statuses of all five kinds, the proxy's objects created and deleted, an API key
/// Secret, Events, a finalizer added and removed, a Lease acquired, renewed and released; not
/// one request refused.
async fn the_operator_works_with_the_chart_rbac(watch_namespace: bool) {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("helm-apps");
    let mut values: Vec<String> = Vec::new();
    if watch_namespace {
        values.extend(["--set".to_string(), format!("watchNamespace={}", ns.name())]);
    }
    let release = Release::install(cluster, &values.iter().map(String::as_str).collect::<Vec<_>>());
    let local = cluster.delete_on_drop("gatewayclass", &unique_name("helm-local"));
    let azure_class = cluster.delete_on_drop("gatewayclass", &unique_name("helm-azure"));
    let _azure_config = cluster.delete_on_drop("providerconfig", azure_class.name());
    apply_objects(cluster, &ns, local.name(), azure_class.name(), free_port());
    let _finalizers = DropFinalizers(&ns, "cloud");

    let dir = tempfile::Builder::new().prefix("tollbridge-helm-op-").tempdir().expect("temp dir");
    let (mut op, port, identity, _kubeconfig) = start_operator(&release, &ns, dir.path()).await;
    op.wait_for_log("metrics and health endpoint listening", Duration::from_secs(20)).await;

    // Ready: every watch (list + watch of each kind) has synced with these permissions.
    let client = support::client::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    eventually("/readyz 200 (every watch synced)", CONVERGE, || async {
        client.try_get(&url("/readyz"), &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    op.wait_for_log("acquired leadership", CONVERGE).await;
    let lease = lease_name(&release);
    assert_eq!(release.get("lease", &lease)["spec"]["holderIdentity"], identity.as_str());

    // Statuses of all five kinds.
    eventually("GatewayClass Accepted", CONVERGE, || async {
        let class = cluster.get_cluster_scoped_json("gatewayclass", local.name());
        condition(&class["status"]["conditions"], "Accepted").0 == "True"
    })
    .await;
    eventually("Gateway Accepted, waiting for its proxy", CONVERGE, || async {
        let gw = ns.get_json("gateway", "gw");
        condition(&gw["status"]["conditions"], "Accepted") == ("True", "Accepted")
            && condition(&gw["status"]["conditions"], "Programmed") == ("False", "Pending")
            && gw["status"]["listeners"][0]["attachedRoutes"] == 1
    })
    .await;
    let route = ns.get_json("httproute", "orders");
    assert_eq!(route["status"]["parents"][0]["controllerName"], CONTROLLER_NAME);
    assert_eq!(condition(&route["status"]["parents"][0]["conditions"], "Accepted").0, "True");
    eventually("ApiKey Secret generated and ApiKey Ready", CONVERGE, || async {
        ns.try_get_json("secret", "alice-key").is_some()
            && condition(&ns.get_json("apikey", "alice")["status"]["conditions"], "Ready").0 == "True"
    })
    .await;
    eventually("QuotaPolicy Accepted", CONVERGE, || async {
        let ancestor = &ns.get_json("quotapolicy", "gold")["status"]["ancestors"][0];
        condition(&ancestor["conditions"], "Accepted").0 == "True"
    })
    .await;

    // The proxy's objects (created by server-side apply) and the Azure Gateway's finalizer.
    for (kind, name) in [
        ("serviceaccount", "tollbridge-gw"),
        ("role", "tollbridge-gw"),
        ("rolebinding", "tollbridge-gw"),
        ("deployment", "tollbridge-gw"),
        ("service", "tollbridge-gw"),
        ("secret", "tollbridge-gw-config"),
    ] {
        assert!(ns.try_get_json(kind, name).is_some(), "{kind} {name} not created");
    }
    assert_eq!(
        ns.get_json("role", "tollbridge-gw")["rules"][0]["resourceNames"],
        json!(["tollbridge-gw-config"])
    );
    eventually("the cloud Gateway's finalizer and its Programmed=False", CONVERGE, || async {
        let gw = ns.get_json("gateway", "cloud");
        gw["metadata"]["finalizers"] == json!(["tollbridge.dev/cleanup"])
            && condition(&gw["status"]["conditions"], "Programmed").0 == "False"
    })
    .await;

    // Events (events.k8s.io) by the operator.
    eventually("Events KeyGenerated and Programmed", CONVERGE, || async {
        let list: Value =
            serde_json::from_str(&ns.kubectl_ok(&["get", "events.events.k8s.io", "-o", "json"], None))
                .unwrap();
        let ours: Vec<&Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reportingController"] == "tollbridge-operator")
            .collect();
        ["KeyGenerated", "Programmed"].iter().all(|r| ours.iter().any(|e| e["reason"] == *r))
    })
    .await;

    // Delete: the class goes, so the Gateway is no longer ours and its proxy objects are removed.
    cluster.delete_cluster_scoped("gatewayclass", local.name());
    for (kind, name) in [
        ("deployment", "tollbridge-gw"),
        ("service", "tollbridge-gw"),
        ("secret", "tollbridge-gw-config"),
        ("rolebinding", "tollbridge-gw"),
        ("role", "tollbridge-gw"),
        ("serviceaccount", "tollbridge-gw"),
    ] {
        ns.wait_deleted(kind, name, CONVERGE);
    }
    // The finalizer removed once the cloud Gateway is cleaned up: its credential never worked,
    // so it is let go with its deletion policy (Orphan), which the operator itself acts on.
    ns.kubectl_ok(&["annotate", "gateway", "cloud", "tollbridge.dev/deletion-policy=Orphan"], None);
    ns.delete("gateway", "cloud");
    ns.wait_deleted("gateway", "cloud", CONVERGE);

    // The Lease has been renewed (update) meanwhile, and is released on SIGTERM.
    let metrics = client.get(&url("/metrics"), &[]).await.text();
    assert!(metrics.contains("tollbridge_operator_leader 1"), "{metrics}");
    let status = op.terminate().await;
    assert!(status.success(), "the operator exited with {status}:\n{}", op.log());
    let log = op.log();
    assert!(log.contains("released leadership"), "the Lease was not released:\n{log}");
    assert_eq!(release.get("lease", &lease)["spec"]["holderIdentity"], Value::Null, "released Lease");

    let refused = refusals(&log);
    assert!(
        refused.is_empty(),
        "requests refused with the chart's RBAC:\n{}\n\nfull log:\n{log}",
        refused.join("\n")
    );
}

#[tokio::test]
async fn the_operator_runs_with_exactly_the_chart_rbac() {
    the_operator_works_with_the_chart_rbac(false).await;
}

#[tokio::test]
async fn the_operator_runs_with_the_chart_rbac_for_one_watched_namespace() {
    the_operator_works_with_the_chart_rbac(true).await;
}

/// The check above would see a missing verb: without `create` on Secrets, the ApiKey's Secret is
/// refused and the log says "forbidden".
#[tokio::test]
async fn a_verb_missing_from_the_chart_rbac_shows_up_as_forbidden() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("helm-denied");
    let release = Release::install(cluster, &["--set", &format!("watchNamespace={}", ns.name())]);
    // The Role the chart made in the watched namespace, without `create` on Secrets.
    let role = release.deployment()["metadata"]["name"].as_str().unwrap().to_owned();
    let mut live = ns.get_json("role", &role);
    let mut removed = false;
    for rule in live["rules"].as_array_mut().unwrap() {
        if rule["resources"] == json!(["secrets"]) {
            let verbs = rule["verbs"].as_array_mut().unwrap();
            verbs.retain(|v| v != "create");
            removed = true;
        }
    }
    assert!(removed, "no Secrets rule in {live:#}");
    ns.kubectl_ok(&["replace", "-f", "-"], Some(&live.to_string()));
    ns.apply(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: QuotaPolicy\nmetadata: {name: gold}\nspec:\n  \
         targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]\n  \
         apiKey: {required: true}\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: alice}\nspec:\n  \
         policyRef: {name: gold}\n  secretRef: {name: alice-key}\n",
    );

    let dir = tempfile::Builder::new().prefix("tollbridge-helm-op-").tempdir().expect("temp dir");
    let (mut op, _, _, _) = start_operator(&release, &ns, dir.path()).await;
    op.wait_for_log("forbidden", CONVERGE).await;
    let log = op.log();
    let refused = refusals(&log);
    assert!(
        refused.iter().any(|l| l.contains("cannot create resource") && l.contains("secrets")),
        "expected the Secret create to be refused:\n{log}"
    );
    assert!(ns.try_get_json("secret", "alice-key").is_none());
    op.terminate().await;
}

/// A referenced Secret that cannot be read is not taken for absent: an ApiKey whose Secret was
/// read before keeps its last good value (on a cloud its API key would otherwise be deleted);
/// one never read holds the pass back instead of being declared missing.
#[tokio::test]
async fn an_unreadable_secret_is_not_taken_for_absent() {
    let _lock = exclusive().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("helm-unreadable");
    let release = Release::install(cluster, &["--set", &format!("watchNamespace={}", ns.name())]);
    ns.apply(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: QuotaPolicy\nmetadata: {name: gold}\nspec:\n  \
         targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: orders}]\n  \
         apiKey: {required: true}\n---\n\
         apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: alice}\nspec:\n  \
         policyRef: {name: gold}\n  secretRef: {name: alice-key}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: alice-key}\nstringData: {api-key: alice-key-0001}\n",
    );
    let dir = tempfile::Builder::new().prefix("tollbridge-helm-op-").tempdir().expect("temp dir");
    let (mut op, _, _, _) = start_operator(&release, &ns, dir.path()).await;
    let reason = |key: &str| {
        let key = ns.get_json("apikey", key);
        condition(&key["status"]["conditions"], "Ready").1.to_owned()
    };
    // The policy targets no route: the key is valid, waiting for its policy (not a missing Secret).
    eventually("alice's Secret read", CONVERGE, || async { reason("alice") == "Pending" }).await;

    // From now on Secrets cannot be read (the Role loses `get`); alice's Secret changes.
    let role = release.deployment()["metadata"]["name"].as_str().unwrap().to_owned();
    let mut live = ns.get_json("role", &role);
    for rule in live["rules"].as_array_mut().unwrap() {
        if rule["resources"] == json!(["secrets"]) {
            rule["verbs"].as_array_mut().unwrap().retain(|v| v != "get");
        }
    }
    ns.kubectl_ok(&["replace", "-f", "-"], Some(&live.to_string()));
    ns.kubectl_ok(&["label", "secret", "alice-key", "touched=yes"], None);
    op.wait_for_log("using its last good value", CONVERGE).await;
    assert_eq!(reason("alice"), "Pending", "alice's key was taken for missing");

    // A new key whose Secret was never read: the pass waits, nothing says it is missing. The
    // Secret goes first, and the operator is seen to have a pass after it (each pass reads
    // alice's again): applied together, a pass between the two watch events would rightly find
    // no Secret yet, and the passes after it are skipped, so that answer would stay.
    let last_good_reads = op.log().matches("using its last good value").count();
    ns.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bob-key}\nstringData: {api-key: bob-key-0002}\n",
    );
    eventually("a pass after bob's Secret", CONVERGE, || {
        let reads = op.log().matches("using its last good value").count();
        async move { reads > last_good_reads }
    })
    .await;
    let skipped_before = op.log().matches("pass skipped").count();
    ns.apply(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: bob}\nspec:\n  \
         policyRef: {name: gold}\n  secretRef: {name: bob-key}\n",
    );
    // A pass skipped for the unreadable Secret is retried: after the retry, still nothing is missing.
    eventually("a skipped pass retried", CONVERGE, || {
        let skipped = op.log().matches("pass skipped").count();
        async move { skipped >= skipped_before + 2 }
    })
    .await;
    assert_ne!(reason("bob"), "SecretNotFound", "bob's unreadable Secret was declared missing");
    assert_eq!(reason("alice"), "Pending");
    op.terminate().await;
}
