"""Keyless cosign (legacy ``.sig`` layout) and the policy's own log keys on the public-good root.

A Rekor key (``keyless.rekor.pubkey`` / ``rekorPubKey``) or a CT key (``keyless.ctlog.pubkey``) given
without ``keyless.roots`` or ``trustedRoot`` was once read only beside ``keyless.roots``: on the
public-good root the policy's key was passed over and the public Rekor decided. The public-good root
is the vector's production ``trusted_root.json``, injected as the TUF client would return it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.models import CheckName, Outcome
from scanner.policy.schema import CosignVerifierSpec
from scanner.verify.cosign_keyless import CosignKeylessVerifier
from scanner.verify.trustroot import SigstoreTrust, load_trusted_root_file
from tests.unit.verify.test_cosign_keyless_vectors import (
    COSIGN,
    KEYLESS_DIGEST,
    LEGACY,
    NOW,
    _image,
    _layers,
    _legacy_keyless,
    _material,
)

TRUST = LEGACY / "keyless-trust"


def _public_good() -> SigstoreTrust:
    return load_trusted_root_file(LEGACY / "production.trusted_root.json")


def _other_key(tmp: Path) -> str:
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp / "other.pub").write_bytes(pem)
    return str(tmp / "other.pub")


def _verify(spec: dict[str, Any]) -> Any:
    doc = {"keyless": {"identities": [{"issuer": "https://github.com/login/oauth", "subjectRegExp": "philipp\\..*"}],
                       **spec.pop("keyless", {})}, **spec}
    v = CosignKeylessVerifier.from_spec(CosignVerifierSpec.model_validate(doc), base_dir=COSIGN,
                                        public_good=_public_good)
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
    return res


def test_control_the_public_good_root_verifies() -> None:
    assert _verify({}).outcome is Outcome.PASSED


@pytest.mark.parametrize("where", ["keyless.rekor", "rekorPubKey"])
def test_a_rekor_key_on_the_public_good_root_is_enforced(where: str, tmp_path: Path) -> None:
    other = _other_key(tmp_path)
    spec: dict[str, Any] = {"keyless": {"rekor": {"pubkey": other}}} if where == "keyless.rekor" else {
        "rekorPubKey": other}
    res = _verify(spec)
    assert res.outcome is Outcome.FAILED, res.reason
    assert any(c.name is CheckName.TLOG and c.outcome is Outcome.FAILED for c in res.checks), res.reason
    # The log's own key, given the same way, verifies: the field is read, not failing everything.
    own = str(TRUST / "rekor.pub.pem")
    spec = {"keyless": {"rekor": {"pubkey": own}}} if where == "keyless.rekor" else {"rekorPubKey": own}
    assert _verify(spec).outcome is Outcome.PASSED


def test_a_ct_key_on_the_public_good_root_is_enforced(tmp_path: Path) -> None:
    res = _verify({"keyless": {"ctlog": {"pubkey": _other_key(tmp_path)}}})
    assert res.outcome is Outcome.FAILED and "SCT" in res.reason, res.reason
    assert _verify({"keyless": {"ctlog": {"pubkey": str(TRUST / "ctlog.pub.pem")}}}).outcome is Outcome.PASSED
