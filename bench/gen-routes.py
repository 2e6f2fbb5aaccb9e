#!/usr/bin/env python3
"""Writes a standalone tollbridge config with N HTTPRoutes, optionally behind an API key and quota.

usage: gen-routes.py OUT_DIR PORT BACKEND_PORT ROUTES [--keys] [--tls TLS_PORT CERT_PEM KEY_PEM]

--tls adds an HTTPS listener on TLS_PORT with that certificate (every route attaches to both).
"""
import base64
import sys
from pathlib import Path

out, port, backend_port, routes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
options = sys.argv[5:]
keys = "--keys" in options
tls = options[options.index("--tls") + 1:options.index("--tls") + 4] if "--tls" in options else None
out.mkdir(parents=True, exist_ok=True)
https_listener = ""
if tls:
    https_listener = f"""
  - name: https
    protocol: HTTPS
    port: {int(tls[0])}
    tls: {{certificateRefs: [{{name: bench-tls}}]}}"""
docs = [f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: bench}}
spec: {{controllerName: tollbridge.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  gatewayClassName: bench
  listeners:
  - {{name: http, protocol: HTTP, port: {port}}}{https_listener}
---
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  ports:
  - {{name: http, port: 80}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend
  labels: {{kubernetes.io/service-name: backend}}
addressType: IPv4
ports:
- {{name: http, port: {backend_port}}}
endpoints:
- addresses: [127.0.0.1]
"""]
for i in range(routes):
    docs.append(f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: svc{i}}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /svc{i}}}
    backendRefs:
    - {{name: backend, port: 80}}
""")
if keys:
    docs.append("""apiVersion: tollbridge.dev/v1alpha1
kind: QuotaPolicy
metadata: {name: bench}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: bench}
  apiKey: {required: true, header: x-api-key}
  rateLimit: {requests: 1000000000, unit: Second}
  quota: {requests: 1000000000000, period: Month}
---
apiVersion: tollbridge.dev/v1alpha1
kind: ApiKey
metadata: {name: bench}
spec:
  policyRef: {name: bench}
  secretRef: {name: bench-key}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-key}
stringData:
  api-key: bench-key-0123456789
""")
if tls:
    pem = lambda path: base64.b64encode(Path(path).read_bytes()).decode()
    docs.append(f"""apiVersion: v1
kind: Secret
metadata: {{name: bench-tls}}
type: kubernetes.io/tls
data:
  tls.crt: {pem(tls[1])}
  tls.key: {pem(tls[2])}
""")
(out / "bench.yaml").write_text("---\n".join(docs))
