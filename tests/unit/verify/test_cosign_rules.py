"""scanner.verify.cosign_rules: a required predicate type counts only while an attestation that is
not revoked attests it (the verifier checks it before revocations are known; the engine again after)."""

from __future__ import annotations

from datetime import UTC, datetime

from scanner.models import Outcome, SignatureFailure, SignatureResult, SignedTime, TimeSource
from scanner.policy.engine import apply_revocations
from scanner.policy.schema import Revocation
from scanner.verify.cosign_rules import ROLE_ATTESTATION, apply_cosign_rules

SLSA = "https://slsa.dev/provenance/v1"
GOOD, LEAKED = "a" * 64, "b" * 64
T = datetime(2026, 3, 1, tzinfo=UTC)


def signature(verifier: str = "v") -> SignatureResult:
    return SignatureResult("sigstore-bundle", verifier, Outcome.PASSED, "image signature verified", key_sha256=GOOD,
                           signed_at=SignedTime(datetime(2026, 1, 1, tzinfo=UTC), TimeSource.REKOR_SET),
                           details={"role": "image-signature", "predicate_types": ["https://sigstore.dev/cosign/sign/v1"]})


def attestation(key: str, at: SignedTime | None = None, verifier: str = "v") -> SignatureResult:
    return SignatureResult("sigstore-bundle", verifier, Outcome.PASSED, "attestation verified", key_sha256=key,
                           signed_at=at, details={"role": ROLE_ATTESTATION, "predicate_types": [SLSA]})


def judged(*results: SignatureResult, revocations: list[Revocation]) -> tuple[SignatureResult, ...]:
    by_verifier: dict[str, list[SignatureResult]] = {}
    for r in results:
        by_verifier.setdefault(r.verifier, []).append(r)
    ruled = [x for rs in by_verifier.values() for x in apply_cosign_rules(rs, [SLSA] if rs[0].verifier == "v" else [])]
    return apply_revocations(ruled, revocations)


def leaked(revoked_at: datetime | None = None) -> list[Revocation]:
    return [Revocation(keySha256=LEAKED, reason="key leaked", revokedAt=revoked_at)]


def test_a_predicate_attested_only_by_a_revoked_key_is_not_attested() -> None:
    out = judged(signature(), attestation(LEAKED), revocations=leaked())
    sig = out[0]
    assert sig.outcome is Outcome.FAILED and sig.failure is SignatureFailure.REVOKED
    assert SLSA in sig.reason and "key leaked" in sig.reason


def test_a_forged_attestation_after_revoked_at_does_not_count_an_older_one_does() -> None:
    """revokedAt spares the image signature the log proves older; an attestation with no authentic time
    made by the leaked key is not spared, one whose authentic time is older is."""
    out = judged(signature(), attestation(LEAKED), revocations=leaked(T))
    assert out[0].outcome is Outcome.FAILED
    older = SignedTime(datetime(2026, 2, 1, tzinfo=UTC), TimeSource.REKOR_SET)
    assert judged(signature(), attestation(LEAKED, older), revocations=leaked(T))[0].outcome is Outcome.PASSED
    claimed = SignedTime(datetime(2026, 2, 1, tzinfo=UTC), TimeSource.CLAIMED)
    assert judged(signature(), attestation(LEAKED, claimed), revocations=leaked(T))[0].outcome is Outcome.FAILED


def test_another_attestation_that_is_not_revoked_still_attests() -> None:
    out = judged(signature(), attestation(LEAKED), attestation(GOOD), revocations=leaked())
    assert out[0].outcome is Outcome.PASSED


def test_an_attestation_counts_only_for_its_own_verifier() -> None:
    """w's attestation (not revoked) does not attest for v, whose own one is revoked."""
    out = judged(signature(), attestation(LEAKED), attestation(GOOD, verifier="w"), revocations=leaked())
    assert out[0].outcome is Outcome.FAILED


def test_without_required_predicates_nothing_changes() -> None:
    plain = apply_cosign_rules([signature(), attestation(LEAKED)], [])
    assert apply_revocations(plain, leaked())[0].outcome is Outcome.PASSED


# -- roles, and the rules over one verifier's results (issue #28: each line's deletion is noticed) --------

