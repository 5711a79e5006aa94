"""scanner.verify.cosign, check by check, with keys made here: every check of a ``.sig`` layer (signature,
payload, digest binding, required annotations, the Rekor bundle), key-signed bundles attributed to the
key, and what the cache key and the decision identity depend on."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from scanner.errors import ConfigError
from scanner.models import (
    Check,
    CheckName,
    CosignLayer,
    Descriptor,
    ImageReference,
    Outcome,
    ReferrerArtifact,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
    SignedTime,
    TimeSource,
)
from scanner.verify.cosign import (
    BUNDLE_ANNOTATION,
    MAX_PAYLOAD_BYTES,
    SIG_ANNOTATION,
    CosignKeyVerifier,
    PayloadError,
    SigstoreTrustRef,
    TlogEntry,
    parse_simplesigning,
)
from scanner.verify.keys import PublicKey, key_sha256, parse_public_key, spki_der
from tests.harness.cosign_sign import KeyPair, simplesigning_payload

D = "sha256:" + "1" * 64
NOW = datetime(2026, 5, 1, tzinfo=UTC)
KEY, OTHER = KeyPair.ecdsa(), KeyPair.ecdsa()
IMAGE = RunningImage(ImageReference("reg.test", "app", None, D), ())
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def pub(k: KeyPair = KEY) -> PublicKey:
    return parse_public_key(k.public_pem.encode())


def verifier(**kw: Any) -> CosignKeyVerifier:
    kw.setdefault("ignore_tlog", True)
    return CosignKeyVerifier(kw.pop("key", pub()), key_label="k.pub", **kw)


def layer(payload: bytes | None = None, *, key: KeyPair = KEY, sig: str | None = None,
          bundle: str | None = None) -> CosignLayer:
    payload = payload if payload is not None else simplesigning_payload("reg.test/app", D)
    ann = {SIG_ANNOTATION: sig if sig is not None else base64.b64encode(key.sign(payload)).decode()}
    if bundle is not None:
        ann[BUNDLE_ANNOTATION] = bundle
    return CosignLayer(payload, "application/vnd.dev.cosign.simplesigning.v1+json", ann, "sha256:" + "9" * 64)


def judge(v: CosignKeyVerifier, *layers: CosignLayer, referrers: tuple[ReferrerArtifact, ...] = ()
          ) -> tuple[SignatureResult, ...]:
    return v.verify(IMAGE, SignatureMaterial(Descriptor("", D, 0), cosign_layers=layers, referrers=referrers), NOW)


def one(v: CosignKeyVerifier, lay: CosignLayer) -> SignatureResult:
    (r,) = judge(v, lay)
    return r


# -- the payload ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"not json", b"[]", b'{"critical": 1}', b'{"critical": {"image": 1}}',
    b'{"critical": {"image": {"docker-manifest-digest": 1}}}', b'{"x": {}}',
])
def test_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_simplesigning(payload)


def test_payload_size_is_bounded() -> None:
    ok = simplesigning_payload("r", D)
    assert parse_simplesigning(ok)["critical"]["image"]["docker-manifest-digest"] == D
    padded = ok[:-1] + b',"pad":"' + b"x" * (MAX_PAYLOAD_BYTES - len(ok) - 9) + b'"}'
    assert len(padded) == MAX_PAYLOAD_BYTES
    parse_simplesigning(padded)
    with pytest.raises(PayloadError, match="exceeds"):
        parse_simplesigning(padded + b" ")


# -- one .sig layer, check by check ----------------------------------------------------------------------

def test_a_good_signature_passes_with_its_checks() -> None:
    r = one(verifier(), layer())
    assert (r.outcome, r.failure, r.kind) == (Outcome.PASSED, SignatureFailure.NONE, "cosign")
    assert r.reason == "signed with key k.pub"
    assert r.key_sha256 == KEY.spki_sha256 and r.signer == f"sha256:{KEY.spki_sha256}"
    assert [(c.name, c.outcome) for c in r.checks] == [
        (CheckName.AUTHENTICITY, Outcome.PASSED), (CheckName.DIGEST, Outcome.PASSED), (CheckName.TLOG, Outcome.SKIPPED)]
    assert r.signed_at is None and r.details["docker_reference"] == "reg.test/app"


@pytest.mark.parametrize(("lay", "check", "why"), [
    (layer(sig=""), CheckName.INTEGRITY, "without a signature annotation"),
    (layer(sig="!!not base64"), CheckName.INTEGRITY, "not base64"),
    (layer(key=OTHER), CheckName.AUTHENTICITY, "does not verify with key k.pub"),
    (layer(b"not json"), CheckName.INTEGRITY, "signed payload is malformed"),
    (layer(simplesigning_payload("reg.test/app", "sha256:" + "2" * 64)), CheckName.DIGEST, "another image"),
])
def test_each_failed_check_makes_the_signature_invalid(lay: CosignLayer, check: CheckName, why: str) -> None:
    r = one(verifier(), lay)
    assert (r.outcome, r.failure) == (Outcome.FAILED, SignatureFailure.INVALID)
    assert why in r.reason and r.checks[-1] == Check(check, Outcome.FAILED, r.checks[-1].reason)


@pytest.mark.parametrize(("optional", "ok"), [
    ({"env": "prod", "team": "a"}, True),
    ({"env": "prod"}, False),  # one missing
    ({"env": "dev", "team": "a"}, False),  # another value
    ({"env": "prod", "team": 1}, False),  # JSON 1 is not "1"... nor "a"
    (None, False),  # no optional object at all
])
def test_required_annotations_are_enforced_on_the_signed_payload(optional: Mapping[str, Any] | None, ok: bool) -> None:
    v = verifier(annotations={"env": "prod", "team": "a"})
    r = one(v, layer(simplesigning_payload("reg.test/app", D, optional)))
    assert r.outcome is (Outcome.PASSED if ok else Outcome.FAILED)
    if not ok:
        assert r.failure is SignatureFailure.INVALID and "required annotation" in r.reason
    # the layer annotations are not the payload: they never satisfy the requirement
    good = layer()
    unsigned = CosignLayer(good.payload, "m", {**good.annotations, "env": "prod", "team": "a"}, good.digest)
    assert one(v, unsigned).outcome is Outcome.FAILED


def test_a_json_number_does_not_satisfy_a_string_annotation() -> None:
    v = verifier(annotations={"n": "1"})
    assert one(v, layer(simplesigning_payload("r", D, {"n": 1}))).outcome is Outcome.FAILED
    assert one(v, layer(simplesigning_payload("r", D, {"n": "1"}))).outcome is Outcome.PASSED


def test_annotations_that_are_not_an_object_satisfy_nothing() -> None:
    payload = json.dumps({"critical": {"image": {"docker-manifest-digest": D}}, "optional": ["n", "1"]}).encode()
    assert one(verifier(annotations={"n": "1"}), layer(payload)).outcome is Outcome.FAILED
    assert one(verifier(), layer(payload)).outcome is Outcome.PASSED


# -- the transparency log ------------------------------------------------------------------------------

def test_log_required_without_bundle_is_an_error() -> None:
    r = one(verifier(ignore_tlog=False, tlog_check=lambda *a: TlogEntry(NOW, 1, "x")), layer())
    assert (r.outcome, r.failure) == (Outcome.ERROR, SignatureFailure.ERROR)
    assert r.checks[-1].name is CheckName.TLOG and r.checks[-1].outcome is Outcome.ERROR


def test_log_required_without_a_log_key_is_an_error() -> None:
    r = one(verifier(ignore_tlog=False), layer(bundle="{}"))
    assert (r.outcome, r.failure) == (Outcome.ERROR, SignatureFailure.ERROR) and "no Rekor public key" in r.reason
    assert r.checks[-1] == Check(CheckName.TLOG, Outcome.ERROR, "no Rekor key configured")


def test_a_log_bundle_that_does_not_verify_makes_the_signature_invalid() -> None:
    def bad(*args: object) -> TlogEntry:
        raise ValueError("SET does not verify")

    r = one(verifier(ignore_tlog=False, tlog_check=bad), layer(bundle="{}"))
    assert (r.outcome, r.failure) == (Outcome.FAILED, SignatureFailure.INVALID) and "SET does not verify" in r.reason


def test_a_verified_log_entry_gives_the_authentic_signing_time() -> None:
    seen: list[tuple[object, ...]] = []
    lay = layer(bundle='{"SignedEntryTimestamp": "x"}')

    def check(*args: object) -> TlogEntry:
        seen.append(args)
        return TlogEntry(datetime(2026, 4, 1, 12, tzinfo=UTC), 42, "log-1")

    r = one(verifier(ignore_tlog=False, tlog_check=check), lay)
    assert r.outcome is Outcome.PASSED
    assert seen == [(lay.annotations[BUNDLE_ANNOTATION], lay.annotations[SIG_ANNOTATION], lay.payload, spki_der(pub()))]
    assert r.signed_at == SignedTime(datetime(2026, 4, 1, 12, tzinfo=UTC), TimeSource.REKOR_SET)
    assert r.details["log_index"] == 42 and r.details["log_id"] == "log-1"
    assert r.checks[-1] == Check(CheckName.TLOG, Outcome.PASSED, "Rekor entry 42")


# -- key-signed bundles ------------------------------------------------------------------------------

def bundle_result(outcome: Outcome = Outcome.PASSED, signer: str = "") -> SignatureResult:
    return SignatureResult("sigstore-bundle", "bundle", outcome, "bundle verified", signer=signer,
                           details={"role": "image-signature"})


def artifact(artifact_type: str = BUNDLE_TYPE, blob_media_type: str = "application/json") -> ReferrerArtifact:
    return ReferrerArtifact("sha256:" + "3" * 64, artifact_type, blob_media_type, b"bundle-bytes", {}, None)


def test_key_signed_bundles_are_judged_and_attributed_to_the_key() -> None:
    calls: list[tuple[object, ...]] = []

    def check(*args: Any) -> SignatureResult:
        calls.append(args)
        return bundle_result()

    v = verifier(bundle_check=check, annotations={"a": "b"})
    assert v.wants.cosign_sig and v.wants.referrer_types == frozenset({"application/vnd.dev.sigstore.bundle"})
    (r,) = judge(v, referrers=(artifact(),))
    assert calls == [(b"bundle-bytes", D, v._key, NOW, {"a": "b"}, ())]  # no attestation conditions
    assert r.verifier == v.name and r.key_sha256 == KEY.spki_sha256 and r.signer == f"sha256:{KEY.spki_sha256}"
    (r,) = judge(verifier(bundle_check=lambda *a: bundle_result(signer="who")), referrers=(artifact(),))
    assert r.signer == "who"
    # the blob's media type alone also marks a bundle; other artifacts are not bundles
    assert len(judge(v, referrers=(artifact("application/x-other", BUNDLE_TYPE),))) == 1
    assert judge(v, referrers=(artifact("application/x-other"),)) == ()


def test_without_bundle_support_referrers_are_not_read() -> None:
    v = verifier()
    assert v.wants.referrer_types == frozenset()
    assert judge(v, referrers=(artifact(),)) == ()


def test_layers_and_bundles_are_all_judged() -> None:
    v = verifier(bundle_check=lambda *a: bundle_result())
    rs = judge(v, layer(), layer(key=OTHER), referrers=(artifact(),))
    assert [r.outcome for r in rs] == [Outcome.PASSED, Outcome.PASSED, Outcome.FAILED]


def test_required_predicate_types_need_bundle_support_and_apply() -> None:
    with pytest.raises(ConfigError):
        verifier(require_predicate_types=["https://slsa.dev/provenance/v1"])
    v = verifier(bundle_check=lambda *a: bundle_result(), require_predicate_types=["https://slsa.dev/provenance/v1"])
    (r,) = judge(v, layer())
    assert r.outcome is Outcome.FAILED and "not attested" in r.reason


# -- what the cache key and the decision identity depend on --------------------------------------------

def test_the_name_says_the_key() -> None:
    assert verifier().name.startswith("cosign key ") and verifier().name.endswith(f"sha256:{KEY.spki_sha256[:12]}")


def _trust(**kw: Any) -> SigstoreTrustRef:
    return SigstoreTrustRef(pinned=kw.pop("pinned", {"rekor": "r1"}), **kw)


def test_trust_fingerprint_changes_with_everything_it_trusts() -> None:
    base = verifier(sigstore_trust=_trust())
    variants = [
        verifier(key=pub(OTHER), sigstore_trust=_trust()),
        verifier(ignore_tlog=False, sigstore_trust=_trust()),
        verifier(annotations={"a": "b"}, sigstore_trust=_trust()),
        verifier(bundle_check=lambda *a: bundle_result(), sigstore_trust=_trust()),
        verifier(bundle_check=lambda *a: bundle_result(), require_predicate_types=["p"], sigstore_trust=_trust()),
        verifier(sigstore_trust=_trust(pinned={"rekor": "r2"})),
    ]
    fps = {base.trust_fingerprint, *(v.trust_fingerprint for v in variants)}
    assert len(fps) == 1 + len(variants)
    assert verifier(sigstore_trust=_trust(pinned={"rekor": None})).trust_fingerprint == verifier().trust_fingerprint


def test_decision_identity_needs_named_trust_for_the_checks_it_runs() -> None:
    tlog = lambda *a: TlogEntry(NOW, 1, "x")  # noqa: E731
    assert verifier(tlog_check=tlog).decision_identity(IMAGE) is None
    assert verifier(bundle_check=lambda *a: bundle_result()).decision_identity(IMAGE) is None
    assert verifier().decision_identity(IMAGE) is not None

    def unavailable() -> str:
        raise ConfigError("no root")

    assert verifier(tlog_check=tlog, sigstore_trust=_trust(public_good=unavailable)).decision_identity(IMAGE) is None
    ids = {
        verifier(tlog_check=tlog, sigstore_trust=_trust()).decision_identity(IMAGE),
        verifier(tlog_check=tlog, sigstore_trust=_trust(public_good=lambda: "root-a")).decision_identity(IMAGE),
        verifier(tlog_check=tlog, sigstore_trust=_trust(public_good=lambda: "root-b")).decision_identity(IMAGE),
        verifier(tlog_check=tlog, sigstore_trust=_trust(bundles_pinned=False)).decision_identity(IMAGE),
        verifier(tlog_check=tlog, sigstore_trust=_trust(pinned={"rekor": "r2"})).decision_identity(IMAGE),
        verifier().decision_identity(IMAGE),
        verifier(key=pub(OTHER)).decision_identity(IMAGE),
        verifier(annotations={"a": "b"}).decision_identity(IMAGE),
        verifier(ignore_tlog=False).decision_identity(IMAGE),
    }
    assert len(ids) == 9


def _bundle_with(check: CheckName, outcome: Outcome, kind: str = "sigstore-bundle") -> SignatureResult:
    return SignatureResult(kind, "v", Outcome.PASSED, "ok", checks=(Check(check, outcome),))


def test_bundles_checked_against_an_unpinned_root_are_not_cached() -> None:
    unpinned = verifier(sigstore_trust=_trust(bundles_pinned=False))
    assert not unpinned.results_cacheable((_bundle_with(CheckName.TLOG, Outcome.PASSED),))
    assert not unpinned.results_cacheable((_bundle_with(CheckName.AUTHENTICITY, Outcome.PASSED),
                                           _bundle_with(CheckName.TIMESTAMP, Outcome.FAILED)))
    assert unpinned.results_cacheable((_bundle_with(CheckName.TLOG, Outcome.SKIPPED),))
    assert unpinned.results_cacheable((_bundle_with(CheckName.AUTHENTICITY, Outcome.PASSED),))
    assert unpinned.results_cacheable((_bundle_with(CheckName.TLOG, Outcome.PASSED, kind="cosign"),))
    assert verifier(sigstore_trust=_trust()).results_cacheable((_bundle_with(CheckName.TLOG, Outcome.PASSED),))
    assert verifier().results_cacheable((_bundle_with(CheckName.TLOG, Outcome.PASSED),))


def test_key_id_is_the_spki_sha256() -> None:
    assert key_sha256(pub()) == KEY.spki_sha256


def test_trust_fingerprint_names_the_one_configured_item_beside_unconfigured_ones() -> None:
    a = verifier(sigstore_trust=_trust(pinned={"rekor": "r1", "trusted_root": None}))
    b = verifier(sigstore_trust=_trust(pinned={"rekor": "r2", "trusted_root": None}))
    assert a.trust_fingerprint != b.trust_fingerprint


def test_the_failed_annotation_check_says_what_was_found() -> None:
    v = verifier(annotations={"env": "prod"})
    absent = one(v, layer(simplesigning_payload("r", D, {"other": "x"})))
    assert absent.checks[-1].reason == "annotation env is absent, not 'prod'"
    other = one(v, layer(simplesigning_payload("r", D, {"env": "dev"})))
    assert other.checks[-1].reason == "annotation env is 'dev', not 'prod'"
