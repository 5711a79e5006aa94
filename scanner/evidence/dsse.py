"""DSSE v1 envelopes (https://github.com/secure-systems-lab/dsse, ``envelope.md`` and ``protocol.md``):
the signature of the evidence pack's manifest and of every SLSA VSA.

Signatures (pure: bytes and values in, values out; a KMS signer's calls are the edge's)::

    class Signer(Protocol):
        keyid: str                                     # OpenSSH SHA-256 fingerprint (keyid_of)
        def sign(self, data: bytes) -> bytes: ...      # raw signature over data (DER for ECDSA)
        def public_key_pem(self) -> bytes: ...
    def signer_from(ref: str, base_dir: Path = Path(".")) -> Signer
    def pae(payload_type: str, payload: bytes) -> bytes
    def sign_envelope(payload_type: str, payload: bytes, signer: Signer) -> dict[str, Any]
    def verify_envelope(envelope: Mapping[str, Any] | bytes, public_key_pem: bytes, *,
                        payload_type: str | None = None) -> tuple[str, bytes]
    def keyid_of(public_key_pem: bytes) -> str
    class EvidenceError(ParseError)

Keys: ECDSA P-256 (SHA-256) and P-384 (SHA-384) with ASN.1 DER signatures, Ed25519, RSA >= 2048 with
PKCS#1 v1.5 / SHA-256 — the schemes cosign, slsa-verifier and sigstore-go use for a plain public key.
``signer_from`` takes an unencrypted PEM private key file or a KMS URI (``awskms://``, ``gcpkms://``,
``azurekms://``, ``hashivault://``: the forms ``scanner/verify/kms.py`` parses; the calls are made by
``scanner/sources/kms.py``); any other reference is a ConfigError. Envelope bytes are parsed strictly:
bounded size and signature count, base64 only, no JSON object with a name twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from scanner.errors import ConfigError, ParseError, SigauditError

MAX_ENVELOPE_BYTES = 64 * 1024 * 1024  # a manifest of a 2,000-image pack is well under 2 MiB
MAX_SIGNATURES = 16  # signatures examined in one envelope
MAX_KEY_FILE_BYTES = 64 * 1024


class EvidenceError(ParseError):
    """An evidence artefact (envelope, statement, pack file) is malformed or does not verify."""


PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class Signer(Protocol):
    @property
    def keyid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...

    def public_key_pem(self) -> bytes: ...


# ----------------------------------------------------------------------------------------------
# Keys and schemes


def _hash_for(key: PublicKey | PrivateKey) -> hashes.HashAlgorithm | None:
    """The hash each accepted key type signs with; raises ConfigError for a key type sigaudit does not use."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return hashes.SHA256()
        if isinstance(key.curve, ec.SECP384R1):
            return hashes.SHA384()
        raise ConfigError(f"ECDSA curve {key.curve.name} is not supported (P-256 or P-384)")
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(f"RSA key of {key.key_size} bits is too small (2048 or more)")
        return hashes.SHA256()
    raise ConfigError(f"key type {type(key).__name__} is not supported (ECDSA P-256/P-384, Ed25519, RSA)")


