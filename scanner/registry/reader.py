"""What discovery and the pipeline call on a registry: the seam between the scan's logic and HTTP.

:class:`scanner.registry.client.RegistryClient` is the real implementation (the integration tests run
it against a real registry); ``tests/harness/registry_sim.py`` is an in-memory one (images,
signatures and referrers as bytes, like python-tuf's ``RepositorySimulator``) so that the pipeline's
cache and satisfaction logic have fast unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from scanner.models import Descriptor, ImageReference
from scanner.registry.auth import CredentialStore
from scanner.registry.client import Manifest, RegistryStats

Secrets = tuple[tuple[str, str], ...]  # the pods' pull secrets, (namespace, name)


class RegistryReader(Protocol):
    """Reads only; every answer is digest-checked by the implementation before it is returned.
    Raises ``NotFound`` for what is absent, ``RegistryError``/``ParseError`` for what could not be read."""

    @property
    def credentials(self) -> CredentialStore: ...

    @property
    def stats(self) -> RegistryStats: ...

    def head_manifest(self, ref: ImageReference, reference: str, secrets: Secrets = ()) -> Descriptor: ...

    def get_manifest(
        self, ref: ImageReference, reference: str, secrets: Secrets = (), *, max_bytes: int | None = None
    ) -> Manifest: ...

    def get_blob(
        self, ref: ImageReference, desc: Descriptor, secrets: Secrets = (), *, max_bytes: int | None = None
    ) -> bytes: ...

    def referrers(
        self, ref: ImageReference, digest: str, artifact_type: str | None = None, secrets: Secrets = ()
    ) -> tuple[list[Descriptor], str]: ...

    def uses_referrers_tag_schema(self, ref: ImageReference, digest: str, secrets: Secrets = ()) -> bool: ...

    def answer_absent_tags_from_lists(self, repositories: Iterable[tuple[str, str]]) -> None:
        """(registry, repository) pairs whose manifest lookups by tag (GET and HEAD) may be answered
        ``NotFound`` from the repository's tag list when the tag is not listed — decided by the reader
        alone, under its rules (``RegistryClient._absent_from_list``); no caller reads a tag list to
        answer for a tag itself. A reader without tag lists (a replay, an in-memory registry) ignores
        it: every lookup is then its own answer."""

    def credential_source(
        self, registry: str, repository: str, secrets: Secrets,
        named_for: Secrets | None = None,
    ) -> str | None: ...
