"""The evidence pack's signed formats against the real upstream verifiers (issue #23).

- ``slsa-verifier verify-vsa`` (v2.7.1, built from the module proxy) accepts the VSAs sigaudit signs with
  a file key of every type it supports (ECDSA P-256/P-384, Ed25519, RSA) and with an AWS KMS key (moto,
  in server mode), given only ``--public-key-path``; and refuses a flipped byte, another digest, another
  resource URI, another verifier id, a level the VSA does not carry, another key and a FAILED VSA.
- A canary: slsa-verifier still refuses the spec's ``SLSA_BUILD_LEVEL_UNEVALUATED`` (why sigaudit does
  not write it). When this fails, upstream parses it: sigaudit may start writing it.
- ``cosign verify-blob-attestation --key`` (cosign v2 and v3) accepts the same DSSE envelopes, offline.
- The DSSE keyid is the id go-securesystemslib computes for a key (its OpenSSH SHA-256 fingerprint): the
  first test passes for every key type only because slsa-verifier does not skip the signature.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scanner.errors import ConfigError
from scanner.evidence import dsse, vsa
from tests.harness.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.tools]

REPO = "registry.local:5000/team/web"
HEX = "3" * 64
DIGEST = f"sha256:{HEX}"
OTHER = "sha256:" + "4" * 64
BASE = vsa.VsaInput(
    repository=REPO, digest=DIGEST, verifier_version="0.1.0",
    time_verified=datetime(2026, 12, 7, 8, 0, tzinfo=UTC), policy_uri="policy/policy.yaml",
    policy_digest={"sha256": "5" * 64},
    input_attestations=[(f"images/{DIGEST}/cosign/sig-layer-0.json", {"sha256": "6" * 64})],
    passed=True, verified_levels=vsa.levels_for("verified"),
    workloads=[{"namespace": "prod", "kind": "Deployment", "name": "web", "containers": ["app"]}],
    status="verified", reasons=("signed by the release key",),
)
KEYS = {
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ecdsa-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "rsa-3072": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
}


def _write_key(path: Path, kind: str = "ecdsa-p256") -> Path:
    key = KEYS[kind]()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _sign(v: vsa.VsaInput, signer: dsse.Signer, statement: dict | None = None) -> dict:
    st = statement if statement is not None else vsa.vsa_statement(v)
    return dsse.sign_envelope(vsa.PAYLOAD_TYPE, json.dumps(st, sort_keys=True).encode(), signer)


def verify_vsa(tmp: Path, envelope: dict | bytes, public_pem: bytes, *, digest: str = DIGEST,
               resource: str = f"{REPO}@{DIGEST}", verifier_id: str = vsa.VERIFIER_ID,
               levels: tuple[str, ...] = (vsa.SIGNATURE_VERIFIED,)) -> subprocess.CompletedProcess[str]:
    exe = require_tool("slsa-verifier")
    att = tmp / "vsa.intoto.json"
    att.write_bytes(envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode())
    pub = tmp / "vsa-key.pub"
    pub.write_bytes(public_pem)
    args = [str(exe), "verify-vsa", "--attestation-path", str(att), "--public-key-path", str(pub),
            "--subject-digest", digest, "--verifier-id", verifier_id, "--resource-uri", resource]
    for level in levels:
        args += ["--verified-level", level]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp)})


def _passed(r: subprocess.CompletedProcess[str]) -> bool:
    return r.returncode == 0 and "Verifying VSA: PASSED" in r.stderr


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_slsa_verifier_accepts_sigaudit_vsas_with_only_the_public_key(tmp_path: Path, kind: str) -> None:
    signer = dsse.signer_from(str(_write_key(tmp_path / "k.pem", kind)))
    r = verify_vsa(tmp_path, _sign(BASE, signer), signer.public_key_pem())
    assert _passed(r), r.stderr


def test_slsa_verifier_refuses_what_the_vsa_does_not_say(tmp_path: Path) -> None:
    signer = dsse.signer_from(str(_write_key(tmp_path / "k.pem")))
    pem = signer.public_key_pem()
    env = _sign(BASE, signer)
    assert _passed(verify_vsa(tmp_path, env, pem))
    assert not _passed(verify_vsa(tmp_path, env, pem, digest=OTHER))
    assert not _passed(verify_vsa(tmp_path, env, pem, resource=f"{REPO}@{OTHER}"))
    assert not _passed(verify_vsa(tmp_path, env, pem, resource=f"{REPO}-evil@{DIGEST}"))
    assert not _passed(verify_vsa(tmp_path, env, pem, verifier_id="https://example.com/other-verifier"))
    assert not _passed(verify_vsa(tmp_path, env, pem, levels=(vsa.SIGNATURE_VERIFIED, "SLSA_BUILD_LEVEL_1")))
    assert not _passed(verify_vsa(tmp_path, env, pem, levels=("SIGAUDIT_OTHER",)))
    # An exempt image's VSA passes the policy but never claims a verified signature.
    exempt = _sign(replace(BASE, status="exempt", verified_levels=vsa.levels_for("exempt")), signer)
    assert _passed(verify_vsa(tmp_path, exempt, pem, levels=(vsa.EXEMPTED,)))
    assert not _passed(verify_vsa(tmp_path, exempt, pem))
    # A failed verdict's VSA is signed as well, and refused.
    failed = _sign(replace(BASE, status="invalid", passed=False, verified_levels=vsa.levels_for("invalid")), signer)
    assert not _passed(verify_vsa(tmp_path, failed, pem, levels=()))
    # Another key.
    other = dsse.signer_from(str(_write_key(tmp_path / "other.pem")))
    assert not _passed(verify_vsa(tmp_path, env, other.public_key_pem()))
    assert not _passed(verify_vsa(tmp_path, _sign(BASE, other), pem))


def test_slsa_verifier_refuses_a_flipped_byte(tmp_path: Path) -> None:
    signer = dsse.signer_from(str(_write_key(tmp_path / "k.pem")))
    pem = signer.public_key_pem()
    env = _sign(BASE, signer)
    payload = bytearray(base64.b64decode(env["payload"]))
    for i in (payload.index(b"SIGAUDIT"), payload.index(b"PASSED") + 1, payload.index(HEX.encode()) + 5, 0):
        flipped = bytearray(payload)
        flipped[i] ^= 0x01
        r = verify_vsa(tmp_path, {**env, "payload": base64.b64encode(bytes(flipped)).decode()}, pem)
        assert not _passed(r), i
        with pytest.raises(dsse.EvidenceError):
            dsse.verify_envelope({**env, "payload": base64.b64encode(bytes(flipped)).decode()}, pem)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[-3] ^= 0x01
    bad = {**env, "signatures": [{**env["signatures"][0], "sig": base64.b64encode(bytes(sig)).decode()}]}
    assert not _passed(verify_vsa(tmp_path, bad, pem))


def test_canary_slsa_verifier_still_refuses_slsa_build_level_unevaluated(tmp_path: Path) -> None:
    """Why sigaudit leaves the build track out instead of writing the spec's UNEVALUATED (vsa.py)."""
    signer = dsse.signer_from(str(_write_key(tmp_path / "k.pem")))
    st = vsa.vsa_statement(BASE)
    st["predicate"]["verifiedLevels"] = [vsa.UNEVALUATED, vsa.SIGNATURE_VERIFIED]
    r = verify_vsa(tmp_path, _sign(BASE, signer, st), signer.public_key_pem())
    assert not _passed(r) and "invalid SLSA level" in r.stderr, r.stderr


