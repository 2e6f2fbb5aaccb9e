//! The harness itself (tests/support), with plain HTTP and no provider: requests through Prism
//! to the fake API Management service; valid ones stored, invalid ones refused by the
//! validation against Microsoft's description (422); the fake's ARM behaviour (ETags and 412,
//! pagination, long-running operations, policies re-serialised, subscriptions and products),
//! fault injection, out-of-band changes, and the isolation of one fake service from another.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{plain, policy_xml, Apim, ArmReply, Call, Fault, Format, Kind, Lro, Reply, Rule};

fn api_body(path: &str) -> Value {
    json!({ "properties": {
        "displayName": format!("API {path}"),
        "path": path,
        "protocols": ["https"],
        "serviceUrl": "http://backend.example:8080",
        "subscriptionRequired": true,
    }})
}

async fn send(call: Call) -> Reply {
    let what = format!("{call:?}");
    call.send().await.unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn put(apim: &Apim, rel: &str, body: &Value) -> Reply {
    send(plain::put(&apim.arm_url(rel)).json(body)).await
}

async fn get(apim: &Apim, rel: &str) -> Reply {
    send(plain::get(&apim.arm_url(rel))).await
}

fn assert_status(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.text());
}

#[tokio::test]
async fn a_valid_api_put_passes_validation_and_is_stored_with_the_service_defaults() {
    let apim = Apim::start().await;

    let created = put(&apim, "apis/Orders", &api_body("orders")).await;
    assert_status(&created, 201, "create");
    let body = created.json();
    assert_eq!(body["id"], json!(apim.resource_id("apis/Orders")));
    assert_eq!(body["name"], "Orders");
    assert_eq!(body["type"], "Microsoft.ApiManagement/service/apis");
    let props = &body["properties"];
    assert_eq!(props["path"], "orders");
    assert_eq!(props["serviceUrl"], "http://backend.example:8080");
    // Defaults the service fills in.
    assert_eq!(props["apiRevision"], "1");
    assert_eq!(props["isCurrent"], true);
    assert_eq!(props["subscriptionKeyParameterNames"]["header"], "Ocp-Apim-Subscription-Key");
    let etag = created.etag().expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    // Stored, under a case-insensitive name kept as first written.
    assert_eq!(apim.names(Kind::Api), ["Orders"]);
    assert_eq!(apim.properties("apis/orders").expect("stored")["path"], "orders");
    assert_eq!(apim.etag("apis/ORDERS").as_deref(), Some(etag.as_str()));

    let read = get(&apim, "apis/orders").await;
    assert_status(&read, 200, "get");
    assert_eq!(read.json(), body);
    assert_eq!(read.etag(), Some(etag.as_str()));

    // A second PUT replaces: 200 and a new ETag.
    let mut changed = api_body("orders");
    changed["properties"]["displayName"] = json!("Orders v2");
    let updated = put(&apim, "apis/orders", &changed).await;
    assert_status(&updated, 200, "update");
    assert_ne!(updated.etag(), Some(etag.as_str()));
    assert_eq!(apim.properties("apis/orders").unwrap()["displayName"], "Orders v2");

    // Every request went through Prism and reached the fake.
    let seen = apim.seen();
    assert_eq!(seen.len(), 3, "{}", apim.log());
    assert!(seen.iter().all(|s| s.validated && s.reached_fake && s.refusal.is_none()), "{}", apim.log());
    assert_eq!(seen[0].header("authorization"), Some("Bearer tollbridge-test-token"));
    assert_eq!(seen[0].query_param("api-version").as_deref(), Some("2024-05-01"));
    assert_eq!(seen[0].json()["properties"]["path"], "orders");
    assert_eq!(seen[0].rel_path(), "apis/Orders");
    assert_eq!((apim.writes(), apim.applied_writes()), (2, 2));

    // The service's own checks, beyond the description.
    let mut relative = api_body("relative");
    relative["properties"]["serviceUrl"] = json!("backend:8080");
    assert_status(&put(&apim, "apis/relative", &relative).await, 400, "relative serviceUrl");
    let mut unnamed = api_body("unnamed");
    unnamed["properties"].as_object_mut().unwrap().remove("displayName");
    assert_status(&put(&apim, "apis/unnamed", &unnamed).await, 400, "no displayName");
    // Two APIs may not share a path.
    let clash = put(&apim, "apis/other", &api_body("Orders")).await;
    assert_status(&clash, 400, "same path");
    assert_eq!(clash.error_code().as_deref(), Some("ValidationError"));
    apim.assert_no_refusals();
}

