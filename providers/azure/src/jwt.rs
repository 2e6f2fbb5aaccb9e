//! A QuotaPolicy's `jwt` as API Management policy, in the branch of each route it guards:
//! `validate-jwt` (keys from the issuer's OpenID Connect discovery document, or inline RSA
//! keys), the limits counted per consumer claim, then the forwarded consumer header.
//!
//! It lives in the operations, not in a product: a product's policy runs only for calls made
//! with its subscriptions, and a caller could name another product's subscription key to skip
//! the check.

use tollbridge_provider::jwks::{self, PublicKey};
use tollbridge_provider::{JwksIr, JwtIr, QuotaPeriod, QuotaPolicyIr};

use crate::xml::{csharp_string, escape};

/// The context variable `validate-jwt` leaves the accepted token in.
const TOKEN_VARIABLE: &str = "tollbridge-jwt";

/// What a route guarded by `policy` runs first: the token check, the limits per consumer, the
/// consumer header. What cannot be carried is added to `unprovisioned`.
pub fn guard(
    policy: &QuotaPolicyIr,
    jwt: &JwtIr,
    prefix: &str,
    tier: &str,
    unprovisioned: &mut Vec<String>,
) -> String {
    let mut xml = validate(policy, jwt, unprovisioned);
    // Counters of `-by-key` policies are the service's: the Gateway's prefix and the policy id
    // keep Gateways and policies apart.
    let counter = format!(
        "@({} + ((Jwt)context.Variables[\"{TOKEN_VARIABLE}\"]).Claims.GetValueOrDefault({}, \"\"))",
        csharp_string(&format!("{prefix}{}|", policy.id)),
        csharp_string(&jwt.consumer_claim)
    );
    // The Consumption tier has no `-by-key` limits; the v2 tiers have no `quota-by-key`.
    let consumption = tier.eq_ignore_ascii_case("Consumption");
    let no_quota_by_key = consumption || tier.ends_with("V2");
    if policy.rate_limit.is_some() && consumption {
        unprovisioned.push(format!(
            "QuotaPolicy {}: this tier has no rate-limit-by-key: the rate limit per token consumer is not enforced",
            policy.id
        ));
    }
    if let Some(rate) = policy.rate_limit.filter(|_| !consumption) {
        xml.push_str(&format!(
            "<rate-limit-by-key calls=\"{}\" renewal-period=\"{}\" counter-key=\"{counter}\" />",
            u64::from(rate.requests).max(1),
            rate.period_seconds.max(1)
        ));
    }
    if let Some(quota) = policy.quota {
        let period = match quota.period {
            QuotaPeriod::Day => 86_400,
            QuotaPeriod::Week => 604_800,
            QuotaPeriod::Month => 2_592_000,
        };
        if no_quota_by_key {
            unprovisioned.push(format!(
                "QuotaPolicy {}: this tier has no quota-by-key: the quota per token consumer is not enforced",
                policy.id
            ));
        } else {
            xml.push_str(&format!(
                "<quota-by-key calls=\"{}\" renewal-period=\"{period}\" counter-key=\"{counter}\" />",
                quota.requests
            ));
        }
        if quota.period == QuotaPeriod::Month {
            unprovisioned.push(format!(
                "QuotaPolicy {}: API Management quotas renew every 30 days, not on calendar months",
                policy.id
            ));
        }
    }
    xml.push_str(&forward(jwt));
    xml
}

/// The `validate-jwt` element; what it cannot carry is added to `unprovisioned`. A policy whose
/// keys cannot be carried gets an element with no keys: every token is refused.
fn validate(policy: &QuotaPolicyIr, jwt: &JwtIr, unprovisioned: &mut Vec<String>) -> String {
    let mut xml = format!(
        "<validate-jwt header-name=\"Authorization\" failed-validation-httpcode=\"401\" \
         failed-validation-error-message=\"the bearer token is missing or not valid\" \
         require-expiration-time=\"true\" require-scheme=\"Bearer\" require-signed-tokens=\"true\" \
         clock-skew=\"60\" output-token-variable-name=\"{TOKEN_VARIABLE}\">"
    );
    match &jwt.jwks {
        JwksIr::OpenIdDiscovery => {
            xml.push_str(&format!("<openid-config url=\"{}\" />", escape(&jwt.discovery_url())));
        }
        JwksIr::Inline(set) => xml.push_str(&inline_keys(policy, set, unprovisioned)),
        JwksIr::Uri(uri) => unprovisioned.push(format!(
            "QuotaPolicy {}: validate-jwt cannot read the key set at {uri}; use openIDDiscovery or inline keys",
            policy.id
        )),
    }
    if !jwt.audiences.is_empty() {
        xml.push_str("<audiences>");
        for audience in &jwt.audiences {
            xml.push_str(&format!("<audience>{}</audience>", escape(audience)));
        }
        xml.push_str("</audiences>");
    }
    xml.push_str(&format!("<issuers><issuer>{}</issuer></issuers>", escape(&jwt.issuer)));
    if !jwt.required_claims.is_empty() {
        xml.push_str("<required-claims>");
        for claim in &jwt.required_claims {
            xml.push_str(&format!("<claim name=\"{}\" match=\"any\" separator=\" \">", escape(&claim.name)));
            for value in &claim.values {
                xml.push_str(&format!("<value>{}</value>", escape(value)));
            }
            xml.push_str("</claim>");
        }
        xml.push_str("</required-claims>");
    }
    xml.push_str("</validate-jwt>");
    xml
}

