//! Golden tests for the translator: every `tests/golden/*.in.yaml` is loaded as `tollbridge
//! check` would load it, translated, and its statuses and IR compared with `*.out.yaml`.
//!
//! Regenerate after an intended change with `TOLLBRIDGE_UPDATE_GOLDEN=1 cargo test -p tollbridge
//! --test golden`, then review the diff.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tollbridge::providers;
use tollbridge::source::files;
use tollbridge::translate::{self, Statuses};
use tollbridge_provider::GatewayIr;

/// The fixed instant of every golden translation.
const NOW: &str = "2026-01-01T00:00:00Z";
/// The suite must not shrink by accident.
const MIN_CASES: usize = 60;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoldenOutput {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    load_errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statuses: Option<Statuses>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gateways: Vec<GatewayIr>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn render(input: &Path) -> String {
    let text = std::fs::read_to_string(input).expect("read golden input");
    let name = Path::new(input.file_name().expect("file name"));
    let output = match files::load_str(name, &text) {
        Err(errors) => GoldenOutput {
            load_errors: errors.0.iter().map(ToString::to_string).collect(),
            statuses: None,
            gateways: Vec::new(),
        },
        Ok(mut loaded) => {
            loaded.snapshot.now = NOW.parse().expect("valid timestamp");
            let translation = translate::translate(&loaded.snapshot, &providers::capabilities);
            GoldenOutput {
                load_errors: Vec::new(),
                statuses: Some(translation.statuses),
                gateways: translation.gateways,
            }
        }
    };
    serde_yaml::to_string(&output).expect("serialize golden output")
}

fn cases() -> Vec<PathBuf> {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("list tests/golden")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn golden_cases_match() {
    let update = std::env::var_os("TOLLBRIDGE_UPDATE_GOLDEN").is_some();
    let inputs = cases();
    let mut failures = Vec::new();
    for input in &inputs {
        let expected_path = PathBuf::from(input.to_string_lossy().replace(".in.yaml", ".out.yaml"));
        let actual = render(input);
        if update {
            std::fs::write(&expected_path, &actual).expect("write golden output");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            let line = expected
                .lines()
                .zip(actual.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
            failures.push(format!(
                "{}: differs at line {}\n  expected: {}\n  actual:   {}",
                expected_path.file_name().unwrap().to_string_lossy(),
                line + 1,
                expected.lines().nth(line).unwrap_or("<end>"),
                actual.lines().nth(line).unwrap_or("<end>"),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (regenerate with TOLLBRIDGE_UPDATE_GOLDEN=1 and review):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(inputs.len() >= MIN_CASES, "only {} golden cases; expected at least {MIN_CASES}", inputs.len());
}

#[test]
fn no_output_without_input() {
    for entry in std::fs::read_dir(golden_dir()).unwrap().filter_map(Result::ok) {
        let path = entry.path().to_string_lossy().to_string();
        if path.ends_with(".out.yaml") {
            let input = path.replace(".out.yaml", ".in.yaml");
            assert!(Path::new(&input).exists(), "{path} has no input {input}");
        }
    }
}