def keyid_of(public_key_pem: bytes) -> str:
    """The DSSE ``keyid`` sigaudit writes: the key's OpenSSH SHA-256 fingerprint (``SHA256:<base64>``, as
    ``ssh-keygen -l`` prints it). It is the id go-securesystemslib's DSSE verifier computes for a key it
    was given without one — so ``slsa-verifier verify-vsa --public-key-path`` and cosign accept the
    envelope without being told an id: a signature whose keyid differs from that is skipped by them."""
    key = load_public_key(public_key_pem)
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def load_public_key(public_key_pem: bytes) -> PublicKey:
    """A PEM public key of an accepted type; ConfigError otherwise."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError("not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise ConfigError(f"key type {type(key).__name__} is not supported (ECDSA P-256/P-384, Ed25519, RSA)")
    _hash_for(key)
    return key


def verify_raw(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``key``'s signature over ``data`` under the one scheme of its key type."""
    algo = _hash_for(key)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            assert algo is not None
            try:
                key.verify(signature, data, ec.ECDSA(algo))
            except (InvalidSignature, ValueError):
                # DSSE does not fix the ECDSA encoding: sigaudit, cosign and slsa-verifier use ASN.1 DER,
                # the spec's own example raw r||s (IEEE P1363). Both name the same (r, s).
                size = (key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    raise
                r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                key.verify(encode_dss_signature(r, s), data, ec.ECDSA(algo))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            assert algo is not None
            key.verify(signature, data, padding.PKCS1v15(), algo)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class FileSigner:
    """A PEM private key held in memory."""

    keyid: str
    _key: PrivateKey

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str = "signing key") -> FileSigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except TypeError as exc:  # encrypted without a password
            raise ConfigError("encrypted private keys are not supported: give an unencrypted PEM key or a KMS URI",
                              source=source) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            # Never quote the file: it holds a private key (or someone's secret named by mistake).
            raise ConfigError("not a PEM private key (PKCS#8, SEC1 or PKCS#1)", source=source) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise ConfigError(f"key type {type(key).__name__} is not supported (ECDSA P-256/P-384, Ed25519, RSA)",
                              source=source)
        _hash_for(key)
        pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(keyid_of(pub), key)

    def sign(self, data: bytes) -> bytes:
        key = self._key
        algo = _hash_for(key)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            assert algo is not None
            return key.sign(data, ec.ECDSA(algo))
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        assert algo is not None
        return key.sign(data, padding.PKCS1v15(), algo)

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __repr__(self) -> str:  # never the key
        return f"FileSigner(keyid={self.keyid!r})"


class KmsSigningError(SigauditError):
    """A KMS failed to sign (an error, no answer in time) or answered a signature its public key does not
    verify. Not a configuration error (the key was read and is usable): the command failed (exit 3)."""


@dataclass(frozen=True)
class KmsSigner:
    """Signs through a KMS key (``scanner/sources/kms.py``: AWS KMS, Cloud KMS, Azure Key Vault, Vault
    transit), in the scheme :func:`verify_raw` checks for the key's shape.

    Every signature is checked against the key's public key before it is returned: a KMS that answers
    for another key or another key version, or with garbage, fails here (KmsSigningError, exit 3)
    rather than in an auditor's hands."""

    keyid: str
    ref: str
    _key: Any = field(repr=False)  # scanner.sources.kms.KmsKey

    def sign(self, data: bytes) -> bytes:
        from scanner.verify import kms

        try:
            signature = bytes(self._key.sign(data))
        except kms.KmsKeyUnavailable as exc:
            raise KmsSigningError(str(exc)) from exc
        if not verify_raw(load_public_key(self._key.pem), signature, data):
            raise KmsSigningError(f"KMS key {self.ref}: the KMS returned a signature that its public key does not "
                                  "verify")
        return signature

    def public_key_pem(self) -> bytes:
        return bytes(self._key.pem)


def signer_from(ref: str, base_dir: Path = Path("."), edge: Any = None) -> Signer:
    """A signer for a PEM private key file (relative to ``base_dir``) or a KMS reference (``awskms://``,
    ``gcpkms://``, ``azurekms://``, ``hashivault://``; ``edge``, a ``scanner.sources.kms.KmsEdge``, makes
    the SDK clients: default, the SDKs' own).

    ConfigError (exit 2) for anything else: an unknown scheme, an unreadable or unsupported key, a KMS
    key that cannot sign in the pack's scheme. The error names the reference, never the file's content."""
    from scanner.verify import kms

    ref = ref.strip()
    if not ref:
        raise ConfigError("no signing key given")
    if ref.startswith(kms.KMS_SCHEMES):
        from scanner.sources.kms import open_signer

        key = open_signer(ref, edge)  # read, and checked to sign in the pack's scheme (else exit 2)
        load_public_key(key.pem)
        return KmsSigner(keyid_of(key.pem), ref, key)
    if "://" in ref:
        raise ConfigError(f"unknown key reference scheme {ref.split('://', 1)[0]!r}: a PEM private key file "
                          f"or a KMS URI ({', '.join(kms.KMS_SCHEMES)})", field=ref)
    path = Path(ref) if os.path.isabs(ref) else base_dir / ref
    try:
        # O_NONBLOCK: a FIFO (or a device) named as the key must not hang the pack build; only a
        # regular file is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError("not a regular file: give a PEM private key file", source=str(path))
            pem = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key: {exc.strerror or exc}", source=str(path)) from exc
    if len(pem) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_KEY_FILE_BYTES} bytes: not a PEM private key", source=str(path))
    return FileSigner.from_pem(pem, source=str(path))


