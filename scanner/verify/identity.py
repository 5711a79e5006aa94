"""Keyless identities: which Fulcio certificate subjects (SAN) and OIDC issuers a policy trusts.

Semantics of cosign's ``--certificate-identity[-regexp]`` and ``--certificate-oidc-issuer[-regexp]``,
with one deliberate difference: a regular expression must match the **whole** value (as the
policy schema says). cosign calls Go's unanchored ``regexp.MatchString``, so there ``philipp``
accepts ``philipp.belitz@example.com`` and ``https://github.com/org`` accepts
``https://github.com/org-evil/...``; here a regexp that matches only a prefix or a substring does
not pass (write ``philipp.*``).

A matcher may also require Fulcio certificate extensions (``extensions`` / ``extensionsRegExp``:
source repository, ref, digest, owner, build signer, trigger, run invocation, ... and cosign's
legacy GitHub workflow ones); each value is read through sigstore-python's policy class for its OID,
and a certificate that lacks a required extension matches nothing.

The issuer is read from the Fulcio extensions (https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md):
1.3.6.1.4.1.57264.1.8 (DER UTF8String, current) and, when that is absent, 1.3.6.1.4.1.57264.1.1
(raw bytes, deprecated).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.x509 import ObjectIdentifier
from sigstore.errors import VerificationError
from sigstore.verify import policy as sigstore_policy

from scanner.verify.kinds.cosign import COSIGN_EXTENSIONS, FULCIO_EXTENSIONS, extension_name
from scanner.verify.kinds.cosign import Identity as IdentitySpec

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
        # An absent extension fails every requirement, even ``.*`` or an empty exact value.
        if self.extensions and extensions is None:
            return False
        have = extensions or {}
        return all(name in have and want.matches(have[name]) for name, want in self.extensions)

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


# The reference library's policy class for each extension: it knows the OID and how the value is
# encoded (raw bytes for cosign's legacy 1.1-1.6, a DER UTF8String for 1.8-1.22).
EXTENSION_POLICIES: Mapping[str, Any] = {
    "oidcIssuer": sigstore_policy.OIDCIssuer,
    "githubWorkflowTrigger": sigstore_policy.GitHubWorkflowTrigger,
    "githubWorkflowSha": sigstore_policy.GitHubWorkflowSHA,
    "githubWorkflowName": sigstore_policy.GitHubWorkflowName,
    "githubWorkflowRepository": sigstore_policy.GitHubWorkflowRepository,
    "githubWorkflowRef": sigstore_policy.GitHubWorkflowRef,
    "oidcIssuerV2": sigstore_policy.OIDCIssuerV2,
    "buildSignerURI": sigstore_policy.OIDCBuildSignerURI,
    "buildSignerDigest": sigstore_policy.OIDCBuildSignerDigest,
    "runnerEnvironment": sigstore_policy.OIDCRunnerEnvironment,
    "sourceRepositoryURI": sigstore_policy.OIDCSourceRepositoryURI,
    "sourceRepositoryDigest": sigstore_policy.OIDCSourceRepositoryDigest,
    "sourceRepositoryRef": sigstore_policy.OIDCSourceRepositoryRef,
    "sourceRepositoryIdentifier": sigstore_policy.OIDCSourceRepositoryIdentifier,
    "sourceRepositoryOwnerURI": sigstore_policy.OIDCSourceRepositoryOwnerURI,
    "sourceRepositoryOwnerIdentifier": sigstore_policy.OIDCSourceRepositoryOwnerIdentifier,
    "buildConfigURI": sigstore_policy.OIDCBuildConfigURI,
    "buildConfigDigest": sigstore_policy.OIDCBuildConfigDigest,
    "buildTrigger": sigstore_policy.OIDCBuildTrigger,
    "runInvocationURI": sigstore_policy.OIDCRunInvocationURI,
    "sourceRepositoryVisibilityAtSigning": sigstore_policy.OIDCSourceRepositoryVisibility,
}
_DER_ENCODED = frozenset(FULCIO_EXTENSIONS.keys() - COSIGN_EXTENSIONS.keys())


def extension_value(cert: x509.Certificate, name: str) -> str | None:
    """The value of Fulcio extension ``name``, or None when the certificate lacks it or it is
    malformed. The value read is confirmed by sigstore-python's policy class for the extension (the
    reference decision): should this reading and the library's ever disagree, nothing matches."""
    cls = EXTENSION_POLICIES[name]
    try:
        raw = getattr(cert.extensions.get_extension_for_oid(cls.oid).value, "value", None)
        if not isinstance(raw, bytes):
            return None
        value = asn1.decode_der(str, raw) if name in _DER_ENCODED else raw.decode("utf-8")
        cls(value).verify(cert)
    except Exception:  # absent, duplicated, undecodable, or the library disagrees: no value
        return None
    return str(value)


def cert_extensions(cert: x509.Certificate) -> dict[str, str]:
    """The Fulcio extensions of FULCIO_EXTENSIONS the certificate carries (well formed), by name."""
    out: dict[str, str] = {}
    for name in FULCIO_EXTENSIONS:
        value = extension_value(cert, name)
        if value is not None:
            out[name] = value
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
