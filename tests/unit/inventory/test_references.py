"""Which pod spec images pin a digest (issue #25 item 4: tag references are a finding)."""

from __future__ import annotations

import pytest

from scanner.inventory.references import pins_digest, tag_reference_containers
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
