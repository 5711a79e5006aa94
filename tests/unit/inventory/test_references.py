"""Which pod spec images pin a digest (issue #25 item 4: tag references are a finding)."""

from __future__ import annotations

import pytest

from scanner.errors import ParseError
from scanner.inventory.references import parse_reference, pins_digest, tag_reference_containers
from scanner.models import ContainerRef, ContainerType, Workload

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        (f"registry.example/app@{D}", True),
        (f"registry.example/app:v1@{D}", True),  # the digest is what is pulled
        (f"nginx@{D}", True),
        ("registry.example/app:v1", False),
        ("registry.example/app", False),  # no tag: latest
        ("nginx", False),
        ("localhost:5000/app", False),  # a port is not a tag, and not a digest
        ("registry.example/app@sha256:ABC", False),  # not a valid digest: nothing is pinned
        ("", False),
        ("Registry.Example/App:v1", False),
    ],
)
def test_pins_digest(image: str, pinned: bool) -> None:
    assert pins_digest(image) is pinned


def _c(ns: str, pod: str, name: str, image: str, kind: ContainerType = ContainerType.CONTAINER) -> ContainerRef:
    return ContainerRef(ns, pod, name, kind, image, None, Workload("Pod", pod), pod_uid=f"uid-{ns}-{pod}")


def test_each_container_once_sorted() -> None:
    a = _c("b", "p", "web", "app:v1")
    init = _c("b", "p", "web", "app", ContainerType.INIT)  # same name, another container type
    got = tag_reference_containers([a, a, _c("a", "q", "x", f"app@{D}"), init, _c("a", "q", "y", "app:v2")])
    assert [(c.namespace, c.container, c.container_type) for c in got] == [
        ("a", "y", ContainerType.CONTAINER), ("b", "web", ContainerType.CONTAINER), ("b", "web", ContainerType.INIT)]


def test_each_distinct_reference_is_parsed_once_and_a_bad_one_always_raises() -> None:
    from scanner.inventory import references

    text = "Registry.Example:5000/team/app:v1@sha256:" + "a" * 64
    first = parse_reference(text)
    assert parse_reference(text) is first  # cached per distinct text (frozen model, safe to share)
    assert first.registry == "registry.example:5000" and first.tag == "v1"
    info = references._parse_reference.cache_info()
    assert info.maxsize is not None and info.maxsize * references.MAX_REFERENCE_LENGTH <= 100 << 20
    for bad in ("UPPER/case", "a@b@c", "", ["not", "a", "string"], {"a": 1}):
        for _ in range(2):  # not cached, never a TypeError for an unhashable value from a pod file
            with pytest.raises(ParseError):
                parse_reference(bad)  # type: ignore[arg-type]
