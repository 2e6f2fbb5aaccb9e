//! Response headers and direct answers.
//!
//! Header formats (draft-ietf-httpapi-ratelimit-headers-09 plus the common `X-RateLimit-*` trio):
//!
//! ```text
//! RateLimit-Policy: "rate";q=<burst>;w=<seconds to refill from empty>, "quota";q=<requests>;w=<window seconds>
//! RateLimit: "rate";r=<requests possible now>;t=<seconds until full>, "quota";r=<left>;t=<seconds to window end>
//! X-RateLimit-Limit / -Remaining / -Reset: q, r and t of the tightest limit
//! ```
//!
//! The rate limit is described as the token bucket it is: `q` is the bucket size (`burst`) and
//! `w` the time an empty bucket takes to fill (`burst × period ÷ requests`, rounded up), so `r`
//! never exceeds `q` and `t` never exceeds `w`. When `burst` equals `requests` this reads exactly
//! as the configured `requests` per `period`. The tightest limit is the one with the fewest
//! remaining requests; on a tie, the one that takes longer to reset; on a 429 the one that refused.

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};

use crate::http1::GatewayHeaders;

use super::Decision;

pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(crate) const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub(crate) const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub(crate) const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The `WWW-Authenticate` challenge of a 401.
pub(crate) const CHALLENGE: &str = "ApiKey realm=\"tollbridge\"";

/// The state of one limit as advertised to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitStatus {
    /// Policy name in the headers: `rate` or `quota`.
    pub name: &'static str,
    /// Quota units of the policy (`q`).
    pub limit: u64,
    /// Window of the policy in seconds (`w`).
    pub window: u64,
    /// Requests left (`r`).
    pub remaining: u64,
    /// Seconds until the limit is fully restored (`t`).
    pub reset: u64,
}

/// The rate-limit headers of an allowed request's response, kept as the numbers counted until
/// the response's head is written: straight into an HTTP/1.1 head as bytes, or into the header
/// map of an HTTP/2 response. They replace any the response carries under the same names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitHeaders {
    limits: [LimitStatus; 2],
    len: usize,
}

impl LimitHeaders {
    pub fn new() -> Self {
        Self::default()
    }

    /// The headers of `limits` (two at most: a rate limit and a quota).
    pub fn of(limits: &[LimitStatus]) -> Self {
        let mut headers = Self::default();
        for status in limits {
            headers.push(*status);
        }
        headers
    }

