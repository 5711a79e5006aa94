"""kritis' public PKIX vectors (tests/data/kritis, see PROVENANCE.md) through sigaudit's attestation checks:
every algorithm Binary Authorization / kritis allow verifies, and a tampered payload or a wrong key does not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scanner.errors import ParseError
from scanner.verify.attestation import parse_pkix_pem, verify_pkix

DATA = json.loads((Path(__file__).parents[2] / "data" / "kritis" / "verify_detached_vectors.json").read_text())
CASES = DATA["cases"]


def _sig(name: str) -> bytes:
    s = DATA["signatures"][name]
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_all_thirteen_cases_are_present() -> None:
    assert len(CASES) == 13 and sum(not c["expected_error"] for c in CASES) == 11


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_kritis_vector(case: dict) -> None:
    payload = DATA["payload"].encode()
    pem = DATA["public_keys"][case["public_key"]].encode()
    if case["expected_error"]:
        with pytest.raises(ParseError):
            parse_pkix_pem(pem)
        return
    key = parse_pkix_pem(pem)
    alg = verify_pkix(key, _sig(case["signature"]), payload)
    assert alg is not None
    # The algorithm family we report is the one kritis names.
    family = case["signing_algorithm"]
    assert ("PSS" in alg) == family.startswith("RsaPss")
    assert ("SHA512" in alg) == family.endswith("Sha512")
    # The same signature over other bytes fails (exact serializedPayload bytes are what count).
    assert verify_pkix(key, _sig(case["signature"]), payload + b" ") is None


def test_signature_under_another_key_fails() -> None:
    key = parse_pkix_pem(DATA["public_keys"]["rsa3072PubKey"].encode())
    assert verify_pkix(key, _sig("rsa2048_256Sig"), DATA["payload"].encode()) is None
