"""The ``static`` verifier kind, the smallest example of the kind shape (policy-controller's
``static: {action: pass|fail}``): no signature is read. It is not in the table of policy-file kinds (a
policy that passes images without signatures is a choice for an importer to map, not a file field);
tests register it to show that a new kind is this module plus one line in ``KINDS``."""

from __future__ import annotations

from typing import Literal

from scanner.verify.base import Verifier
from scanner.verify.kinds.base import Kind, StrictSpec, Trust


class StaticVerifierSpec(StrictSpec):
    action: Literal["pass", "fail"]


def build(spec: StaticVerifierSpec, trust: Trust) -> Verifier:
    from scanner.verify.static import StaticVerifier

    return StaticVerifier(spec.action, source=f"rule {trust.rule}")


KIND = Kind("static", StaticVerifierSpec, build)
