//! The real-components harness itself (tests/support): moto attached or started, reached
//! through the fault-injecting proxy with plain HTTP and with the AWS SDK, faults injected
//! as programmed and recorded, and moto's reset. Independent of the provider's code.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{plain, AwsReply, Fault, FaultProxy, Moto, Rule};

/// Lists the HTTP APIs through `url` (plain HTTP); panics unless moto answers 200.
async fn http_api_names(url: &str) -> Vec<String> {
    let reply = plain::call(url, "GET", "/v2/apis", None).await.expect("GET /v2/apis");
    assert_eq!(reply.status, 200, "GET /v2/apis: {}", reply.text());
    let items = reply.json()["items"].as_array().cloned().expect("an items array");
    items.iter().map(|api| api["name"].as_str().expect("a name").to_owned()).collect()
}

fn create_api_body(name: &str) -> Option<serde_json::Value> {
    Some(json!({ "name": name, "protocolType": "HTTP", "tags": { "tollbridge.dev/test": "harness" } }))
}

#[tokio::test]
async fn moto_answers_through_the_proxy_and_every_request_is_recorded() {
    let _moto = Moto::fresh().await;
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.url()).await;

    let reply = plain::call(&proxy.url(), "GET", "/v2/apis", None).await.expect("GET /v2/apis");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "items": [] }));

    let created = plain::call(&proxy.url(), "POST", "/v2/apis", create_api_body("one")).await.expect("POST");
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["apiId"].as_str().expect("an apiId").to_owned();
    assert_eq!(http_api_names(&proxy.url()).await, ["one"]);

    let seen = proxy.seen();
    assert_eq!(seen.len(), 3, "{}", proxy.log());
    assert_eq!((seen[1].method.as_str(), seen[1].path.as_str()), ("POST", "/v2/apis"));
    assert!(seen.iter().all(|s| s.forwarded && !s.injected() && s.status == Some(hyper::StatusCode::OK)));
    assert_eq!((proxy.writes(), proxy.forwarded_writes(), proxy.injected()), (1, 1, 0));

    // A query string is recorded apart from the path.
    let tags = plain::call(&proxy.url(), "GET", &format!("/v2/apis/{id}?x=1"), None).await.expect("GET api");
    assert_eq!(tags.json()["tags"], json!({ "tollbridge.dev/test": "harness" }));
    assert_eq!(proxy.seen()[3].query.as_deref(), Some("x=1"));
}

#[tokio::test]
async fn a_throttle_rule_answers_429_as_aws_does_then_lets_requests_pass() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;
    proxy.add(Rule::next(1, Fault::Throttle).writes());

    // Reads are not writes: untouched.
    assert!(http_api_names(&proxy.url()).await.is_empty());

    let throttled = plain::call(&proxy.url(), "POST", "/v2/apis", create_api_body("a")).await.expect("POST");
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.error_type(), Some("TooManyRequestsException"));
    assert_eq!(throttled.json(), json!({ "message": "Too Many Requests" }));
    assert!(http_api_names(&proxy.url()).await.is_empty(), "a throttled request must not reach moto");

    let retried = plain::call(&proxy.url(), "POST", "/v2/apis", create_api_body("a")).await.expect("POST");
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(http_api_names(&proxy.url()).await, ["a"]);

    assert_eq!((proxy.writes(), proxy.forwarded_writes(), proxy.injected()), (2, 1, 1), "{}", proxy.log());
    let first_write = proxy.seen().into_iter().find(|s| s.is_write()).expect("a write");
    assert_eq!(first_write.fault, Some(Fault::Throttle));
    assert_eq!(first_write.status, Some(hyper::StatusCode::TOO_MANY_REQUESTS));
    assert!(!first_write.forwarded);
}

