"""The AuditPolicy file format (``apiVersion: sigaudit.io/v1alpha1``, ``kind: AuditPolicy``).

Pydantic lives here, at the edge: the loader turns a file into these models (unknown fields are
errors), then builds plain verifiers and rules from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

if TYPE_CHECKING:
    from scanner.models import ImageReference

# Whether an exemption covers an image: (its normalised reference, or None when it cannot be parsed;
# the image as written) -> bool.
ImageMatcher = Callable[["ImageReference | None", str], bool]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """Go-style durations as Kubernetes users write them: ``720h``, ``30d``, ``1h30m``."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r} (use e.g. 720h, 30d, 1h30m)")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# Fulcio's certificate extensions that a keyless identity may require
# (https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md): name -> OID. The first six are
# cosign's CertExtensionMap (--certificate-github-workflow-*, Kyverno's additionalExtensions), whose
# values are the raw extension bytes; the others (1.8-1.22) hold a DER UTF8String. Each is read and
# checked through sigstore-python's policy class for its OID (scanner/verify/identity.py). A
# certificate without a required extension never matches, whatever the pattern.
COSIGN_EXTENSIONS = {
    "oidcIssuer": "1.3.6.1.4.1.57264.1.1",
    "githubWorkflowTrigger": "1.3.6.1.4.1.57264.1.2",
    "githubWorkflowSha": "1.3.6.1.4.1.57264.1.3",
    "githubWorkflowName": "1.3.6.1.4.1.57264.1.4",
    "githubWorkflowRepository": "1.3.6.1.4.1.57264.1.5",
    "githubWorkflowRef": "1.3.6.1.4.1.57264.1.6",
}
FULCIO_EXTENSIONS = {
    **COSIGN_EXTENSIONS,
    "oidcIssuerV2": "1.3.6.1.4.1.57264.1.8",
    "buildSignerURI": "1.3.6.1.4.1.57264.1.9",
    "buildSignerDigest": "1.3.6.1.4.1.57264.1.10",
    "runnerEnvironment": "1.3.6.1.4.1.57264.1.11",
    "sourceRepositoryURI": "1.3.6.1.4.1.57264.1.12",
    "sourceRepositoryDigest": "1.3.6.1.4.1.57264.1.13",
    "sourceRepositoryRef": "1.3.6.1.4.1.57264.1.14",
    "sourceRepositoryIdentifier": "1.3.6.1.4.1.57264.1.15",
    "sourceRepositoryOwnerURI": "1.3.6.1.4.1.57264.1.16",
    "sourceRepositoryOwnerIdentifier": "1.3.6.1.4.1.57264.1.17",
    "buildConfigURI": "1.3.6.1.4.1.57264.1.18",
    "buildConfigDigest": "1.3.6.1.4.1.57264.1.19",
    "buildTrigger": "1.3.6.1.4.1.57264.1.20",
    "runInvocationURI": "1.3.6.1.4.1.57264.1.21",
    "sourceRepositoryVisibilityAtSigning": "1.3.6.1.4.1.57264.1.22",
}


def extension_name(key: str, known: Mapping[str, str] = FULCIO_EXTENSIONS) -> str:
    """The extension's name for a name or its dotted OID among ``known``; ValueError for anything else."""
    if key in known:
        return key
    for name, oid in known.items():
        if key == oid:
            return name
    raise ValueError(f"unknown certificate extension {key!r} (known: {', '.join(known)}, or their OIDs)")