    pub(crate) fn push(&mut self, status: LimitStatus) {
        debug_assert!(self.len < self.limits.len(), "a policy has a rate limit and a quota at most");
        if let Some(slot) = self.limits.get_mut(self.len) {
            *slot = status;
            self.len += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn limits(&self) -> &[LimitStatus] {
        &self.limits[..self.len]
    }
}

impl GatewayHeaders for LimitHeaders {
    fn replaces(&self, name: &HeaderName) -> bool {
        !self.is_empty() && is_limit_header(name)
    }

    fn write_lines(&self, out: &mut BytesMut) {
        let open = |out: &mut BytesMut, i: usize| out.extend_from_slice(LINE_STARTS[i]);
        render(self.limits(), None, out, open, |out, _| out.extend_from_slice(b"\r\n"));
    }

    fn set_on(&self, headers: &mut HeaderMap) {
        write_limits(headers, self.limits(), None);
    }
}

/// The names of the rate-limit headers, in the order they are written.
static LIMIT_HEADERS: [HeaderName; 5] =
    [RATELIMIT_POLICY, RATELIMIT, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET];

/// Whether `name` is one of the rate-limit headers (by length first: most names are not).
fn is_limit_header(name: &HeaderName) -> bool {
    matches!(name.as_str().len(), 9 | 16 | 17 | 21) && LIMIT_HEADERS.contains(name)
}

/// The start of each rate-limit header's line in an HTTP/1.1 head, in `LIMIT_HEADERS` order
/// (written out whole: one copy per line; a test holds them to the names).
const LINE_STARTS: [&[u8]; 5] = [
    b"ratelimit-policy: ",
    b"ratelimit: ",
    b"x-ratelimit-limit: ",
    b"x-ratelimit-remaining: ",
    b"x-ratelimit-reset: ",
];

/// Renders the rate-limit headers of `limits` into `out`, one value after another, each between
/// `open` and `close` (given the header's index in `LIMIT_HEADERS`); `refused` names the limit
/// that caused a 429. Nothing when there are no limits.
fn render(
    limits: &[LimitStatus],
    refused: Option<&str>,
    out: &mut BytesMut,
    mut open: impl FnMut(&mut BytesMut, usize),
    mut close: impl FnMut(&mut BytesMut, usize),
) {
    let tightest = limits
        .iter()
        .filter(|l| refused.is_none_or(|name| l.name == name))
        .min_by_key(|l| (l.remaining, std::cmp::Reverse(l.reset)));
    let Some(tightest) = tightest else { return };
    let mut digits = itoa::Buffer::new();
    // `"name";A=a;B=b` per limit, comma-separated.
    let mut list = |out: &mut BytesMut, fields: [&[u8]; 2], numbers: fn(&LimitStatus) -> [u64; 2]| {
        for (i, l) in limits.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\"" } else { b", \"" });
            out.extend_from_slice(l.name.as_bytes());
            for (field, n) in fields.iter().zip(numbers(l)) {
                out.extend_from_slice(field);
                out.extend_from_slice(digits.format(n).as_bytes());
            }
        }
    };
    open(out, 0);
    list(out, [b"\";q=", b";w="], |l| [l.limit, l.window]);
    close(out, 0);
    open(out, 1);
    list(out, [b"\";r=", b";t="], |l| [l.remaining, l.reset]);
    close(out, 1);
    for (i, n) in [(2, tightest.limit), (3, tightest.remaining), (4, tightest.reset)] {
        open(out, i);
        out.extend_from_slice(digits.format(n).as_bytes());
        close(out, i);
    }
}

/// Sets the rate-limit headers for `limits` on `headers`; `refused` names the limit that caused
/// a 429.
pub(crate) fn write_limits(headers: &mut HeaderMap, limits: &[LimitStatus], refused: Option<&str>) {
    let mut values = BytesMut::with_capacity(64 + 96 * limits.len());
    let split = |values: &mut BytesMut, i: usize| {
        // Digits, names and quotes only: always a valid value.
        if let Ok(value) = HeaderValue::from_maybe_shared(values.split().freeze()) {
            headers.insert(LIMIT_HEADERS[i].clone(), value);
        }
    };
    render(limits, refused, &mut values, |_, _| {}, split);
}

/// A direct answer with a JSON body `{"error": code, "message": message}`.
pub(crate) fn deny(status: StatusCode, mut headers: HeaderMap, code: &str, message: &str) -> Decision {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    Decision::Deny { status, headers, body }
}

/// 401 with the API-key challenge.
pub(crate) fn unauthorized(code: &str, message: &str) -> Decision {
    let mut headers = HeaderMap::new();
    headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    deny(StatusCode::UNAUTHORIZED, headers, code, message)
}

