"""A scan's verdicts as OpenReports / PolicyReport objects: every verdict status maps to the result the
contract names (fail closed), from fields, and every object is valid under the upstream CRD's schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scanner.clusterreports import FLAVORS, build_reports, to_yaml
from scanner.clusterreports.build import MANAGED_BY, MAX_BYTES, MAX_RESULTS, Result, result_of
from scanner.models import (
    ContainerRef,
    ContainerType,
    ExemptionKind,
    ExemptionRef,
    ImageReference,
    RunningImage,
    ScanResult,
    ScanState,
    Status,
    UnresolvedImage,
    Verdict,
    Workload,
)

CRDS = Path(__file__).resolve().parents[2] / "data" / "upstream-crds"
T0 = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
FINISHED = datetime(2026, 12, 7, 5, 1, 2, 345678, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64


def _c(ns: str = "shop", pod: str = "web-1", container: str = "app", kind: str = "Deployment",
       name: str = "web") -> ContainerRef:
    return ContainerRef(ns, pod, container, ContainerType.CONTAINER, "r.io/app:1", f"r.io/app@{DIGEST}",
                        Workload(kind, name), pod_uid=f"uid-{pod}")


def _image(*containers: ContainerRef) -> RunningImage:
    return RunningImage(ImageReference("r.io", "app", "1", DIGEST), containers or (_c(),))


def _verdict(status: Status, **kw: Any) -> Verdict:
    kw.setdefault("reasons", ("context", f"decided: {status.value}"))
    kw.setdefault("deciding_reason", 1)
    kw.setdefault("rule", "signed-by-ci")
    kw.setdefault("policy_source", "policy.yaml")
    image = kw.pop("image", None) or _image()
    return Verdict(image, status, **kw)


def _scan(*verdicts: Verdict, state: ScanState = ScanState.COMPLETE, errors: tuple[str, ...] = ()) -> ScanResult:
    return ScanResult("prod", T0, FINISHED, state, verdicts, "sha256:p", errors=errors, scan_id=42)


def _schema(flavor: str, cluster: bool) -> dict[str, Any]:
    name = {("openreports", False): "openreports-openreports.io_reports.yaml",
            ("openreports", True): "openreports-openreports.io_clusterreports.yaml",
            ("policyreport", False): "wg-policy-v1alpha2-wgpolicyk8s.io_policyreports.yaml",
            ("policyreport", True): "wg-policy-v1alpha2-wgpolicyk8s.io_clusterpolicyreports.yaml"}[flavor, cluster]
    crd = yaml.safe_load((CRDS / name).read_text())
    version = FLAVORS[flavor].api_version.split("/")[1]
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    assert served["served"]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def _closed(schema: Any) -> Any:
    """The CRD schema with unknown fields refused (the API server would prune them silently)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _validate(obj: dict[str, Any], flavor: str) -> None:
    schema = _schema(flavor, "namespace" not in obj["metadata"])
    jsonschema.validate(obj, _closed(schema))


def test_the_schema_check_refuses_what_the_api_server_would_refuse_or_drop() -> None:
    (report,) = build_reports(_scan(_verdict(Status.REVOKED)), FLAVORS["policyreport"])
    _validate(report, "policyreport")
    for bad in ({**report, "source": "sigaudit"},  # no report-level source in v1alpha2: it would be pruned
                {**report, "results": [{**report["results"][0], "severity": "urgent"}]},
                {**report, "results": [{**report["results"][0], "properties": {"pods": 2}}]}):
        with pytest.raises(jsonschema.ValidationError):
            _validate(bad, "policyreport")


