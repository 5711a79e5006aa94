"""The verifier-level rules of a ``cosign:`` policy entry, one implementation for the key-based and
the keyless verifier, so that a field means the same for every layout they judge (legacy ``.sig``
layers, key-signed bundles, keyless bundles, DSSE attestation bundles).

Per signature (done where the signature is parsed): the binding to the digest, the key or identity,
the log, and the ``annotations`` (cosign ``-a``: in a ``.sig`` payload's ``optional``, on the
in-toto subject of a cosign v3 image-signature bundle).

Per verifier (done here, over all the results of one image):

* **An attestation is not an image signature.** cosign v3's ``cosign sign`` writes a DSSE bundle
  with predicate type ``https://sigstore.dev/cosign/sign/v1``; ``cosign attest`` writes the same
  envelope with the attestation's predicate type. A verified attestation is kept as evidence
  (outcome ``skipped``: examined, not a signature) and never makes an image ``verified`` alone.
* **requirePredicateTypes**: each listed type must be the predicate type of a verified bundle;
  if one is missing, no image signature of this verifier counts. A passing image signature names the
  types it needs (``details["required_predicate_types"]``) and a verified attestation is marked
  (``details["verified_attestation"]``), so that the policy engine, which alone knows the
  revocations, can check again that each type is attested by an attestation that is not revoked
  (:func:`predicates_still_attested`): one signed by a leaked key attests nothing.
* **attestations** (``[{predicateType, conditions}]``): as ``requirePredicateTypes`` for each
  predicate type, and an attestation counts only when its CEL conditions, evaluated over its
  verified statement when it was verified (``details["conditions"]``,
  :mod:`scanner.verify.conditions`), all passed. When no attestation of a type passes, the image
  signatures fail: ``invalid`` naming the expression and the value that failed, or ``error`` when a
  condition could not be evaluated.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from scanner.models import Check, CheckName, Outcome, SignatureFailure, SignatureResult

if TYPE_CHECKING:
    from scanner.verify.conditions import AttestationRequirement

# Light on purpose: the key-based verifier imports this, and sigstore-python only when a bundle needs it.
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"  # cosign pkg/types.CosignSignPredicateType
ROLE_SIGNATURE = "image-signature"
ROLE_ATTESTATION = "attestation"
CONTENT_DSSE = "dsse-envelope"
CONTENT_MESSAGE = "message-signature"


def content_role(content: str, predicate_type: str | None) -> str:
    """Whether a bundle's (verified) content is an image signature or an attestation."""
    if content == CONTENT_MESSAGE or predicate_type == COSIGN_SIGN_PREDICATE:
        return ROLE_SIGNATURE
    return ROLE_ATTESTATION


def claimed_role(bundle_bytes: bytes) -> str:
    """The role a bundle's content *claims*, read without verifying anything: only for deciding
    which bundles to judge as what. An unreadable bundle counts as an image signature, so that it
    is judged (and fails) rather than set aside."""
    try:
        doc = json.loads(bundle_bytes)
        env = doc.get("dsseEnvelope") if isinstance(doc, dict) else None
        if not isinstance(env, dict) or env.get("payloadType") != INTOTO_PAYLOAD_TYPE:
            return ROLE_SIGNATURE
        stmt = json.loads(base64.b64decode(str(env.get("payload", "")), validate=True))
        ptype = stmt.get("predicateType") if isinstance(stmt, dict) else None
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error, RecursionError):
        return ROLE_SIGNATURE
    return content_role(CONTENT_DSSE, ptype if isinstance(ptype, str) else None)


def is_attestation(result: SignatureResult) -> bool:
    return result.details.get("role") == ROLE_ATTESTATION


VERIFIED_ATTESTATION = "verified_attestation"
REQUIRED_PREDICATE_TYPES = "required_predicate_types"
CONDITIONS = "conditions"  # details of a verified attestation: what its policy conditions gave


def conditions_passed(result: SignatureResult) -> bool:
    """Whether an attestation's conditions, if the policy set any for its type, all passed."""
    judged = result.details.get(CONDITIONS)
    return judged is None or (isinstance(judged, Mapping) and judged.get("outcome") == "passed")


