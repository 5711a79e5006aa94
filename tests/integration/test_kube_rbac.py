"""RBAC for real: the ServiceAccount, ClusterRole/Role and bindings rendered by ``helm template`` from
helm/sigaudit are applied to a real kube-apiserver; ``sigaudit scan`` runs with that ServiceAccount's
TokenRequest token and succeeds; with any one permission of the rendered rules taken away it fails
with a message naming the missing permission (so the chart grants exactly what the code uses)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.fixtures_kube import (
    KubeAPIError,
    KubeAPIServer,
    container,
    create,
    ensure_namespace,
    make_bare_pod,
    make_cronjob,
    make_deployment,
    pinned_kube_version,
    pod_template,
    report_status,
)
from tests.harness.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.tools]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sigaudit"
APPS = "sigaudit-rbac-apps"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
RBAC_API = "rbac.authorization.k8s.io/v1"
# Every image is exempt: the test is about the API permissions, not the registry.
POLICY = """\
apiVersion: sigaudit.io/v1alpha1
kind: AuditPolicy
spec:
  exemptions:
    - images: ["*"]
      reason: RBAC test, no registry involved
      until: "2099-01-01T00:00:00Z"
"""


@dataclass(frozen=True)
class Permission:
    """One (apiGroup, resource, verb) of a rule, where it applies (cluster or a namespace)."""

    scope: str  # "" for a ClusterRole, else the Role's namespace
    role: str
    group: str
    resource: str
    verb: str
    resource_names: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f" in {self.scope}" if self.scope else " cluster-wide"
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {res}{where}"


def render(release: str, namespace: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    helm = require_tool("helm")
    if not (CHART / "Chart.yaml").is_file():
        pytest.fail(f"no chart at {CHART}")
    # The server's version: `go install`ed helm otherwise assumes v1.20, below the chart's kubeVersion.
    args = [
        str(helm),
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        pinned_kube_version(),
    ]
    for k, v in values.items():
        args += ["--set-json", f"{k}={json.dumps(v)}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]


def permissions(objs: Sequence[Mapping[str, Any]]) -> list[Permission]:
    out = []
    for o in objs:
        if o.get("kind") not in ("ClusterRole", "Role"):
            continue
        scope = "" if o["kind"] == "ClusterRole" else str(o["metadata"].get("namespace", ""))
        for rule in o.get("rules") or []:
            assert not rule.get("nonResourceURLs"), f"{o['metadata']['name']}: nonResourceURLs are not needed"
            for g, r, v in itertools.product(rule.get("apiGroups", []), rule.get("resources", []), rule["verbs"]):
                out.append(Permission(scope, o["metadata"]["name"], g, r, v, tuple(rule.get("resourceNames") or ())))
    return out


def _rules(perms: Sequence[Permission]) -> list[dict[str, Any]]:
    rules = []
    for p in perms:
        rule: dict[str, Any] = {"apiGroups": [p.group], "resources": [p.resource], "verbs": [p.verb]}
        if p.resource_names:
            rule["resourceNames"] = list(p.resource_names)
        rules.append(rule)
    return rules


def _put(server: KubeAPIServer, obj: Mapping[str, Any]) -> None:
    """Create or replace an object as rendered."""
    try:
        create(server, obj)
    except KubeAPIError as exc:
        if exc.status != 409:
            raise
        meta = obj["metadata"]
        kind = obj["kind"]
        if kind == "ServiceAccount":
            return
        base = f"/apis/{RBAC_API}"
        plural = {
            "ClusterRole": "clusterroles",
            "ClusterRoleBinding": "clusterrolebindings",
            "Role": "roles",
            "RoleBinding": "rolebindings",
        }[kind]
        path = (
            f"{base}/{plural}/{meta['name']}"
            if kind.startswith("Cluster")
            else (f"{base}/namespaces/{meta['namespace']}/{plural}/{meta['name']}")
        )
        with server.http() as c:
            cur = c.get(path).json()
            new = {**obj, "metadata": {**meta, "resourceVersion": cur["metadata"]["resourceVersion"]}}
            r = c.put(path, json=new)
            assert r.status_code == 200, r.text


def apply_rbac(
    server: KubeAPIServer, objs: Sequence[Mapping[str, Any]], release_ns: str, keep: Sequence[Permission] | None = None
) -> None:
    """Apply the rendered RBAC objects; with ``keep``, the roles carry only those permissions."""
    ensure_namespace(server, release_ns)
    for o in objs:
        if o.get("kind") not in RBAC_KINDS:
            continue
        o = json.loads(json.dumps(o))
        if o["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            o["metadata"].setdefault("namespace", release_ns)
            ensure_namespace(server, o["metadata"]["namespace"])
        if keep is not None and o["kind"] in ("ClusterRole", "Role"):
            scope = "" if o["kind"] == "ClusterRole" else o["metadata"]["namespace"]
            o["rules"] = _rules([p for p in keep if p.role == o["metadata"]["name"] and p.scope == scope])
        _put(server, o)


def can(server: KubeAPIServer, token: str, p: Permission) -> bool:
    attrs: dict[str, Any] = {"group": p.group, "resource": p.resource, "verb": p.verb}
    if p.scope:
        attrs["namespace"] = p.scope
    with server.http(token=token) as c:
        r = c.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            json={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs},
            },
        )
        assert r.status_code == 201, r.text
        return bool(r.json()["status"].get("allowed"))


def wait_rbac(
    server: KubeAPIServer, token: str, allowed: Sequence[Permission], denied: Sequence[Permission] = ()
) -> None:
    """The RBAC authorizer reads through an informer: wait until it sees the change."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(can(server, token, p) for p in allowed) and not any(can(server, token, p) for p in denied):
            return
        time.sleep(0.1)
    raise AssertionError(f"RBAC did not settle: allowed={allowed} denied={denied}")


