"""Notation verification on signatures made here (JWS and COSE, generated PKI), and bad input.

Each test builds its certificates with ``cryptography`` at a fixed instant (``T0``) and verifies at
an injected clock, so expiry and revocation are decided at known instants. OCSP and CRL traffic
goes to real HTTP servers on 127.0.0.1 through ``HttpFetcher``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from scanner.errors import ConfigError, LimitExceeded, ParseError
from scanner.models import (
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
from scanner.policy.schema import NotationVerifierSpec
from scanner.registry.fetcher import HttpFetcher
from scanner.verify.base import Verifier
from scanner.verify.notation import NotationVerifier
from scanner.verify.notation_envelope import COSE_MEDIA_TYPE, JWS_MEDIA_TYPE, parse_envelope
from scanner.verify.notation_trust import (
    TrustPolicyError,
    load_trust_policy,
    load_trust_store_crs,
    parse_trust_policy,
)
from scanner.verify.revocation import CRLCache, RevocationChecker, RevocationStatus
from tests.harness import notation_sign
from tests.harness.notation_sign import Issued
from tests.harness.revocation_server import RevocationServer

T0 = datetime(2025, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
TARGET = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 1234)
IMAGE = RunningImage(ImageReference("localhost:5000", "app", "v1", TARGET.digest), ())


# ----------------------------------------------------------------------------------------------
# A small PKI and envelopes, from the fixture builder shared with the demo and the integration tests.


def issue(cn: str, **kw: Any) -> Issued:
    """A certificate valid from T0 - 1 day to T0 + 365 days unless told otherwise (org "Acme")."""
    kw.setdefault("not_before", T0 - timedelta(days=1))
    kw.setdefault("not_after", T0 + timedelta(days=365))
    return notation_sign.issue(cn, org="Acme", **kw)


def payload(target: Descriptor = TARGET, annotations: dict[str, str] | None = None) -> bytes:
    t: dict[str, Any] = {"mediaType": target.media_type, "digest": target.digest, "size": target.size}
    if annotations:
        t["annotations"] = annotations
    return notation_sign.payload(t)


def _target() -> dict[str, Any]:
    return {"mediaType": TARGET.media_type, "digest": TARGET.digest, "size": TARGET.size}


def jws(chain: list[Issued], *, alg: str = "ES256", extra: dict[str, Any] | None = None,
        crit: list[str] | None = None, body: bytes | None = None, scheme: str = "notary.x509",
        signing_time: datetime = T0) -> bytes:
    return notation_sign.jws_envelope(chain, _target(), signing_time=signing_time, alg=alg, scheme=scheme,
                                      extra=extra, crit=crit, body=body, time_format=datetime.isoformat)


def cose(chain: list[Issued], *, alg: int = -7, expiry: datetime | None = None) -> bytes:
    name = {-7: "ES256", -35: "ES384", -37: "PS256"}[alg]
    return notation_sign.cose_envelope(chain, _target(), signing_time=T0, expiry=expiry, alg=name)


def material(blob: bytes, media_type: str = JWS_MEDIA_TYPE) -> SignatureMaterial:
    ref = ReferrerArtifact("sha256:" + "cd" * 32, "application/vnd.cncf.notary.signature", media_type, blob, {},
                           TARGET)
    return SignatureMaterial(image=TARGET, referrers=(ref,))


def make_verifier(tmp_path: Path, roots: list[Issued], *, level: str = "strict", override: dict[str, str] | None = None,
                  identities: list[str] | None = None, fetcher: Any = None, store_type: str = "ca",
                  **kw: Any) -> NotationVerifier:
    store = tmp_path / "store" / "x509" / store_type / "acme"
    store.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(roots):
        (store / f"root{i}.pem").write_bytes(r.cert.public_bytes(serialization.Encoding.PEM))
    sv: dict[str, Any] = {"level": level}
    if override:
        sv["override"] = override
    statement: dict[str, Any] = {"name": "acme", "registryScopes": ["localhost:5000/app"], "signatureVerification": sv}
    if level != "skip":  # a skip statement names no trust stores or identities (notation refuses them)
        statement.update(trustStores=[f"{store_type}:acme"], trustedIdentities=identities or ["*"])
    policy = {"version": "1.0", "trustPolicies": [statement]}
    (tmp_path / "trustpolicy.json").write_text(json.dumps(policy))
    spec = NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="store")
    return NotationVerifier.from_spec(spec, base_dir=tmp_path, fetcher=fetcher, **kw)


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    root = issue("Acme Root", ca=True)
    inter = issue("Acme Intermediate", ca=True, issuer=root)
    leaf = issue("Acme Signer", issuer=inter)
    return {"root": root, "inter": inter, "leaf": leaf}


# ----------------------------------------------------------------------------------------------
# Good and bad signatures.


def test_verifier_satisfies_the_protocol(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    assert isinstance(v, Verifier)
    assert v.wants.referrer_types == frozenset({"application/vnd.cncf.notary.signature"})
    assert len(v.trust_fingerprint) == 64


def test_good_jws_and_cose(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]], identities=["x509.subject: C=US, ST=WA, O=Acme"])
    chain = [pki["leaf"], pki["inter"], pki["root"]]
    for blob, mt in ((jws(chain), JWS_MEDIA_TYPE), (cose(chain, expiry=T0 + timedelta(days=30)), COSE_MEDIA_TYPE)):
        (r,) = v.verify(IMAGE, material(blob, mt), NOW)
        assert r.outcome is Outcome.PASSED, r.reason
        assert r.signer == "CN=Acme Signer,O=Acme,ST=WA,C=US"
        assert [c.name.value for c in r.checks] == ["integrity", "authenticity", "trusted-identity", "expiry",
                                                    "authentic-timestamp", "revocation"]
        assert r.details["envelope_type"] == mt
        assert len(r.details["chain_sha256"]) == 3
        assert r.signed_at == SignedTime(T0, TimeSource.CLAIMED)  # notary.x509 signingTime: only claimed
    assert r.not_after == T0 + timedelta(days=30)  # COSE expiry before the chain's notAfter


def test_signing_authority_uses_authentic_signing_time(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]], store_type="signingAuthority")
    chain = [pki["leaf"], pki["inter"], pki["root"]]
    (r,) = v.verify(IMAGE, material(jws(chain, scheme="notary.x509.signingAuthority")), NOW)
    assert r.outcome is Outcome.PASSED, r.reason
    assert r.signed_at == SignedTime(T0, TimeSource.SIGNING_AUTHORITY)
    # A signing-authority signature is not trusted through a "ca" store.
    v2 = make_verifier(tmp_path / "ca", [pki["root"]], store_type="ca")
    (r2,) = v2.verify(IMAGE, material(jws(chain, scheme="notary.x509.signingAuthority")), NOW)
    assert r2.outcome is Outcome.FAILED and "no trust store of type" in r2.reason


@pytest.mark.parametrize("mutate,expect", [
    (lambda c: jws(c, body=payload(Descriptor(TARGET.media_type, "sha256:" + "00" * 32, 1234))),
     "signature does not match the given artifact"),
    (lambda c: jws(c, body=payload(Descriptor(TARGET.media_type, TARGET.digest, 999))), "does not match"),
    (lambda c: jws(c, alg="ES384"), "does not match the signing certificate"),
    (lambda c: jws(c, extra={"x": 1}, crit=["io.cncf.notary.signingScheme", "x"]), "unsupported critical"),
    (lambda c: jws(c, extra={"io.cncf.notary.verificationPlugin": "com.amazonaws.signer.notation.plugin"},
                   crit=["io.cncf.notary.signingScheme", "io.cncf.notary.verificationPlugin"]), "verification plugin"),
    (lambda c: jws(c, extra={"io.cncf.notary.signingScheme": "notary.x509.weird"}), "signing scheme"),
    (lambda c: jws(c, extra={"cty": "application/json"}), "content type"),
    (lambda c: jws(c, extra={"alg": "none"}), "not supported"),
    (lambda c: jws(c, crit=["io.cncf.notary.expiry"]), "must be marked critical"),
    (lambda c: jws(c, extra={"io.cncf.notary.expiry": "2026-01-01T00:00:00Z"}), "must be marked critical"),
    (lambda c: jws(c, extra={"io.cncf.notary.signingTime": "yesterday"}), "RFC 3339"),
    (lambda c: jws([c[0], c[2]]), "is not issued by"),  # a gap in the chain
    (lambda c: jws(c).replace(b'"signature": "', b'"signature": "AAAA'), "does not verify"),
])
def test_integrity_failures_are_enforced_at_every_level(tmp_path: Path, pki: dict[str, Issued],
                                                        mutate: Callable[[list[Issued]], bytes], expect: str) -> None:
    chain = [pki["leaf"], pki["inter"], pki["root"]]
    blob = mutate(chain)
    for level in ("strict", "permissive", "audit"):
        v = make_verifier(tmp_path / level, [pki["root"]], level=level)
        (r,) = v.verify(IMAGE, material(blob), NOW)
        assert r.outcome is Outcome.FAILED and r.failure is SignatureFailure.INVALID, r.reason
        assert "integrity validation failed" in r.reason and expect in r.reason, r.reason
        assert all(c.outcome is Outcome.SKIPPED for c in r.checks[1:])


def test_expiry_and_levels(tmp_path: Path, pki: dict[str, Issued]) -> None:
    chain = [pki["leaf"], pki["inter"], pki["root"]]
    blob = jws(chain, extra={"io.cncf.notary.expiry": (T0 + timedelta(days=5)).isoformat()},
               crit=["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"])
    (r,) = make_verifier(tmp_path / "s", [pki["root"]]).verify(IMAGE, material(blob), NOW)
    assert r.failure is SignatureFailure.EXPIRED and "expiry validation failed" in r.reason
    (r,) = make_verifier(tmp_path / "p", [pki["root"]], level="permissive").verify(IMAGE, material(blob), NOW)
    assert r.outcome is Outcome.PASSED and "expiry was set to \"log\"" in r.reason
    assert next(c for c in r.checks if c.name.value == "expiry").enforced is False
    (r,) = make_verifier(tmp_path / "o", [pki["root"]], level="permissive",
                         override={"expiry": "enforce"}).verify(IMAGE, material(blob), NOW)
    assert r.failure is SignatureFailure.EXPIRED
    # One second before expiry it is fine.
    (r,) = make_verifier(tmp_path / "t", [pki["root"]]).verify(IMAGE, material(blob),
                                                               T0 + timedelta(days=5) - timedelta(seconds=1))
    assert r.outcome is Outcome.PASSED


def test_expired_certificate_without_timestamp(tmp_path: Path, pki: dict[str, Issued]) -> None:
    chain = [pki["leaf"], pki["inter"], pki["root"]]
    later = T0 + timedelta(days=400)  # the chain ends at T0 + 365 days
    (r,) = make_verifier(tmp_path, [pki["root"]]).verify(IMAGE, material(jws(chain)), later)
    assert r.failure is SignatureFailure.EXPIRED
    assert "authenticTimestamp validation failed" in r.reason and "validity period" in r.reason


def test_untrusted_root_and_wrong_identity(tmp_path: Path, pki: dict[str, Issued]) -> None:
    other = issue("Other Root", ca=True)
    chain = [pki["leaf"], pki["inter"], pki["root"]]
    (r,) = make_verifier(tmp_path / "a", [other]).verify(IMAGE, material(jws(chain)), NOW)
    assert r.failure is SignatureFailure.INVALID and "does not contain any trusted certificate" in r.reason
    (r,) = make_verifier(tmp_path / "b", [pki["root"]], identities=["x509.subject: C=US, ST=WA, O=Evil"]).verify(
        IMAGE, material(jws(chain)), NOW)
    assert r.failure is SignatureFailure.INVALID and "trusted identities" in r.reason


def test_no_statement_skip_and_unsigned(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    elsewhere = RunningImage(ImageReference("docker.io", "library/nginx", None, TARGET.digest), ())
    (r,) = v.verify(elsewhere, material(b"{}"), NOW)
    assert r.outcome is Outcome.FAILED
    assert r.reason == "no applicable trust policy statement for docker.io/library/nginx"
    assert v.verify(IMAGE, SignatureMaterial(image=TARGET), NOW) == ()
    skip = make_verifier(tmp_path / "skip", [pki["root"]], level="skip")
    (r,) = skip.verify(IMAGE, material(b"not even json"), NOW)
    assert r.outcome is Outcome.PASSED and r.reason.startswith("verification level skip")


def test_max_signatures_bounds_the_work(tmp_path: Path, pki: dict[str, Issued]) -> None:
    v = make_verifier(tmp_path, [pki["root"]], max_signatures=3)
    one = material(jws([pki["leaf"], pki["inter"], pki["root"]])).referrers[0]
    assert len(v.verify(IMAGE, SignatureMaterial(image=TARGET, referrers=(one,) * 10), NOW)) == 3


# ----------------------------------------------------------------------------------------------
# Bad input: a reason, never a crash.


def _fails_cleanly(tmp_path: Path, pki: dict[str, Issued], blob: bytes, media_type: str, needle: str) -> None:
    v = make_verifier(tmp_path, [pki["root"]])
    (r,) = v.verify(IMAGE, material(blob, media_type), NOW)
    assert r.outcome is Outcome.FAILED and "integrity validation failed" in r.reason
    assert needle in r.reason, r.reason


@pytest.mark.parametrize("blob,needle", [
    (b"", "not valid JSON"), (b"[]", "JSON object"), (b"{" * 100000, "not valid JSON"),
    (b'{"payload":"a","protected":"b","header":{},"signature":"c","extra":1}', "unsupported members"),
    (b'{"payload":"!!","protected":"e30","header":{},"signature":""}', "base64url"),
    (b'{"payload":"e30","protected":"W10","header":{},"signature":""}', "JSON object"),
    (b'{"payload":"e30","protected":"e30","header":{},"signature":"","payload":"x"}', "duplicate"),
])
def test_malformed_jws(tmp_path: Path, pki: dict[str, Issued], blob: bytes, needle: str) -> None:
    _fails_cleanly(tmp_path, pki, blob, JWS_MEDIA_TYPE, needle)


@pytest.mark.parametrize("blob,needle", [
    (b"", "not valid CBOR"), (b"\xff\xff", "not valid CBOR"), (cbor2.dumps([1, 2, 3, 4]), "tag 18"),
    (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, b""])), "attached"),
    (b"\x81" * 5000 + b"\x00", "CBOR"),  # deep nesting
    (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "CBOR"),  # a byte string claiming 2^64 bytes
    (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, b"{}", b""])), "content type"),
])
def test_malformed_cose(tmp_path: Path, pki: dict[str, Issued], blob: bytes, needle: str) -> None:
    _fails_cleanly(tmp_path, pki, blob, COSE_MEDIA_TYPE, needle)


def test_oversized_inputs(tmp_path: Path, pki: dict[str, Issued]) -> None:
    _fails_cleanly(tmp_path / "env", pki, b" " * (4 << 20) + b"{}", JWS_MEDIA_TYPE, "larger than")
    big = jws([pki["leaf"], pki["inter"], pki["root"]], extra={"pad": "x" * (100 << 10)})
    _fails_cleanly(tmp_path / "hdr", pki, big, JWS_MEDIA_TYPE, "protected header is larger")


def test_chain_of_fifty_certificates(tmp_path: Path, pki: dict[str, Issued]) -> None:
    chain = [pki["root"]]
    for i in range(49):
        chain.insert(0, issue(f"CA {i}", ca=True, issuer=chain[0]))
    leaf = issue("Deep Signer", issuer=chain[0])
    blob = jws([leaf, *chain])
    with pytest.raises(LimitExceeded):
        parse_envelope(JWS_MEDIA_TYPE, blob)
    _fails_cleanly(tmp_path, pki, blob, JWS_MEDIA_TYPE, "more than the limit of 10")


# ----------------------------------------------------------------------------------------------
# Revocation over real HTTP: CRL, OCSP, a 50 MB CRL, a hanging responder.


Server = RevocationServer  # other tests import it from here by that name



@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def make_crl(issuer: Issued, revoked: list[int], *, next_update: datetime | None = None,
             invalidity: datetime | None = None) -> bytes:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject).last_update(T0)
         .next_update(next_update or T0 + timedelta(days=30))
         .add_extension(x509.CRLNumber(1), critical=False))
    for serial in revoked:
        rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(T0 + timedelta(days=1))
        if invalidity:
            rb = rb.add_extension(x509.InvalidityDate(invalidity), critical=False)
        b = b.add_revoked_certificate(rb.build())
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def crl_pki(server: Server) -> dict[str, Issued]:
    root = issue("CRL Root", ca=True)
    inter = issue("CRL Intermediate", ca=True, issuer=root, crl_url=f"{server.base}/root.crl")
    leaf = issue("CRL Signer", issuer=inter, crl_url=f"{server.base}/inter.crl", serial=0x1000)
    server.routes["/root.crl"] = (200, make_crl(root, []))
    return {"root": root, "inter": inter, "leaf": leaf}


def test_revoked_leaf_via_crl_and_levels(tmp_path: Path, server: Server) -> None:
    p = crl_pki(server)
    chain = [p["leaf"], p["inter"], p["root"]]
    server.routes["/inter.crl"] = (200, make_crl(p["inter"], [0x1000]))
    fetcher = HttpFetcher()
    (r,) = make_verifier(tmp_path / "s", [p["root"]], fetcher=fetcher).verify(IMAGE, material(jws(chain)), NOW)
    assert r.outcome is Outcome.FAILED and r.failure is SignatureFailure.REVOKED
    assert "revocation validation failed" in r.reason and "CN=CRL Signer" in r.reason
    (r,) = make_verifier(tmp_path / "p", [p["root"]], level="permissive", fetcher=fetcher).verify(
        IMAGE, material(jws(chain)), NOW)
    assert r.outcome is Outcome.PASSED and "revocation was set to \"log\"" in r.reason
    (r,) = make_verifier(tmp_path / "k", [p["root"]], override={"revocation": "skip"}, fetcher=fetcher).verify(
        IMAGE, material(jws(chain)), NOW)
    assert r.outcome is Outcome.PASSED
    assert next(c for c in r.checks if c.name.value == "revocation").outcome is Outcome.SKIPPED


def test_invalidity_date_after_signing_time_keeps_a_timestamped_signature(server: Server) -> None:
    p = crl_pki(server)
    server.routes["/inter.crl"] = (200, make_crl(p["inter"], [0x1000], invalidity=T0 + timedelta(days=2)))
    checker = RevocationChecker(HttpFetcher())
    chain = [p["leaf"].cert, p["inter"].cert, p["root"].cert]
    assert checker.check_chain(chain, NOW, signing_time=T0).status is RevocationStatus.OK
    assert checker.check_chain(chain, NOW, signing_time=T0 + timedelta(days=3)).status is RevocationStatus.REVOKED
    assert checker.check_chain(chain, NOW, signing_time=None).status is RevocationStatus.REVOKED


def test_unknown_status_is_an_error_under_strict(tmp_path: Path, server: Server) -> None:
    p = crl_pki(server)
    chain = [p["leaf"], p["inter"], p["root"]]
    # No fetcher at all: status unknown, never silently verified.
    (r,) = make_verifier(tmp_path / "n", [p["root"]], fetcher=None).verify(IMAGE, material(jws(chain)), NOW)
    assert r.outcome is Outcome.ERROR and r.failure is SignatureFailure.ERROR
    assert "revocation status" in r.reason and "unknown" in r.reason
    # CRL signed by someone else: unknown as well.
    server.routes["/inter.crl"] = (200, make_crl(issue("Mallory", ca=True), []))
    (r,) = make_verifier(tmp_path / "m", [p["root"]], fetcher=HttpFetcher()).verify(IMAGE, material(jws(chain)), NOW)
    assert (r.outcome is Outcome.ERROR and "not signed by the certificate's issuer" in r.reason) or \
        "issued by" in r.reason


def test_crl_of_50_megabytes_is_refused(server: Server) -> None:
    p = crl_pki(server)
    server.routes["/inter.crl"] = (200, b"\x30" * (50 << 20))
    result = RevocationChecker(HttpFetcher()).check_chain([p["leaf"].cert, p["inter"].cert, p["root"].cert], NOW)
    assert result.status is RevocationStatus.UNKNOWN
    assert "more than the limit of 10485760" in result.reason


def test_crl_cache_keyed_by_url(server: Server) -> None:
    p = crl_pki(server)
    server.routes["/inter.crl"] = (200, make_crl(p["inter"], [], next_update=T0 + timedelta(days=20)))
    cache = CRLCache()
    chain = [p["leaf"].cert, p["inter"].cert, p["root"].cert]
    RevocationChecker(HttpFetcher(), cache).check_chain(chain, NOW)
    n = len(server.hits)
    RevocationChecker(HttpFetcher(), cache).check_chain(chain, NOW)  # a second scan, same cache
    assert len(server.hits) == n
    RevocationChecker(HttpFetcher(), cache).check_chain(chain, T0 + timedelta(days=21))
    assert server.hits.count("/inter.crl") == 2  # past nextUpdate: fetched again


def _ocsp_answer(issuer: Issued, cert: x509.Certificate, status: ocsp.OCSPCertStatus,
                 responder: Issued | None = None) -> Callable[[bytes], tuple[int, bytes]]:
    def answer(body: bytes) -> tuple[int, bytes]:
        req = ocsp.load_der_ocsp_request(body)
        assert req.serial_number == cert.serial_number
        signer = responder or issuer
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=issuer.cert, algorithm=hashes.SHA1(), cert_status=status,
            this_update=T0, next_update=T0 + timedelta(days=30),
            revocation_time=T0 if status is ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        if responder is not None:
            b = b.certificates([responder.cert])
        return 200, b.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return answer


def test_ocsp_good_revoked_and_delegated_responder(server: Server) -> None:
    root = issue("OCSP Root", ca=True)
    leaf = issue("OCSP Signer", issuer=root, ocsp_url=f"{server.base}/ocsp")
    checker = RevocationChecker(HttpFetcher())
    server.routes["/ocsp"] = _ocsp_answer(root, leaf.cert, ocsp.OCSPCertStatus.GOOD)
    assert checker.check_chain([leaf.cert, root.cert], NOW).status is RevocationStatus.OK
    server.routes["/ocsp"] = _ocsp_answer(root, leaf.cert, ocsp.OCSPCertStatus.REVOKED)
    assert checker.check_chain([leaf.cert, root.cert], NOW).status is RevocationStatus.REVOKED
    delegate = issue("OCSP Responder", issuer=root, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    server.routes["/ocsp"] = _ocsp_answer(root, leaf.cert, ocsp.OCSPCertStatus.GOOD, responder=delegate)
    assert checker.check_chain([leaf.cert, root.cert], NOW).status is RevocationStatus.OK
    # A responder the issuer did not authorise is not believed.
    stranger = issue("Stranger", eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    server.routes["/ocsp"] = _ocsp_answer(root, leaf.cert, ocsp.OCSPCertStatus.GOOD, responder=stranger)
    assert checker.check_chain([leaf.cert, root.cert], NOW).status is RevocationStatus.UNKNOWN
    # Stale response (nextUpdate passed).
    server.routes["/ocsp"] = _ocsp_answer(root, leaf.cert, ocsp.OCSPCertStatus.GOOD)
    assert checker.check_chain([leaf.cert, root.cert], T0 + timedelta(days=31)).status is RevocationStatus.UNKNOWN


def test_ocsp_unknown_falls_back_to_crl(server: Server) -> None:
    root = issue("Fallback Root", ca=True)
    leaf = issue("Fallback Signer", issuer=root, ocsp_url=f"{server.base}/ocsp", crl_url=f"{server.base}/root.crl")
    server.routes["/ocsp"] = _ocsp_answer(root, leaf.cert, ocsp.OCSPCertStatus.UNKNOWN)
    server.routes["/root.crl"] = (200, make_crl(root, [leaf.cert.serial_number]))
    result = RevocationChecker(HttpFetcher()).check_chain([leaf.cert, root.cert], NOW)
    assert result.status is RevocationStatus.REVOKED and result.certificates[0].method == "ocsp+crl"
    assert server.hits == ["/ocsp", "/root.crl"]


def test_hanging_ocsp_responder_times_out_then_crl_decides(server: Server) -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts connections (kernel backlog), never answers
    try:
        port = hang.getsockname()[1]
        root = issue("Hang Root", ca=True)
        leaf = issue("Hang Signer", issuer=root, ocsp_url=f"http://127.0.0.1:{port}/ocsp",
                     crl_url=f"{server.base}/root.crl")
        server.routes["/root.crl"] = (200, make_crl(root, []))
        checker = RevocationChecker(HttpFetcher(), ocsp_timeout=0.5)
        start = time.monotonic()
        result = checker.check_chain([leaf.cert, root.cert], NOW)
        assert time.monotonic() - start < 5
        assert result.status is RevocationStatus.OK  # OCSP unknown (timeout) -> CRL says good
        leaf2 = issue("Hang Signer 2", issuer=root, ocsp_url=f"http://127.0.0.1:{port}/ocsp")
        result = checker.check_chain([leaf2.cert, root.cert], NOW)
        assert result.status is RevocationStatus.UNKNOWN and "timed out" in result.reason
    finally:
        hang.close()


def test_fetcher_refuses_https_and_redirects(server: Server) -> None:
    f = HttpFetcher()
    with pytest.raises(Exception, match="scheme"):
        f.get("https://127.0.0.1/x.crl", max_bytes=10, timeout=1)
    server.routes["/moved"] = (302, b"")
    with pytest.raises(Exception, match="302"):
        f.get(f"{server.base}/moved", max_bytes=10, timeout=1)


# ----------------------------------------------------------------------------------------------
# Configuration edge: kyverno-notation-aws custom resources, bad files.


def test_kyverno_notation_aws_custom_resources(tmp_path: Path, pki: dict[str, Issued]) -> None:
    pem = pki["root"].cert.public_bytes(serialization.Encoding.PEM).decode()
    store = tmp_path / "truststore.yaml"
    store.write_text("apiVersion: notation.nirmata.io/v1alpha1\nkind: TrustStore\nmetadata:\n  name: acme\nspec:\n"
                     "  trustStoreName: acme\n  type: ca\n  caBundle: |-\n"
                     + "".join(f"    {line}\n" for line in pem.strip().splitlines()))
    policy = tmp_path / "trustpolicy.yaml"
    policy.write_text("apiVersion: notation.nirmata.io/v1alpha1\nkind: TrustPolicy\nmetadata:\n  name: tp\nspec:\n"
                      "  version: '1.0'\n  trustPolicies:\n  - name: acme\n    registryScopes: ['*']\n"
                      "    signatureVerification:\n      level: strict\n      override: {}\n"
                      "    trustStores: ['ca:acme']\n    trustedIdentities: ['*']\n")
    assert [s.name for s in load_trust_store_crs(store.read_bytes())] == ["acme"]
    assert load_trust_policy(policy).statements[0].name == "acme"
    v = NotationVerifier.from_spec(NotationVerifierSpec(trustPolicy="trustpolicy.yaml", trustStore="truststore.yaml"),
                                   base_dir=tmp_path, fetcher=None)
    (r,) = v.verify(IMAGE, material(jws([pki["leaf"], pki["inter"], pki["root"]])), NOW)
    assert r.outcome is Outcome.PASSED, r.reason


def test_bad_configuration_names_the_file(tmp_path: Path, pki: dict[str, Issued]) -> None:
    (tmp_path / "trustpolicy.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"trustpolicy\.json"):
        NotationVerifier.from_spec(NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="store"),
                                   base_dir=tmp_path, fetcher=None)
    (tmp_path / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "x", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:missing"], "trustedIdentities": ["*"]}]}))
    with pytest.raises(ConfigError, match="missing"):
        NotationVerifier.from_spec(NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="store"),
                                   base_dir=tmp_path, fetcher=None)


def test_parse_errors_are_typed() -> None:
    with pytest.raises(ParseError):
        parse_envelope("application/unknown", b"{}")
    assert parse_trust_policy({"version": "1.0", "trustPolicies": [{
        "name": "s", "registryScopes": ["*"], "signatureVerification": {"level": "skip"}}]}).statements[0].level.value \
        == "skip"


def test_skip_statement_with_trust_stores_is_refused() -> None:
    """notation-go refuses (does not ignore) trust stores or identities on a "skip" statement."""
    for extra in ({"trustStores": ["ca:acme"]}, {"trustedIdentities": ["*"]}):
        doc = {"version": "1.0", "trustPolicies": [{"name": "s", "registryScopes": ["*"],
                                                    "signatureVerification": {"level": "skip"}, **extra}]}
        with pytest.raises(TrustPolicyError, match="is set to skip signature verification but configured with trust"):
            parse_trust_policy(doc)