/// `<issuer-signing-keys>` with the set's RSA keys; other keys are reported, not carried.
fn inline_keys(policy: &QuotaPolicyIr, set: &str, unprovisioned: &mut Vec<String>) -> String {
    let keys = match jwks::parse(set) {
        Ok(keys) => keys,
        Err(error) => {
            unprovisioned
                .push(format!("QuotaPolicy {}: the inline key set is not usable: {error}", policy.id));
            return String::new();
        }
    };
    let mut xml = String::from("<issuer-signing-keys>");
    for (i, jwk) in keys.iter().enumerate() {
        match &jwk.key {
            PublicKey::Rsa { n, e } => {
                xml.push_str(&format!("<key n=\"{}\" e=\"{}\" />", escape(n), escape(e)))
            }
            PublicKey::Ec { .. } | PublicKey::Ed25519 { .. } => unprovisioned.push(format!(
                "QuotaPolicy {}: validate-jwt takes inline RSA keys only; key {i}{} is not carried",
                policy.id,
                jwk.kid.as_deref().map(|kid| format!(" (kid {kid:?})")).unwrap_or_default()
            )),
        }
    }
    xml.push_str("</issuer-signing-keys>");
    xml
}

/// A policy expression naming the token's consumer. Expressions are C#, written raw in `rawxml`
/// policies: the claim name is a C# string literal, so it cannot end the literal.
fn consumer_expression(jwt: &JwtIr) -> String {
    format!(
        "@(((Jwt)context.Variables[\"{TOKEN_VARIABLE}\"]).Claims.GetValueOrDefault({}, \"\"))",
        csharp_string(&jwt.consumer_claim)
    )
}

/// The consumer header set upstream, and the token removed unless it is forwarded.
fn forward(jwt: &JwtIr) -> String {
    let mut xml = format!(
        "<set-header name=\"{}\" exists-action=\"override\"><value>{}</value></set-header>",
        escape(&jwt.consumer_header),
        consumer_expression(jwt)
    );
    if !jwt.forward_token {
        xml.push_str("<set-header name=\"Authorization\" exists-action=\"delete\" />");
    }
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jwks: JwksIr) -> (QuotaPolicyIr, JwtIr) {
        let jwt = JwtIr {
            issuer: "https://login.example.com/".into(),
            audiences: vec!["orders-api".into()],
            jwks,
            consumer_claim: "client_id".into(),
            required_claims: vec![tollbridge_provider::RequiredClaimIr {
                name: "scope".into(),
                values: vec!["orders.read".into()],
            }],
            consumer_header: "x-tollbridge-consumer".into(),
            forward_token: false,
        };
        let ir = QuotaPolicyIr {
            id: "shop/sso".into(),
            api_key: None,
            jwt: Some(jwt.clone()),
            rate_limit: None,
            quota: None,
            keys: Vec::new(),
        };
        (ir, jwt)
    }

    #[test]
    fn discovery_audiences_issuer_and_claims() {
        let (ir, jwt) = policy(JwksIr::OpenIdDiscovery);
        let mut unprovisioned = Vec::new();
        let xml = validate(&ir, &jwt, &mut unprovisioned);
        assert!(unprovisioned.is_empty(), "{unprovisioned:?}");
        for part in [
            "<openid-config url=\"https://login.example.com/.well-known/openid-configuration\" />",
            "<audiences><audience>orders-api</audience></audiences>",
            "<issuers><issuer>https://login.example.com/</issuer></issuers>",
            "<claim name=\"scope\" match=\"any\" separator=\" \"><value>orders.read</value></claim>",
            "require-signed-tokens=\"true\"",
        ] {
            assert!(xml.contains(part), "{part} missing from {xml}");
        }
        let forwarded = forward(&jwt);
        assert!(forwarded.contains("GetValueOrDefault(\"client_id\", \"\")"), "{forwarded}");
        assert!(forwarded.contains("<set-header name=\"Authorization\" exists-action=\"delete\" />"));
    }

    #[test]
    fn inline_rsa_keys_are_carried_and_others_reported() {
        let set = r#"{"keys": [{"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"},
                               {"kty": "OKP", "crv": "Ed25519", "kid": "d", "x": "11qY"}]}"#;
        let (ir, jwt) = policy(JwksIr::Inline(set.into()));
        let mut unprovisioned = Vec::new();
        let xml = validate(&ir, &jwt, &mut unprovisioned);
        assert!(
            xml.contains("<issuer-signing-keys><key n=\"sXch\" e=\"AQAB\" /></issuer-signing-keys>"),
            "{xml}"
        );
        assert_eq!(
            unprovisioned,
            ["QuotaPolicy shop/sso: validate-jwt takes inline RSA keys only; key 1 (kid \"d\") is not carried"]
        );
    }

    #[test]
    fn a_claim_name_cannot_escape_its_expression() {
        let (_, mut jwt) = policy(JwksIr::OpenIdDiscovery);
        jwt.consumer_claim = "sub\", \"x\")+System.Environment.Exit(1)+(\"".into();
        let expression = consumer_expression(&jwt);
        assert_eq!(
            expression,
            r#"@(((Jwt)context.Variables["tollbridge-jwt"]).Claims.GetValueOrDefault("sub\", \"x\")+System.Environment.Exit(1)+(\"", ""))"#
        );
    }
}
