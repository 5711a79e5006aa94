"""Issue #27: ``sigaudit serve --auth-kubernetes`` against a real kube-apiserver.

The chart (mode=server, defaults) is rendered with helm; its ServiceAccount, auth-delegator ClusterRole
and binding and its NetworkPolicy are created on the API server; the server process runs with that
ServiceAccount's TokenRequest token. Callers are ServiceAccounts with real tokens: one without any grant,
a reader (``get`` on ``reports.sigaudit.io`` through RBAC), a trigger (also ``create`` on
``scans.sigaudit.io``). TokenReview decides who they are, SubjectAccessReview what they may do; when the
server itself loses its review rights, a new caller is refused (503), never let in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.fixtures_kube import KubeAPIServer, apply, delete, ensure_namespace
from tests.harness.tools import free_port, require_tool, stop_process, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.tools]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sigaudit"
NS = "sigaudit-serve-auth"


def _chart(namespace: str) -> list[dict[str, Any]]:
    helm = require_tool("helm")
    out = subprocess.run([str(helm), "template", "sigaudit", str(CHART), "--namespace", namespace,
                          "--set", "mode=server"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]


def _sa(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}}


def _grant(name: str, verb: str, resource: str, *subjects: str) -> list[dict[str, Any]]:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
            "rules": [{"apiGroups": ["sigaudit.io"], "resources": [resource], "verbs": [verb]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": s, "namespace": NS} for s in subjects]}
    return [role, binding]


@pytest.fixture
def cluster(kube_apiserver: KubeAPIServer) -> Iterator[tuple[KubeAPIServer, list[dict[str, Any]]]]:
    ensure_namespace(kube_apiserver, NS)
    chart = [o for o in _chart(NS) if o["kind"] in ("ServiceAccount", "NetworkPolicy")
             or o["metadata"]["name"].endswith("-auth-delegator")]
    assert {o["kind"] for o in chart} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy"}
    objs = [*chart, _sa("reader"), _sa("trigger"), _sa("nobody"),
            *_grant("sigaudit-test-reports", "get", "reports", "reader", "trigger"),
            *_grant("sigaudit-test-scans", "create", "scans", "trigger")]
    for o in objs:
        apply(kube_apiserver, o)
    try:
        yield kube_apiserver, chart
    finally:
        for o in reversed(objs):
            if o["kind"] != "Namespace":
                delete(kube_apiserver, o)


def test_tokenreview_and_subjectaccessreview_decide_on_the_real_api_server(
        cluster: tuple[KubeAPIServer, list[dict[str, Any]]], tmp_path: Path) -> None:
    kube, chart = cluster
    server_sa = next(o for o in chart if o["kind"] == "ServiceAccount")["metadata"]["name"]
    kubeconfig = kube.service_account_kubeconfig(NS, server_sa, tmp_path / "server.kubeconfig", create=False)
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": []}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
        "exemptions": [{"images": ["*"], "reason": "r", "until": "2099-01-01T00:00:00Z"}]}}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", "--pods-file", str(pods), "--policy", str(policy),
             "--db", f"sqlite:///{tmp_path / 'sigaudit.db'}", "--cluster", "kube", "--listen", f"127.0.0.1:{port}",
             "--schedule", "@yearly", "--no-run-at-start", "--auth-kubernetes", "--kubeconfig", str(kubeconfig)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tokens = {name: kube.token_for(NS, name) for name in ("reader", "trigger", "nobody")}
    try:
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)

        def get(path: str, who: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
            return httpx.get(base + path, headers=headers, timeout=30)

        def post(who: str) -> httpx.Response:
            return httpx.post(f"{base}/api/scans", json={}, headers={"Authorization": f"Bearer {tokens[who]}"},
                              timeout=30)

        assert get("/metrics", None).status_code == 200
        assert get("/api/scans", None).status_code == 401
        forged = httpx.get(f"{base}/api/scans", headers={"Authorization": "Bearer " + tokens["reader"][:-4] + "AAAA"},
                           timeout=30)
        assert forged.status_code == 401, forged.text
        r = get("/api/scans", "nobody")
        assert r.status_code == 403 and "get reports.sigaudit.io" in r.json()["error"], r.text
        assert get("/api/scans", "reader").status_code == 200
        assert get("/reports/latest.json", "reader").status_code == 404  # allowed; no scan yet
        r = post("reader")
        assert r.status_code == 403 and "create scans.sigaudit.io" in r.json()["error"], r.text
        assert post("nobody").status_code == 403
        started = post("trigger")
        assert started.status_code == 202, started.text

        # The server's own review rights withdrawn: a caller not in the cache is refused, not let in.
        delete(kube, next(o for o in chart if o["kind"] == "ClusterRoleBinding"))
        fresh = kube.token_for(NS, "reader")
        deadline = time.monotonic() + 30
        while True:
            r = httpx.get(f"{base}/api/scans", headers={"Authorization": f"Bearer {fresh}"}, timeout=30)
            if r.status_code != 200:
                break
            assert time.monotonic() < deadline, "the server still authenticates without tokenreviews rights"
            fresh = kube.token_for(NS, "reader")
            time.sleep(1)
        assert r.status_code == 503, r.text
    finally:
        stop_process(proc)
    text = log_path.read_text(errors="replace")
    assert not any(t in text for t in tokens.values()), "a bearer token reached the log"
