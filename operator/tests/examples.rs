//! Every example under `examples/` works as its README says.
//!
//! For each example directory:
//!
//! - **Load and translate** with the same code as `tollbridge check` (the library's file loader,
//!   the translator, `tollbridge::providers::capabilities`): no load errors, only the loader
//!   warnings listed here, and exactly the problems listed here (the ones the example's README
//!   announces; none for most). The binary's `tollbridge check -f DIR` must agree (exit 0 when
//!   no problem is expected).
//! - **Cloud examples** are also mapped onto their provider with the providers' pure mapping
//!   (`tollbridge_aws::desired::map`, `tollbridge_azure::desired::map`): nothing may be reported
//!   as "not provisioned". The EKS IAM policy must allow every API Gateway call the provider
//!   makes, and nothing it does not make.
//! - **Cluster examples** get a server-side dry run (`kubectl apply --dry-run=server -f DIR`) on
//!   the real test API server (tests/support/cluster.rs), in a fresh namespace: namespaced
//!   objects go there (the examples carry no namespace), cluster-scoped ones (GatewayClass,
//!   ProviderConfig) are only dry-run, so nothing is left behind and names cannot clash.
//! - **The standalone API-key example** is served by `tollbridge run` and answers 401 / 403 /
//!   200 / 429 as its README shows.
//!
//! "Passes" for a cloud example therefore means: it loads, translates with nothing dropped or
//! refused for its provider, and maps with nothing left out; the one problem the EKS example
//! has before its README's TLS Secret step is listed and checked.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use support::client::Client;
use support::cluster::{repo_root, Cluster};
use support::process::{free_port, ConfigDir, Tollbridge};
use support::recorder::Recorder;
use support::tls::TestCert;
use tollbridge::source::files;
use tollbridge::translate::{self, Translation};
use tollbridge_provider::{ActionIr, BackendProtocol, GatewayIr, ProviderSettings, RouteIr, RouteKind};

/// The example directories, relative to the repository root. Every directory under
/// `examples/` must be covered by one of these (see `every_example_directory_is_tested`).
const QUICKSTART: &str = "examples/quickstart";
const INVALID: &str = "examples/invalid";
const KIND: &str = "examples/kind";
const KEYS_CLUSTER: &str = "examples/api-keys-and-quotas/cluster";
const KEYS_STANDALONE: &str = "examples/api-keys-and-quotas/standalone";
const EKS: &str = "examples/eks/manifests";
const AKS: &str = "examples/aks/manifests";
const GRPC_AND_TLS: &str = "examples/grpc-and-backend-tls";

/// The problem the cluster variant of the API-key example has without a cluster: nothing
/// generates globex's Secret (the operator does; see its README).
const GLOBEX_SECRET_MISSING: &str =
    "ApiKey default/globex: Ready=False SecretNotFound: Secret default/globex-api-key not found";

/// The problem the EKS example has until the README's TLS Secret step.
const EKS_TLS_SECRET_MISSING: &str = "Gateway default/public-api listener https: ResolvedRefs=False \
     InvalidCertificateRef: Secret default/api-example-com-tls not found";

/// The API key of `acme` in the API-key examples, and the first 8 hex digits of its SHA-256.
const ACME_KEY: &str = "acme-example-key-change-me";
const ACME_KEY_ID: &str = "21b29a31";
const GLOBEX_STANDALONE_KEY: &str = "globex-example-key-change-me";

fn abs(dir: &str) -> PathBuf {
    repo_root().join(dir)
}

// ---------------------------------------------------------------------------------------------
// Load and translate, as `tollbridge check` does
// ---------------------------------------------------------------------------------------------

struct Checked {
    translation: Translation,
    warnings: Vec<String>,
    problems: Vec<String>,
}

impl Checked {
    fn gateway(&self, id: &str) -> &GatewayIr {
        self.translation
            .gateways
            .iter()
            .find(|g| g.key.id() == id)
            .unwrap_or_else(|| panic!("no IR for Gateway {id}; problems: {:#?}", self.problems))
    }
}

/// Loads `paths` together with the library code of `tollbridge check`; panics on load errors.
fn check(paths: &[PathBuf]) -> Checked {
    let mut loaded = files::load_paths(paths, files::Validation::Strict)
        .unwrap_or_else(|e| panic!("load errors in {paths:?} (tollbridge check):\n{e}"));
    loaded.snapshot.now = jiff::Timestamp::now();
    let translation = translate::translate(&loaded.snapshot, &tollbridge::providers::capabilities);
    let problems = translation.statuses.problems();
    Checked { translation, warnings: loaded.warnings, problems }
}

/// Asserts the problems are exactly `expected` and each warning contains one of
/// `expected_warnings` (one warning per entry).
fn assert_outcome(what: &str, checked: &Checked, expected_problems: &[&str], expected_warnings: &[&str]) {
    let mut problems: Vec<&str> = checked.problems.iter().map(String::as_str).collect();
    problems.sort_unstable();
    let mut expected: Vec<&str> = expected_problems.to_vec();
    expected.sort_unstable();
    assert_eq!(problems, expected, "{what}: problems differ from the expected ones");
    assert_eq!(
        checked.warnings.len(),
        expected_warnings.len(),
        "{what}: loader warnings: {:#?}",
        checked.warnings
    );
    for needle in expected_warnings {
        assert!(
            checked.warnings.iter().any(|w| w.contains(needle)),
            "{what}: no warning mentions {needle:?}: {:#?}",
            checked.warnings
        );
    }
}

