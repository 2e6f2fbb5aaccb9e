//! `tollbridge plan` and `tollbridge apply` from YAML files against moto's server: the plan
//! lists the changes without making them, apply makes them, and a second plan is empty.

mod support;

use std::process::Command;

use support::moto::MotoServer;

fn files(url: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    let yaml = format!(
        r#"apiVersion: tollbridge.dev/v1alpha1
kind: ProviderConfig
metadata: {{name: aws}}
spec:
  provider: AWS
  aws: {{region: us-east-1, apiType: HTTP, endpointURL: "{url}"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: aws}}
spec:
  controllerName: tollbridge.dev/gateway-controller
  parametersRef: {{group: tollbridge.dev, kind: ProviderConfig, name: aws}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: cli-shop, namespace: ci}}
spec:
  gatewayClassName: aws
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: orders, namespace: ci}}
spec: {{type: ExternalName, externalName: orders.example.com, ports: [{{port: 443, name: https}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: orders, namespace: ci}}
spec:
  parentRefs: [{{name: cli-shop}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /orders}}}}]
    backendRefs: [{{name: orders, port: 443}}]
"#
    );
    std::fs::write(&path, yaml).expect("write gateway.yaml");
    path
}

fn tollbridge(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollbridge"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run tollbridge");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn plan_shows_apply_makes_and_then_nothing_is_left_to_do() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = files(&moto.url, dir.path());
    let path = yaml.to_str().unwrap();
    let cluster_id = format!("cli-test-{}", std::process::id());

    let (ok, plan) = tollbridge(&["plan", "-f", path, "--provider", "aws", "--cluster-id", &cluster_id]);
    assert!(ok, "{plan}");
    assert!(plan.contains(&format!("owner {cluster_id}/ci/cli-shop")), "{plan}");
    assert!(plan.contains("+ create route ANY /orders/{proxy+}"), "{plan}");
    assert!(plan.contains("5 to create, 0 to update, 0 to delete"), "{plan}");

    let (ok, again) = tollbridge(&["plan", "-f", path, "--cluster-id", &cluster_id]);
    assert!(ok && again.contains("5 to create"), "plan changes nothing: {again}");

    let (ok, applied) = tollbridge(&["apply", "-f", path, "--cluster-id", &cluster_id]);
    assert!(ok && applied.contains("applied; addresses: "), "{applied}");
    let (ok, after) = tollbridge(&["plan", "-f", path, "--cluster-id", &cluster_id]);
    assert!(ok && after.contains("0 to create, 0 to update, 0 to delete"), "{after}");

    let (ok, azure) = tollbridge(&["plan", "-f", path, "--provider", "azure", "--cluster-id", &cluster_id]);
    assert!(!ok && azure.contains("no cloud Gateway"), "{azure}");
}
