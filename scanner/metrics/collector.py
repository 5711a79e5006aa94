"""A custom Prometheus collector: fresh metric families on every collection, computed from the store.

One code path for both ways sigaudit runs: ``sigaudit serve`` registers :class:`SigauditCollector` over
a :class:`StoreSource` and answers ``/metrics`` with it; the one-shot ``sigaudit scan`` pushes (or writes)
what the very same collector yields over the same store, or — with ``--no-store`` — over a
:class:`ResultSource` that presents the fresh result as a one-scan store. The values therefore mean the
same whichever way they reach Prometheus.

Verdict series describe the latest *complete* scan of each cluster (a half-written or failed scan is
never shown as the state of the cluster); ``last_completion``/``last_scan_state`` describe the latest
finished scan of any state.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scanner.errors import StoreError
from scanner.inventory.references import tag_reference_containers
from scanner.metrics import names as n
from scanner.models import RunningImage, ScanResult, ScanState, Verdict, Workload, image_counts, image_identity
from scanner.store import DiskUsage, Store

log = logging.getLogger(__name__)

FINISHED_STATES = (ScanState.COMPLETE, ScanState.PARTIAL, ScanState.FAILED)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the metrics of one cluster are computed from."""

    cluster: str
    latest_complete: ScanResult | None
    last_finished_state: ScanState | None = None
    last_finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """A cluster as a scrape first sees it: cheap to read, and naming what its view would be."""

    cluster: str
    # Equal revisions give equal views (so the same families); None: never reuse what was computed.
    revision: Hashable | None
    scan_id: int | None = None  # the scan the view is read from (a store source)
    last_finished_state: ScanState | None = None
    last_finished_at: datetime | None = None


class MetricsSource(Protocol):
    """Where the collector reads scans from: the store, or one fresh ScanResult."""

    from_store: bool

    def heads(self) -> Sequence[Head]:
        """One head per cluster, without loading any scan; raises StoreError when the database cannot
        be read."""
        ...

    def view(self, head: Head) -> ClusterView:
        """The view ``head`` names (loads its scan); raises StoreError."""
        ...

    def label_cluster(self) -> str:
        """The ``cluster`` label of series that are not about one scan (``sigaudit_store_up``)."""
        ...

    def disk_usage(self) -> DiskUsage | None:
        """The database's size and room left (None: not a database). Raises StoreError."""
        ...


class ResultSource:
    """A single ScanResult, seen as a store holding that one scan (``scan --no-store``)."""

    from_store = False

    def __init__(self, result: ScanResult) -> None:
        self._result = result

    def heads(self) -> Sequence[Head]:
        return [Head(self._result.cluster, None)]

    def view(self, head: Head) -> ClusterView:
        r = self._result
        if r.state == ScanState.RUNNING:
            return ClusterView(r.cluster, None)
        return ClusterView(r.cluster, r if r.state == ScanState.COMPLETE else None, r.state, r.finished_at)

    def views(self) -> Sequence[ClusterView]:
        return [self.view(h) for h in self.heads()]

    def label_cluster(self) -> str:
        return self._result.cluster

    def disk_usage(self) -> DiskUsage | None:
        return None


class StoreSource:
    """The latest scans in the database, of one cluster or of every cluster it holds.

    Its heads are two statements whatever the number of clusters (``Store.heads``); a head's revision is
    its latest complete scan's (id and stored stats: the only way a finished scan is written again) and
    its last finished scan's state and time. It caches nothing: the collector keeps each cluster's
    families by that revision, so a scrape loads a scan only after a new one finished or the stored
    one changed.
    """

    from_store = True

    def __init__(self, store: Store, cluster: str | None = None) -> None:
        self.store = store
        self.cluster = cluster

    def label_cluster(self) -> str:
        return self.cluster or ""

    def disk_usage(self) -> DiskUsage | None:
        return self.store.disk_usage()

    def heads(self) -> Sequence[Head]:
        return [Head(h.cluster, (h.latest_revision, h.last_finished_state, h.last_finished_at),
                     h.latest_complete, h.last_finished_state, h.last_finished_at)
                for h in self.store.heads(self.cluster or None)]

    def view(self, head: Head) -> ClusterView:
        latest = self.store.load_scan(head.scan_id) if head.scan_id is not None else None
        return ClusterView(head.cluster, latest, head.last_finished_state, head.last_finished_at)

    def views(self) -> Sequence[ClusterView]:
        return [self.view(h) for h in self.heads()]


