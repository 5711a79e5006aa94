"""X.509 certificate-chain rules of the Notary Project, on top of ``cryptography``.

Signatures are checked by ``cryptography`` (``verify_directly_issued_by``); what is written by hand
is only the Notary Project's own requirements, which differ from RFC 5280 path building and from
``cryptography.x509.verification`` (WebPKI profile): the chain is given in order leaf→root inside
the envelope, a single self-signed signing certificate is a valid chain, trust is "some
certificate of the chain is in a named store", and the validity instant is decided by the
authentic-timestamp step, not by the chain builder. Each rule names its section of
notaryproject/specifications ``specs/signature-specification.md`` "Certificate Requirements".
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID

from scanner.errors import LimitExceeded, ParseError


def _q(value: object) -> str:
    """Quote like Go's %q, so messages read as notation's do."""
    return json.dumps(value)

MAX_CHAIN = 10  # certificates in an envelope's x5c / x5chain
MAX_CERT_BYTES = 64 * 1024


class ChainError(ParseError, ValueError):
    """The certificate chain does not meet the Notary Project certificate requirements."""


def load_der_chain(ders: Sequence[bytes]) -> list[x509.Certificate]:
    if not ders:
        raise ParseError("the certificate chain is empty")
    if len(ders) > MAX_CHAIN:
        raise LimitExceeded(f"certificate chain has {len(ders)} certificates, more than the limit of {MAX_CHAIN}")
    out = []
    for i, der in enumerate(ders):
        if len(der) > MAX_CERT_BYTES:
            raise LimitExceeded(f"certificate {i} of the chain is larger than {MAX_CERT_BYTES} bytes")
        try:
            cert = _load_der(bytes(der))
        except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
            raise ParseError(f"certificate {i} of the chain is malformed: {exc}") from None
        out.append(cert)
    return out


# Issue 19: every signature of one signer carries the same certificates, and parsing them (with the
# fields touched below) and checking the chain's rules were half of a notation verify's client CPU on a
# cold scan. Both are pure functions of the certificates' exact DER bytes: the parsed certificate is
# kept per DER (the key is the bytes themselves, so only identical bytes ever share an entry), and the
# chain rules' outcome per chain below. Failures are not kept (a malformed certificate is parsed again
# each time: it costs the sender, not the cache). Bounded: an estate with more signers re-parses.
# Bounded in bytes too, not only in entries: the memos live as long as the process (``serve``), and
# whoever can push a signature chooses the sizes — 256 certificates of 64 KB, or 256 chain failures
# each quoting two such subjects (~0.4 MB a message once escaped), held ~110 MB for good. So only a
# certificate of at most _CERT_MEMO_ENTRY_BYTES and a failure message of at most _CHAIN_MEMO_ENTRY_CHARS
# are kept (a real signer's are a few hundred bytes); larger ones are worked out again each time, as
# failures are: they cost the sender, never the scanner's memory.
_CERT_MEMO_MAX = 256
_CHAIN_MEMO_MAX = 256
_CERT_MEMO_ENTRY_BYTES = 8 * 1024
_CHAIN_MEMO_ENTRY_CHARS = 2 * 1024


def _parse_der(der: bytes) -> x509.Certificate:
    cert = x509.load_der_x509_certificate(der)
    # cryptography parses lazily: touch the fields every later step reads, so malformed
    # DER fails here as a parse error rather than later as an untyped exception.
    _ = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.version, cert.public_key())
    return cert


_parse_der_once = functools.lru_cache(maxsize=_CERT_MEMO_MAX)(_parse_der)


def _load_der(der: bytes) -> x509.Certificate:
    return _parse_der_once(der) if len(der) <= _CERT_MEMO_ENTRY_BYTES else _parse_der(der)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(der(cert)).hexdigest()


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def subject(cert: x509.Certificate) -> str:
    from scanner.verify.notation_trust import subject_string  # one formatter for every message

    return subject_string(cert.subject)


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return is_issued_by(cert, cert)


def is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert``'s basicConstraints say it is a CA (RFC 5280 §4.2.1.9); no extension: it is not."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # duplicate or malformed extensions
        raise ChainError(f"certificate with subject {_q(subject(cert))} has malformed extensions: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Keys and algorithms (signature-specification.md "Algorithm Selection").

_RSA_ALG = {2048: "PS256", 3072: "PS384", 4096: "PS512"}
_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384,
                                                      "512": hashes.SHA512}


def algorithm_for_key(key: object) -> str:
    """The only JWS algorithm name a key may sign with; ChainError if the key is not allowed."""
    if isinstance(key, rsa.RSAPublicKey):
        alg = _RSA_ALG.get(key.key_size)
        if alg is None:
            raise ChainError(f"RSA key size {key.key_size} is not supported (2048, 3072 or 4096)")
        return alg
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALG.get(key.curve.name)
        if alg is None:
            raise ChainError(f"EC curve {key.curve.name} is not supported (P-256, P-384 or P-521)")
        return alg
    raise ChainError(f"key type {type(key).__name__} is not supported (RSA or EC)")


def verify_jose_signature(key: object, alg: str, signature: bytes, data: bytes) -> None:
    """RSASSA-PSS (salt length = hash length) or ECDSA with raw R‖S; InvalidSignature on mismatch."""
    h = _HASH[alg[2:]]()
    if alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
        return
    if alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise InvalidSignature("ECDSA signature has the wrong length")
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(h))
        return
    raise InvalidSignature(f"algorithm {alg} does not fit the key")


def verify_x509_style_signature(key: object, signature: bytes, data: bytes,
                                hash_alg: hashes.HashAlgorithm | None) -> None:
    """PKCS#1 v1.5 or DER ECDSA, as in certificates, CRLs and OCSP responses."""
    if hash_alg is None:
        raise InvalidSignature("no hash algorithm")
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hash_alg)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hash_alg))
    else:
        raise InvalidSignature(f"unsupported key type {type(key).__name__}")