#[tokio::test]
async fn every_kth_path_and_method_rules() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;
    proxy.add(
        Rule::always(Fault::Error { status: 409, error_type: "ConflictException".into() })
            .path_contains("/restapis")
            .method("POST"),
    );
    proxy.add(Rule::every(2, Fault::InternalError).path_contains("/v2/"));

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = plain::call(&proxy.url(), "GET", "/v2/apis", None).await.expect("GET");
        if reply.status == 500 {
            assert_eq!(reply.error_type(), Some("InternalFailure"));
        }
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses, [200, 500, 200, 500]);

    // The REST API rule: POST only; the every-2 rule does not match /restapis.
    let listed = plain::call(&proxy.url(), "GET", "/restapis", None).await.expect("GET /restapis");
    assert_eq!(listed.status, 200, "{}", listed.text());
    let conflict =
        plain::call(&proxy.url(), "POST", "/restapis", Some(json!({ "name": "r" }))).await.expect("POST");
    assert_eq!((conflict.status.as_u16(), conflict.error_type()), (409, Some("ConflictException")));

    proxy.clear_rules();
    let created =
        plain::call(&proxy.url(), "POST", "/restapis", Some(json!({ "name": "r" }))).await.expect("POST");
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(proxy.injected(), 3, "{}", proxy.log());
}

