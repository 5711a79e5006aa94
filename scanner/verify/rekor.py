"""Rekor "bundle" annotations of cosign's legacy ``.sig`` layout (``dev.sigstore.cosign/bundle``).

Hand-written because no library verifies this cosign-specific form (sigstore-python verifies the
SET only inside Sigstore bundles). Spec: cosign ``pkg/cosign/verify.go`` ``VerifyBundle`` /
``VerifySET``; Rekor ``hashedrekord`` v0.0.1 schema; RFC 8785 (JCS) for the signed bytes.

The annotation is ``{"SignedEntryTimestamp": b64, "Payload": {"body": b64, "integratedTime": int,
"logIndex": int, "logID": hex}}``. Verification:

1. find the trusted Rekor key whose log id (sha256 of its DER SubjectPublicKeyInfo) is ``logID``,
   and whose validity period (closed interval) covers ``integratedTime``;
2. verify the SignedEntryTimestamp over the RFC 8785 canonical JSON of
   ``{"body","integratedTime","logID","logIndex"}`` with that key;
3. decode ``body`` (a ``hashedrekord`` v0.0.1 entry) and require its signature, public key or
   certificate, and ``data.hash`` to equal this signature, this signer and sha256(payload).

Inclusion proofs are not part of the legacy annotation; the SET alone is verified, offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scanner.errors import ConfigError, ParseError, SigauditError
from scanner.verify import sources

MAX_ANNOTATION_BYTES = 256 * 1024
MAX_BODY_BYTES = 128 * 1024
# A log entry "integrated" later than now (plus this skew) is bogus.
CLOCK_SKEW = timedelta(minutes=5)

VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class RekorError(SigauditError):
    """The Rekor bundle annotation does not prove what it should. ``reason`` is for humans."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RekorParseError(RekorError, ParseError):
    """The annotation or its entry body is malformed or too large."""


class RekorUnknownLog(RekorError):
    """The SET names a log whose key is not trusted (or not valid at the integrated time)."""


class RekorBadSET(RekorError):
    """The SignedEntryTimestamp does not verify with the trusted log key."""


class RekorEntryMismatch(RekorError):
    """The log entry body is for another signature, signer or payload (CVE-2022-36056 class)."""


@dataclass(frozen=True, slots=True)
class RekorKey:
    """A trusted transparency-log key and its validity period (closed interval)."""

    key: VerifyingKey
    log_id: bytes  # sha256 of the DER SubjectPublicKeyInfo
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    source: str = ""

    @property
    def log_id_hex(self) -> str:
        return self.log_id.hex()

    def valid_at(self, when: datetime) -> bool:
        if self.valid_from is not None and when < self.valid_from:
            return False
        return not (self.valid_until is not None and when > self.valid_until)


@dataclass(frozen=True, slots=True)
class RekorResult:
    integrated_time: datetime
    log_index: int
    log_id: str  # hex
    kind: str  # "hashedrekord/0.0.1"


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def as_verifying_key(key: PublicKeyTypes, what: str) -> VerifyingKey:
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        return key
    raise ConfigError(f"{what}: unsupported key type {type(key).__name__}")


def rekor_key_from_public_key(key: PublicKeyTypes, *, source: str = "",
                              valid_from: datetime | None = None,
                              valid_until: datetime | None = None) -> RekorKey:
    vk = as_verifying_key(key, source or "rekor key")
    return RekorKey(vk, hashlib.sha256(_spki(vk)).digest(), valid_from, valid_until, source)


def load_rekor_keys_from_pem(pem: bytes | str, *, source: str = "rekor PEM") -> list[RekorKey]:
    """One or more PEM public keys (open-ended validity)."""
    data = pem.encode() if isinstance(pem, str) else pem
    keys: list[RekorKey] = []
    marker = b"-----BEGIN PUBLIC KEY-----"
    chunks = [marker + c for c in data.split(marker)[1:]]
    if not chunks:
        raise ConfigError("no PEM public key found", source=source)
    for chunk in chunks:
        try:
            key = serialization.load_pem_public_key(chunk)
        except ValueError as exc:
            raise ConfigError(f"bad PEM public key: {exc}", source=source) from exc
        keys.append(rekor_key_from_public_key(key, source=source))
    return keys