def _check_key_strength(cert: x509.Certificate) -> None:
    # signature-specification.md "Certificate Requirements": RSA >= 2048, EC >= 256 bits.
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ChainError(f"certificate with subject {_q(subject(cert))}: RSA key size {key.key_size} is "
                             "too small (minimum 2048)")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < 256:
            raise ChainError(f"certificate with subject {_q(subject(cert))}: EC key size {key.curve.key_size} "
                             "is too small (minimum 256)")
    else:
        raise ChainError(f"certificate with subject {_q(subject(cert))}: unsupported key type "
                         f"{type(key).__name__}")


def _check_no_sha1(cert: x509.Certificate) -> None:
    try:
        alg = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise ChainError(f"certificate with subject {_q(subject(cert))} uses an unsupported signature "
                         "algorithm") from None
    if isinstance(alg, hashes.SHA1 | hashes.MD5):
        raise ChainError(f"certificate with subject {_q(subject(cert))} is signed with {alg.name}, which is "
                         "not allowed")


def _check_ca(cert: x509.Certificate, below: int) -> None:
    """CA requirements: basicConstraints critical with cA=true, keyUsage critical with keyCertSign,
    pathLenConstraint honoured (``below`` = number of CA certificates under this one)."""
    s = subject(cert)
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not isinstance(bc.value, x509.BasicConstraints) or not bc.value.ca:
        raise ChainError(f"certificate with subject {_q(s)}: ca field in basic constraints must be true")
    if not bc.critical:
        raise ChainError(f"certificate with subject {_q(s)}: basic constraints extension must be critical")
    if bc.value.path_length is not None and below > bc.value.path_length:
        raise ChainError(f"certificate with subject {_q(s)}: expected path length of {below} but certificate "
                         f"has path length {bc.value.path_length} instead")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not isinstance(ku.value, x509.KeyUsage) or not ku.value.key_cert_sign:
        raise ChainError(f"certificate with subject {_q(s)}: key usage must include certificate signing")
    if not ku.critical:
        raise ChainError(f"certificate with subject {_q(s)}: key usage extension must be critical")


_FORBIDDEN_LEAF_EKU = {
    ExtendedKeyUsageOID.SERVER_AUTH: "ServerAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "ClientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "EmailProtection", ExtendedKeyUsageOID.TIME_STAMPING: "TimeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning", ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "Any",
}


