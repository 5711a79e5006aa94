"""The chart's RBAC grants exactly what the scanner's code calls.

The permissions the code needs are derived from its source by ``helm/rbac_from_code.py`` (``ast`` over
``scanner/``, each kubernetes-client method mapped to group/resource/verb by the client itself); the
chart's permissions are read from ``helm template`` output. Both sides are compared per switch: the
always-on inventory rules, ``registryAuth.fromImagePullSecrets``, each ``policyImport`` source, each
``clusterReports.format`` (the only writes besides the server's reviews) and ``server.watch`` (pods: watch).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.tools import require_tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sigaudit"


def _load_deriver() -> Any:
    spec = importlib.util.spec_from_file_location("rbac_from_code", REPO / "helm" / "rbac_from_code.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rbac_from_code"] = module
    spec.loader.exec_module(module)
    return module


rbac = _load_deriver()
Permission = rbac.Permission

# Which switch of the chart stands behind the permissions of the API groups the importers read.
IMPORT_GROUPS = {
    "policyImport.kyverno": ("kyverno.io", "policies.kyverno.io"),  # policies.kyverno.io: ImageValidatingPolicy
    "policyImport.clusterImagePolicy": ("policy.sigstore.dev",),
    "policyImport.notation": ("notation.nirmata.io",),
    "policyImport.kritis": ("kritis.grafeas.io",),
}
ALL_ON = {
    "policyImport": {"kyverno": True, "clusterImagePolicy": True, "notation": True, "kritis": True},
    "registryAuth": {"fromImagePullSecrets": True},
    "mode": "server",  # server.auth.kubernetes (on by default) is a server switch
    "server": {"watch": {"enabled": True}},
}
# Read by every import from the cluster (the admission controllers' webhooks: scanner/policy/imports.py).
WEBHOOK_GROUP = "admissionregistration.k8s.io"
# server.watch.enabled (in a mode that runs the server): the pod informer's watch requests.
WATCH = frozenset({Permission("", "pods", "watch")})
# The server's Kubernetes authentication (server.auth.kubernetes.enabled): reviews, never stored.
AUTH_GROUPS = ("authentication.k8s.io", "authorization.k8s.io")
# clusterReports.format -> the API group of the reports it writes (clusterReports.enabled).
REPORT_GROUPS = {"openreports": "openreports.io", "policyreport": "wgpolicyk8s.io"}


def _reports(values: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    return {**values, "clusterReports": {"enabled": True, "format": fmt}}


def render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    helm = require_tool("helm")
    args = [str(helm), "template", "sigaudit", str(CHART), "--namespace", "sigaudit"]
    for k, v in values.items():
        args += ["--set-json", f"{k}={json.dumps(v)}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]


def granted(objs: Sequence[Mapping[str, Any]], kinds: tuple[str, ...] = ("ClusterRole", "Role")) -> set[Any]:
    perms = set()
    for o in objs:
        if o.get("kind") not in kinds:
            continue
        for rule in o.get("rules") or []:
            assert not rule.get("nonResourceURLs"), o["metadata"]["name"]
            assert not rule.get("resourceNames"), "resourceNames would make the comparison meaningless"
            for g, r, v in itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"]):
                assert "*" not in (g, r, v), f"wildcard in {o['kind']}/{o['metadata']['name']}: {rule}"
                perms.add(Permission(g, r, v))
    return perms


@pytest.fixture(scope="module")
def derived() -> Any:
    result = rbac.derive()
    assert not result.problems, "API calls whose RBAC cannot be derived:\n" + "\n".join(result.problems)
    return result


def _split(perms: set[Any]) -> tuple[set[Any], set[Any], dict[str, set[Any]]]:
    """(inventory, secrets, {switch: perms of its API group})."""
    webhooks = {p for p in perms if p.group == WEBHOOK_GROUP}
    imports = {switch: {p for p in perms if p.group in groups} | webhooks for switch, groups in IMPORT_GROUPS.items()}
    imported = set().union(*imports.values())
    secrets = {p for p in perms if p.group == "" and p.resource == "secrets"}
    auth = {p for p in perms if p.group in AUTH_GROUPS}
    reports = {p for p in perms if p.group in REPORT_GROUPS.values()}
    return perms - imported - secrets - auth - reports - WATCH, secrets, imports


def test_code_uses_the_inventory_calls_the_chart_is_built_around(derived: Any) -> None:
    perms = set(derived.permissions)
    assert Permission("", "pods", "list") in perms
    assert Permission("apps", "replicasets", "get") in perms
    assert Permission("batch", "jobs", "get") in perms
    reviews = {Permission("authentication.k8s.io", "tokenreviews", "create"),
               Permission("authorization.k8s.io", "subjectaccessreviews", "create")}
    assert reviews <= perms
    reports = {p for p in perms if p.group in REPORT_GROUPS.values()}
    assert {p.verb for p in reports} == {"list", "create", "patch", "delete"}, reports  # apply and prune
    for perm in perms - reviews - reports:  # a review is answered, not stored; reports are sigaudit's output
        assert perm.verb in ("get", "list", "watch"), (
            f"the scanner writes to the API: {perm} at {derived.permissions[perm]}"
        )


def test_server_auth_switch_grants_exactly_the_review_calls(derived: Any) -> None:
    inventory, _, _ = _split(set(derived.permissions))
    auth = {p for p in derived.permissions if p.group in AUTH_GROUPS}
    assert granted(render({"mode": "server"})) == inventory | auth
    off = {"mode": "server", "server": {"auth": {"kubernetes": {"enabled": False}, "tokenSecret": {"name": "t"}}}}
    assert granted(render(off)) == inventory


def test_watch_switch_grants_exactly_the_pod_watch_of_the_informer(derived: Any) -> None:
    inventory, _, _ = _split(set(derived.permissions))
    assert WATCH <= set(derived.permissions), "no code watches pods, yet the chart offers server.watch"
    off = {"mode": "server", "server": {"auth": {"kubernetes": {"enabled": False}, "tokenSecret": {"name": "t"}}}}
    on = {"mode": "server", "server": {**off["server"], "watch": {"enabled": True}}}
    assert granted(render(on)) == inventory | WATCH
    # Only a server watches: the CronJob alone never gets the verb.
    assert granted(render({"mode": "cronjob", "server": {"watch": {"enabled": True}}})) == inventory
    args = next(o for o in render(on) if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--watch" in args and "--watch-queue-max=5000" in args


def test_default_chart_grants_exactly_the_inventory_calls(derived: Any) -> None:
    inventory, _, _ = _split(set(derived.permissions))
    assert granted(render({})) == inventory


def test_pull_secrets_switch_adds_exactly_secret_reads(derived: Any) -> None:
    inventory, secrets, _ = _split(set(derived.permissions))
    assert secrets, "the code reads no Secret, yet the chart offers registryAuth.fromImagePullSecrets"
    assert granted(render({"registryAuth": {"fromImagePullSecrets": True}})) == inventory | secrets


@pytest.mark.parametrize("switch", sorted(IMPORT_GROUPS))
def test_each_policy_import_switch_grants_exactly_what_its_importer_calls(derived: Any, switch: str) -> None:
    inventory, _, imports = _split(set(derived.permissions))
    key = switch.split(".")[1]
    chart_extra = granted(render({"policyImport": {key: True}})) - inventory
    code = imports[switch]
    if not {p for p in code if p.group != WEBHOOK_GROUP}:
        pytest.skip(
            f"no code reads {IMPORT_GROUPS[switch]} yet; the chart grants {sorted(map(str, chart_extra))} "
            f"for {switch}, to be checked once the importer lands"
        )
    assert chart_extra == code, (
        f"{switch}: chart grants {sorted(map(str, chart_extra))}, code calls "
        f"{ {str(p): [str(s) for s in derived.permissions[p]] for p in code} }"
    )


@pytest.mark.parametrize("fmt", sorted(REPORT_GROUPS))
def test_cluster_reports_switch_grants_exactly_the_report_calls_of_its_format(derived: Any, fmt: str) -> None:
    inventory, _, _ = _split(set(derived.permissions))
    assert granted(render({"clusterReports": {"enabled": False, "format": fmt}})) == inventory
    code = {p for p in derived.permissions if p.group == REPORT_GROUPS[fmt]}
    assert code, f"no code writes {REPORT_GROUPS[fmt]}"
    assert granted(render(_reports({}, fmt))) - inventory == code


@pytest.mark.parametrize("fmt", sorted(REPORT_GROUPS))
def test_all_switches_on_grant_no_more_than_the_code_calls(derived: Any, fmt: str) -> None:
    """The whole union: nothing granted that no code calls, except importers not written yet (one report
    format at a time: the other's calls are not granted)."""
    other = {g for f, g in REPORT_GROUPS.items() if f != fmt}
    code = {p for p in derived.permissions if p.group not in other}
    _, _, imports = _split(code)
    pending = {g for s, gs in IMPORT_GROUPS.items() for g in gs
               if not {p for p in imports[s] if p.group != WEBHOOK_GROUP}}
    chart = {p for p in granted(render(_reports(ALL_ON, fmt))) if p.group not in pending}
    assert chart == code, {
        "granted, never called": sorted(map(str, chart - code)),
        "called, not granted": sorted(map(str, code - chart)),
    }


@pytest.mark.parametrize("fmt", sorted(REPORT_GROUPS))
def test_namespaced_scope_grants_cluster_wide_only_what_the_code_lists_cluster_wide(derived: Any, fmt: str) -> None:
    objs = render(_reports({"scope": {"namespaces": ["team-a", "team-b"]}, **ALL_ON}, fmt))
    roles = [o for o in objs if o["kind"] == "Role"]
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    namespaced = granted(objs, ("Role",))
    cluster = granted(objs, ("ClusterRole",))
    _, _, imports = _split(set(derived.permissions))
    pending = {g for s, gs in IMPORT_GROUPS.items() for g in gs
               if not {p for p in imports[s] if p.group != WEBHOOK_GROUP}}
    other = {g for f, g in REPORT_GROUPS.items() if f != fmt}
    code = {p for p in derived.permissions if p.group not in other}
    wide = {p for p in code if rbac.needs_cluster_wide(derived, p)}
    per_ns = code - wide
    # A call that spans all namespaces (e.g. list_custom_object_for_all_namespaces) needs the ClusterRole;
    # everything the code can do one namespace at a time stays in the Roles.
    assert {p for p in cluster if p.group not in pending} == wide, {
        "cluster-wide in chart": sorted(map(str, cluster)),
        "cluster-wide calls in code": sorted(map(str, wide)),
    }
    assert namespaced == per_ns, {"roles": sorted(map(str, namespaced)), "code": sorted(map(str, per_ns))}


def test_the_rbac_table_in_the_readme_lists_every_derived_permission(derived: Any) -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for perm in derived.permissions:
        assert f"`{perm.resource}`" in readme and perm.verb in readme, f"README RBAC table lacks {perm}"