/// 429 with `Retry-After` (whole seconds, at least 1) and the rate-limit headers.
pub(crate) fn too_many(limits: &[LimitStatus], refused: &'static str, retry_after: u64) -> Decision {
    let mut headers = HeaderMap::new();
    let retry_after = retry_after.max(1);
    headers.insert(RETRY_AFTER, retry_after.into());
    write_limits(&mut headers, limits, Some(refused));
    let (code, message) = if refused == "quota" {
        ("quota_exceeded", format!("quota exceeded; it resets in {retry_after} seconds"))
    } else {
        ("rate_limited", format!("rate limit exceeded; retry in {retry_after} seconds"))
    };
    deny(StatusCode::TOO_MANY_REQUESTS, headers, code, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &'static str, limit: u64, window: u64, remaining: u64, reset: u64) -> LimitStatus {
        LimitStatus { name, limit, window, remaining, reset }
    }

    fn rendered(limits: &[LimitStatus], refused: Option<&str>) -> Vec<(String, String)> {
        let mut headers = HeaderMap::new();
        write_limits(&mut headers, limits, refused);
        headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())).collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn one_limit() {
        assert_eq!(
            rendered(&[status("rate", 10, 1, 7, 1)], None),
            pairs(&[
                ("ratelimit-policy", "\"rate\";q=10;w=1"),
                ("ratelimit", "\"rate\";r=7;t=1"),
                ("x-ratelimit-limit", "10"),
                ("x-ratelimit-remaining", "7"),
                ("x-ratelimit-reset", "1"),
            ])
        );
        assert!(rendered(&[], None).is_empty());
    }

    #[test]
    fn both_limits_and_the_tightest() {
        let rate = status("rate", 20, 2, 19, 1);
        let quota = status("quota", 1000, 86_400, 5, 3600);
        let both = rendered(&[rate, quota], None);
        assert_eq!(
            both[..2],
            pairs(&[
                ("ratelimit-policy", "\"rate\";q=20;w=2, \"quota\";q=1000;w=86400"),
                ("ratelimit", "\"rate\";r=19;t=1, \"quota\";r=5;t=3600"),
            ])
        );
        assert_eq!(
            both[2..],
            pairs(&[
                ("x-ratelimit-limit", "1000"),
                ("x-ratelimit-remaining", "5"),
                ("x-ratelimit-reset", "3600")
            ])
        );
        // A tie on remaining picks the longer reset.
        let tie = rendered(&[status("rate", 2, 1, 0, 1), status("quota", 9, 86_400, 0, 50)], None);
        assert_eq!(tie[2].1, "9");
        // On a 429 the refusing limit is reported.
        let refused =
            rendered(&[status("rate", 2, 1, 0, 1), status("quota", 9, 86_400, 0, 50)], Some("rate"));
        assert_eq!(
            refused[2..],
            pairs(&[("x-ratelimit-limit", "2"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")])
        );
    }

    #[test]
    fn lines_of_a_head_are_the_headers_of_a_map() {
        let both = [status("rate", 20, 2, 19, 1), status("quota", 1000, 86_400, 5, 3600)];
        let limits = LimitHeaders::of(&both);
        let mut lines = BytesMut::new();
        limits.write_lines(&mut lines);
        let expected: String = rendered(&both, None).iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        assert_eq!(std::str::from_utf8(&lines).unwrap(), expected);

        let mut map = HeaderMap::new();
        map.insert(X_RATELIMIT_REMAINING, HeaderValue::from_static("999"));
        limits.set_on(&mut map);
        assert_eq!(
            map.get_all(X_RATELIMIT_REMAINING).iter().collect::<Vec<_>>(),
            ["5"],
            "replaced, not added"
        );

        assert!(limits.replaces(&X_RATELIMIT_REMAINING) && limits.replaces(&RATELIMIT));
        assert!(!limits.replaces(&CONTENT_TYPE) && !limits.replaces(&HeaderName::from_static("ratelimit-x")));
        assert!(!LimitHeaders::new().replaces(&RATELIMIT), "no limits replace nothing");
        let mut none = BytesMut::new();
        LimitHeaders::new().write_lines(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn denials_carry_json_and_challenge() {
        let Decision::Deny { status, headers, body } = unauthorized("missing_api_key", "say \"hi\"") else {
            panic!("not a denial")
        };
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[WWW_AUTHENTICATE], CHALLENGE);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json, serde_json::json!({"error": "missing_api_key", "message": "say \"hi\""}));

        let Decision::Deny { status, headers, body } = too_many(&[status_zero()], "rate", 0) else {
            panic!("not a denial")
        };
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[RETRY_AFTER], "1", "never below one second");
        assert!(body.contains("rate_limited"), "{body}");
    }

    fn status_zero() -> LimitStatus {
        status("rate", 1, 1, 0, 1)
    }
}
