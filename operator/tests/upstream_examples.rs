//! Round trip of the upstream Gateway API manifests through `tollbridge::api::gateway`.
//!
//! Every GatewayClass, Gateway, HTTPRoute, GRPCRoute, BackendTLSPolicy and ReferenceGrant found in the standard examples of
//! `sigs.k8s.io/gateway-api` and in the manifests of its conformance suite must deserialize into
//! our types and serialize back to the same JSON, so a field the types do not know (and would
//! silently drop) fails the test.
//!
//! The Go modules are located with `GATEWAY_API_DIR` / `GATEWAY_API_CONFORMANCE_DIR`, else in the
//! Go module cache, else downloaded with `go mod download`. Run with `-- --nocapture` to see the
//! per-kind counts, the skipped documents and the normalisations applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tollbridge::api::gateway::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant, GROUP,
};

const GATEWAY_API_MODULE: &str = "sigs.k8s.io/gateway-api";
const CONFORMANCE_MODULE: &str = "sigs.k8s.io/gateway-api/conformance";
const VERSION: &str = "v1.7.0";

/// The kinds under test and the file stem of their CRD in `config/crd/<channel>/`.
const KINDS: &[(&str, &str)] = &[
    ("GatewayClass", "gatewayclasses"),
    ("Gateway", "gateways"),
    ("HTTPRoute", "httproutes"),
    ("GRPCRoute", "grpcroutes"),
    ("BackendTLSPolicy", "backendtlspolicies"),
    ("ReferenceGrant", "referencegrants"),
];

/// Fields that only the experimental channel of v1.7.0 defines, as `kind` and field path (`[]`
/// stands for any list item). A document setting one of them is skipped, counted and printed.
/// `experimental_field_list_matches_crds` checks this list against both channels' CRDs.
const EXPERIMENTAL_FIELDS: &[(&str, &str)] = &[
    ("Gateway", "spec.addresses[].routability"),
    ("Gateway", "spec.defaultScope"),
    ("Gateway", "spec.listeners[].filters"),
    ("Gateway", "status.addresses[].routability"),
    ("HTTPRoute", "spec.useDefaultGateways"),
    ("HTTPRoute", "spec.rules[].sessionPersistence"),
    ("HTTPRoute", "spec.rules[].filters[].externalAuth"),
    ("HTTPRoute", "spec.rules[].backendRefs[].filters[].externalAuth"),
    ("GRPCRoute", "spec.useDefaultGateways"),
    ("GRPCRoute", "spec.rules[].sessionPersistence"),
];

#[test]
fn standard_examples_round_trip() {
    let gateway_api = module_dir(GATEWAY_API_MODULE, "GATEWAY_API_DIR");
    let crds = Crds::load(&gateway_api, "standard");
    let report = round_trip_tree(&gateway_api.join("examples/standard"), &crds);
    report.finish(
        "examples/standard",
        &[
            ("GatewayClass", 4),
            ("Gateway", 24),
            ("HTTPRoute", 48),
            ("GRPCRoute", 7),
            ("BackendTLSPolicy", 2),
            ("ReferenceGrant", 3),
        ],
    );
}

#[test]
fn conformance_manifests_round_trip() {
    let gateway_api = module_dir(GATEWAY_API_MODULE, "GATEWAY_API_DIR");
    let conformance = module_dir(CONFORMANCE_MODULE, "GATEWAY_API_CONFORMANCE_DIR");
    let crds = Crds::load(&gateway_api, "standard");
    let report = round_trip_tree(&conformance.join("tests"), &crds);
    report.finish(
        "conformance tests",
        &[
            ("GatewayClass", 1),
            ("Gateway", 105),
            ("HTTPRoute", 155),
            ("GRPCRoute", 17),
            ("BackendTLSPolicy", 26),
            ("ReferenceGrant", 30),
        ],
    );
}

