"""Hostile pod lists: every malformed pod is skipped and reported (the scan is partial), never a crash,
and nothing in a pod list — however deep — costs more than bounded memory to read."""

from __future__ import annotations

import copy
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import ConfigError, LimitExceeded, ParseError
from scanner.inventory.pods import (
    MAX_POD_DEPTH,
    MAX_PODS_FILE_BYTES,
    UnreadablePod,
    check_pods_file,
    iter_pods_file,
    select_namespaces,
)
from scanner.pipeline import build_inventory
from tests.harness.demo import _pod

D1 = "sha256:" + "1" * 64


def good(name: str = "good") -> dict[str, Any]:
    return _pod("a", name, [("c", "r.io/a:1", f"r.io/a@{D1}")], owner=("ReplicaSet", "web-abc12"),
                labels={"pod-template-hash": "abc12"}, init=[("i", "r.io/i:1", None)], pull_secrets=["regcred"])


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def read(raw: bytes | str) -> Any:
    data = raw.encode() if isinstance(raw, str) else raw
    return build_inventory(iter_pods_file("pods.json", io.BytesIO(data)))


def as_list(*pods: Any) -> str:
    return json.dumps({"kind": "List", "items": list(pods)})


def test_a_container_name_that_is_a_list_skips_that_pod_only() -> None:
    bad = good("bad")
    bad["spec"]["containers"][0]["name"] = ["x"]
    inv = read(as_list(bad, good()))
    assert [p for p in inv.problems if "a/bad skipped" in p and "name" in p], inv.problems
    assert {c.pod for cs in inv.running.values() for c in cs} == {"good"}


def test_image_pull_secrets_true_skips_that_pod_only() -> None:
    bad = good("bad")
    bad["spec"]["imagePullSecrets"] = True
    inv = read(as_list(bad, good()))
    assert len(inv.problems) == 1 and "imagePullSecrets" in inv.problems[0], inv.problems
    assert {c.pod for cs in inv.running.values() for c in cs} == {"good"}


@pytest.mark.parametrize("where", ["namespace", "name", "annotation", "containers", "kind"])
def test_a_value_nested_20000_deep_skips_that_pod_in_bounded_memory(where: str) -> None:
    pod = json.dumps(good("deep"))
    nest = deep(20_000)
    if where == "namespace":
        pod = pod.replace('"namespace": "a"', f'"namespace": {nest}')
    elif where == "name":
        pod = pod.replace('"name": "deep"', f'"name": {nest}')
    elif where == "annotation":
        pod = pod.replace('"labels": {', f'"annotations": {{"x": {nest}}}, "labels": {{')
    elif where == "containers":
        pod = pod.replace('"image": "r.io/a:1"', f'"image": {nest}')
    else:
        pod = pod.replace('"metadata": {', f'"kind": {nest}, "metadata": {{', 1)
    raw = '{"kind": "List", "items": [' + pod + ", " + json.dumps(good()) + "]}"
    tracemalloc.start()
    try:
        inv = read(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # ijson.parse built a dotted prefix per event: 20,000 levels cost ~1 GB. A bound, not a timing.
    assert peak < 40 * 1024 * 1024, f"{peak / 2**20:.0f} MiB to read a 40 kB pod list"
    assert len(inv.problems) == 1 and f"deeper than {MAX_POD_DEPTH}" in inv.problems[0], inv.problems
    assert {c.pod for cs in inv.running.values() for c in cs} == {"good"}


def test_two_million_levels_are_read_without_building_them() -> None:
    raw = ('{"items": [{"metadata": {"name": "d", "namespace": "a"}, "spec": ' + deep(2_000_000) + "}, "
           + json.dumps(good()) + "]}")
    pods = list(iter_pods_file("pods.json", io.BytesIO(raw.encode())))
    assert isinstance(pods[0], UnreadablePod) and pods[0]["metadata"] == {"name": "d", "namespace": "a"}
    assert pods[1]["metadata"]["name"] == "good"


def test_deep_nesting_outside_items_makes_the_file_unreadable() -> None:
    raw = '{"kind": "List", "x": ' + deep(5000) + ', "items": []}'
    with pytest.raises(ParseError, match="deeper than"):
        list(iter_pods_file("pods.json", io.BytesIO(raw.encode())))


def test_a_real_pod_depth_is_accepted() -> None:
    pod = good()
    value: Any = "leaf"
    for _ in range(MAX_POD_DEPTH - 5):
        value = {"f:x": value}
    pod["metadata"]["managedFields"] = [{"fieldsV1": value}]
    assert list(read(as_list(pod)).running)


# Every field of a pod, replaced by every wrong type: the pod is judged or skipped, the others always judged.
WRONG: list[Any] = [["x"], {"k": "v"}, 7, 1.5, True, None, "", json.loads(deep(300))]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    obj = copy.deepcopy(obj)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


@pytest.mark.parametrize("path", _paths(good()), ids=lambda p: ".".join(map(str, p)))
def test_any_field_of_any_wrong_type_never_escapes_the_inventory(path: tuple[Any, ...]) -> None:
    for value in WRONG:
        bad = _set(good("bad"), path, value)
        inv = build_inventory([bad, good()])  # must not raise, whatever the field holds
        assert any(c.pod == "good" for cs in inv.running.values() for c in cs), (path, value)
        assert inv.pods == 2


def test_the_namespace_filter_passes_an_unreadable_namespace_on_to_be_reported() -> None:
    odd = good("odd")
    odd["metadata"]["namespace"] = ["a"]
    kept = list(select_namespaces([odd, good(), _pod("b", "other", [("c", "x", None)])], ["a"], []))
    assert [p["metadata"]["name"] for p in kept] == ["odd", "good"]
    inv = build_inventory(kept)
    assert len(inv.problems) == 1 and "namespace" in inv.problems[0]


# -- the size of the pod list (MAX_PODS_FILE_BYTES) -------------------------------------------------


def test_a_pod_list_larger_than_the_limit_is_cut_while_streaming() -> None:
    data = as_list(good("a"), good("b")).encode()
    read_all = iter_pods_file("p.json", io.BytesIO(data), max_bytes=len(data))
    assert [p["metadata"]["name"] for p in read_all] == ["a", "b"]
    with pytest.raises(LimitExceeded, match=rf"p.json: larger than the {len(data) - 1} bytes limit on a pod list"):
        list(iter_pods_file("p.json", io.BytesIO(data), max_bytes=len(data) - 1))
    # whitespace after the document counts too: the bound is on bytes read, not on what parses
    with pytest.raises(LimitExceeded):
        list(iter_pods_file("p.json", io.BytesIO(data + b" " * 64), max_bytes=len(data) + 10))


def test_a_pods_file_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "pods.json"
    with big.open("wb") as f:  # sparse: no disk used, the size is what counts
        f.truncate(MAX_PODS_FILE_BYTES + 1)
    with pytest.raises(ConfigError, match=r"pods.json is 2147483649 bytes, over the 2 GiB limit .*nothing was scanned"):
        check_pods_file(big)
    with big.open("r+b") as f:
        f.truncate(MAX_PODS_FILE_BYTES)
    check_pods_file(big)  # at the limit: accepted
    check_pods_file("-")  # standard input is bounded while it is read
    check_pods_file(tmp_path / "missing.json")  # reported by the reader, as before
