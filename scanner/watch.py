"""``sigaudit serve --watch``: each new running digest verified within seconds of its container starting.

A :class:`~scanner.inventory.watch.PodInformer` (list → watch, 410 → re-list, periodic re-list) hands
every pod it sees to :class:`Watcher`. A pod matters when one of its containers runs a digest that is
not *known*: known are the containers of the latest complete scan (its own verdicts and those the
watch added) and whatever the watch judged since. The key of a container (:func:`watch_key`) holds
everything its verdict depends on besides the policy: namespace (rules, exemptions), registry,
repository, digest, the spec's tag (an exemption may name it) and the pod's own pull secrets (the
credentials a verdict was reached with are never lent to other pods).

Such pods wait in a bounded queue keyed by pod uid (a later version of a pod replaces the queued one; a
deleted pod leaves the queue; beyond ``queue_max`` a pod is dropped, counted, and the informer re-lists
once the queue has room, so nothing is lost for good). One drainer takes them in batches and judges a
batch through the scan use case (:func:`scanner.scan.judge_pods`: the same pipeline and verification
cache as scans, at ``--registry-concurrency``) — a digest the cache already decided costs the cache's
cheap re-list, never a second verification. The verdicts of new keys are recorded against the latest
complete scan, marked ``source: watch`` (``Store.add_watch_verdicts``); the metrics read them from the
store, and notifications and policy reports follow (:func:`scanner.scan.after_watch`). Until a first
scan has completed, pods wait (the queue's bound holds): the watch records nothing without a scan.

Nothing here raises into the server: failures are logged and counted in :class:`WatchStatus`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from scanner import scan
from scanner.clock import Clock, system_clock
from scanner.errors import ParseError, SigauditError, StoreError
from scanner.inventory.pods import StaticOwnerResolver, containers_from_pod, namespace_selected
from scanner.inventory.references import parse_image_id, parse_reference
from scanner.inventory.watch import (
    DEFAULT_RELIST_EVERY,
    DEFAULT_TIMEOUT_SECONDS,
    PodInformer,
    pod_uid,
)
from scanner.models import ContainerRef, RunningImage, ScanResult, Verdict, VerdictSource

if TYPE_CHECKING:
    from scanner.store import Store

log = logging.getLogger(__name__)

DEFAULT_QUEUE_MAX = 5000
DEFAULT_BATCH_MAX = 200
BATCH_DEADLINE = 300.0  # seconds a batch may take (past it: error verdicts, as a scan's deadline gives)
# Watch verdicts one scan takes at most: pods that churn through new digests between two scans cannot grow
# the store without bound (the next scan judges what still runs). Beyond it the watch logs and waits.
MAX_VERDICTS_PER_SCAN = 20_000
AFTER_WATCH_EVERY = 30.0  # seconds between notifications/report updates while a backlog drains

WatchKey = tuple[str, str, str, str, str | None, tuple[str, ...]]


def watch_key(c: ContainerRef) -> WatchKey | None:
    """(namespace, registry, repository, digest, spec tag, pull secrets) of a container that runs a
    digest the runtime reported; None when it runs none we can read (the scan judges those)."""
    try:
        spec = parse_reference(c.image)
    except ParseError:
        return None
    id_ref, digest, _why = parse_image_id(c.image_id)
    if digest is None:
        return None
    repo = id_ref or spec
    return (c.namespace, repo.registry, repo.repository, digest, spec.tag, tuple(c.pull_secrets))


def _pod_keys(pod: dict[str, Any]) -> set[WatchKey]:
    try:
        containers = containers_from_pod(pod, StaticOwnerResolver())
    except Exception:  # a malformed pod: the scheduled scan reports it
        return set()
    return {k for c in containers if (k := watch_key(c)) is not None}


def _verdict_keys(v: Verdict) -> set[WatchKey]:
    if not isinstance(v.image, RunningImage):
        return set()
    return {k for c in v.image.containers if (k := watch_key(c)) is not None}


class PodQueue:
    """Pods waiting for their turn: first in, first out, one entry per pod uid, at most ``maximum``."""

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, uid: str, pod: dict[str, Any]) -> bool:
        """Queue (or replace the queued version of) a pod; False when the queue is full."""
        with self._cond:
            if uid not in self._items and len(self._items) >= self.maximum:
                return False
            self._items[uid] = pod
            self._cond.notify()
            return True

    def drop(self, uid: str) -> None:
        with self._cond:
            self._items.pop(uid, None)

    def drop_where(self, gone: Callable[[str, dict[str, Any]], bool]) -> int:
        with self._cond:
            doomed = [u for u, p in self._items.items() if gone(u, p)]
            for u in doomed:
                del self._items[u]
            return len(doomed)

    def take(self, n: int, timeout: float) -> list[dict[str, Any]]:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            out: list[dict[str, Any]] = []
            while self._items and len(out) < n:
                out.append(self._items.popitem(last=False)[1])
            return out

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass
class WatchStatus:
    """Counters and times (monotonic) for ``/readyz`` and ``/metrics``."""

    verdicts: int = 0  # watch verdicts recorded
    pods_judged: int = 0
    dropped: int = 0  # pods dropped because the queue was full
    batch_failures: int = 0
    last_verdict: float | None = None
    scan_id: int | None = None  # the scan watch verdicts are recorded against


class Watcher:
    """The watch of one cluster, for the serve process. ``start`` it; ``scan_finished`` after each
    scan; ``stop`` on shutdown."""

    def __init__(
        self,
        options: scan.ScanOptions,
        store: Store,
        *,
        clock: Clock = system_clock,
        api_client: Any = None,
        queue_max: int = DEFAULT_QUEUE_MAX,
        batch_max: int = DEFAULT_BATCH_MAX,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
        relist_every: float = DEFAULT_RELIST_EVERY,
        stale_after: float | None = None,
        resource_version: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.store = store
        self.clock = clock
        self._api = api_client
        self.queue = PodQueue(queue_max)
        self.batch_max = max(1, batch_max)
        self.timeout_seconds = timeout_seconds
        self.relist_every = relist_every
        # Stale: nothing heard from the API server for this long (a watch ends every timeout_seconds).
        self.stale_after = stale_after if stale_after is not None else 2.0 * timeout_seconds + 60.0
        self._resource_version = resource_version
        self._now = monotonic
        self.status = WatchStatus()
        self._known: set[WatchKey] = set()
        self._lock = threading.Lock()
        self._inputs: scan.ScanInputs | None = None
        self._inputs_stale = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.informers: list[PodInformer] = []
        self._overflowed = False
        self.started_at = monotonic()
        self._in_scan = 0  # watch verdicts recorded against status.scan_id
        self._drained_at = monotonic()  # the drainer last came round (a stuck batch makes the watch stale)
        self._after_pending: tuple[scan.ScanInputs, int] | None = None
        self._after_last = 0.0

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Seed the known digests from the latest complete scan and start the informer(s) and the drainer.
        Raises ConfigError/InventoryError when the kubeconfig cannot be loaded."""
        if self.options.pods_file:
            from scanner.errors import ConfigError

            raise ConfigError("--watch watches the Kubernetes API; it cannot watch a --pods-file", field="--watch")
        if self._api is None:
            from scanner.inventory.kube import load_api_client

            self._api = load_api_client(self.options.kubeconfig, self.options.context)
        self._seed_from_store()
        opts = self.options
        exact = [n for n in opts.namespaces if not any(ch in n for ch in "*?[")]
        scoped = bool(opts.namespaces) and len(exact) == len(opts.namespaces)
        targets: list[str | None] = list(dict.fromkeys(exact)) if scoped else [None]
        for ns in targets:
            informer = PodInformer(
                self._api, self, namespace=ns,
                selected=lambda n: namespace_selected(n, opts.namespaces, opts.exclude_namespaces),
                page_size=opts.page_size, timeout_seconds=self.timeout_seconds, relist_every=self.relist_every,
                resource_version=self._resource_version, monotonic=self._now,
            )
            self.informers.append(informer)
            self._threads.append(threading.Thread(target=informer.run, args=(self._stop,),
                                                  name=f"sigaudit-watch-{ns or 'all'}", daemon=True))
        self._threads.append(threading.Thread(target=self._drain, name="sigaudit-watch-drain", daemon=True))
        for t in self._threads:
            t.start()
        log.info("watch: started (%d informer(s), queue of at most %d pods)", len(self.informers),
                 self.queue.maximum)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for informer in self.informers:
            informer.stop()
        self.queue.wake()
        end = self._now() + timeout
        for t in self._threads:
            t.join(max(0.0, end - self._now()))

    def scan_finished(self, result: ScanResult) -> None:
        """A scan finished: a complete one is the new baseline (its containers are known; later watch
        verdicts go to it). The policy and credentials are reloaded before the next batch, and the
        informers list again so that pods the scan did not see are offered anew."""
        self._inputs_stale = True
        if result.scan_id is None or result.state.value != "complete":
            return
        keys = {k for v in result.verdicts for k in _verdict_keys(v)}
        with self._lock:
            self._known = keys
            if self.status.scan_id != result.scan_id:
                self._in_scan = int(result.stats.get("watch_verdicts") or 0) if isinstance(
                    result.stats.get("watch_verdicts"), int) else 0
            self.status.scan_id = result.scan_id
        self._drop_known()
        for informer in self.informers:
            informer.request_relist()

    def _seed_from_store(self) -> None:
        try:
            latest = self.store.latest_scan_id(self.options.cluster)
            result = self.store.load_scan(latest) if latest is not None else None
        except StoreError as exc:
            log.warning("watch: cannot read the latest scan (%s); waiting for the next one", exc.diagnostics())
            return
        if result is not None:
            self.scan_finished(result)

    # -- informer sink -----------------------------------------------------------------------------

    def pod_seen(self, pod: dict[str, Any]) -> None:
        keys = _pod_keys(pod)
        with self._lock:
            if not keys - self._known:
                new = False
            else:
                new = True
        uid = pod_uid(pod)
        if not new:
            self.queue.drop(uid)  # a queued older version of it may have been new
            return
        if not self.queue.put(uid, pod):
            self.status.dropped += 1
            if not self._overflowed:
                log.warning("watch: more than %d pods wait for verification; dropping new ones until the "
                            "queue drains (then the pods are listed again)", self.queue.maximum)
            self._overflowed = True

    def pod_gone(self, uid: str) -> None:
        self.queue.drop(uid)

    def listed(self, namespace: str | None, uids: set[str]) -> None:
        def gone(uid: str, pod: dict[str, Any]) -> bool:
            ns = str((pod.get("metadata") or {}).get("namespace") or "")
            return (namespace is None or ns == namespace) and uid not in uids

        self.queue.drop_where(gone)

    # -- draining ----------------------------------------------------------------------------------

    def _drop_known(self) -> None:
        with self._lock:
            known = set(self._known)
        self.queue.drop_where(lambda _uid, pod: not (_pod_keys(pod) - known))

    def _drain(self) -> None:
        while not self._stop.is_set():
            self._drained_at = self._now()
            if self.status.scan_id is None:  # nothing to record against yet
                self._stop.wait(1.0)
                continue
            batch = self.queue.take(self.batch_max, timeout=1.0)
            if self._overflowed and len(self.queue) < self.queue.maximum // 2:
                self._overflowed = False
                for informer in self.informers:  # what was dropped is offered again
                    informer.request_relist()
            if batch:
                try:
                    self.judge(batch)
                except Exception:  # never the server's end: the next re-list offers these pods again
                    self.status.batch_failures += 1
                    log.exception("watch: a batch of %d pods could not be judged", len(batch))
            self._after(flush=not len(self.queue))

    def _after(self, *, flush: bool) -> None:
        """Notifications and reports for the verdicts recorded since the last time: when the queue is
        empty, or every AFTER_WATCH_EVERY seconds while a backlog drains (each reads the whole scan)."""
        pending = self._after_pending
        if pending is None or not (flush or self._now() - self._after_last >= AFTER_WATCH_EVERY):
            return
        self._after_pending = None
        self._after_last = self._now()
        try:
            scan.after_watch(self.options, self.store, pending[0], pending[1], self.clock)
        except Exception:
            log.exception("watch: notifications / reports failed")

    def _current_inputs(self) -> scan.ScanInputs:
        if self._inputs is None or self._inputs_stale:
            self._inputs = scan.load_inputs(replace(self.options, deadline=None))
            self._inputs_stale = False
        return self._inputs

    def judge(self, pods: Iterable[dict[str, Any]]) -> list[Verdict]:
        """Judge a batch of pods and record the verdicts of their new keys. Returns those verdicts."""
        with self._lock:
            known = set(self._known)
            scan_id = self.status.scan_id
        pods = [p for p in pods if _pod_keys(p) - known]
        if not pods or scan_id is None:
            return []
        try:
            inputs = self._current_inputs()
        except SigauditError as exc:
            self.status.batch_failures += 1
            log.error("watch: cannot load the policy or credentials: %s", exc.diagnostics())
            return []
        capture = scan.watch_capture(self.store)  # the material of each verdict, for the scan's evidence pack
        result = scan.judge_pods(self.options, self.store if self.options.cache else None, inputs, pods, self._api,
                                 clock=self.clock, deadline=time.monotonic() + BATCH_DEADLINE, capture=capture)
        for problem in result.errors:
            log.warning("watch: %s", problem)
        with self._lock:
            known = set(self._known)
        new = [replace(v, source=VerdictSource.WATCH) for v in result.verdicts if _verdict_keys(v) - known]
        self.status.pods_judged += len(pods)
        if not new:
            return []
        if self._in_scan + len(new) > MAX_VERDICTS_PER_SCAN:
            self.status.batch_failures += 1
            log.error("watch: scan %d already holds %d watch verdicts; %d more are not recorded (the next scan "
                      "judges what still runs)", scan_id, self._in_scan, len(new))
            return []
        try:
            count = self.store.add_watch_verdicts(scan_id, self.options.cluster, new)
        except StoreError as exc:  # the scan was pruned, or the database is down: offered again at the re-list
            self.status.batch_failures += 1
            log.error("watch: cannot record %d verdicts: %s", len(new), exc.diagnostics())
            return []
        scan.keep_watch_evidence(self.store, scan_id, count, inputs, capture, new)
        with self._lock:
            if self.status.scan_id == scan_id:
                self._in_scan = count
                for v in new:
                    self._known |= _verdict_keys(v)
        self.status.verdicts += len(new)
        self.status.last_verdict = self._now()
        log.info("watch: %d new running image(s) judged: %s", len(new),
                 ", ".join(f"{v.image.display} {v.status.value}" for v in new[:5]) + (" …" if len(new) > 5 else ""))
        if inputs.notify is not None or self.options.cluster_reports:
            if self._after_pending is not None and self._after_pending[1] != scan_id:
                self._after(flush=True)  # the verdicts of the previous baseline are told first
            self._after_pending = (inputs, scan_id)
        return new

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(fresh, detail): fresh while every informer heard from the API server within ``stale_after``
        seconds (or the watch started less than that ago)."""
        now = self._now()
        informers = []
        fresh = True
        for i in self.informers:
            st = i.status
            since = st.last_watch if st.last_watch is not None else self.started_at
            ok = now - since <= self.stale_after
            fresh = fresh and ok
            informers.append({"namespace": i.namespace, "fresh": ok,
                              "seconds_since_watch": round(now - st.last_watch, 3)
                              if st.last_watch is not None else None,
                              "lists": st.lists, "gone": st.gone, "failures": st.failures,
                              "last_error": st.last_error})
        alive = all(t.is_alive() for t in self._threads) if self._threads else False
        # A batch past its deadline (and its notifications' bounds) is stuck: pods wait unjudged.
        stuck = now - self._drained_at > BATCH_DEADLINE + 120.0
        fresh = fresh and alive and not stuck
        return fresh, {"fresh": fresh, "queue": len(self.queue), "queue_max": self.queue.maximum,
                       "verdicts": self.status.verdicts, "dropped": self.status.dropped,
                       "batch_failures": self.status.batch_failures, "scan_id": self.status.scan_id,
                       "threads_alive": alive, "drain_stuck": stuck,
                       "informers": informers}
