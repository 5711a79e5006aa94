"""Verification results reused across scans: one cheap request per digest when nothing changed; a
vanished signature, a replaced signature or a changed key is noticed (counted in the real registry's
access log, not by our own counters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
from tests.harness.demo import _pod

pytestmark = pytest.mark.integration


def scan(pods: Path, policy: Path, db: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                        str(policy), "--db", db, "-o", "json", "--no-progress"], capture_output=True, text=True,
                       timeout=120, env=os.environ.copy())
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_warm_scan_reuses_and_notices_changes(registry_factory, tmp_path: Path) -> None:
    reg = registry_factory()
    key = KeyPair.ecdsa()
    names = [f"app{i}" for i in range(5)]
    digests = {n: oci.make_image(reg.url, f"c/{n}", "1") for n in names}
    for n in names:
        sign_image(reg.url, reg.host, f"c/{n}", digests[n], key)
    (tmp_path / "k.pub").write_text(key.public_pem)
    policy = tmp_path / "policy.yaml"
    body = (f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  insecureRegistries: ['{reg.host}']\n"
            f"  rules:\n    - name: r\n      images: ['{reg.host}/*']\n"
            "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    policy.write_text(body)
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("ns", f"p-{n}", [("c", f"{reg.host}/c/{n}:1", f"{reg.host}/c/{n}@{d}")]) for n, d in digests.items()]}))
    db = f"sqlite:///{tmp_path / 's.db'}"

    before = reg.request_count()
    cold = scan(pods, policy, db)
    cold_requests = reg.request_count() - before
    assert {i["status"] for i in cold["images"]} == {"verified"}
    before = reg.request_count()
    warm = scan(pods, policy, db)
    warm_requests = reg.request_count() - before
    assert {i["status"] for i in warm["images"]} == {"verified"}
    assert warm_requests <= len(names) < cold_requests, (cold_requests, warm_requests)

    # The signature of app0 disappears: the cheap re-list sees it, the verdict is unsigned.
    with httpx.Client() as c:
        r = c.head(f"{reg.url}/v2/c/app0/manifests/{sig_tag(digests['app0'])}",
                   headers={"Accept": oci.OCI_MANIFEST})
        c.delete(f"{reg.url}/v2/c/app0/manifests/{r.headers['docker-content-digest']}").raise_for_status()
    # app1's signature is replaced by one from another key: a different .sig manifest, a miss.
    sign_image(reg.url, reg.host, "c/app1", digests["app1"], KeyPair.ecdsa())
    after = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in scan(pods, policy, db)["images"]}
    assert after == {"app0": "unsigned", "app1": "invalid", "app2": "verified", "app3": "verified",
                     "app4": "verified"}

    # A changed trust key invalidates every cached verdict.
    other = KeyPair.ecdsa()
    (tmp_path / "k.pub").write_text(other.public_pem)
    after = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in scan(pods, policy, db)["images"]}
    assert set(after.values()) <= {"invalid", "unsigned"} and after["app2"] == "invalid"


def test_notation_results_are_reused_when_no_revocation_endpoint_is_named(registry_factory, tmp_path: Path) -> None:
    """Notation verdicts are cached only when no network answer (CRL/OCSP/TSA) went into them."""
    from tests.harness import notation_sign

    reg = registry_factory()
    pki = notation_sign.make_pki("Cache Signer")
    names = ["n0", "n1", "n2"]
    digests = {n: oci.make_image(reg.url, f"nc/{n}", "1") for n in names}
    for n in names:
        notation_sign.sign_image(reg.url, f"nc/{n}", digests[n], pki.chain)
    policy_path, store_dir = notation_sign.write_trust_material(tmp_path / "trust", {"sigaudit": [pki.root]})
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                      f"  insecureRegistries: ['{reg.host}']\n  rules:\n    - name: n\n      images: ['{reg.host}/*']\n"
                      f"      verifiers: [{{notation: {{trustPolicy: {policy_path}, trustStore: {store_dir}}}}}]\n")
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("ns", f"p-{n}", [("c", f"{reg.host}/nc/{n}:1", f"{reg.host}/nc/{n}@{d}")]) for n, d in digests.items()]}))
    db = f"sqlite:///{tmp_path / 'n.db'}"
    before = reg.request_count()
    assert {i["status"] for i in scan(pods, policy, db)["images"]} == {"verified"}
    cold = reg.request_count() - before
    before = reg.request_count()
    assert {i["status"] for i in scan(pods, policy, db)["images"]} == {"verified"}
    warm = reg.request_count() - before
    # One referrers listing per digest, plus one probe per registry for the referrers API.
    assert warm <= len(names) + 1 < cold, (cold, warm)
