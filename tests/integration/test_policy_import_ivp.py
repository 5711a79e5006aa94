"""Kyverno ImageValidatingPolicy documents give the same verdicts as the Kyverno ClusterPolicies that mean
the same thing, on images signed for real (cosign keys, keyless certificates from the private Sigstore
instance, notation) in the real docker-registry, judged by the real ``sigaudit scan`` CLI; and a
PolicyException exempts exactly the workloads of its own namespace, naming itself in the verdict
(issue #25 item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod, publish_estate, write_pods
from tests.sigstore_mock.harness import MockSigstore, attach_bundle, cosign_sign_statement

pytestmark = pytest.mark.integration

SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
CLAIMS = {"repository": "acme/app", "ref": "refs/heads/main", "workflow": "release", "event_name": "push",
          "sha": "0123456789abcdef0123456789abcdef01234567"}


def scan(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--no-store", "-o", "json", "--no-progress",
                        *args], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})
    assert r.returncode in (0, 1), r.stderr[-3000:]
    return json.loads(r.stdout)


def native(tmp_path: Path, host: str) -> Path:
    p = tmp_path / "native.yaml"
    p.write_text(yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
                                 "metadata": {"name": "rest"}, "spec": {"insecureRegistries": [host], "rules": []}}))
    return p


def both(tmp_path: Path, host: str, pods: Path, *docs: dict[str, Any]) -> dict[str, Any]:
    f = tmp_path / f"kyverno-{docs[0]['kind']}.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return scan("--pods-file", str(pods), "--policy", str(native(tmp_path, host)), "--policy-from", f"kyverno:{f}")


def verdicts(doc: dict[str, Any]) -> dict[str, str]:
    return {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}


def cluster_policy(images: list[str], attestor_sets: list[dict[str, Any]], vtype: str = "Cosign") -> dict[str, Any]:
    return {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "cp"},
            "spec": {"rules": [{"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                "verifyImages": [{"imageReferences": images, "type": vtype,
                                                  "attestors": attestor_sets}]}]}}


def ivp(images: list[str], attestors: list[dict[str, Any]], *validations: str,
        actions: tuple[str, ...] = ("Deny",)) -> dict[str, Any]:
    return {"apiVersion": "policies.kyverno.io/v1", "kind": "ImageValidatingPolicy", "metadata": {"name": "ivp"},
            "spec": {"validationActions": list(actions), "matchImageReferences": [{"glob": g} for g in images],
                     "attestors": attestors, "validations": [{"expression": v} for v in validations]}}


def sig(names: str, op: str = "> 0") -> str:
    return f"images.containers.map(image, verifyImageSignatures(image, [{names}])).all(e, e {op})"


def test_key_attestors_n_of_m_as_a_cluster_policy(registry, tmp_path: Path) -> None:
    """(A or B) and C: as ClusterPolicy attestor sets, and as two IVP validations."""
    a, b, c = KeyPair.ecdsa(), KeyPair.ecdsa(), KeyPair.ecdsa()
    items = []
    for name, keys in (("ab", (a, b)), ("ac", (a, c)), ("bc", (b, c)), ("c", (c,)), ("none", ())):
        digest = oci.make_image(registry.url, f"ivpsets/{name}", "1.0")
        if keys:
            sign_image(registry.url, registry.host, f"ivpsets/{name}", digest, *keys)
        items.append(_pod("prod", name, [("app", f"{registry.host}/ivpsets/{name}:1.0",
                                          f"{registry.host}/ivpsets/{name}@{digest}")]))
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"items": items}))

    def entry(k: KeyPair) -> dict[str, Any]:
        return {"keys": {"publicKeys": k.public_pem, "rekor": {"ignoreTlog": True}}}

    def attestor(n: str, k: KeyPair) -> dict[str, Any]:
        return {"name": n, "cosign": {"key": {"data": k.public_pem}, "ctlog": {"insecureIgnoreTlog": True}}}

    want = both(tmp_path, registry.host, pods, cluster_policy(
        [f"{registry.host}/ivpsets/*"], [{"count": 1, "entries": [entry(a), entry(b)]}, {"entries": [entry(c)]}]))
    got = both(tmp_path, registry.host, pods, ivp(
        [f"{registry.host}/ivpsets/*"], [attestor("a", a), attestor("b", b), attestor("c", c)],
        sig("attestors.a, attestors.b", ">= 1"), sig("attestors.c")))
    assert verdicts(got) == verdicts(want) == {"ab": "invalid", "ac": "verified", "bc": "verified", "c": "invalid",
                                               "none": "unsigned"}
    by = {i["repository"].rsplit("/", 1)[-1]: i for i in got["images"]}
    assert by["ac"]["policy_source"] == "kyverno:ImageValidatingPolicy/ivp"

    # validationActions: [Warn] reports the same verdicts without counting them.
    warn = both(tmp_path, registry.host, pods, ivp(
        [f"{registry.host}/ivpsets/*"], [attestor("a", a), attestor("b", b), attestor("c", c)],
        sig("attestors.a, attestors.b", ">= 1"), sig("attestors.c"), actions=("Warn",)))
    assert verdicts(warn) == verdicts(want)
    assert all(i["compliant"] for i in warn["images"]), [(i["repository"], i["compliant"]) for i in warn["images"]]


def test_notary_attestor_as_a_cluster_policy(registry, tmp_path: Path) -> None:
    est = publish_estate(registry.url, registry.host)
    assert est.notation is not None
    pods = write_pods(est, tmp_path / "pods.json")
    root = est.notation.root.pem.decode()
    images = [f"{est.host}/demo/notation-*"]
    want = both(tmp_path, registry.host, pods, cluster_policy(
        images, [{"entries": [{"certificates": {"cert": root}}]}], vtype="Notary"))
    got = both(tmp_path, registry.host, pods, ivp(images, [{"name": "n", "notary": {"certs": {"value": root}}}],
                                                  sig("attestors.n")))
    notation = {k: v for k, v in verdicts(want).items() if k.startswith("notation-")}
    assert notation == {"notation-signed": "verified", "notation-expired": "expired", "notation-expiring": "verified"}
    assert {k: v for k, v in verdicts(got).items() if k.startswith("notation-")} == notation


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockSigstore]:
    with MockSigstore.start(tmp_path_factory.mktemp("sigstore-mock")) as m:
        yield m


def test_keyless_attestor_as_a_cluster_policy(mock: MockSigstore, registry, tmp_path: Path) -> None:
    """Keyless bundles from the private Sigstore instance; the IVP names the instance's trusted root, the
    ClusterPolicy its Fulcio roots and log keys: the same identities, the same verdicts."""
    items = []
    for name, subject in (("good", SUBJECT), ("other", SUBJECT.replace("acme/app", "acme/evil"))):
        pushed = oci.push_image(registry.url, f"ivpkl/{name}", "v1")
        bundle = mock.attest(cosign_sign_statement(pushed.digest), subject=subject, issuer=ISSUER, claims=CLAIMS)
        attach_bundle(registry.url, f"ivpkl/{name}", pushed, bundle, referrers_api=False)
        ref = f"{registry.host}/ivpkl/{name}@{pushed.digest}"
        items.append(_pod("prod", name, [("c", ref, ref)]))
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"items": items}))
    images = [f"{registry.host}/ivpkl/*"]
    want = both(tmp_path, registry.host, pods, cluster_policy(images, [{"entries": [{"keyless": {
        "subject": SUBJECT, "issuer": ISSUER, "additionalExtensions": {"githubWorkflowRepository": "acme/app"},
        "roots": mock.fulcio_root.read_text(), "rekor": {"pubkey": mock.rekor_pub.read_text()},
        "ctlog": {"pubkey": mock.ctlog_pub.read_text()}}}]}]))
    got = both(tmp_path, registry.host, pods, ivp(images, [{"name": "gh", "cosign": {
        "keyless": {"identities": [{"subject": SUBJECT, "issuer": ISSUER}],
                    "additionalExtensions": {"githubWorkflowRepository": "acme/app"}},
        "trustedRoot": {"value": mock.trusted_root.read_text()}}}], sig("attestors.gh")))
    assert verdicts(got) == verdicts(want) == {"good": "verified", "other": "invalid"}, json.dumps(
        [(i["repository"], i["status"], i["reasons"]) for i in got["images"]], indent=1)


def test_a_policy_exception_exempts_its_own_namespace_only(registry, tmp_path: Path) -> None:
    """An unsigned image runs in team-a and team-b. team-a's PolicyException (for every namespace, it says)
    exempts team-a's pod, naming itself in the verdict's exemptions; team-b's pod stays unsigned."""
    digest = oci.make_image(registry.url, "ivpex/app", "1.0")
    ref, iid = f"{registry.host}/ivpex/app:1.0", f"{registry.host}/ivpex/app@{digest}"
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"items": [_pod(ns, "app", [("app", ref, iid)]) for ns in ("team-a", "team-b")]}))
    key = KeyPair.ecdsa()
    policy = ivp([f"{registry.host}/ivpex/*"], [{"name": "k", "cosign": {"key": {"data": key.public_pem}}}],
                 sig("attestors.k"))
    exception = {"apiVersion": "policies.kyverno.io/v1", "kind": "PolicyException",
                 "metadata": {"name": "vendor-app", "namespace": "team-a",
                              "annotations": {"policies.kyverno.io/description": "vendor image, SEC-7"}},
                 "spec": {"policyRefs": [{"name": "ivp", "kind": "ImageValidatingPolicy"}]}}
    got = both(tmp_path, registry.host, pods, policy, exception)
    by_ns = {i["containers"][0]["namespace"]: i for i in got["images"]}
    assert by_ns["team-a"]["status"] == "exempt" and by_ns["team-b"]["status"] == "unsigned"
    (ex,) = by_ns["team-a"]["exemptions"]
    assert ex["kind"] == "waiver" and "PolicyException team-a/vendor-app" in ex["reason"] and "SEC-7" in ex["reason"]
    assert by_ns["team-b"]["exemptions"] == []