/// Runs the binary's `tollbridge check -f DIR…` from the repository root (as the READMEs do)
/// and checks it agrees: exit 0 and `ok` when no problem is expected, else exit 1 listing them.
fn assert_binary_check(dirs: &[&str], expected_problems: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollbridge"));
    cmd.current_dir(repo_root()).arg("check");
    for dir in dirs {
        cmd.args(["-f", dir]);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("run tollbridge check: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("loading the files"), "tollbridge check {dirs:?}: load errors:\n{stderr}");
    if expected_problems.is_empty() {
        assert!(out.status.success(), "tollbridge check {dirs:?} failed:\n{stderr}");
        assert!(stderr.contains("ok: every object is valid"), "tollbridge check {dirs:?}:\n{stderr}");
    } else {
        assert_eq!(out.status.code(), Some(1), "tollbridge check {dirs:?}:\n{stderr}");
        for problem in expected_problems {
            assert!(
                stderr.contains(problem),
                "tollbridge check {dirs:?} does not list {problem:?}:\n{stderr}"
            );
        }
    }
}

/// The YAML documents of every `.yaml` file of `dir` (in the loader's order), without the
/// documents of the kinds in `drop`.
fn documents(dir: &Path, drop: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for file in files::yaml_files(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", file.display()));
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            if drop.contains(&kind) {
                continue;
            }
            out.push(serde_yaml::to_string(&value).expect("serialize a document"));
        }
    }
    out
}

/// A file with `contents` in a fresh temporary directory (kept alive by the returned guard).
fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(name);
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    (dir, path)
}

fn tls_secret_yaml() -> String {
    TestCert::self_signed("api.example.com").secret_yaml("api-example-com-tls")
}

// ---------------------------------------------------------------------------------------------
// Coverage and files
// ---------------------------------------------------------------------------------------------

#[test]
fn every_example_directory_is_tested() {
    let covered: BTreeSet<&str> =
        [QUICKSTART, INVALID, KIND, KEYS_CLUSTER, KEYS_STANDALONE, EKS, AKS, GRPC_AND_TLS]
            .iter()
            .map(|d| d.trim_start_matches("examples/").split('/').next().unwrap())
            .collect();
    let root = abs("examples");
    let mut found = BTreeSet::new();
    for entry in fs::read_dir(&root).unwrap_or_else(|e| panic!("list {}: {e}", root.display())) {
        let entry = entry.expect("directory entry");
        if entry.file_type().expect("file type").is_dir() {
            found.insert(entry.file_name().into_string().expect("UTF-8 name"));
        }
    }
    let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, covered, "examples/ and the directories this test covers differ");
}

/// The READMEs and every page of docs/ but the benchmark log, checked by
/// `readme_paths_and_links_resolve` (and `the_docs_index_lists_every_page`).
const DOCS: &[&str] = &[
    "examples/README.md",
    "examples/kind/README.md",
    "examples/api-keys-and-quotas/README.md",
    "examples/eks/README.md",
    "examples/aks/README.md",
    "examples/grpc-and-backend-tls/README.md",
    "README.md",
    "docs/README.md",
    "docs/install.md",
    "docs/install-image.md",
    "docs/concepts.md",
    "docs/cli.md",
    "docs/operator.md",
    "docs/clouds.md",
    "docs/providers.md",
    "docs/troubleshooting.md",
    "docs/upgrading.md",
    "docs/conformance.md",
    "docs/testing.md",
    "docs/architecture.md",
    "docs/architecture-notes.md",
];

/// The anchors GitHub gives the headings of a Markdown text: lower case, punctuation other than
/// `-` and `_` dropped, spaces as `-`, repeats numbered `-1`, `-2`, ….
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while out.contains(&candidate) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        out.insert(candidate);
    }
    out
}

/// Every `examples/…`, `docs/…` or `charts/…` path these files mention exists (so the commands
/// in them name real files), and every relative Markdown link leads to an existing file and,
/// with `#anchor`, to a heading of it.
#[test]
fn readme_paths_and_links_resolve() {
    let paths = regex::Regex::new(r"(?:examples|docs|charts)/[A-Za-z0-9_./-]*[A-Za-z0-9_-]").expect("regex");
    let links = regex::Regex::new(r"\]\(([^)\s]+)\)").expect("regex");
    for doc in DOCS {
        let text = fs::read_to_string(abs(doc)).unwrap_or_else(|e| panic!("read {doc}: {e}"));
        for found in paths.find_iter(&text) {
            let path = found.as_str();
            assert!(abs(path).exists(), "{doc} mentions {path}, which does not exist");
        }
        for link in links.captures_iter(&text) {
            let target = &link[1];
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path =
                if file.is_empty() { abs(doc) } else { abs(doc).parent().expect("a directory").join(file) };
            assert!(path.exists(), "{doc} links to {target}: {} does not exist", path.display());
            if !anchor.is_empty() {
                let linked = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{doc} links to {target}: read {}: {e}", path.display()));
                let known = anchors(&linked);
                assert!(
                    known.contains(anchor),
                    "{doc} links to {target}: no such heading; there are {known:?}"
                );
            }
        }
    }
}

