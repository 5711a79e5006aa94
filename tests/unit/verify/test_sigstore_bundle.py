"""Sigstore bundles and the trust root's validity periods (``validFor``) at the signing time.

sigstore-python trusts every Fulcio CA and every Rekor key of a trusted root whatever its
``validFor``; a CA or log retired from the root (rotated out, or compromised) would still vouch
for what it signs after its retirement. The bundles are public conformance vectors used as they
are; only the trusted root is edited (an end date before the signing time), as a TUF update that
retires a CA or a log does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from scanner.models import CheckName, Outcome, SignatureFailure
from scanner.verify.identity import IdentityMatcher
from scanner.verify.sigstore_bundle import verify_bundle
from scanner.verify.trustroot import SigstoreTrust, trust_from_json
from tests.vectors import VECTORS

CONF = VECTORS / "sigstore-conformance"
CASES = {c["id"]: c for c in json.loads((CONF / "cases.json").read_text())["cases"]}
RETIRED = {"start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}


def _root(case: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((CONF / case["trusted_root"]).read_text())
    return doc


def _trust(doc: dict[str, Any]) -> SigstoreTrust:
    return trust_from_json(json.dumps(doc).encode(), source="edited trusted_root.json")


def _verify(case_id: str, doc: dict[str, Any]) -> Any:
    case = CASES[case_id]
    vw = case["verify_with"]
    kw: dict[str, Any] = {}
    if "key" in vw:
        kw["public_key"] = serialization.load_pem_public_key((CONF / vw["key"]).read_bytes())
    else:
        kw["identities"] = [IdentityMatcher.exact(subject=vw["certificate_identity"],
                                                  issuer=vw["certificate_oidc_issuer"])]
    return verify_bundle((CONF / case["bundle"]).read_bytes(), case["artifact_sha256"], trust=_trust(doc), **kw)


KEYLESS = "happy-path-intoto-in-dsse-v3"  # signed 2024-12-16, production root
MANAGED_KEY = "managed-key-happy-path"  # signed 2025-12-18, production root (log entry + TSA)


def test_the_vectors_verify_with_the_root_as_published() -> None:
    for case_id in (KEYLESS, MANAGED_KEY):
        res = _verify(case_id, _root(CASES[case_id]))
        assert res.outcome is Outcome.PASSED, (case_id, res.reason)


def test_a_fulcio_ca_retired_before_the_signing_time_does_not_vouch() -> None:
    doc = copy.deepcopy(_root(CASES[KEYLESS]))
    for ca in doc["certificateAuthorities"]:
        ca["validFor"] = dict(RETIRED)  # the X.509 certificates themselves stay valid for years
    res = _verify(KEYLESS, doc)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID, res.reason
    assert "no Fulcio CA of the trust root is valid at 2024-12-16" in res.reason


def test_only_the_ca_that_issued_the_certificate_counts() -> None:
    """Retiring the CA that issued the certificate is enough, even with another CA valid then."""
    doc = copy.deepcopy(_root(CASES[KEYLESS]))
    current = [ca for ca in doc["certificateAuthorities"] if "end" not in ca["validFor"]]
    assert current
    for ca in current:
        ca["validFor"] = dict(RETIRED)
    doc["certificateAuthorities"][0]["validFor"] = {"start": "2020-01-01T00:00:00Z"}  # the old CA, open-ended
    res = _verify(KEYLESS, doc)
    assert res.outcome is Outcome.FAILED, res.reason
    assert any(c.name is CheckName.AUTHENTICITY and "does not chain" in c.reason for c in res.checks), res.reason


@pytest.mark.parametrize("case_id", [KEYLESS, MANAGED_KEY])
def test_a_log_key_retired_before_the_integrated_time_does_not_vouch(case_id: str) -> None:
    doc = copy.deepcopy(_root(CASES[case_id]))
    for t in doc["tlogs"]:
        t["publicKey"]["validFor"] = dict(RETIRED)
    res = _verify(case_id, doc)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID, res.reason
    assert "is not valid at the entry's integrated time" in res.reason
    assert any(c.name is CheckName.TLOG and c.outcome is Outcome.FAILED for c in res.checks)


def test_validity_end_is_inclusive(tmp_path: Path) -> None:
    """protobuf-specs TimeRange is a closed interval: a CA whose end is the signing instant still counts."""
    doc = copy.deepcopy(_root(CASES[KEYLESS]))
    for ca in doc["certificateAuthorities"]:
        if "end" not in ca["validFor"]:
            ca["validFor"]["end"] = "2024-12-16T18:42:56Z"
    assert _verify(KEYLESS, doc).outcome is Outcome.PASSED


REKOR_V2 = "rekor2-happy-path"  # hashedrekord 0.0.2: no integrated time, the TSA gives the time (2025-06-12)


def test_the_rekor_v2_vector_verifies_with_its_root() -> None:
    res = _verify(REKOR_V2, _root(CASES[REKOR_V2]))
    assert res.outcome is Outcome.PASSED, res.reason


def test_a_log_key_retired_before_the_timestamp_does_not_prove_a_rekor_v2_entry() -> None:
    """An entry proven only by its checkpoint has no time of its own: the log key must be valid at
    the verified (TSA) time. sigstore-python proves it with any key of the root."""
    doc = copy.deepcopy(_root(CASES[REKOR_V2]))
    for t in doc["tlogs"]:
        t["publicKey"]["validFor"] = dict(RETIRED)
    res = _verify(REKOR_V2, doc)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID, res.reason
    assert "transparency log (Rekor)" in res.reason and "is not valid at the verified signing time" in res.reason
    assert "retired at 2021-01-01" in res.reason


@pytest.mark.parametrize("case_id", [KEYLESS, REKOR_V2])
def test_a_ct_key_retired_before_the_signing_time_does_not_vouch_for_the_sct(case_id: str) -> None:
    """sigstore-python verifies the SCT with every CT key of the root whatever its validFor."""
    doc = copy.deepcopy(_root(CASES[case_id]))
    for t in doc["ctlogs"]:
        t["publicKey"]["validFor"] = dict(RETIRED)
    res = _verify(case_id, doc)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID, res.reason
    assert "SCT: the key of CT log" in res.reason and "retired at 2021-01-01" in res.reason


def test_a_tsa_retired_before_its_timestamp_gives_no_time() -> None:
    doc = copy.deepcopy(_root(CASES[REKOR_V2]))
    for t in doc["timestampAuthorities"]:
        t["validFor"] = dict(RETIRED)
    res = _verify(REKOR_V2, doc)
    assert res.outcome is Outcome.FAILED, res.reason
    assert "not enough sources of verified time" in res.reason


def test_material_valid_at_keeps_only_what_covers_every_time() -> None:
    from datetime import UTC, datetime

    from scanner.verify.trustroot import material_valid_at

    doc = copy.deepcopy(_root(CASES[KEYLESS]))
    n_cas = len(doc["certificateAuthorities"])
    doc["ctlogs"][0]["publicKey"]["validFor"] = dict(RETIRED)
    kept = json.loads(material_valid_at(_trust(doc), [datetime(2024, 12, 16, tzinfo=UTC)]).raw)
    assert len(kept["ctlogs"]) == len(doc["ctlogs"]) - 1
    assert 0 < len(kept["certificateAuthorities"]) < n_cas  # the CAs retired before 2024 are gone
    assert all("end" not in ca["validFor"] or ca["validFor"]["end"] >= "2024-12-16"
               for ca in kept["certificateAuthorities"])
