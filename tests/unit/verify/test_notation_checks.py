"""scanner.verify.notation, check by check (issue #28: the deletion of each is noticed by a fast test):
what may be cached, the signing authority's time inside every validity period, a not-yet-valid
certificate, the key a ``keySha256`` revocation matches, a configured TSA store demanding a timestamp,
required user metadata and the signature manifest's subject."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from scanner.errors import ConfigError
from scanner.models import (
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
from scanner.policy.engine import apply_revocations
from scanner.policy.schema import NotationVerifierSpec, Revocation
from scanner.verify.notation import NotationVerifier
from scanner.verify.notation_trust import parse_trust_policy
from tests.harness.notation_sign import Issued
from tests.unit.verify.test_notation_signing import IMAGE, NOW, T0, TARGET, issue, jws, make_verifier, material


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    root = issue("Acme Root", ca=True)
    leaf = issue("Acme Signer", issuer=root)
    return {"root": root, "leaf": leaf}


def chain(pki: dict[str, Issued]) -> list[Issued]:
    return [pki["leaf"], pki["root"]]


def one(v: NotationVerifier, blob: bytes, now: Any = NOW, image: RunningImage = IMAGE,
        mat: SignatureMaterial | None = None) -> SignatureResult:
    (r,) = v.verify(image, mat or material(blob), now)
    return r


def check(r: SignatureResult, name: str) -> Any:
    return next(c for c in r.checks if c.name.value == name)


# -- what may be cached ----------------------------------------------------------------------------------

def _r(signed: SignedTime | None = None, revocation: list[dict[str, str]] | None = None) -> SignatureResult:
    details = {} if revocation is None else {"revocation": revocation}
    return SignatureResult("notation", "n", Outcome.PASSED, "ok", signed_at=signed, details=details)


def test_results_that_used_a_network_answer_are_not_cached(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    assert v.results_cacheable(())
    assert v.results_cacheable((_r(SignedTime(T0, TimeSource.CLAIMED), [{"method": "none", "status": "good"}]),))
    assert v.results_cacheable((_r(SignedTime(T0, TimeSource.SIGNING_AUTHORITY)),))
    assert not v.results_cacheable((_r(SignedTime(T0, TimeSource.TSA)),))
    assert not v.results_cacheable((_r(revocation=[{"method": "none", "status": "good"},
                                                   {"method": "crl", "status": "good"}]),))
    assert not v.results_cacheable((_r(revocation=[{"method": "ocsp", "status": "good"}]),))
    assert not v.results_cacheable((_r(revocation=[{"method": "none", "status": "unknown"}]),))
    assert not v.results_cacheable((_r(), _r(SignedTime(T0, TimeSource.TSA))))


# -- time ----------------------------------------------------------------------------------------------

def test_a_signing_authority_time_outside_a_certificates_validity_is_refused(tmp_path: Path,
                                                                           pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]], store_type="signingAuthority")
    for when in (T0 - timedelta(days=2), T0 + timedelta(days=366)):  # the chain: T0 - 1 day .. T0 + 365 days
        r = one(v, jws(chain(pki), scheme="notary.x509.signingAuthority", signing_time=when))
        assert (r.outcome, r.failure) == (Outcome.FAILED, SignatureFailure.EXPIRED), when
        assert "was not valid when the digital signature was produced" in r.reason
    r = one(v, jws(chain(pki), scheme="notary.x509.signingAuthority", signing_time=T0 + timedelta(days=364)),
            now=T0 + timedelta(days=400))
    assert r.outcome is Outcome.PASSED, r.reason  # signed inside the validity: fine after it
    assert r.signed_at == SignedTime(T0 + timedelta(days=364), TimeSource.SIGNING_AUTHORITY)


def test_a_not_yet_valid_certificate_is_refused(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    r = one(v, jws(chain(pki)), now=T0 - timedelta(days=2))
    assert (r.outcome, r.failure) == (Outcome.FAILED, SignatureFailure.EXPIRED)
    assert "verification time is before certificate" in r.reason
    assert one(v, jws(chain(pki)), now=T0 - timedelta(hours=23)).outcome is Outcome.PASSED


def test_an_expired_certificate_is_refused_and_at_its_last_second_accepted(tmp_path: Path,
                                                                          pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    end = pki["leaf"].cert.not_valid_after_utc
    assert one(v, jws(chain(pki)), now=end).outcome is Outcome.PASSED
    r = one(v, jws(chain(pki)), now=end + timedelta(seconds=1))
    assert r.failure is SignatureFailure.EXPIRED and "it was expired at" in r.reason
    assert f'it was expired at "{end.strftime("%a, %d %b %Y %H:%M:%S +0000")}"' in r.reason  # as notation says it


def test_not_after_is_the_first_certificate_or_signature_end(tmp_path: Path, pki: dict[str, Issued]) -> None:
    short = issue("Short Signer", issuer=pki["root"], not_after=T0 + timedelta(days=20))
    r = one(make_verifier(tmp_path, [pki["root"]]), jws([short, pki["root"]]))
    assert r.not_after == T0 + timedelta(days=20)


# -- the key a revocation matches ----------------------------------------------------------------------

def test_a_keysha256_revocation_matches_the_notation_signer(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = one(make_verifier(tmp_path, [pki["root"]]), jws(chain(pki)))
    der = pki["leaf"].cert.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    assert r.outcome is Outcome.PASSED and r.key_sha256 == hashlib.sha256(der).hexdigest()
    (out,) = apply_revocations([r], [Revocation(keySha256=r.key_sha256, reason="leaked")])
    assert out.failure is SignatureFailure.REVOKED
    assert r.identity == r.signer == "CN=Acme Signer,O=Acme,ST=WA,C=US"
    assert r.issuer == "CN=Acme Root,O=Acme,ST=WA,C=US"


# -- a configured TSA store demands a timestamp --------------------------------------------------------

def tsa_verifier(tmp_path: Path, roots: list[Issued], verify_timestamp: str = "always") -> NotationVerifier:
    for typ in ("ca", "tsa"):
        store = tmp_path / "store" / "x509" / typ / "acme"
        store.mkdir(parents=True, exist_ok=True)
        (store / "root.pem").write_bytes(roots[0].cert.public_bytes(serialization.Encoding.PEM))
    statement = {"name": "acme", "registryScopes": ["localhost:5000/app"],
                 "signatureVerification": {"level": "strict", "verifyTimestamp": verify_timestamp},
                 "trustStores": ["ca:acme", "tsa:acme"], "trustedIdentities": ["*"]}
    (tmp_path / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": [statement]}))
    spec = NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="store")
    return NotationVerifier.from_spec(spec, base_dir=tmp_path, fetcher=None)


def test_a_configured_tsa_store_demands_a_timestamp(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = one(tsa_verifier(tmp_path, [pki["root"]]), jws(chain(pki)))
    assert (r.outcome, r.failure) == (Outcome.FAILED, SignatureFailure.INVALID)
    assert "no timestamp countersignature" in r.reason
    assert check(r, "revocation").outcome is Outcome.SKIPPED  # the evaluation stopped at the timestamp
    assert "timestamp" not in r.details


def test_after_cert_expiry_a_timestamp_is_demanded_only_once_a_certificate_expired(tmp_path: Path,
                                                                                pki: dict[str, Issued]) -> None:
    v = tsa_verifier(tmp_path, [pki["root"]], "afterCertExpiry")
    assert one(v, jws(chain(pki))).outcome is Outcome.PASSED
    r = one(v, jws(chain(pki)), now=T0 + timedelta(days=400))
    assert r.outcome is Outcome.FAILED and "no timestamp countersignature" in r.reason


# -- integrity extras ----------------------------------------------------------------------------------

def test_required_user_metadata(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]], user_metadata={"env": "prod"})
    r = one(v, jws(chain(pki)))
    assert r.failure is SignatureFailure.INVALID and 'unable to find specified metadata env="prod"' in r.reason
    target = {"mediaType": TARGET.media_type, "digest": TARGET.digest, "size": TARGET.size,
              "annotations": {"env": "prod"}}
    from tests.harness import notation_sign

    good = notation_sign.jws_envelope(chain(pki), target, signing_time=T0)
    assert one(v, good).outcome is Outcome.PASSED


def test_a_signature_manifest_for_another_subject_is_refused(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    other = Descriptor(TARGET.media_type, "sha256:" + "00" * 32, 1)
    art = ReferrerArtifact("sha256:" + "cd" * 32, "application/vnd.cncf.notary.signature", "application/jose+json",
                           jws(chain(pki)), {}, other)
    r = one(v, b"", mat=SignatureMaterial(image=TARGET, referrers=(art,)))
    assert r.failure is SignatureFailure.INVALID and "subject is" in r.reason
    no_subject = ReferrerArtifact(art.manifest_digest, art.artifact_type, art.blob_media_type, art.blob, {}, None)
    assert one(v, b"", mat=SignatureMaterial(image=TARGET, referrers=(no_subject,))).outcome is Outcome.PASSED


def test_only_notation_artifacts_are_judged(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    art = material(jws(chain(pki))).referrers[0]
    bundle = ReferrerArtifact(art.manifest_digest, "application/vnd.dev.sigstore.bundle.v0.3+json",
                              art.blob_media_type, art.blob, {}, TARGET)
    assert v.verify(IMAGE, SignatureMaterial(image=TARGET, referrers=(bundle,)), NOW) == ()


# -- construction and identity -------------------------------------------------------------------------

def test_construction_refuses_blob_policies_and_missing_stores(tmp_path: Path, pki: dict[str, Issued]) -> None:
    blob_policy = parse_trust_policy({"version": "1.0", "trustPolicies": [
        {"name": "b", "signatureVerification": {"level": "strict"}, "trustStores": ["ca:x"],
         "trustedIdentities": ["*"]}]})
    with pytest.raises(ConfigError, match="OCI trust policy"):
        NotationVerifier(blob_policy, {})
    v = make_verifier(tmp_path, [pki["root"]])
    with pytest.raises(ConfigError, match="which was not loaded"):
        NotationVerifier(v.policy, {})


def test_decision_identity_follows_the_statement_and_its_stores(tmp_path: Path, pki: dict[str, Issued]) -> None:
    a = make_verifier(tmp_path / "a", [pki["root"]])
    b = make_verifier(tmp_path / "b", [issue("Other Root", ca=True)])
    elsewhere = RunningImage(ImageReference("docker.io", "library/nginx", None, TARGET.digest), ())
    other_repo = RunningImage(ImageReference("docker.io", "library/redis", None, TARGET.digest), ())
    assert a.decision_identity(IMAGE) != b.decision_identity(IMAGE)
    assert a.decision_identity(elsewhere) != a.decision_identity(other_repo)  # no statement: the repository
    assert a.decision_identity(elsewhere) != a.decision_identity(IMAGE)
    c = make_verifier(tmp_path / "c", [pki["root"]], level="permissive")
    assert c.decision_identity(IMAGE) != a.decision_identity(IMAGE)
    assert a.trust_fingerprint != b.trust_fingerprint


def test_after_cert_expiry_counts_any_expired_certificate(tmp_path: Path, pki: dict[str, Issued]) -> None:
    """Only the leaf has expired (the root has not): a timestamp is demanded, not the expiry reported."""
    v = tsa_verifier(tmp_path, [pki["root"]], "afterCertExpiry")
    short = issue("Short Signer", issuer=pki["root"], not_after=T0 + timedelta(days=20))
    r = one(v, jws([short, pki["root"]]), now=T0 + timedelta(days=30))
    assert r.outcome is Outcome.FAILED and "no timestamp countersignature" in r.reason


class _TsaStatus:
    """The TSA chain's revocation status as the checker would answer it (OCSP/CRL are not offline)."""

    def __init__(self, status: Any) -> None:
        self.status = status

    def check_chain(self, chain: Any, now: Any, at: Any = None, **kw: Any) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(status=self.status, reason=f"TSA chain {self.status.value}", certificates=())