#[test]
fn experimental_field_list_matches_crds() {
    let gateway_api = module_dir(GATEWAY_API_MODULE, "GATEWAY_API_DIR");
    let standard = Crds::load(&gateway_api, "standard");
    let experimental = Crds::load(&gateway_api, "experimental");
    let mut derived = BTreeSet::new();
    for (kind, _) in KINDS {
        let mut std_paths = BTreeSet::new();
        let mut exp_paths = BTreeSet::new();
        field_paths(Some(standard.schema(kind, "v1").expect("v1 schema")), "", &mut std_paths);
        field_paths(Some(experimental.schema(kind, "v1").expect("v1 schema")), "", &mut exp_paths);
        for path in exp_paths.difference(&std_paths) {
            // Keep only the outermost experimental field; its children are implied.
            let parent_is_standard = match path.rfind('.') {
                Some(dot) => std_paths.contains(path[..dot].trim_end_matches("[]")),
                None => true,
            };
            if parent_is_standard {
                derived.insert((kind.to_string(), path.clone()));
            }
        }
    }
    let listed: BTreeSet<_> =
        EXPERIMENTAL_FIELDS.iter().map(|(k, p)| (k.to_string(), p.to_string())).collect();
    assert_eq!(listed, derived, "EXPERIMENTAL_FIELDS differs from the experimental-only CRD fields");
}

/// The comparison itself must not be vacuous: lost, changed and added fields are problems, and a
/// field our types do not know (here the experimental `sessionPersistence`) is lost in the round trip.
#[test]
fn comparison_reports_differences() {
    let schema = json!({"properties": {"spec": {"properties": {"a": {"default": 1}}}}});
    let original = json!({"spec": {"x": 1, "y": "s", "n": null, "l": [], "m": {}}});
    let back = json!({"spec": {"y": "t", "a": 2, "b": 3}});
    let mut problems = Vec::new();
    let mut normalised = BTreeMap::new();
    compare(&original, &back, "", "", Some(&schema), &mut problems, &mut normalised);
    problems.sort();
    assert_eq!(
        problems,
        [
            "spec.a: added 2 (schema default: 1)",
            "spec.b: added 3 (schema default: none)",
            "spec.x: lost 1",
            "spec.y: \"s\" became \"t\"",
        ]
    );
    assert_eq!(normalised.len(), 3, "{normalised:?}");

    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {"rules": [{"sessionPersistence": {"type": "Cookie"}}]},
    });
    let doc: serde_yaml::Value = serde_json::from_value(route.clone()).expect("YAML value");
    let back = round_trip::<HTTPRoute>(&doc, &route).expect("round trip");
    let mut problems = Vec::new();
    compare(&route, &back, "", "", None, &mut problems, &mut BTreeMap::new());
    assert_eq!(problems, [r#"spec.rules[0].sessionPersistence: lost {"type":"Cookie"}"#]);
}

// ---------------------------------------------------------------------------------------------
// Locating the Go modules

/// The directory of `module@VERSION`: from `env_var`, the Go module cache, or a fresh download.
/// Looked up once per module and shared by the tests, which run in parallel.
fn module_dir(module: &str, env_var: &str) -> PathBuf {
    static DIRS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut dirs = DIRS.lock().unwrap_or_else(PoisonError::into_inner);
    dirs.entry(module.to_string()).or_insert_with(|| locate_module(module, env_var)).clone()
}

fn locate_module(module: &str, env_var: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(env_var) {
        let dir = PathBuf::from(dir);
        assert!(dir.is_dir(), "{env_var}={} is not a directory", dir.display());
        return dir;
    }
    let cache = go(&["env", "GOMODCACHE"], None, &[]);
    let cache = cache.trim();
    assert!(!cache.is_empty(), "`go env GOMODCACHE` printed nothing; set {env_var}");
    // Module paths with upper-case letters would need Go's `!` escaping; these have none.
    let dir = Path::new(cache).join(format!("{module}@{VERSION}"));
    if dir.is_dir() {
        return dir;
    }
    download(module)
}

/// Downloads `module@VERSION` into the module cache from a throwaway module; returns its dir.
fn download(module: &str) -> PathBuf {
    /// Removes the throwaway module directory, also when the download fails the test.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    let scratch = Scratch(std::env::temp_dir().join(format!(
        "tollbridge-upstream-{}-{}",
        std::process::id(),
        module.replace('/', "_")
    )));
    std::fs::create_dir_all(&scratch.0).expect("create scratch directory");
    std::fs::write(scratch.0.join("go.mod"), "module tollbridge.invalid/upstream\n\ngo 1.22\n")
        .expect("write scratch go.mod");
    let target = format!("{module}@{VERSION}");
    // `auto`: v1.7.0 asks for a newer Go than may be installed; the module proxy serves it.
    let env = [("GOFLAGS", "-mod=mod"), ("GOTOOLCHAIN", "auto")];
    let out = go(&["mod", "download", "-json", &target], Some(&scratch.0), &env);
    let info: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`go mod download -json {target}` printed invalid JSON ({e}): {out}"));
    let dir = info["Dir"].as_str().unwrap_or_else(|| panic!("no Dir for {target}: {out}"));
    let dir = PathBuf::from(dir);
    assert!(dir.is_dir(), "`go mod download {target}` reported missing {}", dir.display());
    dir
}

