"""Keyless cosign in both layouts: the public vectors of cosign/cases.json, plus hostile input.

Forged material (a SET by another key, an integrated time outside the certificate) is made here
at run time with throw-away keys; nothing is a hand-edited blob.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.errors import ConfigError
from scanner.models import (
    CheckName,
    CosignLayer,
    Descriptor,
    ImageReference,
    Outcome,
    ReferrerArtifact,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignedTime,
    TimeSource,
)
from scanner.policy.schema import CosignVerifierSpec
from scanner.verify.base import Verifier
from scanner.verify.cosign_keyless import ANN_BUNDLE, CosignKeylessVerifier
from scanner.verify.identity import IdentityMatcher
from scanner.verify.sigstore_bundle import verify_bundle_for_digest
from scanner.verify.trustroot import SigstoreTrust, load_trusted_root_file, trust_from_pems
from tests.vectors import VECTORS

COSIGN = VECTORS / "cosign"
LEGACY = COSIGN / "legacy-oci-connaisseur"
CASES = json.loads((COSIGN / "cases.json").read_text())
KEYLESS_DIGEST = "sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee"
V3_DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PHILIPP = IdentityMatcher.exact(subject="philipp.belitz@securesystems.de", issuer="https://github.com/login/oauth")


def _layers(sig_manifest: str) -> tuple[CosignLayer, ...]:
    m = json.loads((COSIGN / sig_manifest).read_text())
    out = []
    for layer in m["layers"]:
        payload = (LEGACY / "registry" / "blobs" / f"{layer['digest']}.json").read_bytes()
        assert "sha256:" + hashlib.sha256(payload).hexdigest() == layer["digest"]
        out.append(CosignLayer(payload, layer["mediaType"], layer["annotations"], layer["digest"]))
    return tuple(out)


def _image(digest: str) -> RunningImage:
    return RunningImage(ImageReference("index.docker.io", "securesystemsengineering/testimage", "keyless", digest), ())


def _material(digest: str, layers: tuple[CosignLayer, ...] = (),
              referrers: tuple[ReferrerArtifact, ...] = ()) -> SignatureMaterial:
    return SignatureMaterial(Descriptor("application/vnd.oci.image.manifest.v1+json", digest, 1234),
                             cosign_layers=layers, referrers=referrers)


def _bundle_referrer(blob: bytes, subject: str) -> ReferrerArtifact:
    return ReferrerArtifact(
        manifest_digest="sha256:" + hashlib.sha256(b"manifest" + blob).hexdigest(),
        artifact_type="application/vnd.dev.sigstore.bundle.v0.3+json",
        blob_media_type="application/vnd.dev.sigstore.bundle.v0.3+json", blob=blob, annotations={},
        subject=Descriptor("application/vnd.oci.image.manifest.v1+json", subject, 1234))


@pytest.fixture(scope="module")
def prod_trust() -> SigstoreTrust:
    return load_trusted_root_file(LEGACY / "production.trusted_root.json")


@pytest.fixture(scope="module")
def pem_trust() -> SigstoreTrust:
    kt = LEGACY / "keyless-trust"
    return trust_from_pems(str(kt / "fulcio-root.crt.pem"), str(kt / "rekor.pub.pem"), str(kt / "ctlog.pub.pem"))


def _to_full_match(search_regex: str) -> str:
    # connaisseur (like cosign's Go regexp.MatchString) searches; sigaudit requires a full match.
    return f".*(?:{search_regex}).*"


def _matcher_from_case(kl: dict[str, str]) -> IdentityMatcher:
    issuer = kl.get("issuer") or _to_full_match(kl["issuerRegex"])
    subject = kl.get("subject") or _to_full_match(kl.get("subjectRegex", ".*"))
    if "issuer" in kl or "subject" in kl:
        from scanner.verify.identity import _Match

        return IdentityMatcher(
            _Match(exact=kl["issuer"]) if "issuer" in kl else _Match(regexp=issuer),
            _Match(exact=kl["subject"]) if "subject" in kl else _Match(regexp=subject))
    return IdentityMatcher.regexp(subject=subject, issuer=issuer)


# -- cosign/cases.json: legacy keyless ------------------------------------------------------------

_legacy_keyless = [c for c in CASES["legacy_oci"]["cases"] if "keyless" in c.get("policy", {})]


@pytest.mark.parametrize("trust_kind", ["trusted_root", "pems"])
@pytest.mark.parametrize("case", _legacy_keyless, ids=lambda c: c["id"])
def test_legacy_keyless_vectors(case: dict[str, Any], trust_kind: str, prod_trust: SigstoreTrust,
                                pem_trust: SigstoreTrust) -> None:
    layers = _layers(case["signature_manifest"])
    if case.get("mutation"):
        # "change any byte of the payload blob"
        l0 = layers[0]
        layers = (dataclasses.replace(l0, payload=l0.payload.replace(b"rekor-test", b"rekor-tesT")),)
    trust = prod_trust if trust_kind == "trusted_root" else pem_trust
    verifier = CosignKeylessVerifier(identities=[_matcher_from_case(case["policy"]["keyless"])], trust=trust)
    assert isinstance(verifier, Verifier)
    results = verifier.verify(_image(case["image_digest"]), _material(case["image_digest"], layers), NOW)
    assert len(results) == 1
    res = results[0]
    assert res.kind == "cosign-keyless"
    if case["expected"] == "pass":
        assert res.outcome is Outcome.PASSED, res.reason
        assert res.signer == case["expected_identity"]["san_email"]
        assert res.issuer == case["expected_identity"]["oidc_issuer"]
        assert res.signed_at == SignedTime(datetime.fromtimestamp(1717082297, tz=UTC), TimeSource.REKOR_SET)
        assert res.not_after is None
        assert res.details["log_index"] == 98235800
        assert res.details["log_id"].startswith("c0d23d6a")
        assert len(res.details["chain_sha256"]) == (2 if trust_kind == "trusted_root" else 3)
        assert {c.name for c in res.checks} >= {CheckName.TLOG, CheckName.AUTHENTICITY, CheckName.IDENTITY,
                                                 CheckName.INTEGRITY, CheckName.DIGEST}
    else:
        assert res.outcome is Outcome.FAILED, res.reason
        assert res.failure is SignatureFailure.INVALID


def test_prefix_only_regexp_does_not_pass(prod_trust: SigstoreTrust) -> None:
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    for subject, issuer in (("philipp", ".*"), ("philipp.belitz@securesystems", ".*"),
                            (".*", "https://github.com"), (".*", "github")):
        v = CosignKeylessVerifier(identities=[IdentityMatcher.regexp(subject=subject, issuer=issuer)],
                                  trust=prod_trust)
        (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
        assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID, (subject, issuer)
        assert res.checks[-1].name is CheckName.IDENTITY
    ok = CosignKeylessVerifier(identities=[IdentityMatcher.regexp(subject="philipp\\..*", issuer=".*github.*")],
                               trust=prod_trust)
    (res,) = ok.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
    assert res.outcome is Outcome.PASSED


@pytest.mark.parametrize(("subject", "issuer"), [
    ("philipp.belitz@securesystems.de", "https://accounts.google.com"),  # wrong issuer
    ("someone.else@securesystems.de", "https://github.com/login/oauth"),  # wrong identity
])
def test_wrong_identity_or_issuer(prod_trust: SigstoreTrust, subject: str, issuer: str) -> None:
    v = CosignKeylessVerifier(identities=[IdentityMatcher.exact(subject=subject, issuer=issuer)], trust=prod_trust)
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, _layers(_legacy_keyless[0]
                                                                                 ["signature_manifest"])), NOW)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID
    assert "matches none of the trusted identities" in res.reason


def test_signature_for_another_image_is_invalid(prod_trust: SigstoreTrust) -> None:
    other = "sha256:" + "ab" * 32
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust)
    (res,) = v.verify(_image(other), _material(other, _layers(_legacy_keyless[0]["signature_manifest"])), NOW)
    assert res.outcome is Outcome.FAILED and res.checks[-1].name is CheckName.DIGEST


def test_key_based_layer_is_not_a_keyless_signature(prod_trust: SigstoreTrust) -> None:
    case = next(c for c in CASES["legacy_oci"]["cases"] if c["id"] == "key-single-alice")
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust)
    (res,) = v.verify(_image(case["image_digest"]), _material(case["image_digest"],
                                                              _layers(case["signature_manifest"])), NOW)
    assert res.outcome is Outcome.FAILED and "no certificate" in res.reason


def test_missing_rekor_bundle_fails_unless_tlog_ignored(prod_trust: SigstoreTrust) -> None:
    l0 = _layers(_legacy_keyless[0]["signature_manifest"])[0]
    stripped = dataclasses.replace(l0, annotations={k: v for k, v in l0.annotations.items() if k != ANN_BUNDLE})
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust)
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, (stripped,)), NOW)
    assert res.outcome is Outcome.FAILED and res.checks[-1].name is CheckName.TLOG
    # With the log ignored there is no trusted time at all: a Fulcio cert cannot be judged at scan time.
    v2 = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust, ignore_tlog=True)
    (res2,) = v2.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, (stripped,)), NOW)
    assert res2.outcome is Outcome.FAILED and "no trusted signing time" in res2.reason


# -- forged SETs: our own throw-away Rekor key ---------------------------------------------------


def _forge(layer: CosignLayer, key: ec.EllipticCurvePrivateKey, **payload_changes: Any) -> CosignLayer:
    ann = json.loads(layer.annotations[ANN_BUNDLE])
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = dict(ann["Payload"], logID=hashlib.sha256(spki).hexdigest(), **payload_changes)
    canonical = rfc8785.dumps({k: payload[k] for k in ("body", "integratedTime", "logID", "logIndex")})
    sig = key.sign(canonical, ec.ECDSA(hashes.SHA256()))
    new = json.dumps({"SignedEntryTimestamp": base64.b64encode(sig).decode(), "Payload": payload})
    return dataclasses.replace(layer, annotations={**layer.annotations, ANN_BUNDLE: new})


def _trust_with_rekor(key: ec.EllipticCurvePrivateKey) -> SigstoreTrust:
    kt = LEGACY / "keyless-trust"
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return trust_from_pems(str(kt / "fulcio-root.crt.pem"), pem, str(kt / "ctlog.pub.pem"))


def test_set_signed_by_another_key_is_invalid(prod_trust: SigstoreTrust) -> None:
    rogue = ec.generate_private_key(ec.SECP256R1())
    forged = _forge(_layers(_legacy_keyless[0]["signature_manifest"])[0], rogue)
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust)
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, (forged,)), NOW)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID
    assert res.checks[-1].name is CheckName.TLOG and "not a trusted Rekor log" in res.reason


def test_forged_set_with_trusted_key_verifies_control() -> None:
    """Control for the next test: our forging works, so its failure is the certificate time."""
    key = ec.generate_private_key(ec.SECP256R1())
    forged = _forge(_layers(_legacy_keyless[0]["signature_manifest"])[0], key)
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=_trust_with_rekor(key))
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, (forged,)), NOW)
    assert res.outcome is Outcome.PASSED, res.reason


@pytest.mark.parametrize("shift", [timedelta(hours=1), timedelta(minutes=-30)])
def test_certificate_outside_validity_at_integrated_time(shift: timedelta) -> None:
    layer = _layers(_legacy_keyless[0]["signature_manifest"])[0]
    cert = x509.load_pem_x509_certificate(layer.annotations["dev.sigstore.cosign/certificate"].encode())
    when = (cert.not_valid_after_utc if shift > timedelta(0) else cert.not_valid_before_utc) + shift
    key = ec.generate_private_key(ec.SECP256R1())
    forged = _forge(layer, key, integratedTime=int(when.timestamp()))
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=_trust_with_rekor(key))
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, (forged,)), NOW)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID
    assert res.checks[-1].name is CheckName.AUTHENTICITY
    assert "does not chain" in res.reason


def test_entry_body_for_another_signature() -> None:
    """A validly signed SET whose body describes a different signature (CVE-2022-36056 class)."""
    layer = _layers(_legacy_keyless[0]["signature_manifest"])[0]
    ann = json.loads(layer.annotations[ANN_BUNDLE])
    body = json.loads(base64.b64decode(ann["Payload"]["body"]))
    body["spec"]["signature"]["content"] = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    key = ec.generate_private_key(ec.SECP256R1())
    forged = _forge(layer, key, body=base64.b64encode(json.dumps(body).encode()).decode())
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=_trust_with_rekor(key))
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, (forged,)), NOW)
    assert res.outcome is Outcome.FAILED and "another signature" in res.reason


def test_garbage_annotations_never_crash(prod_trust: SigstoreTrust) -> None:
    l0 = _layers(_legacy_keyless[0]["signature_manifest"])[0]
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust)
    for key, value in [(ANN_BUNDLE, "{"), (ANN_BUNDLE, "[]"), (ANN_BUNDLE, "x" * 300_000),
                       ("dev.sigstore.cosign/certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n"),
                       ("dev.sigstore.cosign/chain", "garbage"),
                       ("dev.cosignproject.cosign/signature", "!!!"),
                       ("dev.sigstore.cosign/rfc3161timestamp", '{"SignedRFC3161Timestamp":"AAAA"}')]:
        bad = dataclasses.replace(l0, annotations={**l0.annotations, key: value})
        (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, (bad,)), NOW)
        assert res.outcome is not Outcome.PASSED and res.reason, key


# -- cosign/cases.json: v3 bundles as referrers --------------------------------------------------


@pytest.fixture(scope="module")
def v3() -> tuple[bytes, SigstoreTrust]:
    nb = COSIGN / "new-bundle-cosign"
    return (nb / "oci-attestation.sigstore.json").read_bytes(), load_trusted_root_file(nb / "trusted_root_pgi.json")


@pytest.mark.parametrize("case", CASES["new_bundle"]["cases"], ids=lambda c: c["id"])
def test_new_bundle_vectors(case: dict[str, Any], v3: tuple[bytes, SigstoreTrust]) -> None:
    blob, trust = v3
    digest = case["image_digest"] if case["image_digest"].startswith("sha256:") else "sha256:" + "cd" * 32
    ident = IdentityMatcher.regexp(subject=case["policy"]["subjectRegExp"], issuer=case["policy"]["issuerRegExp"])
    v = CosignKeylessVerifier(identities=[ident], trust=trust)
    (res,) = v.verify(_image(digest), _material(digest, referrers=(_bundle_referrer(blob, digest),)), NOW)
    assert res.kind == "sigstore-bundle"
    if case["expected"] == "pass":
        # The bundle verifies, but it is an attestation (predicate type cosign.sigstore.dev/attestation/v1),
        # not an image signature: examined, kept as evidence, never a pass on its own.
        assert res.outcome is Outcome.SKIPPED, res.reason
        assert "not an image signature" in res.reason
        assert res.details["role"] == "attestation"
        assert res.signer == "cody@soyland.com"
        assert res.details["predicate_types"] == ["https://cosign.sigstore.dev/attestation/v1"]
        assert res.signed_at is not None and res.signed_at.authentic and res.not_after is None
    else:
        assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID


def _as_signature_bundle(blob: bytes) -> bytes:
    """The attestation bundle with its statement's predicate type changed to cosign's sign
    predicate: claims to be an image signature, and no longer verifies (the payload changed)."""
    doc = json.loads(blob)
    stmt = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    stmt["predicateType"] = "https://sigstore.dev/cosign/sign/v1"
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    return json.dumps(doc).encode()


def test_signature_bundles_present_means_no_fallback_to_sig(v3: tuple[bytes, SigstoreTrust],
                                                             prod_trust: SigstoreTrust) -> None:
    """cosign v3: when image-signature bundles are attached, a valid legacy .sig does not rescue
    failing bundles."""
    blob, _ = v3
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust)
    bad_sig_bundle = _bundle_referrer(_as_signature_bundle(blob), KEYLESS_DIGEST)
    results = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers, (bad_sig_bundle,)), NOW)
    assert [r.kind for r in results] == ["sigstore-bundle"]
    assert results[0].outcome is Outcome.FAILED
    # ... and without bundles the same .sig verifies.
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
    assert res.outcome is Outcome.PASSED


def test_attestation_bundles_do_not_hide_the_sig(v3: tuple[bytes, SigstoreTrust],
                                                 prod_trust: SigstoreTrust) -> None:
    """An attestation is not an image signature: attached beside a legacy .sig, the .sig is still judged."""
    blob, _ = v3
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=prod_trust)
    results = v.verify(_image(KEYLESS_DIGEST),
                       _material(KEYLESS_DIGEST, layers, (_bundle_referrer(blob, KEYLESS_DIGEST),)), NOW)
    assert [r.kind for r in results] == ["sigstore-bundle", "cosign-keyless"]
    assert results[1].outcome is Outcome.PASSED


def test_oversized_bundle_is_invalid(v3: tuple[bytes, SigstoreTrust]) -> None:
    blob, trust = v3
    big = blob[:-1] + b" " * (4 * 1024 * 1024) + b"}"
    res = verify_bundle_for_digest(big, V3_DIGEST, trust=trust, identities=[IdentityMatcher.regexp(
        subject=".*", issuer=".*")], now=NOW)
    assert res.outcome is Outcome.FAILED and res.failure is SignatureFailure.INVALID
    assert "larger than" in res.reason
    res2 = verify_bundle_for_digest(blob, V3_DIGEST, trust=trust, identities=[IdentityMatcher.regexp(
        subject=".*", issuer=".*")], now=NOW, max_bundle_bytes=1000)
    assert res2.outcome is Outcome.FAILED and "larger than" in res2.reason


def test_bundle_garbage_never_crashes(v3: tuple[bytes, SigstoreTrust]) -> None:
    _, trust = v3
    ids = [IdentityMatcher.regexp(subject=".*", issuer=".*")]
    for blob in (b"", b"{", b"[]", b'{"mediaType": 5}', b"\xff\xfe", json.dumps({"a": [1] * 1000}).encode()):
        res = verify_bundle_for_digest(blob, V3_DIGEST, trust=trust, identities=ids, now=NOW)
        assert res.outcome is Outcome.FAILED and res.reason
    res = verify_bundle_for_digest(b"{}", "sha512:abc", trust=trust, identities=ids, now=NOW)
    assert res.outcome is Outcome.ERROR


def test_required_predicate_type(v3: tuple[bytes, SigstoreTrust]) -> None:
    """A verified attestation satisfies requirePredicateTypes but is not the image signature: alone, it
    never passes, whether its type is required or not."""
    blob, trust = v3
    ident = IdentityMatcher.regexp(subject=".*", issuer=".*")
    mat = _material(V3_DIGEST, referrers=(_bundle_referrer(blob, V3_DIGEST),))
    for required in (["https://slsa.dev/provenance/v1"], ["https://cosign.sigstore.dev/attestation/v1"], []):
        v = CosignKeylessVerifier(identities=[ident], trust=trust, require_predicate_types=required)
        (res,) = v.verify(_image(V3_DIGEST), mat, NOW)
        assert res.outcome is Outcome.SKIPPED and res.details["role"] == "attestation", required


# -- construction, trust roots -------------------------------------------------------------------


def _spec(**keyless: Any) -> CosignVerifierSpec:
    return CosignVerifierSpec.model_validate({"keyless": {
        "identities": [{"issuer": "https://github.com/login/oauth", "subjectRegExp": "philipp\\..*"}], **keyless}})


def test_from_spec_trusted_root_and_pems(prod_trust: SigstoreTrust) -> None:
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    kt = "legacy-oci-connaisseur/keyless-trust"
    for spec in (_spec(trustedRoot="legacy-oci-connaisseur/production.trusted_root.json"),
                 _spec(roots=f"{kt}/fulcio-root.crt.pem", rekor={"pubkey": f"{kt}/rekor.pub.pem"},
                       ctlog={"pubkey": f"{kt}/ctlog.pub.pem"})):
        v = CosignKeylessVerifier.from_spec(spec, base_dir=COSIGN)
        assert v.wants.cosign_sig and "application/vnd.dev.sigstore.bundle" in v.wants.referrer_types
        assert len(v.trust_fingerprint) == 64
        (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
        assert res.outcome is Outcome.PASSED, res.reason


def test_from_spec_config_errors() -> None:
    kt = "legacy-oci-connaisseur/keyless-trust"
    with pytest.raises(ConfigError):
        CosignKeylessVerifier.from_spec(_spec(trustedRoot="missing.json"), base_dir=COSIGN)
    with pytest.raises(ConfigError, match="rekor"):
        CosignKeylessVerifier.from_spec(_spec(roots=f"{kt}/fulcio-root.crt.pem"), base_dir=COSIGN)
    with pytest.raises(ConfigError, match="ctlog"):
        CosignKeylessVerifier.from_spec(_spec(roots=f"{kt}/fulcio-root.crt.pem",
                                              rekor={"pubkey": f"{kt}/rekor.pub.pem"}), base_dir=COSIGN)
    with pytest.raises(ConfigError):
        CosignKeylessVerifier.from_spec(CosignVerifierSpec.model_validate({"key": "k.pub"}), base_dir=COSIGN)


def test_public_good_root_is_lazy_and_errors_cleanly() -> None:
    calls: list[int] = []

    def unavailable() -> SigstoreTrust:
        calls.append(1)
        raise ConfigError("offline and no TUF cache")

    v = CosignKeylessVerifier.from_spec(_spec(), base_dir=COSIGN, public_good=unavailable)
    assert calls == []  # nothing loaded at construction
    assert v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST), NOW) == ()
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
    assert res.outcome is Outcome.ERROR and res.failure is SignatureFailure.ERROR
    assert "offline and no TUF cache" in res.reason
    v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
    assert calls == [1]  # the failure is remembered, not retried per image


def test_public_good_root_loaded_once_when_available(prod_trust: SigstoreTrust) -> None:
    calls: list[int] = []

    def loader() -> SigstoreTrust:
        calls.append(1)
        return prod_trust

    v = CosignKeylessVerifier.from_spec(_spec(), base_dir=COSIGN, public_good=loader)
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    for _ in range(2):
        (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
        assert res.outcome is Outcome.PASSED
    assert calls == [1]


def test_public_good_offline_from_embedded_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, sigstore-python's TUF cache (seeded from its embedded root) yields the public-good
    root without any network access."""
    from scanner.verify.trustroot import public_good_trust

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    trust = public_good_trust(offline=True)
    assert trust.root._inner.tlogs
    layers = _layers(_legacy_keyless[0]["signature_manifest"])
    v = CosignKeylessVerifier(identities=[PHILIPP], trust=trust)
    (res,) = v.verify(_image(KEYLESS_DIGEST), _material(KEYLESS_DIGEST, layers), NOW)
    assert res.outcome is Outcome.PASSED, res.reason
