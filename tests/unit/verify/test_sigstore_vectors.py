"""Every public Sigstore bundle vector (sigstore-conformance, sigstore-python), used as it is.

The conformance harness runs each case twice (artifact path, ``sha256:<hex>`` digest); so do we:
``verify_bundle`` binds to the sha256, and in "path" mode also gets the artifact bytes.
Cases that upstream xfails for sigstore-python (our engine for certificate bundles) are
``xfail(strict=False)`` with the upstream reason; managed-key cases are ours (hand-written).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sigstore.verify import policy as sigstore_policy

from scanner.errors import ConfigError
from scanner.models import Outcome, SignatureFailure
from scanner.verify.identity import IdentityMatcher
from scanner.verify.sigstore_bundle import verify_bundle
from scanner.verify.trustroot import load_trusted_root_file, trust_from_json
from tests.vectors import VECTORS

CONF = VECTORS / "sigstore-conformance"
SPY = VECTORS / "sigstore-python"

_conf = json.loads((CONF / "cases.json").read_text())["cases"]
_spy_doc = json.loads((SPY / "cases.json").read_text())
ANY_IDENTITY = [IdentityMatcher.regexp(subject=".*", issuer=".*")]


def _conf_params() -> list[Any]:
    out = []
    for case in _conf:
        marks = []
        if "upstream_note" in case and "managed-key" not in case["id"]:
            marks.append(pytest.mark.xfail(strict=False, reason=case["upstream_note"]))
        for mode in case["artifact_input_modes"]:
            out.append(pytest.param(case, mode, id=f"{case['id']}[{mode}]", marks=marks))
    return out


@pytest.mark.parametrize(("case", "mode"), _conf_params())
def test_sigstore_conformance(case: dict[str, Any], mode: str) -> None:
    expected = case["expected"]
    vw = case["verify_with"]
    try:
        trust = load_trusted_root_file(CONF / case["trusted_root"])
        kwargs: dict[str, Any] = {}
        if "key" in vw:
            kwargs["public_key"] = serialization.load_pem_public_key((CONF / vw["key"]).read_bytes())
        else:
            kwargs["identities"] = [IdentityMatcher.exact(subject=vw["certificate_identity"],
                                                          issuer=vw["certificate_oidc_issuer"])]
    except (ConfigError, ValueError) as exc:
        # Unloadable trust material is a failure at configuration time (e.g. a trust root with a
        # tlog key lacking validFor.start, a corrupted managed key).
        assert expected == "fail", f"trust material rejected: {exc}"
        return
    artifact = (CONF / case["artifact"]).read_bytes() if mode == "path" else None
    if artifact is not None:
        assert hashlib.sha256(artifact).hexdigest() == case["artifact_sha256"]
    res = verify_bundle((CONF / case["bundle"]).read_bytes(), case["artifact_sha256"], trust=trust,
                        artifact=artifact, **kwargs)
    if expected == "pass":
        assert res.outcome is Outcome.PASSED, res.reason
        assert res.failure is SignatureFailure.NONE
        assert res.signed_at is not None
    else:
        assert res.outcome is not Outcome.PASSED
        assert res.reason
        # Failures of the material itself are INVALID; nothing here is an environment problem.
        assert res.failure is SignatureFailure.INVALID, res.reason


# -- sigstore-python --------------------------------------------------------------------------


def _walk(doc: Any, path: str) -> tuple[Any, str | int]:
    parts: list[str | int] = []
    for piece in path.split("."):
        m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", piece)
        assert m, piece
        parts.append(m.group(1))
        if m.group(2) is not None:
            parts.append(int(m.group(2)))
    for p in parts[:-1]:
        doc = doc[p]
    return doc, parts[-1]


def _mutate(doc: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    parent, last = _walk(doc, spec.get("json_path") or spec["trusted_root_json_path"])
    if spec.get("delete"):
        del parent[last]
    elif "delete_keys" in spec:
        for k in spec["delete_keys"]:
            parent[last].pop(k, None)
    else:
        parent[last] = spec["set_to"]
    return doc


_EXT_POLICIES = {
    cls.oid.dotted_string: cls
    for _, cls in inspect.getmembers(sigstore_policy, inspect.isclass)
    if isinstance(getattr(cls, "oid", None), x509.ObjectIdentifier) and not inspect.isabstract(cls)
}


def _spy_params() -> list[Any]:
    out = []
    for case in _spy_doc["cases"]:
        marks = []
        if str(case.get("confidence", "")).startswith("advisory"):
            marks.append(pytest.mark.xfail(strict=False, reason=case["confidence"]))
        out.append(pytest.param(case, id=case["id"], marks=marks))
    return out


@pytest.mark.parametrize("case", _spy_params())
def test_sigstore_python_bundles(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from sigstore.verify import verifier as sigstore_verifier

    if "verified_time_threshold" in case:
        monkeypatch.setattr(sigstore_verifier, "VERIFIED_TIME_THRESHOLD", case["verified_time_threshold"])
    mutation = case.get("mutation") or {}
    root_doc = json.loads((SPY / case["trusted_root"]).read_text())
    bundle_bytes = (SPY / case["bundle"]).read_bytes()
    if "trusted_root_json_path" in mutation:
        root_doc = _mutate(root_doc, mutation)
    if "json_path" in mutation:
        bundle_bytes = json.dumps(_mutate(json.loads(bundle_bytes), mutation)).encode()
    trust = trust_from_json(json.dumps(root_doc).encode(), source=case["trusted_root"])

    pol = case["policy"]
    extra = None
    identities = ANY_IDENTITY
    if pol["type"] == "identity":
        identities = [IdentityMatcher.exact(subject=pol["certificate_identity"],
                                            issuer=pol["certificate_oidc_issuer"])]
    elif pol["type"] == "fulcio-extensions-all-of":
        children = [_EXT_POLICIES[label.split()[0]](value) for label, value in pol["expected"].items()]
        assert len(children) == len(pol["expected"]) == 21
        extra = sigstore_policy.AllOf(children)
    artifact = (SPY / case["artifact"]).read_bytes() if "artifact" in case else None
    digest = case["artifact_sha256"]
    if case.get("kind") == "dsse":
        # Upstream checks only the DSSE envelope (verify_dsse), not which artifact it names. We
        # always bind a statement to an artifact: the statement names a.txt, not this file, so
        # binding to the file fails, and binding to the statement's own subject passes.
        wrong = verify_bundle(bundle_bytes, digest, trust=trust, identities=identities)
        assert wrong.outcome is Outcome.FAILED and "subjects do not include" in wrong.reason
        stmt = json.loads(base64.b64decode(json.loads(bundle_bytes)["dsseEnvelope"]["payload"]))
        digest, artifact = stmt["subject"][0]["digest"]["sha256"], None
    res = verify_bundle(bundle_bytes, digest, trust=trust, identities=identities,
                        artifact=artifact, extra_policy=extra)
    if case["expected"] == "pass":
        assert res.outcome is Outcome.PASSED, res.reason
    else:
        assert res.outcome is Outcome.FAILED, res.reason
        assert res.failure is SignatureFailure.INVALID


def test_fulcio_extension_policy_is_enforced() -> None:
    """The extension check of github-actions-cert-extensions can fail (not a test that cannot fail)."""
    case = next(c for c in _spy_doc["cases"] if c["id"] == "github-actions-cert-extensions")
    trust = load_trusted_root_file(SPY / case["trusted_root"])
    res = verify_bundle((SPY / case["bundle"]).read_bytes(), case["artifact_sha256"], trust=trust,
                        identities=ANY_IDENTITY, extra_policy=sigstore_policy.GitHubWorkflowRef("refs/tags/v9"))
    assert res.outcome is Outcome.FAILED
    assert "GitHubWorkflowRef" in res.reason


@pytest.mark.parametrize("case", _spy_doc["trusted_root_cases"]["cases"], ids=lambda c: Path(c["file"]).name)
def test_sigstore_python_trusted_roots(case: dict[str, Any]) -> None:
    from sigstore._internal.trust import CertificateAuthority

    path = SPY / case["file"]
    if Path(case["file"]).name.startswith("certificate_authority"):
        # A CertificateAuthority object (a trusted root's TSA/CA entry), parsed by sigstore-python.
        try:
            CertificateAuthority.from_json(str(path))
            ok = True
        except Exception:
            ok = False
    else:
        try:
            trust_from_json(path.read_bytes(), source=str(path))
            ok = True
        except ConfigError:
            ok = False
    assert ok is (case["expected"] == "pass")


@pytest.mark.parametrize("case", _spy_doc["timestamp_cases"]["cases"], ids=lambda c: Path(c["timestamp_response"]).name)
def test_sigstore_python_timestamp(case: dict[str, Any]) -> None:
    from rfc3161_client import decode_timestamp_response
    from sigstore.verify import Verifier

    trust = load_trusted_root_file(SPY / case["trusted_root"])
    tsr = decode_timestamp_response((SPY / case["timestamp_response"]).read_bytes())
    result = Verifier(trusted_root=trust.root)._verify_signed_timestamp(tsr, (SPY / case["message"]).read_bytes())
    assert (result is not None) is (case["expected"] == "pass")


@pytest.mark.parametrize("case", _spy_doc["x509_cases"]["cases"], ids=lambda c: Path(c["cert"]).name)
def test_sigstore_python_x509_classification(case: dict[str, Any]) -> None:
    """The CA/leaf classification sigstore-python applies to bundle chains (our engine)."""
    from sigstore import _utils

    cert = x509.load_pem_x509_certificate((SPY / case["cert"]).read_bytes())
    for key, fn in (("is_ca", _utils.cert_is_ca), ("is_root_ca", _utils.cert_is_root_ca),
                    ("is_leaf", _utils.cert_is_leaf)):
        if key not in case:
            continue
        if case[key] == "error":
            with pytest.raises(Exception):
                fn(cert)
        else:
            assert fn(cert) is case[key], key