def test_a_keyid_the_verifier_does_not_compute_makes_slsa_verifier_skip_the_signature(tmp_path: Path) -> None:
    """Why the keyid is the OpenSSH fingerprint: with any other id, --public-key-path alone fails."""
    signer = dsse.signer_from(str(_write_key(tmp_path / "k.pem")))
    env = _sign(BASE, signer)
    env["signatures"][0]["keyid"] = "0" * 64
    assert not _passed(verify_vsa(tmp_path, env, signer.public_key_pem()))
    # ... and sigaudit's own verifier does not let the keyid decide anything.
    assert dsse.verify_envelope(env, signer.public_key_pem())[0] == vsa.PAYLOAD_TYPE


@pytest.mark.parametrize("tool", ["cosign", "cosign3"])
def test_cosign_verify_blob_attestation_accepts_the_envelope(tmp_path: Path, tool: str) -> None:
    exe = require_tool(tool)
    signer = dsse.signer_from(str(_write_key(tmp_path / "k.pem")))
    (tmp_path / "vsa.pub").write_bytes(signer.public_key_pem())

    def run(envelope: dict, digest: str = HEX) -> subprocess.CompletedProcess[str]:
        (tmp_path / "vsa.intoto.json").write_text(json.dumps(envelope))
        return subprocess.run(
            [str(exe), "verify-blob-attestation", "--key", str(tmp_path / "vsa.pub"),
             "--signature", str(tmp_path / "vsa.intoto.json"), "--type", vsa.PREDICATE_TYPE,
             "--insecure-ignore-tlog", "--digest", digest, "--digestAlg", "sha256"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "HOME": str(tmp_path), "TUF_ROOT": "/nonexistent-sigaudit"})

    env = _sign(BASE, signer)
    r = run(env)
    assert r.returncode == 0 and "Verified OK" in r.stderr, r.stderr
    assert run(env, digest="4" * 64).returncode != 0
    payload = bytearray(base64.b64decode(env["payload"]))
    payload[payload.index(b"PASSED")] ^= 0x01
    assert run({**env, "payload": base64.b64encode(bytes(payload)).decode()}).returncode != 0


