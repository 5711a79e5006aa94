"""The ``cosign`` verifier kind: a key (PEM, file, https URL, KMS URI) or keyless identities, with
Sigstore trust (Rekor, CT log, trusted root, TSA) as cosign and Kyverno take them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from scanner.errors import ConfigError
from scanner.verify.base import Verifier
from scanner.verify.kinds.base import Kind, StrictSpec, Trust, not_blank

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


class Identity(StrictSpec):
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




class PubKeyRef(StrictSpec):
    pubkey: str  # PEM, file path or https URL

    _pubkey_given = field_validator("pubkey")(not_blank)


class CtlogConfig(StrictSpec):
    pubkey: str | None = None
    ignore_sct: bool = Field(default=False, alias="ignoreSCT")

    _pubkey_given = field_validator("pubkey")(not_blank)


class Keyless(StrictSpec):
    identities: list[Identity] = Field(min_length=1)
    trusted_root: str | None = Field(default=None, alias="trustedRoot")  # trusted_root.json path
    roots: str | None = None  # Kyverno-style PEM roots (Fulcio chain)
    rekor: PubKeyRef | None = None
    ctlog: CtlogConfig | None = None

    _material_given = field_validator("trusted_root", "roots")(not_blank)


class AttestationConditionsSpec(StrictSpec):
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


class CosignVerifierSpec(StrictSpec):
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

    _material_given = field_validator("key", "rekor_pubkey", "trusted_root")(not_blank)

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


def build(spec: CosignVerifierSpec, trust: Trust) -> Verifier:
    if spec.keyless is not None:
        from scanner.verify.cosign_keyless import CosignKeylessVerifier

        return CosignKeylessVerifier.from_spec(spec, base_dir=trust.base_dir)
    assert spec.key is not None
    from scanner.verify.conditions import requirements_from
    from scanner.verify.cosign import CosignKeyVerifier

    try:
        key, label = trust.load_key(spec.key, trust.base_dir, f"{trust.where}.cosign.key")
    except ConfigError as exc:
        from scanner.verify.kms import KmsKeyUnavailable, UnavailableKeyVerifier

        if not isinstance(exc, KmsKeyUnavailable):
            raise
        # A KMS outage makes the images this key judges `error`; it does not abort the scan.
        return UnavailableKeyVerifier(exc.ref, exc.message, kind="cosign", rule=trust.rule)
    tlog_check, bundle_check, sigstore_trust = _sigstore_hooks(spec, trust.base_dir)
    return CosignKeyVerifier(
        key,
        key_label=label,
        ignore_tlog=spec.ignore_tlog,
        annotations=spec.annotations,
        require_predicate_types=spec.require_predicate_types,
        tlog_check=tlog_check,
        bundle_check=bundle_check,
        sigstore_trust=sigstore_trust,
        attestations=requirements_from(spec.attestation_entries()),
    )


def _sigstore_hooks(spec: CosignVerifierSpec, base_dir: Path) -> tuple[Any, Any, Any]:
    """Rekor SET checking and key-signed bundle checking, from scanner.verify.rekor / sigstore_bundle,
    and what they trust (for the verifier's decision identity)."""
    try:
        from scanner.verify import sigstore_hooks
    except ImportError:
        return None, None, None
    return sigstore_hooks.for_key_verifier(spec, base_dir)


KIND = Kind("cosign", CosignVerifierSpec, build)
