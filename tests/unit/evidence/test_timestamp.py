"""verify-evidence's check of MANIFEST.json.tsr (``scanner.evidence.verify.check_timestamp``) on tokens made
by OpenSSL's TSA (``openssl ts -reply``): every byte of the token counts, and a hostile token is a
problem named after the file, never an exception."""

from __future__ import annotations

import base64
import json
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

from scanner.evidence import dsse
from scanner.evidence.pack import MANIFEST_PAYLOAD_TYPE, MANIFEST_SIG, MANIFEST_TSR
from scanner.evidence.verify import Outcome, TimestampTrust, check_timestamp
from scanner.verify.timestamps import TimestampError, verify_timestamp_token
from tests.harness.tsa_server import make_tsa_pki, openssl_reply

MANIFEST = {"verified_at": "2020-01-01T00:00:00+00:00"}


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    d = tmp_path_factory.mktemp("tsa")
    root = x509.load_pem_x509_certificate(make_tsa_pki(d))
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    signer = dsse.FileSigner.from_pem(key)
    env = dsse.sign_envelope(MANIFEST_PAYLOAD_TYPE, b"{}\n", signer)
    sig = base64.b64decode(env["signatures"][0]["sig"])

    def token(message: bytes) -> bytes:
        req = (TimestampRequestBuilder().data(message).hash_algorithm(HashAlgorithm.SHA256)
               .nonce(nonce=True).cert_request(cert_request=True).build())
        return openssl_reply(d, req.as_bytes(), token_only=True)

    return root, signer, env, sig, token


def _check(files: dict[str, bytes], pub: bytes, trust: TimestampTrust) -> Outcome:
    out = Outcome()
    check_timestamp(files, pub, MANIFEST, trust, out)
    return out


def test_a_token_over_the_manifest_signature_verifies_and_gives_the_tsa_time(signed) -> None:
    root, signer, env, sig, token = signed
    files = {MANIFEST_SIG: json.dumps(env).encode(), MANIFEST_TSR: token(sig)}
    out = _check(files, signer.public_key_pem(), TimestampTrust(roots=(root,)))
    assert out.ok and out.timestamp["trusted_by"] == "tsa-ca-cert" and "CN=Test TSA" in out.timestamp["tsa"]
    assert not _check(files, signer.public_key_pem(), TimestampTrust()).ok  # no TSA trust given
    out = _check({**files, MANIFEST_TSR: token(b"other bytes")}, signer.public_key_pem(), TimestampTrust(roots=(root,)))
    assert [p for p in out.problems if p.startswith(MANIFEST_TSR) and "mismatched message" in p], out.problems
    early = Outcome()  # a TSA time before the scan's own time of verification: impossible for a genuine pack
    check_timestamp(files, signer.public_key_pem(), {"verified_at": "2999-01-01T00:00:00+00:00"},
                    TimestampTrust(roots=(root,)), early)
    assert early.problems and early.problems[0].startswith(MANIFEST_TSR)


@pytest.mark.parametrize("pack_chain", [False, True], ids=["tsa-ca-cert", "insecure-pack-chain"])
def test_every_flipped_byte_of_the_token_fails_without_an_exception(signed, pack_chain: bool) -> None:
    """The certificates, the CMS versions and the SignerInfo's signatureAlgorithm lie outside what
    rfc3161-client checks; a flip there was accepted, and a flip in a certificate's name or version raised
    KeyError / InvalidVersion out of the verifier (a traceback)."""
    root, signer, env, sig, token = signed
    good = token(sig)
    trust = TimestampTrust(pack_chain=True) if pack_chain else TimestampTrust(roots=(root,))
    accepted = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography's deprecation warnings on the broken certificates
        for pos in range(len(good)):
            bad = bytearray(good)
            bad[pos] ^= 0x01
            out = _check({MANIFEST_SIG: json.dumps(env).encode(), MANIFEST_TSR: bytes(bad)}, signer.public_key_pem(),
                         trust)
            if out.ok:
                accepted.append(pos)
            else:
                assert all(p.startswith(MANIFEST_TSR) for p in out.problems), out.problems
            try:  # the shared verifier (notation's timestamps too) raises only its own error
                verify_timestamp_token(bytes(bad), sig, [root])
            except TimestampError:
                pass
    assert accepted == []
