"""A tiny OCI distribution push/pull helper for tests, the demo and the bench.

Only depends on httpx. Speaks the OCI distribution API directly (monolithic blob uploads,
manifest PUT/GET), so it works against any registry the harness starts::

    from tests.harness import oci
    digest = oci.make_image("http://127.0.0.1:5000", "team/app", tag="v1")
    index = oci.make_index("http://127.0.0.1:5000", "team/app", tag="multi")

``auth`` arguments take anything httpx accepts (a ``(user, password)`` tuple means HTTP basic) or a
:class:`RegistryAuth`, which answers both Basic and Bearer (token) challenges.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
EMPTY_JSON = b"{}"

AuthLike = httpx.Auth | tuple[str, str] | None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """An OCI descriptor for ``data`` (extra keys such as ``platform`` or ``annotations`` pass through)."""
    d: dict[str, Any] = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    d.update({k: v for k, v in extra.items() if v is not None})
    return d


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryAuth(httpx.Auth):
    """Answers a registry's 401 challenge: Basic directly, Bearer via the token realm.

    Tokens are cached per scope for the life of this object. Also counts token fetches
    (``token_requests``) so tests can check caching.
    """

    requires_response_body = True

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self.password = password
        self.token_requests = 0
        self._tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("www-authenticate", "")
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic" and self.username is not None:
            request.headers["Authorization"] = basic_header(self.username, self.password or "")
            yield request
            return
        if scheme.lower() != "bearer":
            return
        params = dict(_CHALLENGE_PARAM.findall(rest))
        realm = params.pop("realm", None)
        if not realm:
            return
        key = json.dumps(params, sort_keys=True)
        token = self._tokens.get(key)
        if token is None:
            token_request = httpx.Request("GET", realm, params=params)
            if self.username is not None:
                token_request.headers["Authorization"] = basic_header(self.username, self.password or "")
            token_response = yield token_request
            token_response.read()
            self.token_requests += 1
            if token_response.status_code != 200:
                return
            body = token_response.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                return
            self._tokens[key] = token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _client(auth: AuthLike, client: httpx.Client | None) -> httpx.Client:
    if client is not None:
        return client
    return httpx.Client(auth=auth, timeout=30.0)


def _raise(r: httpx.Response, what: str) -> None:
    if r.is_error:
        raise RuntimeError(f"{what}: HTTP {r.status_code} {r.text[:500]}")


def push_blob(
    url_base: str, repo: str, data: bytes, auth: AuthLike = None, *, client: httpx.Client | None = None
) -> str:
    """Upload ``data`` as a blob (POST then monolithic PUT); returns its digest."""
    digest = sha256_digest(data)
    c = _client(auth, client)
    try:
        r = c.post(f"{url_base}/v2/{repo}/blobs/uploads/")
        _raise(r, f"start upload to {repo}")
        location = r.headers["location"]
        if location.startswith("/"):
            location = url_base + location
        # httpx's params= would replace the upload URL's own query (_state=...): merge instead.
        r = c.put(
            httpx.URL(location).copy_merge_params({"digest": digest}),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _raise(r, f"finish upload of {digest} to {repo}")
    finally:
        if client is None:
            c.close()
    return digest


def push_manifest(
    url_base: str,
    repo: str,
    ref: str,
    manifest_bytes: bytes,
    media_type: str = OCI_MANIFEST,
    auth: AuthLike = None,
    *,
    client: httpx.Client | None = None,
) -> str:
    """PUT a manifest under ``ref`` (a tag or its digest); returns the manifest digest."""
    c = _client(auth, client)
    try:
        r = c.put(
            f"{url_base}/v2/{repo}/manifests/{ref}",
            content=manifest_bytes,
            headers={"Content-Type": media_type},
        )
        _raise(r, f"push manifest {repo}:{ref}")
    finally:
        if client is None:
            c.close()
    return sha256_digest(manifest_bytes)


def get_manifest(
    url_base: str, repo: str, ref: str, auth: AuthLike = None, *, client: httpx.Client | None = None
) -> tuple[bytes, str]:
    """GET a manifest; returns (raw bytes, media type)."""
    c = _client(auth, client)
    try:
        r = c.get(f"{url_base}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
        _raise(r, f"get manifest {repo}:{ref}")
        return r.content, r.headers.get("content-type", "")
    finally:
        if client is None:
            c.close()


def get_blob(
    url_base: str, repo: str, digest: str, auth: AuthLike = None, *, client: httpx.Client | None = None
) -> bytes:
    c = _client(auth, client)
    try:
        r = c.get(f"{url_base}/v2/{repo}/blobs/{digest}", follow_redirects=True)
        _raise(r, f"get blob {repo}@{digest}")
        return r.content
    finally:
        if client is None:
            c.close()


@dataclass(frozen=True, slots=True)
class Pushed:
    """What :func:`push_image` pushed: the manifest's digest, bytes and media type."""

    digest: str
    manifest: bytes
    media_type: str
    blobs: tuple[str, ...] = field(default=())

    @property
    def size(self) -> int:
        return len(self.manifest)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return descriptor(self.media_type, self.manifest, **extra)