def dsse_bundle(payload_type: str = "application/vnd.in-toto+json", predicate: object = SLSA,
                payload: str | None = None) -> bytes:
    import base64
    import json

    stmt = base64.b64encode(json.dumps({"predicateType": predicate}).encode()).decode()
    return json.dumps({"dsseEnvelope": {"payloadType": payload_type,
                                        "payload": stmt if payload is None else payload}}).encode()


def test_content_role() -> None:
    from scanner.verify.cosign_rules import COSIGN_SIGN_PREDICATE, ROLE_SIGNATURE, content_role

    assert content_role("message-signature", None) == ROLE_SIGNATURE
    assert content_role("message-signature", SLSA) == ROLE_SIGNATURE
    assert content_role("dsse-envelope", COSIGN_SIGN_PREDICATE) == ROLE_SIGNATURE
    assert content_role("dsse-envelope", SLSA) == ROLE_ATTESTATION
    assert content_role("dsse-envelope", None) == ROLE_ATTESTATION


def test_claimed_role_reads_the_statement_without_verifying() -> None:
    from scanner.verify.cosign_rules import COSIGN_SIGN_PREDICATE, ROLE_SIGNATURE, claimed_role

    assert claimed_role(dsse_bundle()) == ROLE_ATTESTATION
    assert claimed_role(dsse_bundle(predicate=COSIGN_SIGN_PREDICATE)) == ROLE_SIGNATURE
    assert claimed_role(dsse_bundle(predicate=7)) == ROLE_ATTESTATION  # not a string: no type, still an attestation
    # whatever is not an in-toto DSSE bundle is judged as an image signature (and fails if it is not one)
    assert claimed_role(dsse_bundle(payload_type="text/plain")) == ROLE_SIGNATURE
    assert claimed_role(b'{"messageSignature": {}}') == ROLE_SIGNATURE
    assert claimed_role(b'{"dsseEnvelope": []}') == ROLE_SIGNATURE
    assert claimed_role(b"[1]") == ROLE_SIGNATURE
    assert claimed_role(b"not json") == ROLE_SIGNATURE
    assert claimed_role(dsse_bundle(payload="!!")) == ROLE_SIGNATURE
    import base64

    assert claimed_role(dsse_bundle(payload=base64.b64encode(b"[1]").decode())) == ROLE_ATTESTATION


def test_a_missing_required_type_fails_only_the_passing_signatures() -> None:
    errored = SignatureResult("sigstore-bundle", "v", Outcome.ERROR, "no log", SignatureFailure.ERROR)
    expired = SignatureResult("sigstore-bundle", "v", Outcome.FAILED, "old", SignatureFailure.EXPIRED)
    out = apply_cosign_rules([signature(), errored, expired], [SLSA])
    assert [(r.outcome, r.failure) for r in out] == [(Outcome.FAILED, SignatureFailure.INVALID),
                                                     (Outcome.ERROR, SignatureFailure.ERROR),
                                                     (Outcome.FAILED, SignatureFailure.EXPIRED)]
    assert "not attested by a verified bundle: " + SLSA in out[0].reason
    assert out[0].checks[-1].outcome is Outcome.FAILED


def test_only_passing_results_attest_and_required_types_are_named() -> None:
    failed_att = SignatureResult("sigstore-bundle", "v", Outcome.FAILED, "bad", SignatureFailure.INVALID,
                                 details={"role": ROLE_ATTESTATION, "predicate_types": [SLSA]})
    assert apply_cosign_rules([signature(), failed_att], [SLSA])[0].outcome is Outcome.FAILED
    sig, att = apply_cosign_rules([signature(), attestation(GOOD)], [SLSA, SLSA])
    assert sig.outcome is Outcome.PASSED and sig.details["required_predicate_types"] == [SLSA]
    assert att.outcome is Outcome.SKIPPED and att.details["verified_attestation"] is True
    assert "not an image signature" in att.reason
    assert "required_predicate_types" not in apply_cosign_rules([signature()], [])[0].details


def test_only_verified_attestations_attest_after_revocations() -> None:
    from scanner.verify.cosign_rules import predicates_still_attested

    needs = SignatureResult("cosign", "v", Outcome.PASSED, "ok", details={"required_predicate_types": [SLSA]})
    claims = SignatureResult("cosign", "v", Outcome.PASSED, "ok", details={"predicate_types": [SLSA]})
    out = predicates_still_attested([needs, claims], lambda r: None)
    assert out[0].outcome is Outcome.FAILED and out[0].failure is SignatureFailure.REVOKED
    assert "none left" in out[0].reason
    assert out[1] == claims