#[tokio::test]
async fn delays_and_dropped_connections() {
    let _moto = Moto::fresh().await;
    let proxy = FaultProxy::start(Moto::shared().url()).await;

    // Dropped before moto: the client sees a broken connection, moto nothing.
    proxy.add(Rule::next(1, Fault::Drop).writes());
    let dropped = plain::call(&proxy.url(), "POST", "/v2/apis", create_api_body("dropped")).await;
    assert!(dropped.is_err(), "expected a broken connection, got {dropped:?}");
    assert!(http_api_names(&proxy.url()).await.is_empty());

    // Dropped after moto acted: the client sees a broken connection, the API exists.
    proxy.add(Rule::next(1, Fault::DropResponse).writes());
    let lost = plain::call(&proxy.url(), "POST", "/v2/apis", create_api_body("lost")).await;
    assert!(lost.is_err(), "expected a broken connection, got {lost:?}");
    assert_eq!(http_api_names(&proxy.url()).await, ["lost"]);

    // A slow answer after moto acted: the client gives up, the API exists.
    proxy.add(Rule::next(1, Fault::DelayResponse(Duration::from_secs(2))).writes());
    let slow = tokio::time::timeout(
        Duration::from_millis(500),
        plain::call(&proxy.url(), "POST", "/v2/apis", create_api_body("slow")),
    )
    .await;
    assert!(slow.is_err(), "expected the client to time out, got {slow:?}");
    assert_eq!(http_api_names(&proxy.url()).await.len(), 2);

    // A delay before moto: a client that gives up first never reaches moto.
    proxy.add(Rule::next(1, Fault::Delay(Duration::from_secs(2))).writes());
    let late = tokio::time::timeout(
        Duration::from_millis(300),
        plain::call(&proxy.url(), "POST", "/v2/apis", create_api_body("late")),
    )
    .await;
    assert!(late.is_err(), "expected the client to time out, got {late:?}");
    // Kept: the claim is that nothing arrives once the 2 s delay is over, so the wait is that delay.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(http_api_names(&proxy.url()).await.len(), 2, "{}", proxy.log());

    // A delay shorter than the client's patience only slows it down.
    proxy.add(Rule::next(1, Fault::Delay(Duration::from_millis(300))));
    let started = std::time::Instant::now();
    assert_eq!(http_api_names(&proxy.url()).await.len(), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let writes: Vec<_> = proxy.seen().into_iter().filter(|s| s.is_write()).collect();
    let summary: Vec<_> =
        writes.iter().map(|s| (s.fault.clone().expect("injected"), s.forwarded, s.status)).collect();
    assert_eq!(
        summary,
        [
            (Fault::Drop, false, None),
            (Fault::DropResponse, true, None),
            // The client had gone before the answer was due: none sent.
            (Fault::DelayResponse(Duration::from_secs(2)), true, None),
            (Fault::Delay(Duration::from_secs(2)), false, None),
        ],
        "{}",
        proxy.log()
    );
    assert_eq!(proxy.forwarded_writes(), 2);
}

#[tokio::test]
async fn lists_are_paged_as_api_gateway_pages_them() {
    let _moto = Moto::fresh().await;
    let moto = Moto::shared();
    for i in 0..30 {
        let http = plain::call(moto.url(), "POST", "/v2/apis", create_api_body(&format!("h{i:02}"))).await;
        assert_eq!(http.expect("POST /v2/apis").status, 200);
        let rest =
            plain::call(moto.url(), "POST", "/restapis", Some(json!({ "name": format!("r{i:02}") }))).await;
        assert_eq!(rest.expect("POST /restapis").status, 200);
    }
    let proxy = FaultProxy::start(moto.url()).await;
    proxy.page_lists(25);
    let names = |reply: &plain::Reply, key: &str| -> Vec<String> {
        let items = reply.json()[key].as_array().cloned().expect("a list");
        items.iter().map(|i| i["name"].as_str().expect("a name").to_owned()).collect()
    };
    let get = |path: String| {
        let url = proxy.url();
        async move {
            let reply = plain::call(&url, "GET", &path, None).await.expect("GET");
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            reply
        }
    };

    // HTTP APIs: 25 a page unless fewer are asked for; nextToken until the last page.
    let first = get("/v2/apis".into()).await;
    assert_eq!(names(&first, "items").len(), 25);
    let token = first.json()["nextToken"].as_str().expect("a next token").to_owned();
    let last = get(format!("/v2/apis?nextToken={token}")).await;
    assert_eq!(names(&last, "items"), (25..30).map(|i| format!("h{i}")).collect::<Vec<_>>());
    assert!(last.json().get("nextToken").is_none(), "{}", last.text());
    assert_eq!(names(&get("/v2/apis?maxResults=7".into()).await, "items").len(), 7);
    assert_eq!(names(&get("/v2/apis?maxResults=500".into()).await, "items").len(), 25, "at most 25");

    // REST APIs: `item`, `limit` and `position`.
    let first = get("/restapis?limit=500".into()).await;
    assert_eq!(names(&first, "item").len(), 25);
    let position = first.json()["position"].as_str().expect("a position").to_owned();
    let last = get(format!("/restapis?limit=500&position={position}")).await;
    assert_eq!(names(&last, "item").len(), 5);
    assert!(last.json().get("position").is_none());

    // A token the service never gave is refused; what is not a list passes whole.
    let bad = plain::call(&proxy.url(), "GET", "/restapis?position=zz", None).await.expect("GET");
    assert_eq!((bad.status.as_u16(), bad.error_type()), (400, Some("BadRequestException")));
    let api_id = last.json()["item"][0]["id"].as_str().expect("an id").to_owned();
    let one = get(format!("/restapis/{api_id}")).await;
    assert_eq!(one.json()["name"], "r25");
    // What the client was sent, the page, is recorded.
    let recorded = proxy.seen()[0].response_body.clone().expect("a body");
    let recorded: serde_json::Value = serde_json::from_slice(&recorded).expect("JSON");
    assert_eq!(recorded["items"].as_array().map(Vec::len), Some(25));
    assert_eq!(recorded["nextToken"], json!(token));
}

#[tokio::test]
async fn reset_empties_moto() {
    let _moto = Moto::fresh().await;
    let moto = Moto::shared();
    let created = plain::call(moto.url(), "POST", "/v2/apis", create_api_body("gone")).await.expect("POST");
    assert_eq!(created.status, 200, "{}", created.text());
    let rest =
        plain::call(moto.url(), "POST", "/restapis", Some(json!({ "name": "gone" }))).await.expect("POST");
    assert_eq!(rest.status, 200, "{}", rest.text());
    assert_eq!(http_api_names(moto.url()).await, ["gone"]);

    moto.reset();
    assert!(http_api_names(moto.url()).await.is_empty());
    let rest_apis = plain::call(moto.url(), "GET", "/restapis", None).await.expect("GET /restapis");
    assert_eq!(rest_apis.json()["item"], json!([]));
}

/// The injected errors are classified by the AWS SDK for Rust as API Gateway's own: a 429
/// `TooManyRequestsException` is a throttling error and a 500 a transient one, both retried.
mod sdk {
    use std::time::Duration;

    use aws_sdk_apigatewayv2::config::retry::RetryConfig;
    use aws_sdk_apigatewayv2::config::timeout::TimeoutConfig;
    use aws_sdk_apigatewayv2::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_apigatewayv2::error::ProvideErrorMetadata;
    use aws_sdk_apigatewayv2::operation::create_api::CreateApiError;
    use aws_sdk_apigatewayv2::types::ProtocolType;
    use aws_smithy_http_client::tls;

    use super::support::moto::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
    use super::support::{Fault, FaultProxy, Moto, Rule};

    fn client(url: &str, attempts: u32, attempt_timeout: Duration) -> aws_sdk_apigatewayv2::Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_apigatewayv2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "tests"))
            .endpoint_url(url)
            .http_client(http)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(attempts)
                    .with_initial_backoff(Duration::from_millis(10))
                    .with_max_backoff(Duration::from_millis(100)),
            )
            .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(attempt_timeout).build())
            .build();
        aws_sdk_apigatewayv2::Client::from_conf(config)
    }

    async fn create(client: &aws_sdk_apigatewayv2::Client, name: &str) -> Result<String, String> {
        client
            .create_api()
            .name(name)
            .protocol_type(ProtocolType::Http)
            .send()
            .await
            .map(|out| out.api_id.expect("an api id"))
            .map_err(|e| format!("{:?}", aws_sdk_apigatewayv2::error::DisplayErrorContext(e)))
    }

    #[tokio::test]
    async fn a_429_is_a_throttling_error_that_the_sdk_retries() {
        let _moto = Moto::fresh().await;
        let proxy = FaultProxy::start(Moto::shared().url()).await;

        // One attempt: the error surfaces, modeled and with its code.
        proxy.add(Rule::next(1, Fault::Throttle).writes());
        let err = client(&proxy.url(), 1, Duration::from_secs(10))
            .create_api()
            .name("once")
            .protocol_type(ProtocolType::Http)
            .send()
            .await
            .expect_err("throttled");
        let service = err.as_service_error().expect("a service error");
        assert!(matches!(service, CreateApiError::TooManyRequestsException(_)), "{service:?}");
        assert_eq!(service.code(), Some("TooManyRequestsException"));
        assert_eq!(service.message(), Some("Too Many Requests"));

        // Three attempts: two throttled, the third passes.
        proxy.clear_seen();
        proxy.add(Rule::next(2, Fault::Throttle).writes());
        let sdk = client(&proxy.url(), 3, Duration::from_secs(10));
        create(&sdk, "retried").await.expect("created after two throttled attempts");
        assert_eq!(
            (proxy.writes(), proxy.forwarded_writes(), proxy.injected()),
            (3, 1, 2),
            "{}",
            proxy.log()
        );
    }

    #[tokio::test]
    async fn server_errors_dropped_connections_and_timeouts_are_retried() {
        let _moto = Moto::fresh().await;
        let proxy = FaultProxy::start(Moto::shared().url()).await;
        let sdk = client(&proxy.url(), 3, Duration::from_millis(1500));

        proxy.add(Rule::next(2, Fault::InternalError).writes());
        create(&sdk, "after-500s").await.expect("created after two 500s");
        assert_eq!((proxy.writes(), proxy.forwarded_writes()), (3, 1), "{}", proxy.log());

        proxy.clear_seen();
        proxy.add(Rule::next(1, Fault::Drop).writes());
        create(&sdk, "after-drop").await.expect("created after a dropped connection");
        assert_eq!((proxy.writes(), proxy.forwarded_writes()), (2, 1), "{}", proxy.log());

        // An attempt that times out is retried; the slow attempt never reached moto.
        proxy.clear_seen();
        proxy.add(Rule::next(1, Fault::Delay(Duration::from_secs(5))).writes());
        create(&sdk, "after-timeout").await.expect("created after an attempt timed out");
        assert_eq!((proxy.writes(), proxy.forwarded_writes()), (2, 1), "{}", proxy.log());

        // A lost answer after moto acted: the retry creates a second API (CreateApi is not
        // idempotent), which is what the provider must cope with.
        proxy.clear_seen();
        proxy.add(Rule::next(1, Fault::DropResponse).writes());
        create(&sdk, "twice").await.expect("created after a lost answer");
        assert_eq!((proxy.writes(), proxy.forwarded_writes()), (2, 2), "{}", proxy.log());
        let apis = sdk.get_apis().send().await.expect("GetApis").items.unwrap_or_default();
        let twice = apis.iter().filter(|a| a.name.as_deref() == Some("twice")).count();
        assert_eq!(twice, 2);
    }
}
