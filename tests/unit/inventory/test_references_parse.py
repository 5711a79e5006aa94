"""Image reference normalisation and imageID parsing, as the container tools do it."""

import pytest

from scanner.errors import ParseError
from scanner.inventory.references import parse_image_id, parse_reference
from scanner.policy.engine import image_matches

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/wallarm/ingress:4", "docker.io/wallarm/ingress:4"),
        ("registry-1.docker.io/x/y", "docker.io/x/y:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost/app:v1", "localhost/app:v1"),
        ("ghcr.io/org/team/app:v1.2.3", "ghcr.io/org/team/app:v1.2.3"),
        (f"registry.k8s.io/pause@{D}", f"registry.k8s.io/pause@{D}"),
        (f"quay.io/a/b:1@{D}", f"quay.io/a/b:1@{D}"),
        ("127.0.0.1:5000/demo/x:1.0", "127.0.0.1:5000/demo/x:1.0"),
        # Host names are case-insensitive: one spelling for rules, exemptions and trust-policy scopes.
        ("LOCALHOST:5000/app:v1", "localhost:5000/app:v1"),
        ("Ghcr.IO/org/app", "ghcr.io/org/app:latest"),
        ("INDEX.DOCKER.IO/x/y", "docker.io/x/y:latest"),
        (f"Registry.Example:5000/prod/app@{D}", f"registry.example:5000/prod/app@{D}"),
    ],
)
def test_normalises_like_docker(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize(
    "bad", ["", "UPPER/case", "a b", "nginx:", "nginx@sha256:xyz", "x@@y", ":tag", "a//b", "x" * 5000,
            f"nginx@sha256:{'A' * 64}", "nginx:" + "t" * 200],
)
def test_rejects_malformed_references(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_reference(bad)


def test_image_id_containerd_form() -> None:
    ref, digest, note = parse_image_id(f"docker.io/library/nginx@{D}")
    assert (ref.repo, digest, note) == ("docker.io/library/nginx", D, None)


def test_image_id_docker_pullable_form() -> None:
    ref, digest, _ = parse_image_id(f"docker-pullable://nginx@{D}")
    assert ref is not None and ref.repo == "docker.io/library/nginx" and digest == D


def test_image_id_local_docker_id_is_not_a_registry_digest() -> None:
    ref, digest, note = parse_image_id(f"docker://{D}")
    assert ref is None and digest is None and "local image id" in note


def test_image_id_bare_digest_is_a_local_image_id_not_a_registry_digest() -> None:
    # containerd's CRI reports the image id (its config's digest) when the image has no repo digest.
    ref, digest, note = parse_image_id(D)
    assert ref is None and digest is None and "local image" in note


@pytest.mark.parametrize(
    "image_id",
    [
        f"docker.io/library/nginx@sha256:{'AB' * 32}",  # upper-case hex: no runtime writes it
        f"docker-pullable://nginx@sha256:{'Ab' * 32}",
        f"sha256:{'AB' * 32}",
        f"SHA256:{'ab' * 32}",
        f"docker.io/library/nginx@sha512:{'ab' * 64}",
        f"docker.io/library/nginx@sha256:{'ab' * 31}",
        "DOCKER://" + D,
        "nginx:1.25",  # a tag is not a digest
        f"docker.io/library/nginx@{D}@{D}",
    ],
)
def test_an_image_id_not_in_the_exact_registry_form_gives_no_digest(image_id: str) -> None:
    ref, digest, note = parse_image_id(image_id)
    assert ref is None and digest is None and note


@pytest.mark.parametrize("empty", [None, ""])
def test_image_id_missing(empty: str | None) -> None:
    _ref, digest, note = parse_image_id(empty)
    assert digest is None and "no image digest" in note


@pytest.mark.parametrize("text,registry", [
    ("localhost:05000/prod/app:1", "localhost:5000"),
    ("registry.example:0443/prod/app:1", "registry.example:443"),
    ("[0:0:0:0:0:0:0:1]:5000/prod/app:1", "[::1]:5000"),
    ("[::0001]:05000/prod/app:1", "[::1]:5000"),
    ("[FE80::A]/prod/app:1", "[fe80::a]"),
    ("localhost:5000/prod/app:1", "localhost:5000"),
])
def test_a_registry_port_or_ip_literal_has_one_spelling(text: str, registry: str) -> None:
    """``localhost:05000`` is the registry ``localhost:5000`` (the same port, dialled by the kubelet as by
    sigaudit), ``[0:0::1]`` is ``[::1]``: once kept as written, a pod running ``localhost:0<port>/prod/app``
    escaped the rule and the trust policy scope written for ``localhost:<port>/prod/app`` (the real CLI:
    tests/integration/test_registry_host_case.py)."""
    ref = parse_reference(text)
    assert ref.registry == registry
    assert ref == parse_reference(f"{registry}/prod/app:1")
    if not registry.startswith("["):  # (a glob reads "[...]" as a character class)
        assert image_matches([f"{registry}/prod/*"], ref)


@pytest.mark.parametrize("text", ["[127.0.0.1]/app", "[1:2:3]/app", "[1::2::3]:5000/app"])
def test_a_bracketed_host_that_is_no_ipv6_address_is_refused(text: str) -> None:
    with pytest.raises(ParseError, match="IPv6"):
        parse_reference(text)
