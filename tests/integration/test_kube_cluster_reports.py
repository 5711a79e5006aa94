"""Policy reports in a real kube-apiserver with the real OpenReports and wg-policy PolicyReport CRDs
(tests/data/upstream-crds, see its PROVENANCE.md): ``sigaudit scan --reports`` running as the chart's
ServiceAccount with only the chart's ``clusterReports`` RBAC creates one report per namespace, replaces
it at the next scan, prunes the report of a namespace whose workloads are gone, and leaves other tools'
reports alone — even one that copies sigaudit's label, and one that took sigaudit's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.fixtures_kube import (
    KubeAPIError,
    KubeAPIServer,
    apply,
    container,
    create,
    delete,
    ensure_namespace,
    make_bare_pod,
    make_deployment,
    pod_template,
    report_status,
)
from tests.integration.test_kube_rbac import apply_rbac, permissions, render, service_account, wait_rbac

pytestmark = [pytest.mark.integration, pytest.mark.tools]

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "tests" / "data" / "upstream-crds"
CRD_FILES = (
    "openreports-openreports.io_reports.yaml",
    "openreports-openreports.io_clusterreports.yaml",
    "wg-policy-v1alpha2-wgpolicyk8s.io_policyreports.yaml",
    "wg-policy-v1alpha2-wgpolicyk8s.io_clusterpolicyreports.yaml",
)
SHOP, BLOG, OTHER = "sigaudit-rep-shop", "sigaudit-rep-blog", "sigaudit-rep-other"
IMG = "127.0.0.1:1/acme"
DIGEST = "sha256:" + "5e" * 32
# A vendor image is exempt (skip); nothing else matches a rule (fail: no policy). No registry is involved.
POLICY = """\
apiVersion: sigaudit.io/v1alpha1
kind: AuditPolicy
spec:
  exemptions:
    - images: ["127.0.0.1:1/acme/vendor"]
      reason: vendor image, ticket SEC-12
      until: "2099-01-01T00:00:00Z"
      approvedBy: secops