def load_rekor_keys_from_trusted_root(raw: bytes | str | Path, *, source: str = "") -> list[RekorKey]:
    """The ``tlogs`` keys of a Sigstore ``trusted_root.json`` (bytes, text, or a path)."""
    from sigstore_models.trustroot import v1 as trustroot_v1

    if isinstance(raw, Path):
        source = source or str(raw)
        try:
            raw = sources.read_bytes(raw)
        except OSError as exc:
            raise ConfigError(f"cannot read trusted root: {exc}", source=source) from exc
    try:
        root = trustroot_v1.TrustedRoot.from_json(raw)
    except Exception as exc:  # pydantic ValidationError
        raise ConfigError(f"not a valid trusted_root.json: {exc}", source=source or None) from exc
    keys: list[RekorKey] = []
    for tlog in root.tlogs:
        pk = tlog.public_key
        if not pk.raw_bytes:
            continue
        try:
            key = serialization.load_der_public_key(pk.raw_bytes)
            vk = as_verifying_key(key, "tlog key")
        except (ValueError, ConfigError):
            continue  # unsupported key types are skipped, like sigstore-python's Keyring
        valid = pk.valid_for
        keys.append(RekorKey(vk, hashlib.sha256(_spki(vk)).digest(),
                             valid.start if valid else None, valid.end if valid else None,
                             source or tlog.base_url))
    if not keys:
        raise ConfigError("trusted root has no usable transparency-log key", source=source or None)
    return keys


def rekor_keys_from_trust(trust: Any) -> list[RekorKey]:
    """Rekor keys of a ``scanner.verify.trustroot.SigstoreTrust``."""
    return load_rekor_keys_from_trusted_root(trust.root._inner.to_json().encode(), source=trust.source)


