"""Policy import from a real API server: Kyverno ClusterPolicy/Policy and sigstore ClusterImagePolicy
custom resources (their CRDs installed into kube-apiserver), keys read from Secrets, and RBAC."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.cosign_sign import KeyPair
from tests.harness.fixtures_kube import apply, ensure_namespace

pytestmark = pytest.mark.integration


def crd(group: str, version: str, kind: str, plural: str, scope: str) -> dict:
    # Schemas preserve unknown fields: the real CRDs' full schemas are not needed to store objects.
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": scope, "names": {"kind": kind, "plural": plural,
                                                              "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def sigaudit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=120, env=os.environ.copy())


def wait_for(server, path: str) -> None:
    deadline = time.monotonic() + 60
    with server.http() as c:
        while time.monotonic() < deadline:
            if c.get(path).status_code == 200:
                return
            time.sleep(0.5)
    raise AssertionError(f"{path} never served")


def test_policies_read_from_the_cluster(kube_apiserver, tmp_path: Path) -> None:
    server = kube_apiserver
    for args in (("kyverno.io", "v1", "ClusterPolicy", "clusterpolicies", "Cluster"),
                 ("kyverno.io", "v1", "Policy", "policies", "Namespaced"),
                 ("policy.sigstore.dev", "v1beta1", "ClusterImagePolicy", "clusterimagepolicies", "Cluster"),
                 ("policy.sigstore.dev", "v1alpha1", "TrustRoot", "trustroots", "Cluster"),
                 ("notation.nirmata.io", "v1alpha1", "TrustPolicy", "trustpolicies", "Cluster"),
                 ("notation.nirmata.io", "v1alpha1", "TrustStore", "truststores", "Cluster")):
        apply(server, crd(*args))
    for path in ("/apis/kyverno.io/v1/clusterpolicies", "/apis/kyverno.io/v1/policies",
                 "/apis/policy.sigstore.dev/v1beta1/clusterimagepolicies",
                 "/apis/notation.nirmata.io/v1alpha1/trustpolicies"):
        wait_for(server, path)
    ensure_namespace(server, "team-a")
    key, secret_key = KeyPair.ecdsa(), KeyPair.ecdsa()
    apply(server, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cosign-pub", "namespace": "team-a"},
                   "data": {"cosign.pub": base64.b64encode(secret_key.public_pem.encode()).decode()}})
    apply(server, {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "verify"},
                   "spec": {"rules": [{"name": "r1", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                       "verifyImages": [{"imageReferences": ["ghcr.io/acme/*"], "attestors": [{
                                           "entries": [{"keys": {"publicKeys": key.public_pem,
                                                                 "rekor": {"ignoreTlog": True}}}]}]}]}]}})
    apply(server, {"apiVersion": "kyverno.io/v1", "kind": "Policy",
                   "metadata": {"name": "team", "namespace": "team-a"},
                   "spec": {"rules": [{"name": "r2", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                       "verifyImages": [{"imageReferences": ["ghcr.io/team-a/*"], "attestors": [{
                                           "entries": [{"keys": {
                                               "secret": {"name": "cosign-pub", "namespace": "team-a"},
                                               "rekor": {"ignoreTlog": True}}}]}]}]}]}})
    apply(server, {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy",
                   "metadata": {"name": "cip"}, "spec": {"images": [{"glob": "quay.io/**"}],
                                                        "authorities": [{"static": {"action": "pass"}}]}})
    # kyverno-notation-aws resources: a TrustStore with a CA bundle and a TrustPolicy using it.
    from tests.harness.notation_sign import make_pki

    pki = make_pki("Team A")
    apply(server, {"apiVersion": "notation.nirmata.io/v1alpha1", "kind": "TrustStore",
                   "metadata": {"name": "team-a-ca"},
                   "spec": {"trustStoreName": "team-a", "type": "ca", "caBundle": pki.root.pem.decode()}})
    apply(server, {"apiVersion": "notation.nirmata.io/v1alpha1", "kind": "TrustPolicy",
                   "metadata": {"name": "team-a-policy"},
                   "spec": {"version": "1.0", "trustPolicies": [{
                       "name": "team-a", "registryScopes": ["ghcr.io/team-a/app"],
                       "signatureVerification": {"level": "strict"}, "trustStores": ["ca:team-a"],
                       "trustedIdentities": ["*"]}]}})
    r = sigaudit("check-policy", "--policy-from", "kyverno:cluster", "--policy-from", "clusterimagepolicy:cluster",
                 "--policy-from", "notation:cluster", "--kubeconfig", str(server.kubeconfig))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rules = {x["name"]: x for x in doc["rules"]}
    assert set(rules) == {"verify/r1", "team-a/team/r2", "cip", "TrustPolicy/team-a-policy"}
    assert rules["TrustPolicy/team-a-policy"]["images"] == ["ghcr.io/team-a/app"]
    assert rules["TrustPolicy/team-a-policy"]["source"] == "notation:TrustPolicy/team-a-policy"
    assert rules["team-a/team/r2"]["namespaces"] == ["team-a"]  # a namespaced Policy applies to its namespace
    assert rules["team-a/team/r2"]["source"] == "kyverno:Policy/team-a/team"
    from scanner.verify.keys import key_sha256, parse_public_key

    secret_key_id = key_sha256(parse_public_key(secret_key.public_pem.encode()))
    assert rules["team-a/team/r2"]["verifiers"][0].endswith(secret_key_id[:12])
    assert rules["cip"]["source"] == "clusterimagepolicy:ClusterImagePolicy/cip"

    # Without permission to list the policy resources: a clear message naming what is missing.
    kubeconfig = server.service_account_kubeconfig("team-a", "no-rights", tmp_path / "sa.kubeconfig")
    r = sigaudit("check-policy", "--policy-from", "kyverno:cluster", "--kubeconfig", str(kubeconfig))
    assert r.returncode == 2 and "forbidden: list kyverno.io/v1 clusterpolicies" in r.stderr