def _check_code_signing_leaf(cert: x509.Certificate) -> None:
    """Signing certificate requirements: not a CA; keyUsage critical with digitalSignature only
    (contentCommitment tolerated); EKU, when present, not one of the forbidden purposes."""
    s = subject(cert)
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca:
        raise ChainError(f"the certificate with subject {_q(s)} is invalid: if the basic constraints "
                         "extension is present, the ca field must be set to false")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None or not isinstance(ku.value, x509.KeyUsage):
        raise ChainError(f"the certificate with subject {_q(s)} is invalid: the key usage extension must be "
                         "present")
    if not ku.critical:
        raise ChainError(f"the certificate with subject {_q(s)} is invalid: the key usage extension must be "
                         "critical")
    v = ku.value
    if not v.digital_signature:
        raise ChainError(f"the certificate with subject {_q(s)} is invalid: the key usage must have the bit "
                         "positions for Digital Signature set")
    bad = [n for n, on in (("KeyEncipherment", v.key_encipherment), ("DataEncipherment", v.data_encipherment),
                           ("KeyAgreement", v.key_agreement), ("CertSign", v.key_cert_sign),
                           ("CRLSign", v.crl_sign)) if on]
    if v.key_agreement:
        if v.encipher_only:
            bad.append("EncipherOnly")
        if v.decipher_only:
            bad.append("DecipherOnly")
    if bad:
        raise ChainError(f"the certificate with subject {_q(s)} is invalid: the key usage must not include "
                         f"{', '.join(bad)}")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is not None and isinstance(eku.value, x509.ExtendedKeyUsage):
        for oid in eku.value:
            if oid in _FORBIDDEN_LEAF_EKU:
                raise ChainError(f"the certificate with subject {_q(s)} is invalid: extended key usage must "
                                 f"not contain {_FORBIDDEN_LEAF_EKU[oid]} eku")


def _check_timestamping_leaf(cert: x509.Certificate) -> None:
    """Timestamping certificate requirements: EKU present, critical, exactly id-kp-timeStamping."""
    s = subject(cert)
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca:
        raise ChainError(f"the timestamping certificate with subject {_q(s)} must not be a CA")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is None or not isinstance(eku.value, x509.ExtendedKeyUsage):
        raise ChainError(f"timestamp signing certificate with subject {_q(s)} must have extended key usage "
                         "extension")
    if not eku.critical:
        raise ChainError(f"timestamp signing certificate with subject {_q(s)} must have a critical extended "
                         "key usage extension")
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise ChainError(f"timestamp signing certificate with subject {_q(s)} must have and only have "
                         "TimeStamping as extended key usage")
    ku = _ext(cert, x509.KeyUsage)
    if ku is not None and isinstance(ku.value, x509.KeyUsage) and not ku.value.digital_signature:
        raise ChainError(f"timestamp signing certificate with subject {_q(s)}: key usage must include "
                         "Digital Signature")


def _validate_chain(chain: Sequence[x509.Certificate], timestamping: bool) -> None:
    if not chain:
        raise ChainError("certificate chain must contain at least one certificate")
    if len(chain) > MAX_CHAIN:
        raise ChainError(f"certificate chain is longer than {MAX_CHAIN}")
    leaf = chain[0]
    if len(chain) == 1:
        # signature-specification.md: a chain of one certificate is a self-signed signing certificate.
        if not is_self_signed(leaf):
            raise ChainError(f"invalid self-signed certificate. subject: {_q(subject(leaf))}. Error: the "
                             "certificate is not self-signed")
    else:
        for i in range(len(chain) - 1):
            child, parent = chain[i], chain[i + 1]
            if not is_issued_by(child, parent):
                raise ChainError(f"invalid certificates or certificate with subject {_q(subject(child))} is not "
                                 f"issued by {_q(subject(parent))}")
        root = chain[-1]
        if not is_self_signed(root):
            raise ChainError(f"root certificate with subject {_q(subject(root))} is not self-signed. Certificate "
                             "chain must end with a valid self-signed root certificate")
        for i in range(1, len(chain) - 1):
            if is_self_signed(chain[i]):
                raise ChainError(f"intermediate certificate with subject {_q(subject(chain[i]))} is self-signed. "
                                 "Certificate chain must not contain self-signed intermediate certificates")
        for i in range(1, len(chain)):
            _check_ca(chain[i], below=i - 1)
    if timestamping:
        _check_timestamping_leaf(leaf)
    else:
        _check_code_signing_leaf(leaf)
    for i, cert in enumerate(chain):
        _check_key_strength(cert)
        if i < len(chain) - 1 or len(chain) == 1:
            _check_no_sha1(cert)  # a root's self-signature is not relied upon