class Identity(_Strict):
    """A keyless identity, with the semantics of cosign's --certificate-identity[-regexp] and
    --certificate-oidc-issuer[-regexp]: exact strings, or regular expressions that must match the
    whole value. ``extensions`` / ``extensionsRegExp`` require Fulcio certificate extensions too
    (cosign's --certificate-github-workflow-*; Kyverno's keyless ``additionalExtensions``)."""

    issuer: str | None = None
    issuer_regexp: str | None = Field(default=None, alias="issuerRegExp")
    subject: str | None = None
    subject_regexp: str | None = Field(default=None, alias="subjectRegExp")
    extensions: dict[str, str] = Field(default_factory=dict)
    extensions_regexp: dict[str, str] = Field(default_factory=dict, alias="extensionsRegExp")

    @model_validator(mode="after")
    def _one_of_each(self) -> Identity:
        if (self.issuer is None) == (self.issuer_regexp is None):
            raise ValueError("give exactly one of issuer / issuerRegExp")
        if (self.subject is None) == (self.subject_regexp is None):
            raise ValueError("give exactly one of subject / subjectRegExp")
        names = [extension_name(k) for k in (*self.extensions, *self.extensions_regexp)]
        if len(set(names)) != len(names):
            raise ValueError("an extension is named twice (in extensions and extensionsRegExp, or by name and OID)")
        for pattern in (self.issuer_regexp, self.subject_regexp, *self.extensions_regexp.values()):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
        return self


def _not_blank(value: str | None) -> str | None:
    # An empty trust-material field would read as "not given" and fall back to another root.
    if value is not None and not value.strip():
        raise ValueError("must not be empty (leave the field out instead)")
    return value


class PubKeyRef(_Strict):
    pubkey: str  # PEM, file path or https URL

    _pubkey_given = field_validator("pubkey")(_not_blank)


class CtlogConfig(_Strict):
    pubkey: str | None = None
    ignore_sct: bool = Field(default=False, alias="ignoreSCT")

    _pubkey_given = field_validator("pubkey")(_not_blank)


class Keyless(_Strict):
    identities: list[Identity] = Field(min_length=1)
    trusted_root: str | None = Field(default=None, alias="trustedRoot")  # trusted_root.json path
    roots: str | None = None  # Kyverno-style PEM roots (Fulcio chain)
    rekor: PubKeyRef | None = None
    ctlog: CtlogConfig | None = None

    _material_given = field_validator("trusted_root", "roots")(_not_blank)


class AttestationConditionsSpec(_Strict):
    """A verified attestation of ``predicateType`` whose in-toto statement satisfies every CEL
    condition (scanner/verify/conditions.py). Compiled here, so a bad expression stops the load."""

    predicate_type: str = Field(alias="predicateType", min_length=1)
    conditions: list[str] = Field(default_factory=list)

    @field_validator("conditions")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        from scanner.verify.conditions import ConditionError, compile_condition

        try:
            for source in v:
                compile_condition(source)
        except ConditionError as exc:
            raise ValueError(str(exc)) from exc
        return v


class CosignVerifierSpec(_Strict):
    key: str | None = None  # PEM, file path, https URL, or a KMS URI (awskms://, hashivault://, ...)
    keyless: Keyless | None = None
    ignore_tlog: bool = Field(default=False, alias="ignoreTlog")
    ignore_sct: bool = Field(default=False, alias="ignoreSCT")
    rekor_pubkey: str | None = Field(default=None, alias="rekorPubKey")  # for key-based + tlog
    trusted_root: str | None = Field(default=None, alias="trustedRoot")
    require_predicate_types: list[str] = Field(default_factory=list, alias="requirePredicateTypes")
    # Conditions on what verified attestations say (CEL over the in-toto statement).
    attestations: list[AttestationConditionsSpec] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)  # cosign -a k=v

    _material_given = field_validator("key", "rekor_pubkey", "trusted_root")(_not_blank)

    @model_validator(mode="after")
    def _attestation_entries(self) -> CosignVerifierSpec:
        from scanner.verify.conditions import ConditionError, compile_requirements

        try:
            compile_requirements(self.attestation_entries())
        except ConditionError as exc:
            raise ValueError(f"attestations: {exc}") from exc
        return self

    def attestation_entries(self) -> list[tuple[str, list[str]]]:
        return [(a.predicate_type, list(a.conditions)) for a in self.attestations]

    @model_validator(mode="after")
    def _key_or_keyless(self) -> CosignVerifierSpec:
        if (self.key is None) == (self.keyless is None):
            raise ValueError("a cosign verifier needs exactly one of key / keyless")
        return self

    @model_validator(mode="after")
    def _trust_material_named_once(self) -> CosignVerifierSpec:
        """Each piece of Sigstore trust is given in one place, so none is silently passed over.
        The trust root is ``trustedRoot`` (here or in ``keyless``), or Kyverno-style ``keyless.roots``
        (the Fulcio CAs, with ``keyless.rekor`` / ``keyless.ctlog``), or the public-good root; a
        Rekor key (``rekorPubKey`` or ``keyless.rekor.pubkey``) and a CT key (``keyless.ctlog.pubkey``)
        replace the logs of whichever root that is."""
        kl = self.keyless
        if kl is None:
            return self
        if kl.trusted_root is not None and self.trusted_root is not None:
            raise ValueError("trustedRoot is given twice (keyless.trustedRoot and trustedRoot): give it once")
        if kl.roots is not None and (kl.trusted_root or self.trusted_root) is not None:
            raise ValueError("keyless.roots and trustedRoot both name the Fulcio CAs: give one of them")
        if kl.rekor is not None and self.rekor_pubkey is not None:
            raise ValueError("the Rekor key is given twice (keyless.rekor.pubkey and rekorPubKey): give it once")
        return self


