"""Which pod spec images pin a digest (issue #25 item 4: tag references are a finding)."""

from __future__ import annotations

import pytest

from scanner.errors import ParseError
from scanner.inventory import references
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


def test_each_distinct_image_id_is_read_once_and_answers_as_uncached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five pods of a Deployment report one imageID: a 10,000-pod list is read with one parse per
    distinct imageID (issue 19), and the answers are those of an uncached parse, whatever came first."""
    digest = "sha256:" + "a" * 64
    ids = [f"docker.io/library/nginx@{digest}", f"docker-pullable://nginx@{digest}", f"sha256:{'a' * 64}",
           f"docker://sha256:{'a' * 64}", "nginx:1.25", f"registry.example/App@{digest}", " ",
           f"x/y@sha256:{'A' * 64}", f"r.example/{'a' * 600}@{digest}"]
    want = [references._parse_image_id(i) for i in ids]
    references._cached_image_id.cache_clear()
    calls: list[str] = []
    real = references._parse_image_id

    def counting(image_id: str) -> tuple[object, ...]:
        calls.append(image_id)
        return real(image_id)

    monkeypatch.setattr(references, "_parse_image_id", counting)
    for _ in range(5):
        assert [references.parse_image_id(i) for i in ids] == want
    long_id = ids[-1]
    assert sorted(calls) == sorted([*ids[:-1], *[long_id] * 5])  # a long one is parsed every time, never kept
