"""Why a non-compliant image runs despite the cluster's admission policy (issue #25 item 5), on a real
kube-apiserver and a real docker-registry, through the real CLI.

Pods and Kyverno ClusterPolicies get their creationTimestamps from the API server; a
ValidatingWebhookConfiguration of Kyverno's with ``failurePolicy: Ignore`` is read from the API; a signed
image verified by a first scan (stored) has its signature deleted from the registry before the second.
Each scenario must be named as the likely cause of its verdict, and the finding never changes a status.
"""

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

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
from tests.harness.fixtures_kube import (
    KubeAPIServer,
    apply,
    container,
    create,
    delete,
    ensure_namespace,
    make_bare_pod,
    pod_template,
    report_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.tools]

REPO = Path(__file__).resolve().parents[2]
NS = {k: f"sigaudit-adm-{k}" for k in ("before", "excluded", "audit", "ignore", "removed", "kind")}
WEBHOOK = "kyverno-resource-validating-webhook-cfg"


def _crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Cluster", "names": {"kind": kind, "plural": plural,
                                                                   "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def _policy(name: str, images: str, key: KeyPair, *, action: str = "Enforce", kinds: tuple[str, ...] = ("Pod",),
            exclude: dict[str, Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": "signed", "match": {"any": [{"resources": {"kinds": list(kinds)}}]},
        "verifyImages": [{"imageReferences": [images], "attestors": [{"entries": [
            {"keys": {"publicKeys": key.public_pem, "rekor": {"ignoreTlog": True}}}]}]}],
    }
    if exclude:
        rule["exclude"] = exclude
    return {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": name},
            "spec": {"validationFailureAction": action, "rules": [rule]}}


def _wait_served(server: KubeAPIServer, path: str) -> None:
    deadline = time.monotonic() + 60
    with server.http() as c:
        while time.monotonic() < deadline:
            if c.get(path).status_code == 200:
                return
            time.sleep(0.5)
    raise AssertionError(f"{path} never served")


