//! Condition types, reasons and a small builder stamping `observedGeneration` and time.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const ACCEPTED: &str = "Accepted";
pub const PROGRAMMED: &str = "Programmed";
pub const RESOLVED_REFS: &str = "ResolvedRefs";
pub const CONFLICTED: &str = "Conflicted";
pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
pub const READY: &str = "Ready";

/// Reasons, as the Gateway API spec (and GEP-713 for policies) spells them, plus our own.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const INVALID: &str = "Invalid";
    pub const PENDING: &str = "Pending";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const ADDRESS_NOT_USABLE: &str = "AddressNotUsable";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const CONFLICTED: &str = "Conflicted";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
    pub const INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";
    pub const POLICY_NOT_FOUND: &str = "PolicyNotFound";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const READY: &str = "Ready";
    pub const DISABLED: &str = "Disabled";
    pub const EXPIRED: &str = "Expired";
}

/// A condition reason and a message explaining it.
pub type Problem = (&'static str, String);

/// Stamps conditions of one object with its generation and the snapshot's time.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub generation: Option<i64>,
    pub now: Timestamp,
}

impl Stamp {
    pub fn new(generation: Option<i64>, now: Timestamp) -> Self {
        Self { generation: Some(generation.unwrap_or(1)), now }
    }

    pub fn condition(
        &self,
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time: Time(self.now),
        }
    }

    pub fn yes(&self, type_: &str, reason: &str, message: impl Into<String>) -> Condition {
        self.condition(type_, true, reason, message)
    }

    pub fn no(&self, type_: &str, reason: &str, message: impl Into<String>) -> Condition {
        self.condition(type_, false, reason, message)
    }
}

/// Whether a condition reports a problem a user must fix (used by `tollbridge check`).
pub fn is_problem(condition: &Condition) -> bool {
    match condition.type_.as_str() {
        ACCEPTED | RESOLVED_REFS | READY => condition.status == "False",
        CONFLICTED | PARTIALLY_INVALID => condition.status == "True",
        _ => false,
    }
}