"""
OPENREPORTS = "/apis/openreports.io/v1alpha1"
POLICYREPORTS = "/apis/wgpolicyk8s.io/v1alpha2"


def _install_crds(server: KubeAPIServer) -> None:
    for name in CRD_FILES:
        apply(server, yaml.safe_load((CRDS / name).read_text()))
    deadline = time.monotonic() + 30
    with server.http() as c:
        for name in CRD_FILES:
            crd = yaml.safe_load((CRDS / name).read_text())["metadata"]["name"]
            while True:
                conds = c.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}").json()
                if any(x["type"] == "Established" and x["status"] == "True"
                       for x in (conds.get("status") or {}).get("conditions") or []):
                    break
                assert time.monotonic() < deadline, f"CRD {crd} not established"
                time.sleep(0.2)
        for base, plural in ((OPENREPORTS, "reports"), (POLICYREPORTS, "policyreports")):
            while c.get(f"{base}/{plural}").status_code != 200:
                assert time.monotonic() < deadline, f"{base}/{plural} not served"
                time.sleep(0.2)


def _running(server: KubeAPIServer, pods: Sequence[dict[str, Any]], repo: str) -> None:
    for p in pods:
        report_status(server, p, {"app": f"{IMG}/{repo}@{DIGEST}"})


@pytest.fixture(scope="module")
def cluster(kube_apiserver: KubeAPIServer) -> Iterator[dict[str, Any]]:
    s = kube_apiserver
    _install_crds(s)
    for ns in (SHOP, BLOG, OTHER):
        ensure_namespace(s, ns)
    web = make_deployment(s, SHOP, "web", pod_template({}, [container("app", f"{IMG}/web:1")]))
    _running(s, web.pods, "web")
    vendor = make_bare_pod(s, SHOP, "vendor", pod_template({}, [container("app", f"{IMG}/vendor:1")]))
    _running(s, [vendor], "vendor")
    cms = make_bare_pod(s, BLOG, "cms", pod_template({}, [container("app", f"{IMG}/cms:1")]))
    _running(s, [cms], "cms")
    yield {"web": web, "vendor": vendor, "cms": cms}


def _scan(kubeconfig: Path, tmp: Path, fmt: str, *extra: str,
          namespaces: str = "sigaudit-rep-*") -> subprocess.CompletedProcess[str]:
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    cmd = [sys.executable, "-m", "scanner.cli", "scan", "--kubeconfig", str(kubeconfig), "--policy", str(policy),
           "--no-store", "-o", "json", "--no-progress", "-n", namespaces, "--reports", fmt, *extra]
    env = {**os.environ, "HOME": str(tmp), "DOCKER_CONFIG": str(tmp / "docker")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert r.returncode in (0, 1), f"exit {r.returncode}: {r.stderr[-3000:]}"
    assert json.loads(r.stdout)["scan"]["status"] == "complete", r.stderr[-2000:]
    assert "policy reports:" not in r.stderr, r.stderr[-2000:]  # no problem was logged
    return r


def _list(server: KubeAPIServer, base: str, plural: str, ns: str) -> dict[str, dict[str, Any]]:
    with server.http() as c:
        r = c.get(f"{base}/namespaces/{ns}/{plural}")
        assert r.status_code == 200, r.text
        return {o["metadata"]["name"]: o for o in r.json()["items"]}


def _others(server: KubeAPIServer) -> dict[str, dict[str, Any]]:
    """Reports of other tools: Kyverno's beside sigaudit's, one that copies sigaudit's label (but was
    not applied by sigaudit), and one that took the name ``sigaudit`` in a namespace sigaudit writes to."""
    def report(ns: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "source": "kyverno", "summary": {"pass": 1},
                "results": [{"policy": "require-labels", "result": "pass", "source": "kyverno"}]}
    objs = {
        "kyverno": report(SHOP, "kyverno-polr", {"app.kubernetes.io/managed-by": "kyverno"}),
        "copycat": report(OTHER, "lookalike", {"app.kubernetes.io/managed-by": "sigaudit"}),
    }
    return {k: create(server, v) for k, v in objs.items()}


def test_reports_are_created_replaced_and_pruned_with_the_charts_rbac_only(
    kube_apiserver: KubeAPIServer, cluster: dict[str, Any], tmp_path: Path
) -> None:
    s = kube_apiserver
    objs = render("reports", "sigaudit-rep-sys", {"clusterReports": {"enabled": True, "format": "openreports"}})
    perms = permissions(objs)
    assert {(p.group, p.resource) for p in perms if p.group == "openreports.io"} == {
        ("openreports.io", "reports"), ("openreports.io", "clusterreports")}
    apply_rbac(s, objs, "sigaudit-rep-sys")
    sa_ns, sa = service_account(objs, "sigaudit-rep-sys")
    kubeconfig = s.service_account_kubeconfig(sa_ns, sa, tmp_path / "sa.kubeconfig", create=False)
    wait_rbac(s, s.token_for(sa_ns, sa), perms)
    others = _others(s)

    _scan(kubeconfig, tmp_path, "openreports")
    shop = _list(s, OPENREPORTS, "reports", SHOP)
    assert set(shop) == {"sigaudit", "kyverno-polr"}
    mine = shop["sigaudit"]
    assert mine["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sigaudit"
    assert [m["manager"] for m in mine["metadata"]["managedFields"]] == ["sigaudit"]
    assert mine["source"] == "sigaudit"
    by_name = {r["resources"][0]["name"]: r for r in mine["results"]}
    assert set(by_name) == {"web", "vendor"}
    assert by_name["web"]["result"] == "fail" and by_name["web"]["properties"]["status"] == "no-policy"
    assert by_name["web"]["resources"][0] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                              "namespace": SHOP}
    assert by_name["web"]["properties"]["pods"] == "2"
    assert by_name["web"]["properties"]["digest"] == DIGEST
    assert by_name["vendor"]["result"] == "skip"
    assert by_name["vendor"]["properties"]["exemption_reason"] == "vendor image, ticket SEC-12"
    assert mine["summary"] == {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 1}
    assert set(_list(s, OPENREPORTS, "reports", BLOG)) == {"sigaudit"}

    # Replaced: the vendor pod is gone, the shop report loses its result; the blog's workload is gone,
    # its report is pruned.
    delete(s, cluster["vendor"])
    delete(s, cluster["cms"])
    _scan(kubeconfig, tmp_path, "openreports")
    shop = _list(s, OPENREPORTS, "reports", SHOP)
    assert [r["resources"][0]["name"] for r in shop["sigaudit"]["results"]] == ["web"]
    assert shop["sigaudit"]["summary"]["skip"] == 0
    assert _list(s, OPENREPORTS, "reports", BLOG) == {}

    # Other tools' reports: untouched, not even re-written.
    assert shop["kyverno-polr"]["metadata"]["resourceVersion"] == others["kyverno"]["metadata"]["resourceVersion"]
    other = _list(s, OPENREPORTS, "reports", OTHER)
    assert other["lookalike"]["metadata"]["resourceVersion"] == others["copycat"]["metadata"]["resourceVersion"]


def test_another_tools_report_named_sigaudit_is_not_taken_over(
    kube_apiserver: KubeAPIServer, cluster: dict[str, Any], tmp_path: Path
) -> None:
    s = kube_apiserver
    ns = "sigaudit-rep-taken"
    ensure_namespace(s, ns)
    pod = make_bare_pod(s, ns, "api", pod_template({}, [container("app", f"{IMG}/api:1")]))
    _running(s, [pod], "api")
    theirs = create(s, {"apiVersion": "openreports.io/v1alpha1", "kind": "Report",
                        "metadata": {"name": "sigaudit", "namespace": ns,
                                     "labels": {"app.kubernetes.io/managed-by": "sigaudit"}},
                        "summary": {"pass": 1}, "results": [{"policy": "theirs", "result": "pass"}]})
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--kubeconfig", str(s.kubeconfig),
                        "--policy", str(policy), "--no-store", "-o", "none", "--no-progress", "-n", ns,
                        "--reports", "openreports"],
                       capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "d")})
    assert r.returncode == 1, r.stderr[-2000:]  # the verdicts are unchanged by the report failure
    assert f"cannot apply Report {ns}/sigaudit: HTTP 409" in r.stderr
    now = _list(s, OPENREPORTS, "reports", ns)["sigaudit"]
    assert now["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert now["results"] == [{"policy": "theirs", "result": "pass"}]


def test_policyreport_format_with_its_chart_rbac(
    kube_apiserver: KubeAPIServer, cluster: dict[str, Any], tmp_path: Path
) -> None:
    s = kube_apiserver
    objs = render("polr", "sigaudit-polr-sys", {"clusterReports": {"enabled": True, "format": "policyreport"}})
    perms = permissions(objs)
    assert not [p for p in perms if p.group == "openreports.io"]
    apply_rbac(s, objs, "sigaudit-polr-sys")
    sa_ns, sa = service_account(objs, "sigaudit-polr-sys")
    kubeconfig = s.service_account_kubeconfig(sa_ns, sa, tmp_path / "sa.kubeconfig", create=False)
    wait_rbac(s, s.token_for(sa_ns, sa), perms)
    _scan(kubeconfig, tmp_path, "policyreport", "--exclude-namespace", "sigaudit-rep-taken")
    (report,) = _list(s, POLICYREPORTS, "policyreports", SHOP).values()
    assert report["kind"] == "PolicyReport" and report["metadata"]["name"] == "sigaudit"
    assert {r["source"] for r in report["results"]} == {"sigaudit"}
    assert report["summary"]["fail"] >= 1
    # The OpenReports objects are not this format's business (and its RBAC could not touch them).
    with pytest.raises(KubeAPIError):
        with s.http(token=s.token_for(sa_ns, sa)) as c:
            r = c.get(f"{OPENREPORTS}/reports")
            if r.status_code >= 400:
                raise KubeAPIError(r.status_code, r.text)


def _policy_reporter() -> Path:
    """The Policy Reporter built by tests/tools/build-policy-reporter.sh (an optional peer: the Go module
    proxy refuses its module, so it is built from a checkout)."""
    import re

    from tests.harness.tools import cache_root

    script = (REPO / "tests" / "tools" / "build-policy-reporter.sh").read_text()
    m = re.search(r'COMMIT="\$\{SIGAUDIT_POLICY_REPORTER_COMMIT:-([0-9a-f]{40})\}"', script)
    assert m, "no pinned commit in build-policy-reporter.sh"
    commit = os.environ.get("SIGAUDIT_POLICY_REPORTER_COMMIT", m.group(1))
    binary = cache_root() / f"policy-reporter-{commit[:12]}" / "bin" / "policy-reporter"
    if not binary.is_file():
        pytest.fail("Policy Reporter not built: the Go module proxy refuses github.com/kyverno/policy-reporter "
                    "(403 'This module version is not available'); run tests/tools/build-policy-reporter.sh "
                    "with POLICY_REPORTER_SRC=<checkout> or network access to GitHub")
    return binary


@pytest.mark.optional_peer  # not in make test (a fresh machine cannot build it): make test-optional-peers
def test_policy_reporter_lists_sigaudits_results(
    kube_apiserver: KubeAPIServer, cluster: dict[str, Any], tmp_path: Path
) -> None:
    """The real Policy Reporter (Kyverno's UI and API over policy reports) reads sigaudit's Reports from
    the API server and lists its results through its own REST API."""
    import httpx

    from tests.harness.fixtures_kube import free_port

    binary = _policy_reporter()
    s = kube_apiserver
    ns = "sigaudit-polr-ui"
    ensure_namespace(s, ns)
    web = make_deployment(s, ns, "shop", pod_template({}, [container("app", f"{IMG}/shop:1")]), replicas=1)
    _running(s, web.pods, "shop")
    vendor = make_bare_pod(s, ns, "vendor", pod_template({}, [container("app", f"{IMG}/vendor:1")]))
    _running(s, [vendor], "vendor")
    # Only its own namespace: the module's other tests leave a foreign report named sigaudit in
    # sigaudit-rep-taken (a conflict, logged), which a scan of sigaudit-rep-* would meet.
    _scan(s.kubeconfig, tmp_path, "openreports", namespaces=ns)

    port = free_port()
    log = (tmp_path / "policy-reporter.log").open("wb")
    proc = subprocess.Popen([str(binary), "run", "--kubeconfig", str(s.kubeconfig), "--rest-enabled",
                             "--port", str(port), "--dbfile", str(tmp_path / "polr.db")],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        items: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "policy-reporter.log").read_text()[-3000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/namespaced-resources/results",
                              params={"namespaces": ns, "sources": "sigaudit"}, timeout=5)
                if r.status_code == 200:
                    body = r.json()
                    items = body.get("items", []) if isinstance(body, dict) else body
                    if len(items) >= 2:
                        break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        by_name = {i["name"]: i for i in items}
        assert set(by_name) == {"shop", "vendor"}, (items, (tmp_path / "policy-reporter.log").read_text()[-3000:])
        assert by_name["shop"]["status"] == "fail" and by_name["shop"]["kind"] == "Deployment"
        assert by_name["shop"]["rule"] == "no-matching-rule"
        assert by_name["vendor"]["status"] == "skip"
        assert by_name["vendor"]["properties"]["exemption_reason"] == "vendor image, ticket SEC-12"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_two_installs_with_different_cluster_names_never_prune_each_others_reports(
    kube_apiserver: KubeAPIServer, cluster: dict[str, Any]
) -> None:
    """One API server, two sigaudit installs (``--cluster east`` and ``--cluster west``): west's partial
    scan writes its namespace's report and the ClusterReport of its errors; east's complete scan, which
    audits that namespace too but finds nothing of its own there, prunes only east's stale reports —
    with the real API server's label selectors and server-side apply."""
    import dataclasses

    from scanner.clusterreports.apply import publish
    from scanner.inventory.kube import load_api_client
    from scanner.models import ScanState, Status
    from tests.unit.clusterreports.test_build import _c, _image, _scan, _verdict

    s = kube_apiserver
    east_ns, west_ns, gone_ns = "sigaudit-two-east", "sigaudit-two-west", "sigaudit-two-gone"
    for ns in (east_ns, west_ns, gone_ns):
        ensure_namespace(s, ns)
    api = load_api_client(str(s.kubeconfig))

    def scan(cluster_name: str, ns: str, state: ScanState = ScanState.COMPLETE) -> Any:
        result = _scan(_verdict(Status.UNSIGNED, image=_image(_c(ns=ns))), state=state,
                       errors=("namespace x: forbidden",) if state is ScanState.PARTIAL else ())
        return dataclasses.replace(result, cluster=cluster_name)

    assert publish(scan("east", gone_ns), "openreports", api).problems == []  # east's, later stale
    out = publish(scan("west", west_ns, ScanState.PARTIAL), "openreports", api)
    assert out.problems == [] and sorted(out.applied) == ["sigaudit", f"{west_ns}/sigaudit"]
    with s.http() as c:
        west_cluster_report = c.get(f"{OPENREPORTS}/clusterreports/sigaudit").json()
    assert west_cluster_report["metadata"]["labels"]["sigaudit.io/cluster"] == "west"

    out = publish(scan("east", east_ns), "openreports", api)  # complete, every namespace in scope
    assert out.problems == [] and out.deleted == [f"{gone_ns}/sigaudit"], out
    assert set(_list(s, OPENREPORTS, "reports", west_ns)) == {"sigaudit"}
    assert _list(s, OPENREPORTS, "reports", gone_ns) == {}
    with s.http() as c:
        now = c.get(f"{OPENREPORTS}/clusterreports/sigaudit")
    assert now.status_code == 200, "east pruned west's ClusterReport"
    assert now.json()["metadata"]["resourceVersion"] == west_cluster_report["metadata"]["resourceVersion"]

    # west, complete again, prunes its own ClusterReport and leaves east's namespace alone
    out = publish(scan("west", west_ns), "openreports", api)
    assert out.deleted == ["sigaudit"], out
    assert set(_list(s, OPENREPORTS, "reports", east_ns)) == {"sigaudit"}
