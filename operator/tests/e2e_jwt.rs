//! End-to-end tests of JSON Web Token policies in `tollbridge run`, on real sockets: an HTTPS
//! OpenID Connect issuer on 127.0.0.1 whose key set the test rotates and takes down, tokens
//! signed by keys the test makes, and the echo backend showing what was forwarded.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use support::client::{Client, Resp};
use support::eventually;
use support::jwt::{key_set, now, served_key_set, Issuer, SigningKey};
use support::process::{free_port, ConfigDir, Tollbridge};
use support::yaml::{self, docs};

async fn echo() -> SocketAddr {
    tollbridge_local::echo::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), "echo")
        .await
        .expect("start echo backend")
}

fn echoed_header(resp: &Resp, name: &str) -> Option<String> {
    resp.json()["headers"][name].as_str().map(str::to_string)
}

/// Two routes: `/orders` guarded by the issuer's discovered keys (scope `orders.read` required,
/// 2 requests a minute per consumer), `/inline` by an inline Ed25519 key.
fn setup(port: u16, backend: SocketAddr, issuer: &Issuer, inline: &SigningKey) -> ConfigDir {
    let dir = ConfigDir::new();
    dir.write("gateway.yaml", &yaml::simple_gateway(port));
    dir.write("backends.yaml", &yaml::backend("echo", backend));
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("orders", None, &[], &yaml::prefix_rule("/orders", "echo")),
            yaml::route("inline", None, &[], &yaml::prefix_rule("/inline", "echo")),
        ]),
    );
    let discovered = format!(
        "  jwt:\n    issuer: {}\n    audiences: [orders]\n    jwks: {{openIDDiscovery: true}}\n    \
         requiredClaims: [{{name: scope, values: [orders.read]}}]\n  rateLimit: {{requests: 2, unit: Minute}}\n",
        issuer.url
    );
    let inline_set = serde_json::to_string(&key_set(&[inline])).expect("JSON string");
    let inlined = format!(
        "  jwt:\n    issuer: {}\n    jwks: {{inline: {inline_set}}}\n    consumerClaim: client_id\n    \
         forwardToken: true\n    forwardConsumerHeader: x-client\n",
        issuer.url
    );
    dir.write(
        "policies.yaml",
        &docs(&[
            yaml::quota_policy("orders", "orders", &discovered),
            yaml::quota_policy("inline", "inline", &inlined),
        ]),
    );
    dir.write("issuer-ca.pem", &issuer.cert.cert_pem);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_against_discovered_keys_that_rotate_and_survive_an_outage() {
    let (first, second, inline) = (SigningKey::ec("k1"), SigningKey::ec("k2"), SigningKey::ed25519("i1"));
    let issuer = Issuer::start(&[&first]).await;
    let port = free_port();
    let dir = setup(port, echo().await, &issuer, &inline);
    let ca = dir.root().join("config/issuer-ca.pem");
    let tollbridge =
        Tollbridge::start_with_env(&dir, &[], &[("SSL_CERT_FILE", ca.to_str().expect("UTF-8 path"))]).await;
    let client = Client::new();
    let orders = format!("http://127.0.0.1:{port}/orders");
    let bearer = |token: String| format!("Bearer {token}");
    let mut claims = issuer.claims("orders", "acme");
    claims["scope"] = json!("orders.read orders.write");
    let acme = bearer(first.sign(&claims));

    // The keys arrive from the issuer in the background.
    eventually("the issuer's keys to be fetched", Duration::from_secs(10), || async {
        client.get(&orders, &[("authorization", &acme)]).await.status == StatusCode::OK
    })
    .await;

    // The token is not forwarded; the consumer is, replacing what the client sent.
    let resp = client.get(&orders, &[("authorization", &acme), ("x-tollbridge-consumer", "mallory")]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(echoed_header(&resp, "authorization"), None, "token forwarded upstream");
    assert_eq!(echoed_header(&resp, "x-tollbridge-consumer").as_deref(), Some("acme"));
    // Two a minute per consumer: acme is out, globex is not.
    let refused = client.get(&orders, &[("authorization", &acme)]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text());
    let mut globex = issuer.claims("orders", "globex");
    globex["scope"] = json!(["orders.read"]);
    let globex = bearer(first.sign(&globex));
    assert_eq!(client.get(&orders, &[("authorization", &globex)]).await.status, StatusCode::OK);

    // Refusals: 401 with a Bearer challenge, 403 for a missing scope; nothing is echoed back.
    let mut expired = issuer.claims("orders", "acme");
    expired["scope"] = json!("orders.read");
    expired["exp"] = json!(now() - 600);
    let mut unscoped = issuer.claims("orders", "acme");
    unscoped["scope"] = json!("orders.write");
    let mut foreign = issuer.claims("orders", "acme");
    foreign["iss"] = json!("https://evil.test");
    foreign["scope"] = json!("orders.read");
    let cases = [
        (None, 401, "missing_token"),
        (Some(bearer(first.sign(&expired))), 401, "invalid_token"),
        (Some(bearer(first.sign(&foreign))), 401, "invalid_token"),
        (Some(bearer(SigningKey::ec("k1").sign(&claims))), 401, "invalid_token"),
        (Some(bearer(inline.sign(&claims))), 401, "invalid_token"),
        (Some(bearer(first.sign(&unscoped))), 403, "insufficient_claims"),
    ];
    for (token, status, error) in cases {
        let headers: Vec<(&str, &str)> = token.as_deref().map(|t| ("authorization", t)).into_iter().collect();
        let resp = client.get(&orders, &headers).await;
        assert_eq!(resp.status.as_u16(), status, "{error}: {}", resp.text());
        assert_eq!(resp.json()["error"], error);
        let challenge = resp.header("www-authenticate").expect("a Bearer challenge").to_string();
        assert!(challenge.starts_with("Bearer realm=\"tollbridge\""), "{challenge}");
        assert!(token.is_none_or(|t| !resp.text().contains(&t[7..])), "the token is echoed");
    }

    // Rotation: the issuer now signs with k2 only. A token naming k2 makes the proxy fetch the
    // set again (no restart); k1 is gone from it, so its tokens stop working.
    let served = issuer.key_sets_served();
    issuer.serve(Some(served_key_set(&[&second])));
    let mut initech = issuer.claims("orders", "initech");
    initech["scope"] = json!("orders.read");
    let rotated = bearer(second.sign(&initech));
    eventually("a token of the new key to be accepted", Duration::from_secs(15), || async {
        client.get(&orders, &[("authorization", &rotated)]).await.status == StatusCode::OK
    })
    .await;
    assert!(issuer.key_sets_served() > served, "the set was not fetched again");
    assert_eq!(client.get(&orders, &[("authorization", &globex)]).await.status, StatusCode::UNAUTHORIZED);

    // The key set endpoint goes down: the last good keys keep working, and asking for an
    // unknown key does not hang requests.
    issuer.serve(None);
    let unknown = bearer(SigningKey::ec("k9").sign(&initech));
    assert_eq!(client.get(&orders, &[("authorization", &unknown)]).await.status, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.get(&orders, &[("authorization", &rotated)]).await.status, StatusCode::OK);

    // The inline key: its own consumer claim and header, and the token forwarded as asked.
    let inline_token = bearer(inline.sign(&json!({
        "iss": issuer.url, "client_id": "batch-job", "exp": now() + 600
    })));
    let resp =
        client.get(&format!("http://127.0.0.1:{port}/inline"), &[("authorization", &inline_token)]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(echoed_header(&resp, "x-client").as_deref(), Some("batch-job"));
    assert_eq!(echoed_header(&resp, "authorization").as_deref(), Some(inline_token.as_str()));

    // Per-consumer metrics name the token consumers; fetches are counted, the outage's too.
    let discovery = format!("{}/.well-known/openid-configuration", issuer.url);
    let fetches = |outcome: &str| {
        format!(r#"tollbridge_jwt_key_set_fetches_total{{location="{discovery}",outcome="{outcome}"}}"#)
    };
    // An unknown key asks for the set again (at most every 10 s); the issuer is down.
    eventually("the failed fetch to be counted", Duration::from_secs(20), || async {
        client.get(&orders, &[("authorization", &unknown)]).await;
        tollbridge.admin_get("/metrics").await.text().contains(&fetches("failed"))
    })
    .await;
    let metrics = tollbridge.admin_get("/metrics").await.text();
    assert!(metrics.contains(&fetches("fetched")), "{metrics}");
    let series = r#"tollbridge_consumer_requests_total{gateway="default/gw",policy="default/orders",consumer="acme",outcome="rate_limited"} 1"#;
    assert!(metrics.contains(series), "{metrics}");

    // A reload (another route) keeps the token consumers' series and their counts.
    dir.write(
        "routes.yaml",
        &docs(&[
            yaml::route("orders", None, &[], &yaml::prefix_rule("/orders", "echo")),
            yaml::route("inline", None, &[], &yaml::prefix_rule("/inline", "echo")),
            yaml::route("more", None, &[], &yaml::prefix_rule("/more", "echo")),
        ]),
    );
    eventually("the reload to serve /more", Duration::from_secs(10), || async {
        client.try_get(&format!("http://127.0.0.1:{port}/more"), &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let metrics = tollbridge.admin_get("/metrics").await.text();
    assert!(metrics.contains(series), "a token consumer's series was dropped on reload:\n{metrics}");
    assert!(!tollbridge.log().contains(&acme[7..]), "a token reached the log");
}
