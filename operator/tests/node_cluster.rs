//! The user's first hour, on a real one-node cluster (`scripts/node`: kubelet, kube-proxy and
//! scheduler beside the control plane, containerd running the pods): the chart installed with
//! helm, the operator and the proxies running as pods of the tollbridge image, examples/kind and
//! the cluster variant of examples/api-keys-and-quotas applied as their READMEs say, and
//! requests sent from this machine to the Gateway's address (its Service's cluster IP, which
//! kube-proxy routes on this machine).
//!
//! Nothing here marks a pod Ready or stands in for the kubelet. Every wait is bounded; every
//! load loop is bounded in time and count.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::client::Client;
use support::cluster::{repo_root, Cluster};
use support::doc_commands::DocPage;
use support::eventually;
use support::helm::helm_ok;

const RELEASE_NAMESPACE: &str = "tollbridge-system";
/// How long pods, statuses and rollouts get to converge.
const CONVERGE: Duration = Duration::from_secs(180);

fn example(path: &str) -> String {
    repo_root().join("examples").join(path).display().to_string()
}

fn get_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let text = cluster.kubectl_ok(&all, None);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl get {args:?}: {e}"))
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// The uids of what the operator made for Gateway `web` and the key it generated, by kind/name.
fn generated(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let list =
        get_json(cluster, &["deploy,svc,secret,sa,role,rolebinding", "-l", "tollbridge.dev/gateway=web"]);
    for item in list["items"].as_array().into_iter().flatten() {
        let key =
            format!("{}/{}", item["kind"].as_str().unwrap(), item["metadata"]["name"].as_str().unwrap());
        out.insert(key, item["metadata"]["uid"].as_str().unwrap().to_string());
    }
    let key = get_json(cluster, &["secret", "globex-api-key"]);
    out.insert("Secret/globex-api-key".into(), key["metadata"]["uid"].as_str().unwrap().to_string());
    out
}

/// The gzipped YAML in a proxy's config Secret, unzipped.
fn config_yaml(secret: &Value) -> Vec<u8> {
    use std::io::Read;
    let data = secret["data"]["config.yaml.gz"].as_str().unwrap_or_default();
    let gz = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).unwrap_or_default();
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out);
    out
}

/// The holder of the operator's Lease.
fn leader(cluster: &Cluster) -> String {
    let lease = get_json(cluster, &["-n", RELEASE_NAMESPACE, "lease", "tollbridge-operator"]);
    lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string()
}

