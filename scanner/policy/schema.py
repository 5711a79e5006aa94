"""The AuditPolicy file format (``apiVersion: sigaudit.io/v1alpha1``, ``kind: AuditPolicy``).

Pydantic lives here, at the edge: the loader turns a file into these models (unknown fields are
errors), then builds plain verifiers and rules from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, create_model, field_validator, model_validator

from scanner.verify.kinds import KINDS
from scanner.verify.kinds.attestation import AttestationVerifierSpec as AttestationVerifierSpec
from scanner.verify.kinds.base import Kind, StrictSpec
from scanner.verify.kinds.cosign import COSIGN_EXTENSIONS as COSIGN_EXTENSIONS
from scanner.verify.kinds.cosign import FULCIO_EXTENSIONS as FULCIO_EXTENSIONS
from scanner.verify.kinds.cosign import AttestationConditionsSpec as AttestationConditionsSpec
from scanner.verify.kinds.cosign import CosignVerifierSpec as CosignVerifierSpec
from scanner.verify.kinds.cosign import Identity as Identity
from scanner.verify.kinds.cosign import extension_name as extension_name
from scanner.verify.kinds.notation import NotationVerifierSpec as NotationVerifierSpec

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


# The base of every policy model, and the verifier kinds' specs (re-exported: importers and the
# loader name them from here). Each kind's Spec lives with the kind, in scanner/verify/kinds/.
_Strict = StrictSpec


class VerifierEntry(_Strict):
    """One verifier entry of a rule: exactly one key, naming a kind of the table in
    ``scanner/verify/kinds/`` (cosign, notation, attestation, ...), whose Spec validates its value.
    The concrete model, :data:`VerifierSpec`, is assembled from the table by :func:`verifier_entry_model`."""

    _kinds: ClassVar[Mapping[str, Kind[Any]]] = {}

    def __init__(self, **entry: Any) -> None:
        # The fields are the table's kinds (``VerifierSpec(cosign=spec)``), unknown to a type checker.
        super().__init__(**entry)

    @model_validator(mode="after")
    def _exactly_one(self) -> VerifierEntry:
        if len([v for _, v in self if v is not None]) != 1:
            raise ValueError(f"each verifier entry names exactly one of: {', '.join(self._kinds)}")
        return self

    def entry(self) -> tuple[Kind[Any], StrictSpec]:
        """The kind this entry names and its spec."""
        (name, spec), = [(n, v) for n, v in self if v is not None]
        return self._kinds[name], spec


def verifier_entry_model(kinds: Sequence[Kind[Any]]) -> type[VerifierEntry]:
    """The verifier entry model for ``kinds``: one optional field per kind, named as the kind."""
    names = [k.name for k in kinds]
    if len(set(names)) != len(names):
        raise ValueError(f"a verifier kind is registered twice: {names}")
    fields: dict[str, Any] = {k.name: (k.spec | None, None) for k in kinds}
    model: type[VerifierEntry] = create_model("VerifierSpec", __base__=VerifierEntry, **fields)
    model._kinds = MappingProxyType({k.name: k for k in kinds})
    return model


if TYPE_CHECKING:
    VerifierSpec = VerifierEntry
else:
    VerifierSpec = verifier_entry_model(KINDS)


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
