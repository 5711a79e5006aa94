"""A cold scan reads one tag list per repository with many running digests instead of a 404 per
unsigned digest (issue 19), counted in the real docker-registry's access log; the verdicts and an
evidence pack that replays them offline are unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
from tests.harness.demo import _pod

pytestmark = pytest.mark.integration


def sigaudit(*args: str, netns: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "scanner.cli", *args]
    if netns:
        if shutil.which("unshare") is None or os.geteuid() != 0:
            pytest.fail("verify-evidence is tested in a network namespace: needs unshare and root")
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=os.environ.copy())


def test_a_cold_scan_answers_absent_signature_tags_from_one_tag_list(registry_factory, tmp_path: Path) -> None:
    reg = registry_factory()
    key = KeyPair.ecdsa()
    names = ["signed", "bare1", "bare2", "bare3"]
    digests = {n: oci.make_image(reg.url, "team/app", n) for n in names}
    sign_image(reg.url, reg.host, "team/app", digests["signed"], key)
    lone = oci.make_image(reg.url, "team/lone", "1")  # a repository with one digest: asked per tag
    (tmp_path / "k.pub").write_text(key.public_pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  insecureRegistries: "
                      f"['{reg.host}']\n  rules:\n    - name: r\n      images: ['{reg.host}/*']\n"
                      "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    pods = tmp_path / "pods.json"
    items = [_pod("ns", f"p-{n}", [("c", f"{reg.host}/team/app:{n}", f"{reg.host}/team/app@{d}")])
             for n, d in digests.items()]
    items.append(_pod("ns", "p-lone", [("c", f"{reg.host}/team/lone:1", f"{reg.host}/team/lone@{lone}")]))
    pods.write_text(json.dumps({"kind": "List", "items": items}))
    priv = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ev.key").write_bytes(priv.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (tmp_path / "ev.pub").write_bytes(priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    before = len(reg.requests())
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--db", f"sqlite:///{tmp_path / 's.db'}",
                 "-o", "json", "--no-progress", "--cluster", "c", "--evidence", str(tmp_path / "ev.tar.gz"),
                 "--evidence-key", str(tmp_path / "ev.key"))
    assert r.returncode == 1, r.stderr
    images = json.loads(r.stdout)["images"]
    status = {i["repository"].rsplit("/", 1)[-1] + "@" + i["digest"]: i["status"] for i in images}
    assert status == {**{f"app@{d}": "verified" if n == "signed" else "unsigned" for n, d in digests.items()},
                      f"lone@{lone}": "unsigned"}
    seen = [f"{q.method} {q.path} {q.status}" for q in reg.requests()[before:]]
    app = [s for s in seen if s.split()[1].startswith("/v2/team/app/")]
    # team/app: one listing; the .sig of the signed digest and its payload; nothing per unsigned digest
    # (neither its .sig tag nor, for the rule's lazy bundle lookup, its referrers tag)
    # (the manifests fetched by digest are the evidence pack's image manifests; one referrers API probe per registry)
    assert [s for s in app if "/manifests/sha256-" in s] == [
        f"GET /v2/team/app/manifests/{sig_tag(digests['signed'])} 200"]
    assert [s for s in app if "/tags/list" in s] == ["GET /v2/team/app/tags/list?n=1000 200"]
    # team/lone (one digest, below the threshold): its own .sig 404, as before
    assert f"GET /v2/team/lone/manifests/{sig_tag(lone)} 404" in seen
    assert not any("/v2/team/lone/tags/list" in s for s in seen)

    # The pack replays every verdict offline, the tag list's "not there" included.
    v = sigaudit("verify-evidence", str(tmp_path / "ev.tar.gz"), "--key", str(tmp_path / "ev.pub"), "-o", "json",
                 netns=True)
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["ok"]
