//! Requests counted per ApiKey, from API Management's reports by subscription
//! (`GET reports/bySubscription`): one listing per distinct period asked for, not one call per
//! key, so that a thousand keys stay a handful of calls per refresh.
//!
//! What a report counts: the calls of a subscription that were not blocked (blocked are those
//! answered 401, 403 or 429, which includes the calls the quota itself refused, and also a
//! backend's own 401, 403 and 429 answers, which the quota did count: there the count is low).
//! The service aggregates its reports with a delay of minutes, so the count trails the gateway.

use std::collections::HashMap;

use serde_json::Value;
use tollbridge_provider::{GatewayIr, UsageRequest};

use crate::desired;

/// The path (below the service) of the report of every subscription's calls on the days from
/// `first_day` to `last_day` (UTC, `YYYY-MM-DD`), both whole.
pub fn report_path(first_day: &str, last_day: &str) -> String {
    let filter =
        format!("timestamp ge datetime'{first_day}T00:00:00' and timestamp le datetime'{last_day}T23:59:59'");
    format!("reports/bySubscription?$filter={}", encode(&filter))
}

/// Requests counted per subscription id (its last path segment) in the records of a report.
pub fn counted(records: &[Value]) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for record in records {
        let Some(id) = record["subscriptionId"].as_str().and_then(|path| path.rsplit('/').next()) else {
            continue;
        };
        let calls = |field: &str| record[field].as_u64().unwrap_or(0);
        let used = calls("callCountSuccess")
            .saturating_add(calls("callCountFailed"))
            .saturating_add(calls("callCountOther"));
        let total = out.entry(id.to_ascii_lowercase()).or_insert(0);
        *total = total.saturating_add(used);
    }
    out
}

/// The subscription id the ApiKey of `request` has under the Gateway's `prefix`, when the
/// Gateway's policy names that key.
pub fn subscription(gateway: &GatewayIr, prefix: &str, request: &UsageRequest) -> Option<String> {
    let policy = gateway.policies.iter().find(|p| p.id == request.policy)?;
    let key = policy.keys.iter().find(|k| k.id == request.api_key)?;
    Some(desired::subscription_id(prefix, key))
}

/// Percent-encodes what a query value must not carry as is (spaces, quotes, `&`, `#`, `+`, `%`).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_report_covers_whole_days_and_is_encoded_for_a_query() {
        assert_eq!(
            report_path("2026-12-01", "2026-12-06"),
            "reports/bySubscription?$filter=timestamp%20ge%20datetime%272026-12-01T00:00:00%27%20and%20\
             timestamp%20le%20datetime%272026-12-06T23:59:59%27"
        );
    }

    #[test]
    fn blocked_calls_are_not_counted_and_records_of_one_subscription_add_up() {
        let records = [
            json!({"subscriptionId": "/subscriptions/Tb-1-sb-a", "callCountSuccess": 5, "callCountBlocked": 7,
                   "callCountFailed": 2, "callCountOther": 1, "callCountTotal": 15}),
            json!({"subscriptionId": "/subscriptions/tb-1-sb-a", "callCountSuccess": 3}),
            json!({"subscriptionId": "/subscriptions/tb-1-sb-b", "callCountBlocked": 4}),
            json!({"callCountSuccess": 9}),
        ];
        let counted = counted(&records);
        assert_eq!(counted.get("tb-1-sb-a"), Some(&11));
        assert_eq!(counted.get("tb-1-sb-b"), Some(&0));
        assert_eq!(counted.len(), 2);
    }
}
