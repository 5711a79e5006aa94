"""The rendered chart against a real kube-apiserver: every object of every ``ci/*-values.yaml`` scenario is
accepted by a server-side dry run with strict field validation, in a namespace that enforces Pod Security
"restricted"; each pod template, submitted as a Pod, passes the PodSecurity admission plugin itself, and
the workload objects draw no PodSecurity warning. (kubeconform checks the schemas offline; this checks
what the API server and its admission say.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.fixtures_kube import KubeAPIServer, ensure_namespace
from tests.harness.tools import require_tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sigaudit"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}
PLURALS = {
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Service": "services",
    "Pod": "pods",
    "CronJob": "cronjobs",
    "Deployment": "deployments",
    "Job": "jobs",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "NetworkPolicy": "networkpolicies",
}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # no prometheus-operator CRDs on this API server


def render(values: Path, namespace: str) -> list[dict[str, Any]]:
    helm = require_tool("helm")
    out = subprocess.run(
        [str(helm), "template", "sigaudit", str(CHART), "--namespace", namespace, "--values", str(values)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]


def collection(obj: Mapping[str, Any]) -> str:
    api_version, kind = obj["apiVersion"], obj["kind"]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = obj["metadata"].get("namespace")
    if kind.startswith("Cluster") or not ns:
        return f"{base}/{PLURALS[kind]}"
    return f"{base}/namespaces/{ns}/{PLURALS[kind]}"


def pod_templates(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for o in objs:
        if o["kind"] == "CronJob":
            t = o["spec"]["jobTemplate"]["spec"]["template"]
        elif o["kind"] in ("Deployment", "Job"):
            t = o["spec"]["template"]
        else:
            continue
        yield f"{o['kind']}/{o['metadata']['name']}", t.get("metadata", {}), t["spec"]


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name.removesuffix("-values.yaml") for p in CI_VALUES])
def test_api_server_accepts_the_chart_under_restricted_pod_security(
    kube_apiserver: KubeAPIServer, values: Path
) -> None:
    namespace = "chart-" + values.name.removesuffix("-values.yaml")
    objs = render(values, namespace)
    for ns in {namespace} | {o["metadata"]["namespace"] for o in objs if o["metadata"].get("namespace")}:
        ensure_namespace(kube_apiserver, ns, RESTRICTED)
    problems: list[str] = []
    with kube_apiserver.http() as c:
        for o in objs:
            if o["kind"] in CRD_KINDS:
                continue
            r = c.post(collection(o), params={"dryRun": "All", "fieldValidation": "Strict"}, json=o)
            where = f"{o['kind']}/{o['metadata']['name']}"
            if r.status_code >= 300:
                problems.append(f"{where}: {r.status_code} {r.json().get('message', r.text)}")
            warnings = [w for w in r.headers.get_list("warning") if "PodSecurity" in w or "unknown field" in w]
            if warnings:
                problems.append(f"{where}: warnings {warnings}")
        for where, meta, spec in pod_templates(objs):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "pss-check", "namespace": namespace, "labels": meta.get("labels", {})},
                "spec": {**spec, "restartPolicy": "Never"},
            }
            r = c.post(collection(pod), params={"dryRun": "All", "fieldValidation": "Strict"}, json=pod)
            if r.status_code >= 300:
                problems.append(f"pod of {where}: {r.status_code} {r.json().get('message', r.text)}")
    assert not problems, json.dumps(problems, indent=2)


def test_the_restricted_namespace_really_refuses_an_unhardened_pod(kube_apiserver: KubeAPIServer) -> None:
    ensure_namespace(kube_apiserver, "chart-pss-negative", RESTRICTED)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "chart-pss-negative"},
        # Baseline-clean but not restricted: no securityContext at all.
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    with kube_apiserver.http() as c:
        r = c.post(collection(pod), params={"dryRun": "All"}, json=pod)
    assert r.status_code == 403 and 'violates PodSecurity "restricted' in r.json()["message"], r.text