/// Sends GETs to `url` from `workers` tasks until `stop` (or 60 s, or 20,000 requests):
/// returns (requests, failures, a few failure descriptions).
async fn load(
    client: &Client,
    url: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (usize, usize, Vec<String>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, url, stop, sent) = (client.clone(), url.to_string(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && sent.fetch_add(1, Ordering::Relaxed) < 20_000
            {
                match client.try_get(&url, &[]).await {
                    Ok(resp) if resp.status == 200 => {}
                    Ok(resp) => failures.push(format!("{} {}", resp.status, resp.text())),
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.expect("load task"));
    }
    let count = failures.len();
    failures.truncate(5);
    (sent.load(Ordering::Relaxed).min(20_000), count, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_example_on_a_real_node() {
    let cluster = Cluster::node();
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let client = Client::new();

    // examples/kind/README.md's commands, as written; only what needs kind or the internet is
    // replaced: the Gateway API CRDs come from the module the control plane installed them
    // from, the port-forward gets a free port, the NodePort is read from this node.
    let crds = cluster.env_value("TOLLBRIDGE_GATEWAY_CRDS");
    let gateway_api = std::path::Path::new(&crds)
        .parent()
        .and_then(|dir| dir.file_name()?.to_str()?.strip_prefix("gateway-api-"))
        .unwrap_or_else(|| panic!("no Gateway API version in {crds}"))
        .to_string();
    let forward_port = support::process::free_port().to_string();
    let kind = DocPage::read("examples/kind/README.md")
        .replace(gateway_api_url(&gateway_api), &crds)
        .replace("8080:80", format!("{forward_port}:80"))
        .replace("localhost:8080", format!("localhost:{forward_port}"))
        .replace("tollbridge-control-plane", cluster.env_value("TOLLBRIDGE_NODE_NAME"))
        .skip("kind ");

    // 1. The operator, as the page installs it; then upgraded as docs/upgrading.md does it,
    //    with values that make two replicas (leader election on) of the image already on the
    //    node (never pulled).
    kind.run_section("## 2.", cluster);
    let values = tempfile::Builder::new().prefix("my-values-").suffix(".yaml").tempfile().unwrap();
    std::fs::write(values.path(), "replicaCount: 2\nimage:\n  pullPolicy: Never\n").unwrap();
    DocPage::read("docs/upgrading.md")
        .replace(gateway_api_url(&gateway_api), crds)
        .replace("my-values.yaml", values.path().display().to_string())
        .skip("tollbridge check -f my-manifests/")
        .run_section("## Order: CRDs first", cluster);
    eventually("two ready operator pods, the old one gone", CONVERGE, || async {
        let pods =
            get_json(cluster, &["-n", RELEASE_NAMESPACE, "pods", "-l", "app.kubernetes.io/name=tollbridge"]);
        let pods = pods["items"].as_array().cloned().unwrap_or_default();
        pods.len() == 2
            && pods.iter().all(|pod| {
                pod["metadata"].get("deletionTimestamp").is_none()
                    && condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
            })
    })
    .await;
    let pods =
        get_json(cluster, &["-n", RELEASE_NAMESPACE, "pods", "-l", "app.kubernetes.io/name=tollbridge"]);
    for pod in pods["items"].as_array().unwrap() {
        assert_eq!(pod["spec"]["serviceAccountName"], "tollbridge");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never", "{pod:#}");
    }

    // 2. examples/kind: check, then apply; the statuses, as the page reads them.
    kind.run_section("## 3.", cluster);
    kind.run_section("## 4.", cluster);
    // The first look docs/troubleshooting.md asks for, on these objects.
    let looked = DocPage::read("docs/troubleshooting.md")
        .replace("describe gateway NAME", "describe gateway web")
        .replace("describe httproute NAME", "describe httproute echo")
        .replace("involvedObject.name=NAME", "involvedObject.name=web")
        .run_section("# Troubleshooting", cluster);
    assert!(looked.contains("tollbridge-kind") && looked.contains("Programmed"), "{looked}");
    let class = get_json(cluster, &["gatewayclass", "tollbridge-kind"]);
    assert_eq!(condition(&class, "Accepted").unwrap()["status"], "True");
    let route = get_json(cluster, &["httproute", "echo"]);
    let parent = &route["status"]["parents"][0];
    for type_ in ["Accepted", "ResolvedRefs"] {
        let c = parent["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap();
        assert_eq!(c["status"], "True", "{type_}: {c}");
    }

    // One address per Gateway, reachable from this machine.
    let gateway = get_json(cluster, &["gateway", "web"]);
    let addresses = gateway["status"]["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert_eq!(addresses[0]["type"], "IPAddress");
    let address = addresses[0]["value"].as_str().unwrap().to_string();
    let base = format!("http://{address}");
    // Programmed waits for a ready proxy endpoint; kube-proxy writes its rules a moment later,
    // and the example's backend pod may still be starting (the proxy answers 503 until its
    // endpoints are ready).
    eventually("the route to answer through the Gateway's address", Duration::from_secs(60), || async {
        client.try_get(&format!("{base}/echo/hello"), &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let resp = client.get(&format!("{base}/echo/hello"), &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!((body["backend"].as_str(), body["path"].as_str()), (Some("echo"), Some("/hello")));
    assert_eq!(resp.header("x-served-by"), Some("tollbridge-kind"));
    assert_eq!(client.get(&format!("{base}/elsewhere"), &[]).await.status, 404);
    // The page's own requests: through a port-forward and through the NodePort.
    let answers = kind.run_section("## 5.", cluster);
    assert_eq!(answers.matches("x-served-by: tollbridge-kind").count(), 2, "{answers}");
    assert!(answers.contains("\"path\":\"/hello\""), "{answers}");

    // The proxy pod's logs and exec, through the API server and the kubelet.
    let logs = cluster.kubectl_ok(&["logs", "deploy/tollbridge-web"], None);
    assert!(logs.contains("admin endpoint listening"), "{logs}");
    let version =
        cluster.kubectl_ok(&["exec", "deploy/tollbridge-web", "--", "/tollbridge", "version"], None);
    assert!(version.starts_with("tollbridge "), "{version}");
    // On the pod's address the admin port answers probes and metrics, not the configuration.
    let pods = get_json(cluster, &["pods", "-l", "tollbridge.dev/gateway=web"]);
    let pod_ip = pods["items"][0]["status"]["podIP"].as_str().unwrap().to_string();
    let admin = format!("http://{pod_ip}:19001");
    assert_eq!(client.get(&format!("{admin}/readyz"), &[]).await.status, 200);
    assert_eq!(client.get(&format!("{admin}/metrics"), &[]).await.status, 200);
    for debug in ["/config", "/status"] {
        assert_eq!(client.get(&format!("{admin}{debug}"), &[]).await.status, 403, "{debug}");
    }

    // 3. API keys and a rate limit: examples/api-keys-and-quotas/README.md's cluster commands
    //    (check, apply, wait, read the generated key).
    DocPage::read("examples/api-keys-and-quotas/README.md").run_section("## In a cluster", cluster);
    // The proxy's config Secret knows the keys by their hashes only.
    eventually("the keys in the proxy's config", CONVERGE, || async {
        let config = get_json(cluster, &["secret", "tollbridge-web-config"]);
        let text = String::from_utf8_lossy(&config_yaml(&config)).to_string();
        text.contains("api-key.sha256") && !text.contains("acme-example-key-change-me")
    })
    .await;
    let globex = get_json(cluster, &["secret", "globex-api-key"]);
    let globex_key = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            globex["data"]["api-key"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let orders = format!("{base}/orders/1");
    eventually("the orders route to ask for a key", CONVERGE, || async {
        client.try_get(&orders, &[]).await.is_ok_and(|r| r.status == 401)
    })
    .await;
    let acme = [("x-api-key", "acme-example-key-change-me")];
    let resp = client.get(&orders, &acme).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let headers = &resp.json()["headers"];
    assert_eq!(headers["x-tollbridge-consumer"], "Acme Corp");
    assert!(headers.get("x-api-key").is_none(), "the key reached the backend: {headers}");
    assert_eq!(client.get(&orders, &[("x-api-key", &globex_key)]).await.status, 200);
    assert_eq!(client.get(&format!("{base}/catalog/1"), &acme).await.status, 403);
    // 2 a second with bursts of 5: a quick run of 10 is cut off, with the headers that say so.
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let resp = client.get(&orders, &[("x-api-key", &globex_key)]).await;
        statuses.push(resp.status.as_u16());
        if resp.status == 429 {
            limited = Some(resp);
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    assert!(statuses.iter().filter(|s| **s == 200).count() >= 3, "{statuses:?}");
    assert!(limited.header("retry-after").is_some(), "{:?}", limited.headers);
    assert!(limited.header("ratelimit-policy").is_some(), "{:?}", limited.headers);

    // 4. Two proxy replicas.
    cluster.kubectl_ok(
        &[
            "patch",
            "providerconfig",
            "kind-local",
            "--type=merge",
            "-p",
            r#"{"spec":{"local":{"replicas":2}}}"#,
        ],
        None,
    );
    eventually("two available proxy replicas behind the Service", CONVERGE, || async {
        let deploy = get_json(cluster, &["deploy", "tollbridge-web"]);
        let slices =
            get_json(cluster, &["endpointslices", "-l", "kubernetes.io/service-name=tollbridge-web"]);
        let ready = slices["items"][0]["endpoints"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["conditions"]["ready"] == true).count());
        deploy["status"]["availableReplicas"] == 2 && ready == 2
    })
    .await;

    // 5. A route change under load: seen by clients, and not one request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (client, url, stop) = (client.clone(), format!("{base}/echo/load"), stop.clone());
        tokio::spawn(async move { load(&client, &url, 4, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changed = std::fs::read_to_string(repo_root().join("examples/kind/httproute.yaml"))
        .unwrap()
        .replace("value: tollbridge-kind}", "value: tollbridge-kind-v2}");
    assert!(changed.contains("tollbridge-kind-v2"), "the example's route changed shape");
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&changed));
    eventually("the changed route to answer", CONVERGE, || async {
        let resp = client.try_get(&format!("{base}/echo/x"), &[]).await;
        resp.is_ok_and(|r| r.header("x-served-by") == Some("tollbridge-kind-v2"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed, examples) = loader.await.expect("load");
    eprintln!("[node] route change under load: {sent} requests, {failed} failed");
    assert!(sent > 100, "only {sent} requests were sent");
    assert_eq!(failed, 0, "failed requests during the route change: {examples:?}");

    // 6. The leader's pod deleted: the other replica takes over, nothing is made again.
    let before = generated(cluster);
    let old_leader = leader(cluster);
    assert!(!old_leader.is_empty(), "no operator holds the Lease");
    cluster.kubectl_ok(&["-n", RELEASE_NAMESPACE, "delete", "pod", &old_leader, "--wait=false"], None);
    eventually("another operator replica to lead", CONVERGE, || async {
        let now = leader(cluster);
        !now.is_empty() && now != old_leader
    })
    .await;
    // The new leader works (a change is applied) and made nothing twice.
    cluster.kubectl_ok(&["apply", "-f", &example("kind/httproute.yaml")], None);
    eventually("the new leader to apply a change", CONVERGE, || async {
        let resp = client.try_get(&format!("{base}/echo/x"), &[]).await;
        resp.is_ok_and(|r| r.header("x-served-by") == Some("tollbridge-kind"))
    })
    .await;
    assert_eq!(generated(cluster), before, "objects were re-created after the failover");

    // 7. The Gateway deleted: everything made for it goes.
    cluster.kubectl_ok(&["delete", "-f", &example("api-keys-and-quotas/cluster"), "--wait=true"], None);
    kind.run_section("## Clean up", cluster);
    eventually("every object made for the Gateway to be gone", CONVERGE, || async {
        let left = get_json(
            cluster,
            &["deploy,rs,pod,svc,secret,sa,role,rolebinding", "-l", "tollbridge.dev/gateway=web"],
        );
        let key = cluster.kubectl(&["get", "secret", "globex-api-key"], None);
        left["items"].as_array().is_some_and(Vec::is_empty) && !key.status.success()
    })
    .await;

    let releases = helm_ok(&["list", "-A", "-q", "--kubeconfig", &kubeconfig]);
    assert!(releases.trim().is_empty(), "the page's clean-up left a release: {releases}");
}

/// Where the Gateway API's pages tell users to get the standard CRDs of `version`.
fn gateway_api_url(version: &str) -> String {
    format!(
        "https://github.com/kubernetes-sigs/gateway-api/releases/download/{version}/standard-install.yaml"
    )
}
