"""Image references, normalised the way the container tools do.

``nginx`` -> ``docker.io/library/nginx:latest``; ``index.docker.io/x/y`` -> ``docker.io/x/y``.
Grammar: distribution/reference (``reference/regexp.go``); hand-written because no maintained
Python package implements it with docker's normalisation rules.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

from scanner.errors import ParseError
from scanner.models import ContainerRef, ImageReference

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", "docker.io"}
MAX_REFERENCE_LENGTH = 4096

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    return DOCKER_HUB, name


# Distinct references parsed once per process: 10,000 pods run a few thousand images, each named in a
# pod spec and an imageID. Bounded (at most this many times MAX_REFERENCE_LENGTH characters); a malformed
# reference raises every time and is never cached.
_CACHE_SIZE = 16384


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise an image reference; raise ParseError on anything malformed."""
    if not isinstance(text, str) or not text or len(text) > MAX_REFERENCE_LENGTH:
        raise ParseError(f"invalid image reference {str(text)[:80]!r}: empty or too long")
    return _parse_reference(text)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_reference(text: str) -> ImageReference:
    rest, _, digest = text.partition("@")
    if "@" in digest:
        raise ParseError(f"invalid image reference {text!r}: more than one '@'")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise ParseError(f"invalid image reference {text!r}: bad tag {tag!r}")
    if digest:
        if not _DIGEST_RE.match(digest):
            raise ParseError(f"invalid image reference {text!r}: bad digest")
        if digest.startswith("sha256:") and not SHA256_RE.match(digest):
            raise ParseError(f"invalid image reference {text!r}: sha256 digest must be 64 lowercase hex")
    domain, path = _split_domain(rest)
    # A host name is case-insensitive (DNS): REGISTRY.EXAMPLE/app is registry.example/app, pulled from
    # the same registry. One spelling, so every rule, exemption and trust-policy scope sees one repository.
    domain = _canonical_host(domain.lower(), text)
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    full = f"{domain}/{path}"
    if not _NAME_RE.match(full):
        raise ParseError(f"invalid image reference {text!r}: repository names are lowercase [a-z0-9._-/]")
    if tag is None and not digest:
        tag = "latest"
    return ImageReference(registry=domain, repository=path, tag=tag, digest=digest or None)


def _canonical_host(domain: str, text: str) -> str:
    """One spelling of a registry's host and port beside the case: the port as a plain number
    (``localhost:05000`` is ``localhost:5000``, the port the kubelet dials too) and an IPv6 literal in its
    compressed form (``[0:0::1]`` is ``[::1]``), so no second spelling of one registry escapes the
    rules, exemptions and trust-policy scopes written for it. A bracketed host that is no IPv6 address is
    refused. (``:443`` is kept: the kubelet matches credentials by the port as written.)"""
    host, port = domain, ""
    if domain.startswith("["):
        literal, _, rest = domain[1:].partition("]")
        try:
            host = f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError:
            raise ParseError(f"invalid image reference {text[:200]!r}: [{literal[:60]}] is no IPv6 address") \
                from None
        port = rest[1:]
    elif ":" in domain:
        host, _, port = domain.partition(":")
    if port.isdigit():
        port = str(int(port))
    return f"{host}:{port}" if port else host


def registry_api_host(registry: str) -> str:
    """The host that serves the distribution API for a registry name."""
    return "registry-1.docker.io" if registry == DOCKER_HUB else registry


def parse_image_id(image_id: str | None) -> tuple[ImageReference | None, str | None, str | None]:
    """Interpret ``status.containerStatuses[].imageID``.

    Returns (repository reference, manifest digest, None) when the runtime names the registry digest
    that runs, else (None, None, why it does not). Runtimes report ``docker.io/library/nginx@sha256:…``
    (containerd, CRI-O) and ``docker-pullable://nginx@sha256:…`` (dockershim) for pulled images. For an
    image without a repository digest (built or loaded on the node) they report its local image id, the
    digest of its config, not of a manifest: ``docker://sha256:…`` (dockershim) or a bare ``sha256:…``
    (containerd's CRI sets ``imageRef`` to the image id unless the image has a repo digest). Those, and
    anything not in the exact form (upper-case hex, another algorithm), leave the running digest unknown.
    """
    if not image_id:
        return None, None, "the runtime reported no image digest (container not started?)"
    if type(image_id) is not str or len(image_id) > _CACHED_IMAGE_ID_LENGTH:
        return _parse_image_id(image_id)  # not kept: a real imageID is a few hundred characters at most
    return _cached_image_id(image_id)


_CACHED_IMAGE_ID_LENGTH = 512  # at most _CACHE_SIZE of them are kept (8 MiB)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_image_id(image_id: str) -> tuple[ImageReference | None, str | None, str | None]:
    # Five pods of a Deployment report one imageID: each distinct one is read once per process (a
    # pure function of the string; its answers are immutable).
    return _parse_image_id(image_id)


def _parse_image_id(image_id: str) -> tuple[ImageReference | None, str | None, str | None]:
    value = image_id.strip()
    for scheme in ("docker-pullable://", "containerd://", "cri-o://"):
        if value.startswith(scheme):
            value = value[len(scheme) :]
            break
    else:
        if value.startswith("docker://"):
            return None, None, f"the runtime reported a local image id ({image_id[:80]}), not a registry digest"
    if SHA256_RE.match(value):
        return None, None, (
            f"the runtime reported an image id ({value[:80]}) without a repository digest: a local image "
            "(built or loaded on the node), not a registry digest"
        )
    if "@" not in value:
        return None, None, f"unrecognised imageID {image_id[:120]!r}"
    try:
        ref = parse_reference(value)
    except ParseError as exc:
        return None, None, f"unparseable imageID: {exc}"
    if ref.digest is None or not SHA256_RE.match(ref.digest):
        return None, None, f"imageID {image_id[:120]!r} carries no sha256 digest"
    return ImageReference(ref.registry, ref.repository, None, ref.digest), ref.digest, None


def pins_digest(image: str) -> bool:
    """Whether a pod spec's image names a digest (``repo@sha256:…``, with or without a tag), as
    Kyverno's ``verifyDigest`` and Gatekeeper's ``k8simagedigests`` require. A tag (or no tag, which
    is ``latest``), or a reference that cannot be parsed, pins nothing: the node pulls whatever the tag
    names when the pod starts."""
    try:
        return parse_reference(image).digest is not None
    except ParseError:
        return False


def tag_reference_containers(containers: Iterable[ContainerRef]) -> tuple[ContainerRef, ...]:
    """The containers whose spec names a tag rather than a digest: a finding, never a verdict. Each
    container once (it may be listed under several verdicts), sorted by namespace, pod, container."""
    seen: dict[tuple[str, str, str, str], ContainerRef] = {}
    for c in containers:
        if not pins_digest(c.image):
            seen.setdefault((c.namespace, c.pod_uid or c.pod, c.container_type.value, c.container), c)
    return tuple(sorted(seen.values(), key=lambda c: (c.namespace, c.pod, c.container, c.container_type.value)))
