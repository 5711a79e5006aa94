"""The ``attestation`` verifier kind: kritis/Binary Authorization attestations by an attestor's keys,
from the registry or a Grafeas project (the verifier itself is ``scanner/verify/attestation.py``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from scanner.verify.base import Verifier
from scanner.verify.kinds.base import Kind, StrictSpec, Trust


class AttestationVerifierSpec(StrictSpec):
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


def build(spec: AttestationVerifierSpec, trust: Trust) -> Verifier:
    from scanner.verify.attestation import AttestationVerifier

    return AttestationVerifier.from_spec(spec, base_dir=trust.base_dir, loader=trust)


KIND = Kind("attestation", AttestationVerifierSpec, build)