# ----------------------------------------------------------------------------------------------
# Envelopes


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding (protocol.md):
    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, LEN as ASCII decimal without leading zeros,
    type as UTF-8 bytes."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign_envelope(payload_type: str, payload: bytes, signer: Signer) -> dict[str, Any]:
    """A DSSE envelope with one signature (standard base64 with padding, as envelope.md's JSON)."""
    if not payload_type:
        raise ValueError("a DSSE payloadType is required")
    sig = signer.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": signer.keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }


def _b64(value: Any, what: str) -> bytes:
    """Strict base64 (envelope.md: standard or URL-safe, padding optional): anything else is an error."""
    if not isinstance(value, str):
        raise EvidenceError(f"DSSE {what} is not a string")
    text = value.strip()
    if any(c.isspace() for c in text):
        raise EvidenceError(f"DSSE {what} is not base64")
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"DSSE {what} is not base64") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a name twice are refused: parsers disagree on which one counts (the first, the
    last), so an envelope must not mean one thing to sigaudit and another to an auditor's tool."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_envelope(envelope: Mapping[str, Any] | bytes) -> tuple[str, bytes, list[bytes]]:
    """(payloadType, payload, signatures) of a well-formed envelope; EvidenceError otherwise."""
    if isinstance(envelope, bytes | bytearray):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise EvidenceError(f"DSSE envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        try:
            doc = json.loads(bytes(envelope), object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError) as exc:
            raise EvidenceError(f"DSSE envelope is not JSON: {exc}") from exc
    else:
        doc = envelope
    if isinstance(doc, Mapping) and isinstance(doc.get("payload"), str) and len(doc["payload"]) > MAX_ENVELOPE_BYTES:
        raise EvidenceError(f"DSSE payload larger than {MAX_ENVELOPE_BYTES} bytes")
    if not isinstance(doc, Mapping):
        raise EvidenceError("DSSE envelope is not a JSON object")
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise EvidenceError("DSSE envelope has no payloadType")
    payload = _b64(doc.get("payload"), "payload")
    sigs = doc.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise EvidenceError("DSSE envelope has no signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise EvidenceError(f"DSSE envelope has more than {MAX_SIGNATURES} signatures")
    raw: list[bytes] = []
    for s in sigs:
        if not isinstance(s, Mapping):
            raise EvidenceError("DSSE signature is not a JSON object")
        raw.append(_b64(s.get("sig"), "signature"))
    return payload_type, payload, raw


def verify_envelope(envelope: Mapping[str, Any] | bytes, public_key_pem: bytes, *,
                    payload_type: str | None = None) -> tuple[str, bytes]:
    """(payloadType, payload) when one of the envelope's signatures is ``public_key_pem``'s over the PAE;
    EvidenceError otherwise. The ``keyid`` hints are not trusted (they pick nothing). With
    ``payload_type``, an envelope of another type is refused too (protocol.md: the verifier rejects a
    payload type it does not support)."""
    try:
        key = load_public_key(public_key_pem)
    except ConfigError as exc:
        raise EvidenceError(f"verification key: {exc}") from exc
    found_type, payload, sigs = parse_envelope(envelope)
    if payload_type is not None and found_type != payload_type:
        raise EvidenceError(f"DSSE payloadType is {found_type!r}, not {payload_type!r}")
    payload_type = found_type
    message = pae(payload_type, payload)
    if not any(verify_raw(key, sig, message) for sig in sigs):
        raise EvidenceError("no DSSE signature verifies with the given key")
    return payload_type, payload
