"""Keyless identities: which Fulcio certificate subjects (SAN) and OIDC issuers a policy trusts.

Semantics of cosign's ``--certificate-identity[-regexp]`` and ``--certificate-oidc-issuer[-regexp]``,
with one deliberate difference: a regular expression must match the **whole** value (as the
policy schema says). cosign calls Go's unanchored ``regexp.MatchString``, so there ``philipp``
accepts ``philipp.belitz@example.com`` and ``https://github.com/org`` accepts
``https://github.com/org-evil/...``; here a regexp that matches only a prefix or a substring does
not pass (write ``philipp.*``).

The issuer is read from the Fulcio extensions (https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md):
1.3.6.1.4.1.57264.1.8 (DER UTF8String, current) and, when that is absent, 1.3.6.1.4.1.57264.1.1
(raw bytes, deprecated).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.x509 import ObjectIdentifier
from sigstore.errors import VerificationError

from scanner.policy.schema import FULCIO_EXTENSIONS, extension_name
from scanner.policy.schema import Identity as IdentitySpec

OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_FULCIO_OTHERNAME = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")

_MAX_PATTERN = 1024


@dataclass(frozen=True, slots=True)
class _Match:
    """An exact string or a full-match regular expression."""

    exact: str | None = None
    regexp: str | None = None

    def __post_init__(self) -> None:
        if (self.exact is None) == (self.regexp is None):
            raise ValueError("give exactly one of an exact value or a regular expression")
        if self.regexp is not None:
            if len(self.regexp) > _MAX_PATTERN:
                raise ValueError("regular expression too long")
            re.compile(self.regexp)

    def matches(self, value: str) -> bool:
        if self.exact is not None:
            return value == self.exact
        assert self.regexp is not None
        # fullmatch: a regexp that only matches a prefix must not pass.
        return re.fullmatch(self.regexp, value) is not None

    def __str__(self) -> str:
        return self.exact if self.exact is not None else f"~/{self.regexp}/"


@dataclass(frozen=True, slots=True)
class IdentityMatcher:
    """One trusted (issuer, subject) pair, and the Fulcio extensions it requires (all of them)."""

    issuer: _Match
    subject: _Match
    extensions: tuple[tuple[str, _Match], ...] = ()  # (extension name, required value)

    @classmethod
    def exact(cls, *, subject: str, issuer: str) -> IdentityMatcher:
        return cls(_Match(exact=issuer), _Match(exact=subject))

    @classmethod
    def regexp(cls, *, subject: str, issuer: str) -> IdentityMatcher:
        return cls(_Match(regexp=issuer), _Match(regexp=subject))

    @classmethod
    def from_spec(cls, spec: IdentitySpec) -> IdentityMatcher:
        exts = [(extension_name(k), _Match(exact=v)) for k, v in spec.extensions.items()]
        exts += [(extension_name(k), _Match(regexp=v)) for k, v in spec.extensions_regexp.items()]
        return cls(
            _Match(exact=spec.issuer, regexp=spec.issuer_regexp),
            _Match(exact=spec.subject, regexp=spec.subject_regexp),
            tuple(sorted(exts, key=lambda e: e[0])),
        )

    def matches(self, sans: Iterable[str], issuer: str | None, extensions: Mapping[str, str] | None = None) -> bool:
        if issuer is None or not self.issuer.matches(issuer):
            return False
        if not any(self.subject.matches(san) for san in sans):
            return False
        # Every required extension must be present with a matching value; a certificate whose
        # extensions were not read never satisfies a matcher that requires some.
        if self.extensions and extensions is None:
            return False
        return all(want.matches((extensions or {}).get(name, "")) for name, want in self.extensions)

    def __str__(self) -> str:
        exts = "".join(f" {name} {want}" for name, want in self.extensions)
        return f"subject {self.subject} issuer {self.issuer}{exts}"


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """What a Fulcio certificate says about its holder."""

    sans: tuple[str, ...]
    issuer: str | None
    extensions: Mapping[str, str] = field(default_factory=dict)  # FULCIO_EXTENSIONS name -> value

    @property
    def primary(self) -> str:
        return self.sans[0] if self.sans else ""


def cert_identity(cert: x509.Certificate) -> CertIdentity:
    """SANs (email, URI, Fulcio otherName) and the OIDC issuer of a certificate."""
    sans: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        sans.extend(san.get_values_for_type(x509.RFC822Name))
        sans.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id == _FULCIO_OTHERNAME:
                try:
                    sans.append(asn1.decode_der(str, other.value))
                except Exception:  # noqa: S112 - a malformed otherName is simply not an identity
                    continue
    return CertIdentity(tuple(sans), cert_issuer(cert), cert_extensions(cert))


def cert_extensions(cert: x509.Certificate) -> dict[str, str]:
    """The Fulcio extensions of FULCIO_EXTENSIONS, read as cosign reads them: the raw extension
    bytes as a string (undecodable bytes are replaced, so they match no sane pattern)."""
    by_oid = {oid: name for name, oid in FULCIO_EXTENSIONS.items()}
    out: dict[str, str] = {}
    for ext in cert.extensions:
        name = by_oid.get(ext.oid.dotted_string)
        raw = getattr(ext.value, "value", None)
        if name is not None and isinstance(raw, bytes):
            out[name] = raw.decode("utf-8", errors="replace")
    return out


def cert_issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer: the v2 extension (DER UTF8String) first, then the v1 raw-bytes form."""
    for oid in (OIDC_ISSUER_V2, OIDC_ISSUER_V1):
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = getattr(ext, "value", None)
        if not isinstance(raw, bytes):
            continue
        try:
            if oid == OIDC_ISSUER_V2:
                return asn1.decode_der(str, raw)
            return raw.decode("utf-8")
        except Exception:  # noqa: S112 - malformed extension: try the other form
            continue
    return None


def match_identities(cert: x509.Certificate, identities: Sequence[IdentityMatcher]) -> tuple[bool, str]:
    """(matched, reason) for a certificate against any of the trusted identities."""
    ident = cert_identity(cert)
    if not ident.sans:
        return False, "certificate has no subject alternative name"
    if ident.issuer is None:
        return False, "certificate has no OIDC issuer extension (1.3.6.1.4.1.57264.1.8 / .1.1)"
    for matcher in identities:
        if matcher.matches(ident.sans, ident.issuer, ident.extensions):
            return True, f"identity {ident.primary} (issuer {ident.issuer}) matches {matcher}"
    wanted = sorted({name for m in identities for name, _ in m.extensions})
    seen = "".join(f", {n} {ident.extensions.get(n, '(absent)')!r}" for n in wanted)
    return False, (
        f"identity {', '.join(ident.sans)} (issuer {ident.issuer}{seen}) matches none of the trusted "
        f"identities: {'; '.join(str(m) for m in identities)}"
    )


class IdentityPolicy:
    """A sigstore-python ``VerificationPolicy``: any of the identities must match."""

    def __init__(self, identities: Sequence[IdentityMatcher]) -> None:
        if not identities:
            # Like sigstore-python's AllOf: an empty policy is refused as likely misuse.
            raise ValueError("at least one identity is required")
        self._identities = tuple(identities)

    def verify(self, cert: x509.Certificate) -> None:
        ok, reason = match_identities(cert, self._identities)
        if not ok:
            raise VerificationError(reason)
