"""Retired trust material (the trust root's ``validFor``) vouches for nothing, on real signatures
judged by the real ``sigaudit scan`` (issue #26 item 1).

The signatures are made now by real tools against the offline mock Fulcio/Rekor/CT
(``tests/sigstore_mock``) and pushed to the real docker-registry:

* a keyless Sigstore bundle by ``@sigstore/cli`` (DSSE, Rekor dsse 0.0.1 entry with SET, SCT);
* a keyless legacy ``.sig`` (the mock Fulcio's certificate, the mock Rekor's SET);
* a key-signed Sigstore bundle by the real ``cosign3 sign --new-bundle-format --rekor-url <mock>``;
* a keyless Sigstore bundle by the real ``cosign3 sign --identity-token`` against the mock Fulcio/Rekor.

The mock's own ``trusted_root.json`` is then edited as a TUF update that retires a CA or a key
does: its ``validFor`` ends in 2021, years before the signing time (the certificates and keys stay
as they are). sigstore-python reads ``validFor`` only for TSAs.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import oci
from tests.harness.cosign_sign import simplesigning_payload
from tests.harness.demo import _pod
from tests.harness.tools import require_tool
from tests.sigstore_mock.harness import (
    MockSigstore,
    attach_bundle,
    cosign_sign_statement,
    id_token,
    push_keyless_sig,
)

pytestmark = pytest.mark.integration

SUBJECT = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
REPO = "validity"
RETIRED = {"start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def estate(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("validity")
    cosign3 = require_tool("cosign3")
    with MockSigstore.start(d / "mock") as mock:
        refs: dict[str, str] = {}
        pushed = oci.push_image(registry.url, f"{REPO}/keyless-bundle", "v1")
        bundle = mock.attest(cosign_sign_statement(pushed.digest), subject=SUBJECT, issuer=ISSUER)
        attach_bundle(registry.url, f"{REPO}/keyless-bundle", pushed, bundle, referrers_api=False)
        refs["keyless-bundle"] = f"{registry.host}/{REPO}/keyless-bundle@{pushed.digest}"

        pushed = oci.push_image(registry.url, f"{REPO}/keyless-sig", "v1")
        payload = simplesigning_payload(f"{registry.host}/{REPO}/keyless-sig", pushed.digest)
        push_keyless_sig(registry.url, f"{REPO}/keyless-sig", pushed.digest,
                         [(payload, mock.legacy_signature(payload, subject=SUBJECT, issuer=ISSUER))])
        refs["keyless-sig"] = f"{registry.host}/{REPO}/keyless-sig@{pushed.digest}"

        env = {**os.environ, "COSIGN_PASSWORD": "", "TUF_ROOT": "/nonexistent-sigaudit"}
        r = subprocess.run([str(cosign3), "generate-key-pair"], cwd=d, capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        pushed = oci.push_image(registry.url, f"{REPO}/key-bundle", "v1")
        ref = f"{registry.host}/{REPO}/key-bundle@{pushed.digest}"
        r = subprocess.run([str(cosign3), "sign", "--key", str(d / "cosign.key"), "--new-bundle-format",
                            "--use-signing-config=false", "--rekor-url", mock.url, "--trusted-root",
                            str(mock.trusted_root), "--allow-http-registry", "-y", ref],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        refs["key-bundle"] = ref

        # cosign v3 keyless (sigstore-go): Fulcio certificate, Rekor entry and SCT from the mock.
        pushed = oci.push_image(registry.url, f"{REPO}/keyless-cosign3", "v1")
        ref = f"{registry.host}/{REPO}/keyless-cosign3@{pushed.digest}"
        r = subprocess.run([str(cosign3), "sign", "--identity-token", id_token(SUBJECT, ISSUER), "--fulcio-url",
                            mock.url, "--rekor-url", mock.url, "--new-bundle-format", "--use-signing-config=false",
                            "--trusted-root", str(mock.trusted_root), "--allow-http-registry", "-y", ref],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        refs["keyless-cosign3"] = ref
        root = json.loads(mock.trusted_root.read_text())
    return {"refs": refs, "root": root, "pub": d / "cosign.pub", "host": registry.host}


def scan(tmp: Path, estate: dict[str, Any], root: dict[str, Any], **keyless_fields: Any) -> dict[str, dict[str, Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "trusted_root.json").write_text(json.dumps(root))
    host = estate["host"]
    keyless = {"cosign": {"keyless": {"identities": [{"subject": SUBJECT, "issuer": ISSUER}],
                                      "trustedRoot": str(tmp / "trusted_root.json")}, **keyless_fields}}
    key = {"cosign": {"key": str(estate["pub"]), "trustedRoot": str(tmp / "trusted_root.json")}}
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
              "spec": {"insecureRegistries": [host],
                       "rules": [{"name": "keyless", "images": [f"{host}/{REPO}/keyless-*"], "verifiers": [keyless]},
                                 {"name": "key", "images": [f"{host}/{REPO}/key-bundle"], "verifiers": [key]}]}}
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    pods = [_pod("ns", f"p{n}", [("c", ref, ref)]) for n, ref in enumerate(estate["refs"].values())]
    (tmp / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(tmp / "pods.json"),
                        "--policy", str(tmp / "policy.yaml"), "--no-store", "-o", "json", "--no-progress"],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})
    assert r.returncode in (0, 1), r.stderr[-3000:]
    by_digest = {i["digest"]: i for i in json.loads(r.stdout)["images"]}
    return {name: by_digest[ref.split("@")[1]] for name, ref in estate["refs"].items()}


def reasons(d: dict[str, Any]) -> str:
    return " | ".join([*d["reasons"], *(s["reason"] for s in d["signatures"])])


def retire(root: dict[str, Any], what: str) -> dict[str, Any]:
    doc = copy.deepcopy(root)
    if what == "ca":
        for ca in doc["certificateAuthorities"]:
            ca["validFor"] = dict(RETIRED)
    else:
        for log in doc["tlogs" if what == "rekor" else "ctlogs"]:
            log["publicKey"]["validFor"] = dict(RETIRED)
    return doc


def test_control_every_signature_verifies_with_the_root_as_published(estate: dict[str, Any], tmp_path: Path) -> None:
    got = scan(tmp_path, estate, estate["root"])
    assert {n: d["status"] for n, d in got.items()} == dict.fromkeys(estate["refs"], "verified"), \
        {n: reasons(d) for n, d in got.items()}


@pytest.mark.parametrize(("what", "hit", "needle"), [
    ("ca", ("keyless-bundle", "keyless-sig", "keyless-cosign3"), "no Fulcio CA of the trust root is valid at"),
    ("rekor", ("keyless-bundle", "keyless-sig", "key-bundle", "keyless-cosign3"), "not valid at"),
    ("ct", ("keyless-bundle", "keyless-sig", "keyless-cosign3"), "SCT: the key of CT log"),
])
def test_retired_material_vouches_for_nothing(what: str, hit: tuple[str, ...], needle: str,
                                               estate: dict[str, Any], tmp_path: Path) -> None:
    got = scan(tmp_path, estate, retire(estate["root"], what))
    for name, d in got.items():
        if name in hit:
            assert d["status"] == "invalid", (name, reasons(d))
            assert needle in reasons(d), (name, reasons(d))
            if what != "ca":
                assert "retired at 2021-01-01" in reasons(d) or "was not valid at integrated time" in reasons(d), \
                    (name, reasons(d))
        else:  # the key bundle uses no CA or CT key
            assert d["status"] == "verified", (name, reasons(d))


def test_ignore_sct_holds_for_keyless_bundles_and_sig_alike(estate: dict[str, Any], tmp_path: Path) -> None:
    """A CT log the root does not know (another key): with ``ignoreSCT: true`` the SCT is not asked
    of either format; everything else still is (the CA, the log entry, the identity)."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = copy.deepcopy(estate["root"])
    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for log in root["ctlogs"]:
        log["publicKey"]["rawBytes"] = base64.b64encode(der).decode()
        log["logId"]["keyId"] = base64.b64encode(hashlib.sha256(der).digest()).decode()
    got = scan(tmp_path / "required", estate, root)
    assert got["keyless-bundle"]["status"] == got["keyless-sig"]["status"] == "invalid"
    assert got["keyless-cosign3"]["status"] == "invalid"
    got = scan(tmp_path / "ignored", estate, root, ignoreSCT=True)
    assert {n: d["status"] for n, d in got.items()} == dict.fromkeys(estate["refs"], "verified"), \
        {n: reasons(d) for n, d in got.items()}
    got = scan(tmp_path / "ca-retired", estate, retire(root, "ca"), ignoreSCT=True)
    assert got["keyless-bundle"]["status"] == got["keyless-sig"]["status"] == "invalid"
