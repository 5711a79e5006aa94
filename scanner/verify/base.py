"""The verifier protocol. Verifiers are pure: bytes + trust material + a clock in, results out.

A verifier is built once per scan from a policy rule's verifier entry (files and keys are loaded
at the edge, in ``scanner.policy.loader``) and then called once per running digest with the
material ``scanner.signatures`` fetched for that digest. It returns one ``SignatureResult`` per
signature it examined (an empty tuple means: nothing of its kind was attached).

Anything a verifier needs from the network while verifying (CRLs, OCSP) comes through an
injected fetcher interface, never through a direct HTTP call.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import rfc8785

from scanner import __version__
from scanner.models import RunningImage, SignatureMaterial, SignatureResult

# Bump when what a verifier decides from the same inputs changes (a check added, a rule tightened):
# every cached verdict judged by the older logic then misses. The released version is hashed too.
IDENTITY_VERSION = 2  # 2: attestations bind the repository; required predicates re-checked after revocations
IDENTITY_PREFIX = f"di{IDENTITY_VERSION}:"


@dataclass(frozen=True, slots=True)
class Wants:
    """Which signature material a verifier needs the discovery stage to fetch."""

    cosign_sig: bool = False  # the legacy ``sha256-<hex>.sig`` tag
    referrer_types: frozenset[str] = field(default_factory=frozenset)  # artifactType prefixes

    def __or__(self, other: Wants) -> Wants:
        return Wants(self.cosign_sig or other.cosign_sig, self.referrer_types | other.referrer_types)


def identity_of(kind: str, parts: Mapping[str, Any]) -> str:
    """The decision identity a verifier declares: ``di<N>:`` + sha256 over the RFC 8785 canonical
    JSON of ``parts`` (plain JSON values; trust material as the sha256 of its bytes), the verifier
    kind, :data:`IDENTITY_VERSION` and sigaudit's version."""
    doc: dict[str, Any] = {"identity_version": IDENTITY_VERSION, "sigaudit": __version__, "kind": kind,
                           "parts": dict(parts)}
    # Every image of a scan asks, mostly with the same parts (a cosign key names no repository), and
    # RFC 8785 in pure Python costs ~0.2 ms a call: memoized on the pickle of ``doc``, which is the
    # value itself (unpickling gives it back: equal keys are equal values, and a tuple, a float or an
    # int key where a list, an int or a str was is another key). Only successes are kept.
    try:
        memo_key = pickle.dumps(doc, protocol=5)
    except Exception:  # not plain data: rfc8785 decides (and raises)
        memo_key = None
    if memo_key is not None and (known := _IDENTITIES.get(memo_key)) is not None:
        return known
    identity = IDENTITY_PREFIX + hashlib.sha256(rfc8785.dumps(doc)).hexdigest()
    if memo_key is not None:
        if len(_IDENTITIES) >= _IDENTITIES_MAX:
            _IDENTITIES.clear()
        _IDENTITIES[memo_key] = identity
    return identity


_IDENTITIES: dict[bytes, str] = {}
_IDENTITIES_MAX = 4096


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@runtime_checkable
class Verifier(Protocol):
    """What the pipeline needs from a verifier. Implementations subclass it explicitly, so that the
    optional capabilities below come with their defaults (and mypy names a missing required one)."""

    @property
    def name(self) -> str:
        """Human name, e.g. ``cosign key sha256:ab12…`` or ``notation policy 'wabbit'``."""
        ...

    @property
    def wants(self) -> Wants: ...

    @property
    def trust_fingerprint(self) -> str:
        """A stable hash of the verifier's configuration, hashed into the policy digest shown with
        each scan. It is not a cache key: see :meth:`decision_identity`."""
        ...

    def decision_identity(self, image: RunningImage) -> str | None:
        """Everything :meth:`verify` reads for ``image`` besides the image digest, the signature
        material and the clock, as :func:`identity_of` — or None when results for this image
        must not be reused across scans (a source outside the digest-checked material, trust that
        cannot be established now).

        Contract: two calls that return the same identity for images of the same digest, given the
        same material and clock, return equal results. So the identity names the repository where
        the verdict depends on it (notation: registryScopes choose the statement), the content of
        every piece of trust material (key bytes, Rekor/CT/TSA keys, trusted-root bytes, trust-store
        certificates), identities, annotations, predicate types, verification levels, revocation
        settings, and the verifier's name (results carry it; n-of-m counts by it). The verification
        cache is keyed by ``(digest, identity)`` and by nothing assembled elsewhere.
        """
        ...

    @property
    def not_found_reason(self) -> str | None:
        """Optional: the verifier's own words for "nothing of my kind is attached to this image" (an
        attestation verifier: "image is not attested by X"), used in an ``unsigned`` verdict's reasons.
        None (the default): the engine says "no signature found for the verifiers of rule …"."""
        return None

    def results_cacheable(self, results: tuple[SignatureResult, ...]) -> bool:
        """Optional: whether these results (for an image with a non-None identity) may be reused
        across scans. False when something outside the identity went into them (a CRL or OCSP
        answer, trust the identity does not pin). Results with an ERROR are never reused, whatever
        this says."""
        return True

    def verify(
        self, image: RunningImage, material: SignatureMaterial, now: datetime
    ) -> tuple[SignatureResult, ...]: ...


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A complete HTTP answer: its status and its whole body (bounded by the caller's ``max_bytes``)."""

    status: int
    body: bytes


class HttpGetError(Exception):
    """An HTTP GET that gave no complete answer: unreachable or refused (the message names the error
    type), past its wall-clock deadline (``late``) or larger than allowed (``too_large``)."""

    def __init__(self, message: str, *, late: bool = False, too_large: bool = False) -> None:
        super().__init__(message)
        self.late, self.too_large = late, too_large


class HttpGet(Protocol):
    """How a verifier reads trust material over HTTP (Grafeas occurrences): the
    edge (``scanner/sources/http.py``) implements it, as python-tuf's ``FetcherInterface``. It bounds
    the body to ``max_bytes`` and the whole exchange (status line and headers included) to ``until``
    (a ``time.monotonic()`` value), and raises :class:`HttpGetError` for every failure."""

    def __call__(
        self, url: str, *, headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
        max_bytes: int, until: float,
    ) -> HttpAnswer: ...


class Fetcher(Protocol):
    """The one way a verifier may reach the network (CRL, OCSP). Implementations bound size and time."""

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes: ...

    def post(self, url: str, body: bytes, *, content_type: str, max_bytes: int, timeout: float) -> bytes: ...
