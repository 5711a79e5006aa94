"""ImageValidatingPolicy and PolicyException import from a real kube-apiserver with Kyverno's own CRD
schemas installed (issue #25 item 3): the apiserver validates the documents against the upstream schemas
(so the test documents are what Kyverno accepts), sigaudit lists them, and an exception's waiver is in the
exemptions register."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cosign_sign import KeyPair
from tests.harness.fixtures_kube import apply, delete, ensure_namespace

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[1] / "data" / "upstream-crds"


def _structural(node: Any) -> Any:
    """The extracted schema as a CRD schema: the pruned subtrees (status) keep unknown fields."""
    if isinstance(node, dict):
        if node.pop("x-sigaudit-pruned", False):
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {k: _structural(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_structural(v) for v in node]
    return node


def upstream_crd(file: str, group: str, plural: str, scope: str, storage: str) -> dict[str, Any]:
    data = json.loads((CRDS / file).read_text())
    kind = data["kind"]
    versions = [{"name": v, "served": True, "storage": v == storage, "schema": {"openAPIV3Schema": _structural(s)}}
                for v, s in data["versions"].items()]
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": scope, "names": {"kind": kind, "plural": plural,
                                                              "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": versions}}


def wait_for(server, path: str) -> None:
    deadline = time.monotonic() + 60
    with server.http() as c:
        while time.monotonic() < deadline:
            if c.get(path).status_code == 200:
                return
            time.sleep(0.5)
    raise AssertionError(f"{path} never served")


def test_image_validating_policies_and_exceptions_read_from_the_cluster(kube_apiserver) -> None:
    server = kube_apiserver
    for args in (("policies.kyverno.io_imagevalidatingpolicies.schema.json", "policies.kyverno.io",
                  "imagevalidatingpolicies", "Cluster", "v1beta1"),
                 ("policies.kyverno.io_policyexceptions.schema.json", "policies.kyverno.io", "policyexceptions",
                  "Namespaced", "v1beta1"),
                 ("kyverno.io_policyexceptions.schema.json", "kyverno.io", "policyexceptions", "Namespaced", "v2"),
                 ("kyverno.io_clusterpolicies.schema.json", "kyverno.io", "clusterpolicies", "Cluster", "v1")):
        apply(server, upstream_crd(*args))
    for path in ("/apis/policies.kyverno.io/v1/imagevalidatingpolicies",
                 "/apis/policies.kyverno.io/v1/policyexceptions", "/apis/kyverno.io/v2/policyexceptions",
                 "/apis/kyverno.io/v1/clusterpolicies"):
        wait_for(server, path)
    ensure_namespace(server, "team-a")
    key = KeyPair.ecdsa()
    objects: list[dict[str, Any]] = [
        {"apiVersion": "policies.kyverno.io/v1", "kind": "ImageValidatingPolicy", "metadata": {"name": "signed"},
         "spec": {"validationActions": ["Audit"], "matchImageReferences": [{"glob": "ghcr.io/acme/*"}],
                  "attestors": [{"name": "acme", "cosign": {"key": {"data": key.public_pem}}}],
                  "validations": [{"expression": "images.containers.map(image, verifyImageSignatures("
                                                 "image, [attestors.acme])).all(e, e > 0)",
                                   "message": "not signed by acme"}]}},
        {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "ivp-verify"},
         "spec": {"rules": [{"name": "r1", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                             "verifyImages": [{"imageReferences": ["ghcr.io/acme/*"], "attestors": [{
                                 "entries": [{"keys": {"publicKeys": key.public_pem,
                                                       "rekor": {"ignoreTlog": True}}}]}]}]}]}},
        {"apiVersion": "policies.kyverno.io/v1", "kind": "PolicyException",
         "metadata": {"name": "legacy", "namespace": "team-a"},
         "spec": {"policyRefs": [{"name": "signed", "kind": "ImageValidatingPolicy"}]}},
        {"apiVersion": "kyverno.io/v2", "kind": "PolicyException",
         "metadata": {"name": "legacy-cp", "namespace": "team-a"},
         "spec": {"exceptions": [{"policyName": "ivp-verify", "ruleNames": ["r*"]}],
                  "match": {"any": [{"resources": {"kinds": ["Pod"], "namespaces": ["team-*"]}}]}}},
    ]
    # The apiserver is shared by the session: what this test creates is removed again.
    try:
        for obj in objects:
            apply(server, obj)
        check(server)
    finally:
        for obj in objects:
            delete(server, obj)


def check(server) -> None:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "check-policy", "--policy-from", "kyverno:cluster",
                        "--kubeconfig", str(server.kubeconfig)], capture_output=True, text=True, timeout=120,
                       env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rules = {x["name"]: x for x in doc["rules"]}
    assert set(rules) == {"ImageValidatingPolicy/signed", "ivp-verify/r1"}
    assert rules["ImageValidatingPolicy/signed"]["source"] == "kyverno:ImageValidatingPolicy/signed"
    assert rules["ImageValidatingPolicy/signed"]["refused"] == []
    assert rules["ImageValidatingPolicy/signed"]["verifier_sets"][0]["count"] == 1
    waivers = {x["reason"]: x for x in doc["exemptions"]}
    assert waivers["Kyverno PolicyException team-a/legacy"]["rules"] == ["ImageValidatingPolicy/signed"]
    assert waivers["Kyverno PolicyException team-a/legacy"]["namespaces"] == ["team-a"]
    assert waivers["Kyverno PolicyException team-a/legacy-cp"]["rules"] == ["ivp-verify/r1"]
    assert waivers["Kyverno PolicyException team-a/legacy-cp"]["namespaces"] == ["team-a"]
