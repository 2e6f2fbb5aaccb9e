//! HTTPRoute `retry` as API Management's `<retry>` policy around `<forward-request>`.
//!
//! API Management waits whole seconds between attempts (`interval`, at least 1): a backoff
//! below a second becomes one second; the wait grows exponentially up to ten intervals. It
//! retries at most 50 times. As on the local proxy, a backend's answer is retried only for
//! requests that may be repeated (idempotent methods, or an `Idempotency-Key`).

use tollbridge_provider::RetryIr;

use crate::xml::escape;

/// The most retries API Management's `<retry>` takes (`count`).
pub const MAX_COUNT: u32 = 50;

/// The methods whose requests may reach the backend twice (RFC 9110 §9.2.2).
const IDEMPOTENT: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// `forward` (a `<forward-request>` whose body is buffered) inside the `<retry>` of `retry`.
pub fn around(retry: &RetryIr, forward: &str) -> String {
    let interval = retry.backoff_ms.map_or(1, |ms| ms.div_ceil(1000).max(1));
    format!(
        "<retry condition=\"{}\" count=\"{}\" interval=\"{interval}\" max-interval=\"{}\" delta=\"{interval}\" \
         first-fast-retry=\"false\">{forward}</retry>",
        escape(&condition(retry)),
        retry.attempts.clamp(1, MAX_COUNT),
        interval * 10,
    )
}

/// Tried again: no answer at all (no connection), or one of the codes to a repeatable request.
fn condition(retry: &RetryIr) -> String {
    let mut answered = String::new();
    if !retry.codes.is_empty() {
        let codes: Vec<String> =
            retry.codes.iter().map(|code| format!("context.Response.StatusCode == {code}")).collect();
        let methods: Vec<String> =
            IDEMPOTENT.iter().map(|method| format!("context.Request.Method == \"{method}\"")).collect();
        answered = format!(
            " || (({}) && ({} || context.Request.Headers.ContainsKey(\"Idempotency-Key\")))",
            codes.join(" || "),
            methods.join(" || ")
        );
    }
    format!("@(context.Response == null{answered})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_retried_for_repeatable_requests_and_waits_are_whole_seconds() {
        let retry = RetryIr { codes: vec![500, 503], attempts: 3, backoff_ms: Some(250) };
        let policy = around(&retry, "<forward-request buffer-request-body=\"true\" />");
        assert_eq!(
            policy,
            "<retry condition=\"@(context.Response == null || ((context.Response.StatusCode == 500 || \
             context.Response.StatusCode == 503) &amp;&amp; (context.Request.Method == &quot;GET&quot; || \
             context.Request.Method == &quot;HEAD&quot; || context.Request.Method == &quot;OPTIONS&quot; || \
             context.Request.Method == &quot;TRACE&quot; || context.Request.Method == &quot;PUT&quot; || \
             context.Request.Method == &quot;DELETE&quot; || \
             context.Request.Headers.ContainsKey(&quot;Idempotency-Key&quot;))))\" count=\"3\" interval=\"1\" \
             max-interval=\"10\" delta=\"1\" first-fast-retry=\"false\"><forward-request \
             buffer-request-body=\"true\" /></retry>"
        );
        let slow = RetryIr { codes: vec![], attempts: 80, backoff_ms: Some(2500) };
        let policy = around(&slow, "<forward-request />");
        assert!(policy.starts_with("<retry condition=\"@(context.Response == null)\" count=\"50\" interval=\"3\" max-interval=\"30\" delta=\"3\""), "{policy}");
    }
}