/// Runs `go args...` and returns its stdout; any failure fails the test with the reason.
fn go(args: &[&str], cwd: Option<&Path>, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("go");
    cmd.args(args).envs(env.iter().copied());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run `go {}` ({e}); install Go or set GATEWAY_API_DIR and \
             GATEWAY_API_CONFORMANCE_DIR to the {VERSION} module directories",
            args.join(" ")
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`go {}` failed ({}):\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

// ---------------------------------------------------------------------------------------------
// CRD schemas

/// The CRDs of the kinds under test from one channel, used for schema defaults and field lists.
struct Crds {
    by_kind: BTreeMap<String, Value>,
}

impl Crds {
    fn load(gateway_api: &Path, channel: &str) -> Self {
        let by_kind = KINDS
            .iter()
            .map(|(kind, stem)| {
                let path =
                    gateway_api.join(format!("config/crd/{channel}/gateway.networking.k8s.io_{stem}.yaml"));
                let text =
                    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                let crd: Value =
                    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
                (kind.to_string(), crd)
            })
            .collect();
        Self { by_kind }
    }

    /// The `openAPIV3Schema` of `kind` at `version`, if that version is served.
    fn schema(&self, kind: &str, version: &str) -> Option<&Value> {
        self.by_kind[kind]["spec"]["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == version && v["served"] == true)
            .map(|v| &v["schema"]["openAPIV3Schema"])
    }
}

fn schema_property<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let schema = schema?;
    schema
        .get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

fn schema_items(schema: Option<&Value>) -> Option<&Value> {
    schema?.get("items")
}

/// Every field path a schema declares, in the `EXPERIMENTAL_FIELDS` notation.
fn field_paths(schema: Option<&Value>, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(schema) = schema else { return };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, sub) in props {
            let path = join(prefix, key);
            out.insert(path.clone());
            field_paths(Some(sub), &path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        field_paths(Some(items), &format!("{prefix}[]"), out);
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

// ---------------------------------------------------------------------------------------------
// Walking the manifests

#[derive(Default)]
struct Report {
    files: usize,
    /// Documents round-tripped, by kind.
    parsed: BTreeMap<String, usize>,
    /// Documents of our kinds skipped, by the experimental fields they set.
    skipped: BTreeMap<String, Vec<String>>,
    /// Normalisations applied, by description and field path, with their count.
    normalised: BTreeMap<String, usize>,
    /// Round-trip failures, one entry per document.
    failures: Vec<String>,
}

impl Report {
    /// Prints the summary and fails on any round-trip failure or on fewer documents of a kind
    /// than `minimum`. The minimums are the exact counts in v1.7.0, so a walk or filter that
    /// silently drops documents fails instead of passing on less.
    fn finish(self, source: &str, minimum: &[(&str, usize)]) {
        let mut summary = format!("{source}: {} YAML files\n", self.files);
        for (kind, count) in &self.parsed {
            let _ = writeln!(summary, "  round-tripped {kind}: {count}");
        }
        let skipped: usize = self.skipped.values().map(Vec::len).sum();
        let _ = writeln!(summary, "  skipped documents (experimental-only fields): {skipped}");
        for (fields, docs) in &self.skipped {
            let _ = writeln!(summary, "    setting {fields}: {}", docs.len());
            for doc in docs {
                let _ = writeln!(summary, "      {doc}");
            }
        }
        let _ = writeln!(summary, "  normalisations:");
        for (what, count) in &self.normalised {
            let _ = writeln!(summary, "    {what}: {count}");
        }
        println!("{summary}");

        assert!(
            self.failures.is_empty(),
            "{} of the {source} documents do not round-trip:\n\n{}",
            self.failures.len(),
            self.failures.join("\n\n")
        );
        for (kind, min) in minimum {
            let got = self.parsed.get(*kind).copied().unwrap_or(0);
            assert!(got >= *min, "{source}: only {got} {kind} documents round-tripped, want >= {min}");
        }
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read directory {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn round_trip_tree(root: &Path, crds: &Crds) -> Report {
    let mut files = Vec::new();
    yaml_files(root, &mut files);
    files.sort();
    let mut report = Report { files: files.len(), ..Report::default() };
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let name = file.strip_prefix(root).unwrap_or(file).display().to_string();
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let doc: serde_yaml::Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{name}: document {index}: invalid YAML: {e}"));
            round_trip_document(&format!("{name}#{index}"), doc, crds, &mut report);
        }
    }
    report
}

fn round_trip_document(at: &str, doc: serde_yaml::Value, crds: &Crds, report: &mut Report) {
    let api_version = doc.get("apiVersion").and_then(serde_yaml::Value::as_str).unwrap_or("");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = doc.get("kind").and_then(serde_yaml::Value::as_str).unwrap_or("").to_string();
    if group != GROUP || !KINDS.iter().any(|(k, _)| *k == kind) {
        return;
    }
    let name =
        doc.get("metadata").and_then(|m| m.get("name")).and_then(serde_yaml::Value::as_str).unwrap_or("?");
    let at = format!("{at} {kind} {name}");
    let original: Value =
        serde_json::to_value(&doc).unwrap_or_else(|e| panic!("{at}: not representable as JSON: {e}"));

    let mut experimental = BTreeSet::new();
    experimental_fields(&kind, &original, "", &mut experimental);
    if !experimental.is_empty() {
        let fields = experimental.into_iter().collect::<Vec<_>>().join(", ");
        report.skipped.entry(format!("{kind} {fields}")).or_default().push(at);
        return;
    }

    let Some(schema) = crds.schema(&kind, version) else {
        report.failures.push(format!("{at}: {api_version} is not served by the standard CRD"));
        return;
    };
    let round_tripped = match kind.as_str() {
        "GatewayClass" => round_trip::<GatewayClass>(&doc, &original),
        "Gateway" => round_trip::<Gateway>(&doc, &original),
        "HTTPRoute" => round_trip::<HTTPRoute>(&doc, &original),
        "GRPCRoute" => round_trip::<GRPCRoute>(&doc, &original),
        "BackendTLSPolicy" => round_trip::<BackendTLSPolicy>(&doc, &original),
        "ReferenceGrant" => round_trip::<ReferenceGrant>(&doc, &original),
        _ => unreachable!("kind filtered above"),
    };
    let round_tripped = match round_tripped {
        Ok(value) => value,
        Err(e) => {
            report.failures.push(format!("{at}: {e}"));
            return;
        }
    };

    let mut problems = Vec::new();
    compare(&original, &round_tripped, "", "", Some(schema), &mut problems, &mut report.normalised);
    if problems.is_empty() {
        *report.parsed.entry(kind).or_default() += 1;
    } else {
        report.failures.push(format!("{at}:\n  {}", problems.join("\n  ")));
    }
}

/// Deserializes the document both from YAML and from its JSON form (as the API server sends
/// it); both must give the same object, whose JSON serialization is returned.
fn round_trip<T: DeserializeOwned + Serialize>(
    doc: &serde_yaml::Value,
    original: &Value,
) -> Result<Value, String> {
    let from_yaml: T =
        serde_yaml::from_value(doc.clone()).map_err(|e| format!("YAML deserialization: {e}"))?;
    let from_json: T =
        serde_json::from_value(original.clone()).map_err(|e| format!("JSON deserialization: {e}"))?;
    let from_yaml = serde_json::to_value(&from_yaml).map_err(|e| format!("serialization: {e}"))?;
    let from_json = serde_json::to_value(&from_json).map_err(|e| format!("serialization: {e}"))?;
    if from_yaml != from_json {
        return Err(format!("YAML and JSON parses differ:\n{from_yaml:#}\n{from_json:#}"));
    }
    Ok(from_json)
}

/// Collects the `EXPERIMENTAL_FIELDS` of `kind` that `value` sets.
fn experimental_fields(kind: &str, value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, sub) in map {
                let path = join(path, key);
                if EXPERIMENTAL_FIELDS.iter().any(|(k, p)| *k == kind && *p == path) {
                    out.insert(path.clone());
                }
                experimental_fields(kind, sub, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                experimental_fields(kind, item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Compares the original document with its round trip. Exactly these differences are accepted,
/// each counted in `normalised` by field path (`pattern`, with `[]` for list items):
///
/// 1. A field that is `null` in the original may be absent after the round trip: YAML `key:`
///    without a value is null, which the API server treats (and prunes) like an absent field, and
///    which our `Option` fields deserialize to `None` and skip.
/// 2. A field that is an empty list or map in the original may be absent after the round trip:
///    like the upstream Go types (`omitempty`), our `Vec`/`BTreeMap` fields skip empty values.
/// 3. A field absent from the original may appear after the round trip only with the value the
///    standard CRD declares as its `default` at that path (e.g. `path.type: PathPrefix`,
///    `fraction.denominator: 100`): the API server would fill it in the same way.
///
/// Anything else (a missing field, an extra field, a changed scalar, a list of another length)
/// is reported as a problem.
fn compare(
    original: &Value,
    round_tripped: &Value,
    path: &str,
    pattern: &str,
    schema: Option<&Value>,
    problems: &mut Vec<String>,
    normalised: &mut BTreeMap<String, usize>,
) {
    match (original, round_tripped) {
        (Value::Object(orig), Value::Object(back)) => {
            compare_maps(orig, back, path, pattern, schema, problems, normalised);
        }
        (Value::Array(orig), Value::Array(back)) if orig.len() == back.len() => {
            let items = schema_items(schema);
            for (i, (o, b)) in orig.iter().zip(back).enumerate() {
                let path = format!("{path}[{i}]");
                compare(o, b, &path, &format!("{pattern}[]"), items, problems, normalised);
            }
        }
        _ if original == round_tripped => {}
        _ => problems.push(format!("{path}: {original} became {round_tripped}")),
    }
}

fn compare_maps(
    orig: &Map<String, Value>,
    back: &Map<String, Value>,
    path: &str,
    pattern: &str,
    schema: Option<&Value>,
    problems: &mut Vec<String>,
    normalised: &mut BTreeMap<String, usize>,
) {
    for (key, o) in orig {
        let sub_path = join(path, key);
        let sub_pattern = join(pattern, key);
        let sub_schema = schema_property(schema, key);
        match (o, back.get(key)) {
            (Value::Null, None) => {
                *normalised.entry(format!("null dropped: {sub_pattern}")).or_default() += 1;
            }
            (Value::Array(a), None) if a.is_empty() => {
                *normalised.entry(format!("empty list dropped: {sub_pattern}")).or_default() += 1;
            }
            (Value::Object(m), None) if m.is_empty() => {
                *normalised.entry(format!("empty map dropped: {sub_pattern}")).or_default() += 1;
            }
            (_, None) => problems.push(format!("{sub_path}: lost {o}")),
            (_, Some(b)) => {
                compare(o, b, &sub_path, &sub_pattern, sub_schema, problems, normalised);
            }
        }
    }
    for (key, b) in back {
        if orig.contains_key(key) {
            continue;
        }
        let sub_pattern = join(pattern, key);
        match schema_property(schema, key).and_then(|s| s.get("default")) {
            Some(default) if default == b => {
                let what = format!("default filled: {sub_pattern} = {b}");
                *normalised.entry(what).or_default() += 1;
            }
            default => problems.push(format!(
                "{}: added {b} (schema default: {})",
                join(path, key),
                default.map_or("none".to_string(), Value::to_string)
            )),
        }
    }
}
