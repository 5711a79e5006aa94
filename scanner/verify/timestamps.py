"""RFC 3161 timestamp countersignatures (``io.cncf.notary.timestampSignature``), via rfc3161-client.

The Notary Project stores the bare TimeStampToken (a CMS ContentInfo with SignedData, RFC 3161
§2.4.2) over the envelope's signature bytes. rfc3161-client verifies TimeStampResp structures, so
the token is wrapped in a granted ``TimeStampResp`` first; and because that library insists on
strict DER while real TSAs (and Go's encoder) emit the certificate SET OF unsorted, the
certificates set is re-sorted (X.690 §11.6) before parsing. The certificates are not covered by
the CMS signature, so the reordering cannot change what is verified.

Everything here is pure: token bytes, the message, the TSA trust anchors in; a
``VerifiedTimestamp`` or a ``TimestampError`` with a reason out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response
from rfc3161_client.tsp import TimeStampResponse

from scanner.verify.x509 import ChainError, build_chain, validate_timestamping_chain

MAX_TOKEN_BYTES = 64 << 10
# RFC 3628 "baseline time-stamp policy" (ETSI): accuracy of at least 1 s when none is given.
BASELINE_POLICY = "0.4.0.2023.1.1"
_HASHES = {"2.16.840.1.101.3.4.2.1": hashlib.sha256, "2.16.840.1.101.3.4.2.2": hashlib.sha384,
           "2.16.840.1.101.3.4.2.3": hashlib.sha512}


class TimestampError(ValueError):
    """The countersignature is malformed, does not cover the signature, or is not trusted."""


@dataclass(frozen=True, slots=True)
class VerifiedTimestamp:
    gen_time: datetime
    accuracy: timedelta
    tsa_chain: tuple[x509.Certificate, ...]
    policy: str

    @property
    def earliest(self) -> datetime:
        return self.gen_time - self.accuracy

    @property
    def latest(self) -> datetime:
        return self.gen_time + self.accuracy


# ----------------------------------------------------------------------------------------------
# Minimal DER framing (X.690 §8.1), used only to wrap the token and sort one SET OF.


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``; definite lengths only."""
    if pos + 2 > len(data):
        raise TimestampError("failed to parse timestamp countersignature: truncated DER")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise TimestampError("failed to parse timestamp countersignature: high tag numbers are not supported")
    first = data[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    n = first & 0x7F
    if n == 0 or n > 4:
        raise TimestampError("failed to parse timestamp countersignature: indefinite or oversized DER length")
    if pos + 2 + n > len(data):
        raise TimestampError("failed to parse timestamp countersignature: truncated DER length")
    length = int.from_bytes(data[pos + 2:pos + 2 + n], "big")
    start = pos + 2 + n
    if start + length > len(data):
        raise TimestampError("failed to parse timestamp countersignature: DER length exceeds the data")
    return tag, start, start + length


def _encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = _tlv(data, pos)
        if ce > end:
            raise TimestampError("failed to parse timestamp countersignature: element overruns its parent")
        out.append((tag, pos, cs, ce))
        pos = ce
        if len(out) > 64:
            raise TimestampError("failed to parse timestamp countersignature: too many elements")
    return out


def der_children(der: bytes) -> list[tuple[int, int]]:
    """(tag, first content octet or -1) of each element inside the DER SEQUENCE ``der``."""
    tag, cs, ce = _tlv(der, 0)
    if tag != 0x30 or ce != len(der):
        raise TimestampError("not a DER SEQUENCE")
    return [(t, der[c_s] if c_e > c_s else -1) for t, _, c_s, c_e in _children(der, cs, ce)]


def _sort_certificates(token: bytes) -> bytes:
    """Return the token with SignedData.certificates in DER SET OF order."""
    tag, cs, ce = _tlv(token, 0)
    if tag != 0x30 or ce != len(token):
        raise TimestampError("failed to parse timestamp countersignature: not a DER SEQUENCE")
    ci = _children(token, cs, ce)  # contentType, [0] content
    if len(ci) != 2 or ci[1][0] != 0xA0:
        raise TimestampError("failed to parse timestamp countersignature: not a CMS ContentInfo")
    _, _, ecs, ece = ci[1]
    sd_items = _children(token, ecs, ece)
    if len(sd_items) != 1 or sd_items[0][0] != 0x30:
        raise TimestampError("failed to parse timestamp countersignature: not a CMS SignedData")
    _, _, scs, sce = sd_items[0]
    parts = []
    for tag, pos, c_s, c_e in _children(token, scs, sce):
        if tag == 0xA0:  # certificates [0] IMPLICIT CertificateSet
            elems = [token[p:e] for _, p, _, e in _children(token, c_s, c_e)]
            width = max((len(x) for x in elems), default=0)
            elems.sort(key=lambda x: x.ljust(width, b"\0"))
            parts.append(_encode(0xA0, b"".join(elems)))
        else:
            parts.append(token[pos:c_e])
    signed_data = _encode(0x30, b"".join(parts))
    return _encode(0x30, token[ci[0][1]:ci[0][3]] + _encode(0xA0, signed_data))


def _as_response(token: bytes) -> TimeStampResponse:
    # RFC 3161 §2.4.2: TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken }.
    granted = bytes.fromhex("3003020100")
    try:
        return decode_timestamp_response(_encode(0x30, granted + _sort_certificates(token)))
    except ValueError as exc:
        raise TimestampError(f"failed to parse timestamp countersignature: {exc}") from None


def parse_token(token: bytes) -> TimeStampResponse:
    """A bare TimeStampToken as rfc3161-client's (granted) TimeStampResponse, certificates re-sorted."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TimestampError(f"timestamp token is larger than {MAX_TOKEN_BYTES} bytes")
    return _as_response(token)


def load_certificates(resp: TimeStampResponse) -> list[x509.Certificate]:
    """The token's certificates, parsed now: cryptography parses names and extensions lazily, and a
    hostile certificate must fail here as a TimestampError, not later as a KeyError or InvalidVersion."""
    try:
        pool = [x509.load_der_x509_certificate(c) for c in resp.signed_data.certificates]
        for c in pool:
            _ = (c.subject, c.issuer, c.extensions, c.public_key(), c.not_valid_before_utc, c.not_valid_after_utc)
    except (ValueError, KeyError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType,
            UnsupportedAlgorithm) as exc:
        raise TimestampError(f"failed to parse timestamp countersignature: a certificate: {str(exc)[:200]}") from None
    return pool


def _oid(der: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER's content octets."""
    arcs, value = [], 0
    for b in der:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or der[-1] & 0x80:
        raise TimestampError("failed to parse timestamp countersignature: a malformed OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


def signer_algorithms(token: bytes) -> tuple[str, str]:
    """(digestAlgorithm, signatureAlgorithm) OIDs of the token's one SignerInfo (RFC 5652 §5.3).
    rfc3161-client verifies with the digest and the certificate's key and never reads the second."""
    tag, cs, ce = _tlv(token, 0)
    ci = _children(token, cs, ce)
    if tag != 0x30 or len(ci) != 2 or ci[1][0] != 0xA0:
        raise TimestampError("failed to parse timestamp countersignature: not a CMS ContentInfo")
    sd = _children(token, ci[1][2], ci[1][3])
    if len(sd) != 1 or sd[0][0] != 0x30:
        raise TimestampError("failed to parse timestamp countersignature: not a CMS SignedData")
    items = _children(token, sd[0][2], sd[0][3])
    if not items or items[-1][0] != 0x31:
        raise TimestampError("failed to parse timestamp countersignature: no signerInfos")
    infos = _children(token, items[-1][2], items[-1][3])
    if len(infos) != 1 or infos[0][0] != 0x30:
        raise TimestampError("failed to parse timestamp countersignature: not one SignerInfo")
    fields = [f for f in _children(token, infos[0][2], infos[0][3]) if f[0] == 0x30]  # sid?, digestAlg, sigAlg
    if len(fields) < 2:
        raise TimestampError("failed to parse timestamp countersignature: a SignerInfo without algorithms")
    oids = []
    for f in fields[-2:]:
        inner = _children(token, f[2], f[3])
        if not inner or inner[0][0] != 0x06:
            raise TimestampError("failed to parse timestamp countersignature: an AlgorithmIdentifier without OID")
        oids.append(_oid(token[inner[0][2]:inner[0][3]]))
    return oids[0], oids[1]


# signatureAlgorithm values a SignerInfo may name for its digestAlgorithm (RFC 5754 §3, RFC 8419 §3.1):
# the bare key algorithm, or the one combined with the same digest.
_SIG_OIDS = {"2.16.840.1.101.3.4.2.1": {"1.2.840.10045.4.3.2", "1.2.840.113549.1.1.11"},
             "2.16.840.1.101.3.4.2.2": {"1.2.840.10045.4.3.3", "1.2.840.113549.1.1.12"},
             "2.16.840.1.101.3.4.2.3": {"1.2.840.10045.4.3.4", "1.2.840.113549.1.1.13", "1.3.101.112"}}
_BARE_KEY_OIDS = {"1.2.840.10045.2.1", "1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10"}


def check_signer_algorithms(token: bytes) -> None:
    """TimestampError unless the SignerInfo's signatureAlgorithm agrees with its digestAlgorithm."""
    digest, signature = signer_algorithms(token)
    if signature not in _SIG_OIDS.get(digest, set()) | _BARE_KEY_OIDS:
        raise TimestampError(f"timestamp countersignature: signature algorithm {signature} does not go with "
                             f"digest algorithm {digest}")


def split_response(response: bytes) -> tuple[int, bytes | None]:
    """A TSA's TimeStampResp (RFC 3161 §2.4.2) as (PKIStatus, the bare token or None)."""
    tag, cs, ce = _tlv(response, 0)
    if tag != 0x30 or ce != len(response):
        raise TimestampError("failed to parse timestamp response: not a DER SEQUENCE")
    items = _children(response, cs, ce)
    if not items or len(items) > 2 or items[0][0] != 0x30:
        raise TimestampError("failed to parse timestamp response: not a TimeStampResp")
    status_items = _children(response, items[0][2], items[0][3])
    if not status_items or status_items[0][0] != 0x02 or not 0 < status_items[0][3] - status_items[0][2] <= 2:
        raise TimestampError("failed to parse timestamp response: no PKIStatus")
    status = int.from_bytes(response[status_items[0][2]:status_items[0][3]], "big", signed=True)
    token = response[items[1][1]:items[1][3]] if len(items) == 2 else None
    return status, token


def verify_timestamp_token(token: bytes, message: bytes,
                           tsa_roots: Sequence[x509.Certificate]) -> VerifiedTimestamp:
    """Verify an RFC 3161 token over ``message`` against the ``tsa`` store's root certificates.

    trust-store-trust-policy.md "Authentic timestamp": valid CMS with TSTInfo content; the
    messageImprint equals the hash of the signature bytes; the TSA certificate chain leads to the
    tsa store and meets the timestamping certificate requirements; the CMS signature verifies
    with certificates valid at genTime. Revocation of the TSA chain is the caller's step.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise TimestampError(f"timestamp token is larger than {MAX_TOKEN_BYTES} bytes")
    resp = _as_response(token)
    try:
        info = resp.tst_info
        imprint = info.message_imprint
        algo = imprint.hash_algorithm.dotted_string
        gen_time = info.gen_time
        policy = info.policy.dotted_string
        acc = info.accuracy
    except (ValueError, AttributeError) as exc:
        raise TimestampError(f"failed to get the timestamp TSTInfo with error: {exc}") from None
    hasher = _HASHES.get(algo)
    if hasher is None:
        raise TimestampError(f"failed to get timestamp from timestamp countersignature with error: "
                             f"unsupported message imprint hash algorithm {algo}")
    if hasher(message).digest() != imprint.message:
        raise TimestampError("failed to get timestamp from timestamp countersignature with error: invalid "
                             "TSTInfo: mismatched message")
    if not tsa_roots:
        raise TimestampError("no trusted TSA certificate found in trust store")
    if not resp.signed_data.certificates:
        raise TimestampError("failed to verify the timestamp countersignature with error: failed to verify "
                             "signed token: signing certificate not found in the timestamp token")
    pool = load_certificates(resp)
    try:
        signer = next(iter(resp.signed_data.signer_infos), None)
        leaf = next((c for c in pool if signer is not None and c.issuer == signer.issuer
                     and c.serial_number == signer.serial_number), None)
    except (ValueError, KeyError) as exc:  # the SignerInfo's issuer name does not parse
        raise TimestampError(f"failed to parse timestamp countersignature: its signer: {exc}") from None
    if leaf is None:
        raise TimestampError("failed to verify the timestamp countersignature with error: failed to verify "
                             "signed token: signing certificate not found in the timestamp token")
    try:
        chain = build_chain(leaf, pool, tsa_roots)
    except ChainError as exc:
        raise TimestampError(f"failed to verify the timestamp countersignature with error: failed to verify "
                             f"signed token: cms verification failure: {exc}") from None
    builder = VerifierBuilder(roots=list(tsa_roots))
    for cert in chain[1:]:
        if cert not in tsa_roots:
            builder = builder.add_intermediate_certificate(cert)
    try:
        builder.build().verify_message(resp, message)
    except (VerificationError, ValueError) as exc:
        raise TimestampError(f"failed to verify the timestamp countersignature with error: {exc}") from None
    try:
        validate_timestamping_chain(chain)
    except ChainError as exc:
        raise TimestampError(f"failed to validate the timestamping certificate chain with error: {exc}") from None
    if acc is not None and (acc.seconds or acc.millis or acc.micros):
        accuracy = timedelta(seconds=acc.seconds or 0, milliseconds=acc.millis or 0,
                             microseconds=acc.micros or 0)
    elif policy == BASELINE_POLICY:
        accuracy = timedelta(seconds=1)
    else:
        accuracy = timedelta(0)
    return VerifiedTimestamp(gen_time=gen_time, accuracy=accuracy, tsa_chain=tuple(chain), policy=policy)
