//! The documentation that is derived from code must say what the code says:
//!
//! - the feature matrix in `docs/providers.md`, between `<!-- feature-matrix:begin -->` and
//!   `<!-- feature-matrix:end -->`, is rendered from the [`Capabilities`] that
//!   `tollbridge::providers::capabilities` returns for each provider (the same values the
//!   translator uses to accept or drop rules and policies);
//! - `docs/troubleshooting.md` has a section for every condition reason the translator sets
//!   (the constants of `operator/src/translate/conditions.rs`).
//!
//! Regenerate the matrix after an intended change, then review the diff:
//!
//! ```sh
//! TOLLBRIDGE_UPDATE_DOCS=1 cargo test -p tollbridge --test feature_matrix
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use tollbridge_provider::{
    AwsSettings, AzureSettings, Capabilities, Feature, LocalSettings, ProviderSettings,
};

const UPDATE_ENV: &str = "TOLLBRIDGE_UPDATE_DOCS";
const HOW_TO_FIX: &str = "run `TOLLBRIDGE_UPDATE_DOCS=1 cargo test -p tollbridge --test feature_matrix`";
const BEGIN: &str = "<!-- feature-matrix:begin -->";
const END: &str = "<!-- feature-matrix:end -->";
const YES: &str = "✓";
const NO: &str = "—";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn providers_md() -> PathBuf {
    repo_root().join("docs/providers.md")
}

/// The matrix columns: a heading and the settings whose capabilities fill the column.
fn columns() -> Vec<(&'static str, Capabilities)> {
    let aws = |api_type: &str| {
        ProviderSettings::Aws(AwsSettings {
            region: "eu-west-1".into(),
            api_type: api_type.into(),
            ..AwsSettings::default()
        })
    };
    let capabilities = |settings: ProviderSettings| tollbridge::providers::capabilities(&settings);
    vec![
        ("Local", capabilities(ProviderSettings::Local(LocalSettings::default()))),
        ("AWS HTTP API", capabilities(aws("HTTP"))),
        ("AWS REST API", capabilities(aws("REST"))),
        ("Azure API Management", capabilities(ProviderSettings::Azure(AzureSettings::default()))),
    ]
}

/// The table between the markers (without them), ending in a newline.
fn render() -> String {
    let columns = columns();
    let mut out = String::new();
    let headings: Vec<&str> = columns.iter().map(|(heading, _)| *heading).collect();
    out.push_str(&format!("| Feature | In `supportedFeatures` | {} |\n", headings.join(" | ")));
    out.push_str(&format!("|---|:-:|{}\n", ":-:|".repeat(columns.len())));
    for feature in Feature::ALL {
        let cells: Vec<&str> =
            columns.iter().map(|(_, caps)| if caps.supports(*feature) { YES } else { NO }).collect();
        let upstream = if feature.is_upstream() { YES } else { NO };
        out.push_str(&format!("| `{}` | {upstream} | {} |\n", feature.name(), cells.join(" | ")));
    }
    let timeouts: Vec<String> = columns
        .iter()
        .map(|(_, caps)| match caps.max_timeout {
            Some(max) => format!("{} s", max.as_secs()),
            None => "no limit".to_string(),
        })
        .collect();
    out.push_str(&format!("| Longest request / backend timeout | | {} |\n", timeouts.join(" | ")));
    out
}

/// `(before, between, after)` of `text` around the markers; `None` when they are missing or
/// out of order.
fn split(text: &str) -> Option<(&str, &str, &str)> {
    let begin = text.find(BEGIN)?;
    let inner_start = begin + BEGIN.len();
    let end = inner_start + text[inner_start..].find(END)?;
    Some((&text[..inner_start], &text[inner_start..end], &text[end..]))
}

/// The generated table as it sits between the markers: on its own lines.
fn framed(table: &str) -> String {
    format!("\n{table}")
}

#[test]
fn feature_matrix_in_docs_matches_the_capabilities() {
    let path = providers_md();
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let Some((before, between, after)) = split(&text) else {
        panic!("{} lacks the markers {BEGIN} … {END} (the table goes between them)", path.display());
    };
    let expected = framed(&render());
    if between == expected {
        return;
    }
    if std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1") {
        let updated = format!("{before}{expected}{after}");
        fs::write(&path, updated).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    panic!(
        "the feature matrix in docs/providers.md is out of date; {HOW_TO_FIX}\n--- in the file:\n{between}\n--- generated:\n{expected}"
    );
}

#[test]
fn matrix_has_one_row_per_feature_and_the_providers_differ() {
    let table = render();
    let rows = table.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(rows, Feature::ALL.len());
    // Guards against a column silently falling back to another provider's table.
    let columns = columns();
    for (i, (a, ca)) in columns.iter().enumerate() {
        for (b, cb) in &columns[i + 1..] {
            assert_ne!(ca.features, cb.features, "columns {a} and {b} are identical");
        }
    }
    // `apiType: Auto` is documented as getting the REST API's capabilities.
    let auto = tollbridge::providers::capabilities(&ProviderSettings::Aws(AwsSettings {
        region: "eu-west-1".into(),
        api_type: "Auto".into(),
        ..AwsSettings::default()
    }));
    assert_eq!(auto.features, columns[2].1.features);
}

/// Every `pub const NAME: &str = "Value";` in `pub mod reason { … }` of conditions.rs.
fn reasons() -> Vec<String> {
    let path = repo_root().join("operator/src/translate/conditions.rs");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let start = text.find("pub mod reason {").expect("conditions.rs has `pub mod reason`");
    let body = &text[start..];
    let body = &body[..body.find("\n}").expect("end of `mod reason`")];
    let reasons: Vec<String> = body
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("pub const ")?;
            let value = rest.split_once("= \"")?.1.strip_suffix("\";")?;
            Some(value.to_string())
        })
        .collect();
    assert!(reasons.len() >= 20, "only {} reasons parsed from {}", reasons.len(), path.display());
    reasons
}

#[test]
fn troubleshooting_has_a_section_for_every_reason() {
    let path = repo_root().join("docs/troubleshooting.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let headings: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let missing: Vec<String> = reasons()
        .into_iter()
        .filter(|reason| !headings.iter().any(|h| h.contains(&format!("`{reason}`"))))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md has no heading naming these reasons (as `Reason`): {missing:?}"
    );
}