#[tokio::test]
async fn requests_the_real_service_would_refuse_are_refused_by_prism() {
    let apim = Apim::start().await;
    apim.expect_refusals();
    apim.seed("products/gold", json!({ "displayName": "Gold" }));

    // A subscription without its required `scope`.
    let no_scope = put(&apim, "subscriptions/s1", &json!({ "properties": { "displayName": "s1" } })).await;
    assert_status(&no_scope, 422, "no scope");
    assert!(no_scope.text().contains("must have required property 'scope'"), "{}", no_scope.text());
    // A property of the wrong type.
    let mut wrong = api_body("orders");
    wrong["properties"]["protocols"] = json!("https");
    let wrong_type = put(&apim, "apis/orders", &wrong).await;
    assert_status(&wrong_type, 422, "protocols as a string");
    // An unknown enum value.
    let bad_state = put(
        &apim,
        "subscriptions/s2",
        &json!({ "properties": { "displayName": "s2", "scope": "/products/gold", "state": "enabled" } }),
    )
    .await;
    assert_status(&bad_state, 422, "unknown state");
    // DELETE without If-Match; a request without api-version; a policy id other than `policy`.
    let no_if_match = send(plain::delete(&apim.arm_url("products/gold"))).await;
    assert_status(&no_if_match, 422, "DELETE without If-Match");
    let no_version = send(plain::get(&format!("{}{}/apis", apim.url(), apim.service_id()))).await;
    assert_status(&no_version, 422, "no api-version");
    let bad_policy =
        put(&apim, "products/gold/policies/other", &json!({ "properties": { "value": "<policies/>" } }))
            .await;
    assert_status(&bad_policy, 422, "policy id");
    // A path the description does not have, a method it does not allow, no Authorization.
    let no_path = get(&apim, "apis/orders/nonsense").await;
    assert_status(&no_path, 404, "unknown path");
    let no_method = send(plain::get(&apim.arm_url("products/gold/apis/orders"))).await;
    assert_status(&no_method, 405, "GET of a product–API link");
    let no_auth = send(plain::get(&apim.arm_url("apis")).no_auth()).await;
    assert_status(&no_auth, 401, "no Authorization");
    // A body where the operation takes none.
    let delete_body =
        send(plain::delete(&apim.arm_url("products/gold")).header("If-Match", "*").json(&json!({}))).await;
    assert_status(&delete_body, 422, "DELETE with a body");

    // None reached the fake; each is recorded with Prism's reasons.
    assert!(!apim.exists("subscriptions/s1") && !apim.exists("apis/orders") && apim.exists("products/gold"));
    let refused = apim.refusals();
    assert_eq!(refused.len(), 10, "{}", apim.log());
    assert!(refused.iter().all(|s| !s.reached_fake && s.validated), "{}", apim.log());
    let kinds: Vec<&str> = refused.iter().map(|s| s.refusal.as_ref().unwrap().kind.as_str()).collect();
    assert_eq!(kinds[..6], ["UNPROCESSABLE_ENTITY"; 6], "{}", apim.log());
    assert_eq!(
        kinds[6..9],
        ["NO_PATH_MATCHED_ERROR", "NO_METHOD_MATCHED_ERROR", "UNAUTHORIZED"],
        "{}",
        apim.log()
    );
    assert_eq!(kinds[9], "UNPROCESSABLE_ENTITY", "{}", apim.log());
    let first = refused[0].refusal.as_ref().unwrap();
    assert_eq!(
        first.messages,
        ["body.properties: Request body property properties must have required property 'scope'"]
    );
    assert!(refused[4].refusal.as_ref().unwrap().messages[0].contains("api-version"), "{}", apim.log());
    assert!(refused[3].refusal.as_ref().unwrap().messages[0].contains("if-match"), "{}", apim.log());

    // The assertion a provider test relies on names each refused request and Prism's reason.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apim.assert_no_refusals()))
        .expect_err("assert_no_refusals must panic");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("10 request(s)"), "{message}");
    assert!(message.contains("must have required property 'scope'"), "{message}");
    assert!(message.contains("properties.protocols must be array"), "{message}");
    assert!(message.contains(r#"body: {"properties":{"displayName":"s1"}}"#), "{message}");
}

#[tokio::test]
async fn a_refused_request_fails_the_test_when_the_service_is_dropped() {
    let result = tokio::spawn(async {
        let apim = Apim::start().await;
        let reply = put(&apim, "subscriptions/s1", &json!({ "properties": { "displayName": "s1" } })).await;
        assert_status(&reply, 422, "no scope");
        // `apim` dropped here, without expect_refusals.
    })
    .await;
    let panic = result.expect_err("dropping an Apim with refused requests must panic").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("refused by the validation"), "{message}");
}

#[tokio::test]
async fn the_fake_checks_authorization_api_version_and_the_service_like_arm() {
    let apim = Apim::start().await;

    // Straight to the fake (Prism would refuse the first one itself).
    let no_auth = send(plain::get(&apim.fake_arm_url("apis")).no_auth()).await;
    assert_status(&no_auth, 401, "no Authorization");
    assert_eq!(no_auth.error_code().as_deref(), Some("AuthenticationFailed"));
    let basic =
        send(plain::get(&apim.fake_arm_url("apis")).no_auth().header("Authorization", "Basic eDp5")).await;
    assert_status(&basic, 401, "Basic");
    let no_version = send(plain::get(&format!("{}{}/apis", apim.fake_url(), apim.service_id()))).await;
    assert_status(&no_version, 400, "no api-version");
    assert_eq!(no_version.error_code().as_deref(), Some("MissingApiVersionParameter"));

    // An api-version the description allows (any string) but the service does not serve:
    // through Prism, refused by the fake.
    let old = format!("{}{}/apis?api-version=2021-08-01", apim.url(), apim.service_id());
    let old = send(plain::get(&old)).await;
    assert_status(&old, 400, "old api-version");
    assert_eq!(old.error_code().as_deref(), Some("InvalidApiVersionParameter"));

    apim.require_token(Some("the-right-one"));
    let wrong = get(&apim, "apis").await;
    assert_status(&wrong, 401, "wrong token");
    assert_eq!(wrong.error_code().as_deref(), Some("InvalidAuthenticationToken"));
    let right =
        send(plain::get(&apim.arm_url("apis")).no_auth().header("Authorization", "Bearer the-right-one"))
            .await;
    assert_status(&right, 200, "right token");
    apim.require_token(None);

    // Another resource group or service name: 404 as ARM.
    let other_rg = apim.arm_url("apis").replace(apim.resource_group(), "rg-other");
    let other_rg = send(plain::get(&other_rg)).await;
    assert_status(&other_rg, 404, "other resource group");
    assert_eq!(other_rg.error_code().as_deref(), Some("ResourceGroupNotFound"));
    let other_svc =
        apim.arm_url("apis").replace(&format!("/service/{}/", apim.service_name()), "/service/other/");
    assert_status(&send(plain::get(&other_svc)).await, 404, "other service");
    let missing = get(&apim, "apis/nothing").await;
    assert_status(&missing, 404, "missing API");
    assert_eq!(
        missing.json(),
        json!({ "error": { "code": "ResourceNotFound", "message": "Api not found." } })
    );

    // Requests to the fake directly are recorded too, as not validated.
    let seen = apim.seen();
    assert!(!seen[0].validated && seen[0].status.map(|s| s.as_u16()) == Some(401), "{}", apim.log());
    assert!(seen[3].validated && seen[3].reached_fake, "{}", apim.log());
}

