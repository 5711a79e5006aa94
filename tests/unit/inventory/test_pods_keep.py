"""``iter_pods_file(keep=INVENTORY_FIELDS)``, the scan's pod-file reader (issue 19): only the fields the
inventory reads are built. It must judge every pod exactly as a whole pod is judged — the same
containers, the same problems — and a field the inventory reads that the tree leaves out must fail here,
not silently read as absent in a scan."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from scanner.inventory.pods import (
    INVENTORY_FIELDS,
    MAX_POD_DEPTH,
    StaticOwnerResolver,
    UnreadablePod,
    containers_from_pod,
    iter_pods_file,
    pod_label,
    pod_namespace,
)
from scanner.pipeline import build_inventory
from tests.unit.inventory.test_pods import WRONG, _paths, _set, deep, good


def parsed(pods: list[Any], keep: Any = INVENTORY_FIELDS) -> list[dict[str, Any]]:
    raw = json.dumps({"kind": "List", "items": pods}).encode()
    return list(iter_pods_file("pods.json", io.BytesIO(raw), keep=keep))


def real_pod(name: str = "real") -> dict[str, Any]:
    """A pod as the API serves it: what the inventory reads among what it never does."""
    pod = good(name)
    pod["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:status": {"f:phase": {}}}}]
    pod["metadata"]["annotations"] = {"a": "b"}
    pod["spec"]["containers"][0].update({"env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]})
    pod["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    pod["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    return pod


class _Recording(dict[str, Any]):
    """A pod (or part of one) that records the path of every field read from it."""

    def __init__(self, data: dict[str, Any], path: tuple[str, ...], reads: set[tuple[str, ...]]) -> None:
        super().__init__({k: _wrap(v, (*path, k), reads) for k, v in data.items()})
        self._path, self._reads = path, reads

    def get(self, key: str, default: Any = None) -> Any:
        self._reads.add((*self._path, key))
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._reads.add((*self._path, key))
        return super().__getitem__(key)

    def items(self) -> Any:  # reading every field: the whole value is read
        self._reads.add((*self._path, "*"))
        return super().items()


def _wrap(value: Any, path: tuple[str, ...], reads: set[tuple[str, ...]]) -> Any:
    if isinstance(value, dict):
        return _Recording(value, path, reads)
    if isinstance(value, list):
        return [_wrap(v, path, reads) for v in value]  # a list's elements take the list's fields
    return value


def _kept(path: tuple[Any, ...]) -> bool:
    """Whether ``keep`` builds the value at ``path`` (field names, and list indices where the pod has
    them; the recorded reads of list elements carry none)."""
    node: Any = INVENTORY_FIELDS
    for key in path:
        if isinstance(node, list):  # an array: each element with its tree
            node = node[0]
            if isinstance(key, int):
                continue
        if node is None:
            return True
        if isinstance(key, int) or key == "*" or key not in node:
            return False
        node = node[key]
    return True


def _reads_of(pod: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    reads: set[tuple[str, ...]] = set()
    rec = _wrap(pod, (), reads)
    containers_from_pod(rec, StaticOwnerResolver())
    pod_label(rec)
    pod_namespace(rec)
    yield from sorted(reads)


def test_every_field_the_inventory_reads_is_kept() -> None:
    pod = real_pod()
    pod["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": "r.io/d:1"}]
    pod["status"]["initContainerStatuses"] = [{"name": "i", "imageID": f"r.io/i@sha256:{'2' * 64}"}]
    pod["status"]["ephemeralContainerStatuses"] = [{"name": "dbg", "imageID": ""}]
    pod["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    reads = list(_reads_of(pod))
    assert ("spec", "containers") in reads and ("status", "containerStatuses", "imageID") in reads
    assert [r for r in reads if not _kept(r)] == []


def test_a_real_pod_is_judged_as_when_built_whole_and_its_unread_fields_are_not_built() -> None:
    pods = [real_pod(f"p{i}") for i in range(3)]
    whole, kept = parsed(pods, keep=None), parsed(pods)
    assert whole == pods
    a, b = build_inventory(whole), build_inventory(kept)
    assert dict(a.running) == dict(b.running) and a.problems == b.problems == [] and a.containers == b.containers
    assert "managedFields" not in kept[0]["metadata"] and "volumes" not in kept[0]["spec"]
    assert set(kept[0]["spec"]["containers"][0]) == {"name", "image"}
    assert kept[0]["metadata"]["labels"] == pods[0]["metadata"]["labels"]  # kept whole where needed


@pytest.mark.parametrize("path", _paths(real_pod()), ids=lambda p: ".".join(map(str, p)))
def test_any_field_of_any_wrong_type_is_judged_as_in_a_whole_pod(path: tuple[Any, ...]) -> None:
    for value in WRONG:
        bad = _set(real_pod("bad"), path, value)
        whole, kept = build_inventory(parsed([bad, good()], keep=None)), build_inventory(parsed([bad, good()]))
        if whole.problems and "deeper than" in whole.problems[0] and not _kept(path):
            # a deep value where the inventory never reads: not built, so the pod is judged on the rest
            assert kept.problems == [] and {c.pod for cs in kept.running.values() for c in cs} == {"bad", "good"}
            continue
        assert (dict(whole.running), whole.problems) == (dict(kept.running), kept.problems), (path, value)


@pytest.mark.parametrize("where", ["name", "image", "kind", "labels"])
def test_a_deep_value_in_a_field_the_inventory_reads_still_skips_the_pod(where: str) -> None:
    pod = real_pod("deep")
    nest = json.loads(deep(MAX_POD_DEPTH + 10))
    if where == "name":
        pod["metadata"]["name"] = nest
    elif where == "image":
        pod["spec"]["containers"][0]["image"] = nest
    elif where == "kind":
        pod["kind"] = nest
    else:
        pod["metadata"]["labels"]["x"] = nest
    inv = build_inventory(parsed([pod, good()]))
    assert len(inv.problems) == 1 and f"deeper than {MAX_POD_DEPTH}" in inv.problems[0], inv.problems


def test_a_value_nested_20000_deep_where_nothing_is_read_is_never_built() -> None:
    pod = json.dumps(real_pod("deep")).replace('"annotations": {', '"annotations": {"x": ' + deep(20_000) + ", ")
    raw = ('{"kind": "List", "items": [' + pod + ", " + json.dumps(good()) + "]}").encode()
    tracemalloc.start()
    try:
        pods = list(iter_pods_file("pods.json", io.BytesIO(raw), keep=INVENTORY_FIELDS))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 1024 * 1024, f"{peak / 2**20:.0f} MiB"
    assert not isinstance(pods[0], UnreadablePod) and "annotations" not in pods[0]["metadata"]
    assert {c.pod for cs in build_inventory(pods).running.values() for c in cs} == {"deep", "good"}