def _ts(value: datetime) -> float:
    return value.timestamp()


def _split_key(key: str) -> tuple[str, str]:
    registry, _, code = str(key).rpartition("|")
    return (registry, code) if registry else (str(key), "")


def _image_label(v: Verdict) -> tuple[str, str]:
    img = v.image
    ref = img.reference
    if ref is None:
        return img.image, ""  # type: ignore[union-attr]
    text = ref.repo + (f":{ref.tag}" if ref.tag else "")
    return text, (img.digest if isinstance(img, RunningImage) else (ref.digest or ""))


def _gauge(series: n.Series) -> GaugeMetricFamily:
    return GaugeMetricFamily(series.name, series.help, labels=list(series.labels))


def _sorted_add(family: GaugeMetricFamily, values: dict[tuple[str, ...], float]) -> None:
    for labels, value in sorted(values.items()):
        family.add_metric(list(labels), value)


def families_for(view: ClusterView, *, per_image: bool = False) -> list[Metric]:
    """The metric families of one cluster. Pure: the same view gives the same families."""
    c = view.cluster
    out: list[Metric] = []
    if view.last_finished_at is not None and view.last_finished_state is not None:
        f = _gauge(n.LAST_COMPLETION)
        f.add_metric([c], _ts(view.last_finished_at))
        out.append(f)
        f = _gauge(n.LAST_STATE)
        for state in FINISHED_STATES:
            f.add_metric([c, state.value], 1.0 if state == view.last_finished_state else 0.0)
        out.append(f)
    r = view.latest_complete
    if r is None:
        return out

    f = _gauge(n.SCAN_INFO)
    f.add_metric([c, str(r.scan_id) if r.scan_id is not None else "", r.policy_digest, r.sigaudit_version], 1.0)
    out.append(f)
    f = _gauge(n.LAST_SUCCESS)
    f.add_metric([c], _ts(r.finished_at))
    out.append(f)
    f = _gauge(n.SCAN_DURATION)
    f.add_metric([c], max(0.0, (r.finished_at - r.started_at).total_seconds()))
    out.append(f)

    images: Counter[tuple[str, ...]] = Counter()
    containers: Counter[tuple[str, ...]] = Counter()
    ns_total: Counter[str] = Counter()
    ns_compliant: Counter[str] = Counter()
    expiring: Counter[str] = Counter()
    not_after: dict[str, datetime] = {}
    workloads: Counter[tuple[str, ...]] = Counter()
    verifications: Counter[tuple[str, ...]] = Counter()
    image_info: dict[tuple[str, ...], float] = {}
    image_not_after: dict[tuple[str, ...], float] = {}
    # One image per namespace however many credential sets judged it (image_identity), counted once
    # under the status of its first non-compliant verdict (fail closed: compliant only if every verdict is).
    ns_images: dict[tuple[str, tuple[object, ...]], Verdict] = {}
    for v in r.verdicts:
        status, compliant = v.status.value, "true" if v.compliant else "false"
        by_ns: dict[str, int] = defaultdict(int)
        for ctr in v.image.containers:
            by_ns[ctr.namespace] += 1
            if not v.compliant:
                workloads[(c, ctr.namespace, ctr.workload.kind, workload_label(ctr.workload), status)] += 1
        for sig in v.signatures:
            verifications[(c, sig.kind, sig.outcome.value, sig.failure.value or "none")] += 1
        image, digest = _image_label(v) if per_image else ("", "")
        for ns, count in by_ns.items():
            seen = (ns, image_identity(v))
            if seen not in ns_images or (ns_images[seen].compliant and not v.compliant):
                ns_images[seen] = v
            containers[(c, ns, status, compliant)] += count
            expiring[ns] += 1 if v.expiring else 0
            if v.not_after is not None and (ns not in not_after or v.not_after < not_after[ns]):
                not_after[ns] = v.not_after
            if per_image:
                image_info[(c, ns, image, digest, status, compliant, v.rule or "")] = 1.0
                if v.not_after is not None:
                    key = (c, ns, image, digest)
                    image_not_after[key] = min(_ts(v.not_after), image_not_after.get(key, float("inf")))

    for (ns, _image), worst in ns_images.items():
        images[(c, ns, worst.status.value, "true" if worst.compliant else "false")] += 1
        ns_total[ns] += 1
        ns_compliant[ns] += 1 if worst.compliant else 0
    for series, values in (
        (n.IMAGES, images),
        (n.CONTAINERS, containers),
        (n.NAMESPACE_COMPLIANCE, {(c, ns): ns_compliant[ns] / ns_total[ns] for ns in ns_total}),
        (n.COMPLIANCE, {(c,): _ratio(r)}),
        (n.NONCOMPLIANT_WORKLOADS, capped(workloads, n.MAX_WORKLOAD_SERIES, keep=(0, 4))),
        (n.EXPIRING, {(c, ns): expiring[ns] for ns in ns_total}),
        (n.NAMESPACE_NOT_AFTER, {(c, ns): _ts(t) for ns, t in not_after.items()}),
        (n.VERIFICATIONS, verifications),
        (n.REGISTRY_REQUESTS, capped(_registry(c, r.stats.get("registry_requests")), n.MAX_REGISTRY_SERIES)),
        (n.REGISTRY_ERRORS, capped(_registry(c, r.stats.get("registry_errors")), n.MAX_REGISTRY_SERIES)),
    ):
        f = _gauge(series)
        _sorted_add(f, {k: float(val) for k, val in values.items()})
        out.append(f)
    out.append(_tag_references(c, r))
    out.append(_admission_bypass(c, r))
    failed = r.stats.get("notifications_failed")
    if isinstance(failed, dict) and failed:
        f = _gauge(n.NOTIFICATIONS_FAILED)
        _sorted_add(f, {(c, str(k)): float(v) for k, v in failed.items() if isinstance(v, int | float)})
        out.append(f)
    if per_image:
        for series, values in ((n.IMAGE_INFO, image_info), (n.IMAGE_NOT_AFTER, image_not_after)):
            f = _gauge(series)
            _sorted_add(f, values)
            out.append(f)
    return out