def test_an_aws_kms_key_signs_vsas_slsa_verifier_accepts(tmp_path: Path, moto_kms, monkeypatch) -> None:
    for k, v in moto_kms.env.items():
        monkeypatch.setenv(k, v)
    arn = moto_kms.create_key("ECC_NIST_P256")
    signer = dsse.signer_from(f"awskms:///{arn}")
    pem = signer.public_key_pem()
    assert signer.keyid == dsse.keyid_of(pem)
    env = _sign(BASE, signer)
    assert _passed(verify_vsa(tmp_path, env, pem))
    assert dsse.verify_envelope(env, pem, payload_type=vsa.PAYLOAD_TYPE)[0] == vsa.PAYLOAD_TYPE
    # Beyond KMS' 4 KiB RAW limit the digest is sent (MessageType DIGEST). moto does not implement
    # DIGEST (it hashes the digest again), so its signature does not verify: the signer checks every
    # signature against the public key and refuses it rather than hand out a pack nobody can verify.
    big = replace(BASE, workloads=[{"namespace": "prod", "kind": "Pod", "name": f"p{i}"} for i in range(500)])
    with pytest.raises(dsse.KmsSigningError, match="does not verify"):  # the KMS failed: exit 3
        _sign(big, signer)
    # An RSA key signs too (PKCS#1 v1.5, SHA-256).
    rsa_signer = dsse.signer_from(f"awskms:///{moto_kms.create_key('RSA_3072')}")
    assert _passed(verify_vsa(tmp_path, _sign(BASE, rsa_signer), rsa_signer.public_key_pem()))


def test_an_unreachable_kms_is_a_config_error_naming_the_key(tmp_path: Path, monkeypatch) -> None:
    from tests.harness.fixtures_kms import FAKE_AWS
    from tests.harness.tools import free_port

    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    ref = "awskms:///alias/evidence"
    with pytest.raises(ConfigError) as err:
        dsse.signer_from(ref)
    assert ref in str(err.value)
    assert "testing" not in str(err.value)