class NotationVerifierSpec(_Strict):
    trust_policy: str = Field(alias="trustPolicy")  # trustpolicy.json (notation's own format)
    trust_store: str = Field(alias="trustStore")  # directory: x509/{ca,signingAuthority,tsa}/<name>/


class AttestationVerifierSpec(_Strict):
    attestor: str
    public_keys: list[str] = Field(alias="publicKeys", min_length=1)
    source: str = "registry"  # "registry" or a Grafeas URL (grafeas+http://host:port/v1beta1/projects/p)
    # Only occurrences of this Grafeas note count (projects/P/notes/N); kritis' noteReference.
    note_name: str | None = Field(default=None, alias="noteName")
    # Extra publicKeyId hints naming these keys (the ni:///sha-256 id and KMS names are implied).
    public_key_ids: list[str] = Field(default_factory=list, alias="publicKeyIds")

    @model_validator(mode="after")
    def _note_needs_grafeas(self) -> AttestationVerifierSpec:
        if self.note_name and self.source == "registry":
            # Registry attestations carry no note: the field could not be enforced.
            raise ValueError("noteName applies to a Grafeas source only: attestations in the registry carry no note")
        return self


class VerifierSpec(_Strict):
    cosign: CosignVerifierSpec | None = None
    notation: NotationVerifierSpec | None = None
    attestation: AttestationVerifierSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VerifierSpec:
        given = [n for n in ("cosign", "notation", "attestation") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("each verifier entry names exactly one of: cosign, notation, attestation")
        return self


def _check_globs(values: list[str]) -> list[str]:
    for glob in values:
        if not glob or glob.strip() != glob:
            raise ValueError(f"bad glob {glob!r}: empty or surrounded by spaces")
        if "[" in glob or "]" in glob:
            # Character classes are not part of the format; refusing them avoids silent surprises.
            raise ValueError(f"bad glob {glob!r}: only * and ? are supported")
    return values


class VerifierSet(_Strict):
    """One requirement of a rule with ``verifierSets``: ``count`` of these verifiers must each pass.
    Every set of a rule must be satisfied (Kyverno's ``attestors: [{count, entries}, ...]``)."""

    count: int = Field(default=1, ge=1)
    verifiers: list[VerifierSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _count_fits(self) -> VerifierSet:
        if self.count > len(self.verifiers):
            raise ValueError(f"count {self.count} exceeds the {len(self.verifiers)} verifiers listed")
        return self


class Rule(_Strict):
    name: str = Field(min_length=1)
    images: list[str] = Field(min_length=1)
    namespaces: list[str] = Field(default_factory=lambda: ["*"])
    verifiers: list[VerifierSpec] = Field(default_factory=list)
    # How many of the listed verifiers must each find a valid signature (n-of-m, as connaisseur's
    # threshold); 1 = any one is enough. Default 1.
    count: int | None = Field(default=None, ge=1)
    # Instead of verifiers/count: several sets, each with its own count, all required
    # ("(A or B) and C" = [{count: 1, verifiers: [A, B]}, {verifiers: [C]}]).
    verifier_sets: list[VerifierSet] = Field(default_factory=list, alias="verifierSets")
    mode: Literal["enforce", "warn"] = "enforce"

    _globs = field_validator("images", "namespaces")(_check_globs)

    @model_validator(mode="after")
    def _count_fits(self) -> Rule:
        if bool(self.verifiers) == bool(self.verifier_sets):
            raise ValueError("a rule needs exactly one of verifiers (with an optional count) / verifierSets")
        if self.verifier_sets and self.count is not None:
            raise ValueError("count belongs inside each of verifierSets, not beside them")
        if self.count is not None and self.count > len(self.verifiers):
            raise ValueError(f"count {self.count} exceeds the {len(self.verifiers)} verifiers listed")
        return self


class Exemption(_Strict):
    images: list[str] = Field(min_length=1)
    namespaces: list[str] = Field(default_factory=lambda: ["*"])
    reason: str = Field(min_length=1)
    until: datetime
    approved_by: str | None = Field(default=None, alias="approvedBy")
    # An importer whose upstream matches images otherwise than sigaudit's globs (kritis' allowlist
    # patterns) gives its matcher: it replaces the globs of ``images`` (kept for display). Never read
    # from a policy file.
    _matcher: ImageMatcher | None = PrivateAttr(default=None)

    _globs = field_validator("images", "namespaces")(_check_globs)

    @property
    def matcher(self) -> ImageMatcher | None:
        return self._matcher

    def matching_with(self, matcher: ImageMatcher) -> Exemption:
        """This exemption, covering the images ``matcher`` accepts instead of its ``images`` globs."""
        copy = self.model_copy()
        copy._matcher = matcher
        return copy

    @field_validator("until")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("until must carry a timezone, e.g. 2027-01-01T00:00:00Z")
        return v


class Revocation(_Strict):
    key_sha256: str | None = Field(default=None, alias="keySha256")
    identity: str | None = None  # x509 subject, certificate SAN, or signing-profile ARN
    revoked_at: datetime | None = Field(default=None, alias="revokedAt")
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one(self) -> Revocation:
        if (self.key_sha256 is None) == (self.identity is None):
            raise ValueError("a revocation names exactly one of keySha256 / identity")
        if self.key_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.key_sha256.lower()):
            raise ValueError("keySha256 must be 64 hex digits (sha256 of the SubjectPublicKeyInfo DER)")
        if self.revoked_at is not None and self.revoked_at.tzinfo is None:
            raise ValueError("revokedAt must carry a timezone")
        return self


class Spec(_Strict):
    expiry_warning: str = Field(default="720h", alias="expiryWarning")
    insecure_registries: list[str] = Field(default_factory=list, alias="insecureRegistries")
    max_signatures: int = Field(default=50, ge=1, le=10_000, alias="maxSignatures")
    # How the file's rules combine: first = the first matching rule applies (default); all = every rule
    # that matches an image must hold. Imported policies always combine as `all`, across sources too.
    match: Literal["first", "all"] = "first"
    rules: list[Rule] = Field(default_factory=list)
    exemptions: list[Exemption] = Field(default_factory=list)
    revocations: list[Revocation] = Field(default_factory=list)

    @field_validator("expiry_warning")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Spec:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        return self


class Metadata(_Strict):
    name: str = "default"
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class AuditPolicyDocument(_Strict):
    api_version: Literal["sigaudit.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["AuditPolicy"]
    metadata: Metadata = Field(default_factory=Metadata)
    spec: Spec