def test_a_revoked_tsa_chain_fails_the_timestamp_and_a_good_one_passes() -> None:
    from scanner.verify.notation import check_authentic_timestamp
    from scanner.verify.notation_envelope import JWS_MEDIA_TYPE, parse_envelope
    from scanner.verify.notation_trust import load_named_store
    from scanner.verify.revocation import RevocationStatus
    from tests.unit.verify.test_notation_vectors import CASES, TRUSTSTORE, VECTORS
    from tests.unit.verify.test_notation_vectors import NOW as VNOW

    case = CASES["timestamp_cases"][0]
    stmt = parse_trust_policy({"version": "1.0", "trustPolicies": [case["trust_policy_statement"]]}).statements[0]
    env = parse_envelope(JWS_MEDIA_TYPE, (VECTORS / case["envelope"]).read_bytes())
    tsa = list(load_named_store(TRUSTSTORE, "tsa", "test-timestamp").certificates)
    revoked = check_authentic_timestamp(env, stmt, tsa, VNOW, _TsaStatus(RevocationStatus.REVOKED))  # type: ignore[arg-type]
    assert revoked.problem == "timestamping certificate chain: TSA chain revoked"
    assert not revoked.error and revoked.timestamp is not None
    good = check_authentic_timestamp(env, stmt, tsa, VNOW, _TsaStatus(RevocationStatus.OK))  # type: ignore[arg-type]
    assert good.problem is None and good.timestamp is not None


