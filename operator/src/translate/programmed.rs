//! Folds a provider's result into a Gateway's status: `Programmed`, addresses, and listeners
//! that could not be served.

use std::net::IpAddr;

use jiff::Timestamp;
use tollbridge_provider::{ProviderError, Provisioned};

use super::conditions::{reason, Stamp, ACCEPTED, PROGRAMMED};
use crate::api::gateway::{GatewayStatus, GatewayStatusAddress};

/// Whether a listener's `Programmed` waits for the provider (the translator found it valid).
fn is_pending(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions.iter().any(|c| c.type_ == PROGRAMMED && c.reason == reason::PENDING)
}

/// Updates `status` (as the translator produced it) with what the provider did.
pub fn mark(
    status: &mut GatewayStatus,
    result: Result<&Provisioned, &ProviderError>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let stamp = Stamp::new(generation, now);
    let set = |conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>, condition| {
        match conditions.iter_mut().find(|c| c.type_ == PROGRAMMED) {
            Some(existing) => *existing = condition,
            None => conditions.push(condition),
        }
    };
    match result {
        Ok(provisioned) => {
            // A listener the translator found invalid is not Pending; one the provider could not
            // serve is in `failed_listeners`. Without any other, nothing is served.
            let serving = status
                .listeners
                .iter()
                .any(|l| is_pending(&l.conditions) && !provisioned.failed_listeners.contains_key(&l.name));
            set(
                &mut status.conditions,
                if !serving {
                    stamp.no(
                        PROGRAMMED,
                        reason::INVALID,
                        "No listener could be programmed; see the listeners",
                    )
                } else {
                    stamp.yes(PROGRAMMED, reason::PROGRAMMED, programmed_message(provisioned))
                },
            );
            status.addresses = provisioned
                .addresses
                .iter()
                .map(|a| GatewayStatusAddress {
                    type_: Some(
                        if a.parse::<IpAddr>().is_ok() { "IPAddress" } else { "Hostname" }.to_string(),
                    ),
                    value: a.clone(),
                })
                .collect();
            for listener in &mut status.listeners {
                if !is_pending(&listener.conditions) {
                    continue;
                }
                match provisioned.failed_listeners.get(&listener.name) {
                    None => set(
                        &mut listener.conditions,
                        stamp.yes(PROGRAMMED, reason::PROGRAMMED, "Listener is programmed"),
                    ),
                    Some(why) => {
                        for c in listener.conditions.iter_mut().filter(|c| c.type_ == ACCEPTED) {
                            *c = stamp.no(ACCEPTED, reason::PORT_UNAVAILABLE, why.clone());
                        }
                        set(&mut listener.conditions, stamp.no(PROGRAMMED, reason::INVALID, why.clone()));
                    }
                }
            }
        }
        Err(error) => {
            let why = match error {
                ProviderError::Invalid(_) => reason::INVALID,
                ProviderError::AddressNotUsable(_) => reason::ADDRESS_NOT_USABLE,
                _ => reason::PENDING,
            };
            set(&mut status.conditions, stamp.no(PROGRAMMED, why, error.to_string()));
        }
    }
}

/// "Gateway is programmed", followed by what the provider had to leave out and what it
/// replaced.
fn programmed_message(provisioned: &Provisioned) -> String {
    let mut message = "Gateway is programmed".to_string();
    if !provisioned.unprovisioned.is_empty() {
        message = format!("{message}, except: {}", provisioned.unprovisioned.join("; "));
    }
    if !provisioned.replaced.is_empty() {
        message = format!("{message}. Replaced: {}", provisioned.replaced.join(" "));
    }
    message
}

/// Says, on a Gateway that is not accepted, that its proxy keeps serving the configuration it
/// last accepted (nothing is torn down by a bad edit).
pub fn keeps_serving(status: &mut GatewayStatus, generation: Option<i64>, now: Timestamp) {
    let stamp = Stamp::new(generation, now);
    let condition = stamp.no(
        PROGRAMMED,
        reason::INVALID,
        "Gateway is not accepted; its proxy keeps serving the configuration it last accepted",
    );
    match status.conditions.iter_mut().find(|c| c.type_ == PROGRAMMED) {
        Some(existing) => *existing = condition,
        None => status.conditions.push(condition),
    }
}