@pytest.mark.parametrize(
    ("status", "warn_only", "expected"),
    [
        (Status.VERIFIED, False, Result.PASS),
        (Status.VERIFIED, True, Result.PASS),
        (Status.UNSIGNED, False, Result.FAIL),
        (Status.INVALID, False, Result.FAIL),
        (Status.EXPIRED, False, Result.FAIL),
        (Status.REVOKED, False, Result.FAIL),
        (Status.NO_POLICY, False, Result.FAIL),
        (Status.UNSIGNED, True, Result.WARN),
        (Status.INVALID, True, Result.WARN),
        (Status.EXPIRED, True, Result.WARN),
        (Status.REVOKED, True, Result.WARN),
        (Status.ERROR, False, Result.ERROR),
        (Status.ERROR, True, Result.ERROR),  # undecided is never downgraded to a warning
        (Status.EXEMPT, False, Result.SKIP),
        (Status.EXEMPT, True, Result.SKIP),
    ],
)
def test_every_verdict_status_maps_to_its_result(status: Status, warn_only: bool, expected: Result) -> None:
    v = _verdict(status, warn_only=warn_only)
    assert result_of(v) is expected
    for flavor in FLAVORS:
        (report,) = build_reports(_scan(v), FLAVORS[flavor])
        (result,) = report["results"]
        assert result["result"] == expected.value
        assert report["summary"] == {r.value: int(r is expected) for r in Result}
        assert result["message"] == f"decided: {status.value}"  # the deciding reason, not the first
        assert result["properties"]["status"] == status.value
        _validate(report, flavor)


def test_every_status_is_mapped() -> None:
    for status in Status:
        assert result_of(_verdict(status)) in Result


def test_a_result_carries_policy_rule_resource_properties_and_time() -> None:
    not_after = datetime(2027, 3, 1, tzinfo=UTC)
    v = _verdict(Status.VERIFIED, not_after=not_after, expiring=True)
    (report,) = build_reports(_scan(v), FLAVORS["openreports"])
    assert report["apiVersion"] == "openreports.io/v1alpha1" and report["kind"] == "Report"
    assert report["metadata"]["namespace"] == "shop" and report["metadata"]["name"] == "sigaudit"
    assert MANAGED_BY.items() <= report["metadata"]["labels"].items()
    assert report["source"] == "sigaudit"
    (r,) = report["results"]
    assert (r["policy"], r["rule"], r["source"], r["severity"]) == ("policy.yaml", "signed-by-ci", "sigaudit", "info")
    assert r["resources"] == [{"kind": "Deployment", "name": "web", "namespace": "shop", "apiVersion": "apps/v1"}]
    assert r["timestamp"] == {"seconds": int(FINISHED.timestamp()), "nanos": 345678000}
    assert r["properties"] == {
        "image": f"r.io/app:1@{DIGEST}", "digest": DIGEST, "status": "verified", "not_after": "2027-03-01T00:00:00Z",
        "expiring": "true", "scan_id": "42", "cluster": "prod", "container": "app", "container_type": "container",
        "pods": "1",
    }


def test_exempt_is_a_skip_that_names_the_waiver() -> None:
    until = datetime(2027, 1, 1, tzinfo=UTC)
    v = _verdict(Status.EXEMPT, reasons=("exempt until 2027",), deciding_reason=0, exemptions=(
        ExemptionRef(ExemptionKind.POLICY, "vendor image, ticket SEC-12", until, "secops"),
        ExemptionRef(ExemptionKind.WAIVER, "old allowlist", datetime(2026, 1, 1, tzinfo=UTC), lapsed=True)))
    (report,) = build_reports(_scan(v), FLAVORS["policyreport"])
    (r,) = report["results"]
    assert r["result"] == "skip"
    assert "vendor image, ticket SEC-12" in r["message"]
    assert r["properties"]["exemption_reason"] == "vendor image, ticket SEC-12"
    assert r["properties"]["exemption_until"] == "2027-01-01T00:00:00Z"
    assert r["properties"]["exemption_approved_by"] == "secops"
    assert r["properties"]["lapsed_exemption_until"] == "2026-01-01T00:00:00Z"
    _validate(report, "policyreport")


