"""The verifier kinds a policy's verifier entry may name: ONE table (ARCHITECTURE.md, "How to add a
verifier kind"). The policy schema's verifier entry is assembled from it and the policy loader builds
every verifier through it; a new kind is one module here (its ``Spec`` and ``build``) and one line below.
"""

from __future__ import annotations

from typing import Any

from scanner.verify.kinds import attestation, cosign, notation
from scanner.verify.kinds.base import Kind

KINDS: tuple[Kind[Any], ...] = (
    cosign.KIND,
    notation.KIND,
    attestation.KIND,
)
