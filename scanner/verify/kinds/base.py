"""What every verifier kind is made of (ARCHITECTURE.md, "How to add a verifier kind").

A kind is a module of :mod:`scanner.verify.kinds` that exports ``KIND``: its name (the key of a policy's
verifier entry), its ``Spec`` (a strict pydantic model of that entry: unknown fields are errors) and
``build(spec, trust) -> Verifier``. The policy schema assembles its verifier entry from the table in
``scanner/verify/kinds/__init__.py``; the policy loader calls ``build`` with the :class:`Trust` edge
that reads files, URLs and KMS keys and holds the scan's shared CRL cache and fetcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from scanner.verify.base import Fetcher, Verifier
from scanner.verify.keys import PublicKey


class StrictSpec(BaseModel):
    """The base of every policy model: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def not_blank(value: str | None) -> str | None:
    # An empty trust-material field would read as "not given" and fall back to another root.
    if value is not None and not value.strip():
        raise ValueError("must not be empty (leave the field out instead)")
    return value


class KeyLoader(Protocol):
    def load_key(self, text: str, base_dir: Path, where: str) -> tuple[PublicKey, str]:
        """A public key from PEM, a file under ``base_dir``, an https URL or a KMS URI, and how it is
        shown; cached per reference for the scan. ConfigError (``KmsKeyUnavailable`` for a KMS outage)."""
        ...


class Trust(KeyLoader, Protocol):
    """The edge a kind's ``build`` gets from the policy loader, for one verifier entry."""

    @property
    def base_dir(self) -> Path:
        """The directory relative file names of the entry are read from."""
        ...

    @property
    def where(self) -> str:
        """The entry's location in its policy (``spec.rules.0.verifiers.1``), for ConfigError fields."""
        ...

    @property
    def rule(self) -> str:
        """The name of the rule the entry belongs to."""
        ...

    def fetcher(self) -> Fetcher:
        """The scan's CRL/OCSP fetcher (size- and time-bounded)."""
        ...

    def crl_cache(self) -> Any:
        """The process's CRL cache (``scanner.verify.revocation.CRLCache``): CRLs reused until nextUpdate."""
        ...

    def add_material(self, data: bytes) -> None:
        """Trust-relevant bytes the verifier read, hashed into the policy digest."""
        ...


S = TypeVar("S", bound=StrictSpec)


@dataclass(frozen=True, slots=True)
class Kind(Generic[S]):
    """One row of the table: a policy's ``<name>: {...}`` entry is a ``spec`` and ``build`` turns it into a
    verifier."""

    name: str
    spec: type[S]
    build: Callable[[S, Trust], Verifier]