#[tokio::test]
async fn a_long_running_api_put_answers_202_and_the_api_appears_when_it_succeeded() {
    let apim = Apim::start().await;
    apim.set_lro(Some(Lro::new(2).with_location()));

    let accepted = put(&apim, "apis/orders", &api_body("orders")).await;
    assert_status(&accepted, 202, "long-running PUT");
    assert!(accepted.body.is_empty(), "{}", accepted.text());
    let status_url = accepted.header("azure-asyncoperation").expect("Azure-AsyncOperation").to_owned();
    let result_url = accepted.header("location").expect("Location").to_owned();
    let prefix = format!(
        "{}/subscriptions/{}/providers/Microsoft.ApiManagement/locations/westeurope/",
        apim.url(),
        apim.subscription_id()
    );
    assert!(status_url.starts_with(&format!("{prefix}operationsStatuses/")), "{status_url}");
    assert!(status_url.ends_with("?api-version=2024-05-01"), "{status_url}");
    assert!(result_url.starts_with(&format!("{prefix}operationResults/")), "{result_url}");
    assert_eq!(apim.pending_operations(), 1);

    // Not there until the operation succeeded.
    assert_status(&get(&apim, "apis/orders").await, 404, "API before the end");
    for _ in 0..2 {
        let status = send(plain::get(&status_url)).await;
        assert_status(&status, 200, "status");
        assert_eq!(status.json()["status"], "InProgress");
        assert!(!apim.exists("apis/orders"));
    }
    let done = send(plain::get(&status_url)).await;
    assert_eq!(done.json()["status"], "Succeeded", "{}", done.text());
    assert_eq!(apim.pending_operations(), 0);
    let api = get(&apim, "apis/orders").await;
    assert_status(&api, 200, "API after the end");
    let result = send(plain::get(&result_url)).await;
    assert_status(&result, 200, "result");
    assert_eq!(result.json(), api.json());

    // Location only; the result monitor answers 202 while in progress.
    apim.set_lro(Some(Lro::new(1).location_only().retry_after(1)));
    let accepted = put(&apim, "apis/orders", &api_body("orders-v2")).await;
    assert_status(&accepted, 202, "update");
    assert_eq!(accepted.header("azure-asyncoperation"), None);
    assert_eq!(accepted.header("retry-after"), Some("1"));
    let result_url = accepted.header("location").unwrap().to_owned();
    assert_status(&send(plain::get(&result_url)).await, 202, "in progress");
    assert_eq!(apim.properties("apis/orders").unwrap()["path"], "orders", "unchanged while in progress");
    let result = send(plain::get(&result_url)).await;
    assert_status(&result, 200, "done");
    assert_eq!(result.json()["properties"]["path"], "orders-v2");

    // A failing operation changes nothing; a long-running DELETE.
    apim.set_lro(Some(Lro::new(0).failing("InvalidOperation", "The backend said no")));
    let accepted = put(&apim, "apis/payments", &api_body("payments")).await;
    let status = send(plain::get(accepted.header("azure-asyncoperation").unwrap())).await;
    assert_eq!(status.json()["status"], "Failed");
    assert_eq!(status.json()["error"]["code"], "InvalidOperation");
    assert!(!apim.exists("apis/payments"));
    apim.set_lro(Some(Lro::new(1).on_deletes()));
    let deleting = send(plain::delete(&apim.arm_url("apis/orders")).header("If-Match", "*")).await;
    assert_status(&deleting, 202, "long-running DELETE");
    let status_url = deleting.header("azure-asyncoperation").unwrap().to_owned();
    assert_eq!(send(plain::get(&status_url)).await.json()["status"], "InProgress");
    assert!(apim.exists("apis/orders"));
    assert_eq!(send(plain::get(&status_url)).await.json()["status"], "Succeeded");
    assert!(!apim.exists("apis/orders"));
    // The monitors are not in the description: answered by the front, unvalidated.
    assert!(apim.seen().iter().filter(|s| s.path.contains("/locations/")).all(|s| !s.validated));
}

