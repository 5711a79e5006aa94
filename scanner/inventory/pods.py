"""Pods -> containers: every container, initContainer and ephemeralContainer, with its running digest.

Pods arrive as plain dicts in the API's JSON shape (camelCase), from a ``kubectl get pods -A -o json``
file (streamed with ijson, never held whole) or from the API (``scanner.inventory.kube``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any, Protocol, TypeGuard

import ijson

from scanner.clock import parse_kube_time
from scanner.errors import ConfigError, InventoryError, LimitExceeded, ParseError
from scanner.models import ContainerRef, ContainerType, Workload

# Largest pod list read (a 10,000-pod `kubectl get pods -A -o json` is a few hundred MB): a regular
# file over it is refused before the scan (check_pods_file, exit 2); a pipe is cut when it passes it.
MAX_PODS_FILE_BYTES = 2 * 1024**3
# Deepest nesting accepted in one pod (a real pod's managedFields reach about 15 levels). Deeper
# values are never built: Python's own recursion (str, repr, json) would fail on them later.
MAX_POD_DEPTH = 100
# A read waiting for a pipe's or FIFO's writer wakes this often to look at the scan's stop request: a
# SIGTERM's handler only sets it (the poll it interrupts is resumed, PEP 475), and a scan run in a thread
# (serve) gets no signal at all.
STOP_CHECK_S = 0.5
_SPEC_KEYS = (
    (ContainerType.INIT, "initContainers", "initContainerStatuses"),
    (ContainerType.CONTAINER, "containers", "containerStatuses"),
    (ContainerType.EPHEMERAL, "ephemeralContainers", "ephemeralContainerStatuses"),
)
_POD_TEMPLATE_HASH = re.compile(r"^(?P<deploy>.+)-(?P<hash>[a-z0-9]{1,10})$")


_CONTAINER_FIELDS = [{"name": None, "image": None}]
_STATUS_FIELDS = [{"name": None, "imageID": None}]
# What the inventory reads of a pod (containers_from_pod, StaticOwnerResolver, the namespace filters,
# the messages naming a pod): a real pod list's managedFields, env, volumes, conditions are most of its
# bytes, and building them was most of the parse (issue 19). A test checks each field read is here.
INVENTORY_FIELDS: Mapping[str, Any] = {
    "kind": None,
    "metadata": {"namespace": None, "name": None, "uid": None, "creationTimestamp": None,
                 "ownerReferences": None, "labels": None},
    "spec": {"containers": _CONTAINER_FIELDS, "initContainers": _CONTAINER_FIELDS,
             "ephemeralContainers": _CONTAINER_FIELDS, "imagePullSecrets": None},
    "status": {"containerStatuses": _STATUS_FIELDS, "initContainerStatuses": _STATUS_FIELDS,
               "ephemeralContainerStatuses": _STATUS_FIELDS},
}


_LEFT_OUT = object()


class UnreadablePod(dict[str, Any]):
    """An element of a pod list that could not be read (nested too deep, ...). It travels down the pipe
    like any pod, carrying what could be read of its metadata, so the stage that reports skipped pods
    (``containers_from_pod`` raising ParseError) reports it: never dropped silently."""

    def __init__(self, reason: str, namespace: str | None = None, name: str | None = None) -> None:
        meta = {k: v for k, v in (("namespace", namespace), ("name", name)) if v}
        super().__init__(metadata=meta)
        self.reason = reason


class _Where:
    """``pod namespace/name`` for an error message, rendered only when a message is made (two labels a
    pod were a tenth of reading a 10,000-pod list, for messages almost never written)."""

    __slots__ = ("pod",)

    def __init__(self, pod: Any) -> None:
        self.pod = pod

    def __str__(self) -> str:
        return f"pod {pod_label(self.pod)}"


def _text(value: Any, what: str, where: str | _Where, *, required: bool = False) -> str:
    """A field that must be a string (absent is "" unless ``required``). Untrusted pod lists put
    lists, numbers and 20,000-deep structures where strings belong: each is a ParseError."""
    if value is None or value == "":
        if required:
            raise ParseError(f"{where}: {what} is missing")
        return ""
    if not isinstance(value, str):
        raise ParseError(f"{where}: {what} is a {type(value).__name__}, not a string")
    return value


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)  # a parsed pod holds dicts: skip the ABC check


def pod_label(pod: Any) -> str:
    """``namespace/name`` for messages, whatever the pod holds (never renders a hostile structure)."""
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    if not isinstance(meta, Mapping):
        return "?"
    ns, name = meta.get("namespace"), meta.get("name")
    ns = ns[:253] if isinstance(ns, str) else "?"
    name = name[:253] if isinstance(name, str) else "?"
    return f"{ns}/{name}"


def pod_namespace(pod: Any) -> str | None:
    """The pod's namespace ("default" when absent), or None when it cannot be read: not a string, or
    no metadata object to read it from (that pod read as "default" and ``--namespace`` dropped it unseen,
    where the inventory reports it)."""
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    ns = meta.get("namespace")
    if ns is None or ns == "":
        return "default"
    return ns if isinstance(ns, str) else None


def select_namespaces(
    pods: Iterable[dict[str, Any]], include: Sequence[str], exclude: Sequence[str]
) -> Iterator[dict[str, Any]]:
    """Pods of the selected namespaces. A pod whose namespace cannot be read is kept, so that the
    inventory reports it as skipped rather than this filter dropping it unseen; so is every unreadable
    pod (an UnreadablePod): its namespace is what was read before it was cut off — none (it read as
    "default", and a pod of a selected namespace was dropped unseen by ``--namespace``) or a first of
    duplicate keys that json's last one overrides."""
    for pod in pods:
        ns = pod_namespace(pod)
        if ns is None or type(pod) is UnreadablePod or namespace_selected(ns, include, exclude):
            yield pod


