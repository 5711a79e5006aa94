"""An in-memory registry behind the :class:`scanner.registry.reader.RegistryReader` seam.

Modelled on python-tuf's ``tests/repository_simulator.py``: the repository content lives in dicts
as bytes (manifests by digest, tags, blobs), the test changes it between scans (re-sign, remove a
signature, attach a referrer) and the code under test reads it through the same interface as the
real :class:`~scanner.registry.client.RegistryClient` — without sockets, so the pipeline's cache and
satisfaction logic get fast unit tests. Every call is recorded in ``requests``; ``fail`` makes the
next reads of a kind raise a :class:`RegistryError`. Integration tests keep the real registry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scanner.errors import NotFound, RegistryError
from scanner.models import Descriptor, ImageReference
from scanner.registry.auth import CredentialStore
from scanner.registry.client import Manifest, RegistryStats, parse_descriptor, parse_manifest, sha256_digest
from scanner.registry.reader import Secrets
from tests.harness.cosign_sign import SIG_ANNOTATION, SIMPLESIGNING, KeyPair, sig_tag, simplesigning_payload

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


@dataclass
class _Repo:
    manifests: dict[str, bytes] = field(default_factory=dict)  # digest -> raw
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    blobs: dict[str, bytes] = field(default_factory=dict)


class InMemoryRegistry:
    """One or more repositories of any registry host; a ``RegistryReader``."""

    def __init__(self, *, referrers_api: bool = True) -> None:
        self.credentials = CredentialStore()
        self.stats = RegistryStats()
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.referrers_api = referrers_api
        self.requests: list[tuple[str, str]] = []  # (call, what)
        self.fail: set[str] = set()  # call names ("get_blob", "referrers", ...) that raise RegistryError

    # -- building content ----------------------------------------------------------------------------
    def _repo(self, ref: ImageReference) -> _Repo:
        return self.repos.setdefault((ref.registry, ref.repository), _Repo())

    def put_blob(self, ref: ImageReference, data: bytes) -> str:
        digest = sha256_digest(data)
        self._repo(ref).blobs[digest] = data
        return digest

    def put_manifest(self, ref: ImageReference, doc: Mapping[str, Any], tag: str | None = None) -> str:
        raw = canonical(doc)
        digest = sha256_digest(raw)
        repo = self._repo(ref)
        repo.manifests[digest] = raw
        if tag is not None:
            repo.tags[tag] = digest
        return digest

    def push_image(self, ref: ImageReference, tag: str | None = "latest", content: bytes = b"layer") -> str:
        """A one-layer image; returns its digest."""
        config = canonical({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        self.put_blob(ref, config)
        self.put_blob(ref, content)
        return self.put_manifest(ref, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": _desc("application/vnd.oci.image.config.v1+json", config),
            "layers": [_desc("application/vnd.oci.image.layer.v1.tar", content)],
        }, tag)

    def sign_cosign(self, ref: ImageReference, digest: str, *keys: KeyPair,
                    optional: Mapping[str, Any] | None = None, payload_digest: str | None = None,
                    extra_annotations: Mapping[str, str] | None = None) -> str:
        """A ``.sig`` manifest with one simplesigning layer per key (replacing any earlier one, as
        ``cosign sign`` does); returns the ``.sig`` manifest's digest."""
        layers = []
        for key in keys:
            payload = simplesigning_payload(ref.repo, payload_digest or digest, optional)
            self.put_blob(ref, payload)
            annotations = {SIG_ANNOTATION: base64.b64encode(key.sign(payload)).decode(), **(extra_annotations or {})}
            layers.append(_desc(SIMPLESIGNING, payload, annotations=annotations))
        config = canonical({})
        self.put_blob(ref, config)
        return self.put_manifest(ref, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                       "config": _desc("application/vnd.oci.image.config.v1+json", config),
                                       "layers": layers}, sig_tag(digest))

    def attach(self, ref: ImageReference, digest: str, artifact_type: str, blob: bytes,
               blob_media_type: str | None = None, annotations: Mapping[str, str] | None = None) -> str:
        """A referrer of ``digest`` (an OCI 1.1 artifact manifest with ``subject``); returns its digest."""
        subject = self._repo(ref).manifests[digest]
        self.put_blob(ref, blob)
        self.put_blob(ref, b"{}")
        return self.put_manifest(ref, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": _desc(EMPTY, b"{}"), "layers": [_desc(blob_media_type or artifact_type, blob)],
            "subject": _desc(OCI_MANIFEST, subject), "annotations": dict(annotations or {}),
        })

    def delete_tag(self, ref: ImageReference, tag: str) -> None:
        del self._repo(ref).tags[tag]

    def delete_manifest(self, ref: ImageReference, digest: str) -> None:
        repo = self._repo(ref)
        del repo.manifests[digest]
        for tag in [t for t, d in repo.tags.items() if d == digest]:
            del repo.tags[tag]

    # -- RegistryReader --------------------------------------------------------------------------------
    def _call(self, name: str, what: str) -> None:
        self.requests.append((name, what))
        if name in self.fail:
            raise RegistryError(f"{what}: registry answered 503", status=503)

    def _raw(self, ref: ImageReference, reference: str) -> tuple[str, bytes]:
        repo = self.repos.get((ref.registry, ref.repository))
        digest = reference if reference.startswith("sha256:") else (repo.tags.get(reference) if repo else None)
        if repo is None or digest is None or digest not in repo.manifests:
            raise NotFound(f"{ref.registry}: manifest {ref.repo}:{reference} not found", registry=ref.registry,
                           status=404)
        return digest, repo.manifests[digest]

    def head_manifest(self, ref: ImageReference, reference: str, secrets: Secrets = ()) -> Descriptor:
        self._call("head_manifest", f"{ref.repository}:{reference}")
        digest, raw = self._raw(ref, reference)
        return Descriptor(OCI_MANIFEST, digest, len(raw))

    def get_manifest(self, ref: ImageReference, reference: str, secrets: Secrets = (), *,
                     max_bytes: int | None = None) -> Manifest:
        self._call("get_manifest", f"{ref.repository}:{reference}")
        digest, raw = self._raw(ref, reference)
        return parse_manifest(raw, OCI_MANIFEST, digest)

    def get_blob(self, ref: ImageReference, desc: Descriptor, secrets: Secrets = (), *,
                 max_bytes: int | None = None) -> bytes:
        self._call("get_blob", f"{ref.repository}@{desc.digest}")
        repo = self.repos.get((ref.registry, ref.repository))
        if repo is None or desc.digest not in repo.blobs:
            raise NotFound(f"blob {desc.digest[:19]} not found", registry=ref.registry, status=404)
        return repo.blobs[desc.digest]

    def referrers(self, ref: ImageReference, digest: str, artifact_type: str | None = None,
                  secrets: Secrets = ()) -> tuple[list[Descriptor], str]:
        self._call("referrers", f"{ref.repository}@{digest}")
        repo = self.repos.get((ref.registry, ref.repository))
        out = []
        for d, raw in sorted((repo.manifests if repo else {}).items()):
            doc = json.loads(raw)
            if (doc.get("subject") or {}).get("digest") != digest:
                continue
            atype = doc.get("artifactType") or doc["config"]["mediaType"]
            if artifact_type and atype != artifact_type:
                continue
            out.append(parse_descriptor(_desc(OCI_MANIFEST, raw, artifactType=atype) | {"digest": d}, "referrers"))
        return out, "api" if self.referrers_api else "tag"

    def uses_referrers_tag_schema(self, ref: ImageReference, digest: str, secrets: Secrets = ()) -> bool:
        self._call("uses_referrers_tag_schema", ref.registry)
        return not self.referrers_api

    def credential_source(
        self, registry: str, repository: str, secrets: Secrets, named_for: Secrets | None = None,
    ) -> str | None:
        """The in-memory registry needs no credentials: no source applies."""
        return None

    def answer_absent_tags_from_lists(self, repositories: Iterable[tuple[str, str]]) -> None:
        """Ignored: every lookup of the in-memory registry is its own answer."""