/// Marks a Gateway the provider has configured as not yet `Programmed` because what serves it
/// is not running yet (an in-cluster proxy without available replicas).
pub fn waiting(status: &mut GatewayStatus, why: &str, generation: Option<i64>, now: Timestamp) {
    let stamp = Stamp::new(generation, now);
    let condition = stamp.no(PROGRAMMED, reason::PENDING, why.to_string());
    match status.conditions.iter_mut().find(|c| c.type_ == PROGRAMMED) {
        Some(existing) => *existing = condition,
        None => status.conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::gateway::ListenerStatus;

    fn pending_status(listeners: &[&str]) -> GatewayStatus {
        let stamp = Stamp::new(Some(2), Timestamp::UNIX_EPOCH);
        let pending = || stamp.no(PROGRAMMED, reason::PENDING, "waiting");
        GatewayStatus {
            conditions: vec![stamp.yes(ACCEPTED, reason::ACCEPTED, "ok"), pending()],
            listeners: listeners
                .iter()
                .map(|name| ListenerStatus {
                    name: name.to_string(),
                    supported_kinds: Vec::new(),
                    attached_routes: 0,
                    conditions: vec![stamp.yes(ACCEPTED, reason::ACCEPTED, "ok"), pending()],
                })
                .collect(),
            ..Default::default()
        }
    }

    fn condition<'a>(
        conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        conditions.iter().find(|c| c.type_ == type_).expect("condition present")
    }

    #[test]
    fn success_programs_gateway_listeners_and_addresses() {
        let mut status = pending_status(&["http", "https"]);
        let provisioned = Provisioned {
            addresses: vec!["127.0.0.1".into(), "gw.example.com".into()],
            failed_listeners: BTreeMap::from([("https".to_string(), "cannot bind".to_string())]),
            ..Default::default()
        };
        mark(&mut status, Ok(&provisioned), Some(3), Timestamp::UNIX_EPOCH);
        assert_eq!(condition(&status.conditions, PROGRAMMED).status, "True");
        assert_eq!(condition(&status.conditions, PROGRAMMED).observed_generation, Some(3));
        assert_eq!(status.addresses[0].type_.as_deref(), Some("IPAddress"));
        assert_eq!(status.addresses[1].type_.as_deref(), Some("Hostname"));
        assert_eq!(condition(&status.listeners[0].conditions, PROGRAMMED).reason, reason::PROGRAMMED);
        let https = &status.listeners[1].conditions;
        assert_eq!(condition(https, ACCEPTED).reason, reason::PORT_UNAVAILABLE);
        assert_eq!(condition(https, PROGRAMMED).status, "False");
    }

    #[test]
    fn all_listeners_failing_leaves_the_gateway_unprogrammed() {
        let mut status = pending_status(&["http"]);
        let provisioned = Provisioned {
            failed_listeners: BTreeMap::from([("http".to_string(), "busy".to_string())]),
            ..Default::default()
        };
        mark(&mut status, Ok(&provisioned), Some(1), Timestamp::UNIX_EPOCH);
        assert_eq!(condition(&status.conditions, PROGRAMMED).status, "False");
    }

    #[test]
    fn a_gateway_without_a_valid_listener_is_not_programmed() {
        let mut status = pending_status(&["https"]);
        let stamp = Stamp::new(Some(1), Timestamp::UNIX_EPOCH);
        status.listeners[0].conditions[1] = stamp.no(PROGRAMMED, reason::INVALID, "bad certificate");
        mark(&mut status, Ok(&Provisioned::default()), Some(1), Timestamp::UNIX_EPOCH);
        let programmed = condition(&status.conditions, PROGRAMMED);
        assert_eq!((programmed.status.as_str(), programmed.reason.as_str()), ("False", reason::INVALID));
        assert_eq!(condition(&status.listeners[0].conditions, PROGRAMMED).message, "bad certificate");
    }

    #[test]
    fn a_replacement_is_in_the_message() {
        let mut status = pending_status(&["http"]);
        let provisioned = Provisioned {
            replaced: vec!["HTTP API a replaced by REST API b: clients use b.example now.".into()],
            ..Default::default()
        };
        mark(&mut status, Ok(&provisioned), Some(1), Timestamp::UNIX_EPOCH);
        let programmed = condition(&status.conditions, PROGRAMMED);
        assert_eq!(programmed.status, "True");
        assert!(programmed
            .message
            .ends_with("Replaced: HTTP API a replaced by REST API b: clients use b.example now."));
    }

    #[test]
    fn provider_errors_say_why() {
        let mut status = pending_status(&["http"]);
        mark(&mut status, Err(&ProviderError::Transient("throttled".into())), Some(1), Timestamp::UNIX_EPOCH);
        let programmed = condition(&status.conditions, PROGRAMMED);
        assert_eq!((programmed.status.as_str(), programmed.reason.as_str()), ("False", reason::PENDING));
        assert!(programmed.message.contains("throttled"));
        let mut status = pending_status(&["http"]);
        mark(&mut status, Err(&ProviderError::Invalid("bad".into())), Some(1), Timestamp::UNIX_EPOCH);
        assert_eq!(condition(&status.conditions, PROGRAMMED).reason, reason::INVALID);
    }
}