#[tokio::test]
async fn etags_change_on_every_write_and_a_stale_if_match_gets_412() {
    let apim = Apim::start().await;
    let created = put(&apim, "apis/orders", &api_body("orders")).await;
    let first = created.etag().unwrap().to_owned();

    let patched = send(
        plain::patch(&apim.arm_url("apis/orders"))
            .header("If-Match", &first)
            .json(&json!({ "properties": { "displayName": "Patched" } })),
    )
    .await;
    assert_status(&patched, 200, "PATCH");
    let second = patched.etag().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(patched.json()["properties"]["displayName"], "Patched");
    assert_eq!(patched.json()["properties"]["path"], "orders", "merged, not replaced");

    let stale = send(
        plain::patch(&apim.arm_url("apis/orders"))
            .header("If-Match", &first)
            .json(&json!({ "properties": {} })),
    )
    .await;
    assert_status(&stale, 412, "stale PATCH");
    assert_eq!(stale.error_code().as_deref(), Some("PreconditionFailed"));
    assert!(stale.json()["error"]["message"].is_string());
    let stale_delete = send(plain::delete(&apim.arm_url("apis/orders")).header("If-Match", &first)).await;
    assert_status(&stale_delete, 412, "stale DELETE");
    let stale_put =
        send(plain::put(&apim.arm_url("apis/orders")).header("If-Match", &first).json(&api_body("orders")))
            .await;
    assert_status(&stale_put, 412, "stale PUT");

    // An out-of-band change moves the ETag too.
    let third = apim.mutate("apis/orders", |p| p["description"] = json!("changed by hand"));
    assert_ne!(third, second);
    let read = get(&apim, "apis/orders").await;
    assert_eq!(read.etag(), Some(third.as_str()));
    assert_eq!(read.json()["properties"]["description"], "changed by hand");
    assert_status(
        &send(plain::delete(&apim.arm_url("apis/orders")).header("If-Match", &second)).await,
        412,
        "stale",
    );

    let deleted = send(plain::delete(&apim.arm_url("apis/orders")).header("If-Match", &third)).await;
    assert_status(&deleted, 204, "DELETE (an API's: 204, as the description has it)");
    assert!(!apim.exists("apis/orders"));
    let again =
        send(plain::delete(&apim.arm_url("apis/orders?deleteRevisions=true")).header("If-Match", "*")).await;
    assert_status(&again, 204, "DELETE of nothing");

    // Subscriptions: PATCH with If-Match.
    apim.seed("products/gold", json!({ "displayName": "Gold" }));
    let sub = put(
        &apim,
        "subscriptions/key1",
        &json!({ "properties": { "displayName": "key1", "scope": "/products/gold" } }),
    )
    .await;
    let etag = sub.etag().unwrap().to_owned();
    let activate = plain::patch(&apim.arm_url("subscriptions/key1"))
        .json(&json!({ "properties": { "state": "active" } }));
    assert_status(&send(activate.clone().header("If-Match", "\"AAAAAAAAAAA=\"")).await, 412, "stale");
    let active = send(activate.header("If-Match", &etag)).await;
    assert_status(&active, 200, "activate");
    assert_eq!(active.json()["properties"]["state"], "active");
    assert!(active.json()["properties"]["startDate"].is_string());
}