def push_image(
    url_base: str,
    repo: str,
    tag: str | None = "latest",
    *,
    auth: AuthLike = None,
    platform: str = "linux/amd64",
    layers: Iterable[bytes] | None = None,
    layer_size: int = 256,
    annotations: Mapping[str, str] | None = None,
    artifact_type: str | None = None,
    config: bytes | None = None,
    config_media_type: str = OCI_CONFIG,
    subject: Mapping[str, Any] | None = None,
    client: httpx.Client | None = None,
) -> Pushed:
    """Push a small OCI image (random layer unless ``layers`` given) and its manifest.

    ``tag=None`` pushes by digest only. ``subject`` (a descriptor) and ``artifact_type`` make it
    an OCI 1.1 artifact that the referrers API lists.
    """
    c = _client(auth, client)
    try:
        os_, _, arch = platform.partition("/")
        if config is None:
            config = canonical_json(
                {
                    "architecture": arch,
                    "os": os_,
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "config": {"Labels": {"sigaudit.test/nonce": os.urandom(8).hex()}},
                }
            )
        layer_list = list(layers) if layers is not None else [os.urandom(layer_size)]
        blobs = [push_blob(url_base, repo, config, client=c)]
        blobs += [push_blob(url_base, repo, layer, client=c) for layer in layer_list]
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(config_media_type, config),
            "layers": [descriptor(OCI_LAYER, layer) for layer in layer_list],
        }
        if artifact_type:
            manifest["artifactType"] = artifact_type
        if subject is not None:
            manifest["subject"] = dict(subject)
        if annotations:
            manifest["annotations"] = dict(annotations)
        raw = canonical_json(manifest)
        digest = sha256_digest(raw)
        push_manifest(url_base, repo, tag or digest, raw, OCI_MANIFEST, client=c)
        return Pushed(digest, raw, OCI_MANIFEST, tuple(blobs))
    finally:
        if client is None:
            c.close()


def make_image(url_base: str, repo: str, tag: str | None = "latest", **kwargs: Any) -> str:
    """Push a random small image (config + one layer + manifest); returns the manifest digest."""
    return push_image(url_base, repo, tag, **kwargs).digest


def push_index(
    url_base: str,
    repo: str,
    tag: str | None = "latest",
    *,
    auth: AuthLike = None,
    platforms: Iterable[str] = ("linux/amd64", "linux/arm64"),
    annotations: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> tuple[Pushed, dict[str, Pushed]]:
    """Push one image per platform (by digest) and an OCI index over them.

    Returns (the index, {platform: child image}).
    """
    c = _client(auth, client)
    try:
        children: dict[str, Pushed] = {}
        entries = []
        for plat in platforms:
            child = push_image(url_base, repo, None, platform=plat, client=c)
            children[plat] = child
            os_, _, arch = plat.partition("/")
            arch, _, variant = arch.partition("/")
            platform: dict[str, str] = {"architecture": arch, "os": os_}
            if variant:
                platform["variant"] = variant
            entries.append(child.descriptor(platform=platform))
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        if annotations:
            index["annotations"] = dict(annotations)
        raw = canonical_json(index)
        digest = sha256_digest(raw)
        push_manifest(url_base, repo, tag or digest, raw, OCI_INDEX, client=c)
        return Pushed(digest, raw, OCI_INDEX), children
    finally:
        if client is None:
            c.close()


def make_index(url_base: str, repo: str, tag: str | None = "latest", **kwargs: Any) -> str:
    """Push a multi-arch image (an OCI index over per-platform images); returns the index digest."""
    return push_index(url_base, repo, tag, **kwargs)[0].digest


def make_artifact(
    url_base: str,
    repo: str,
    subject: Pushed | Mapping[str, Any],
    artifact_type: str,
    payload: bytes,
    *,
    payload_media_type: str = "application/octet-stream",
    annotations: Mapping[str, str] | None = None,
    auth: AuthLike = None,
    client: httpx.Client | None = None,
) -> Pushed:
    """Push an OCI 1.1 artifact (empty config, ``payload`` as its one layer) that refers to ``subject``."""
    c = _client(auth, client)
    try:
        subject_desc = subject.descriptor() if isinstance(subject, Pushed) else dict(subject)
        blobs = (push_blob(url_base, repo, EMPTY_JSON, client=c), push_blob(url_base, repo, payload, client=c))
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(OCI_EMPTY, EMPTY_JSON),
            "layers": [descriptor(payload_media_type, payload)],
            "subject": subject_desc,
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        raw = canonical_json(manifest)
        digest = sha256_digest(raw)
        push_manifest(url_base, repo, digest, raw, OCI_MANIFEST, client=c)
        return Pushed(digest, raw, OCI_MANIFEST, blobs)
    finally:
        if client is None:
            c.close()


def list_referrers(
    url_base: str,
    repo: str,
    digest: str,
    auth: AuthLike = None,
    *,
    artifact_type: str | None = None,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """GET /v2/<repo>/referrers/<digest> (OCI 1.1); returns the raw response."""
    c = _client(auth, client)
    try:
        params = {"artifactType": artifact_type} if artifact_type else None
        return c.get(f"{url_base}/v2/{repo}/referrers/{digest}", params=params)
    finally:
        if client is None:
            c.close()
