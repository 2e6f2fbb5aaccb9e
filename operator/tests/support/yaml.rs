//! Builders for the Kubernetes objects the tests serve. Objects are in namespace `default`.

use std::net::SocketAddr;

/// The GatewayClass `tollbridge` of the local provider.
pub fn gateway_class() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: tollbridge\nspec:\n  \
     controllerName: tollbridge.dev/gateway-controller\n"
        .to_string()
}

/// A Gateway of class `tollbridge`; `listeners` is a YAML list indented by two spaces, as
/// built by [`http_listener`] and [`https_listener`].
pub fn gateway(name: &str, listeners: &[String]) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  \
         gatewayClassName: tollbridge\n  listeners:\n{}",
        listeners.concat()
    )
}

/// An HTTP listener, optionally with a hostname.
pub fn http_listener(name: &str, port: u16, hostname: Option<&str>) -> String {
    let hostname = hostname.map(|h| format!("    hostname: \"{h}\"\n")).unwrap_or_default();
    format!("  - name: {name}\n    protocol: HTTP\n    port: {port}\n{hostname}")
}

/// An HTTPS listener terminating TLS with the certificate in Secret `secret`.
pub fn https_listener(name: &str, port: u16, hostname: &str, secret: &str) -> String {
    format!(
        "  - name: {name}\n    protocol: HTTPS\n    port: {port}\n    hostname: \"{hostname}\"\n    tls:\n      \
         mode: Terminate\n      certificateRefs:\n      - name: {secret}\n"
    )
}

/// The GatewayClass and one Gateway `gw` with one HTTP listener `http` on `port`.
pub fn simple_gateway(port: u16) -> String {
    docs(&[gateway_class(), gateway("gw", &[http_listener("http", port, None)])])
}

/// Service `name` (port 80, named http) and an EndpointSlice sending it to `addr`.
pub fn backend(name: &str, addr: SocketAddr) -> String {
    docs(&[service(name), endpoint_slice(name, addr)])
}

/// Service `name` with port 80 (named http) and no endpoints.
pub fn service(name: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - name: http\n    port: 80\n")
}

/// An EndpointSlice of Service `service` with one ready endpoint at `addr`.
pub fn endpoint_slice(service: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-slice\n  labels:\n    \
         kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n- name: http\n  port: {port}\n\
         endpoints:\n- addresses: [\"{ip}\"]\n",
        port = addr.port(),
        ip = addr.ip()
    )
}

/// An HTTPRoute `name` attached to Gateway `gw` (to listener `section` when given), with
/// `hostnames` and `rules` (a YAML list indented by two spaces).
pub fn route(name: &str, section: Option<&str>, hostnames: &[&str], rules: &str) -> String {
    let section = section.map(|s| format!("    sectionName: {s}\n")).unwrap_or_default();
    let hostnames = if hostnames.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
        format!("  hostnames: [{}]\n", list.join(", "))
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\nspec:\n  \
         parentRefs:\n  - name: gw\n{section}{hostnames}  rules:\n{rules}"
    )
}

/// A rule forwarding requests whose path starts with `prefix` to Service `service` port 80.
pub fn prefix_rule(prefix: &str, service: &str) -> String {
    format!("  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]\n    backendRefs: [{{name: {service}, port: 80}}]\n")
}

/// A QuotaPolicy `name` targeting HTTPRoute `route`; `spec` holds the rest of the spec,
/// indented by two spaces (apiKey, rateLimit, quota).
pub fn quota_policy(name: &str, route: &str, spec: &str) -> String {
    format!(
        "apiVersion: tollbridge.dev/v1alpha1\nkind: QuotaPolicy\nmetadata:\n  name: {name}\nspec:\n  targetRefs:\n  \
         - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    name: {route}\n{spec}"
    )
}

/// An ApiKey `name` of policy `policy` whose value is in Secret `<name>-key`, plus that Secret.
/// `extra` is added to the ApiKey spec (indented by two spaces), e.g. `disabled: true`.
pub fn api_key(name: &str, policy: &str, value: &str, extra: &str) -> String {
    docs(&[
        format!(
            "apiVersion: tollbridge.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: {name}\nspec:\n  policyRef: \
             {{name: {policy}}}\n  secretRef: {{name: {name}-key}}\n{extra}"
        ),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-key\nstringData:\n  api-key: {value}\n"),
    ])
}

/// Joins YAML documents.
pub fn docs(documents: &[String]) -> String {
    documents.iter().map(|d| d.trim_end().to_string() + "\n").collect::<Vec<_>>().join("---\n")
}
