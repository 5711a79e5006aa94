"""A scan's verdicts as policy-report objects: one result per (workload container, image).

Pure: built from a :class:`~scanner.models.ScanResult`'s fields (status, ``warn_only``, exemptions,
``deciding_reason``, ``not_after``), never from the reasons' words. One namespaced report per
namespace (split into ``sigaudit``, ``sigaudit-2``, ... beyond :data:`MAX_RESULTS` results or
:data:`MAX_BYTES` bytes, so that no object outgrows the API server's limit), and one cluster-scoped
report for what belongs to no namespace (the scan's own errors, when it was partial). Every object is
labelled as sigaudit's (:data:`MANAGED_BY`), which is how a later scan finds and replaces or prunes its
own, and only its own.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scanner.clusterreports import openreports, policyreport
from scanner.models import ContainerRef, ExemptionRef, RunningImage, ScanResult, ScanState, Status, Verdict

SOURCE = "sigaudit"
REPORT_NAME = "sigaudit"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sigaudit"}
CLUSTER_LABEL = "sigaudit.io/cluster"
# The --cluster name itself: the label value is lossy (63 of [A-Za-z0-9._-]), so "prod/eu" and "prod_eu"
# share one; which install a report belongs to is decided by this annotation (clusterreports.apply).
CLUSTER_ANNOTATION = "sigaudit.io/cluster-name"
MAX_RESULTS = 1000  # results per object
MAX_BYTES = 1_000_000  # JSON bytes of the results of one object: below the API server's 1.5 MB object limit
MAX_NAME = 253  # characters of a policy or rule name
MAX_MESSAGE = 1024  # characters of a message (a reason may quote hostile registry text)
MAX_PROPERTY = 512  # characters of one property value


class Result(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (a report result, not a password)
    FAIL = "fail"
    WARN = "warn"
    ERROR = "error"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Flavor:
    """One report API: its group/version and kinds, and whether the report itself has a ``source``."""

    name: str
    api_version: str
    kind: str
    cluster_kind: str
    report_source: bool  # OpenReports has a report-level ``source``; PolicyReport v1alpha2 only per result


FLAVORS: Mapping[str, Flavor] = {
    "openreports": Flavor("openreports", f"{openreports.GROUP}/{openreports.VERSION}", openreports.KIND,
                          openreports.CLUSTER_KIND, True),
    "policyreport": Flavor("policyreport", f"{policyreport.GROUP}/{policyreport.VERSION}", policyreport.KIND,
                           policyreport.CLUSTER_KIND, False),
}

# Worst first within a status: how a failing result is graded for the UIs that sort by severity.
SEVERITY: Mapping[Status, str] = {
    Status.REVOKED: "critical",
    Status.INVALID: "high",
    Status.UNSIGNED: "high",
    Status.ERROR: "high",
    Status.EXPIRED: "medium",
    Status.NO_POLICY: "medium",
    Status.EXEMPT: "low",
    Status.VERIFIED: "info",
}

# The API group of the workload kinds the inventory reports (owner kinds; Pod for bare pods).
_WORKLOAD_API = {
    "Pod": "v1",
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}


def result_of(verdict: Verdict) -> Result:
    """The report result of a verdict. Fail closed: only ``verified`` passes; a verdict that could not
    be decided is an ``error`` whatever the rule's mode; an applied exemption is a ``skip``; a violation
    of a warn-only rule is a ``warn``; every other status (unsigned, invalid, expired, revoked, no
    matching rule) fails."""
    status = verdict.status
    if status is Status.VERIFIED:
        return Result.PASS
    if status is Status.ERROR:
        return Result.ERROR
    if status is Status.EXEMPT:
        return Result.SKIP
    if verdict.warn_only:
        return Result.WARN
    return Result.FAIL


def _clip(value: object, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def _ts(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def _timestamp(value: datetime) -> dict[str, int]:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    seconds = int(value.timestamp())
    return {"seconds": seconds, "nanos": value.microsecond * 1000}


def _policy(verdict: Verdict) -> tuple[str, str]:
    """(policy, rule): the rule's source file or import (``policy_source``) and its name."""
    rule = verdict.rule or ("no-matching-rule" if verdict.status is Status.NO_POLICY else "none")
    return _clip(verdict.policy_source or SOURCE, MAX_NAME), _clip(rule, MAX_NAME)


def _exemption(verdict: Verdict) -> ExemptionRef | None:
    return next((x for x in verdict.exemptions if x.applied), None)


def _properties(verdict: Verdict, container: ContainerRef, pods: int, scan: ScanResult) -> dict[str, str]:
    image = verdict.image
    props = {
        "image": image.display,
        "digest": image.digest if isinstance(image, RunningImage) else "",
        "status": verdict.status.value,
        "not_after": _ts(verdict.not_after),
        "expiring": "true" if verdict.expiring else "false",
        "scan_id": "" if scan.scan_id is None else str(scan.scan_id),
        "cluster": scan.cluster,
        "container": container.container,
        "container_type": container.container_type.value,
        "pods": str(pods),
    }
    waiver = _exemption(verdict)
    if waiver is not None:
        props |= {
            "exemption_kind": waiver.kind.value,
            "exemption_reason": waiver.reason,
            "exemption_until": _ts(waiver.until),
            "exemption_approved_by": waiver.approved_by or "",
        }
    lapsed = [x for x in verdict.exemptions if x.lapsed]
    if lapsed:
        props["lapsed_exemption_until"] = _ts(min(x.until for x in lapsed))
    return {k: _clip(v, MAX_PROPERTY) for k, v in props.items() if v != ""}


