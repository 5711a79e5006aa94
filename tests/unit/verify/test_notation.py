"""Notation verification: what a signature whose chain is not trusted can make the scanner do.

Under a level that only logs authenticity (``audit``), a signature whose chain leads to no trust
store is still evaluated to the end, revocation included. Its certificates are the signer's own
making: the CRL and OCSP URLs in them would make the scanner send requests wherever the pusher of
a signature likes (an internal service, a cloud metadata endpoint). They are not contacted; the
status is "unknown" for that reason, which an ``audit`` level only logs.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from scanner.models import CheckName, Outcome
from scanner.registry.fetcher import HttpFetcher
from scanner.verify.notation import check_authentic_timestamp
from scanner.verify.notation_envelope import JWS_MEDIA_TYPE, parse_envelope
from scanner.verify.notation_trust import parse_trust_policy
from scanner.verify.revocation import RevocationChecker
from tests.harness import notation_sign
from tests.harness.notation_sign import Issued
from tests.unit.verify.test_notation_signing import IMAGE, NOW, Server, issue, jws, make_verifier, material
from tests.unit.verify.test_notation_signing import TARGET as IMAGE_TARGET


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_an_untrusted_chain_does_not_make_the_scanner_contact_its_endpoints(tmp_path: Path, server: Server) -> None:
    trusted_root = issue("Trusted Root", ca=True)
    own_root = issue("Pusher Root", ca=True)
    leaf = issue("Pusher", issuer=own_root, crl_url=f"{server.base}/internal-service",
                 ocsp_url=f"{server.base}/metadata")
    v = make_verifier(tmp_path, [trusted_root], level="audit", fetcher=HttpFetcher())
    (r,) = v.verify(IMAGE, material(jws([leaf, own_root])), NOW)
    assert server.hits == []
    assert r.outcome is Outcome.PASSED  # audit: authenticity and revocation are logged, as notation does
    rev = next(c for c in r.checks if c.name is CheckName.REVOCATION)
    assert rev.outcome is Outcome.ERROR and not rev.enforced
    assert "does not lead to the trust store" in rev.reason


def test_a_trusted_chain_is_still_checked(tmp_path: Path, server: Server) -> None:
    root = issue("Trusted Root", ca=True)
    leaf = issue("Signer", issuer=root, crl_url=f"{server.base}/leaf.crl")
    v = make_verifier(tmp_path, [root], level="audit", fetcher=HttpFetcher())
    v.verify(IMAGE, material(jws([leaf, root])), NOW)
    assert server.hits == ["/leaf.crl"]


def _tsa(server: Server) -> tuple[Issued, Issued]:
    """A TSA root and its timestamping leaf (EKU timeStamping, critical), whose CRL the root serves."""
    root = notation_sign.issue("TSA Root", ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(notation_sign.name("TSA")).issuer_name(root.cert.subject)
            .public_key(key.public_key()).serial_number(0x75A).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(f"{server.base}/tsa.crl")], None, None, None)]), critical=False)
            .sign(root.key, hashes.SHA256()))
    return root, Issued(cert, key)


def _openssl_timestamp(tmp_path: Path, tsa: Issued, root: Issued, message: bytes) -> bytes:
    """An RFC 3161 token over ``message`` made by ``openssl ts`` with the TSA's key (genTime: now)."""
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "tsa.pem").write_bytes(tsa.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tsa.key").write_bytes(tsa.key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    (tmp_path / "root.pem").write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ts.cnf").write_text("[tsa]\ndefault_tsa = t\n[t]\nserial = ./serial\ndefault_policy = 1.2.3.4\n"
                                     "digests = sha256\nsigner_digest = sha256\ness_cert_id_alg = sha256\n"
                                     "accuracy = secs:1\n")
    (tmp_path / "serial").write_text("01\n")
    for args in (["-query", "-data", "msg", "-sha256", "-cert", "-out", "req.tsq"],
                 ["-reply", "-config", "ts.cnf", "-queryfile", "req.tsq", "-signer", "tsa.pem", "-inkey", "tsa.key",
                  "-chain", "root.pem", "-token_out", "-out", "token.der"]):
        subprocess.run(["openssl", "ts", *args], cwd=tmp_path, check=True, capture_output=True)
    return (tmp_path / "token.der").read_bytes()


