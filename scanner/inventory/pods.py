"""Pods -> containers: every container, initContainer and ephemeralContainer, with its running digest.

Pods arrive as plain dicts in the API's JSON shape (camelCase), from a ``kubectl get pods -A -o json``
file (streamed with ijson, never held whole) or from the API (``scanner.inventory.kube``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any, Protocol

import ijson

from scanner.errors import InventoryError, ParseError
from scanner.models import ContainerRef, ContainerType, Workload

MAX_PODS_FILE_BYTES = 2 * 1024**3
_SPEC_KEYS = (
    (ContainerType.INIT, "initContainers", "initContainerStatuses"),
    (ContainerType.CONTAINER, "containers", "containerStatuses"),
    (ContainerType.EPHEMERAL, "ephemeralContainers", "ephemeralContainerStatuses"),
)
_POD_TEMPLATE_HASH = re.compile(r"^(?P<deploy>.+)-(?P<hash>[a-z0-9]{1,10})$")


class OwnerResolver(Protocol):
    def workload(self, namespace: str, pod: Mapping[str, Any]) -> Workload: ...


def controller_ref(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = meta.get("ownerReferences") or []
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return refs[0] if refs and isinstance(refs[0], Mapping) else None


class StaticOwnerResolver:
    """Owners from the pod alone (pod-list files, no API): ReplicaSet -> Deployment through the
    ``pod-template-hash`` label that the Deployment controller sets; other owners as they are."""

    def workload(self, namespace: str, pod: Mapping[str, Any]) -> Workload:
        meta = pod.get("metadata") or {}
        ref = controller_ref(meta)
        if ref is None:
            return Workload("Pod", str(meta.get("name", "")))
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        if kind == "ReplicaSet":
            labels = meta.get("labels") or {}
            pth = labels.get("pod-template-hash") if isinstance(labels, Mapping) else None
            m = _POD_TEMPLATE_HASH.match(name)
            if pth and m and m.group("hash") == pth:
                return Workload("Deployment", m.group("deploy"))
        return Workload(kind or "Pod", name)


def namespace_selected(namespace: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(fnmatchcase(namespace, n) for n in include):
        return False
    return not any(fnmatchcase(namespace, n) for n in exclude)


def containers_from_pod(pod: Mapping[str, Any], owners: OwnerResolver) -> list[ContainerRef]:
    """Every container of a pod with the imageID its runtime reports (None when there is none)."""
    if not isinstance(pod, Mapping):
        raise ParseError("pod is not an object")
    meta = pod.get("metadata")
    spec = pod.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise ParseError("pod without metadata or spec")
    namespace = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "")
    if not name:
        raise ParseError("pod without a name")
    status = pod.get("status") if isinstance(pod.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    secrets = tuple(
        str(s["name"]) for s in (spec.get("imagePullSecrets") or []) if isinstance(s, Mapping) and s.get("name")
    )
    workload = owners.workload(namespace, pod)
    out: list[ContainerRef] = []
    for ctype, spec_key, status_key in _SPEC_KEYS:
        containers = spec.get(spec_key) or []
        statuses = status.get(status_key) or []
        if not isinstance(containers, list) or not isinstance(statuses, list):
            raise ParseError(f"pod {namespace}/{name}: {spec_key} is not a list")
        by_name = {s.get("name"): s for s in statuses if isinstance(s, Mapping)}
        for c in containers:
            if not isinstance(c, Mapping) or not isinstance(c.get("image"), str) or not c.get("name"):
                raise ParseError(f"pod {namespace}/{name}: a {ctype} without name or image")
            st = by_name.get(c["name"]) or {}
            image_id = st.get("imageID") if isinstance(st.get("imageID"), str) else None
            out.append(
                ContainerRef(
                    namespace=namespace,
                    pod=name,
                    container=str(c["name"]),
                    container_type=ctype,
                    image=str(c["image"]),
                    image_id=image_id or None,
                    workload=workload,
                    pull_secrets=secrets,
                    pod_uid=str(meta.get("uid") or ""),
                )
            )
    return out


def iter_pods_file(path: str | Path, stream: IO[bytes] | None = None) -> Iterator[dict[str, Any]]:
    """Stream pods out of ``kubectl get pods -o json`` output (a ``v1 List``/``PodList``) or a single Pod.

    One pass over ijson's event stream: each element of ``items`` is built, yielded and dropped, so
    a 10,000-pod list is never held whole. ``path`` ``-`` reads standard input.
    """
    label = "<stdin>" if str(path) == "-" else str(path)
    if stream is None:
        if str(path) == "-":
            import sys

            stream = sys.stdin.buffer
            own = False
        else:
            try:
                stream = open(path, "rb")
            except OSError as exc:
                raise InventoryError(f"cannot read pod list {label}: {exc.strerror}") from exc
            own = True
    else:
        own = False
    top: ijson.common.ObjectBuilder | None = None
    item: ijson.common.ObjectBuilder | None = None
    saw_items = False
    count = depth = 0
    try:
        for prefix, event, value in ijson.parse(stream, use_float=True):
            if prefix == "" and event == "start_map":
                top = ijson.common.ObjectBuilder()
                top.event(event, value)
                continue
            if prefix == "" and event != "start_map" and top is None:
                raise ParseError(f"{label}: not a JSON object (expected `kubectl get pods -A -o json` output)")
            if prefix == "items" and event == "start_array":
                saw_items = True
                continue
            if prefix == "items" and event == "end_array":
                continue
            if prefix.startswith("items.item") and saw_items:
                if item is None:
                    if event != "start_map":
                        raise ParseError(f"{label}: an element of `items` is not an object")
                    item, depth = ijson.common.ObjectBuilder(), 0
                item.event(event, value)
                if event in ("start_map", "start_array"):
                    depth += 1
                elif event in ("end_map", "end_array"):
                    depth -= 1
                if depth == 0:
                    obj, item = item.value, None
                    if obj.get("kind") in (None, "Pod"):
                        count += 1
                        yield obj
                continue
            if top is not None and not prefix.startswith("items"):
                top.event(event, value)
    except ijson.JSONError as exc:
        raise ParseError(f"{label}: malformed or truncated JSON after {count} pods: {exc}") from exc
    finally:
        if own:
            stream.close()
    if top is None:
        raise ParseError(f"{label}: empty input (expected `kubectl get pods -A -o json` output)")
    doc = top.value
    if not saw_items:
        if isinstance(doc, dict) and doc.get("kind") == "Pod":
            yield doc
            return
        raise ParseError(f"{label}: neither a List of pods (no `items`) nor a Pod (kind={doc.get('kind')!r})")
