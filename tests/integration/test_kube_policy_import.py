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
    created: list[dict] = []

    def make(obj: dict) -> None:
        apply(server, obj)
        created.append(obj)

    try:
        ensure_namespace(server, "team-a")
        key, secret_key = KeyPair.ecdsa(), KeyPair.ecdsa()
        make({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cosign-pub", "namespace": "team-a"},
                       "data": {"cosign.pub": base64.b64encode(secret_key.public_pem.encode()).decode()}})
        make({"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "verify"},
                       "spec": {"rules": [{"name": "r1", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                           "verifyImages": [{"imageReferences": ["ghcr.io/acme/*"], "attestors": [{
                                               "entries": [{"keys": {"publicKeys": key.public_pem,
                                                                     "rekor": {"ignoreTlog": True}}}]}]}]}]}})
        make({"apiVersion": "kyverno.io/v1", "kind": "Policy",
                       "metadata": {"name": "team", "namespace": "team-a"},
                       "spec": {"rules": [{"name": "r2", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                           "verifyImages": [{"imageReferences": ["ghcr.io/team-a/*"], "attestors": [{
                                               "entries": [{"keys": {
                                                   "secret": {"name": "cosign-pub", "namespace": "team-a"},
                                                   "rekor": {"ignoreTlog": True}}}]}]}]}]}})
        make({"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy",
                       "metadata": {"name": "cip"}, "spec": {"images": [{"glob": "quay.io/**"}],
                                                            "authorities": [{"static": {"action": "pass"}}]}})
        # kyverno-notation-aws resources: a TrustStore with a CA bundle and a TrustPolicy using it.
        from tests.harness.notation_sign import make_pki

        pki = make_pki("Team A")
        make({"apiVersion": "notation.nirmata.io/v1alpha1", "kind": "TrustStore",
                       "metadata": {"name": "team-a-ca"},
                       "spec": {"trustStoreName": "team-a", "type": "ca", "caBundle": pki.root.pem.decode()}})
        make({"apiVersion": "notation.nirmata.io/v1alpha1", "kind": "TrustPolicy",
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
    finally:  # the API server is shared by the session: other tests list every policy too
        from tests.harness.fixtures_kube import delete

        for obj in reversed(created):
            delete(server, obj)


def test_kritis_authorities_are_resolved_in_the_policys_own_namespace(
        kube_apiserver, registry, grafeas_server, tmp_path: Path) -> None:
    """kritis reads a policy's AttestationAuthority in the policy's namespace only (review.go:
    ``r.config.Auths(gap.Namespace, aName)``). Before, a GenericAttestationPolicy in `staging` naming `qa`,
    which exists only in `prod` and in a tenant's namespace, took whichever was listed last — the tenant's
    key — and the tenant's own attestation made the image `verified`. Now it is `error`, naming the
    missing staging/qa; in `prod` the same image is judged with prod's key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.harness import oci
    from tests.harness.demo import _pod

    server = kube_apiserver
    plurals = {"AttestationAuthority": "attestationauthorities",
               "GenericAttestationPolicy": "genericattestationpolicies",
               "ImageSecurityPolicy": "imagesecuritypolicies"}
    for kind, plural in plurals.items():
        apply(server, crd("kritis.grafeas.io", "v1beta1", kind, plural, "Namespaced"))
    for plural in plurals.values():
        wait_for(server, f"/apis/kritis.grafeas.io/v1beta1/{plural}")
    keys = {ns: ec.generate_private_key(ec.SECP256R1()) for ns in ("kprod", "ktenant")}
    grafeas_server.create_project("kns")
    note = grafeas_server.create_note("kns", "qa")
    for ns in ("kprod", "kstaging", "ktenant"):
        ensure_namespace(server, ns)
    for ns, key in keys.items():
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        apply(server, {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
                       "metadata": {"name": "qa", "namespace": ns},
                       "spec": {"noteReference": note, "publicKeys": [
                           {"keyType": "PKIX", "keyId": f"{ns}-key", "pkixPublicKey": {"publicKeyPem": pem}}]}})
    for ns in ("kprod", "kstaging"):
        apply(server, {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
                       "metadata": {"name": "gap", "namespace": ns}, "spec": {"attestationAuthorityNames": ["qa"]}})

    pushed = oci.push_image(registry.url, "kns/app", "1")
    repo = f"{registry.host}/kns/app"
    payload = json.dumps({"critical": {"identity": {"docker-reference": repo},
                                       "image": {"docker-manifest-digest": pushed.digest},
                                       "type": "atomic container signature"}}, separators=(",", ":")).encode()
    # The tenant attests the image with its own key (it may write occurrences in the note's project).
    sig = keys["ktenant"].sign(payload, ec.ECDSA(hashes.SHA256()))
    grafeas_server.create_attestation("kns", note, f"https://{repo}@{pushed.digest}", payload, sig, "ktenant-key")

    r = sigaudit("check-policy", "--policy-from", "kritis:cluster", "--kubeconfig", str(server.kubeconfig))
    assert r.returncode == 0, r.stderr
    rules = {x["name"]: x for x in json.loads(r.stdout)["rules"]}
    assert rules["kritis:kstaging/gap"]["refused"] == ["AttestationAuthority kstaging/qa not found"]
    assert rules["kritis:kprod/gap"]["refused"] == []

    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        _pod(ns, "app", [("app", f"{repo}:1", f"{repo}@{pushed.digest}")]) for ns in ("kprod", "kstaging")]}))
    native = tmp_path / "native.yaml"
    native.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                      f"  insecureRegistries: ['{registry.host}']\n")
    env = {**os.environ, "SIGAUDIT_GRAFEAS_URL": grafeas_server.url}
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                        str(native), "--policy-from", "kritis:cluster", "--kubeconfig", str(server.kubeconfig),
                        "--no-store", "-o", "json", "--no-progress"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    by_ns = {c["namespace"]: i for i in json.loads(r.stdout)["images"] for c in i["containers"]}
    assert by_ns["kprod"]["status"] == "unsigned", by_ns["kprod"]  # the tenant's key is not prod's
    assert by_ns["kstaging"]["status"] == "error", by_ns["kstaging"]
    assert any("AttestationAuthority kstaging/qa not found" in x for x in by_ns["kstaging"]["reasons"])
