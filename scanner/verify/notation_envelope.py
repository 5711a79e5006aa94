"""Notary Project signature envelopes: JWS (JSON serialization) and COSE_Sign1, parsed once.

Wire formats: notaryproject/specifications ``specs/signature-envelope-jws.md`` and
``specs/signature-envelope-cose.md``; payload ``specs/signature-specification.md`` "Payload".
``parse_envelope`` turns untrusted bytes into an ``Envelope`` or raises ``EnvelopeError`` (a
``ParseError``); holding an ``Envelope`` means it is well formed, not that it is authentic:
``Envelope.verify_signature`` checks the primitive signature against the leaf certificate.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from scanner.errors import LimitExceeded, ParseError
from scanner.verify.x509 import ChainError, algorithm_for_key, load_der_chain, verify_jose_signature


def _q(value: object) -> str:
    """Quote like Go's %q, so messages read as notation's do."""
    return json.dumps(value)

JWS_MEDIA_TYPE = "application/jose+json"
COSE_MEDIA_TYPE = "application/cose"
PAYLOAD_CONTENT_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"

H_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_PLUGIN = "io.cncf.notary.verificationPlugin"
H_PLUGIN_MIN = "io.cncf.notary.verificationPluginMinVersion"
H_TIMESTAMP = "io.cncf.notary.timestampSignature"
H_AGENT = "io.cncf.notary.signingAgent"

MAX_ENVELOPE_BYTES = 4 << 20
MAX_PROTECTED_BYTES = 64 << 10
MAX_PAYLOAD_BYTES = 1 << 20
MAX_TIMESTAMP_BYTES = 64 << 10
MAX_CBOR_DEPTH = 16

# Headers the verifier understands. verificationPlugin* are understood only to fail on them.
_KNOWN_CRITICAL = {H_SCHEME, H_AUTHENTIC_TIME, H_EXPIRY}
_JWS_ALGS = {"PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
_COSE_ALGS = {-37: "PS256", -38: "PS384", -39: "PS512", -7: "ES256", -35: "ES384", -36: "ES512"}
_ALG_DISPLAY = {"PS256": "RSASSA-PSS-SHA-256", "PS384": "RSASSA-PSS-SHA-384", "PS512": "RSASSA-PSS-SHA-512",
                "ES256": "ECDSA-SHA-256", "ES384": "ECDSA-SHA-384", "ES512": "ECDSA-SHA-512"}


class EnvelopeError(ParseError):
    """The signature envelope is malformed or unsupported."""


@dataclass(frozen=True, slots=True)
class TargetArtifact:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    media_type: str
    alg: str  # JWS name, also for COSE
    signing_scheme: str
    signing_time: datetime | None
    authentic_signing_time: datetime | None
    expiry: datetime | None
    critical: tuple[str, ...]
    unknown_critical: tuple[str, ...]
    extended_attributes: Mapping[str, Any]
    verification_plugin: str | None
    verification_plugin_min_version: str | None
    certificates: tuple[x509.Certificate, ...]
    timestamp_token: bytes | None
    signing_agent: str | None
    payload: bytes
    target: TargetArtifact
    signature: bytes
    signed_bytes: bytes

    @property
    def signature_algorithm(self) -> str:
        return _ALG_DISPLAY[self.alg]

    def verify_signature(self) -> None:
        """Integrity: ``alg`` is the one the leaf key implies and the signature verifies.

        Raises ``EnvelopeError`` with the reason otherwise.
        """
        try:
            key = self.certificates[0].public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise EnvelopeError(f"signing certificate key cannot be read: {exc}") from None
        try:
            expected = algorithm_for_key(key)
        except ChainError as exc:
            raise EnvelopeError(f"signing certificate key is not supported: {exc}") from None
        if expected != self.alg:
            raise EnvelopeError(f"signature algorithm {self.alg} does not match the signing certificate's "
                                f"key, which requires {expected}")
        try:
            verify_jose_signature(key, self.alg, self.signature, self.signed_bytes)
        except InvalidSignature:
            raise EnvelopeError("signature is invalid: the signature does not verify with the signing "
                                "certificate's key") from None


def _b64url(text: Any, what: str) -> bytes:
    # RFC 7515 §2: base64url without padding; anything else is malformed.
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise EnvelopeError(f"signature is invalid: {what} is not valid base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64std(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not valid base64") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise EnvelopeError(f"duplicate JSON member {_q(k)}")
        out[k] = v
    return out


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"{what} is not valid JSON: {exc}") from None


def _rfc3339(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):  # COSE: tag 1, decoded by cbor2
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not re.fullmatch(
            r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", value):
        raise EnvelopeError(f"{what} is not an RFC 3339 time: {_q(value)}")
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeError(f"{what} is not an RFC 3339 time: {_q(value)}") from None


def parse_payload(payload: bytes) -> TargetArtifact:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise LimitExceeded(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    doc = _json(payload, "payload")
    if not isinstance(doc, dict) or not isinstance(doc.get("targetArtifact"), dict):
        raise EnvelopeError("payload has no targetArtifact")
    t = doc["targetArtifact"]
    mt, dg, size = t.get("mediaType"), t.get("digest"), t.get("size")
    if not isinstance(mt, str) or not mt or not isinstance(dg, str) or not dg:
        raise EnvelopeError("payload targetArtifact needs mediaType and digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise EnvelopeError("payload targetArtifact needs a non-negative integer size")
    ann = t.get("annotations") or {}
    if not isinstance(ann, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items()):
        raise EnvelopeError("payload targetArtifact annotations must map strings to strings")
    at = t.get("artifactType")
    return TargetArtifact(mt, dg, size, dict(ann), at if isinstance(at, str) else None)


def _signed_attributes(hdr: Mapping[str, Any], crit: list[Any]) -> dict[str, Any]:
    """The checks shared by JWS and COSE (signature-specification.md "Signed Attributes")."""
    if not crit or not all(isinstance(c, str) for c in crit):
        raise EnvelopeError("missing or malformed critical headers (crit)")
    if len(set(crit)) != len(crit):
        raise EnvelopeError("crit lists a header twice")
    scheme = hdr.get(H_SCHEME)
    if scheme not in (SCHEME_X509, SCHEME_SIGNING_AUTHORITY):
        raise EnvelopeError(f"signing scheme {_q(scheme)} is not supported")
    if H_SCHEME not in crit:
        raise EnvelopeError(f"{H_SCHEME} must be marked critical")
    for c in crit:
        if c not in hdr:
            raise EnvelopeError(f"critical header {_q(c)} is not present in the protected headers")
    for name in (H_AUTHENTIC_TIME, H_EXPIRY, H_PLUGIN, H_PLUGIN_MIN):
        if name in hdr and name not in crit:
            raise EnvelopeError(f"header {name} must be marked critical")
    signing_time = authentic_time = None
    if scheme == SCHEME_X509:
        if H_SIGNING_TIME not in hdr:
            raise EnvelopeError(f"{H_SIGNING_TIME} is required for signing scheme {SCHEME_X509}")
        if H_AUTHENTIC_TIME in hdr:
            raise EnvelopeError(f"{H_AUTHENTIC_TIME} is not allowed for signing scheme {SCHEME_X509}")
        signing_time = _rfc3339(hdr[H_SIGNING_TIME], H_SIGNING_TIME)
    else:
        if H_AUTHENTIC_TIME not in hdr:
            raise EnvelopeError(f"{H_AUTHENTIC_TIME} is required for signing scheme {SCHEME_SIGNING_AUTHORITY}")
        authentic_time = _rfc3339(hdr[H_AUTHENTIC_TIME], H_AUTHENTIC_TIME)
        if H_SIGNING_TIME in hdr:
            signing_time = _rfc3339(hdr[H_SIGNING_TIME], H_SIGNING_TIME)
    expiry = _rfc3339(hdr[H_EXPIRY], H_EXPIRY) if H_EXPIRY in hdr else None
    plugin = hdr.get(H_PLUGIN)
    plugin_min = hdr.get(H_PLUGIN_MIN)
    if plugin is not None and not isinstance(plugin, str):
        raise EnvelopeError(f"{H_PLUGIN} must be a string")
    if plugin_min is not None and not isinstance(plugin_min, str):
        raise EnvelopeError(f"{H_PLUGIN_MIN} must be a string")
    return {"scheme": scheme, "signing_time": signing_time, "authentic_time": authentic_time,
            "expiry": expiry, "plugin": plugin, "plugin_min": plugin_min}


_RESERVED_JWS = {"alg", "cty", "crit", H_SCHEME, H_SIGNING_TIME, H_AUTHENTIC_TIME, H_EXPIRY, H_PLUGIN, H_PLUGIN_MIN}


def parse_jws(blob: bytes) -> Envelope:
    doc = _json(blob, "JWS envelope")
    if not isinstance(doc, dict):
        raise EnvelopeError("JWS envelope must be a JSON object (flattened JSON serialization)")
    extra = set(doc) - {"payload", "protected", "header", "signature"}
    if extra:
        raise EnvelopeError(f"JWS envelope has unsupported members {sorted(extra)}")
    for k in ("payload", "protected", "header", "signature"):
        if k not in doc:
            raise EnvelopeError(f"JWS envelope is missing {_q(k)}")
    prot_b64, payload_b64 = doc["protected"], doc["payload"]
    if isinstance(prot_b64, str) and len(prot_b64) > MAX_PROTECTED_BYTES:
        raise LimitExceeded(f"JWS protected header is larger than {MAX_PROTECTED_BYTES} bytes")
    protected = _b64url(prot_b64, "protected header")
    payload = _b64url(payload_b64, "payload")
    signature = _b64url(doc["signature"], "signature")
    hdr = _json(protected, "protected header")
    if not isinstance(hdr, dict):
        raise EnvelopeError("protected header must be a JSON object")
    alg = hdr.get("alg")
    if alg not in _JWS_ALGS:
        raise EnvelopeError(f"signature algorithm {_q(alg)} is not supported")
    if hdr.get("cty") != PAYLOAD_CONTENT_TYPE:
        raise EnvelopeError(f"payload content type {_q(hdr.get('cty'))} is not supported")
    crit = hdr.get("crit")
    if not isinstance(crit, list):
        raise EnvelopeError("missing or malformed critical headers (crit)")
    attrs = _signed_attributes(hdr, crit)
    unprotected = doc["header"]
    if not isinstance(unprotected, dict):
        raise EnvelopeError("JWS unprotected header must be an object")
    x5c = unprotected.get("x5c")
    if not isinstance(x5c, list) or not x5c:
        raise EnvelopeError("JWS unprotected header has no x5c certificate chain")
    if len(x5c) > 10:
        raise LimitExceeded(f"certificate chain has {len(x5c)} certificates, more than the limit of 10")
    certs = load_der_chain([_b64std(c, "x5c certificate") for c in x5c])
    ts = unprotected.get(H_TIMESTAMP)
    token = _b64std(ts, H_TIMESTAMP) if ts is not None else None
    if token is not None and len(token) > MAX_TIMESTAMP_BYTES:
        raise LimitExceeded(f"timestamp token is larger than {MAX_TIMESTAMP_BYTES} bytes")
    # Older notation-go spells it with a capital S; both are informational only.
    agent = unprotected.get(H_AGENT, unprotected.get("io.cncf.notary.SigningAgent"))
    return Envelope(
        media_type=JWS_MEDIA_TYPE, alg=alg, signing_scheme=attrs["scheme"],
        signing_time=attrs["signing_time"], authentic_signing_time=attrs["authentic_time"],
        expiry=attrs["expiry"], critical=tuple(crit),
        unknown_critical=tuple(c for c in crit if c not in _KNOWN_CRITICAL),
        extended_attributes={k: v for k, v in hdr.items() if k not in _RESERVED_JWS},
        verification_plugin=attrs["plugin"], verification_plugin_min_version=attrs["plugin_min"],
        certificates=tuple(certs), timestamp_token=token,
        signing_agent=agent if isinstance(agent, str) else None, payload=payload,
        target=parse_payload(payload), signature=signature,
        signed_bytes=f"{prot_b64}.{payload_b64}".encode("ascii"),
    )


def _depth(obj: Any, level: int = 0) -> int:
    if level > MAX_CBOR_DEPTH:
        raise LimitExceeded("CBOR structure is nested too deeply")
    if isinstance(obj, Mapping):
        return max([_depth(v, level + 1) for v in obj.values()] + [_depth(k, level + 1) for k in obj], default=level)
    if isinstance(obj, list | tuple):
        return max((_depth(v, level + 1) for v in obj), default=level)
    if isinstance(obj, cbor2.CBORTag):
        return _depth(obj.value, level + 1)
    return level


def _cbor(data: bytes, what: str) -> Any:
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError,
            EOFError) as exc:
        raise EnvelopeError(f"{what} is not valid CBOR: {exc}") from None
    _depth(obj)
    return obj


_COSE_ALG, _COSE_CRIT, _COSE_CTY, _COSE_X5CHAIN = 1, 2, 3, 33
_RESERVED_COSE: set[Any] = {_COSE_ALG, _COSE_CRIT, _COSE_CTY, _COSE_X5CHAIN, H_SCHEME, H_SIGNING_TIME,
                            H_AUTHENTIC_TIME, H_EXPIRY, H_PLUGIN, H_PLUGIN_MIN}


def parse_cose(blob: bytes) -> Envelope:
    msg = _cbor(blob, "COSE envelope")
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != 18:
        raise EnvelopeError("COSE envelope is not a COSE_Sign1_Tagged message (CBOR tag 18)")
    body = msg.value
    if not isinstance(body, list | tuple) or len(body) != 4:
        raise EnvelopeError("COSE_Sign1 must be an array of 4 elements")
    prot_bytes, unprotected, payload, signature = body
    if not isinstance(prot_bytes, bytes) or not isinstance(unprotected, Mapping):
        raise EnvelopeError("COSE_Sign1 headers are malformed")
    if not isinstance(payload, bytes):
        raise EnvelopeError("COSE_Sign1 payload must be attached")
    if not isinstance(signature, bytes):
        raise EnvelopeError("COSE_Sign1 signature must be a byte string")
    if len(prot_bytes) > MAX_PROTECTED_BYTES:
        raise LimitExceeded(f"COSE protected header is larger than {MAX_PROTECTED_BYTES} bytes")
    hdr = _cbor(prot_bytes, "COSE protected header") if prot_bytes else {}
    if not isinstance(hdr, Mapping):
        raise EnvelopeError("COSE protected header must be a map")
    alg = _COSE_ALGS.get(hdr.get(_COSE_ALG))  # type: ignore[arg-type]
    if alg is None:
        raise EnvelopeError(f"signature algorithm {_q(hdr.get(_COSE_ALG))} is not supported")
    if hdr.get(_COSE_CTY) != PAYLOAD_CONTENT_TYPE:
        raise EnvelopeError(f"payload content type {_q(hdr.get(_COSE_CTY))} is not supported")
    crit = hdr.get(_COSE_CRIT)
    if isinstance(crit, tuple):
        crit = list(crit)
    if not isinstance(crit, list):
        raise EnvelopeError("missing or malformed critical headers (crit)")
    str_hdr = {k: v for k, v in hdr.items() if isinstance(k, str)}
    attrs = _signed_attributes(str_hdr, crit)
    chain = unprotected.get(_COSE_X5CHAIN, hdr.get(_COSE_X5CHAIN))
    if isinstance(chain, bytes):
        chain = [chain]
    if not isinstance(chain, list | tuple) or not chain or not all(isinstance(c, bytes) for c in chain):
        raise EnvelopeError("COSE header has no x5chain certificate chain")
    certs = load_der_chain(list(chain))
    token = unprotected.get(H_TIMESTAMP)
    if token is not None and not isinstance(token, bytes):
        raise EnvelopeError(f"{H_TIMESTAMP} must be a byte string")
    if token is not None and len(token) > MAX_TIMESTAMP_BYTES:
        raise LimitExceeded(f"timestamp token is larger than {MAX_TIMESTAMP_BYTES} bytes")
    agent = unprotected.get(H_AGENT)
    # RFC 9052 §4.4: Sig_structure = ["Signature1", body_protected, external_aad, payload].
    to_be_signed = cbor2.dumps(["Signature1", prot_bytes, b"", payload])
    return Envelope(
        media_type=COSE_MEDIA_TYPE, alg=alg, signing_scheme=attrs["scheme"],
        signing_time=attrs["signing_time"], authentic_signing_time=attrs["authentic_time"],
        expiry=attrs["expiry"], critical=tuple(crit),
        unknown_critical=tuple(c for c in crit if c not in _KNOWN_CRITICAL),
        extended_attributes={str(k): v for k, v in hdr.items() if k not in _RESERVED_COSE},
        verification_plugin=attrs["plugin"], verification_plugin_min_version=attrs["plugin_min"],
        certificates=tuple(certs), timestamp_token=token,
        signing_agent=agent if isinstance(agent, str) else None, payload=payload,
        target=parse_payload(payload), signature=signature, signed_bytes=to_be_signed,
    )


def parse_envelope(media_type: str, blob: bytes) -> Envelope:
    """Dispatch on the signature layer's media type; every failure is an ``EnvelopeError``."""
    if len(blob) > MAX_ENVELOPE_BYTES:
        raise LimitExceeded(f"signature envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    if media_type == JWS_MEDIA_TYPE:
        return parse_jws(blob)
    if media_type == COSE_MEDIA_TYPE:
        return parse_cose(blob)
    raise EnvelopeError(f"signature envelope format with media type {_q(media_type)} is not supported")