def service_account(objs: Sequence[Mapping[str, Any]], release_ns: str) -> tuple[str, str]:
    """The ServiceAccount the rendered workloads run as."""
    for o in objs:
        spec = o.get("spec") or {}
        tpl = (spec.get("jobTemplate") or {}).get("spec", spec).get("template") or {}
        name = (tpl.get("spec") or {}).get("serviceAccountName")
        if o.get("kind") in ("CronJob", "Deployment") and name:
            return str(o["metadata"].get("namespace") or release_ns), str(name)
    sas = [o for o in objs if o.get("kind") == "ServiceAccount"]
    assert len(sas) == 1, "the chart renders no workload naming its ServiceAccount, and not exactly one SA"
    return str(sas[0]["metadata"].get("namespace") or release_ns), str(sas[0]["metadata"]["name"])


def run_scan(
    server: KubeAPIServer, kubeconfig: Path, tmp: Path, args: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    cmd = [
        sys.executable,
        "-m",
        "scanner.cli",
        "scan",
        "--kubeconfig",
        str(kubeconfig),
        "--policy",
        str(policy),
        "--no-store",
        "--output",
        "json",
        "--no-progress",
        "--page-size",
        "500",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp), "DOCKER_CONFIG": str(tmp / "docker")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def apps(kube_apiserver: KubeAPIServer) -> Iterator[dict[str, tuple[str, str]]]:
    """Workloads the scan must see and name: pod -> (workload kind, name)."""
    s = kube_apiserver
    ensure_namespace(s, APPS)
    create(
        s,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "regcred", "namespace": APPS},
            "stringData": {".dockerconfigjson": json.dumps({"auths": {"127.0.0.1:1": {"auth": "dTpw"}}})},
        },
    )
    want: dict[str, tuple[str, str]] = {}
    img = "127.0.0.1:1/acme/app"
    image_id = f"{img}@sha256:" + "7a" * 32
    web = make_deployment(s, APPS, "web", pod_template({}, [container("app", f"{img}:1")], pull_secrets=["regcred"]))
    job = make_cronjob(s, APPS, "nightly", pod_template({}, [container("app", f"{img}:1")]))
    bare = make_bare_pod(s, APPS, "bare", pod_template({}, [container("app", f"{img}:1")]))
    for kind, name, pods in (
        ("Deployment", "web", web.pods),
        ("CronJob", "nightly", job.pods),
        ("Pod", "bare", (bare,)),
    ):
        for p in pods:
            report_status(s, p, {"app": image_id})
            want[p["metadata"]["name"]] = (kind, name)
    yield want