# -- the record of checks, the fingerprint, configuration errors ------------------------------------

def test_a_stopped_signature_reports_each_later_check_once_as_not_evaluated(tmp_path: Path,
                                                                           pki: dict[str, Issued]) -> None:
    r = one(make_verifier(tmp_path, [issue("Other Root", ca=True)]), jws(chain(pki)))
    assert r.failure is SignatureFailure.INVALID
    assert [c.name.value for c in r.checks] == ["integrity", "authenticity", "trusted-identity", "expiry",
                                                "authentic-timestamp", "revocation"]
    assert [c.outcome for c in r.checks[:2]] == [Outcome.PASSED, Outcome.FAILED]
    assert all(c.outcome is Outcome.SKIPPED and c.reason == "not evaluated: authenticity validation failed"
               for c in r.checks[2:])


def _policy_doc(tmp_path: Path, **statement: Any) -> None:
    doc = {"name": "acme", "registryScopes": ["localhost:5000/app"], "signatureVerification": {"level": "strict"},
           "trustStores": ["ca:acme"], "trustedIdentities": ["*"], **statement}
    (tmp_path / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": [doc]}))


def test_the_trust_fingerprint_changes_with_everything_trusted(tmp_path: Path, pki: dict[str, Issued]) -> None:
    base = make_verifier(tmp_path / "a", [pki["root"]])
    prints = {
        base.trust_fingerprint,
        make_verifier(tmp_path / "b", [pki["root"]], identities=["x509.subject: C=US, ST=WA, O=A"]).trust_fingerprint,
        make_verifier(tmp_path / "c", [pki["root"]], user_metadata={"env": "prod"}).trust_fingerprint,
        make_verifier(tmp_path / "d", [pki["root"]], max_signatures=3).trust_fingerprint,
        make_verifier(tmp_path / "e", [pki["root"]], fetcher=object()).trust_fingerprint,
        make_verifier(tmp_path / "f", [issue("Other Root", ca=True)]).trust_fingerprint,
    }
    assert len(prints) == 6
    # the same statement naming a store of another name, with the same certificate
    store = tmp_path / "g" / "store" / "x509" / "ca" / "other"
    store.mkdir(parents=True)
    (store / "root.pem").write_bytes(pki["root"].cert.public_bytes(serialization.Encoding.PEM))
    _policy_doc(tmp_path / "g", trustStores=["ca:other"])
    renamed = NotationVerifier.from_spec(NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="store"),
                                         base_dir=tmp_path / "g", fetcher=None)
    raw = renamed.policy.raw
    assert raw["trustPolicies"][0]["trustStores"] == ["ca:other"]
    assert renamed.trust_fingerprint not in prints
    assert base.name == "notation policy trustpolicy.json"