def workload_label(w: Workload) -> str:
    """The ``workload`` label: the owner's name, but never a bare pod's (generated, new at every
    rollout, one series each): those share one fixed value."""
    return n.BARE_POD if w.kind == "Pod" else w.name


def capped(values: Mapping[tuple[str, ...], float], limit: int, *,
           keep: tuple[int, ...] = (0,)) -> dict[tuple[str, ...], float]:
    """At most ``limit`` series: the largest (ties by labels), and the rest summed into series whose
    labels are ``OTHER`` except those at the ``keep`` positions (the cluster; a bounded enum)."""
    if len(values) <= limit:
        return dict(values)
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:limit])
    for labels, value in ranked[limit:]:
        key = tuple(x if i in keep else n.OTHER for i, x in enumerate(labels))
        out[key] = out.get(key, 0.0) + value
    return out


def _tag_references(cluster: str, r: ScanResult) -> Metric:
    """Containers naming a tag rather than a digest, per namespace (every namespace with containers,
    0 when none): one series per namespace, never per image."""
    counts: Counter[str] = Counter({ctr.namespace: 0 for v in r.verdicts for ctr in v.image.containers})
    counts.update(ctr.namespace for ctr in tag_reference_containers(
        ctr for v in r.verdicts for ctr in v.image.containers))
    f = _gauge(n.TAG_REFERENCES)
    _sorted_add(f, {(cluster, ns): float(count) for ns, count in counts.items()})
    return f


def _admission_bypass(cluster: str, r: ScanResult) -> Metric:
    """Containers running despite an imported admission policy, per namespace and likely cause (a
    bounded enumeration), capped like the workloads' series."""
    counts: Counter[tuple[str, ...]] = Counter()
    for v in r.verdicts:
        if v.admission is not None:
            counts.update((cluster, ctr.namespace, v.admission.likely_cause.value) for ctr in v.image.containers)
    f = _gauge(n.ADMISSION_BYPASS)
    _sorted_add(f, capped({k: float(x) for k, x in counts.items()}, n.MAX_ADMISSION_SERIES, keep=(0, 2)))
    return f