class OwnerResolver(Protocol):
    def workload(self, namespace: str, pod: Mapping[str, Any]) -> Workload: ...


def controller_ref(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = meta.get("ownerReferences") or []
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if _is_map(ref) and ref.get("controller"):
            return ref
    return refs[0] if refs and _is_map(refs[0]) else None


class StaticOwnerResolver:
    """Owners from the pod alone (pod-list files, no API): ReplicaSet -> Deployment through the
    ``pod-template-hash`` label that the Deployment controller sets; other owners as they are."""

    # Workloads by (owner kind, owner name, pod-template-hash label): the pods of one ReplicaSet ask the
    # same question. Bounded; a label that is not a string is never a key.
    _MEMO_SIZE = 65536

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str, str | None], Workload] = {}

    def workload(self, namespace: str, pod: Mapping[str, Any]) -> Workload:
        meta = pod.get("metadata") or {}
        where = _Where(pod)
        ref = controller_ref(meta)
        if ref is None:
            return Workload("Pod", _text(meta.get("name"), "name", where))
        kind = _text(ref.get("kind"), "ownerReferences kind", where)
        name = _text(ref.get("name"), "ownerReferences name", where)
        pth = None
        if kind == "ReplicaSet":
            labels = meta.get("labels") or {}
            pth = labels.get("pod-template-hash") if _is_map(labels) else None
        if pth is not None and type(pth) is not str:
            return self._resolve(kind, name, pth)
        key = (kind, name, pth)
        found = self._memo.get(key)
        if found is None:
            found = self._resolve(kind, name, pth)
            if len(self._memo) < self._MEMO_SIZE:
                self._memo[key] = found
        return found

    @staticmethod
    def _resolve(kind: str, name: str, pth: Any) -> Workload:
        if kind == "ReplicaSet":
            m = _POD_TEMPLATE_HASH.match(name)
            if pth and m and m.group("hash") == pth:
                return Workload("Deployment", m.group("deploy"))
        return Workload(kind or "Pod", name)


def namespace_selected(namespace: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatchcase(namespace, n) for n in include):
        return False
    return not any(fnmatchcase(namespace, n) for n in exclude)


def _str(value: Any, what: str, where: _Where, *, required: bool = False) -> str:
    """:func:`_text`, with a plain non-empty string (every field of a sane pod) returned at once."""
    return value if type(value) is str and value else _text(value, what, where, required=required)