def test_trust_store_configuration_errors_name_the_file(tmp_path: Path, pki: dict[str, Issued]) -> None:
    _policy_doc(tmp_path)
    spec = NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="truststore.yaml")
    # malformed, not mappings, not UTF-8: a configuration error naming the file (exit 2), never exit 3
    for bad in (b"kind: [unclosed", b"- a\n- b\n", b"\xff\xfe kind: x"):
        (tmp_path / "truststore.yaml").write_bytes(bad)
        with pytest.raises(ConfigError, match=r"truststore\.yaml"):
            NotationVerifier.from_spec(spec, base_dir=tmp_path, fetcher=None)
    pem = pki["root"].cert.public_bytes(serialization.Encoding.PEM).decode()
    (tmp_path / "truststore.yaml").write_text(
        "apiVersion: notation.nirmata.io/v1alpha1\nkind: TrustStore\nmetadata:\n  name: x\nspec:\n"
        "  trustStoreName: other\n  type: ca\n  caBundle: |-\n"
        + "".join(f"    {line}\n" for line in pem.strip().splitlines()))
    with pytest.raises(ConfigError, match='the trust store "acme" of type "ca" does not exist'):
        NotationVerifier.from_spec(spec, base_dir=tmp_path, fetcher=None)
    dir_spec = NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="store")
    (tmp_path / "store" / "x509" / "ca").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"store/ca/acme: "):  # the error names the store's path
        NotationVerifier.from_spec(dir_spec, base_dir=tmp_path, fetcher=None)  # no such store directory
    (tmp_path / "store" / "x509" / "ca" / "acme").write_text("a file, not a directory")
    with pytest.raises(ConfigError, match=r"store/ca/acme: "):
        NotationVerifier.from_spec(dir_spec, base_dir=tmp_path, fetcher=None)