def _ratio(r: ScanResult) -> float:
    counts = image_counts(r.verdicts)  # distinct images, as the JSON document's summary counts them
    return counts.compliant / counts.images if counts.images else 1.0


def _registry(cluster: str, counts: object) -> dict[tuple[str, ...], float]:
    if not isinstance(counts, dict):
        return {}
    out: dict[tuple[str, ...], float] = {}
    for key, value in counts.items():
        registry, code = _split_key(key)
        out[(cluster, registry, code)] = out.get((cluster, registry, code), 0.0) + float(value)
    return out


def merge(families: Iterable[Metric]) -> list[Metric]:
    """Join same-named families of several clusters into one family each (one HELP/TYPE per name)."""
    merged: dict[str, Metric] = {}
    for fam in families:
        into = merged.get(fam.name)
        if into is None:  # a new family: the given ones stay as they are (the collector caches them)
            into = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
        into.samples.extend(fam.samples)
    return list(merged.values())


class SigauditCollector(Collector):
    """Register in a ``CollectorRegistry``; every ``collect()`` reads the source afresh."""

    def __init__(self, source: MetricsSource, *, per_image: bool = False) -> None:
        self.source = source
        self.per_image = per_image
        # cluster -> (the head revision its families were computed from, the families): the one cache
        # of the metrics path. A stored complete scan changes only through its stats, which are in the
        # revision, so a scrape recomputes a cluster's series only after a new scan finished or the
        # stored one changed (loading and computing them from a 10,000-pod scan costs more than a scrape
        # may take).
        self._families: dict[str, tuple[Hashable, list[Metric]]] = {}
        self._lock = threading.Lock()

    def _families_of(self, head: Head) -> list[Metric]:
        if head.revision is None:
            return families_for(self.source.view(head), per_image=self.per_image)
        with self._lock:
            cached = self._families.get(head.cluster)
        if cached is not None and cached[0] == head.revision:
            return cached[1]
        families = families_for(self.source.view(head), per_image=self.per_image)
        with self._lock:
            self._families[head.cluster] = (head.revision, families)
        return families

    def _all_families(self, heads: Sequence[Head]) -> list[Metric]:
        out = [fam for head in heads for fam in self._families_of(head)]
        current = {h.cluster for h in heads}
        with self._lock:  # a cluster whose scans are all gone (db prune) leaves the cache too
            for gone in [c for c in self._families if c not in current]:
                del self._families[gone]
        return out

    def prime(self) -> None:
        """Load and compute what the next scrape will ask for (``serve`` calls it in the scan's thread when
        a scan finished): the first scrape after a scan would otherwise load the whole scan, 0.6-0.7 s at
        10,000 pods on PostgreSQL (bench/fleet.py), past a scrape's budget."""
        for _ in self.collect():
            pass

    def describe(self) -> Iterable[Metric]:
        return []  # no collection (no database query) at registration time

    def _disk(self) -> Iterator[Metric]:
        try:
            usage = self.source.disk_usage()
        except StoreError as exc:
            log.warning("metrics: cannot read the database size: %s", exc.diagnostics())
            return
        if usage is None:
            return
        label = [self.source.label_cluster()]
        for series, value in ((n.STORE_SIZE, usage.database_bytes), (n.STORE_FREE, usage.free_bytes),
                              (n.STORE_VOLUME, usage.volume_bytes), (n.STORE_CAPACITY, usage.capacity_bytes)):
            if value is not None:
                f = _gauge(series)
                f.add_metric(label, float(value))
                yield f

    def collect(self) -> Iterator[Metric]:
        try:
            heads = self.source.heads()
            families = self._all_families(heads)
        except StoreError as exc:
            log.warning("metrics: cannot read the store: %s", exc.diagnostics())
            if self.source.from_store:
                f = _gauge(n.STORE_UP)
                f.add_metric([self.source.label_cluster()], 0.0)
                yield f
            return
        if self.source.from_store:
            f = _gauge(n.STORE_UP)
            f.add_metric([self.source.label_cluster()], 1.0)
            yield f
            yield from self._disk()
        yield from merge(families)
