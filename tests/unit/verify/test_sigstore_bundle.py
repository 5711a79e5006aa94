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
from datetime import UTC, datetime
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


# ----------------------------------------------------------------------------------------------
# ignoreTlog / ignoreSCT hold for certificate bundles as for the legacy .sig (issue #26 item 6).
# sigstore-python requires one log entry and an SCT, so the fields were silently ignored for bundles.


def _without_log(case_id: str) -> bytes:
    doc = json.loads((CONF / CASES[case_id]["bundle"]).read_text())
    doc["verificationMaterial"]["tlogEntries"] = []
    return json.dumps(doc).encode()


def _keyless(case_id: str, doc: dict[str, Any], bundle: bytes | None = None, **kw: Any) -> Any:
    case = CASES[case_id]
    vw = case["verify_with"]
    ident = IdentityMatcher.exact(subject=vw["certificate_identity"], issuer=vw["certificate_oidc_issuer"])
    blob = bundle if bundle is not None else (CONF / case["bundle"]).read_bytes()
    return verify_bundle(blob, case["artifact_sha256"], trust=_trust(doc), identities=[ident], **kw)


def _no_ct(case_id: str) -> dict[str, Any]:
    """The case's root with another CT log's key: the certificate's SCT verifies with no key of it."""
    from cryptography.hazmat.primitives.asymmetric import ec

    doc = copy.deepcopy(_root(CASES[case_id]))
    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    import hashlib

    for log in doc["ctlogs"]:
        log["publicKey"]["rawBytes"] = base64.b64encode(der).decode()
        log["logId"]["keyId"] = base64.b64encode(hashlib.sha256(der).digest()).decode()
    return doc


def test_a_keyless_bundle_without_a_log_entry_needs_ignore_tlog() -> None:
    bundle = _without_log(REKOR_V2)  # its RFC 3161 timestamp stays: the only trusted time
    res = _keyless(REKOR_V2, _root(CASES[REKOR_V2]), bundle)
    assert res.outcome is Outcome.FAILED, res.reason
    res = _keyless(REKOR_V2, _root(CASES[REKOR_V2]), bundle, ignore_tlog=True)
    assert res.outcome is Outcome.PASSED, res.reason
    assert any(c.name is CheckName.TLOG and c.outcome is Outcome.SKIPPED for c in res.checks)
    assert res.signed_at is not None and res.signed_at.source.value == "tsa"


def test_ignore_tlog_still_needs_a_trusted_time_a_valid_ca_and_the_identity() -> None:
    bundle = _without_log(REKOR_V2)
    doc = copy.deepcopy(_root(CASES[REKOR_V2]))
    doc["timestampAuthorities"] = []
    res = _keyless(REKOR_V2, doc, bundle, ignore_tlog=True)
    assert res.outcome is Outcome.FAILED and "TSA" in res.reason, res.reason
    doc = copy.deepcopy(_root(CASES[REKOR_V2]))
    for ca in doc["certificateAuthorities"]:
        ca["validFor"] = dict(RETIRED)
    res = _keyless(REKOR_V2, doc, bundle, ignore_tlog=True)
    assert res.outcome is Outcome.FAILED and "no Fulcio CA of the trust root is valid" in res.reason, res.reason
    case = CASES[REKOR_V2]
    other = IdentityMatcher.exact(subject="https://github.com/evil/x",
                                  issuer=case["verify_with"]["certificate_oidc_issuer"])
    res = verify_bundle(bundle, case["artifact_sha256"], trust=_trust(_root(case)), identities=[other],
                        ignore_tlog=True)
    assert res.outcome is Outcome.FAILED and any(c.name is CheckName.IDENTITY for c in res.checks), res.reason
    # A digest the bundle does not sign.
    res = verify_bundle(bundle, "00" * 32, trust=_trust(_root(case)),
                        identities=[IdentityMatcher.exact(subject=case["verify_with"]["certificate_identity"],
                                                          issuer=case["verify_with"]["certificate_oidc_issuer"])],
                        ignore_tlog=True)
    assert res.outcome is Outcome.FAILED, res.reason


@pytest.mark.parametrize("case_id", [KEYLESS, REKOR_V2])
def test_ignore_sct_is_honoured_for_certificate_bundles(case_id: str) -> None:
    doc = _no_ct(case_id)
    res = _keyless(case_id, doc)
    assert res.outcome is Outcome.FAILED and "SCT" in res.reason, res.reason
    res = _keyless(case_id, doc, ignore_sct=True)
    assert res.outcome is Outcome.PASSED, res.reason
    assert any(c.outcome is Outcome.SKIPPED and "ignoreSCT" in c.reason for c in res.checks)
    # The log entry is still checked: a retired Rekor key fails it.
    doc2 = copy.deepcopy(doc)
    for t in doc2["tlogs"]:
        t["publicKey"]["validFor"] = dict(RETIRED)
    assert _keyless(case_id, doc2, ignore_sct=True).outcome is Outcome.FAILED


@pytest.mark.parametrize("field", ["ignoreTlog", "ignoreSCT", "keyless.ctlog.ignoreSCT"])
def test_the_keyless_verifier_passes_its_log_and_sct_fields_to_bundles(field: str, tmp_path: Path) -> None:
    """From the policy entry to the bundle: cosign: {keyless: ..., ignoreTlog/ignoreSCT: true}."""
    from scanner.models import Descriptor, ImageReference, ReferrerArtifact, RunningImage, SignatureMaterial
    from scanner.policy.schema import CosignVerifierSpec
    from scanner.verify.cosign_keyless import CosignKeylessVerifier

    case = CASES[REKOR_V2]
    if field == "ignoreTlog":
        doc, blob = _root(case), _without_log(REKOR_V2)
    else:
        doc, blob = _no_ct(REKOR_V2), (CONF / case["bundle"]).read_bytes()
    (tmp_path / "root.json").write_text(json.dumps(doc))
    vw = case["verify_with"]
    digest = f"sha256:{case['artifact_sha256']}"
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", digest, 1)
    ref = ReferrerArtifact("sha256:" + "ab" * 32, "application/vnd.dev.sigstore.bundle.v0.3+json",
                           "application/vnd.dev.sigstore.bundle.v0.3+json", blob, {}, subject)
    image = RunningImage(ImageReference("registry.example", "app", "v1", digest), ())
    material = SignatureMaterial(subject, referrers=(ref,))
    outcomes = {}
    for value in (False, True):
        keyless: dict[str, Any] = {"identities": [{"subject": vw["certificate_identity"],
                                                   "issuer": vw["certificate_oidc_issuer"]}],
                                   "trustedRoot": str(tmp_path / "root.json")}
        entry: dict[str, Any] = {"keyless": keyless}
        if field.startswith("keyless."):
            keyless["ctlog"] = {"ignoreSCT": value}
        else:
            entry[field] = value
        spec = CosignVerifierSpec.model_validate(entry)
        v = CosignKeylessVerifier.from_spec(spec, base_dir=tmp_path)
        (res,) = v.verify(image, material, datetime(2026, 1, 1, tzinfo=UTC))
        outcomes[value] = res.outcome
    assert outcomes == {False: Outcome.FAILED, True: Outcome.PASSED}