def _why_conditions(ptype: str, attestations: Sequence[SignatureResult]) -> tuple[SignatureFailure, str] | None:
    """Why no attestation of ``ptype`` satisfied its conditions (None: there was none to judge)."""
    judged = [j for a in attestations
              if isinstance(j := a.details.get(CONDITIONS), Mapping) and j.get("predicate_type") == ptype]
    if not judged:
        return None
    failure = SignatureFailure.ERROR if any(j.get("outcome") != "failed" for j in judged) else SignatureFailure.INVALID
    parts = []
    for j in judged[:3]:
        last = (j.get("results") or [{}])[-1]
        verb = "could not be evaluated" if j.get("outcome") != "failed" else "is false"
        parts.append(f"condition {str(last.get('expression', ''))[:200]!r} {verb}: {str(last.get('value', ''))[:300]}")
    return failure, f"attestation {ptype} does not satisfy the policy: " + "; ".join(parts)


def apply_cosign_rules(results: Iterable[SignatureResult], require_predicate_types: Sequence[str],
                       requirements: Sequence[AttestationRequirement] = ()) -> tuple[SignatureResult, ...]:
    required = list(dict.fromkeys([*require_predicate_types, *(r.predicate_type for r in requirements)]))
    attested: set[str] = set()
    out: list[SignatureResult] = []
    attestations: list[SignatureResult] = []
    conditioned = {q.predicate_type for q in requirements if q.conditions}
    for r in results:
        if r.outcome is Outcome.PASSED:
            ptypes = [str(p) for p in (r.details.get("predicate_types") or [])]
            # Conditions not judged (a bundle verified without them) never count as passed.
            unjudged = CONDITIONS not in r.details and any(p in conditioned for p in ptypes)
            if conditions_passed(r) and not unjudged:
                attested.update(ptypes)
            if is_attestation(r):
                attestations.append(r)
                r = replace(r, outcome=Outcome.SKIPPED,
                            reason=f"{r.reason}; an attestation is not an image signature",
                            details={**r.details, VERIFIED_ATTESTATION: True})
            elif required:
                r = replace(r, details={**r.details, REQUIRED_PREDICATE_TYPES: sorted(set(required))})
        out.append(r)
    missing = [p for p in required if p not in attested]
    if not missing:
        return tuple(out)
    failure = SignatureFailure.INVALID
    whys = []
    absent = []
    for p in missing:
        judged = _why_conditions(p, attestations)
        if judged is None:
            absent.append(p)
            continue
        whys.append(judged[1])
        if judged[0] is SignatureFailure.ERROR:
            failure = SignatureFailure.ERROR
    if absent:
        whys.insert(0, f"required predicate type(s) not attested by a verified bundle: {', '.join(absent)}")
        failure = SignatureFailure.INVALID  # a missing attestation is a definite answer
    why = "; ".join(whys)
    outcome = Outcome.ERROR if failure is SignatureFailure.ERROR else Outcome.FAILED
    return tuple(
        replace(r, outcome=outcome, failure=failure, reason=f"{r.reason}; but {why}",
                checks=(*r.checks, Check(CheckName.INTEGRITY, outcome, why)))
        if r.outcome is Outcome.PASSED else r
        for r in out
    )


def predicates_still_attested(
    results: Sequence[SignatureResult], revoked: Callable[[SignatureResult], str | None]
) -> tuple[SignatureResult, ...]:
    """Results once revocations are known: a passing image signature whose required predicate types
    are attested only by revoked attestations (``revoked(result)`` gives why, or None) fails, revoked.
    Attestations count for the verifier that produced them (``result.verifier``), as in the verifier."""
    attested: dict[str, set[str]] = {}
    why_not: dict[tuple[str, str], str] = {}
    for r in results:
        if not r.details.get(VERIFIED_ATTESTATION) or not conditions_passed(r):
            continue
        reason = revoked(r)
        for p in r.details.get("predicate_types") or []:
            if reason is None:
                attested.setdefault(r.verifier, set()).add(str(p))
            else:
                why_not.setdefault((r.verifier, str(p)), reason)
    out = []
    for r in results:
        required = r.details.get(REQUIRED_PREDICATE_TYPES) or [] if r.outcome is Outcome.PASSED else []
        missing = [p for p in required if p not in attested.get(r.verifier, set())]
        if not missing:
            out.append(r)
            continue
        why = "; ".join(f"{p} is attested only by a revoked attestation ({why_not.get((r.verifier, p), 'none left')})"
                        for p in missing)
        out.append(replace(r, outcome=Outcome.FAILED, failure=SignatureFailure.REVOKED, reason=f"{r.reason}; but {why}",
                           checks=(*r.checks, Check(CheckName.INTEGRITY, Outcome.FAILED, why))))
    return tuple(out)
