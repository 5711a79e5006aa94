"""Write a scan's reports to the cluster and remove sigaudit's stale ones.

Server-side apply with the field manager ``sigaudit``: each object is applied whole (its ``results``
list is atomic in the CRDs, so a later scan replaces it), and sigaudit's own reports that the scan no
longer produces (a namespace or its workloads gone, fewer chunks) are deleted. *Own* means labelled
``app.kubernetes.io/managed-by: sigaudit`` **and** written by the ``sigaudit`` field manager: another
tool's report is never replaced or deleted, even if it copies the label or uses the name ``sigaudit``
(applying over it is refused by the API server as a conflict, which is reported, not forced).

Failures are collected as problems (one line each) and never change the verdicts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from scanner.clusterreports.build import (
    CLUSTER_ANNOTATION,
    CLUSTER_LABEL,
    MANAGED_BY,
    Flavor,
    build_reports,
    cluster_label,
)
from scanner.models import ScanResult, ScanState

log = logging.getLogger(__name__)

FIELD_MANAGER = "sigaudit"


def owner_labels(cluster: str) -> dict[str, str]:
    """The labels that make a report this install's: sigaudit's, of this ``--cluster``. Two installs
    with different cluster names (one API server, several audit scopes) never prune each other's."""
    return {**MANAGED_BY, CLUSTER_LABEL: cluster_label(cluster)}


def owner_selector(cluster: str) -> str:
    return ",".join(f"{k}={v}" for k, v in owner_labels(cluster).items())


class ReportApi(Protocol):
    """The calls of one report API (:class:`scanner.clusterreports.openreports.Api`, ...)."""

    def list_namespaced(self, selector: str, cont: str | None) -> dict[str, Any]: ...
    def list_cluster(self, selector: str, cont: str | None) -> dict[str, Any]: ...
    def apply_namespaced(self, namespace: str, name: str, body: dict[str, Any], manager: str,
                         force: bool) -> None: ...
    def apply_cluster(self, name: str, body: dict[str, Any], manager: str, force: bool) -> None: ...
    def delete_namespaced(self, namespace: str, name: str, uid: str) -> None: ...
    def delete_cluster(self, name: str, uid: str) -> None: ...


@dataclass(slots=True)
class ApplyOutcome:
    applied: list[str] = field(default_factory=list)  # "namespace/name" or "name"
    deleted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def api_for(flavor: Flavor, api_client: Any) -> ReportApi:
    if flavor.name == "openreports":
        from scanner.clusterreports import openreports

        return openreports.Api(api_client)
    from scanner.clusterreports import policyreport

    return policyreport.Api(api_client)


def publish(scan: ScanResult, flavor_name: str, api_client: Any, *,
            in_scope: Callable[[str], bool] = lambda _namespace: True) -> ApplyOutcome:
    """:func:`apply_reports` of ``flavor_name`` ("openreports" or "policyreport") through a kubernetes
    ``ApiClient``."""
    from scanner.clusterreports.build import FLAVORS

    flavor = FLAVORS[flavor_name]
    return apply_reports(scan, flavor, api_for(flavor, api_client), in_scope=in_scope)


def _ours(obj: Mapping[str, Any], cluster: str) -> bool:
    """Labelled as this install's (sigaudit's, of this cluster name) and applied by sigaudit's field
    manager (a label alone can be copied). Checked here too, whatever the list's selector returned."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in owner_labels(cluster).items()):
        return False
    # The label value is lossy ("prod/eu" and "prod_eu", names alike in their first 63 characters share
    # one): the annotation names the install exactly. A report written before the annotation existed
    # is this install's only when its --cluster is the label value itself (no other name can be).
    named = (meta.get("annotations") or {}).get(CLUSTER_ANNOTATION)
    if named != cluster and (named is not None or cluster_label(cluster) != cluster):
        return False
    return any(m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"
               for m in meta.get("managedFields") or [])


def _pages(list_fn: Any, selector: str) -> Iterator[dict[str, Any]]:
    cont: str | None = None
    seen: set[str] = set()
    while True:
        page = list_fn(selector, cont)
        yield from page.get("items") or []
        cont = (page.get("metadata") or {}).get("continue") or None
        if not cont:
            return
        if not isinstance(cont, str) or cont in seen:  # handed back twice: the list would never end
            raise ValueError("the API server sent a continue token it had sent before (or not a string); "
                             "the list would never end")
        seen.add(cont)


def _key(obj: Mapping[str, Any]) -> tuple[str | None, str]:
    meta = obj["metadata"]
    return meta.get("namespace"), meta["name"]


def _name(key: tuple[str | None, str]) -> str:
    return f"{key[0]}/{key[1]}" if key[0] else key[1]


def _why(exc: Exception) -> str:
    """One line: the HTTP status and the API server's own message (which names a missing permission)."""
    status = getattr(exc, "status", None)
    if status is None:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    message = ""
    try:
        body = json.loads(getattr(exc, "body", None) or "{}")
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
    except (TypeError, ValueError):
        pass
    return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".rstrip() + (f": {message[:300]}" if message else "")


def apply_reports(scan: ScanResult, flavor: Flavor, api: ReportApi, *,
                  in_scope: Callable[[str], bool] = lambda _namespace: True) -> ApplyOutcome:
    """Apply the scan's reports, then prune sigaudit's own reports the scan did not produce.

    ``in_scope``: whether the scan looked at a namespace (``-n``/``--exclude-namespace``); a report in a
    namespace it did not look at is not stale, and stays. Pruning happens only after a complete scan
    whose reports were all applied (never a deletion on partial knowledge: a namespace that could not be
    listed keeps its last report). A failed scan writes nothing: its verdicts are not the cluster's state.
    """
    out = ApplyOutcome()
    if scan.state is ScanState.FAILED or scan.state is ScanState.RUNNING:
        out.problems.append(f"the scan is {scan.state.value}: no {flavor.kind} written")
        return out
    desired = build_reports(scan, flavor)
    existing: dict[tuple[str | None, str], dict[str, Any]] = {}
    selector = owner_selector(scan.cluster)  # this install's only: another --cluster's are never pruned
    try:
        for obj in [*_pages(api.list_namespaced, selector), *_pages(api.list_cluster, selector)]:
            if _ours(obj, scan.cluster):
                existing[_key(obj)] = obj
    except Exception as exc:  # the API's errors are many (ApiException, urllib3, TLS): each is a problem
        out.problems.append(f"cannot list the existing {flavor.kind} objects: {_why(exc)}")
        return out
    wanted = set()
    for obj in desired:
        key = _key(obj)
        wanted.add(key)
        # Force only over our own object (re-taking fields a person edited); never over another tool's.
        force = key in existing
        try:
            if key[0] is None:
                api.apply_cluster(key[1], obj, FIELD_MANAGER, force)
            else:
                api.apply_namespaced(key[0], key[1], obj, FIELD_MANAGER, force)
            out.applied.append(_name(key))
        except Exception as exc:
            out.problems.append(f"cannot apply {obj['kind']} {_name(key)}: {_why(exc)}")
    if out.problems or scan.state is not ScanState.COMPLETE:
        return out
    for key, obj in sorted(existing.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        if key in wanted or (key[0] is not None and not in_scope(key[0])):
            continue
        uid = str(obj["metadata"].get("uid", ""))
        try:
            if key[0] is None:
                api.delete_cluster(key[1], uid)
            else:
                api.delete_namespaced(key[0], key[1], uid)
            out.deleted.append(_name(key))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                continue
            out.problems.append(f"cannot delete stale {obj.get('kind', flavor.kind)} {_name(key)}: {_why(exc)}")
    return out
