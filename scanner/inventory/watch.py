"""A pod informer over the ``kubernetes`` client's watch, for ``sigaudit serve --watch``.

list (paged, raw JSON) → watch from the list's ``resourceVersion`` (``allowWatchBookmarks``, a
server-side ``timeoutSeconds``), the resourceVersion kept from every event and BOOKMARK → the watch
resumed from it when the server ends it → ``410 Gone`` (the version was compacted away): a re-list →
a periodic re-list anyway (``relist_every``), which also forgets pods whose deletion was missed. A
failed request is retried after a bounded, jittered exponential backoff; nothing here ever ends the
process, and :class:`InformerStatus` says when the informer last heard from the API server.

Calls (for ``helm/rbac_from_code.py``): ``CoreV1Api.list_pod_for_all_namespaces`` /
``list_namespaced_pod`` (pods: list) and the same through ``Watch().stream`` (pods: watch).

Pods are handed on slimmed to what the inventory reads (:func:`slim_pod`): a queue of a thousand pods
never holds their annotations, env or managed fields.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 240  # the API server ends each watch after this long (then it is resumed)
DEFAULT_RELIST_EVERY = 600.0  # seconds between full re-lists
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # seconds before retrying a failed list or watch
CONNECT_TIMEOUT = 10.0
READ_SLACK = 30.0  # seconds past timeoutSeconds before a silent watch connection is given up
_SPEC_KEYS = ("containers", "initContainers", "ephemeralContainers")
_STATUS_KEYS = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")
MAX_OWNER_REFS = 16


class PodSink(Protocol):
    """Where the informer delivers what it sees."""

    def pod_seen(self, pod: dict[str, Any]) -> None:
        """A pod was listed, added or modified (slimmed, see :func:`slim_pod`)."""

    def pod_gone(self, uid: str) -> None:
        """A pod was deleted."""

    def listed(self, namespace: str | None, uids: set[str]) -> None:
        """A full list of ``namespace`` (None: every namespace) found exactly these pods."""


class Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list."""


@dataclass
class InformerStatus:
    """What the informer last did, for ``/readyz`` and the metrics (monotonic seconds)."""

    last_contact: float | None = None  # a list page, an event or a BOOKMARK arrived; a watch ended cleanly
    # The watch itself (an event, a BOOKMARK, a watch the server ended): what "within seconds" rests on.
    # Periodic re-lists alone (a watch refused, say by RBAC without the watch verb) leave it behind.
    last_watch: float | None = None
    last_list: float | None = None
    lists: int = 0
    gone: int = 0  # 410 Gone answers (each followed by a re-list)
    failures: int = 0  # failed requests (each followed by a backoff)
    events: int = 0
    last_error: str | None = None
    resource_version: str | None = None


def _names(items: Any, keep: tuple[str, ...]) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        return items  # type: ignore[no-any-return]  # the inventory reports a malformed pod
    return [{k: i[k] for k in keep if k in i} if isinstance(i, Mapping) else i for i in items]


def slim_pod(pod: Any) -> dict[str, Any] | None:
    """The fields of a pod the inventory reads (``scanner.inventory.pods.containers_from_pod`` and the
    owner resolvers): names, uid, owners, the ``pod-template-hash`` label, pull secrets, each container's
    name and image and each status's name and imageID. None for what is not a pod object."""
    if not isinstance(pod, Mapping):
        return None
    meta = pod.get("metadata")
    spec = pod.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        return None
    status = pod.get("status") if isinstance(pod.get("status"), Mapping) else {}
    out_meta: dict[str, Any] = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    refs = meta.get("ownerReferences")
    if refs is not None:
        out_meta["ownerReferences"] = _names(refs[:MAX_OWNER_REFS] if isinstance(refs, list) else refs,
                                             ("kind", "name", "controller", "apiVersion"))
    labels = meta.get("labels")
    if isinstance(labels, Mapping) and "pod-template-hash" in labels:
        out_meta["labels"] = {"pod-template-hash": labels["pod-template-hash"]}
    out_spec: dict[str, Any] = {k: _names(spec[k], ("name", "image")) for k in _SPEC_KEYS if k in spec}
    if "imagePullSecrets" in spec:
        out_spec["imagePullSecrets"] = _names(spec["imagePullSecrets"], ("name",))
    assert isinstance(status, Mapping)
    out_status = {k: _names(status[k], ("name", "imageID")) for k in _STATUS_KEYS if k in status}
    return {"metadata": out_meta, "spec": out_spec, "status": out_status}