#[tokio::test]
async fn collections_are_paged_with_next_links_through_the_validator() {
    let apim = Apim::start().await;
    for i in 0..120 {
        apim.put(
            &format!("backends/b{i:03}"),
            json!({ "url": format!("http://10.0.0.{i}:80"), "protocol": "http" }),
        );
    }
    let mut names = Vec::new();
    let mut pages = 0;
    let mut url = apim.arm_url("backends");
    loop {
        let page = send(plain::get(&url)).await;
        assert_status(&page, 200, "page");
        let body = page.json();
        pages += 1;
        assert_eq!(body["count"], 120);
        names
            .extend(body["value"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()));
        match body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(apim.url()), "nextLink leads back through the validator: {next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..120).map(|i| format!("b{i:03}")).collect();
    assert_eq!(names, expected);

    // $top sets the page size and is kept in nextLink; $filter.
    let top = get(&apim, "backends?$top=7").await.json();
    assert_eq!(top["value"].as_array().unwrap().len(), 7);
    assert!(
        top["nextLink"].as_str().unwrap().contains("%24top=7")
            || top["nextLink"].as_str().unwrap().contains("$top=7")
    );
    let filtered = get(&apim, "backends?$filter=startswith(name,%20'b11')").await.json();
    let names: Vec<&str> =
        filtered["value"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b110", "b111", "b112", "b113", "b114", "b115", "b116", "b117", "b118", "b119"]);
    let eq = get(&apim, "backends?$filter=properties/url%20eq%20'http://10.0.0.5:80'").await.json();
    assert_eq!(eq["value"][0]["name"], "b005");
    assert!(apim.seen().iter().all(|s| s.validated && s.refusal.is_none()), "{}", apim.log());

    apim.set_page_size(100);
    assert!(get(&apim, "backends").await.json()["nextLink"].is_string());
    apim.set_page_size(200);
    assert!(get(&apim, "backends").await.json().get("nextLink").is_none());
}

#[tokio::test]
async fn faults_are_injected_as_programmed_and_recorded() {
    let apim = Apim::start().await;
    apim.add(Rule::next(2, Fault::Throttle).writes());

    // Reads are not writes: untouched.
    assert_status(&get(&apim, "apis").await, 200, "list");
    for _ in 0..2 {
        let throttled = put(&apim, "apis/orders", &api_body("orders")).await;
        assert_status(&throttled, 429, "throttled");
        assert_eq!(throttled.header("retry-after"), Some("1"));
        assert_eq!(throttled.error_code().as_deref(), Some("TooManyRequests"));
        assert!(!apim.exists("apis/orders"), "a throttled request must not act");
    }
    assert_status(&put(&apim, "apis/orders", &api_body("orders")).await, 201, "after the throttling");
    assert_eq!((apim.writes(), apim.applied_writes(), apim.injected()), (3, 1, 2), "{}", apim.log());
    assert_eq!(apim.requests("PUT", "/apis/orders").len(), 3);
    assert_eq!(apim.requests("", "/APIS").len(), 4);
    let first_write = apim.seen().into_iter().find(|s| s.is_write()).unwrap();
    assert_eq!(first_write.fault, Some(Fault::Throttle));
    assert!(first_write.validated && first_write.refusal.is_none(), "faults come after validation");

    // Every 2nd GET of an API: 500. Path filters; other errors.
    apim.clear_rules();
    apim.clear_seen();
    apim.add(Rule::every(2, Fault::InternalError).method("GET").path_contains("/apis/orders"));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(get(&apim, "apis/orders").await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 500, 200, 500]);
    assert_status(&get(&apim, "apis").await, 200, "other path");
    apim.clear_rules();
    apim.add(Rule::next(1, Fault::Error { status: 409, code: "Conflict".into() }).method("PUT"));
    let conflict = put(&apim, "apis/orders", &api_body("orders")).await;
    assert_status(&conflict, 409, "injected error");
    assert_eq!(conflict.error_code().as_deref(), Some("Conflict"));

    // Dropped connections: before acting, and after acting.
    apim.clear_rules();
    apim.add(Rule::next(1, Fault::Drop).writes());
    let dropped = plain::put(&apim.arm_url("backends/b1"))
        .json(&json!({ "properties": { "url": "http://x.example", "protocol": "http" } }));
    assert!(dropped.clone().send().await.is_err(), "dropped");
    assert!(!apim.exists("backends/b1"));
    apim.add(Rule::next(1, Fault::DropResponse).writes());
    assert!(dropped.clone().send().await.is_err(), "answer dropped");
    assert!(apim.exists("backends/b1"), "acted on before the drop");
    let seen = apim.seen();
    let last = seen.last().unwrap();
    assert_eq!((last.fault.clone(), last.reached_fake, last.status), (Some(Fault::DropResponse), true, None));

    // A delayed answer.
    apim.add(Rule::next(1, Fault::DelayResponse(Duration::from_millis(600))));
    let started = Instant::now();
    assert_status(&get(&apim, "backends/b1").await, 200, "delayed");
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn policies_are_stored_re_serialised_like_the_service_does() {
    let apim = Apim::start().await;
    apim.seed("apis/orders", json!({ "displayName": "Orders", "path": "orders" }));
    let sent = "<policies>\n    <inbound>\n        <base></base>\n        <set-header name='x-who' exists-action=\"override\"><value>a \"quoted\" &amp; b</value></set-header>\n        <rate-limit-by-key calls=\"10\" renewal-period=\"60\" counter-key=\"@(context.Request.Headers.GetValueOrDefault(&quot;x-api-key&quot;,&quot;&quot;))\" />\n    </inbound>\n    <backend><base /></backend>\n    <outbound />\n    <!-- keep me -->\n</policies>";
    let reply = put(
        &apim,
        "apis/orders/policies/policy",
        &json!({ "properties": { "format": "xml", "value": sent } }),
    )
    .await;
    assert_status(&reply, 201, "policy PUT");
    let expected = "<policies>\r\n\t<inbound>\r\n\t\t<base />\r\n\t\t<set-header name=\"x-who\" exists-action=\"override\">\r\n\t\t\t<value>a \"quoted\" &amp; b</value>\r\n\t\t</set-header>\r\n\t\t<rate-limit-by-key calls=\"10\" renewal-period=\"60\" counter-key=\"@(context.Request.Headers.GetValueOrDefault(&quot;x-api-key&quot;,&quot;&quot;))\" />\r\n\t</inbound>\r\n\t<backend>\r\n\t\t<base />\r\n\t</backend>\r\n\t<outbound />\r\n\t<!-- keep me -->\r\n</policies>";
    assert_eq!(reply.json()["properties"]["value"], expected);
    assert_ne!(expected, sent);
    assert_eq!(apim.policy("apis/orders").as_deref(), Some(expected));
    let read = get(&apim, "apis/orders/policies/policy").await;
    assert_eq!(read.json()["properties"], json!({ "format": "xml", "value": expected }));
    assert_eq!(read.json()["type"], "Microsoft.ApiManagement/service/apis/policies");
    assert_eq!(read.json()["name"], "policy");

    // rawxml: expressions with raw quotes and `<`, given back raw in rawxml, escaped in xml.
    let raw = r#"<policies><inbound><choose><when condition="@(context.Request.Headers.GetValueOrDefault("x","") == "a" && 1 < 2)"><return-response><set-status code="403" reason="No" /></return-response></when></choose><set-variable name="v" value="@{ return "<b>"; }" /></inbound></policies>"#;
    let reply = put(
        &apim,
        "apis/orders/policies/policy",
        &json!({ "properties": { "format": "rawxml", "value": raw } }),
    )
    .await;
    assert_status(&reply, 200, "rawxml PUT");
    let as_raw = get(&apim, "apis/orders/policies/policy?format=rawxml").await.json();
    assert_eq!(as_raw["properties"]["format"], "rawxml");
    let raw_value = as_raw["properties"]["value"].as_str().unwrap();
    assert!(
        raw_value.contains(
            r#"<when condition="@(context.Request.Headers.GetValueOrDefault("x","") == "a" && 1 < 2)">"#
        ),
        "{raw_value}"
    );
    assert!(raw_value.contains("\r\n\t\t\t\t\t<set-status code=\"403\" reason=\"No\" />"), "{raw_value}");
    let as_xml = apim.policy("apis/orders").unwrap();
    assert!(as_xml.contains(r#"condition="@(context.Request.Headers.GetValueOrDefault(&quot;x&quot;,&quot;&quot;) == &quot;a&quot; &amp;&amp; 1 &lt; 2)""#), "{as_xml}");
    assert!(as_xml.contains(r#"value="@{ return &quot;&lt;b&gt;&quot;; }""#), "{as_xml}");

    // What the service refuses: not well-formed, another root, an unknown section, a raw `&`
    // in `xml`.
    for (value, format) in [
        ("<policies><inbound></policies>", "xml"),
        ("<policy><inbound /></policy>", "xml"),
        ("<policies><frontend /></policies>", "xml"),
        ("<policies><inbound><set-header name=\"a&b\" /></inbound></policies>", "xml"),
    ] {
        let reply = put(
            &apim,
            "apis/orders/policies/policy",
            &json!({ "properties": { "format": format, "value": value } }),
        )
        .await;
        assert_status(&reply, 400, value);
        assert_eq!(reply.error_code().as_deref(), Some("ValidationError"), "{value}");
    }
    assert!(apim.policy("apis/orders").unwrap().contains("<choose>"), "unchanged");

    // Operation and product policies; DELETE.
    apim.seed(
        "apis/orders/operations/get",
        json!({ "displayName": "GET /", "method": "GET", "urlTemplate": "/" }),
    );
    apim.seed("products/gold", json!({ "displayName": "Gold" }));
    for rel in ["apis/orders/operations/get/policies/policy", "products/gold/policies/policy"] {
        let reply = put(
            &apim,
            rel,
            &json!({ "properties": { "value": "<policies><inbound><base/></inbound></policies>" } }),
        )
        .await;
        assert_status(&reply, 201, rel);
        assert_eq!(
            reply.json()["properties"]["value"],
            "<policies>\r\n\t<inbound>\r\n\t\t<base />\r\n\t</inbound>\r\n</policies>"
        );
    }
    let etag = apim.etag("products/gold/policies/policy").unwrap();
    let deleted =
        send(plain::delete(&apim.arm_url("products/gold/policies/policy")).header("If-Match", &etag)).await;
    assert_status(&deleted, 200, "policy DELETE");
    assert_eq!(apim.policy("products/gold"), None);
    assert_status(&get(&apim, "products/gold/policies/policy").await, 404, "deleted policy");
}

#[tokio::test]
async fn products_links_subscriptions_and_operations_behave_like_the_service() {
    let apim = Apim::start().await;
    assert_status(&put(&apim, "apis/orders", &api_body("orders")).await, 201, "api");

    // Operations: the template's parameters must be defined, and vice versa.
    let op = |template: &str, params: Value| json!({ "properties": { "displayName": "op", "method": "GET", "urlTemplate": template, "templateParameters": params } });
    let missing = put(&apim, "apis/orders/operations/get-order", &op("/orders/{id}", json!([]))).await;
    assert_status(&missing, 400, "undefined template parameter");
    let unused = put(
        &apim,
        "apis/orders/operations/get-order",
        &op("/orders", json!([{ "name": "id", "type": "string", "required": true }])),
    )
    .await;
    assert_status(&unused, 400, "template parameter not in the template");
    assert_status(
        &put(&apim, "apis/orders/operations/x", &op("orders", json!([]))).await,
        400,
        "no leading /",
    );
    let ok = put(
        &apim,
        "apis/orders/operations/get-order",
        &op("/orders/{id}", json!([{ "name": "id", "type": "string", "required": true }])),
    )
    .await;
    assert_status(&ok, 201, "operation");
    assert_eq!(ok.json()["properties"]["responses"], json!([]));
    let dup = put(
        &apim,
        "apis/orders/operations/other",
        &op("/orders/{id}", json!([{ "name": "id", "type": "string", "required": true }])),
    )
    .await;
    assert_status(&dup, 400, "same method and template");
    let orphan = put(&apim, "apis/nothing/operations/x", &op("/", json!([]))).await;
    assert_status(&orphan, 404, "operation of no API");
    let ops = get(&apim, "apis/orders/operations").await.json();
    assert_eq!(ops["value"][0]["id"], json!(apim.resource_id("apis/orders/operations/get-order")));

    // Products and their APIs.
    let gold = put(&apim, "products/gold", &json!({ "properties": { "displayName": "Gold" } })).await;
    assert_status(&gold, 201, "product");
    assert_eq!(gold.json()["properties"]["state"], "notPublished");
    assert_eq!(gold.json()["properties"]["subscriptionRequired"], true);
    let bad = put(
        &apim,
        "products/free",
        &json!({ "properties": { "displayName": "Free", "subscriptionRequired": false, "approvalRequired": true } }),
    )
    .await;
    assert_status(&bad, 400, "approval without subscriptions");
    let link = send(plain::put(&apim.arm_url("products/gold/apis/orders"))).await;
    assert_status(&link, 201, "link");
    assert_eq!(link.json()["id"], json!(apim.resource_id("products/gold/apis/orders")));
    assert_eq!(link.json()["properties"]["path"], "orders");
    let listed = get(&apim, "products/gold/apis").await.json();
    assert_eq!(listed["value"].as_array().unwrap().len(), 1);
    assert_status(
        &send(plain::put(&apim.arm_url("products/gold/apis/nothing"))).await,
        404,
        "link to no API",
    );

    // Subscriptions: `submitted` by default, scope as a full id, keys only from listSecrets.
    let sub = put(
        &apim,
        "subscriptions/acme",
        &json!({ "properties": { "displayName": "acme", "scope": "/products/gold" } }),
    )
    .await;
    assert_status(&sub, 201, "subscription");
    let props = &sub.json()["properties"];
    assert_eq!(props["state"], "submitted");
    assert_eq!(props["scope"], json!(apim.resource_id("products/gold")));
    assert!(props.get("primaryKey").is_none() && props["createdDate"].is_string());
    let keyed = put(
        &apim,
        "subscriptions/acme2",
        &json!({ "properties": { "displayName": "acme2", "scope": apim.resource_id("products/gold"),
                 "state": "active", "primaryKey": "k1-0123456789", "secondaryKey": "k2-0123456789" } }),
    )
    .await;
    assert_eq!(keyed.json()["properties"]["state"], "active");
    let secrets = send(plain::post(&apim.arm_url("subscriptions/acme2/listSecrets"))).await;
    assert_status(&secrets, 200, "listSecrets");
    assert_eq!(secrets.json(), json!({ "primaryKey": "k1-0123456789", "secondaryKey": "k2-0123456789" }));
    let shown = format!("{:?}", apim.entity("subscriptions/acme2").unwrap());
    assert!(!shown.contains("k1-0123456789") && !shown.contains("k2-0123456789"), "{shown}");
    let generated = apim.secrets("acme").unwrap();
    assert_eq!(generated.0.len(), 32);
    let no_scope = put(
        &apim,
        "subscriptions/x",
        &json!({ "properties": { "displayName": "x", "scope": "/products/none" } }),
    )
    .await;
    assert_status(&no_scope, 400, "scope of no product");
    assert_eq!(get(&apim, "products/gold/subscriptions").await.json()["count"], 2);

    // A product with subscriptions goes only with deleteSubscriptions=true (and takes them).
    let etag = apim.etag("products/gold").unwrap();
    let refused = send(plain::delete(&apim.arm_url("products/gold")).header("If-Match", &etag)).await;
    assert_status(&refused, 400, "product with subscriptions");
    let deleted = send(
        plain::delete(&apim.arm_url("products/gold?deleteSubscriptions=true")).header("If-Match", &etag),
    )
    .await;
    assert_status(&deleted, 200, "product DELETE");
    assert!(apim.paths(Kind::Subscription).is_empty() && apim.paths(Kind::ProductApi).is_empty());

    // Deleting an API takes its operations and policies.
    apim.put_policy("apis/orders/operations/get-order", "<policies><inbound /></policies>");
    let etag = apim.etag("apis/orders").unwrap();
    assert_status(
        &send(plain::delete(&apim.arm_url("apis/orders")).header("If-Match", &etag)).await,
        204,
        "DELETE",
    );
    assert!(apim.entities().is_empty(), "{:?}", apim.entities());
}

#[tokio::test]
async fn out_of_band_changes_and_seeded_look_alikes() {
    let apim = Apim::start().await;
    apim.seed("apis/user-orders", json!({ "displayName": "User's", "path": "user/orders" }));
    apim.seed("products/user-gold", json!({ "displayName": "User's Gold" }));
    apim.put_policy("apis/user-orders", "<policies><inbound><base /></inbound></policies>");
    assert_eq!(apim.names(Kind::Api), ["user-orders"]);
    assert_eq!(apim.paths(Kind::ApiPolicy), ["apis/user-orders/policies/policy"]);
    let listed = get(&apim, "apis").await.json();
    assert_eq!(listed["value"][0]["properties"]["path"], "user/orders");

    let before = apim.etag("apis/user-orders").unwrap();
    let after = apim.patch("apis/user-orders", json!({ "serviceUrl": "http://drifted.example" }));
    assert_ne!(before, after);
    assert_eq!(apim.properties("apis/user-orders").unwrap()["serviceUrl"], "http://drifted.example");
    apim.mutate("products/user-gold", |p| p["state"] = json!("published"));
    assert_eq!(get(&apim, "products/user-gold").await.json()["properties"]["state"], "published");
    assert!(apim.remove("products/user-gold"));
    assert!(!apim.remove("products/user-gold"));
    assert_eq!(apim.seen().len(), 2, "out-of-band changes are not requests: {}", apim.log());
    // Only the two GETs above reached the fake: nothing counts as a write.
    assert_eq!(apim.writes(), 0);
    apim.reset();
    assert!(apim.entities().is_empty() && apim.seen().is_empty());
}

#[tokio::test]
async fn each_fake_service_is_isolated_from_the_others() {
    let (a, b) = (Apim::start().await, Apim::start().await);
    assert_ne!(a.subscription_id(), b.subscription_id());
    assert_eq!(a.url(), b.url(), "one front per process");
    assert_status(&put(&a, "apis/orders", &api_body("orders")).await, 201, "a");
    assert_status(&put(&b, "apis/orders", &api_body("orders")).await, 201, "b: same name, other service");
    a.add(Rule::always(Fault::Throttle));
    assert_status(&get(&b, "apis/orders").await, 200, "b is not throttled");
    assert_eq!((a.count(), b.count()), (1, 2));
    // Another service's URL with this one's token: the fake has no such service once dropped.
    let url = b.arm_url("apis");
    drop(b);
    let gone = send(plain::get(&url)).await;
    assert_status(&gone, 404, "dropped service");
    assert_eq!(gone.error_code().as_deref(), Some("SubscriptionNotFound"));
}

#[test]
fn policy_documents_parse_and_serialise_as_the_service_does() {
    use policy_xml::{parse_policy, serialize};
    let doc = parse_policy("<?xml version=\"1.0\"?><policies><inbound><a x='1' y=\"&lt;&#65;&apos;\">t<b/>u</a></inbound><!--c--></policies>", Format::Xml).unwrap();
    assert_eq!(
        serialize(&doc, Format::Xml),
        "<policies>\r\n\t<inbound>\r\n\t\t<a x=\"1\" y=\"&lt;A'\">t<b />u</a>\r\n\t</inbound>\r\n\t<!--c-->\r\n</policies>"
    );
    // Re-serialising is stable.
    let again = parse_policy(&serialize(&doc, Format::Xml), Format::Xml).unwrap();
    assert_eq!(serialize(&again, Format::Xml), serialize(&doc, Format::Xml));
    // CDATA kept; duplicate attributes, duplicate sections, mismatched tags refused.
    let cdata =
        parse_policy("<policies><inbound><x><![CDATA[a<b]]></x></inbound></policies>", Format::Xml).unwrap();
    assert!(serialize(&cdata, Format::Xml).contains("<x><![CDATA[a<b]]></x>"));
    assert!(parse_policy("<policies><inbound a='1' a='2' /></policies>", Format::Xml).is_err());
    assert!(parse_policy("<policies><inbound /><inbound /></policies>", Format::Xml).is_err());
    assert!(parse_policy("<policies><inbound></outbound></policies>", Format::Xml).is_err());
    assert!(parse_policy("<policies><inbound x=\"@(a < b)\" /></policies>", Format::Xml).is_err());
    assert!(parse_policy("<policies><inbound x=\"@(a < b)\" /></policies>", Format::RawXml).is_ok());
    assert!(parse_policy("<policies><inbound x=\"@(\"unterminated)\" /></policies>", Format::RawXml).is_err());
}

#[tokio::test]
async fn head_answers_have_no_body_and_their_refusals_are_recorded_too() {
    let apim = Apim::start().await;
    apim.seed("apis/orders", json!({ "displayName": "Orders", "path": "orders" }));
    apim.seed("products/gold", json!({ "displayName": "Gold" }));
    let head = |rel: &str| send(plain::call("HEAD", &apim.arm_url(rel)));
    let found = head("apis/orders").await;
    assert_status(&found, 200, "HEAD");
    assert_eq!(found.etag(), apim.etag("apis/orders").as_deref());
    assert_status(&head("apis/none").await, 404, "HEAD of nothing");
    assert_status(&head("products/gold/apis/orders").await, 404, "HEAD of no link");
    apim.put("products/gold/apis/orders", json!({}));
    assert_status(&head("products/gold/apis/orders").await, 204, "HEAD of a link");
    apim.assert_no_refusals();

    // Prism's refusal of a HEAD has no body: recorded all the same.
    apim.expect_refusals();
    let url = format!("{}{}/apis/orders", apim.url(), apim.service_id());
    assert_status(&send(plain::call("HEAD", &url)).await, 422, "HEAD without api-version");
    let refused = apim.refusals();
    assert_eq!(refused.len(), 1, "{}", apim.log());
    assert_eq!(refused[0].refusal.as_ref().unwrap().kind, "UNPROCESSABLE_ENTITY");
}

#[tokio::test]
async fn every_endpoint_of_the_fake_answers_within_the_description() {
    let apim = Apim::start().await;
    let policy = json!({ "properties": { "format": "rawxml", "value": "<policies><inbound><base /></inbound></policies>" } });
    let writes: Vec<(&str, &str, Value)> = vec![
        ("PUT", "apis/orders", api_body("orders")),
        (
            "PUT",
            "apis/orders/operations/get",
            json!({ "properties": {
            "displayName": "Get", "method": "GET", "urlTemplate": "/orders/{id}",
            "templateParameters": [{ "name": "id", "type": "string", "required": true }],
            "request": { "queryParameters": [{ "name": "q", "type": "string" }] },
            "responses": [{ "statusCode": 200, "description": "ok" }] } }),
        ),
        ("PUT", "apis/orders/policies/policy", policy.clone()),
        ("PUT", "apis/orders/operations/get/policies/policy", policy.clone()),
        (
            "PUT",
            "backends/pool-a",
            json!({ "properties": {
            "url": "http://10.0.0.1:8080", "protocol": "http", "description": "a",
            "tls": { "validateCertificateChain": true, "validateCertificateName": true },
            "credentials": { "header": { "x-key": ["v"] } } } }),
        ),
        (
            "PUT",
            "products/gold",
            json!({ "properties": {
            "displayName": "Gold", "description": "d", "subscriptionRequired": true, "approvalRequired": false,
            "subscriptionsLimit": 5, "state": "published" } }),
        ),
        ("PUT", "products/gold/apis/orders", Value::Null),
        ("PUT", "products/gold/policies/policy", policy.clone()),
        (
            "PUT",
            "subscriptions/acme",
            json!({ "properties": {
            "displayName": "acme", "scope": "/products/gold", "ownerId": "/users/1", "state": "active",
            "allowTracing": false } }),
        ),
        ("POST", "subscriptions/acme/listSecrets", Value::Null),
        ("PATCH", "apis/orders", json!({ "properties": { "description": "patched" } })),
        ("PATCH", "apis/orders/operations/get", json!({ "properties": { "description": "patched" } })),
        ("PATCH", "backends/pool-a", json!({ "properties": { "description": "patched" } })),
        ("PATCH", "products/gold", json!({ "properties": { "description": "patched" } })),
        (
            "PATCH",
            "subscriptions/acme",
            json!({ "properties": { "state": "suspended", "stateComment": "s" } }),
        ),
    ];
    for (method, rel, body) in writes {
        let mut call = plain::call(method, &apim.arm_url(rel));
        if !body.is_null() {
            call = call.json(&body);
        }
        if method == "PATCH" {
            call = call.header("If-Match", "*");
        }
        let reply = send(call).await;
        assert!(reply.status.is_success(), "{method} {rel}: {} {}", reply.status, reply.text());
    }
    for rel in [
        "apis",
        "apis/orders",
        "apis/orders/operations",
        "apis/orders/operations/get",
        "apis/orders/policies",
        "apis/orders/policies/policy",
        "apis/orders/policies/policy?format=rawxml",
        "apis/orders/operations/get/policies",
        "apis/orders/operations/get/policies/policy",
        "apis/orders/products",
        "backends",
        "backends/pool-a",
        "products",
        "products/gold",
        "products/gold/apis",
        "products/gold/policies",
        "products/gold/policies/policy",
        "products/gold/subscriptions",
        "subscriptions",
        "subscriptions/acme",
    ] {
        let reply = get(&apim, rel).await;
        assert_status(&reply, 200, rel);
    }
    assert_eq!(get(&apim, "apis/orders/products").await.json()["value"][0]["name"], "gold");
    assert_eq!(get(&apim, "subscriptions/acme").await.json()["properties"]["state"], "suspended");
    for rel in [
        "subscriptions/acme",
        "products/gold/policies/policy",
        "products/gold/apis/orders",
        "apis/orders/operations/get/policies/policy",
        "apis/orders/policies/policy",
        "apis/orders/operations/get",
        "backends/pool-a",
        "products/gold",
        "apis/orders",
    ] {
        let mut call = plain::delete(&apim.arm_url(rel));
        if !rel.contains("/apis/orders") || rel.starts_with("apis") {
            call = call.header("If-Match", "*");
        }
        let reply = send(call).await;
        assert!(reply.status.is_success(), "DELETE {rel}: {} {}", reply.status, reply.text());
    }
    assert!(apim.entities().is_empty(), "{:?}", apim.entities());
    // Dropping `apim` asserts that Prism found nothing wrong with any request or answer.
}
