//! HTTPRoute `retry` as API Management's `<retry>` policy around `<forward-request>`.
//!
//! API Management waits whole seconds between attempts (`interval`, at least 1, here at most
//! an hour): a backoff below a second becomes one second; the wait grows exponentially up to
//! ten intervals. It retries at most 50 times. Only requests that may be repeated (idempotent
//! methods, or an `Idempotency-Key`) are retried: the policy cannot tell a connection never
//! made from one lost after the request was sent.

use tollbridge_provider::{RetryIr, RouteIr};

use crate::xml::escape;

/// The most retries API Management's `<retry>` takes (`count`).
pub const MAX_COUNT: u32 = 50;
/// The longest base interval written, in seconds.
pub const MAX_INTERVAL: u64 = 3600;

/// The methods whose requests may reach the backend twice (RFC 9110 §9.2.2).
const IDEMPOTENT: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// `forward` (a `<forward-request>` whose body is buffered) inside the `<retry>` of `retry`.
pub fn around(retry: &RetryIr, forward: &str) -> String {
    let interval = retry.backoff_ms.map_or(1, |ms| ms.div_ceil(1000).clamp(1, MAX_INTERVAL));
    format!(
        "<retry condition=\"{}\" count=\"{}\" interval=\"{interval}\" max-interval=\"{}\" delta=\"{interval}\" \
         first-fast-retry=\"false\">{forward}</retry>",
        escape(&condition(retry)),
        retry.attempts.clamp(1, MAX_COUNT),
        interval * 10,
    )
}

/// What of `route`'s `retry` API Management carries otherwise than asked, one sentence each.
pub fn problems(route: &RouteIr, retry: &RetryIr) -> Vec<String> {
    let rule = format!("HTTPRoute {} rule {}", route.id.route(), route.id.rule);
    let mut said = Vec::new();
    if retry.attempts > MAX_COUNT {
        said.push(format!(
            "{rule}: retry.attempts {} is more than API Management's {MAX_COUNT}; it retries {MAX_COUNT} times",
            retry.attempts
        ));
    }
    if retry.backoff_ms.is_some_and(|ms| ms > MAX_INTERVAL * 1000) {
        said.push(format!(
            "{rule}: retry.backoff is longer than the {MAX_INTERVAL} s API Management waits here at most"
        ));
    }
    if route.timeouts.request_ms.is_some() {
        said.push(format!(
            "{rule}: API Management times each retry attempt, so the request timeout does not bound all \
             attempts together"
        ));
    }
    said
}

/// Tried again, for a request that may be repeated: no answer at all, or one of the codes.
fn condition(retry: &RetryIr) -> String {
    let mut failed = vec!["context.Response == null".to_string()];
    failed.extend(retry.codes.iter().map(|code| format!("context.Response.StatusCode == {code}")));
    let mut repeatable: Vec<String> =
        IDEMPOTENT.iter().map(|method| format!("context.Request.Method == \"{method}\"")).collect();
    repeatable.push("context.Request.Headers.GetValueOrDefault(\"Idempotency-Key\", \"\") != \"\"".into());
    format!("@(({}) && ({}))", failed.join(" || "), repeatable.join(" || "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeatable_requests_are_retried_on_no_answer_or_the_codes_and_waits_are_whole_seconds() {
        let retry = RetryIr { codes: vec![500, 503], attempts: 3, backoff_ms: Some(250) };
        let policy = around(&retry, "<forward-request buffer-request-body=\"true\" />");
        let condition = "@((context.Response == null || context.Response.StatusCode == 500 || \
                         context.Response.StatusCode == 503) && (context.Request.Method == \"GET\" || \
                         context.Request.Method == \"HEAD\" || context.Request.Method == \"OPTIONS\" || \
                         context.Request.Method == \"TRACE\" || context.Request.Method == \"PUT\" || \
                         context.Request.Method == \"DELETE\" || \
                         context.Request.Headers.GetValueOrDefault(\"Idempotency-Key\", \"\") != \"\"))";
        assert_eq!(
            policy,
            format!(
                "<retry condition=\"{}\" count=\"3\" interval=\"1\" max-interval=\"10\" delta=\"1\" \
                 first-fast-retry=\"false\"><forward-request buffer-request-body=\"true\" /></retry>",
                escape(condition)
            )
        );
        let slow = RetryIr { codes: vec![], attempts: 80, backoff_ms: Some(2500) };
        let policy = around(&slow, "<forward-request />");
        assert!(policy.contains("count=\"50\" interval=\"3\" max-interval=\"30\" delta=\"3\""), "{policy}");
        let huge = RetryIr { codes: vec![], attempts: 1, backoff_ms: Some(u64::MAX) };
        assert!(around(&huge, "").contains("interval=\"3600\" max-interval=\"36000\""));
    }
}
