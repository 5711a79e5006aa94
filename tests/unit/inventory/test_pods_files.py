"""Pods -> containers (all three kinds), owners from pod-list files, streaming and bad input."""

import io
import json
import random
import threading
from collections.abc import Callable
from typing import Any

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


@pytest.mark.parametrize("raw", [b'"\xc0\x80"', b'{"kind": "Pod", "metadata": {"name": "p\xc0\x80"}}',
                                 b'{"items": [{"metadata": {"name": "p\xc0\x80"}}]}', b'{"items": [{"\xc0\x80": 1}]}',
                                 b'{"items": [], "\xe0\x80\x80": 1}'])
def test_an_overlong_utf8_sequence_is_a_parse_error_not_a_crash(raw: bytes) -> None:
    """yajl accepts overlong UTF-8 (C0 80) and ijson's decoding of the string then raised
    UnicodeDecodeError out of the parse: the scan died as an unexpected failure (exit 3)."""
    with pytest.raises(ParseError, match="not valid UTF-8"):
        list(iter_pods_file("f", io.BytesIO(raw)))


def _random_value(rng: random.Random, depth: int) -> object:
    pick = rng.randrange(9 if depth < 12 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.randrange(-2**63, 2**63)
    if pick == 3:
        return rng.choice([0.5, -1e300, 1e-7, 3.0])
    if pick < 6:
        return "".join(rng.choice('ab"\\\n{}[],:\u00e9\u2603') for _ in range(rng.randrange(6)))
    if pick < 8:
        keys = [rng.choice(["kind", "metadata", "spec", "a", "a", "items", ""]) for _ in range(rng.randrange(5))]
        return {k: _random_value(rng, depth + 1) for k in keys}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]


@pytest.mark.parametrize("seed", range(40))
def test_each_element_is_built_exactly_as_json_reads_it(seed: int) -> None:
    """The pod list's elements are built inline from ijson's events (not ijson's ObjectBuilder, a
    third of the CPU of a warm scan's parse): every element of `items` comes out as the standard
    library's json reads it (nesting, lists in lists, empty containers, duplicate keys: the last
    wins, numbers, escapes), in order, Pods and kind-less objects only."""
    rng = random.Random(seed)
    items = [{"kind": rng.choice(["Pod", "Pod", None, "Service"]), "metadata": {"name": f"p{i}"},
              "spec": _random_value(rng, 0), "x": [_random_value(rng, 0), []], "y": {}} for i in range(20)]
    text = json.dumps({"kind": "List", "metadata": {"a": [1, {}]}, "items": items}).replace(
        '"y": {}', '"y": {}, "x": "last"', seed % 3)  # a duplicate key in some elements
    want = [p for p in json.loads(text)["items"] if p.get("kind") in (None, "Pod")]
    assert list(iter_pods_file("x.json", io.BytesIO(text.encode()))) == want


