"""``sigaudit scan`` and ``sigaudit serve`` run the same scan (issue #18: one use case, two faces).

The same estate in a real docker-registry, the same policy and pod list, a DB-backed verification cache
each (a fresh SQLite file per face): a cold then a warm scan through the CLI process, and a cold then
a warm scan through a ``sigaudit serve`` process (``POST /api/scans``). The registry's own access log
must show the same requests for each pair, and the verdicts and the stats stored with each scan must
be equal. The scan options that only ``scan`` once had (``--registry-budget``, ``--deadline``, the cache)
reach serve's scans through the same ``SIGAUDIT_<OPTION>`` variables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scanner.store import open_store
from tests.harness.demo import publish_estate, write_pods, write_policy
from tests.harness.tools import free_port, stop_process, wait_for_http

pytestmark = pytest.mark.integration

Requests = Counter[tuple[str, str, int]]


def _verdicts(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (i["reference"], i["digest"], i["status"], i["compliant"], i["rule"], tuple(i["reasons"]),
         tuple((s["verifier"], s["outcome"], s["failure"]) for s in i["signatures"]))
        for i in doc["images"]
    )


def _stored(db_url: str, scan_id: int) -> tuple[str, dict[str, Any]]:
    with open_store(db_url) as store:
        result = store.load_scan(scan_id)
    return result.state.value, result.stats


def _measured(registry: Any, run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Requests]:
    before = len(registry.requests())
    doc = run()
    time.sleep(0.3)  # the access log line of the last response
    return doc, Counter((r.method, r.path, r.status) for r in registry.requests()[before:])


def _cli_scan(pods: Path, policy: Path, db_url: str, env: dict[str, str]) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy", str(policy),
         "--db", db_url, "--cluster", "demo", "-o", "json", "--no-progress"],
        capture_output=True, text=True, timeout=180, env={**os.environ, **env})
    assert r.returncode in (0, 1, 3), r.stderr[-3000:]
    return dict(json.loads(r.stdout))


@contextmanager
def _server(pods: Path, policy: Path, db_url: str, env: dict[str, str], log_path: Path) -> Iterator[str]:
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", "--pods-file", str(pods), "--policy", str(policy),
             "--db", db_url, "--cluster", "demo", "--listen", f"127.0.0.1:{port}", "--no-run-at-start",
             "--schedule", "0 0 1 1 *", "--shutdown-timeout", "3", "--api-scan-interval", "0"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_process(proc)


def _serve_scan(base: str, log_path: Path) -> dict[str, Any]:
    r = httpx.post(f"{base}/api/scans", json={}, timeout=10)
    assert r.status_code == 202, r.text
    scan_id = r.json()["scan_id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        scans = httpx.get(f"{base}/api/scans", timeout=10).json()
        mine = [s for s in scans["scans"] if s["id"] == scan_id]
        if mine and mine[0]["status"] != "running" and scans["running_scan_id"] is None:
            doc = httpx.get(f"{base}/api/scans/{scan_id}", timeout=10).json()
            return dict(doc)
        time.sleep(0.25)
    raise TimeoutError(f"scan {scan_id} did not finish; serve log:\n{log_path.read_text()[-3000:]}")


def _both_faces(registry: Any, pods: Path, policy: Path, tmp_path: Path, env: dict[str, str],
                runs: int) -> tuple[list[tuple[dict[str, Any], Requests]], list[tuple[dict[str, Any], Requests]]]:
    cli_db = f"sqlite:///{tmp_path / 'cli.db'}"
    serve_db = f"sqlite:///{tmp_path / 'serve.db'}"
    cli = [_measured(registry, lambda: _cli_scan(pods, policy, cli_db, env)) for _ in range(runs)]
    log_path = tmp_path / "serve.log"
    with _server(pods, policy, serve_db, env, log_path) as base:
        serve = [_measured(registry, lambda: _serve_scan(base, log_path)) for _ in range(runs)]
    for (c_doc, _), (s_doc, _) in zip(cli, serve, strict=True):
        c_state, c_stats = _stored(cli_db, c_doc["scan"]["id"])
        s_state, s_stats = _stored(serve_db, s_doc["scan"]["id"])
        assert (c_state, c_stats) == (s_state, s_stats)
    return cli, serve


@pytest.fixture
def estate(registry_factory: Any, tmp_path: Path) -> tuple[Any, Any, Path, Path]:
    reg = registry_factory()
    est = publish_estate(reg.url, reg.host)
    return reg, est, write_pods(est, tmp_path / "pods.json"), write_policy(est, tmp_path)


def test_scan_and_serve_make_the_same_requests_and_verdicts_cold_and_warm(estate: Any, tmp_path: Path) -> None:
    reg, est, pods, policy = estate
    # One image at a time: a scan asks once whether a registry keeps referrers in tags, from whichever digest
    # gets there first, so at 16-way concurrency the *path* of that one request depends on thread timing
    # (the count does not). Serially both faces meet the digests in the same order.
    serial = {"SIGAUDIT_CONCURRENCY": "1", "SIGAUDIT_REGISTRY_CONCURRENCY": "1"}
    cli, serve = _both_faces(reg, pods, policy, tmp_path, serial, runs=2)
    (cli_cold, cli_cold_req), (cli_warm, cli_warm_req) = cli
    (serve_cold, serve_cold_req), (serve_warm, serve_warm_req) = serve
    assert len(cli_cold["images"]) == len(est.expected)
    # The cache works in the CLI (the baseline this test holds serve to).
    assert sum(cli_warm_req.values()) < sum(cli_cold_req.values()), (cli_cold_req, cli_warm_req)
    assert _verdicts(serve_cold) == _verdicts(cli_cold)
    assert _verdicts(serve_warm) == _verdicts(cli_warm) == _verdicts(cli_cold)
    assert serve_cold_req == cli_cold_req
    assert serve_warm_req == cli_warm_req, (
        f"serve's warm scan made {sum(serve_warm_req.values())} registry requests, "
        f"the CLI's {sum(cli_warm_req.values())}")


def test_registry_budget_reaches_serve_scans_by_its_environment_variable(estate: Any, tmp_path: Path) -> None:
    reg, _est, pods, policy = estate
    env = {"SIGAUDIT_REGISTRY_BUDGET": "0", "SIGAUDIT_CACHE": "false"}
    cli, serve = _both_faces(reg, pods, policy, tmp_path, env, runs=1)
    (cli_doc, cli_req), (serve_doc, serve_req) = cli[0], serve[0]
    assert not [r for r in cli_req if r[0] == "GET" and "/manifests/" in r[1]], cli_req  # the budget held
    assert "error" in {i["status"] for i in cli_doc["images"]}
    assert _verdicts(serve_doc) == _verdicts(cli_doc)
    assert serve_req == cli_req


def test_deadline_reaches_serve_scans_by_its_environment_variable(estate: Any, stalling_registry: str,
                                                                   tmp_path: Path) -> None:
    reg, _est, pods, policy_path = estate
    doc = yaml.safe_load(policy_path.read_text())
    doc["spec"]["insecureRegistries"].append(stalling_registry)
    doc["spec"]["rules"][0]["images"].append(f"{stalling_registry}/*")
    policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    pod_list = json.loads(pods.read_text())
    image = f"{stalling_registry}/demo/hang:1.0"
    pod_list["items"].append({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hang-1", "namespace": "slow", "uid": "uid-hang"},
        "spec": {"containers": [{"name": "x", "image": image}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "x", "image": image, "imageID": f"{stalling_registry}/demo/hang@sha256:" + "ef" * 32}]}})
    pods.write_text(json.dumps(pod_list))
    t0 = time.monotonic()
    cli, serve = _both_faces(reg, pods, policy_path, tmp_path, {"SIGAUDIT_DEADLINE": "8s"}, runs=1)
    assert time.monotonic() - t0 < 120
    for doc_, _ in (cli[0], serve[0]):
        assert doc_["scan"]["status"] == "partial", doc_["scan"]
        assert any("deadline" in e for e in doc_["scan"]["errors"]), doc_["scan"]["errors"]
        hung = [i for i in doc_["images"] if i["reference"].startswith(stalling_registry)]
        assert [i["status"] for i in hung] == ["error"], hung
    assert _verdicts(serve[0][0]) == _verdicts(cli[0][0])
