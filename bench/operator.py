#!/usr/bin/env python3
"""Operator benchmark against the real API server (scripts/control-plane).

Measures, for one Local Gateway:
  1. the time from `kubectl apply` of N HTTPRoutes until every one carries an Accepted status
     written by the operator (target: 1,000 routes in <= 30 s);
  2. the operator's resident memory with N routes (target: <= 150 MiB at 1,000);
  3. API-server write requests while nothing changes (target: 0) and for one changed route,
     read from the API server's own apiserver_request_total counters.

Usage: bench/operator.py [ROUTES]   (default 1000). Prints a Markdown table row set.
Needs: cargo, go (first run builds the control plane, ~7 min), openssl, curl.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUTES = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
NS = "bench"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "cluster")
        subprocess.run([f"{ROOT}/scripts/control-plane", "build"], check=True)
        subprocess.run([f"{ROOT}/scripts/control-plane", "start", self.dir], check=True)
        env = dict(line.split("=", 1) for line in
                   (l.removeprefix("export ").strip() for l in open(f"{self.dir}/env")) if "=" in line)
        self.kubeconfig, self.kubectl, self.server = env["KUBECONFIG"], env["TOLLBRIDGE_KUBECTL"], env["TOLLBRIDGE_API_SERVER"]

    def k(self, *args, stdin=None):
        return sh(self.kubectl, "--kubeconfig", self.kubeconfig, "--request-timeout=60s", *args, input=stdin)

    def writes(self):
        """API-server write requests so far, by resource[/subresource], leases excluded."""
        pki = f"{self.dir}/pki"
        text = sh("curl", "-fsS", "--cacert", f"{pki}/ca.crt", "--cert", f"{pki}/admin.crt",
                  "--key", f"{pki}/admin.key", f"{self.server}/metrics")
        counts = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") not in WRITE_VERBS or labels.get("resource") == "leases":
                continue
            key = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
        return counts

    def stop(self):
        subprocess.run([f"{ROOT}/scripts/control-plane", "stop", self.dir], check=False)


def diff(after, before):
    out = {k: int(after[k] - before.get(k, 0)) for k in after}
    return {k: v for k, v in out.items() if v}


def route(i, prefix="/r"):
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i}, namespace: {NS}}}\n"
            f"spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}{i}}}}}]\n"
            f"    backendRefs: [{{name: echo, port: 80}}]\n")


def accepted_routes(cluster):
    items = json.loads(cluster.k("get", "httproutes", "-n", NS, "-o", "json"))["items"]
    done = 0
    for r in items:
        for p in r.get("status", {}).get("parents", []):
            if any(c["type"] == "Accepted" and c["status"] == "True" and
                   c.get("observedGeneration") == r["metadata"]["generation"] for c in p["conditions"]):
                done += 1
    return done


def rss_mib(pid):
    fields = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def settle(cluster, seconds):
    """Waits until no write happened for `seconds` (at most 60 s)."""
    deadline, last, quiet_since = time.time() + 60, cluster.writes(), time.time()
    while time.time() < deadline and time.time() - quiet_since < seconds:
        time.sleep(0.5)
        now = cluster.writes()
        if diff(now, last):
            last, quiet_since = now, time.time()


def main():
    env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target/bench"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "tollbridge"], check=True, cwd=ROOT, env=env)
    binary = f"{env['CARGO_TARGET_DIR']}/release/tollbridge"
    work = tempfile.mkdtemp(prefix="tollbridge-bench-")
    cluster = Cluster(work)
    operator = None
    try:
        cluster.k("create", "namespace", NS)
        cluster.k("apply", "--server-side", "-f", "-", stdin=f"""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: bench}}
spec: {{controllerName: tollbridge.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {NS}}}
spec:
  gatewayClassName: bench
  listeners: [{{name: http, port: 8080, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}, annotations: {{tollbridge.dev/backend-url: "http://127.0.0.1:9"}}}}
spec: {{ports: [{{port: 80}}]}}
""")
        log = open(f"{work}/operator.log", "w")
        operator = subprocess.Popen(
            [binary, "operator", "--namespace", NS, "--lease-namespace", NS, "--metrics-address",
             f"127.0.0.1:{free_port()}", "--resync-seconds", "5", "--log-format", "json"],
            env=dict(os.environ, KUBECONFIG=cluster.kubeconfig, RUST_LOG="warn"), stdout=log, stderr=log)
        deadline = time.time() + 60
        while "Accepted" not in cluster.k("get", "gateway", "gw", "-n", NS, "-o", "jsonpath={.status.conditions[0].reason}"):
            assert time.time() < deadline and operator.poll() is None, "operator did not accept the Gateway"
            time.sleep(0.2)
        rss_idle, _ = rss_mib(operator.pid)

        manifest = f"{work}/routes.yaml"
        with open(manifest, "w") as f:
            f.write("---\n".join(route(i) for i in range(ROUTES)))
        started = time.time()
        cluster.k("apply", "--server-side", "-f", manifest)
        applied = time.time() - started
        deadline = started + 300
        while (done := accepted_routes(cluster)) < ROUTES:
            assert time.time() < deadline, f"only {done} of {ROUTES} routes have a status after 300 s"
            time.sleep(0.5)
        converged = time.time() - started
        settle(cluster, 8)
        rss, hwm = rss_mib(operator.pid)

        before = cluster.writes()
        time.sleep(15)  # three resync periods
        idle = diff(cluster.writes(), before)

        before = cluster.writes()
        cluster.k("apply", "--server-side", "-f", "-", stdin=route(7, prefix="/changed"))
        deadline = time.time() + 60
        while json.loads(cluster.k("get", "httproute", "r7", "-n", NS, "-o", "json"))["status"]["parents"][0]["conditions"][0].get("observedGeneration") != 2:
            assert time.time() < deadline, "the changed route got no status"
            time.sleep(0.2)
        settle(cluster, 5)
        change = diff(cluster.writes(), before)
        change_by_operator = dict(change)
        change_by_operator["httproutes"] = change_by_operator.get("httproutes", 0) - 1  # our own kubectl apply
        change_by_operator = {k: v for k, v in change_by_operator.items() if v}

        print(f"| routes | {ROUTES} |")
        print(f"| kubectl apply of all routes | {applied:.1f} s |")
        print(f"| apply start → every route has its status | {converged:.1f} s |")
        print(f"| operator RSS idle (1 Gateway, 0 routes) | {rss_idle:.0f} MiB |")
        print(f"| operator RSS with {ROUTES} routes (peak) | {rss:.0f} MiB ({hwm:.0f} MiB) |")
        print(f"| API writes in 15 s without changes (leases excluded) | {sum(idle.values())} {idle or ''} |")
        print(f"| API writes for one changed route (besides the apply) | {sum(change_by_operator.values())} {change_by_operator} |")
    finally:
        if operator:
            operator.terminate()
            operator.wait(timeout=15)
        cluster.stop()


if __name__ == "__main__":
    main()
