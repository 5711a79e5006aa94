"""The verifier protocol. Verifiers are pure: bytes + trust material + a clock in, results out.

A verifier is built once per scan from a policy rule's verifier entry (files and keys are loaded
at the edge, in ``scanner.policy.loader``) and then called once per running digest with the
material ``scanner.signatures`` fetched for that digest. It returns one ``SignatureResult`` per
signature it examined (an empty tuple means: nothing of its kind was attached).

Anything a verifier needs from the network while verifying (CRLs, OCSP) comes through an
injected fetcher interface, never through a direct HTTP call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from scanner.models import RunningImage, SignatureMaterial, SignatureResult


@dataclass(frozen=True, slots=True)
class Wants:
    """Which signature material a verifier needs the discovery stage to fetch."""

    cosign_sig: bool = False  # the legacy ``sha256-<hex>.sig`` tag
    referrer_types: frozenset[str] = field(default_factory=frozenset)  # artifactType prefixes

    def __or__(self, other: Wants) -> Wants:
        return Wants(self.cosign_sig or other.cosign_sig, self.referrer_types | other.referrer_types)


@runtime_checkable
class Verifier(Protocol):
    @property
    def name(self) -> str:
        """Human name, e.g. ``cosign key sha256:ab12…`` or ``notation policy 'wabbit'``."""
        ...

    @property
    def wants(self) -> Wants: ...

    @property
    def trust_fingerprint(self) -> str:
        """A stable hash of the trust material and settings; keys caches of verdicts."""
        ...

    def verify(
        self, image: RunningImage, material: SignatureMaterial, now: datetime
    ) -> tuple[SignatureResult, ...]: ...


class Fetcher(Protocol):
    """The one way a verifier may reach the network (CRL, OCSP). Implementations bound size and time."""

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes: ...

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes: ...
