"""Metrics end to end: a real scan against a real registry, pushed (CronJob mode) to a real Pushgateway,
served by a real ``sigaudit serve`` process over the same database, both scraped by a real Prometheus;
every dashboard and alert expression evaluated there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scanner.metrics.export import render
from scanner.store import open_store
from tests.harness.demo import publish_estate, write_pods, write_policy
from tests.harness.fixtures_prometheus import Prometheus, Pushgateway, start_prometheus, start_pushgateway
from tests.harness.tools import free_port, stop_process, wait_for_http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm/sigaudit/dashboards/sigaudit.json"
RULES = ROOT / "helm/sigaudit/rules/sigaudit.yaml"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str, *, cluster: str | None = None, drop: tuple[str, ...] = ("job", "instance")) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.name.startswith("sigaudit_"):
                continue
            if cluster is not None and s.labels.get("cluster") != cluster:
                continue
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in drop))
            out[(s.name, labels)] = s.value
    return out


def sigaudit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@dataclass
class Stack:
    db_url: str
    estate: Any
    pushgateway: Pushgateway
    prometheus: Prometheus
    serve_url: str
    metrics_file: Path


@pytest.fixture(scope="module")
def stack(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("metrics-e2e")
    est = publish_estate(registry.url, registry.host)
    policy_path = write_policy(est, work)
    policy = yaml.safe_load(policy_path.read_text())
    policy["spec"]["expiryWarning"] = "2400h"  # the 90-day pause exemption is now "expiring soon"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    pods = write_pods(est, work / "pods.json")
    db_url = f"sqlite:///{work / 'sigaudit.db'}"
    pg = start_pushgateway(work / "pushgateway")
    serve = None
    prom = None
    try:
        common = ["--pods-file", str(pods), "--policy", str(policy_path), "--no-progress", "-o", "none",
                  "--exit-zero-on-violations", "--pushgateway", pg.url]
        # CronJob mode, recorded in the database (cluster "demo") ...
        sigaudit("scan", *common, "--db", db_url, "--cluster", "demo", "--metrics-file", str(work / "demo.prom"))
        # ... and without a database (cluster "nostore"): metrics from the fresh result.
        sigaudit("scan", *common, "--no-store", "--cluster", "nostore")
        port = free_port()
        log = (work / "serve.log").open("wb")
        serve = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", "--pods-file", str(pods), "--policy", str(policy_path),
             "--db", db_url, "--cluster", "demo", "--listen", f"127.0.0.1:{port}", "--no-run-at-start",
             "--schedule", "0 0 1 1 *"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=serve, log_path=work / "serve.log", timeout=60)
        prom = start_prometheus(work / "prometheus", {"pushgateway": [pg.host], "sigaudit": [f"127.0.0.1:{port}"]})
        # honor_labels keeps the pushed job="sigaudit": the two sources differ by instance only.
        prom.wait_for(f'sigaudit_scan_info{{instance="127.0.0.1:{port}"}}', timeout=60)
        prom.wait_for(f'sigaudit_scan_info{{instance!="127.0.0.1:{port}",cluster="demo"}}', timeout=60)
        prom.wait_for('sigaudit_scan_info{cluster="nostore"}', timeout=60)
        yield Stack(db_url, est, pg, prom, f"http://127.0.0.1:{port}", work / "demo.prom")
    finally:
        if prom is not None:
            prom.stop()
        if serve is not None:
            stop_process(serve)
        pg.stop()


def test_collector_over_a_store_filled_by_a_real_scan(stack: Stack) -> None:
    with open_store(stack.db_url) as store:
        scan_id = store.latest_scan_id("demo")
        assert scan_id is not None
        result = store.load_scan(scan_id)
        got = parse(render(result, store).decode())
    c = ("cluster", "demo")

    def v(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted([c, *labels.items()])))]

    # the demo estate's verdicts (tests/harness/demo.py), per namespace
    # signed, multiarch, notation-signed, notation-expiring
    assert v("sigaudit_images", namespace="shop", status="verified", compliant="true") == 4
    assert v("sigaudit_containers", namespace="shop", status="verified", compliant="true") == 5
    assert v("sigaudit_images", namespace="shop", status="expired", compliant="false") == 1  # notation-expired
    assert v("sigaudit_images", namespace="shop", status="invalid", compliant="false") == 2  # wrong-key, tampered
    assert v("sigaudit_images", namespace="payments", status="revoked", compliant="false") == 1
    assert v("sigaudit_images", namespace="kube-system", status="exempt", compliant="true") == 1
    assert v("sigaudit_images", namespace="tools", status="error", compliant="false") == 1
    assert v("sigaudit_images", namespace="tools", status="no-policy", compliant="false") == 1
    assert v("sigaudit_namespace_compliance_ratio", namespace="shop") == pytest.approx(4 / 8)
    compliant = sum(1 for x in stack.estate.expected.values() if x in ("verified", "exempt"))
    assert v("sigaudit_compliance_ratio") == pytest.approx(compliant / len(stack.estate.expected))
    assert v("sigaudit_expiring_images", namespace="kube-system") == 1
    assert v("sigaudit_expiring_images", namespace="shop") == 1  # notation-expiring (7 days)
    pause = next(x for x in result.verdicts if x.status.value == "exempt")
    assert v("sigaudit_namespace_earliest_not_after_timestamp_seconds", namespace="kube-system") == \
        pause.not_after.timestamp()  # type: ignore[union-attr]
    assert v("sigaudit_noncompliant_workload_containers", namespace="payments", workload_kind="DaemonSet",
             workload="worker", status="revoked") == 1
    assert v("sigaudit_verifications", verifier="cosign", outcome="failed", reason="revoked") == 1
    assert v("sigaudit_last_success_timestamp_seconds") == result.finished_at.timestamp()
    assert v("sigaudit_scan_info", scan_id=str(scan_id), policy_digest=result.policy_digest,
             sigaudit_version=result.sigaudit_version) == 1
    assert v("sigaudit_store_up") == 1


# The database's size and its volume's free space are read when the metrics are, not from the scan:
# every way shows them, with the values of its own moment.
VOLATILE = ("sigaudit_store_size_bytes", "sigaudit_store_free_bytes", "sigaudit_store_volume_bytes")


def _steady(got: dict[Any, Any]) -> dict[Any, Any]:
    return {k: (None if k[0] in VOLATILE else v) for k, v in got.items()}


def test_push_textfile_and_serve_show_identical_series_for_the_same_scan(stack: Stack) -> None:
    pushed = _steady(parse(stack.pushgateway.metrics_text(), cluster="demo"))
    served = _steady(parse(httpx.get(f"{stack.serve_url}/metrics", timeout=30).text))
    textfile = _steady(parse(stack.metrics_file.read_text()))
    assert {k[0] for k in served} >= {"sigaudit_store_size_bytes", "sigaudit_store_free_bytes"}
    assert len(served) > 40
    assert pushed == served
    assert textfile == served
    # the Pushgateway group is {job="sigaudit", cluster="demo"}
    raw = [s for f in text_string_to_metric_families(stack.pushgateway.metrics_text()) for s in f.samples
           if s.name == "sigaudit_scan_info" and s.labels.get("cluster") == "demo"]
    assert raw and raw[0].labels["job"] == "sigaudit"


def test_prometheus_holds_the_same_series_from_pushgateway_and_serve(stack: Stack) -> None:
    serve_instance = stack.serve_url.removeprefix("http://")

    def series(selector: str) -> set[tuple[str, tuple[tuple[str, str], ...], str]]:
        out = set()
        for r in stack.prometheus.query(f'{{__name__=~"sigaudit_.+", cluster="demo", {selector}}}'):
            m = dict(r["metric"])
            name = m.pop("__name__")
            m.pop("job", None)
            m.pop("instance", None)
            out.add((name, tuple(sorted(m.items())), "" if name in VOLATILE else r["value"][1]))
        return out

    from_push = series(f'instance!="{serve_instance}"')
    from_serve = series(f'instance="{serve_instance}"')
    assert from_push and from_push == from_serve


def _exprs() -> list[tuple[str, str]]:
    d = json.loads(DASHBOARD.read_text())
    out = [(f"panel {p['title']!r}", t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"variable {v['name']}", re.sub(r"label_values\((.+), \w+\)", r"\1", v["definition"])))
    return [(where, expr.replace("$cluster", ".*")) for where, expr in out]


def test_every_dashboard_expression_returns_series(stack: Stack) -> None:
    empty = [(where, expr) for where, expr in _exprs() if not stack.prometheus.query(expr)]
    assert not empty


def test_alerts_fire_on_a_real_scan_and_the_staleness_alert_has_data(stack: Stack) -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}
    prom = stack.prometheus
    firing = prom.query(rules["SigauditNonCompliantImagesRunning"])
    assert {(r["metric"]["cluster"], r["metric"]["namespace"]) for r in firing if r["metric"]["cluster"] == "demo"} \
        == {("demo", ns) for ns in ("shop", "payments", "legacy", "tools")}
    expiring = prom.query(rules["SigauditSignaturesExpiringSoon"])
    assert ("demo", "kube-system") in {(r["metric"]["cluster"], r["metric"]["namespace"]) for r in expiring}
    stale = rules["SigauditScanNotSucceeded"]
    signal, _, threshold = stale.rpartition(">")
    assert {r["metric"]["cluster"] for r in prom.query(signal)} >= {"demo", "nostore"}
    assert prom.query(stale) == []  # the scans just ran
    assert prom.query(f"{signal} > bool {threshold.strip()}")  # the comparison itself evaluates


def test_registry_counters_reach_prometheus(stack: Stack) -> None:
    # --no-store: straight from the fresh result; the unreachable 127.0.0.1:9 registry is an error.
    errors = stack.prometheus.query('sigaudit_registry_errors{cluster="nostore"}')
    assert {r["metric"]["registry"] for r in errors} >= {"127.0.0.1:9"}
    requests = stack.prometheus.query('sigaudit_registry_requests{cluster="nostore"}')
    assert {r["metric"]["registry"] for r in requests} >= {stack.estate.host}


def test_stored_scans_keep_their_registry_counters(stack: Stack) -> None:
    with open_store(stack.db_url) as store:
        result = store.load_scan(store.latest_scan_id("demo"))  # type: ignore[arg-type]
    if not result.stats.get("registry_requests"):
        pytest.xfail("the store does not persist ScanResult.stats yet: registry series are absent for stored "
                     "scans (serve, and push with a database)")
    served = httpx.get(f"{stack.serve_url}/metrics", timeout=30).text
    assert 'sigaudit_registry_errors{cluster="demo",code=' in served


def test_a_pushgateway_url_with_credentials_authenticates_and_never_shows_them(tmp_path: Path) -> None:
    """``--pushgateway http://user:password@host`` (a Pushgateway behind Basic auth): the push is
    authenticated with them, and neither a successful nor a refused push prints the password. (It once
    went to urllib inside the URL: the password was read as a port, the scan crashed with exit 1 and a
    traceback naming it.)"""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    user, password = "pusher", "Push-Pa55word-61c0"
    pg = start_pushgateway(tmp_path / "pg", basic_auth=(user, password))
    try:
        pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
            "rules": [{"name": "r", "images": ["*"], "verifiers": [{"cosign": {"key": pem}}]}]}}))
        pods = tmp_path / "pods.json"
        pods.write_text(json.dumps({"kind": "List", "items": []}))
        base = ["-vv", "scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "--no-progress",
                "-o", "json", "--cluster", "pushed"]
        ok = sigaudit(*base, "--pushgateway", f"http://{user}:{password}@{pg.host}", check=False)
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert "metrics export failed" not in ok.stderr, ok.stderr[-3000:]
        pushed = httpx.get(f"{pg.url}/metrics", auth=(user, password), timeout=10).text
        assert 'sigaudit_last_success_timestamp_seconds{cluster="pushed"' in pushed
        refused = sigaudit(*base, "--pushgateway", f"http://{user}:wrong-{password}@{pg.host}", check=False)
        assert refused.returncode == 0, refused.stderr[-3000:]  # the scan succeeded; only the export did not
        assert "metrics export failed" in refused.stderr and "401" in refused.stderr, refused.stderr[-3000:]
        no_port = sigaudit(*base, "--pushgateway", f"http://{user}:{password}@127.0.0.1", check=False)
        assert no_port.returncode == 0 and "metrics export failed" in no_port.stderr, no_port.stderr[-3000:]
        for run in (ok, refused, no_port):
            assert password not in run.stdout + run.stderr
    finally:
        pg.stop()