def test_one_result_per_workload_container_and_image_one_report_per_namespace() -> None:
    image = _image(_c(pod="web-1"), _c(pod="web-2"), _c(pod="web-1", container="sidecar"),
                   _c(ns="blog", pod="cms-0", kind="StatefulSet", name="cms"), _c(ns="blog", pod="solo", kind="Pod",
                                                                                 name="solo"))
    reports = build_reports(_scan(_verdict(Status.UNSIGNED, image=image)), FLAVORS["openreports"])
    assert [(o["metadata"]["namespace"], len(o["results"])) for o in reports] == [("blog", 2), ("shop", 2)]
    shop = {(r["resources"][0]["name"], r["properties"]["container"]): r for r in reports[1]["results"]}
    assert set(shop) == {("web", "app"), ("web", "sidecar")}
    assert shop["web", "app"]["properties"]["pods"] == "2"
    blog = {r["resources"][0]["kind"]: r["resources"][0] for r in reports[0]["results"]}
    assert blog["Pod"] == {"kind": "Pod", "name": "solo", "namespace": "blog", "apiVersion": "v1", "uid": "uid-solo"}
    assert blog["StatefulSet"]["apiVersion"] == "apps/v1"
    for o in reports:
        _validate(o, "openreports")


def test_an_unresolved_image_is_an_error_result_without_a_digest() -> None:
    image = UnresolvedImage(None, "r.io/app:1", (_c(),), "not started yet")
    (report,) = build_reports(_scan(_verdict(Status.ERROR, image=image)), FLAVORS["openreports"])
    (r,) = report["results"]
    assert r["result"] == "error" and "digest" not in r["properties"]
    _validate(report, "openreports")


def test_a_partial_scans_errors_go_to_the_cluster_report() -> None:
    scan = _scan(_verdict(Status.VERIFIED), state=ScanState.PARTIAL, errors=("namespace kube-x: forbidden",))
    for flavor, kind in (("openreports", "ClusterReport"), ("policyreport", "ClusterPolicyReport")):
        reports = build_reports(scan, FLAVORS[flavor])
        cluster = [o for o in reports if "namespace" not in o["metadata"]]
        assert [o["kind"] for o in cluster] == [kind]
        (r,) = cluster[0]["results"]
        assert (r["result"], r["message"]) == ("error", "namespace kube-x: forbidden")
        _validate(cluster[0], flavor)
    assert all("namespace" in o["metadata"] for o in build_reports(_scan(_verdict(Status.VERIFIED)),
                                                                    FLAVORS["openreports"]))


def test_hostile_text_stays_data_and_is_bounded() -> None:
    hostile = "x" * 5000 + "\n---\nkind: ClusterRoleBinding\n<script>"
    v = _verdict(Status.INVALID, reasons=(hostile,), deciding_reason=0)
    text = to_yaml(build_reports(_scan(v), FLAVORS["openreports"]))
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 1 and docs[0]["kind"] == "Report"
    assert len(docs[0]["results"][0]["message"]) < 1100


def test_a_namespace_with_many_results_is_split_into_bounded_objects() -> None:
    containers = tuple(_c(pod=f"p{i}", kind="Pod", name=f"p{i}") for i in range(MAX_RESULTS + 5))
    reports = build_reports(_scan(_verdict(Status.UNSIGNED, image=_image(*containers))), FLAVORS["openreports"])
    assert [(o["metadata"]["name"], len(o["results"])) for o in reports] == [("sigaudit", MAX_RESULTS),
                                                                             ("sigaudit-2", 5)]
    assert sum(o["summary"]["fail"] for o in reports) == MAX_RESULTS + 5


def test_large_results_are_split_by_size_too() -> None:
    # Many long reasons and names: each object's results stay under MAX_BYTES, none is lost.
    verdicts = [_verdict(Status.INVALID, reasons=("r" * 5000,), deciding_reason=0, rule="n" * 400,
                         image=RunningImage(ImageReference("r.io", "a" * 900, None, DIGEST),
                                            tuple(_c(pod=f"p{i}-{j}", kind="Pod", name=f"p{i}-{j}")
                                                  for j in range(10))))
                for i in range(80)]
    reports = build_reports(_scan(*verdicts), FLAVORS["openreports"])
    assert len(reports) > 1
    for o in reports:
        assert len(json.dumps(o["results"]).encode()) <= MAX_BYTES
        assert len(o["results"][0]["rule"]) < 300
    assert sum(len(o["results"]) for o in reports) == 800