def test_a_wrong_identity_stops_the_evaluation(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]], identities=["x509.subject: C=US, ST=WA, O=Evil"])
    r = one(v, jws(chain(pki)))
    assert r.failure is SignatureFailure.INVALID and "trusted identities" in r.reason
    assert [c.outcome for c in r.checks] == [Outcome.PASSED, Outcome.PASSED, Outcome.FAILED] + [Outcome.SKIPPED] * 3


def test_details_say_what_the_envelope_claimed(tmp_path: Path, pki: dict[str, Issued]) -> None:
    expiry = T0 + timedelta(days=30)
    blob = jws(chain(pki), extra={"io.cncf.notary.expiry": expiry.isoformat()},
               crit=["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"])
    r = one(make_verifier(tmp_path / "x", [pki["root"]]), blob)
    assert r.outcome is Outcome.PASSED, r.reason
    d = r.details
    assert (d["signing_time"], d["authentic_signing_time"], d["expiry"], d["timestamped"]) == (
        T0.isoformat(), None, expiry.isoformat(), False)
    assert d["signing_scheme"] == "notary.x509" and d["chain_subjects"][0] == "CN=Acme Signer,O=Acme,ST=WA,C=US"
    assert check(r, "expiry").reason == f"signature expires {expiry.isoformat()}"
    sa = one(make_verifier(tmp_path / "sa", [pki["root"]], store_type="signingAuthority"),
             jws(chain(pki), scheme="notary.x509.signingAuthority"))
    assert sa.details["authentic_signing_time"] == T0.isoformat() and sa.details["expiry"] is None
    assert sa.details["signing_time"] is None
    assert check(sa, "expiry").reason == "signature has no expiry"


def _timestamped(revocation: Any, override: dict[str, str] | None = None) -> SignatureResult:
    """The Notary Project's timestamped JWS vector, judged end to end with the TSA store configured."""
    from scanner.verify.notation_envelope import JWS_MEDIA_TYPE, parse_envelope
    from scanner.verify.notation_trust import load_named_store
    from tests.unit.verify.test_notation_vectors import CASES, TRUSTSTORE, VECTORS
    from tests.unit.verify.test_notation_vectors import NOW as VNOW

    case = CASES["timestamp_cases"][0]
    stmt_doc = {**case["trust_policy_statement"], "signatureVerification": {"level": "strict",
                                                                           "override": override or {}}}
    policy = parse_trust_policy({"version": "1.0", "trustPolicies": [stmt_doc]})
    stores = {k: load_named_store(TRUSTSTORE, *k) for k in (("ca", "valid-trust-store"), ("tsa", "test-timestamp"))}
    blob = (VECTORS / case["envelope"]).read_bytes()
    t = parse_envelope(JWS_MEDIA_TYPE, blob).target
    v = NotationVerifier(policy, stores, revocation=revocation)
    art = ReferrerArtifact("sha256:" + "cd" * 32, "application/vnd.cncf.notary.signature", JWS_MEDIA_TYPE, blob, {},
                           None)
    return v.verify_signature(policy.statements[0], art, Descriptor(t.media_type, t.digest, t.size), VNOW)