def _scan(server: KubeAPIServer, tmp: Path, db: Path, registry_host: str) -> dict[str, Any]:
    native = tmp / "policy.yaml"  # no rules: only the registry the test runs over plain HTTP
    native.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                      f"  insecureRegistries: ['{registry_host}']\n")
    cmd = [sys.executable, "-m", "scanner.cli", "scan", "--kubeconfig", str(server.kubeconfig),
           "--policy", str(native), "--policy-from", "kyverno:cluster", "--db", f"sqlite:///{db}",
           "-o", "json", "--no-progress",
           "-n", "sigaudit-adm-*", "--report", str(tmp / "report.html")]
    env = {**os.environ, "HOME": str(tmp), "DOCKER_CONFIG": str(tmp / "docker")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert r.returncode in (0, 1), f"exit {r.returncode}: {r.stderr[-3000:]}"
    doc: dict[str, Any] = json.loads(r.stdout)
    assert doc["scan"]["status"] == "complete", r.stderr[-2000:]
    return doc


def _by_pod(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["pod"]: img for img in doc["images"] for c in img["containers"]}


@pytest.fixture
def cleanup(kube_apiserver: KubeAPIServer) -> Iterator[list[dict[str, Any]]]:
    """Cluster-wide objects this test creates, deleted afterwards: the API server is shared by the session."""
    made: list[dict[str, Any]] = []
    yield made
    for obj in reversed(made):
        try:
            delete(kube_apiserver, obj)
        except Exception:  # best effort: one left-over must not hide the test's outcome
            pass


def test_each_admission_bypass_is_named_as_the_likely_cause(
    kube_apiserver: KubeAPIServer, registry: Any, tmp_path: Path, cleanup: list[dict[str, Any]]
) -> None:
    server = kube_apiserver
    key = KeyPair.ecdsa()
    host = registry.host
    apply(server, _crd("kyverno.io", "v1", "ClusterPolicy", "clusterpolicies"))
    _wait_served(server, "/apis/kyverno.io/v1/clusterpolicies")
    digests = {k: oci.make_image(registry.url, f"adm/{k}", "1") for k in NS}
    sign_image(registry.url, host, "adm/removed", digests["removed"], key)

    # Policies in force before the pods are created (each names only its own image) ...
    policies = [
        _policy("sigaudit-adm-excluded", f"{host}/adm/excluded*", key, exclude={"any": [{
            "resources": {"namespaces": [NS["excluded"]]},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}]}]}),
        _policy("sigaudit-adm-audit", f"{host}/adm/audit*", key, action="Audit"),
        _policy("sigaudit-adm-ignore", f"{host}/adm/ignore*", key),
        _policy("sigaudit-adm-removed", f"{host}/adm/removed*", key),
        _policy("sigaudit-adm-kind", f"{host}/adm/kind*", key, kinds=("Deployment",)),
    ]
    for p in policies:
        cleanup.append(create(server, p))
    time.sleep(1.2)  # creationTimestamps have a resolution of one second
    for k, ns in NS.items():
        ensure_namespace(server, ns)
        pod = make_bare_pod(server, ns, f"{k}-pod", pod_template({}, [container("app", f"{host}/adm/{k}:1")]))
        report_status(server, pod, {"app": f"{host}/adm/{k}@{digests[k]}"})
    time.sleep(1.2)
    # ... and one created after its pod.
    cleanup.append(create(server, _policy("sigaudit-adm-before", f"{host}/adm/before*", key)))

    db = tmp_path / "sigaudit.db"
    first = _by_pod(_scan(server, tmp_path, db, host))
    assert first["removed-pod"]["status"] == "verified" and first["removed-pod"]["admission"] is None
    for k in ("before", "excluded", "audit", "ignore", "kind"):
        assert first[f"{k}-pod"]["status"] == "unsigned", first[f"{k}-pod"]
    # Without a webhook that fails open, the plain Enforce policy's violation is unexplained.
    assert first["ignore-pod"]["admission"]["likely_cause"] == "unexplained"

    # Kyverno's webhook for every Fail policy, set to Ignore (it matches nothing here: no request is sent).
    cleanup.append(create(server, {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK},
        "webhooks": [{"name": "validate.kyverno.svc-fail", "failurePolicy": "Ignore", "sideEffects": "None",
                      "admissionReviewVersions": ["v1"],
                      "clientConfig": {"service": {"namespace": "kyverno", "name": "kyverno-svc",
                                                   "path": "/validate/fail"}},
                      "namespaceSelector": {"matchLabels": {"sigaudit-test": "never"}},
                      "rules": [{"apiGroups": ["sigaudit.test"], "apiVersions": ["v1"], "operations": ["CREATE"],
                                 "resources": ["nothing"]}]}]}))
    # The signature is removed from the registry after the image was admitted and found verified.
    with httpx.Client(timeout=30) as c:
        r = c.head(f"{registry.url}/v2/adm/removed/manifests/{sig_tag(digests['removed'])}",
                   headers={"Accept": oci.OCI_MANIFEST})
        assert r.status_code == 200, r.text
        assert c.delete(f"{registry.url}/v2/adm/removed/manifests/{r.headers['Docker-Content-Digest']}"
                        ).status_code == 202

    doc = _scan(server, tmp_path, db, host)
    second = _by_pod(doc)
    expected = {
        "before": "created-before-policy",
        "excluded": "excluded-at-admission",
        "audit": "audit-mode",
        "ignore": "webhook-fails-open",
        "removed": "signature-removed-after-admission",
        "kind": "kind-not-matched",
    }
    for k, cause in expected.items():
        img = second[f"{k}-pod"]
        adm = img["admission"]
        assert adm is not None, (k, img)
        assert (adm["policy"], adm["likely_cause"], adm["would_admit_now"]) == (
            f"ClusterPolicy/sigaudit-adm-{k}", cause, False), (k, adm)
        # nothing here changes a verdict: every one of them still counts as a violation
        assert img["status"] == "unsigned" and img["compliant"] is False, (k, img)
        causes = [e["cause"] for e in adm["evidence"]]
        assert causes[-1] == "webhook-fails-open" and len(causes) == len(set(causes)), (k, causes)
    before = second["before-pod"]["admission"]["evidence"][0]["facts"]
    assert before["earliest_pod_created_at"] < before["policy_created_at"]
    assert before["pods"] == f"{NS['before']}/before-pod"
    assert "deployer" in second["excluded-pod"]["admission"]["evidence"][0]["facts"]["filters"]
    ignore = second["ignore-pod"]["admission"]["evidence"][0]["facts"]
    assert ignore["webhooks"] == f"{WEBHOOK}/validate.kyverno.svc-fail"
    assert second["removed-pod"]["admission"]["evidence"][0]["facts"]["last_verified_scan_at"]
    assert doc["summary"]["non_compliant"] == len(expected)
    # The report section, and the finding as stored (what the API, `sigaudit report` and the metrics read).
    html = (tmp_path / "report.html").read_text()
    section = html[html.index('<section id="admission">'):html.index('<section id="tag-references">')]
    assert all(cause in section for cause in expected.values())
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "report", "--db", f"sqlite:///{db}", "--format", "json"],
                       capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    stored = _by_pod(json.loads(r.stdout))
    assert {k: stored[f"{k}-pod"]["admission"]["likely_cause"] for k in expected} == expected