def test_the_pods_of_one_replicaset_resolve_their_owner_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: every pod of a ReplicaSet worked out the same Deployment again (a regular expression
    and a model per pod); one resolver answers each distinct owner once."""
    from scanner.inventory import pods as pods_module

    real = pods_module._POD_TEMPLATE_HASH
    asked: list[str] = []

    class Counting:
        def match(self, name: str) -> object:
            asked.append(name)
            return real.match(name)

    monkeypatch.setattr(pods_module, "_POD_TEMPLATE_HASH", Counting())
    owners = StaticOwnerResolver()
    listing = [_pod(f"ns{i % 3}", f"web-abc12-{i}", [("c", "r.io/a:1", None)], owner=("ReplicaSet", "web-abc12"),
                    labels={"pod-template-hash": "abc12"}) for i in range(5)]
    assert {(c.workload.kind, c.workload.name) for p in listing for c in containers_from_pod(p, owners)} == {
        ("Deployment", "web")}
    assert asked == ["web-abc12"]


@pytest.mark.parametrize(("owner", "labels", "want"), [
    (("ReplicaSet", "web-abc12"), {"pod-template-hash": "abc12"}, ("Deployment", "web")),
    (("ReplicaSet", "web-abc12"), {"pod-template-hash": "abc13"}, ("ReplicaSet", "web-abc12")),
    (("ReplicaSet", "web-abc12"), {"pod-template-hash": "ABC12"}, ("ReplicaSet", "web-abc12")),
    (("ReplicaSet", "web-abc12"), {}, ("ReplicaSet", "web-abc12")),
    (("ReplicaSet", "web-abc12"), {"pod-template-hash": ["abc12"]}, ("ReplicaSet", "web-abc12")),
    (("ReplicaSet", "web-abc12"), {"pod-template-hash": 12}, ("ReplicaSet", "web-abc12")),
    (("ReplicaSet", "web-abc12 "), {"pod-template-hash": "abc12"}, ("ReplicaSet", "web-abc12 ")),
    (("Replicaset", "web-abc12"), {"pod-template-hash": "abc12"}, ("Replicaset", "web-abc12")),
    (("StatefulSet", "web-abc12"), {"pod-template-hash": "abc12"}, ("StatefulSet", "web-abc12")),
    (("ReplicaSet", "web-abc1"), {"pod-template-hash": "abc1"}, ("Deployment", "web")),
])
def test_lookalike_owners_never_share_a_remembered_workload(owner: tuple[str, str], labels: dict[str, object],
                                                           want: tuple[str, str]) -> None:
    """One resolver, asked first about a Deployment's pods, then about a pod whose owner differs in one
    field (the label, its case or type, the kind's case, a trailing space): each gets its own answer."""
    owners = StaticOwnerResolver()
    first = _pod("ns", "web-abc12-1", [("c", "r.io/a:1", None)], owner=("ReplicaSet", "web-abc12"),
                 labels={"pod-template-hash": "abc12"})
    assert containers_from_pod(first, owners)[0].workload.name == "web"
    pod = _pod("ns", "other-pod", [("c", "r.io/a:1", None)], owner=owner, labels=labels)
    w = containers_from_pod(pod, owners)[0].workload
    assert (w.kind, w.name) == want
    fresh = containers_from_pod(pod, StaticOwnerResolver())[0].workload
    assert (fresh.kind, fresh.name) == want


@pytest.mark.parametrize("keep", [False, True], ids=["whole", "keep"])
def test_an_element_with_containers_under_another_kind_is_reported_never_dropped(keep: bool) -> None:
    """An element of `items` whose kind is not "Pod" was left out unseen: a pod with ``kind: ["Pod"]``,
    ``1``, ``{}``, ``"pod"`` or ``""`` had its running images absent from a scan that said "complete",
    exit 0. Such an element is reported as a skipped pod (the scan is partial); another kind of object
    (a Service, a Deployment of ``kubectl get all``) is still left out, and a Pod is read as one."""
    from scanner.inventory.pods import INVENTORY_FIELDS

    def pod(name: str, kind: object) -> dict[str, object]:
        p = _pod("ns", name, [("c", "r.io/a:1", f"r.io/a@{D1}")])
        p["kind"] = kind
        return p

    odd = {"list": ["Pod"], "int": 1, "map": {"kind": "Pod"}, "null-ish": False, "lower": "pod", "empty": "",
           "spaced": "Pod ", "podlist": "PodList"}
    items = [pod(n, k) for n, k in odd.items()] + [pod("ok", "Pod")]
    items.append({"kind": "Service", "metadata": {"namespace": "ns", "name": "svc"}, "spec": {"ports": []}})
    items.append({"kind": "Deployment", "metadata": {"namespace": "ns", "name": "web"},
                  "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "r.io/a:1"}]}}}})
    items.append({"kind": "List", "metadata": {}, "items": [pod("nested", "Pod")]})
    raw = json.dumps({"kind": "List", "items": items}).encode()
    inv = build_inventory(iter_pods_file("pods.json", io.BytesIO(raw), keep=INVENTORY_FIELDS if keep else None))
    assert {c.pod for cs in inv.running.values() for c in cs} == {"ok"}
    skipped = sorted(p.split(" ")[1] for p in inv.problems)
    assert skipped == sorted([f"ns/{n}" for n in odd] + ["?/?"]), inv.problems  # the nested List too
    assert all("skipped" in p and "kind" in p for p in inv.problems)


@pytest.mark.parametrize("keep", [False, True], ids=["whole", "keep"])
@pytest.mark.parametrize("shape", ["kind", "containers"])
def test_a_pod_that_also_has_items_is_refused_not_read_as_an_empty_list(keep: bool, shape: str) -> None:
    """A document that is a Pod (its kind, or its own containers) and also has `items`: only the items
    were read, so the pod's own running images were absent from a scan that said "complete"."""
    from scanner.inventory.pods import INVENTORY_FIELDS

    doc: dict[str, object] = _pod("ns", "top", [("c", "r.io/a:1", f"r.io/a@{D1}")])
    if shape == "containers":
        doc["kind"] = "List"
    else:
        doc["spec"] = {}
    doc["items"] = []
    raw = json.dumps(doc).encode()
    with pytest.raises(ParseError, match="also a Pod"):
        list(iter_pods_file("pods.json", io.BytesIO(raw), keep=INVENTORY_FIELDS if keep else None))


@pytest.mark.parametrize("keep", [False, True], ids=["whole", "keep"])
@pytest.mark.parametrize("before", ["nothing", "another namespace"])
def test_an_unreadable_pod_is_never_dropped_by_the_namespace_filter(keep: bool, before: str) -> None:
    """A pod cut off (too deep) before its namespace was read came out as namespace "default": under
    ``--namespace prod`` the filter dropped it unseen, and the scan of prod said "complete" without its
    images. With the namespace read from the first of duplicate keys (json takes the last), likewise."""
    from scanner.inventory.pods import INVENTORY_FIELDS, select_namespaces

    nest = "[" * 150 + "]" * 150
    early = '"metadata": {"namespace": "other"}, ' if before != "nothing" else ""
    cut = '"spec": {"containers": [{"name": "c", "image": ' + nest + "}]}"  # overridden by the real spec
    pod = json.dumps(_pod("prod", "victim", [("c", "r.io/a:1", f"r.io/a@{D1}")])).replace(
        '"kind": "Pod"', '"kind": "Pod", ' + early + cut, 1)
    raw = ('{"kind": "List", "items": [' + pod + "]}").encode()
    pods = select_namespaces(iter_pods_file("pods.json", io.BytesIO(raw), keep=INVENTORY_FIELDS if keep else None),
                             ["prod"], [])
    inv = build_inventory(pods)
    assert len(inv.problems) == 1 and "nested deeper than" in inv.problems[0], inv.problems


@pytest.mark.parametrize("metadata", ["ns", None, ["ns"], "absent"])
def test_a_pod_without_a_metadata_object_is_never_dropped_by_the_namespace_filter(metadata: object) -> None:
    """A pod whose metadata is not an object read as namespace "default": ``--namespace prod`` dropped it
    unseen (its images absent from a "complete" scan) where the inventory reports it as skipped."""
    from scanner.inventory.pods import select_namespaces

    pod = _pod("prod", "victim", [("c", "r.io/a:1", f"r.io/a@{D1}")])
    pod["metadata"] = metadata
    if metadata == "absent":
        del pod["metadata"]
    inv = build_inventory(select_namespaces([pod], ["prod"], []))
    assert len(inv.problems) == 1 and "without metadata" in inv.problems[0], inv.problems


def test_a_fifo_whose_data_another_reader_takes_still_ends_at_the_deadline(tmp_path, monkeypatch) -> None:
    """A FIFO can have a second reader: what poll() saw ready it may take first. The FIFO was read blocking
    after poll, so that read waited for the next bytes, past any deadline (the scan held until killed). Here
    the thief is a poll that drains the FIFO before it answers "ready", every time."""
    import os
    import select
    import time

    from scanner.errors import InventoryError

    fifo = tmp_path / "pods.fifo"
    os.mkfifo(fifo)
    real_poll = select.poll

    class Thief:
        def __init__(self) -> None:
            self._p = real_poll()
            self._fds: list[int] = []

        def register(self, fd: int, mask: int) -> None:
            self._fds.append(fd)
            self._p.register(fd, mask)

        def poll(self, timeout: float | None = None) -> list:
            ready = self._p.poll(timeout)
            if ready:
                thief = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    while True:
                        try:
                            if not os.read(thief, 1 << 16):
                                break
                        except BlockingIOError:
                            break
                finally:
                    os.close(thief)
            return ready

    monkeypatch.setattr(select, "poll", Thief)
    writer_fd: list[int] = []
    reader, outcome = _read_in_a_thread(fifo, lambda: time.monotonic() + 2)
    time.sleep(0.3)
    writer_fd.append(os.open(fifo, os.O_WRONLY))
    os.write(writer_fd[0], b'{"kind": "List", ')  # ready, taken, and the writer stays silent and open
    reader.join(timeout=8)
    hung = reader.is_alive()
    os.close(writer_fd[0])  # releases a read blocked on the old code
    reader.join(timeout=5)
    assert not hung, "the read waited past the deadline"
    assert len(outcome) == 1 and isinstance(outcome[0], InventoryError), outcome
    assert "the scan deadline passed" in str(outcome[0])


@pytest.mark.parametrize("deadline_s", [None, 60.0])
def test_a_stop_request_ends_the_wait_for_a_fifos_writer(tmp_path, deadline_s: float | None) -> None:
    """The scan's stop request (SIGTERM's handler sets it; a signal never interrupts a thread's poll) was
    looked at only after the pod list was read: a FIFO no writer opens held the scan until --deadline, or
    forever. The wait looks at it every STOP_CHECK_S: InterruptedError, as a stop elsewhere in a scan."""
    import os
    import threading
    import time

    from scanner.inventory.pods import STOP_CHECK_S

    fifo = tmp_path / "pods.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()
    reader, outcome = _read_in_a_thread(
        fifo, lambda: None if deadline_s is None else time.monotonic() + deadline_s, stop=stop)
    time.sleep(0.3)
    assert reader.is_alive() and not outcome, outcome
    stop.set()
    set_at = time.monotonic()
    reader.join(timeout=10)
    took = time.monotonic() - set_at
    hung = reader.is_alive()
    if hung:  # releases the reader of the old code: a writer that opens and closes (EOF)
        os.close(os.open(fifo, os.O_WRONLY))
        reader.join(timeout=5)
    assert not hung, "the wait for a writer ignored the stop request"
    assert took < STOP_CHECK_S + 1, took
    assert len(outcome) == 1 and isinstance(outcome[0], InterruptedError), outcome
    assert "a stop was requested while the pod list" in str(outcome[0]) and str(fifo) in str(outcome[0])


def test_a_stop_request_ends_the_read_of_a_regular_file_too() -> None:
    """Every read looks at it: a long pod list from a file is not read to its end once a stop came."""
    import io
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError, match="a stop was requested"):
        list(iter_pods_file("pods.json", io.BytesIO(b'{"kind": "List", "items": []}'), stop=stop))


def _read_in_a_thread(path: Any, deadline: Callable[[], float | None],
                      **kw: Any) -> tuple[threading.Thread, list[BaseException | None]]:
    """``iter_pods_file(path)`` read to its end on a thread (started); the outcome list gets None, or what
    it raised. ``deadline()`` is taken on the thread, as the reader starts."""
    outcome: list[BaseException | None] = []

    def scan() -> None:
        try:
            list(iter_pods_file(path, deadline=deadline(), **kw))
            outcome.append(None)
        except BaseException as exc:  # reported by the caller
            outcome.append(exc)

    reader = threading.Thread(target=scan, daemon=True)
    reader.start()
    return reader, outcome