class _Revoked(_TsaStatus):
    fetcher = None

    def __init__(self) -> None:
        from scanner.verify.revocation import RevocationStatus

        super().__init__(RevocationStatus.REVOKED)


def test_the_tsa_chain_is_checked_for_revocation_unless_revocation_is_skipped() -> None:
    r = _timestamped(_Revoked())
    assert r.outcome is Outcome.FAILED, r.reason
    assert check(r, "authentic-timestamp").outcome is Outcome.FAILED
    assert "timestamping certificate chain: TSA chain revoked" in r.reason
    assert r.signed_at is not None and r.signed_at.source is TimeSource.CLAIMED  # a rejected timestamp proves nothing
    skipped = _timestamped(_Revoked(), {"revocation": "skip"})
    assert skipped.outcome is Outcome.PASSED, skipped.reason
    assert skipped.signed_at is not None and skipped.signed_at.source is TimeSource.TSA
    assert skipped.details["timestamp"]["gen_time"] == skipped.signed_at.value.isoformat()
    assert skipped.details["timestamped"] is True
    assert check(skipped, "authentic-timestamp").reason == "RFC 3161 timestamp verified"


def test_an_expired_signature_stops_the_evaluation(tmp_path: Path, pki: dict[str, Issued]) -> None:
    blob = jws(chain(pki), extra={"io.cncf.notary.expiry": (T0 + timedelta(days=5)).isoformat()},
               crit=["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"])
    r = one(make_verifier(tmp_path, [pki["root"]]), blob)
    assert r.failure is SignatureFailure.EXPIRED
    assert [c.outcome for c in r.checks[3:]] == [Outcome.FAILED, Outcome.SKIPPED, Outcome.SKIPPED]


class _Recording:
    """Records the signing time the verifier hands the revocation check (an invalidity date after an
    authentic signing time spares a signature; a claimed time must never do that)."""

    fetcher = None

    def __init__(self) -> None:
        self.at: list[Any] = []

    def check_chain(self, chain: Any, now: Any, at: Any = None, **kw: Any) -> Any:
        from types import SimpleNamespace

        from scanner.verify.revocation import RevocationStatus

        self.at.append(at)
        return SimpleNamespace(status=RevocationStatus.OK, reason="ok", certificates=())


def test_only_an_authentic_signing_time_reaches_the_revocation_check(tmp_path: Path, pki: dict[str, Issued]) -> None:
    from scanner.verify.notation_trust import load_trust_policy

    for store_type, scheme, expected in (("ca", "notary.x509", None),
                                         ("signingAuthority", "notary.x509.signingAuthority", T0)):
        built = make_verifier(tmp_path / store_type, [pki["root"]], store_type=store_type)
        rec = _Recording()
        policy = load_trust_policy(tmp_path / store_type / "trustpolicy.json")
        v = NotationVerifier(policy, built._stores, revocation=rec)  # type: ignore[arg-type]
        r = one(v, jws(chain(pki), scheme=scheme))
        assert r.outcome is Outcome.PASSED, r.reason
        assert rec.at == [expected], store_type


def test_the_reason_says_the_failed_validation_once_and_what_was_only_logged(tmp_path: Path,
                                                                            pki: dict[str, Issued]) -> None:
    r = one(make_verifier(tmp_path / "a", [issue("Other Root", ca=True)]), jws(chain(pki)))
    assert r.reason.count("authenticity validation failed") == 1
    short = issue("Short Signer", issuer=pki["root"], not_after=T0 + timedelta(days=20))
    blob = jws([short, pki["root"]], extra={"io.cncf.notary.expiry": (T0 + timedelta(days=5)).isoformat()},
               crit=["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"])
    v = make_verifier(tmp_path / "b", [pki["root"]], override={"expiry": "log"})
    r = one(v, blob, now=T0 + timedelta(days=30))
    assert r.failure is SignatureFailure.EXPIRED and r.reason.startswith("authenticTimestamp validation failed.")
    assert '; also logged: expiry was set to "log" and failed with error: expiry validation failed.' in r.reason


def test_the_timestamp_step_says_how_it_passed(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = one(make_verifier(tmp_path / "a", [pki["root"]]), jws(chain(pki)))
    assert check(r, "authentic-timestamp").reason == "certificate chain valid at the verification time"