def verify_signature(key: VerifyingKey, signature: bytes, data: bytes) -> bool:
    """Verify with the scheme the key implies: ECDSA/SHA-256 (P-256), SHA-384/512 for larger
    curves, RSA PKCS#1 v1.5/SHA-256, Ed25519."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            algo: hashes.HashAlgorithm = {
                "secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512(),
            }.get(key.curve.name, hashes.SHA256())
            key.verify(signature, data, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise RekorParseError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RekorParseError(f"{what} is not valid base64") from exc


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RekorParseError(f"{what} must be a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class _Annotation:
    set_sig: bytes
    body_b64: str
    integrated_time: int
    log_index: int
    log_id: str

    @classmethod
    def from_json(cls, raw: bytes | str) -> _Annotation:
        data = raw.encode() if isinstance(raw, str) else raw
        if len(data) > MAX_ANNOTATION_BYTES:
            raise RekorParseError(f"Rekor bundle annotation larger than {MAX_ANNOTATION_BYTES} bytes")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RekorParseError(f"Rekor bundle annotation is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("Payload"), dict):
            raise RekorParseError("Rekor bundle annotation has no Payload object")
        payload = doc["Payload"]
        log_id = payload.get("logID")
        if not isinstance(log_id, str) or len(log_id) != 64:
            raise RekorParseError("Payload.logID must be 64 hex digits")
        try:
            bytes.fromhex(log_id)
        except ValueError as exc:
            raise RekorParseError("Payload.logID must be 64 hex digits") from exc
        body = payload.get("body")
        if not isinstance(body, str):
            raise RekorParseError("Payload.body must be a base64 string")
        return cls(
            _b64(doc.get("SignedEntryTimestamp"), "SignedEntryTimestamp"),
            body,
            _int(payload.get("integratedTime"), "Payload.integratedTime"),
            _int(payload.get("logIndex"), "Payload.logIndex"),
            log_id,
        )

    def canonical(self) -> bytes:
        # RFC 8785: sorted keys, no whitespace; body is the base64 string exactly as given.
        return rfc8785.dumps({
            "body": self.body_b64,
            "integratedTime": self.integrated_time,
            "logID": self.log_id,
            "logIndex": self.log_index,
        })


def load_signer(pem_or_der: bytes) -> x509.Certificate | VerifyingKey:
    """A certificate or a public key, PEM or DER."""
    loaders = (
        x509.load_pem_x509_certificate,
        x509.load_der_x509_certificate,
    )
    for load in loaders:
        try:
            return load(pem_or_der)
        except ValueError:
            pass
    for load_key in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            return as_verifying_key(load_key(pem_or_der), "signer")
        except (ValueError, ConfigError):
            pass
    raise RekorParseError("signer is neither a certificate nor a public key (PEM or DER)")


def _signer_matches(body_pem: bytes, signer: x509.Certificate | VerifyingKey) -> bool:
    try:
        other = load_signer(body_pem)
    except RekorParseError:
        return False
    if isinstance(signer, x509.Certificate):
        # The entry must carry this very certificate (compared on DER), not merely its key.
        return isinstance(other, x509.Certificate) and (
            other.public_bytes(serialization.Encoding.DER) == signer.public_bytes(serialization.Encoding.DER)
        )
    other_key = other.public_key() if isinstance(other, x509.Certificate) else other
    return _spki(other_key) == _spki(signer)


def check_hashedrekord_body(body: bytes, *, signature: bytes, payload_sha256: str,
                            signer: x509.Certificate | VerifyingKey) -> str:
    """Require a hashedrekord v0.0.1 body to describe this signature, signer and payload hash.

    Returns ``"hashedrekord/0.0.1"``; raises ``RekorEntryMismatch`` / ``RekorParseError``.
    """
    if len(body) > MAX_BODY_BYTES:
        raise RekorParseError(f"log entry body larger than {MAX_BODY_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RekorParseError(f"log entry body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RekorParseError("log entry body is not an object")
    kind, version = doc.get("kind"), doc.get("apiVersion")
    if kind != "hashedrekord" or version != "0.0.1":
        raise RekorEntryMismatch(f"log entry is {kind}/{version}, expected hashedrekord/0.0.1")
    spec: Any = doc.get("spec")
    try:
        sig_obj = spec["signature"]
        entry_sig = _b64(sig_obj["content"], "entry signature")
        entry_key = _b64(sig_obj["publicKey"]["content"], "entry public key")
        hash_obj = spec["data"]["hash"]
        algorithm, value = hash_obj["algorithm"], hash_obj["value"]
    except (KeyError, TypeError) as exc:
        raise RekorParseError(f"hashedrekord body lacks {exc}") from exc
    if entry_sig != signature:
        raise RekorEntryMismatch("log entry is for another signature")
    if not _signer_matches(entry_key, signer):
        raise RekorEntryMismatch("log entry is for another certificate or key")
    if algorithm != "sha256" or not isinstance(value, str) or value.lower() != payload_sha256.lower():
        raise RekorEntryMismatch("log entry is for another payload (data.hash differs)")
    return "hashedrekord/0.0.1"


def verify_rekor_bundle_annotation(
    annotation_json: bytes | str,
    *,
    signature_b64: str,
    payload: bytes,
    signer_pem_or_der: bytes,
    rekor_keys: Sequence[RekorKey],
    now: datetime | None = None,
) -> RekorResult:
    """Verify cosign's ``dev.sigstore.cosign/bundle`` annotation for one signature.

    ``signature_b64`` is the ``dev.cosignproject.cosign/signature`` annotation, ``payload`` the
    layer bytes, ``signer_pem_or_der`` the signing certificate (keyless) or public key.
    Raises a ``RekorError`` subclass with a ``reason`` on any failure.
    """
    ann = _Annotation.from_json(annotation_json)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RekorParseError("signature annotation is not valid base64") from exc
    signer = load_signer(signer_pem_or_der)

    integrated = datetime.fromtimestamp(ann.integrated_time, tz=UTC)
    if now is not None and integrated > now + CLOCK_SKEW:
        raise RekorBadSET(f"integrated time {integrated.isoformat()} is in the future")
    log_id = bytes.fromhex(ann.log_id)
    candidates = [k for k in rekor_keys if k.log_id == log_id]
    if not candidates:
        raise RekorUnknownLog(f"SET is from log {ann.log_id}, which is not a trusted Rekor log")
    valid = [k for k in candidates if k.valid_at(integrated)]
    if not valid:
        raise RekorUnknownLog(
            f"trusted Rekor key {ann.log_id[:16]}… was not valid at integrated time {integrated.isoformat()}")
    canonical = ann.canonical()
    if not any(verify_signature(k.key, ann.set_sig, canonical) for k in valid):
        raise RekorBadSET(f"SignedEntryTimestamp does not verify with the Rekor key {ann.log_id[:16]}…")

    body = _b64(ann.body_b64, "Payload.body")
    kind = check_hashedrekord_body(
        body, signature=signature, payload_sha256=hashlib.sha256(payload).hexdigest(), signer=signer)
    return RekorResult(integrated, ann.log_index, ann.log_id, kind)