def pod_uid(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


def _raw_watch() -> Any:
    """The client's Watch, handing on each event's object as the API server's JSON (no model objects)."""
    from kubernetes import watch

    class RawWatch(watch.Watch):
        def unmarshal_event(self, data: str, return_type: Any) -> Any:
            if not data or data.isspace():
                return None
            try:
                event = json.loads(data)
            except ValueError:
                return None
            if not isinstance(event, dict):
                return None
            event["raw_object"] = event.get("object")
            return event

    return RawWatch()  # type: ignore[no-untyped-call]


class PodInformer:
    """List and watch the pods of one namespace (or of all), delivering them to ``sink``, until stopped."""

    def __init__(
        self,
        api_client: Any,
        sink: PodSink,
        *,
        namespace: str | None = None,
        selected: Callable[[str], bool] = lambda _ns: True,
        page_size: int = 500,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
        relist_every: float = DEFAULT_RELIST_EVERY,
        backoff_max: float = BACKOFF_MAX,
        resource_version: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client

        self._api = client.CoreV1Api(api_client)
        self.sink = sink
        self.namespace = namespace
        self.selected = selected
        self.page_size = page_size
        self.timeout_seconds = max(1, int(timeout_seconds))
        self.relist_every = relist_every
        self.backoff_max = backoff_max
        self._start_rv = resource_version  # tests: watch from this version first (e.g. a compacted one)
        self._now = monotonic
        self.status = InformerStatus()
        self._relist = threading.Event()
        self._watch: Any = None
        self._lock = threading.Lock()

    def request_relist(self) -> None:
        """List again now: the current watch request is interrupted (from a helper thread, so a caller
        on the informer's own thread — the sink — never waits)."""
        if self._relist.is_set():
            return
        self._relist.set()
        threading.Thread(target=self._interrupt_until_listing, name="sigaudit-watch-relist", daemon=True).start()

    def _interrupt_until_listing(self) -> None:
        """Stop the watch request once it is connected (a stop before the client sent it would be lost:
        ``Watch.stream`` resets its flag when it starts), until the informer has begun the list."""
        end = self._now() + self.timeout_seconds + READ_SLACK
        while self._relist.is_set() and self._now() < end:
            if self._interrupt(connected_only=True):
                return
            time.sleep(0.05)

    def _interrupt(self, *, connected_only: bool = False) -> bool:
        with self._lock:
            w = self._watch
        if w is None or (connected_only and getattr(w, "_resp", None) is None):
            return False
        try:
            w.stop()
        except Exception:  # noqa: S110 - best effort: the request ends at its own timeout anyway
            pass
        return True

    def run(self, stop: threading.Event) -> None:
        """Inform until ``stop`` is set. Never raises (a bug is logged and retried after a backoff)."""
        rv = self._start_rv
        need_list = rv is None
        next_list = self._now() + self.relist_every
        failures = 0
        gone_streak = 0  # 410s in a row: an API server that expires every fresh list is not hammered
        while not stop.is_set():
            try:
                if need_list or self._relist.is_set() or self._now() >= next_list:
                    self._relist.clear()
                    rv = self._list(stop)
                    need_list = False
                    next_list = self._now() + self.relist_every
                assert rv is not None
                rv = self._watch_once(rv, stop, max(1, min(self.timeout_seconds, int(next_list - self._now()) + 1)))
                failures = gone_streak = 0
            except Gone:
                self.status.gone += 1
                gone_streak += 1
                log.info("watch: the pod list's resourceVersion expired (410 Gone); listing again")
                need_list = True
                if gone_streak > 1:
                    stop.wait(min(self.backoff_max, BACKOFF_FIRST * 2 ** min(gone_streak - 2, 16)))
            except Exception as exc:
                if stop.is_set() or self._relist.is_set():
                    continue  # the request was interrupted on purpose (stop() / request_relist())
                failures += 1
                self.status.failures += 1
                self.status.last_error = _describe(exc)
                delay = min(self.backoff_max, BACKOFF_FIRST * 2 ** min(failures - 1, 16))
                delay *= 0.5 + random.random() / 2  # jitter, not a secret
                if not _is_api_error(exc):
                    log.warning("watch: %s; retrying in %.1f s", self.status.last_error, delay,
                                exc_info=not _is_transport_error(exc))
                else:
                    log.warning("watch: %s; retrying in %.1f s", self.status.last_error, delay)
                if rv is None:
                    need_list = True
                stop.wait(delay)

    def stop(self) -> None:
        self._interrupt()

    # -- requests ----------------------------------------------------------------------------------

    def _list(self, stop: threading.Event) -> str:
        """A full, paged list: every pod to the sink, then the set of uids seen. Returns the list's
        resourceVersion. A 410 on a ``continue`` token restarts the list."""
        from kubernetes.client.exceptions import ApiException

        from scanner.inventory.kube import _page

        uids: set[str] = set()
        token: str | None = None
        tokens: set[str] = set()
        rv = ""
        restarts = 0
        while True:
            if stop.is_set():
                raise InterruptedError("stopping")
            try:
                page = self._list_page(token)
            except ApiException as exc:
                if exc.status == 410 and token is not None and restarts < 3:
                    restarts += 1
                    token, uids, tokens = None, set(), set()
                    continue
                raise
            self.status.last_contact = self._now()
            items, token = _page(page, "list pods")  # never fewer pods (all of them "gone") for a malformed page
            for item in items:
                pod = slim_pod(item)
                if pod is None:
                    continue
                ns = str((pod["metadata"]).get("namespace") or "")
                if not self.selected(ns):
                    continue
                uids.add(pod_uid(pod))
                self._deliver(self.sink.pod_seen, pod)
            meta = page.get("metadata") if isinstance(page.get("metadata"), Mapping) else {}
            assert isinstance(meta, Mapping)
            rv = str(meta.get("resourceVersion") or rv)
            if not token:
                break
            if token in tokens:  # a server handing back a token twice would page for ever
                raise ValueError("the API server sent a continue token it had sent before; the list would never end")
            tokens.add(token)
        if not rv:
            raise ValueError("the pod list carries no resourceVersion")
        self.sink.listed(self.namespace, uids)
        self.status.lists += 1
        self.status.last_list = self._now()
        self.status.resource_version = rv
        return rv

    def _list_page(self, token: str | None) -> dict[str, Any]:
        if self.namespace is None:
            resp = self._api.list_pod_for_all_namespaces(limit=self.page_size, _continue=token,
                                                         _preload_content=False,
                                                         _request_timeout=(CONNECT_TIMEOUT, 120))
        else:
            resp = self._api.list_namespaced_pod(self.namespace, limit=self.page_size, _continue=token,
                                                 _preload_content=False, _request_timeout=(CONNECT_TIMEOUT, 120))
        data = json.loads(resp.data)  # type: ignore[attr-defined]  # _preload_content=False: the raw response
        if not isinstance(data, dict):
            raise ValueError("the API server's pod list is not an object")
        return data

    def _stream(self, w: Any, rv: str, timeout: int) -> Iterator[Any]:
        common = {"resource_version": rv, "allow_watch_bookmarks": True, "timeout_seconds": timeout,
                  "_request_timeout": (CONNECT_TIMEOUT, timeout + READ_SLACK)}
        if self.namespace is None:
            return w.stream(self._api.list_pod_for_all_namespaces, **common)  # type: ignore[no-any-return]
        return w.stream(self._api.list_namespaced_pod, self.namespace, **common)  # type: ignore[no-any-return]

    def _watch_once(self, rv: str, stop: threading.Event, timeout: int) -> str:
        """One watch request from ``rv`` until the server ends it (``timeout``), a re-list is asked for
        or ``stop``. Returns the resourceVersion to resume from."""
        from kubernetes.client.exceptions import ApiException

        if self._relist.is_set():
            return rv
        w = _raw_watch()
        with self._lock:
            self._watch = w
        try:
            for event in self._stream(w, rv, timeout):
                if stop.is_set() or self._relist.is_set():
                    break
                rv = self._event(event, rv)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from None
            raise
        finally:
            with self._lock:
                self._watch = None
        self.status.last_contact = self.status.last_watch = self._now()
        self.status.resource_version = rv
        return rv

    def _event(self, event: Any, rv: str) -> str:
        if not isinstance(event, dict):
            return rv
        kind = event.get("type")
        obj = event.get("object")
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        new_rv = str(meta.get("resourceVersion") or rv) if isinstance(meta, Mapping) else rv
        self.status.last_contact = self.status.last_watch = self._now()
        self.status.events += 1
        if kind == "BOOKMARK":
            return new_rv
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return rv
        pod = slim_pod(obj)
        if pod is None:
            return new_rv
        if not self.selected(str(pod["metadata"].get("namespace") or "")):
            return new_rv
        if kind == "DELETED":
            self._deliver(self.sink.pod_gone, pod_uid(pod))
        else:
            self._deliver(self.sink.pod_seen, pod)
        return new_rv

    @staticmethod
    def _deliver(fn: Callable[[Any], None], arg: Any) -> None:
        """One pod's handling never stops the informer: were it to fail, the same pod would fail the
        watch again at every retry, and one tenant's pod would blind the watch for the whole cluster."""
        try:
            fn(arg)
        except Exception:
            log.exception("watch: a pod could not be handled; skipped")


def _is_api_error(exc: Exception) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException)


def _is_transport_error(exc: Exception) -> bool:
    return isinstance(exc, OSError | ValueError | InterruptedError) or type(exc).__module__.startswith("urllib3")


def _describe(exc: Exception) -> str:
    """One line about a failed request; never a response body (it may echo a token)."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return f"the API server answered {exc.status} {exc.reason or ''}".strip()
    return f"{type(exc).__name__}: {str(exc)[:200]}"
