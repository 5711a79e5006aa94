"""Public keys: parsing, fingerprints and signature checks for cosign-style signatures.

Parsing is pure (bytes in); loading from a file or an https URL happens in the policy loader.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from scanner.errors import ParseError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
MAX_KEY_BYTES = 64 * 1024
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def parse_public_key(data: bytes) -> PublicKey:
    """A PEM or DER SubjectPublicKeyInfo (or a PEM certificate's key) -> key. Raises ParseError."""
    if len(data) > MAX_KEY_BYTES:
        raise ParseError(f"public key of {len(data)} bytes exceeds {MAX_KEY_BYTES}")
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            from cryptography import x509

            key = x509.load_pem_x509_certificate(data).public_key()
        elif data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise ParseError(f"not a PEM/DER public key: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise ParseError(f"unsupported EC curve {key.curve.name}")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ParseError(f"RSA key of {key.key_size} bits is too small (minimum 2048)")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ParseError(f"unsupported public key type {type(key).__name__}")


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_sha256(key: PublicKey) -> str:
    """Hex sha256 of the SubjectPublicKeyInfo DER: the key id revocations name."""
    return hashlib.sha256(spki_der(key)).hexdigest()


def describe_key(key: PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return "Ed25519"


def verify_signature(key: PublicKey, signature: bytes, payload: bytes) -> bool:
    """cosign's defaults (sigstore ``LoadVerifier`` with SHA-256): ECDSA ASN.1 DER over SHA-256 for
    every curve, RSA PKCS#1 v1.5 with SHA-256, Ed25519 over the raw payload."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True
