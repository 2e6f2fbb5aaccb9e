//! Where a cloud Gateway was provisioned, recorded on the Gateway itself, so that what was made
//! there is found and deleted even after the Gateway's class, ProviderConfig or settings have
//! changed or gone.
//!
//! The record is the annotation [`PROVISIONED_INTO`]: the list of provider settings (JSON) of
//! every place the Gateway may have resources in. A target goes into the record before anything
//! is provisioned there, and leaves it only once its provider confirmed the delete; the
//! cleanup finalizer stays while the record is not empty.

use kube::ResourceExt;
use tollbridge_provider::ProviderSettings;

use crate::api::gateway::Gateway;

/// The annotation holding the record.
pub const PROVISIONED_INTO: &str = "tollbridge.dev/provisioned-into";

/// The targets recorded on `gateway`; an annotation that does not parse is an error (it is
/// ours: someone edited it).
pub fn recorded(gateway: &Gateway) -> Result<Vec<ProviderSettings>, String> {
    match gateway.annotations().get(PROVISIONED_INTO) {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| format!("annotation {PROVISIONED_INTO} is not a list of provider settings: {e}")),
    }
}

/// The annotation's value for `targets`.
pub fn encode(targets: &[ProviderSettings]) -> String {
    serde_json::to_string(targets).unwrap_or_else(|_| "[]".into())
}

/// What to do about the record when the Gateway now resolves to `current`.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// The record to keep: `current` (when it is a cloud) in place of any entry for the same
    /// target, and the entries still to be cleaned up.
    pub record: Vec<ProviderSettings>,
    /// Recorded targets the Gateway left: to be cleaned up, then dropped from the record.
    pub stale: Vec<ProviderSettings>,
}

/// The plan for a Gateway with `recorded` targets that now resolves to `current`.
pub fn plan(recorded: &[ProviderSettings], current: &ProviderSettings) -> Plan {
    let cloud = !matches!(current, ProviderSettings::Local(_));
    let stale: Vec<ProviderSettings> = recorded.iter().filter(|r| !r.same_target(current)).cloned().collect();
    let mut record = stale.clone();
    if cloud {
        record.insert(0, current.clone());
    }
    Plan { record, stale }
}

/// `recorded` without the entries for `cleaned`'s target.
pub fn without(recorded: &[ProviderSettings], cleaned: &ProviderSettings) -> Vec<ProviderSettings> {
    recorded.iter().filter(|r| !r.same_target(cleaned)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use tollbridge_provider::{AwsSettings, AzureSettings, LocalSettings};

    use super::*;

    fn aws(region: &str, tag: &str) -> ProviderSettings {
        ProviderSettings::Aws(AwsSettings {
            region: region.into(),
            api_type: "Auto".into(),
            tags: [("team".to_string(), tag.to_string())].into(),
            ..AwsSettings::default()
        })
    }

    fn azure(service: &str) -> ProviderSettings {
        ProviderSettings::Azure(AzureSettings { service_name: service.into(), ..AzureSettings::default() })
    }

    fn local() -> ProviderSettings {
        ProviderSettings::Local(LocalSettings::default())
    }

    #[test]
    fn a_first_cloud_target_is_recorded_before_anything_else() {
        assert_eq!(
            plan(&[], &aws("eu-west-1", "a")),
            Plan { record: vec![aws("eu-west-1", "a")], stale: vec![] }
        );
        assert_eq!(plan(&[], &local()), Plan { record: vec![], stale: vec![] });
    }

    #[test]
    fn settings_of_the_same_target_replace_their_entry() {
        let p = plan(&[aws("eu-west-1", "a")], &aws("eu-west-1", "b"));
        assert_eq!(p, Plan { record: vec![aws("eu-west-1", "b")], stale: vec![] });
    }

    #[test]
    fn a_target_left_behind_stays_recorded_until_cleaned() {
        let p = plan(&[aws("eu-west-1", "a")], &aws("us-east-1", "a"));
        assert_eq!(p.stale, vec![aws("eu-west-1", "a")]);
        assert_eq!(p.record, vec![aws("us-east-1", "a"), aws("eu-west-1", "a")]);
        let p = plan(&[aws("eu-west-1", "a"), azure("apim")], &local());
        assert_eq!(p.stale, vec![aws("eu-west-1", "a"), azure("apim")]);
        assert_eq!(p.record, p.stale);
        assert_eq!(without(&p.record, &azure("apim")), vec![aws("eu-west-1", "a")]);
    }

    #[test]
    fn the_record_round_trips_through_its_annotation() {
        let targets = vec![aws("eu-west-1", "a"), azure("apim")];
        let mut gateway = Gateway::new("web", Default::default());
        gateway.metadata.annotations = Some([(PROVISIONED_INTO.to_string(), encode(&targets))].into());
        assert_eq!(recorded(&gateway).unwrap(), targets);
        gateway.metadata.annotations = Some([(PROVISIONED_INTO.to_string(), "nope".to_string())].into());
        assert!(recorded(&gateway).unwrap_err().contains(PROVISIONED_INTO));
    }
}
