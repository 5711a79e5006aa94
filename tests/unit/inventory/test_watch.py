"""The pod informer's pure parts: pods slimmed to what the inventory reads, and events (with their
resourceVersion bookkeeping) handed to the sink. The requests are tested against the real API server in
tests/integration/test_serve_watch.py."""

from __future__ import annotations

from typing import Any

from scanner.inventory.pods import StaticOwnerResolver, containers_from_pod
from scanner.inventory.watch import PodInformer, slim_pod
from tests.harness.demo import _pod


class Sink:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.gone: list[str] = []

    def pod_seen(self, pod: dict[str, Any]) -> None:
        self.seen.append(pod["metadata"]["name"])

    def pod_gone(self, uid: str) -> None:
        self.gone.append(uid)

    def listed(self, namespace: str | None, uids: set[str]) -> None:
        pass


def full_pod() -> dict[str, Any]:
    p = _pod("shop", "web-7d4b9c-x1", [("app", "reg/app:1", "reg/app@sha256:" + "a" * 64)],
             owner=("ReplicaSet", "web-7d4b9c"), labels={"pod-template-hash": "7d4b9c", "team": "x"},
             init=[("init", "reg/init:1", "reg/init@sha256:" + "b" * 64)], pull_secrets=["regcred"])
    p["metadata"]["annotations"] = {"big": "x" * 100_000}
    p["metadata"]["managedFields"] = [{"manager": "kubelet"}] * 50
    p["spec"]["containers"][0]["env"] = [{"name": "SECRET", "value": "hunter2"}]
    return p


def test_a_slim_pod_keeps_exactly_what_the_inventory_reads() -> None:
    full = full_pod()
    slim = slim_pod(full)
    assert slim is not None
    owners = StaticOwnerResolver()
    assert containers_from_pod(slim, owners) == containers_from_pod(full, owners)
    text = repr(slim)
    assert len(text) < 2000 and "hunter2" not in text and "managedFields" not in text and "team" not in text
    assert slim_pod("not a pod") is None and slim_pod({"metadata": {}}) is None


def test_events_reach_the_sink_and_move_the_resource_version() -> None:
    sink = Sink()
    informer = PodInformer(None, sink, selected=lambda ns: ns != "kube-system")
    pod = full_pod()
    pod["metadata"]["resourceVersion"] = "10"
    assert informer._event({"type": "ADDED", "object": pod}, "5") == "10"
    assert informer._event({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}, "10") == "12"
    assert informer._event({"type": "DELETED", "object": {**pod, "metadata": {**pod["metadata"],
                                                                               "resourceVersion": "13"}}}, "12") == "13"
    other = {**pod, "metadata": {**pod["metadata"], "namespace": "kube-system", "resourceVersion": "14"}}
    assert informer._event({"type": "MODIFIED", "object": other}, "13") == "14"  # not selected: only the version
    assert informer._event({"type": "WHAT", "object": pod}, "14") == "14"
    assert informer._event(["not", "an", "event"], "14") == "14"
    assert sink.seen == ["web-7d4b9c-x1"] and sink.gone == ["uid-shop-web-7d4b9c-x1"]
    assert informer.status.events == 5


def test_a_pod_the_sink_cannot_handle_never_stops_the_informer() -> None:
    class Failing(Sink):
        def pod_seen(self, pod: dict[str, Any]) -> None:
            if pod["metadata"]["name"] == "evil":
                raise RuntimeError("boom")
            super().pod_seen(pod)

    sink = Failing()
    informer = PodInformer(None, sink)
    evil, ok = full_pod(), full_pod()
    evil["metadata"] = {**evil["metadata"], "name": "evil", "resourceVersion": "2"}
    ok["metadata"] = {**ok["metadata"], "name": "ok", "resourceVersion": "3"}
    assert informer._event({"type": "ADDED", "object": evil}, "1") == "2"
    assert informer._event({"type": "ADDED", "object": ok}, "2") == "3"
    assert sink.seen == ["ok"]
