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
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from scanner.models import Check, CheckName, Outcome, SignatureFailure, SignatureResult

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


def apply_cosign_rules(results: Iterable[SignatureResult],
                       require_predicate_types: Sequence[str]) -> tuple[SignatureResult, ...]:
    attested: set[str] = set()
    out: list[SignatureResult] = []
    for r in results:
        if r.outcome is Outcome.PASSED:
            attested.update(str(p) for p in (r.details.get("predicate_types") or []))
            if is_attestation(r):
                r = replace(r, outcome=Outcome.SKIPPED,
                            reason=f"{r.reason}; an attestation is not an image signature",
                            details={**r.details, VERIFIED_ATTESTATION: True})
            elif require_predicate_types:
                r = replace(r, details={**r.details, REQUIRED_PREDICATE_TYPES: sorted(set(require_predicate_types))})
        out.append(r)
    missing = [p for p in require_predicate_types if p not in attested]
    if not missing:
        return tuple(out)
    why = f"required predicate type(s) not attested by a verified bundle: {', '.join(missing)}"
    return tuple(
        replace(r, outcome=Outcome.FAILED, failure=SignatureFailure.INVALID, reason=f"{r.reason}; but {why}",
                checks=(*r.checks, Check(CheckName.INTEGRITY, Outcome.FAILED, why)))
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
        if not r.details.get(VERIFIED_ATTESTATION):
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