def _workloads(doc: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        c["pod"]: (c["workload_kind"], c["workload_name"])
        for i in doc["images"]
        for c in i["containers"]
        if c["namespace"] == APPS
    }


SCENARIOS: dict[str, tuple[dict[str, Any], list[str], set[str] | None]] = {
    # values, extra scan args, resources whose permissions are taken away one by one (None: all;
    # the pull-secrets scenario only adds `secrets`, the others are covered by cluster-wide)
    "cluster-wide": ({}, ["-n", "sigaudit-rbac-*"], None),
    "cluster-wide-pull-secrets": (
        {"registryAuth.fromImagePullSecrets": True},
        ["-n", "sigaudit-rbac-*", "--pull-secrets"],
        {"secrets"},
    ),
    "namespaced": ({"scope.namespaces": [APPS]}, ["-n", APPS], None),
}


@pytest.mark.parametrize(
    "scenario",
    sorted(SCENARIOS),
)
def test_chart_rbac_is_enough_and_every_permission_is_needed(
    kube_apiserver: KubeAPIServer, apps: dict[str, tuple[str, str]], tmp_path: Path, scenario: str
) -> None:
    values, args, taken_away = SCENARIOS[scenario]
    release, release_ns = f"rbac-{scenario}", f"sigaudit-sys-{scenario}"
    objs = render(release, release_ns, values)
    perms = permissions(objs)
    assert perms, f"helm template ({scenario}) renders no ClusterRole/Role rules"
    apply_rbac(kube_apiserver, objs, release_ns)
    sa_ns, sa = service_account(objs, release_ns)
    kubeconfig = kube_apiserver.service_account_kubeconfig(sa_ns, sa, tmp_path / "sa.kubeconfig", create=False)
    token = kube_apiserver.token_for(sa_ns, sa)
    wait_rbac(kube_apiserver, token, perms)

    ok = run_scan(kube_apiserver, kubeconfig, tmp_path, args)
    assert ok.returncode in (0, 1), f"scan with the chart's RBAC failed ({ok.returncode}):\n{ok.stderr[-3000:]}"
    doc = json.loads(ok.stdout)
    assert doc["scan"]["status"] == "complete", ok.stderr[-2000:]
    assert _workloads(doc) == apps
    assert "forbidden" not in ok.stderr.lower(), ok.stderr[-2000:]

    missing_reported: dict[str, str] = {}
    for p in perms:
        if taken_away is not None and p.resource not in taken_away:
            continue
        keep = [q for q in perms if q != p]
        apply_rbac(kube_apiserver, objs, release_ns, keep=keep)
        wait_rbac(kube_apiserver, token, keep, [p])
        r = run_scan(kube_apiserver, kubeconfig, tmp_path, args)
        text = r.stderr + r.stdout
        failed = r.returncode == 3 or (r.returncode in (0, 1) and json.loads(r.stdout)["scan"]["status"] != "complete")
        named = re.search(rf"\b{re.escape(p.verb)}\b[^\n]*\b{re.escape(p.resource)}\b", text, re.I) is not None
        if not (failed and named):
            missing_reported[str(p)] = f"exit {r.returncode}; stderr: {r.stderr.strip()[-400:]!r}"
    apply_rbac(kube_apiserver, objs, release_ns)
    assert not missing_reported, (
        "without these permissions the scan did not fail naming them (the chart grants more than the code "
        f"uses, or the code hides the failure): {json.dumps(missing_reported, indent=2)}"
    )


def test_rendered_roles_grant_no_write_verbs() -> None:
    for values, _, _ in SCENARIOS.values():
        for p in permissions(render("rbac-verbs", "sigaudit-system", values)):
            assert p.verb in ("get", "list", "watch"), p
            assert p.resource != "*" and p.group != "*", p