def validate_signing_chain(chain: Sequence[x509.Certificate]) -> None:
    """Code-signing chain rules (signature-specification.md "Certificate Requirements")."""
    _validate_chain_once(chain, timestamping=False)


def validate_timestamping_chain(chain: Sequence[x509.Certificate]) -> None:
    """Timestamping chain rules (signature-specification.md "Timestamping certificate requirements")."""
    _validate_chain_once(chain, timestamping=True)


# The outcome of the chain rules per (the SHA-256 of each certificate's DER, in order; which profile):
# None (valid) or the ChainError's message. The rules read nothing but the certificates (no clock, no
# trust store, no network: validity times, trust and revocation are later steps), so the same bytes
# always get the same answer. Only a ChainError is an outcome; any other exception is raised each time.
_chain_outcomes: dict[tuple[tuple[bytes, ...], bool], str | None] = {}
_chain_lock = threading.Lock()


def _validate_chain_once(chain: Sequence[x509.Certificate], timestamping: bool) -> None:
    key = (tuple(hashlib.sha256(der(c)).digest() for c in chain), timestamping)
    with _chain_lock:
        known = key in _chain_outcomes
        outcome = _chain_outcomes.get(key)
    if not known:
        try:
            _validate_chain(chain, timestamping)
            outcome = None
        except ChainError as exc:
            outcome = str(exc.args[0]) if exc.args else str(exc)
        if outcome is None or len(outcome) <= _CHAIN_MEMO_ENTRY_CHARS:
            with _chain_lock:
                if len(_chain_outcomes) >= _CHAIN_MEMO_MAX:
                    _chain_outcomes.clear()
                _chain_outcomes[key] = outcome
    if outcome is not None:
        raise ChainError(outcome)


def trust_anchors(trusted: Iterable[x509.Certificate]) -> frozenset[bytes]:
    """The exact DER of each trusted certificate: what :func:`chain_trusted_by` looks a chain up in,
    made once per trust store (issue 19: it was re-encoded for every signature)."""
    return frozenset(der(c) for c in trusted)


def chain_trusted_by(chain: Sequence[x509.Certificate] | Sequence[bytes], anchors: AbstractSet[bytes]) -> bool:
    """trust-store-trust-policy.md step "Authenticity": some certificate of the chain (certificates, or
    their DER) is in the store (:func:`trust_anchors`): byte for byte the same certificate."""
    return any((c if isinstance(c, bytes) else der(c)) in anchors for c in chain)


def validity_problem(cert: x509.Certificate, at: datetime) -> str | None:
    fmt = "%a, %d %b %Y %H:%M:%S +0000"
    if at < cert.not_valid_before_utc:
        return (f"certificate {_q(subject(cert))} is not yet valid at {at.isoformat()}, it will be valid from "
                f"{_q(cert.not_valid_before_utc.strftime(fmt))}")
    if at > cert.not_valid_after_utc:
        return (f"certificate {_q(subject(cert))} is not valid at {at.isoformat()}, it expired at "
                f"{_q(cert.not_valid_after_utc.strftime(fmt))}")
    return None


def build_chain(leaf: x509.Certificate, pool: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Leaf→anchor path through ``pool`` (the certificates a CMS token carries); ChainError if none.

    Used for TSA chains, where the token's certificate set is unordered.
    """
    chain = [leaf]
    anchor_ders = {der(a) for a in anchors}
    candidates = list(pool) + list(anchors)
    current = leaf
    for _ in range(MAX_CHAIN):
        if der(current) in anchor_ders:
            return chain
        if is_self_signed(current):
            break
        nxt = next((c for c in candidates if c.subject == current.issuer and der(c) != der(current)
                    and is_issued_by(current, c)), None)
        if nxt is None:
            break
        chain.append(nxt)
        current = nxt
    if der(current) in anchor_ders:
        return chain
    raise ChainError("x509: certificate signed by unknown authority")