def _resource(container: ContainerRef) -> dict[str, str]:
    ref = {"kind": container.workload.kind, "name": container.workload.name, "namespace": container.namespace}
    api = _WORKLOAD_API.get(container.workload.kind)
    if api:
        ref["apiVersion"] = api
    if container.workload.kind == "Pod" and container.pod_uid:
        ref["uid"] = container.pod_uid
    return ref


def _results(scan: ScanResult) -> Iterator[tuple[str, dict[str, Any]]]:
    """(namespace, result) for each (workload container, image) of the scan, in a stable order."""
    stamp = _timestamp(scan.finished_at)
    for verdict in scan.verdicts:
        groups: dict[tuple[str, str, str, str, str], list[ContainerRef]] = {}
        for c in verdict.image.containers:
            key = (c.namespace, c.workload.kind, c.workload.name, c.container_type.value, c.container)
            groups.setdefault(key, []).append(c)
        policy, rule = _policy(verdict)
        message = verdict.headline
        waiver = _exemption(verdict)
        if waiver is not None and verdict.status is Status.EXEMPT:
            message = f"{message} (waived: {waiver.reason})" if message else f"waived: {waiver.reason}"
        for key, containers in groups.items():
            first = min(containers, key=lambda c: c.pod)
            yield key[0], {
                "source": SOURCE,
                "policy": policy,
                "rule": rule,
                "result": result_of(verdict).value,
                "severity": SEVERITY[verdict.status],
                "message": _clip(message, MAX_MESSAGE),
                "timestamp": stamp,
                "resources": [_resource(first)],
                "properties": _properties(verdict, first, len({c.pod for c in containers}), scan),
            }


def _scan_errors(scan: ScanResult) -> list[dict[str, Any]]:
    """A partial or failed scan's own errors (a namespace that could not be listed, ...): they belong
    to no namespace, and tell a reader of the reports that they are incomplete."""
    if scan.state is ScanState.COMPLETE:
        return []
    stamp = _timestamp(scan.finished_at)
    errors = scan.errors or (f"the scan is {scan.state.value}",)
    scan_id = {"scan_id": str(scan.scan_id)} if scan.scan_id is not None else {}
    return [
        {"source": SOURCE, "policy": SOURCE, "rule": "scan", "result": Result.ERROR.value, "severity": "high",
         "message": _clip(e, MAX_MESSAGE), "timestamp": stamp,
         "properties": {"status": scan.state.value, "cluster": scan.cluster, **scan_id}}
        for e in errors
    ]


def summary(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = Counter(r["result"] for r in results)
    return {r.value: counts.get(r.value, 0) for r in Result}


def _sort_key(r: Mapping[str, Any]) -> tuple[str, ...]:
    res = r.get("resources") or [{}]
    props = r.get("properties", {})
    return (res[0].get("kind", ""), res[0].get("name", ""), props.get("container_type", ""),
            props.get("container", ""), props.get("image", ""), r.get("message", ""))


def _object(flavor: Flavor, kind: str, name: str, namespace: str | None, results: list[dict[str, Any]],
            scan: ScanResult) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {**MANAGED_BY, CLUSTER_LABEL: cluster_label(scan.cluster)},
                                "annotations": {CLUSTER_ANNOTATION: scan.cluster}}
    if namespace is not None:
        metadata["namespace"] = namespace
    obj: dict[str, Any] = {"apiVersion": flavor.api_version, "kind": kind, "metadata": metadata}
    if flavor.report_source:
        obj["source"] = SOURCE
    obj["summary"] = summary(results)
    obj["results"] = results
    return obj


def cluster_label(value: str) -> str:
    """A label value (≤ 63 of [A-Za-z0-9._-], alphanumeric at both ends) naming the cluster."""
    text = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in value)[:63]
    return text.strip("._-") or "default"


def _chunks(results: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of at most MAX_RESULTS results and MAX_BYTES bytes of JSON (at least one each)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for r in results:
        n = len(json.dumps(r)) + 2  # ASCII-escaped, as the list serializes it, with its separator
        if chunk and (len(chunk) >= MAX_RESULTS or size + n > MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(r)
        size += n
    if chunk:
        yield chunk


def object_name(index: int) -> str:
    return REPORT_NAME if index == 0 else f"{REPORT_NAME}-{index + 1}"


def build_reports(scan: ScanResult, flavor: Flavor) -> list[dict[str, Any]]:
    """The report objects of a scan, sorted: namespaced reports by namespace, then the cluster report
    (only when something belongs to no namespace)."""
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for namespace, result in _results(scan):
        by_ns.setdefault(namespace, []).append(result)
    out: list[dict[str, Any]] = []
    for namespace in sorted(by_ns):
        for i, chunk in enumerate(_chunks(sorted(by_ns[namespace], key=_sort_key))):
            out.append(_object(flavor, flavor.kind, object_name(i), namespace, chunk, scan))
    for i, chunk in enumerate(_chunks(_scan_errors(scan))):
        out.append(_object(flavor, flavor.cluster_kind, object_name(i), None, chunk, scan))
    return out


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, for ``kubectl apply -f`` and GitOps repositories."""
    import yaml

    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False, allow_unicode=False) for o in objects)