def test_a_revoked_tsa_cannot_vouch_for_itself_with_its_own_gen_time(tmp_path: Path, server: Server) -> None:
    """The TSA's genTime is the claim of the very key under check: it never earns the invalidityDate
    exception for that key (notation-go checks the timestamping chain with no signing time). A
    compromised TSA key whose CRL entry says "invalid from tomorrow" would otherwise backdate any
    timestamp before that date and keep it authentic."""
    tsa_root, tsa = _tsa(server)
    signer_root = notation_sign.issue("Signer Root", ca=True)
    signer = notation_sign.issue("Signer", issuer=signer_root)
    now = datetime.now(UTC)
    env = parse_envelope(JWS_MEDIA_TYPE, notation_sign.jws_envelope(
        [signer, signer_root], {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": "sha256:" + "ab" * 32, "size": 1}, signing_time=now - timedelta(minutes=1)))
    env = dataclasses.replace(env, timestamp_token=_openssl_timestamp(tmp_path, tsa, tsa_root, env.signature))
    stmt = parse_trust_policy({"version": "1.0", "trustPolicies": [{
        "name": "p", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:s", "tsa:t"], "trustedIdentities": ["*"]}]}).statements[0]
    checker = RevocationChecker(HttpFetcher())

    server.routes["/tsa.crl"] = (200, notation_sign.crl(tsa_root, []))
    good = check_authentic_timestamp(env, stmt, [tsa_root.cert], now + timedelta(minutes=1), checker)
    assert good.problem is None and good.timestamp is not None  # the token itself is sound

    revoked = (x509.CertificateRevocationListBuilder().issuer_name(tsa_root.cert.subject)
               .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=7))
               .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(0x75A)
                                        .revocation_date(now - timedelta(minutes=5))
                                        .add_extension(x509.InvalidityDate(now + timedelta(days=1)), critical=False)
                                        .build())
               .sign(tsa_root.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    server.routes["/tsa.crl"] = (200, revoked)
    res = check_authentic_timestamp(env, stmt, [tsa_root.cert], now + timedelta(minutes=1), RevocationChecker(
        HttpFetcher()))
    assert res.problem is not None and "revoked" in res.problem, res.problem


def test_a_tsa_time_does_not_excuse_an_invalidity_date_on_the_signing_chain(tmp_path: Path, server: Server) -> None:
    """notation-go hands the signing chain's revocation check an authentic signing time only for the
    ``notary.x509.signingAuthority`` scheme (verifier/verifier.go ``verifyRevocation``); for
    ``notary.x509`` it passes none, a verified RFC 3161 timestamp included. So a signing key whose
    CRL entry carries an invalidityDate after the timestamp's genTime is revoked, as with notation."""
    import base64
    import json

    from scanner.verify.notation import NotationVerifier, NotationVerifierSpec

    tsa_root, tsa = _tsa(server)
    server.routes["/tsa.crl"] = (200, notation_sign.crl(tsa_root, []))
    root = notation_sign.issue("Signer Root", ca=True)
    leaf = notation_sign.issue("Signer", issuer=root, crl_url=f"{server.base}/signer.crl", serial=0x5161)
    now = datetime.now(UTC)
    target = {"mediaType": IMAGE_TARGET.media_type, "digest": IMAGE_TARGET.digest, "size": IMAGE_TARGET.size}
    blob = notation_sign.jws_envelope([leaf, root], target, signing_time=now - timedelta(minutes=1))
    token = _openssl_timestamp(tmp_path, tsa, tsa_root, parse_envelope(JWS_MEDIA_TYPE, blob).signature)
    doc = json.loads(blob)
    doc["header"]["io.cncf.notary.timestampSignature"] = base64.b64encode(token).decode()
    blob = json.dumps(doc).encode()

    for store_type, r in (("ca", root), ("tsa", tsa_root)):
        d = tmp_path / "store" / "x509" / store_type / "acme"
        d.mkdir(parents=True)
        (d / "root.pem").write_bytes(r.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "acme", "registryScopes": ["localhost:5000/app"], "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:acme", "tsa:acme"], "trustedIdentities": ["*"]}]}))

    def verify() -> Any:  # a new verifier each time: a CRL is cached until its nextUpdate
        v = NotationVerifier.from_spec(NotationVerifierSpec(trustPolicy="trustpolicy.json", trustStore="store"),
                                       base_dir=tmp_path, fetcher=HttpFetcher())
        (r,) = v.verify(IMAGE, material(blob), now + timedelta(minutes=1))
        return r

    def crl(invalid_from: datetime | None) -> bytes:
        entry = x509.RevokedCertificateBuilder().serial_number(0x5161).revocation_date(now - timedelta(minutes=5))
        if invalid_from is not None:
            entry = entry.add_extension(x509.InvalidityDate(invalid_from), critical=False)
        return (x509.CertificateRevocationListBuilder().issuer_name(root.cert.subject)
                .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=7))
                .add_revoked_certificate(entry.build())
                .sign(root.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))

    server.routes["/signer.crl"] = (200, notation_sign.crl(root, []))
    ok = verify()
    assert ok.outcome is Outcome.PASSED, ok.reason  # the timestamp and the chain are sound
    assert next(c for c in ok.checks if c.name is CheckName.TIMESTAMP).outcome is Outcome.PASSED

    for invalid_from in (now + timedelta(days=1), None):  # invalid only after the TSA's genTime, or outright
        server.routes["/signer.crl"] = (200, crl(invalid_from))
        r = verify()
        assert r.outcome is Outcome.FAILED and "revoked" in r.reason, (invalid_from, r.reason)


def test_the_trust_store_is_not_re_encoded_for_every_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 (what a notation verify recomputed per signature): the store's certificates are trust
    material, encoded once when the verifier is made; a signature encodes only its own chain, once —
    and the lookup is still by the exact bytes (the same name and key re-issued is not the anchor)."""
    from scanner.verify import notation as notation_mod
    from scanner.verify import x509 as x509_mod

    root = issue("Costs Root", ca=True)
    leaf = issue("Costs Signer", issuer=root)
    others = [issue(f"Other Root {i}", ca=True) for i in range(12)]
    v = make_verifier(tmp_path, [*others, root])
    encoded: list[object] = []
    real = x509_mod.der

    def counting(cert: x509.Certificate) -> bytes:
        encoded.append(cert)
        return real(cert)

    monkeypatch.setattr(x509_mod, "der", counting)
    monkeypatch.setattr(notation_mod, "der", counting, raising=False)
    for _ in range(3):
        (r,) = v.verify(IMAGE, material(jws([leaf, root])), NOW)
        assert r.outcome is Outcome.PASSED, r.reason
    # each signature's chain of two: once for the chain rules' memo key, once for its fingerprints and
    # the trust lookup; never the store's thirteen
    assert len(encoded) <= 3 * 2 * 2, len(encoded)
    twin = issue("Costs Root", ca=True, key=root.key)  # same subject and key, other bytes
    (r,) = make_verifier(tmp_path / "twin", [twin]).verify(IMAGE, material(jws([leaf, root])), NOW)
    assert r.outcome is Outcome.FAILED and "does not contain any trusted certificate" in r.reason