/// The chart values of the cloud examples use only keys the chart has (its values.schema.json
/// refuses unknown keys): every key path must exist in charts/tollbridge/values.yaml, down to
/// the maps the chart leaves free-form (annotations, labels).
#[test]
fn cloud_values_files_use_the_charts_keys() {
    let chart_path = abs("charts/tollbridge/values.yaml");
    let chart_text =
        fs::read_to_string(&chart_path).unwrap_or_else(|e| panic!("read {}: {e}", chart_path.display()));
    let chart: serde_yaml::Value = serde_yaml::from_str(&chart_text).expect("chart values parse");
    fn walk(path: &str, ours: &serde_yaml::Value, chart: &serde_yaml::Value, problems: &mut Vec<String>) {
        let (Some(ours), Some(theirs)) = (ours.as_mapping(), chart.as_mapping()) else {
            let same_type = std::mem::discriminant(ours) == std::mem::discriminant(chart) || chart.is_null();
            if !same_type {
                problems.push(format!("{path}: {ours:?} where the chart has {chart:?}"));
            }
            return;
        };
        if theirs.is_empty() {
            return; // free-form in the chart
        }
        for (key, value) in ours {
            let key = key.as_str().unwrap_or_default();
            let path = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
            match theirs.get(key) {
                Some(chart_value) => walk(&path, value, chart_value, problems),
                None => problems.push(format!("{path}: not a key of the chart")),
            }
        }
    }
    for file in ["examples/eks/values.yaml", "examples/aks/values.yaml"] {
        let text = fs::read_to_string(abs(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
        let ours: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut problems = Vec::new();
        walk("", &ours, &chart, &mut problems);
        assert!(problems.is_empty(), "{file}: {problems:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Local examples
// ---------------------------------------------------------------------------------------------

#[test]
fn quickstart_is_valid() {
    let checked = check(&[abs(QUICKSTART)]);
    assert_outcome(QUICKSTART, &checked, &[], &[]);
    assert_binary_check(&[QUICKSTART], &[]);
}

#[test]
fn grpc_and_backend_tls_example() {
    let checked = check(&[abs(GRPC_AND_TLS)]);
    assert_outcome(GRPC_AND_TLS, &checked, &[], &[]);
    assert_binary_check(&[GRPC_AND_TLS], &[]);
    let gateway = checked.gateway("default/api");
    let grpc: Vec<_> = gateway.routes.iter().filter(|r| r.id.kind == RouteKind::GRPCRoute).collect();
    assert_eq!(grpc.len(), 2, "{:#?}", gateway.routes);
    let backends = |route: &RouteIr| match &route.action {
        ActionIr::Forward { backends } => backends.clone(),
        other => panic!("{other:?}"),
    };
    // The canary rule (its method and header) ranks first, and gRPC speaks h2c.
    assert_eq!(grpc[0].id.rule_name.as_deref(), Some("canary"));
    assert!(backends(grpc[0]).iter().all(|b| b.protocol == BackendProtocol::H2c));
    let orders = gateway.routes.iter().find(|r| r.id.name == "orders").expect("the orders route");
    let tls = backends(orders)[0].tls.clone().expect("TLS to orders");
    assert_eq!(tls.hostname, "orders.internal");
    assert_eq!(tls.ca_certificates_pem.len(), 1);
}

#[test]
fn invalid_example_loads_and_reports_problems() {
    let checked = check(&[abs(INVALID)]);
    assert!(
        checked.problems.len() >= 3,
        "examples/invalid should show several problems: {:#?}",
        checked.problems
    );
}

#[test]
fn kind_example() {
    let checked = check(&[abs(KIND)]);
    assert_outcome(KIND, &checked, &[], &["skipped apps/v1 Deployment"]);
    assert_binary_check(&[KIND], &[]);

    let gateway = checked.gateway("default/web");
    match &gateway.provider {
        ProviderSettings::Local(local) => {
            assert_eq!(local.service_type, "NodePort");
            assert_eq!(local.replicas, 1);
        }
        other => panic!("Gateway web should be Local, is {other:?}"),
    }
    assert_eq!(gateway.listeners.len(), 1);
    assert_eq!(gateway.listeners[0].port, 80);
    assert_eq!(gateway.routes.len(), 1, "{:#?}", gateway.routes);

    // The echo backend runs the image of this version (the chart's default image too).
    let echo = documents(&abs(KIND), &[])
        .into_iter()
        .find(|d| d.contains("kind: Deployment"))
        .expect("examples/kind has the echo Deployment");
    let expected = format!("image: ghcr.io/tollbridge-dev/tollbridge:{}", env!("CARGO_PKG_VERSION"));
    assert!(echo.contains(&expected), "the echo Deployment should use {expected}:\n{echo}");
    assert!(echo.contains("- echo\n"), "the echo Deployment should run the echo subcommand:\n{echo}");
}

#[test]
fn api_keys_cluster_example() {
    let dirs = [abs(KIND), abs(KEYS_CLUSTER)];
    let checked = check(&dirs);
    assert_outcome(KEYS_CLUSTER, &checked, &[GLOBEX_SECRET_MISSING], &["skipped apps/v1 Deployment"]);
    assert_binary_check(&[KIND, KEYS_CLUSTER], &[GLOBEX_SECRET_MISSING]);
    let acme = &checked.translation.statuses.apikeys["default/acme"];
    assert_eq!(acme.key_id.as_deref(), Some(ACME_KEY_ID), "the KEYID shown in the README");

    // Once the operator has generated globex's Secret (README), everything is ready.
    let generated = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: globex-api-key\ntype: Opaque\n\
                     stringData:\n  api-key: bm90LWEtcmVhbC1rZXktYnV0LWxvbmctZW5vdWdoLXRvLXBhc3M\n";
    let (_guard, secret) = temp_file("generated-secret.yaml", generated);
    let checked = check(&[abs(KIND), abs(KEYS_CLUSTER), secret]);
    assert_outcome("api-keys-and-quotas/cluster with the generated Secret", &checked, &[], &["Deployment"]);
    let gateway = checked.gateway("default/web");
    let orders = gateway.policies.iter().find(|p| p.id == "default/orders").expect("policy orders in the IR");
    assert_eq!(orders.keys.len(), 2, "acme and globex");
    let catalog =
        gateway.policies.iter().find(|p| p.id == "default/catalog").expect("policy catalog in the IR");
    assert!(catalog.keys.is_empty());
    assert!(!catalog.api_key.as_ref().expect("catalog reads keys").required);
}

#[test]
fn api_keys_standalone_example_loads() {
    let checked = check(&[abs(KEYS_STANDALONE)]);
    assert_outcome(KEYS_STANDALONE, &checked, &[], &[]);
    assert_binary_check(&[KEYS_STANDALONE], &[]);
    // The same policies and routes as the cluster variant: only Gateway, backend and Secrets differ.
    for file in ["routes.yaml", "policies.yaml"] {
        let body = |dir: &str| {
            let text = fs::read_to_string(abs(dir).join(file)).expect("read");
            text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n")
        };
        assert_eq!(
            body(KEYS_CLUSTER),
            body(KEYS_STANDALONE),
            "{file} differs between cluster/ and standalone/"
        );
    }
}

/// The README's transcript, against `tollbridge run` on a copy of standalone/ (ports moved to
/// free ones, the echo backend replaced by a recorder that shows what was forwarded).
#[tokio::test]
async fn api_keys_standalone_example_answers_as_documented() {
    let backend = Recorder::spawn("echo").await;
    let port = free_port();
    let dir = ConfigDir::new();
    for entry in fs::read_dir(abs(KEYS_STANDALONE)).expect("list standalone/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = fs::read_to_string(&path).expect("read");
        let mut replace = |from: &str, to: String| {
            assert_eq!(text.matches(from).count(), 1, "{name}: expected one {from:?}");
            text = text.replace(from, &to);
        };
        match name.as_str() {
            "gateway.yaml" => replace("port: 8080", format!("port: {port}")),
            "backends.yaml" => replace("port: 9090", format!("port: {}", backend.addr.port())),
            _ => {}
        }
        dir.write(&name, &text);
    }
    let mut tollbridge = Tollbridge::start(&dir, &[]).await;
    let client = Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let missing = client.get(&url("/orders/1"), &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{}", missing.text());
    assert_eq!(missing.json()["error"], "missing_api_key");
    assert_eq!(missing.header("www-authenticate"), Some("ApiKey realm=\"tollbridge\""));

    let guessed = client.get(&url("/orders/1"), &[("x-api-key", "guessed")]).await;
    assert_eq!(guessed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(guessed.json()["error"], "invalid_api_key");

    let ok = client.get(&url("/orders/1"), &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.header("x-ratelimit-limit"), Some("5"));
    assert!(ok.header("ratelimit-policy").is_some_and(|p| p.contains("\"quota\";q=1000;w=86400")));
    let seen = backend.last();
    assert_eq!(seen.path, "/orders/1");
    assert_eq!(seen.header_all("x-tollbridge-consumer"), ["Acme Corp"]);
    assert!(seen.header_all("x-api-key").is_empty(), "the key must not be forwarded");

    let forbidden = client.get(&url("/catalog/1"), &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{}", forbidden.text());
    assert_eq!(forbidden.json()["error"], "forbidden");
    let anonymous = client.get(&url("/catalog/1"), &[]).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.header("x-ratelimit-limit"), Some("60"));

    // Burst 5: of 8 requests at once, at least the last ones are refused (a slow machine may
    // refill a token in between, so the exact split is not asserted).
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes
            .push(client.get(&url("/orders"), &[("x-api-key", GLOBEX_STANDALONE_KEY)]).await.status.as_u16());
    }
    assert_eq!(codes[0], 200, "{codes:?}");
    assert_eq!(codes[7], 429, "{codes:?}");
    let refused = client.get(&url("/orders"), &[("x-api-key", GLOBEX_STANDALONE_KEY)]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"], "rate_limited");
    assert!(refused.header("retry-after").is_some());
    // Each key has its own bucket.
    let acme_again = client.get(&url("/orders"), &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(acme_again.status, StatusCode::OK);

    tollbridge.terminate(Duration::from_secs(40)).await;
}

// ---------------------------------------------------------------------------------------------
// Cloud examples
// ---------------------------------------------------------------------------------------------

fn now_seconds() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[test]
fn eks_example() {
    // Before the README's TLS Secret step: the one announced problem.
    let checked = check(&[abs(EKS)]);
    assert_outcome(EKS, &checked, &[EKS_TLS_SECRET_MISSING], &[]);
    assert_binary_check(&[EKS], &[EKS_TLS_SECRET_MISSING]);

    // After it (`kubectl create secret tls api-example-com-tls …`): nothing.
    let (_guard, secret) = temp_file("tls-secret.yaml", &tls_secret_yaml());
    let checked = check(&[abs(EKS), secret]);
    assert_outcome("examples/eks with its TLS Secret", &checked, &[], &[]);
    let gateway = checked.gateway("default/public-api");
    let ProviderSettings::Aws(aws) = &gateway.provider else {
        panic!("public-api is not AWS: {:?}", gateway.provider)
    };
    assert_eq!(aws.api_type, "Auto");
    assert!(aws.certificate_arn.is_some());
    assert_eq!(gateway.listeners[0].hostname.as_deref(), Some("api.example.com"));
    assert!(!gateway.routes.is_empty());

    use tollbridge_aws::changes::{Kind, Spec};
    use tollbridge_aws::desired::{self, ApiType};
    let api_type = desired::api_type(aws, gateway);
    assert_eq!(api_type, ApiType::Http, "no keys or quota: Auto picks an HTTP API (README)");
    let mapping = desired::map(gateway, aws, "eks-prod-eu-west-1", api_type, now_seconds());
    assert!(mapping.unprovisioned.is_empty(), "not provisioned on AWS: {:#?}", mapping.unprovisioned);
    for kind in [Kind::DomainName, Kind::ApiMapping] {
        assert!(
            mapping.resources.contains_key(&(kind, "api.example.com".to_string())),
            "no {kind:?} for api.example.com: {:#?}",
            mapping.resources.keys()
        );
    }
    let throttled = mapping.resources.values().any(|spec| match spec {
        Spec::Stage { throttles, .. } => throttles.values().any(|t| t.rate == 100.0 && t.burst == 200),
        _ => false,
    });
    assert!(throttled, "the QuotaPolicy's rate limit should throttle the stage route");
    // `/orders` and `/orders/{proxy+}`, each rewritten to /v1/orders… with the header set.
    let integrations: Vec<_> = mapping
        .resources
        .values()
        .filter_map(|spec| match spec {
            Spec::Integration { uri, parameters, timeout_ms, .. } => Some((uri, parameters, timeout_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(integrations.len(), 2, "{integrations:#?}");
    for (uri, parameters, timeout_ms) in integrations {
        assert_eq!(uri, "https://orders.internal.example.com");
        let path = parameters.get("overwrite:path").map(String::as_str).unwrap_or_default();
        assert!(path.starts_with("/v1/orders"), "{parameters:?}");
        assert_eq!(parameters.get("overwrite:header.x-via").map(String::as_str), Some("tollbridge"));
        assert_eq!(*timeout_ms, 10_000);
    }
}

/// The API Gateway calls the provider makes (every `"Get…"`, `"Create…"`, … operation name in
/// providers/aws/src), each as the IAM action and resource path it is authorized as.
fn aws_operation_requests() -> Vec<(String, &'static str, &'static str)> {
    const REQUESTS: &[(&str, &[(&str, &str)])] = &[
        ("GetApis", &[("GET", "/apis")]),
        ("GetIntegrations", &[("GET", "/apis/a1/integrations")]),
        ("GetRoutes", &[("GET", "/apis/a1/routes")]),
        ("GetAuthorizers", &[("GET", "/apis/a1/authorizers")]),
        ("GetStages", &[("GET", "/apis/a1/stages"), ("GET", "/restapis/r1/stages")]),
        ("GetDomainNames", &[("GET", "/domainnames")]),
        ("GetApiMappings", &[("GET", "/domainnames/api.example.com/apimappings")]),
        ("GetBasePathMappings", &[("GET", "/domainnames/api.example.com/basepathmappings")]),
        ("GetRestApis", &[("GET", "/restapis")]),
        ("GetResources", &[("GET", "/restapis/r1/resources")]),
        ("GetDeployment", &[("GET", "/restapis/r1/deployments/d1")]),
        ("GetApiKeys", &[("GET", "/apikeys")]),
        ("GetUsagePlans", &[("GET", "/usageplans")]),
        ("GetUsagePlan", &[("GET", "/usageplans/p1")]),
        ("GetUsagePlanKeys", &[("GET", "/usageplans/p1/keys")]),
        ("GetUsage", &[("GET", "/usageplans/p1/usage")]),
        ("CreateApi", &[("POST", "/apis")]),
        ("CreateIntegration", &[("POST", "/apis/a1/integrations")]),
        ("CreateRoute", &[("POST", "/apis/a1/routes")]),
        ("CreateAuthorizer", &[("POST", "/apis/a1/authorizers")]),
        ("CreateStage", &[("POST", "/apis/a1/stages")]),
        ("CreateDomainName", &[("POST", "/domainnames")]),
        ("CreateApiMapping", &[("POST", "/domainnames/api.example.com/apimappings")]),
        ("CreateBasePathMapping", &[("POST", "/domainnames/api.example.com/basepathmappings")]),
        ("CreateRestApi", &[("POST", "/restapis")]),
        ("CreateResource", &[("POST", "/restapis/r1/resources/p1")]),
        ("CreateDeployment", &[("POST", "/restapis/r1/deployments")]),
        ("CreateUsagePlan", &[("POST", "/usageplans")]),
        ("CreateUsagePlanKey", &[("POST", "/usageplans/p1/keys")]),
        ("CreateApiKey", &[("POST", "/apikeys")]),
        // HTTP APIs: POST /v2/tags/{arn}; REST APIs: PUT /tags/{arn}.
        ("TagResource", &[("POST", "/tags/arn%3Aaws%3Aapigateway"), ("PUT", "/tags/arn%3Aaws%3Aapigateway")]),
        ("PutMethod", &[("PUT", "/restapis/r1/resources/x1/methods/GET")]),
        ("PutIntegration", &[("PUT", "/restapis/r1/resources/x1/methods/GET/integration")]),
        ("UpdateApi", &[("PATCH", "/apis/a1")]),
        ("UpdateIntegration", &[("PATCH", "/apis/a1/integrations/i1")]),
        ("UpdateRoute", &[("PATCH", "/apis/a1/routes/r1")]),
        ("UpdateAuthorizer", &[("PATCH", "/apis/a1/authorizers/z1")]),
        ("UpdateStage", &[("PATCH", "/apis/a1/stages/$default")]),
        ("UpdateDomainName", &[("PATCH", "/domainnames/api.example.com")]),
        ("UpdateApiMapping", &[("PATCH", "/domainnames/api.example.com/apimappings/m1")]),
        ("UpdateBasePathMapping", &[("PATCH", "/domainnames/api.example.com/basepathmappings/(none)")]),
        ("UpdateRestApi", &[("PATCH", "/restapis/r1")]),
        ("UpdateUsagePlan", &[("PATCH", "/usageplans/p1")]),
        ("UpdateApiKey", &[("PATCH", "/apikeys/k1")]),
        ("DeleteApi", &[("DELETE", "/apis/a1")]),
        ("DeleteIntegration", &[("DELETE", "/apis/a1/integrations/i1")]),
        ("DeleteRoute", &[("DELETE", "/apis/a1/routes/r1")]),
        ("DeleteAuthorizer", &[("DELETE", "/apis/a1/authorizers/z1")]),
        ("DeleteStage", &[("DELETE", "/apis/a1/stages/$default")]),
        ("DeleteDomainName", &[("DELETE", "/domainnames/api.example.com")]),
        ("DeleteApiMapping", &[("DELETE", "/domainnames/api.example.com/apimappings/m1")]),
        ("DeleteBasePathMapping", &[("DELETE", "/domainnames/api.example.com/basepathmappings/(none)")]),
        ("DeleteRestApi", &[("DELETE", "/restapis/r1")]),
        ("DeleteResource", &[("DELETE", "/restapis/r1/resources/x1")]),
        ("DeleteMethod", &[("DELETE", "/restapis/r1/resources/x1/methods/GET")]),
        ("DeleteUsagePlan", &[("DELETE", "/usageplans/p1")]),
        ("DeleteUsagePlanKey", &[("DELETE", "/usageplans/p1/keys/k1")]),
        ("DeleteApiKey", &[("DELETE", "/apikeys/k1")]),
    ];
    // The operations named where the provider's source makes a call: the limiter key taken
    // before it, the label of its error, the label of a delete.
    let names = regex::Regex::new(
        r#"(?:acquire\(|classify\(|gone_ok\(|=> )"((?:Get|Create|Update|Delete|Put|Tag|Untag)[A-Z][A-Za-z]*)""#,
    )
    .expect("regex");
    let mut used = BTreeSet::new();
    let src = abs("providers/aws/src");
    for entry in fs::read_dir(&src).unwrap_or_else(|e| panic!("list {}: {e}", src.display())) {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("read source");
            used.extend(names.captures_iter(&text).map(|c| c[1].to_string()));
        }
    }
    assert!(used.len() >= 40, "only {} operations found in {}", used.len(), src.display());
    let mut out = Vec::new();
    for op in used {
        let Some((_, requests)) = REQUESTS.iter().find(|(name, _)| *name == op) else {
            panic!("the AWS provider calls {op}: add it to this test's table and to examples/eks/iam-policy.json");
        };
        out.extend(requests.iter().map(|(verb, path)| (op.clone(), *verb, *path)));
    }
    out
}

/// IAM wildcard match (`*` matches any run of characters, `/` included).
fn iam_match(pattern: &str, value: &str) -> bool {
    let regex = format!("^{}$", pattern.split('*').map(regex::escape).collect::<Vec<_>>().join(".*"));
    regex::Regex::new(&regex).expect("pattern").is_match(value)
}

#[test]
fn eks_iam_policy_allows_exactly_what_the_provider_calls() {
    let text = fs::read_to_string(abs("examples/eks/iam-policy.json")).expect("read iam-policy.json");
    let policy: serde_json::Value = serde_json::from_str(&text).expect("iam-policy.json is JSON");
    let region = "eu-west-1"; // the ProviderConfig's (checked below)
    let providerconfig = fs::read_to_string(abs(EKS).join("providerconfig.yaml")).expect("read");
    assert!(providerconfig.contains(&format!("region: {region}")));
    let prefix = format!("arn:aws:apigateway:{region}::");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    };
    // (verb, resource pattern) allowed by the policy.
    let mut allowed = Vec::new();
    for statement in policy["Statement"].as_array().expect("Statement list") {
        assert_eq!(statement["Effect"], "Allow");
        for action in strings(&statement["Action"]) {
            if let Some(verb) = action.strip_prefix("apigateway:") {
                for resource in strings(&statement["Resource"]) {
                    assert!(
                        resource.starts_with(&prefix),
                        "{resource} is not an API Gateway resource of {region}"
                    );
                    allowed.push((verb.to_string(), resource));
                }
            } else {
                assert_eq!(action, "iam:CreateServiceLinkedRole", "unexpected action {action}");
                assert_eq!(
                    statement["Condition"]["StringEquals"]["iam:AWSServiceName"],
                    "ops.apigateway.amazonaws.com"
                );
            }
        }
    }
    let requests = aws_operation_requests();
    for (op, verb, path) in &requests {
        let arn = format!("{prefix}{path}");
        assert!(
            allowed.iter().any(|(v, pattern)| v == verb && iam_match(pattern, &arn)),
            "iam-policy.json does not allow {op}: apigateway:{verb} on {arn}"
        );
    }
    for (verb, pattern) in &allowed {
        assert!(
            requests.iter().any(|(_, v, path)| v == verb && iam_match(pattern, &format!("{prefix}{path}"))),
            "iam-policy.json allows apigateway:{verb} on {pattern}, which no call of the provider needs"
        );
    }
}

#[test]
fn aks_example() {
    let checked = check(&[abs(AKS)]);
    assert_outcome(AKS, &checked, &[], &[]);
    assert_binary_check(&[AKS], &[]);
    let gateway = checked.gateway("default/shop");
    let ProviderSettings::Azure(azure) = &gateway.provider else {
        panic!("shop is not Azure: {:?}", gateway.provider)
    };
    assert_eq!(azure.credential, "WorkloadIdentity");
    assert_eq!(azure.tier.as_deref(), Some("Developer"));
    assert_eq!(gateway.routes.len(), 3, "every rule survives for Azure: {:#?}", gateway.routes);

    use tollbridge_azure::desired::{self, Kind};
    let mapping = desired::map(gateway, azure, "aks-prod-westeurope", now_seconds());
    assert!(mapping.unprovisioned.is_empty(), "not provisioned on Azure: {:#?}", mapping.unprovisioned);
    let count = |kind: Kind| mapping.entities.keys().filter(|(k, _)| *k == kind).count();
    assert_eq!(count(Kind::Api), 1);
    assert_eq!(count(Kind::PoolBackend), 1, "the 90/10 split is a pool");
    assert_eq!(count(Kind::Backend), 3, "catalog, orders, orders-canary");
    // GET /catalog, GET /catalog/*, * /orders, * /orders/*.
    assert_eq!(count(Kind::Operation), 4, "{:#?}", mapping.entities.keys());
}

// ---------------------------------------------------------------------------------------------
// Server-side dry run against the real API server
// ---------------------------------------------------------------------------------------------

/// `kubectl apply --dry-run=server -n NS ARGS…` with `stdin`; returns stdout, panicking with
/// stderr when kubectl fails. Asserts one "(server dry run)" line per expected object.
fn dry_run(
    ns: &support::cluster::TestNamespace<'_>,
    args: &[&str],
    stdin: Option<&str>,
    objects: usize,
) -> String {
    let mut all = vec!["apply", "--dry-run=server"];
    all.extend_from_slice(args);
    let out = ns.kubectl(&all, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {} in {} refused the example:\n{}{stdout}",
        all.join(" "),
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = stdout.lines().filter(|l| l.ends_with("(server dry run)")).count();
    assert_eq!(applied, objects, "kubectl {}: expected {objects} objects:\n{stdout}", all.join(" "));
    stdout
}

fn count_documents(dir: &str) -> usize {
    documents(&abs(dir), &[]).len()
}

#[test]
fn cluster_examples_pass_a_server_side_dry_run() {
    let cluster = Cluster::shared();

    // kind: as its README applies it.
    let ns = cluster.namespace("examples-kind");
    let kind = abs(KIND);
    let out = dry_run(&ns, &["-f", kind.to_str().unwrap()], None, count_documents(KIND));
    assert!(out.contains("gateway.gateway.networking.k8s.io/web"), "{out}");
    assert!(out.contains("providerconfig.tollbridge.dev/kind-local"), "{out}");

    // api-keys-and-quotas/cluster, on top of kind.
    let ns = cluster.namespace("examples-api-keys");
    let keys = abs(KEYS_CLUSTER);
    let objects = count_documents(KIND) + count_documents(KEYS_CLUSTER);
    let out = dry_run(&ns, &["-f", kind.to_str().unwrap(), "-f", keys.to_str().unwrap()], None, objects);
    assert!(out.contains("apikey.tollbridge.dev/globex"), "{out}");

    // eks: its TLS Secret (README step 3), then the manifests.
    let ns = cluster.namespace("examples-eks");
    dry_run(&ns, &["-f", "-"], Some(&tls_secret_yaml()), 1);
    let eks = abs(EKS);
    let out = dry_run(&ns, &["-f", eks.to_str().unwrap()], None, count_documents(EKS));
    assert!(out.contains("quotapolicy.tollbridge.dev/orders-throttle"), "{out}");

    // aks.
    let ns = cluster.namespace("examples-aks");
    let aks = abs(AKS);
    dry_run(&ns, &["-f", aks.to_str().unwrap()], None, count_documents(AKS));

    // The standalone examples describe objects a cluster would hold too, except their
    // EndpointSlices on 127.0.0.1 (refused by the API server; in a cluster they come from Pods).
    for dir in [KEYS_STANDALONE, QUICKSTART] {
        let ns = cluster.namespace("examples-standalone");
        let docs = documents(&abs(dir), &["EndpointSlice"]);
        assert!(docs.len() < count_documents(dir), "{dir} has an EndpointSlice");
        dry_run(&ns, &["-f", "-"], Some(&docs.join("---\n")), docs.len());
    }
}

/// A misspelled field (`backendRef` for `backendRefs`) is not passed over: `check` names file,
/// document, object and field and exits 1; `--validate=warn` loads the route without it and
/// says so; `--validate=ignore` says nothing.
#[test]
fn check_refuses_a_misspelled_field_unless_told_otherwise() {
    let dir = std::env::temp_dir().join(format!("tollbridge-validate-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("route.yaml");
    fs::write(
        &file,
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: local}\n\
         spec: {controllerName: tollbridge.dev/gateway-controller}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: shop}\nspec:\n  \
         rules:\n  - backendRef: [{name: api, port: 80}]\n",
    )
    .unwrap();
    let check = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tollbridge"))
            .args(["check", "-f"])
            .arg(&file)
            .args(extra)
            .output()
            .expect("run tollbridge check");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = check(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    let named = format!(
        "{} (document 2): HTTPRoute default/shop: unknown field spec.rules[0].backendRef",
        file.display()
    );
    assert!(stderr.contains(&named), "{stderr}");
    let (code, stderr) = check(&["--validate=warn"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("unknown field(s) left out: spec.rules[0].backendRef"), "{stderr}");
    let (code, stderr) = check(&["--validate", "ignore"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("backendRef"), "{stderr}");
    fs::remove_dir_all(&dir).ok();
}

/// docs/README.md is the manual's index: it links every page of docs/, and this test's list
/// of checked pages has them all.
#[test]
fn the_docs_index_lists_every_page() {
    let index = fs::read_to_string(abs("docs/README.md")).expect("docs/README.md");
    for entry in fs::read_dir(abs("docs")).expect("docs/") {
        let name = entry.expect("entry").file_name().into_string().expect("UTF-8 name");
        if !name.ends_with(".md") || name == "README.md" {
            continue;
        }
        assert!(index.contains(&format!("]({name})")), "docs/README.md does not link {name}");
        let path = format!("docs/{name}");
        assert!(DOCS.contains(&path.as_str()) || name == "benchmarks.md", "{path} is not in DOCS");
    }
}

/// Every `tollbridge …` (or `cargo run -p tollbridge -- …`) command in the README, docs/ and
/// the examples' READMEs: each must parse as written (the flags exist), and the ones that need
/// no cluster, cloud or long-running process (`check`, `crds`, `version`, `completion`, on
/// paths of this repository) are run and must exit as their comment says (`exit 1`), else 0.
#[test]
fn the_documented_tollbridge_commands_parse_and_the_local_ones_run_as_documented() {
    use clap::Parser;

    let mut pages: Vec<String> = DOCS.iter().map(|d| d.to_string()).collect();
    pages.push("docs/install-image.md".into());
    let (mut parsed, mut ran) = (0, 0);
    for page in pages {
        let text = fs::read_to_string(abs(&page)).unwrap_or_else(|e| panic!("read {page}: {e}"));
        let mut in_code = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            let line = line.trim().trim_start_matches("$ ");
            let Some(rest) =
                line.strip_prefix("tollbridge ").or_else(|| line.strip_prefix("cargo run -p tollbridge -- "))
            else {
                continue;
            };
            if !in_code {
                continue;
            }
            let (command, comment) = rest.split_once('#').unwrap_or((rest, ""));
            let words: Vec<&str> = command.trim().trim_end_matches('&').split_whitespace().collect();
            let argv: Vec<&str> = std::iter::once("tollbridge").chain(words.iter().copied()).collect();
            if let Err(e) = tollbridge::cli::Cli::try_parse_from(&argv) {
                panic!("{page}: `{line}` does not parse: {e}");
            }
            parsed += 1;
            let local = matches!(words.first(), Some(&("check" | "crds" | "version" | "completion")));
            let paths_exist = words.windows(2).filter(|w| w[0] == "-f").all(|w| abs(w[1]).exists());
            if !local || !paths_exist {
                continue;
            }
            let out = Command::new(env!("CARGO_BIN_EXE_tollbridge"))
                .current_dir(repo_root())
                .args(&words)
                .output()
                .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
            let expected = if comment.contains("exit 1") { 1 } else { 0 };
            assert_eq!(
                out.status.code(),
                Some(expected),
                "{page}: `{line}`:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(parsed >= 20 && ran >= 8, "{parsed} commands parsed, {ran} run: the scan found too few");
}

/// The reader of a page's commands that the real-node test runs the kind and API-key pages with.
#[test]
fn doc_sections_lines_and_exit_codes_are_read_as_written() {
    use support::doc_commands::{expected_exit, logical_lines, DocPage};

    // A `#` line in a console block is no heading; `~~~` and `shell` fences count.
    let text = "# T\n## 1. A\n```sh\na \\\n  b   # note\n# only a comment\n```\ntext\n```console\n\
                # not a heading\n```\n### sub\n~~~shell\nc # exit 2\n~~~\n## 2. B\n```sh\nd\n```\n";
    let page = DocPage::new("page.md".into(), text.into());
    let commands = page.section_commands("## 1.");
    assert_eq!(logical_lines(&commands), ["a   b   # note", "c # exit 2"]);
    assert_eq!(expected_exit("c # exit 2"), Some(2));
    assert_eq!(expected_exit("a   b   # note"), None);
    assert_eq!(page.section_commands("## 2."), "d\n");
}
