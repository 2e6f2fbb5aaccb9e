//! Fuzzer-built QuotaPolicies compiled and asked about a sequence of fuzzer-built requests.
//!
//! Invariants: nothing panics; a refusal uses one of the documented status codes; an allowed
//! request no longer carries the API key header (unless it doubles as the consumer header).
#![no_main]

use arbitrary::Unstructured;
use http::header::HeaderName;
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tollbridge_local::policy::{Decision, Policies, PolicyState};
use tollbridge_provider::{
    ApiKeyIr, ApiKeySettingsIr, QuotaIr, QuotaPeriod, QuotaPolicyIr, RateLimitIr, SecretString,
};

const POLICY_IDS: [&str; 3] = ["ns/p0", "ns/p1", "ns/p2"];
const KEY_HEADERS: [&str; 5] = ["x-api-key", "X-Api-Key", "bad name", "", "x-consumer"];
const QUERY_PARAMS: [&str; 5] = ["key", "k%65y", "", "a b", "k"];
const CONSUMER_HEADERS: [&str; 4] = ["x-consumer", "bad name", "", "x-api-key"];
const CONSUMERS: [&str; 4] = ["alice", "bob\n", "é", ""];
const KEY_VALUES: [&str; 5] = ["k1", "k2", " k1 ", "k%31", "k+/="];
/// Characters for query strings and header values.
const TEXT: &[char] = &['k', '1', '2', '=', '&', '%', '3', 'e', '+', ' ', '/', 'y', '?', '#'];

fn text(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<String> {
    let len = u.int_in_range(0..=max)?;
    (0..len).map(|_| u.choose(TEXT).copied()).collect()
}

fn period(u: &mut Unstructured<'_>) -> arbitrary::Result<QuotaPeriod> {
    Ok(*u.choose(&[QuotaPeriod::Day, QuotaPeriod::Week, QuotaPeriod::Month])?)
}

fn policy(u: &mut Unstructured<'_>) -> arbitrary::Result<QuotaPolicyIr> {
    let api_key = if u.arbitrary()? {
        Some(ApiKeySettingsIr {
            required: u.arbitrary()?,
            header: if u.arbitrary()? { Some(u.choose(&KEY_HEADERS)?.to_string()) } else { None },
            query_param: if u.arbitrary()? { Some(u.choose(&QUERY_PARAMS)?.to_string()) } else { None },
            consumer_header: u.choose(&CONSUMER_HEADERS)?.to_string(),
        })
    } else {
        None
    };
    let rate_limit = if u.arbitrary()? {
        Some(RateLimitIr { requests: u.arbitrary()?, period_seconds: u.arbitrary()?, burst: u.arbitrary()? })
    } else {
        None
    };
    let quota =
        if u.arbitrary()? { Some(QuotaIr { requests: u.arbitrary()?, period: period(u)? }) } else { None };
    let mut keys = Vec::new();
    for n in 0..u.int_in_range(0..=3u8)? {
        let value = *u.choose(&KEY_VALUES)?;
        let sha256 = match u.int_in_range(0..=5u8)? {
            0 => text(u, 64)?,
            1 => hex(&Sha256::digest(value.as_bytes())).to_uppercase(),
            _ => hex(&Sha256::digest(value.as_bytes())),
        };
        keys.push(ApiKeyIr {
            id: format!("ns/k{n}"),
            consumer: u.choose(&CONSUMERS)?.to_string(),
            sha256,
            value: SecretString::new(value),
            disabled: u.ratio(1, 4)?,
            expires_at: if u.arbitrary()? { Some(u.arbitrary()?) } else { None },
        });
    }
    Ok(QuotaPolicyIr { id: u.choose(&POLICY_IDS)?.to_string(), api_key, jwt: None, rate_limit, quota, keys })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn timestamp(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp::new(seconds, nanos % 1_000_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let mut irs = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        irs.push(policy(u)?);
    }
    let policies = Policies::compile(&irs);
    let state = PolicyState::new();
    let mut seconds: i64 = match u.int_in_range(0..=2u8)? {
        0 => u.arbitrary()?,
        1 => 1_700_000_000,
        _ => u.int_in_range(-400_000_000_000..=300_000_000_000)?,
    };
    for _ in 0..u.int_in_range(1..=8u8)? {
        seconds = seconds.saturating_add(i64::from(u.int_in_range(-2..=90_000i32)?));
        let now = timestamp(seconds, u.arbitrary()?);
        let policy_id = *u.choose(&["ns/p0", "ns/p1", "ns/p2", "ns/missing"])?;

        let mut uri = format!("/p{}", text(u, 4)?);
        if u.arbitrary()? {
            uri.push('?');
            uri.push_str(&text(u, 16)?);
        }
        if u.arbitrary()? {
            uri.push_str(&format!(
                "{}{}={}",
                if uri.contains('?') { "&" } else { "?" },
                u.choose(&QUERY_PARAMS)?,
                u.choose(&KEY_VALUES)?
            ));
        }
        let mut builder = http::Request::builder().uri(uri);
        for _ in 0..u.int_in_range(0..=3u8)? {
            let name = *u.choose(&KEY_HEADERS)?;
            let value = if u.arbitrary()? { u.choose(&KEY_VALUES)?.to_string() } else { text(u, 6)? };
            builder = builder.header(name, value);
        }
        let Ok(request) = builder.body(()) else { continue };
        let (mut parts, ()) = request.into_parts();

        match policies.check(&state, policy_id, &mut parts, now) {
            Decision::Allow { .. } => {
                let settings = irs.iter().find(|p| p.id == policy_id).and_then(|p| p.api_key.as_ref());
                if let Some(settings) = settings {
                    let key_header =
                        settings.header.as_deref().and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok());
                    let consumer = HeaderName::from_bytes(settings.consumer_header.as_bytes()).ok();
                    if let Some(key_header) = key_header.filter(|h| Some(h) != consumer.as_ref()) {
                        assert!(
                            !parts.headers.contains_key(&key_header),
                            "allowed request still carries {key_header}"
                        );
                    }
                }
            }
            Decision::Deny { status, .. } => {
                assert!(
                    [400, 401, 403, 429, 500].contains(&status.as_u16()),
                    "unexpected refusal status {status}"
                );
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
