//! An in-cluster proxy translates only the objects its Gateway depends on (the subset the
//! operator writes into its config Secret). For every golden input and every Gateway in it,
//! translating the subset, after a round trip through its YAML, must give the same IR as
//! translating everything, except that API keys are known by their hashes only: no key value
//! is in the subset.

use std::path::{Path, PathBuf};

use tollbridge::providers;
use tollbridge::snapshot::subset;
use tollbridge::source::files;
use tollbridge::translate;

fn golden_inputs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read tests/golden")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    inputs
}

/// The IR with every API key's value blanked (hashes, ids and flags kept).
fn without_key_values(mut ir: tollbridge_provider::GatewayIr) -> tollbridge_provider::GatewayIr {
    for key in ir.policies.iter_mut().flat_map(|p| p.keys.iter_mut()) {
        key.value = tollbridge_provider::SecretString::new("");
    }
    ir
}

#[test]
fn every_gateway_translates_the_same_from_its_subset() {
    let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut compared = 0;
    for input in golden_inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let Ok(mut loaded) = files::load_str(&input, &text) else { continue };
        loaded.snapshot.now = now;
        let full = translate::translate(&loaded.snapshot, &providers::capabilities);
        for ir in &full.gateways {
            let part = subset::for_gateway(&loaded.snapshot, &ir.key.namespace, &ir.key.name)
                .unwrap_or_else(|| panic!("{}: no subset for {}", input.display(), ir.key.id()));
            let yaml = subset::to_yaml(&part).expect("subset serializes");
            let mut reloaded = files::load_str(Path::new("subset.yaml"), &yaml)
                .unwrap_or_else(|e| {
                    panic!("{}: subset of {} does not load: {e}", input.display(), ir.key.id())
                })
                .snapshot;
            reloaded.now = now;
            let again = translate::translate(&reloaded, &providers::capabilities);
            for policy in &ir.policies {
                for key in &policy.keys {
                    let encoded = base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        key.value.expose(),
                    );
                    assert!(
                        !yaml.contains(key.value.expose()) && !yaml.contains(&encoded),
                        "{}: the subset of {} holds the value of ApiKey {}",
                        input.display(),
                        ir.key.id(),
                        key.id
                    );
                }
            }
            let same = again.gateways.iter().find(|g| g.key == ir.key).cloned().map(without_key_values);
            assert_eq!(
                same,
                Some(without_key_values(ir.clone())),
                "{}: gateway {} differs when translated from its subset",
                input.display(),
                ir.key.id()
            );
            compared += 1;
        }
    }
    assert!(compared >= 60, "only {compared} gateways compared");
}
