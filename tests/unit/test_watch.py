"""``serve --watch``'s use case (scanner/watch.py) without sockets: which pods are new (the known keys of
the latest complete scan), the bounded queue (deleted pods leave it, a full one drops and asks for a
re-list), and the store side: watch verdicts recorded against a finished scan, marked, shown in the
document and picked up by the metrics. The informer and the real parts are in
tests/integration/test_serve_watch.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scanner.document import scan_document
from scanner.errors import StoreError
from scanner.metrics.collector import StoreSource
from scanner.models import (
    ContainerRef,
    ContainerType,
    ImageReference,
    RunningImage,
    ScanResult,
    ScanState,
    Status,
    Verdict,
    VerdictSource,
    Workload,
)
from scanner.scan import ScanOptions
from scanner.store import open_store, upgrade
from scanner.watch import Watcher, watch_key

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
REG = "reg.example"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def pod(name: str, digest: str | None, *, ns: str = "shop", tag: str = "1", secrets: tuple[str, ...] = (),
        repo: str = "app") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": f"{REG}/{repo}:{tag}"}]}
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    status = {"containerStatuses": [{"name": "c", "imageID": f"{REG}/{repo}@{digest}" if digest else ""}]}
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}"}, "spec": spec, "status": status}


def ctr(name: str, digest: str, ns: str = "shop", tag: str = "1") -> ContainerRef:
    return ContainerRef(ns, name, "c", ContainerType.CONTAINER, f"{REG}/app:{tag}", f"{REG}/app@{digest}",
                        Workload("Pod", name), pod_uid=f"uid-{ns}-{name}")


def scan_of(*containers: ContainerRef, state: ScanState = ScanState.COMPLETE, scan_id: int = 1) -> ScanResult:
    verdicts = tuple(
        Verdict(RunningImage(ImageReference(REG, "app", "1", c.image_id.rsplit("@", 1)[1]), (c,)),  # type: ignore[union-attr]
                Status.VERIFIED, ("ok",), rule="r")
        for c in containers)
    return ScanResult(cluster="c", started_at=T0, finished_at=T0 + timedelta(seconds=5), state=state,
                      verdicts=verdicts, policy_digest="sha256:p", scan_id=scan_id)


class _Store:
    """Only what Watcher touches before judging."""

    def latest_scan_id(self, cluster: str) -> int | None:
        return None


def watcher(queue_max: int = 100) -> Watcher:
    return Watcher(ScanOptions(cluster="c"), _Store(), api_client=object(), queue_max=queue_max)  # type: ignore[arg-type]


def test_only_pods_that_run_a_key_the_latest_complete_scan_did_not_judge_are_queued() -> None:
    w = watcher()
    w.scan_finished(scan_of(ctr("a", D1)))
    assert w.status.scan_id == 1
    w.pod_seen(pod("a2", D1))  # the same digest, namespace, tag and credentials: known
    w.pod_seen(pod("pending", None))  # no running digest yet: the scan judges it
    assert len(w.queue) == 0
    for p in (pod("b", D2), pod("other-ns", D1, ns="pay"), pod("tagged", D1, tag="debug"),
              pod("secret", D1, secrets=("regcred",))):
        w.pod_seen(p)
    # each of these differs in what a verdict depends on: namespace (rules, exemptions), the spec's tag
    # (an exemption may name it) and the pod's own pull secrets (never lent to other pods)
    assert len(w.queue) == 4


def test_a_partial_or_unrecorded_scan_is_no_baseline() -> None:
    w = watcher()
    w.scan_finished(scan_of(ctr("a", D1), state=ScanState.PARTIAL))
    assert w.status.scan_id is None
    w.pod_seen(pod("a", D1))
    assert len(w.queue) == 1


def test_deleted_and_unlisted_pods_leave_the_queue_and_a_known_version_replaces_a_new_one() -> None:
    w = watcher()
    w.scan_finished(scan_of(ctr("a", D1)))
    w.pod_seen(pod("b", D2))
    w.pod_seen(pod("c", D2, ns="pay"))
    w.pod_gone("uid-shop-b")
    assert len(w.queue) == 1
    w.listed("shop", set())  # another namespace's list leaves pay's pod alone
    assert len(w.queue) == 1
    w.listed(None, set())
    assert len(w.queue) == 0
    w.pod_seen(pod("d", D2))
    w.pod_seen(pod("d", D1))  # the pod now runs a known digest: its queued version is dropped
    assert len(w.queue) == 0


def test_a_new_baseline_drops_queued_pods_it_judged() -> None:
    w = watcher()
    w.scan_finished(scan_of(ctr("a", D1)))
    w.pod_seen(pod("b", D2))
    w.scan_finished(scan_of(ctr("a", D1), ctr("b", D2), scan_id=2))
    assert len(w.queue) == 0 and w.status.scan_id == 2


def test_a_full_queue_drops_counts_and_asks_for_a_relist() -> None:
    w = watcher(queue_max=2)
    w.scan_finished(scan_of(ctr("a", D1)))
    for i in range(5):
        w.pod_seen(pod(f"p{i}", D2, tag=str(i)))
    assert len(w.queue) == 2 and w.status.dropped == 3
    w.pod_seen(pod("p0", D2, tag="0"))  # a queued pod's new version replaces it even when full
    assert len(w.queue) == 2 and w.status.dropped == 3


def test_health_is_stale_without_news_from_the_api_server_or_with_a_stuck_drainer() -> None:
    now = [1000.0]
    w = Watcher(ScanOptions(cluster="c"), _Store(), api_client=object(), monotonic=lambda: now[0],  # type: ignore[arg-type]
                timeout_seconds=10, stale_after=30)
    assert w.health()[0] is False  # not started: no live thread is never fresh

    class Informer:
        namespace = None

        class status:  # a stand-in for InformerStatus
            last_watch: float | None = 1000.0
            lists = gone = failures = 0
            last_error = None

    class Alive:
        def is_alive(self) -> bool:
            return True

    w.informers = [Informer()]  # type: ignore[list-item]
    w._threads = [Alive()]  # type: ignore[list-item]
    assert w.health()[0] is True
    now[0] += 31
    fresh, detail = w.health()
    assert not fresh and detail["informers"][0]["fresh"] is False
    Informer.status.last_watch = now[0]
    w._drained_at = now[0] - 1000  # a batch that never returns
    fresh, detail = w.health()
    assert not fresh and detail["drain_stuck"] is True


def test_watch_key_is_the_inventorys_running_digest() -> None:
    c = ctr("a", D1)
    assert watch_key(c) == ("shop", REG, "app", D1, "1", ())
    assert watch_key(replace(c, image_id=None)) is None
    assert watch_key(replace(c, image_id="docker-pullable://" + f"{REG}/other@{D2}"))[2:4] == ("other", D2)  # type: ignore[index]


# -- the store side --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade(url)
    s = open_store(url)
    yield s
    s.close()


def _finished(store: Any, result: ScanResult) -> int:
    scan_id = store.begin_scan(result.cluster, result.started_at, result.policy_digest, "1")
    store.finish_scan(scan_id, result)
    return int(scan_id)


def test_watch_verdicts_are_recorded_against_a_finished_scan_marked_and_seen_by_the_metrics(store: Any) -> None:
    scan_id = _finished(store, scan_of(ctr("a", D1)))
    source = StoreSource(store, "c")
    assert len(source.views()[0].latest_complete.verdicts) == 1  # type: ignore[union-attr]
    new = Verdict(RunningImage(ImageReference(REG, "app", "1", D2), (ctr("b", D2),)), Status.UNSIGNED, ("none",),
                  rule="r", source=VerdictSource.WATCH)
    assert store.add_watch_verdicts(scan_id, "c", [new]) == 1
    loaded = store.load_scan(scan_id)
    assert [(v.digest, v.source) for v in loaded.verdicts] == [(D1, VerdictSource.SCAN), (D2, VerdictSource.WATCH)]
    assert [i["source"] for i in scan_document(loaded)["images"]] == ["scan", "watch"]
    from scanner.reports import render

    html = render.render_html(store, scan_id)
    assert html.count("found by watch") == 1
    # the metrics' cached scan is reloaded: the watch verdict counts at the next scrape
    assert len(source.views()[0].latest_complete.verdicts) == 2  # type: ignore[union-attr]
    # the scan's own summary stays what the scan found
    summary = store.scan_summary(scan_id)
    assert summary.total == 1 and summary.watch_verdicts == 1


def test_watch_verdicts_go_only_to_a_finished_scan_of_the_same_cluster(store: Any) -> None:
    scan_id = _finished(store, scan_of(ctr("a", D1)))
    running = store.begin_scan("c", T0 + timedelta(minutes=1), "sha256:p", "1")
    v = Verdict(RunningImage(ImageReference(REG, "app", "1", D2), (ctr("b", D2),)), Status.UNSIGNED, ("none",),
                source=VerdictSource.WATCH)
    with pytest.raises(StoreError):
        store.add_watch_verdicts(running, "c", [v])
    with pytest.raises(StoreError):
        store.add_watch_verdicts(scan_id, "other", [v])
    with pytest.raises(ValueError):
        store.add_watch_verdicts(scan_id, "c", [replace(v, source=VerdictSource.SCAN)])
