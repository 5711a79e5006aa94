"""Pods -> containers (all three kinds), owners from pod-list files, streaming and bad input."""

import io
import json

import pytest

from scanner.errors import ParseError
from scanner.inventory.pods import StaticOwnerResolver, containers_from_pod, iter_pods_file
from scanner.models import ContainerType
from scanner.pipeline import build_inventory
from tests.harness.demo import _pod

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_every_container_kind_with_its_image_id() -> None:
    pod = _pod("ns", "p", [("app", "r.io/a:1", f"r.io/a@{D1}")], init=[("init", "r.io/b:1", f"r.io/b@{D2}")],
               ephemeral=[("dbg", "busybox", None)], pull_secrets=["regcred"])
    cs = containers_from_pod(pod, StaticOwnerResolver())
    assert [(c.container, c.container_type, c.image_id) for c in cs] == [
        ("init", ContainerType.INIT, f"r.io/b@{D2}"),
        ("app", ContainerType.CONTAINER, f"r.io/a@{D1}"),
        ("dbg", ContainerType.EPHEMERAL, None),
    ]
    assert all(c.pull_secrets == ("regcred",) for c in cs)


def test_replicaset_owner_becomes_deployment_via_pod_template_hash() -> None:
    pod = _pod("ns", "web-abc12-xyz", [("c", "x", None)], owner=("ReplicaSet", "web-abc12"),
               labels={"pod-template-hash": "abc12"})
    assert containers_from_pod(pod, StaticOwnerResolver())[0].workload.kind == "Deployment"
    assert containers_from_pod(pod, StaticOwnerResolver())[0].workload.name == "web"


def test_replicaset_without_matching_hash_stays_replicaset() -> None:
    pod = _pod("ns", "p", [("c", "x", None)], owner=("ReplicaSet", "standalone-rs"))
    w = containers_from_pod(pod, StaticOwnerResolver())[0].workload
    assert (w.kind, w.name) == ("ReplicaSet", "standalone-rs")


def test_bare_pod_is_its_own_workload() -> None:
    w = containers_from_pod(_pod("ns", "lonely", [("c", "x", None)]), StaticOwnerResolver())[0].workload
    assert (w.kind, w.name) == ("Pod", "lonely")


def test_each_unique_digest_is_grouped_once_across_pods() -> None:
    pods = [_pod("a", f"p{i}", [("c", "r.io/a:1", f"r.io/a@{D1}")]) for i in range(50)]
    pods.append(_pod("b", "q", [("c", "r.io/a:2", f"docker-pullable://r.io/a@{D1}")]))
    inv = build_inventory(pods)
    assert list(inv.running) == [("r.io", "a", D1)]
    assert len(inv.running[("r.io", "a", D1)]) == 51


def test_pending_pod_is_not_judged_on_its_tag() -> None:
    inv = build_inventory([_pod("a", "p", [("c", "r.io/a:1", None)])])
    assert not inv.running
    [(spec, why)] = inv.unknown
    assert spec == "r.io/a:1" and "no image digest" in why


def test_spec_digest_does_not_stand_in_for_a_missing_running_digest() -> None:
    # Not started yet: nothing runs, whatever the spec pins.
    inv = build_inventory([_pod("a", "p", [("c", f"r.io/a@{D1}", None)])])
    assert not inv.running and [spec for spec, _ in inv.unknown] == [f"r.io/a@{D1}"]


@pytest.mark.parametrize(
    "image_id",
    [
        f"r.io/a@sha256:{'AB' * 32}",  # upper-case hex: not a digest any runtime reports
        f"docker-pullable://r.io/a@sha256:{'A' * 64}",
        f"sha256:{'B' * 64}",
        f"docker://{D2}",  # a local image id (built or loaded on the node), not a registry digest
        f"r.io/a@sha512:{'c' * 128}",
        "garbage",
    ],
)
def test_an_image_id_that_is_not_a_registry_digest_makes_the_running_digest_unknown(image_id: str) -> None:
    # Neither the tag nor the spec's own digest may stand in for it: the tag below names D1.
    for spec in ("r.io/a:1", f"r.io/a@{D1}"):
        inv = build_inventory([_pod("a", "p", [("c", spec, image_id)])])
        assert not inv.running, (spec, image_id)
        [(got_spec, why)] = inv.unknown
        assert got_spec == spec and why


def test_malformed_pod_is_reported_not_fatal() -> None:
    inv = build_inventory([{"metadata": {"name": "x"}}, _pod("a", "ok", [("c", "r.io/a:1", f"r.io/a@{D1}")])])
    assert inv.pods == 2 and len(inv.running) == 1
    assert inv.problems and "skipped" in inv.problems[0]


def test_unparseable_image_is_kept_as_unresolved() -> None:
    inv = build_inventory([_pod("a", "p", [("c", "NOT A REF", None)])])
    assert "NOT A REF" in inv.unparseable


def stream(obj: object) -> io.BytesIO:
    return io.BytesIO(json.dumps(obj).encode())


def test_streams_a_kubectl_list() -> None:
    doc = {"apiVersion": "v1", "items": [_pod("a", f"p{i}", [("c", "x", None)]) for i in range(3)],
           "kind": "List", "metadata": {"resourceVersion": ""}}
    assert [p["metadata"]["name"] for p in iter_pods_file("f", stream(doc))] == ["p0", "p1", "p2"]


def test_single_pod_document() -> None:
    assert len(list(iter_pods_file("f", stream(_pod("a", "p", [("c", "x", None)]))))) == 1


@pytest.mark.parametrize("raw", [b"", b"[]", b"{\"items\": [1]}", b"{\"items\": [{\"a\": ", b"{\"kind\": \"Service\"}",
                                 b"\xff\xfe", b"{\"items\": {}}"])
def test_malformed_pod_lists_raise_parse_errors(raw: bytes) -> None:
    with pytest.raises(ParseError):
        list(iter_pods_file("f", io.BytesIO(raw)))