def containers_from_pod(pod: Mapping[str, Any], owners: OwnerResolver) -> list[ContainerRef]:
    """Every container of a pod with the imageID its runtime reports (None when there is none)."""
    if isinstance(pod, UnreadablePod):
        raise ParseError(pod.reason)
    if not _is_map(pod):
        raise ParseError("pod is not an object")
    meta = pod.get("metadata")
    spec = pod.get("spec")
    if not _is_map(meta) or not _is_map(spec):
        raise ParseError("pod without metadata or spec")
    where = _Where(pod)
    namespace = _str(meta.get("namespace"), "namespace", where) or "default"
    name = _str(meta.get("name"), "name", where, required=True)
    uid = _str(meta.get("uid"), "uid", where)
    created_at = parse_kube_time(meta.get("creationTimestamp"))
    status = pod.get("status")
    if not _is_map(status):
        status = {}
    pull_secrets = spec.get("imagePullSecrets") or []
    if not isinstance(pull_secrets, list):
        raise ParseError(f"{where}: imagePullSecrets is a {type(pull_secrets).__name__}, not a list")
    secrets: tuple[str, ...] = ()
    if pull_secrets:
        secrets = tuple(
            _text(s.get("name"), "imagePullSecrets name", where) for s in pull_secrets if _is_map(s)
        )
        secrets = tuple(s for s in secrets if s)
    workload = owners.workload(namespace, pod)
    out: list[ContainerRef] = []
    for ctype, spec_key, status_key in _SPEC_KEYS:
        containers = spec.get(spec_key) or []
        statuses = status.get(status_key) or []
        if not isinstance(containers, list) or not isinstance(statuses, list):
            raise ParseError(f"{where}: {spec_key} is not a list")
        if not containers:
            continue
        by_name = {s.get("name"): s for s in statuses if _is_map(s) and isinstance(s.get("name"), str)}
        for c in containers:
            if not _is_map(c) or not isinstance(c.get("image"), str) or not c.get("name"):
                raise ParseError(f"{where}: a {ctype} without name or image")
            cname = c.get("name")
            if type(cname) is not str:
                cname = _text(cname, f"{ctype} name", where, required=True)
            image = c.get("image")
            if type(image) is not str or not image:
                image = _text(image, f"{ctype} {cname[:63]} image", where, required=True)
            st = by_name.get(cname) or {}
            image_id = st.get("imageID") if isinstance(st.get("imageID"), str) else None
            out.append(
                ContainerRef(
                    namespace=namespace,
                    pod=name,
                    container=cname,
                    container_type=ctype,
                    image=image,
                    image_id=image_id or None,
                    workload=workload,
                    pull_secrets=secrets,
                    pod_uid=uid,
                    pod_created_at=created_at,
                )
            )
    return out


