"""A verifier that needs no signature: sigstore policy-controller's ``static: {action: pass|fail}``."""

from __future__ import annotations

from datetime import datetime

from scanner.models import (
    Check,
    CheckName,
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
)
from scanner.verify.base import Verifier, Wants, identity_of


class StaticVerifier(Verifier):
    kind = "static"

    def __init__(self, action: str, *, source: str) -> None:
        if action not in ("pass", "fail"):
            raise ValueError(f"static action must be pass or fail, not {action!r}")
        self._action = action
        self._source = source

    @property
    def name(self) -> str:
        return f"static {self._action} ({self._source})"

    @property
    def wants(self) -> Wants:
        return Wants()

    @property
    def trust_fingerprint(self) -> str:
        return f"static:{self._action}"

    def decision_identity(self, image: RunningImage) -> str | None:
        """The action and where it came from (the result names it); nothing else is read."""
        return identity_of(self.kind, {"action": self._action, "source": self._source})

    def verify(self, image: RunningImage, material: SignatureMaterial, now: datetime) -> tuple[SignatureResult, ...]:
        passed = self._action == "pass"
        reason = f"{self._source}: static authority says {self._action}"
        return (
            SignatureResult(
                kind=self.kind,
                verifier=self.name,
                outcome=Outcome.PASSED if passed else Outcome.FAILED,
                reason=reason,
                failure=SignatureFailure.NONE if passed else SignatureFailure.INVALID,
                checks=(Check(CheckName.AUTHENTICITY, Outcome.PASSED if passed else Outcome.FAILED, reason),),
            ),
        )
