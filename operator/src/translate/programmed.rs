//! Folds a provider's result into a Gateway's status: `Programmed`, addresses, and listeners
//! that could not be served.

use std::net::IpAddr;

use jiff::Timestamp;
use tollbridge_provider::{ProviderError, Provisioned};

use super::conditions::{reason, Stamp, ACCEPTED, PROGRAMMED};
use crate::api::gateway::{GatewayStatus, GatewayStatusAddress};

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
            let all_failed = !status.listeners.is_empty()
                && status.listeners.iter().all(|l| provisioned.failed_listeners.contains_key(&l.name));
            set(
                &mut status.conditions,
                if all_failed {
                    stamp.no(
                        PROGRAMMED,
                        reason::INVALID,
                        "No listener could be programmed; see the listeners",
                    )
                } else {
                    stamp.yes(PROGRAMMED, reason::PROGRAMMED, "Gateway is programmed")
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
                let pending =
                    listener.conditions.iter().any(|c| c.type_ == PROGRAMMED && c.reason == reason::PENDING);
                if !pending {
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
                _ => reason::PENDING,
            };
            set(&mut status.conditions, stamp.no(PROGRAMMED, why, error.to_string()));
        }
    }
}