def _unreadable(partial: Any, reason: str) -> UnreadablePod:
    meta = partial.get("metadata") if isinstance(partial, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    ns, name = meta.get("namespace"), meta.get("name")
    return UnreadablePod(reason, ns if isinstance(ns, str) else None, name if isinstance(name, str) else None)


_POD_SPEC_KEYS = tuple(k for _, k, _ in _SPEC_KEYS)


def _not_a_pod(element: dict[str, Any], kind: Any) -> str | None:
    """Why an element of `items` whose kind is not ``Pod`` must still be reported (None: another kind
    of object, e.g. a Service of ``kubectl get all -o json``, left out as it is no pod). A kind that is
    not a string, a list (``PodList``, a List of Lists) or an object holding a pod's containers under
    another spelling (``pod``, ``Pod ``) may be running containers: it is reported as a skipped pod,
    never dropped unseen (its images were absent from a scan that said "complete")."""
    if type(kind) is not str:
        return f"has a kind that is a {type(kind).__name__}, not a string"
    spec = element.get("spec")
    if kind.endswith("List") or (type(spec) is dict and any(k in spec for k in _POD_SPEC_KEYS)):
        return f"is of kind {kind[:63]!r} yet holds containers or items: not read as a pod"
    return None


def _size_limit_text(max_bytes: int) -> str:
    return f"{max_bytes / 1024**3:g} GiB" if max_bytes >= 1024**3 else f"{max_bytes} bytes"


def check_pods_file(path: str | Path, max_bytes: int | None = None) -> None:
    """Refuse, before any scanning, a pod list file larger than ``max_bytes`` (ConfigError: exit 2).

    Standard input (``-``), pipes and files that cannot be stat'ed here are bounded while they are
    read (:func:`iter_pods_file`); a missing file is reported there too."""
    if str(path) == "-":
        return
    max_bytes = MAX_PODS_FILE_BYTES if max_bytes is None else max_bytes
    try:
        st = Path(path).stat()
    except OSError:
        return
    import stat

    if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
        raise ConfigError(f"pod list {path} is {st.st_size} bytes, over the {_size_limit_text(max_bytes)} limit "
                          "on a pods file: nothing was scanned")


class _Bounded:
    """A byte stream that raises LimitExceeded once more than ``max_bytes`` have been read from it,
    and InventoryError when asked for more after ``deadline`` (a ``time.monotonic()`` value): checked
    once a read (ijson reads 64 KiB at a time), so a huge or deeply nested list — read past, never
    built — never holds a scan minutes beyond its ``--deadline``.

    ``fd``: a pipe, FIFO, socket or terminal read from directly, each read waiting for data (poll) no
    longer than the deadline: a writer that never writes, or never closes, is the same InventoryError
    at the deadline, never a read blocked past it (a slow writer is read as its bytes arrive).

    ``stop`` (the scan's stop request, set by SIGTERM): every read, and every wait for data (in slices of
    :data:`STOP_CHECK_S`), looks at it and raises InterruptedError once it is set — a stop ends the scan
    as it does in any other stage, never only at the deadline (or never, without one)."""

    def __init__(self, stream: IO[bytes] | None, max_bytes: int, label: str, deadline: float | None = None,
                 fd: int | None = None, stop: threading.Event | None = None) -> None:
        self._stream, self._left, self._max, self._label = stream, max_bytes, max_bytes, label
        self._deadline, self._fd, self._stop = deadline, fd, stop
        self._poll: Any = None
        if fd is not None:  # without a deadline too: a FIFO's read before its writer came said EOF at once
            import select

            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    def _late(self) -> InventoryError:
        return InventoryError(f"{self._label}: the scan deadline passed while the pod list was read "
                              f"({self._max - self._left} bytes): no image was judged")

    def _stopped(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise InterruptedError(f"interrupted: a stop was requested while the pod list {self._label} was read "
                                   f"({self._max - self._left} bytes): no image was judged")

    def _wait(self) -> None:
        """Until the fd is ready (data, the writer gone or an error: os.read says which); InterruptedError
        on a stop request, the deadline's InventoryError at the deadline."""
        import math

        while True:
            self._stopped()
            slice_s = None if self._stop is None else STOP_CHECK_S
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise self._late()
                slice_s = left if slice_s is None else min(left, slice_s)
            # without a deadline or a stop: a FIFO no writer has opened yet is not ready: wait for one, as
            # open() did (a read returned EOF: "premature EOF" before kubectl wrote)
            if self._poll.poll(None if slice_s is None else math.ceil(slice_s * 1000)):
                return

    def read(self, n: int = -1) -> bytes:
        self._stopped()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise self._late()
        want = self._left + 1 if n is None or n < 0 else min(n, self._left + 1)
        if want == 0:  # ijson's read(0) asks for the type of the stream, not for data
            return b""
        if self._fd is None:
            assert self._stream is not None
            data = self._stream.read(want)
        else:
            while True:
                self._wait()
                try:
                    data = os.read(self._fd, min(want, 1 << 20))
                    break
                except BlockingIOError:  # a FIFO we opened stays non-blocking: its data, ready at poll, was
                    continue  # taken by another reader of it (a blocking read then waited past any deadline)
                except OSError as exc:
                    raise InventoryError(f"cannot read pod list {self._label}: {exc.strerror}") from exc
        self._left -= len(data)
        if self._left < 0:
            raise LimitExceeded(f"{self._label}: larger than the {_size_limit_text(self._max)} limit on a pod list")
        return data


def _open_pods_file(path: str | Path, label: str) -> tuple[IO[bytes] | None, int | None, bool]:
    """(stream, fd, own) to read the pod list at ``path`` (``-``: standard input) from. A regular file is a
    buffered stream; anything else (a pipe, a FIFO, a socket, a terminal) its fd, which :class:`_Bounded`
    waits on with the deadline. A FIFO is opened without waiting for a writer (a plain open() blocks until
    one comes, past any deadline); its reads then wait for one."""
    import stat
    import sys

    if str(path) == "-":
        if sys.stdin is None:  # started with its stdin closed (`<&-`): sys.stdin.buffer was an AttributeError
            raise InventoryError(f"cannot read pod list {label}: standard input is closed")
        try:
            fd = sys.stdin.fileno()
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except (AttributeError, ValueError, OSError):  # no real stdin (replaced, closed): read it as a stream
            buffer = getattr(sys.stdin, "buffer", None)
            if buffer is None:
                raise InventoryError(f"cannot read pod list {label}: standard input is no byte stream") from None
            return buffer, None, False
        return (sys.stdin.buffer, None, False) if regular else (None, fd, False)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InventoryError(f"cannot read pod list {label}: {exc.strerror}") from exc
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return os.fdopen(fd, "rb"), None, True
        # left non-blocking: reads wait in poll(), bounded, and a read after it never waits (another reader
        # of the FIFO may have taken what poll saw)
    except BaseException:
        os.close(fd)
        raise
    return None, fd, True


def iter_pods_file(path: str | Path, stream: IO[bytes] | None = None, *,
                   max_bytes: int | None = None, keep: Mapping[str, Any] | None = None,
                   deadline: float | None = None,
                   stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
    """Stream pods out of ``kubectl get pods -o json`` output (a ``v1 List``/``PodList``) or a single Pod.

    One pass over ijson's event stream: each element of ``items`` is built, yielded and dropped, so
    a 10,000-pod list is never held whole. ``path`` ``-`` reads standard input. Reading more than
    ``max_bytes`` (default :data:`MAX_PODS_FILE_BYTES`) raises LimitExceeded (a ParseError).

    ``keep`` (e.g. :data:`INVENTORY_FIELDS`): build only these fields of each pod, a tree (a mapping:
    only those keys of an object whose value is an object or array, each with the tree of its value,
    and every scalar field; a one-element list ``[tree]``: an
    array, each element with that tree; None: the whole value). A value of another shape than the tree
    says is built whole, as without ``keep``, so a wrong type reads as wrong, never as empty. Every
    field left out is read past, never built — so its depth never makes a pod unreadable: nothing deep
    is built from it. Without ``keep`` a pod is built whole.

    ``deadline`` (a ``time.monotonic()`` value, the scan's): reading on past it raises InventoryError.
    ``stop`` (the scan's stop request): once set, the next read — or the wait for a writer — raises
    InterruptedError within :data:`STOP_CHECK_S`.
    """
    max_bytes = MAX_PODS_FILE_BYTES if max_bytes is None else max_bytes
    label = "<stdin>" if str(path) == "-" else str(path)
    fd: int | None = None
    if stream is None:
        stream, fd, own = _open_pods_file(path, label)
    else:
        own = False
    top: ijson.common.ObjectBuilder | None = None
    # The element of `items` being built, inline rather than through ijson's ObjectBuilder (a method
    # call and a closure per event cost half the parse): ``cur`` is the innermost container, ``stack``
    # its parents; a map's next value goes under ``key`` (one pending key suffices: a value follows
    # its key at once). ``element`` is None while nothing is built (between elements, or once it
    # passed MAX_POD_DEPTH: the rest of it is read, never built; ``partial`` is what was).
    element: dict[str, Any] | None = None
    cur: Any = None
    stack: list[Any] = []
    key: Any = None
    partial: Any = None
    saw_items = in_items = items_next = False
    count = depth = 0
    # With ``keep``: ``node`` is the part of it that applies to ``cur`` (None: all of it; ``stack`` holds
    # each parent with its node); ``skip`` is the depth of a value read past, never built (0: none).
    node: Any = None
    resume: Any = None
    skip = 0
    try:
        # basic_parse, not parse: parse builds a dotted prefix per event, which costs O(depth²)
        # (a 20,000-deep value took 1 GB; ijson.items and kvitems track that prefix too: a 100,000-deep
        # element, a 600 kB file, took them 10 GB). The position is tracked here with one depth counter.
        for event, value in ijson.basic_parse(_Bounded(stream, max_bytes, label, deadline, fd, stop), use_float=True):
            if in_items:  # depth 2 is the `items` array itself; its elements start at depth 3
                if event == "map_key":
                    key = value
                elif event == "start_map" or event == "start_array":
                    if depth == 2:
                        if event != "start_map":
                            raise ParseError(f"{label}: an element of `items` is not an object")
                        element = cur = {}
                        stack, partial, depth = [], None, 3
                        node, skip = keep, 0
                        continue
                    depth += 1
                    if cur is None:  # nothing is built: too deep, or a value read past
                        continue
                    if depth - 2 > MAX_POD_DEPTH:
                        partial, element, cur = element, None, None
                        continue
                    child = None
                    if node is not None:
                        # a map's node names its fields; a list's is [the node of each element]
                        child = node.get(key, _LEFT_OUT) if type(node) is dict else node[0]
                        if child is _LEFT_OUT:  # a value the caller never reads: read past it, never built
                            resume, cur, skip = cur, None, depth
                            continue
                        # A value of another shape than ``keep`` says (a map where a list belongs) is
                        # built whole: filtered, it could turn out empty and read as absent, not as wrong.
                        if child is not None and (type(child) is dict) is not (event == "start_map"):
                            child = None
                    new: Any = {} if event == "start_map" else []
                    if type(cur) is dict:
                        cur[key] = new
                    else:
                        cur.append(new)
                    stack.append((cur, node))
                    cur, node = new, child
                elif event == "end_map" or event == "end_array":
                    if depth == 2:  # the end of `items`
                        in_items, depth = False, 1
                        continue
                    depth -= 1
                    if depth > 2:
                        if cur is not None:
                            cur, node = stack.pop()
                        elif skip and depth < skip:  # the end of a value read past
                            cur, skip = resume, 0
                        continue
                    if element is None:
                        yield _unreadable(partial, f"element {count} of `items` is nested deeper than "
                                                   f"{MAX_POD_DEPTH} levels")
                    elif (kind := element.get("kind")) in (None, "Pod"):
                        yield element
                    elif (why := _not_a_pod(element, kind)) is not None:
                        yield _unreadable(element, f"element {count} of `items` {why}")
                    element = cur = partial = None
                    count += 1
                elif depth == 2:
                    raise ParseError(f"{label}: an element of `items` is not an object")
                elif cur is not None:
                    # A scalar is kept wherever its map is (storing it costs what asking whether to
                    # would): only nested values are left out.
                    if type(cur) is dict:
                        cur[key] = value
                    else:
                        cur.append(value)
                continue
            step = 1 if event in ("start_map", "start_array") else -1 if event in ("end_map", "end_array") else 0
            if top is None:
                if event != "start_map":
                    raise ParseError(f"{label}: not a JSON object (expected `kubectl get pods -A -o json` output)")
                top, depth = ijson.common.ObjectBuilder(), 1
                top.event(event, value)
                continue
            if items_next:
                items_next = False
                if event != "start_array":
                    raise ParseError(f"{label}: `items` is not a list")
                saw_items = in_items = True
                depth = 2
                continue
            if depth == 1 and event == "map_key" and value == "items":
                items_next = True
                continue
            depth += step
            if depth > MAX_POD_DEPTH:
                raise ParseError(f"{label}: nested deeper than {MAX_POD_DEPTH} levels")
            top.event(event, value)
    except ijson.JSONError as exc:
        raise ParseError(f"{label}: malformed or truncated JSON after {count} pods: {exc}") from exc
    except UnicodeDecodeError as exc:
        # yajl lets an overlong UTF-8 sequence (C0 80, "modified UTF-8") through its own check and
        # ijson's decoding of the string then raises this, not a JSONError: the same bad input.
        raise ParseError(f"{label}: malformed JSON after {count} pods: a string is not valid UTF-8 "
                         f"({exc.reason} at byte {exc.start} of the string)") from exc
    finally:
        if own and stream is not None:
            stream.close()
        elif own and fd is not None:
            os.close(fd)
    if top is None:
        raise ParseError(f"{label}: empty input (expected `kubectl get pods -A -o json` output)")
    doc = top.value
    if saw_items and isinstance(doc, dict):
        spec = doc.get("spec")
        if doc.get("kind") == "Pod" or (type(spec) is dict and any(k in spec for k in _POD_SPEC_KEYS)):
            # its own containers would be read by nobody: a scan would miss them and say "complete"
            raise ParseError(f"{label}: a List (it has `items`) that is also a Pod (its own kind or containers)")
    if not saw_items:
        if isinstance(doc, dict) and doc.get("kind") == "Pod":
            yield doc
            return
        kind = doc.get("kind") if isinstance(doc, dict) else None
        kind = kind[:63] if isinstance(kind, str) else kind if kind is None else type(kind).__name__
        raise ParseError(f"{label}: neither a List of pods (no `items`) nor a Pod (kind={kind!r})")
