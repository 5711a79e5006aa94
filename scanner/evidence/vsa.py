"""SLSA Verification Summary Attestations (https://slsa.dev/spec/v1.0/verification_summary): one in-toto
Statement v1 per running image digest, failed ones included, signed in plain DSSE (``dsse.sign_envelope``
with ``PAYLOAD_TYPE``) so that ``slsa-verifier verify-vsa --public-key-path`` accepts it.

Signatures (pure)::

    @dataclass(frozen=True) class VsaInput: repository, digest, verifier_version, time_verified, policy_uri,
        policy_digest, input_attestations, passed, verified_levels, workloads, status, reasons
    VERIFIER_ID = "https://github.com/sigaudit/sigaudit"
    def _mask(text: str) -> str:
    return representable(redact_text(str(text)))


def vsa_statement(v: VsaInput) -> dict[str, Any]
    def levels_for(status: str) -> tuple[str, ...]

``vsa_statement`` refuses (ValueError) an input that would overstate: a level that ``levels_for`` does
not give the verdict's status (so ``SIGAUDIT_SIGNATURE_VERIFIED`` only for ``verified``, no SLSA track
level at all), PASSED for any status but ``verified`` and ``exempt`` — a warn-only violation is
compliant in sigaudit's report but its VSA says FAILED: a VSA is read by machines (an admission
controller, ``slsa-verifier`` without ``--verified-level``) that do not know the rule only warned — a
digest that is not ``sha256:`` + 64 lowercase hex, a repository that is not printable ASCII without
``@``. Free text (reasons, URIs) is masked like every message sigaudit writes (``scanner.redact``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scanner.redact import redact_text, representable

VERIFIER_ID = "https://github.com/sigaudit/sigaudit"
PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
# The extension field carrying the workloads that run the image (a URI, so it never collides with a
# future field of the predicate).
WORKLOADS_FIELD = "https://github.com/sigaudit/sigaudit/vsa/workloads/v1"
STATUS_FIELD = "https://github.com/sigaudit/sigaudit/vsa/verdict/v1"

# The spec's value for "no claim about the build track" (SlsaResult: SLSA_<TRACK>_LEVEL_UNEVALUATED).
# Not written: slsa-verifier v2.7.1 refuses every VSA that carries it ("invalid SLSA level": it parses
# the level as a number), so sigaudit leaves the build track out, which claims nothing either.
# tests/integration/test_evidence_formats.py keeps a canary on that behaviour.
UNEVALUATED = "SLSA_BUILD_LEVEL_UNEVALUATED"
SIGNATURE_VERIFIED = "SIGAUDIT_SIGNATURE_VERIFIED"
EXEMPTED = "SIGAUDIT_EXEMPT"

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_SLSA_LEVEL = re.compile(r"^SLSA_([A-Z]+)_LEVEL_([0-9]+|UNEVALUATED)$")
_CUSTOM_LEVEL = re.compile(r"^[A-Z][A-Z0-9_]*$")
_REPOSITORY = re.compile(r"^[\x21-\x3f\x41-\x7e]+$")  # printable ASCII, no space, no '@'
PASSING = frozenset({"verified", "exempt"})


@dataclass(frozen=True)
class VsaInput:
    repository: str  # registry/repository the digest was pulled from
    digest: str  # "sha256:<hex>"
    verifier_version: str  # sigaudit's version
    time_verified: datetime  # the scan's time (tz-aware)
    policy_uri: str
    policy_digest: Mapping[str, str]  # {"sha256": hex}
    input_attestations: Sequence[tuple[str, Mapping[str, str]]]  # (uri, {"sha256": hex})
    passed: bool
    verified_levels: tuple[str, ...]
    workloads: Sequence[Mapping[str, Any]] = ()
    status: str = ""
    reasons: tuple[str, ...] = field(default=())


def levels_for(status: str) -> tuple[str, ...]:
    """The ``verifiedLevels`` for a verdict status: sigaudit's own ``SIGAUDIT_SIGNATURE_VERIFIED`` only for
    ``verified``; ``SIGAUDIT_EXEMPT`` for an exemption (not a verified signature); nothing otherwise.
    No SLSA track level: sigaudit does not evaluate the build track (see ``UNEVALUATED``)."""
    status = str(status)
    if status == "verified":
        return (SIGNATURE_VERIFIED,)
    if status == "exempt":
        return (EXEMPTED,)
    return ()


def _digest_set(value: Mapping[str, str], what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or set(value) != {"sha256"} or not _HEX.fullmatch(str(value["sha256"])):
        raise ValueError(f"{what} must be {{'sha256': <64 lowercase hex>}}")
    return {"sha256": str(value["sha256"])}


def _rfc3339(t: datetime) -> str:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("time_verified must be timezone-aware")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_levels(v: VsaInput) -> list[str]:
    levels = list(v.verified_levels)
    tracks: set[str] = set()
    for level in levels:
        m = _SLSA_LEVEL.fullmatch(level)
        if m:
            if m.group(1) in tracks:
                raise ValueError(f"two levels of the SLSA {m.group(1)} track")
            tracks.add(m.group(1))
        elif level.startswith("SLSA_") or not _CUSTOM_LEVEL.fullmatch(level) or level == "FAILED":
            raise ValueError(f"verified level {level!r}: custom levels never start with SLSA_")
    if len(set(levels)) != len(levels):
        raise ValueError("a verified level is listed twice")
    # The one rule that keeps a VSA from claiming more than the verdict: every level is one that
    # levels_for() gives this status (a subset: leaving one out never overstates).
    allowed = levels_for(str(v.status))
    extra = [level for level in levels if level not in allowed]
    if extra:
        raise ValueError(f"verified levels {extra} are not what a {v.status or 'status-less'} verdict shows "
                         f"(at most {list(allowed)})")
    return levels


def _mask(text: str) -> str:
    return representable(redact_text(str(text)))


def vsa_statement(v: VsaInput) -> dict[str, Any]:
    """The in-toto Statement v1 of one image's VSA (see the module docstring for what is refused)."""
    m = _DIGEST.fullmatch(v.digest)
    if not m:
        raise ValueError(f"digest {v.digest!r} is not sha256:<64 lowercase hex>")
    repo = v.repository
    if not _REPOSITORY.fullmatch(repo) or "/" not in repo:
        raise ValueError(f"repository {repo!r} is not registry/repository")
    if v.passed and str(v.status) not in PASSING:
        raise ValueError(f"a {v.status or 'status-less'} verdict never gives a PASSED VSA")
    levels = _check_levels(v)
    if not v.policy_uri:
        raise ValueError("policy_uri is required")
    inputs = [{"uri": _mask(uri), "digest": _digest_set(d, f"input attestation {uri}")}
              for uri, d in sorted(v.input_attestations, key=lambda a: a[0])]
    predicate: dict[str, Any] = {
        "verifier": {"id": VERIFIER_ID, "version": {"sigaudit": v.verifier_version or "unknown"}},
        "timeVerified": _rfc3339(v.time_verified),
        "resourceUri": f"{repo}@{v.digest}",
        "policy": {"uri": _mask(v.policy_uri), "digest": _digest_set(v.policy_digest, "policy digest")},
        "inputAttestations": inputs,
        "verificationResult": "PASSED" if v.passed else "FAILED",
        "verifiedLevels": levels,
        "slsaVersion": "1.0",
        WORKLOADS_FIELD: [dict(w) for w in v.workloads],
        STATUS_FIELD: {"status": str(v.status), "reasons": [_mask(r) for r in v.reasons]},
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repo, "digest": {"sha256": m.group(1)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
