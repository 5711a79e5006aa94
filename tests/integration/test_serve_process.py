"""``sigaudit serve`` as a real process on 127.0.0.1: the schedule fires, probes and /metrics answer, a
second scan while one runs is refused (409 here, ScanInProgress for another process), and SIGTERM in
the middle of a scan leaves the previous scan intact and the interrupted one failed, never complete."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scanner.models import ScanState
from scanner.store import open_store
from tests.harness.demo import publish_estate, write_pods, write_policy
from tests.harness.tools import free_port, stop_process, wait_for_http

pytestmark = pytest.mark.integration


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(what)


def test_serve_schedule_probes_409_and_sigterm_mid_scan(registry: Any, stalling_registry: str,
                                                        tmp_path: Path) -> None:
    est = publish_estate(registry.url, registry.host)
    policy_path = write_policy(est, tmp_path)
    policy = yaml.safe_load(policy_path.read_text())
    policy["spec"]["insecureRegistries"].append(stalling_registry)
    policy["spec"]["rules"][0]["images"].append(f"{stalling_registry}/*")
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    pods = write_pods(est, tmp_path / "pods.json")
    db_url = f"sqlite:///{tmp_path / 'sigaudit.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", "--pods-file", str(pods), "--policy", str(policy_path),
             "--db", db_url, "--cluster", "demo", "--listen", f"127.0.0.1:{port}", "--no-run-at-start",
             "--schedule", "*/5 * * * * *", "--shutdown-timeout", "3", "--api-scan-interval", "0"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)
        assert httpx.get(f"{base}/healthz").text == "ok\n"

        # 1. The schedule fires (no scan at start-up was asked for) and completes a scan.
        def completed() -> list[dict[str, Any]]:
            scans = httpx.get(f"{base}/api/scans", timeout=10).json()["scans"]
            return [s for s in scans if s["status"] == "complete"]

        first = _wait(completed, 40, "no scheduled scan completed")[-1]
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["database"] == "ok", ready.text
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert f'sigaudit_scan_info{{cluster="demo",policy_digest="{first["policy_digest"]}"' in metrics
        assert 'sigaudit_last_success_timestamp_seconds{cluster="demo"}' in metrics
        doc = httpx.get(f"{base}/api/scans/{first['id']}", timeout=10).json()
        assert doc["schema_version"] == 1 and len(doc["images"]) == len(est.expected)
        assert httpx.get(f"{base}/reports/latest.json", timeout=10).json()["scan"]["id"] >= first["id"]

        # 2. Now the pods also run an image from a registry that never answers: the next scan hangs.
        stalled_pod = json.loads(pods.read_text())
        stalled_pod["items"].append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hang-1", "namespace": "slow", "uid": "uid-hang"},
            "spec": {"containers": [{"name": "x", "image": f"{stalling_registry}/demo/hang:1.0"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "x", "image": f"{stalling_registry}/demo/hang:1.0",
                 "imageID": f"{stalling_registry}/demo/hang@sha256:" + "ef" * 32}]}})
        pods.write_text(json.dumps(stalled_pod))
        with open_store(db_url) as store:
            before = store.load_scan(store.latest_scan_id("demo"))  # type: ignore[arg-type]
        last_known = max(s["id"] for s in httpx.get(f"{base}/api/scans", timeout=10).json()["scans"])

        def running_new() -> int | None:
            r = httpx.post(f"{base}/api/scans", json={}, timeout=10)
            if r.status_code == 202:
                return int(r.json()["scan_id"])
            body = r.json()
            assert r.status_code == 409, r.text
            rid = body.get("running_scan_id")
            return rid if rid and rid > last_known else None

        stalled_id = _wait(running_new, 30, "no scan of the hanging estate started")
        time.sleep(1.0)
        second = httpx.post(f"{base}/api/scans", json={}, timeout=10)
        assert second.status_code == 409, second.text
        assert second.json()["running_scan_id"] == stalled_id
        # another process is refused by the store
        other = subprocess.run(
            [sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy", str(policy_path),
             "--db", db_url, "--cluster", "demo", "--no-progress", "-o", "none"],
            capture_output=True, text=True, timeout=120)
        assert other.returncode == 3 and "running" in other.stderr, other.stderr
        assert httpx.get(f"{base}/api/scans", timeout=10).json()["running_scan_id"] == stalled_id

        # 3. SIGTERM mid-scan: exit 0 promptly; previous scan intact; the interrupted one failed.
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        assert time.monotonic() - t0 < 15
        with open_store(db_url) as store:
            interrupted = store.scan_summary(stalled_id)
            assert interrupted.state == ScanState.FAILED
            assert any("interrupted" in e or "shut" in e for e in interrupted.errors), interrupted.errors
            assert not [s for s in store.list_scans("demo") if s.state == ScanState.RUNNING]
            latest = store.latest_scan_id("demo")
            assert latest is not None and latest < stalled_id
            after = store.load_scan(before.scan_id)  # type: ignore[arg-type]
            assert after == before
            assert store.load_scan(stalled_id).verdicts == ()
    finally:
        if proc.poll() is None:
            stop_process(proc)


def test_a_flood_of_scan_requests_during_a_slow_policy_load_never_starves_the_probes(
        stalling_registry: str, tmp_path: Path) -> None:
    """The policy is re-read at every scan; when its key URL hangs (here: a port that accepts and
    never answers the TLS handshake), loading it takes the key fetch's whole timeout. Forty
    unauthenticated POST /api/scans meanwhile are refused at once (409), and /healthz and
    GET /api/scans answer at once: the runner's lock is not held across the load, and the liveness
    probe does not wait for a worker thread. (They used to queue: /healthz took ~60 s.)"""
    from concurrent.futures import ThreadPoolExecutor

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def policy(key: str) -> str:
        return yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
            "rules": [{"name": "r", "images": ["*"], "verifiers": [{"cosign": {"key": key}}]}]}})

    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy(pem))
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": []}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", "--pods-file", str(pods), "--policy", str(policy_path),
             "--db", f"sqlite:///{tmp_path / 'sigaudit.db'}", "--cluster", "flood", "--listen",
             f"127.0.0.1:{port}", "--no-run-at-start", "--schedule", "@yearly", "--shutdown-timeout", "1",
             "--api-scan-interval", "0"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)
        policy_path.write_text(policy(f"https://{stalling_registry}/k.pub"))  # now every load hangs ~10 s

        def post() -> tuple[int, float]:
            t0 = time.monotonic()
            r = httpx.post(f"{base}/api/scans", json={}, timeout=120)
            return r.status_code, time.monotonic() - t0

        with ThreadPoolExecutor(max_workers=40) as pool:
            posts = [pool.submit(post) for _ in range(40)]
            time.sleep(1.5)
            t0 = time.monotonic()
            health = httpx.get(f"{base}/healthz", timeout=30)
            health_s = time.monotonic() - t0
            t0 = time.monotonic()
            listing = httpx.get(f"{base}/api/scans", timeout=30)
            listing_s = time.monotonic() - t0
            answers = [f.result() for f in posts]
        assert health.status_code == 200 and health_s < 3, health_s
        assert listing.status_code == 200 and listing_s < 3, listing_s
        refused = [s for code, s in answers if code == 409]
        assert len(refused) >= 39, answers  # one start loads the policy (then 400: key unreachable)
        assert max(refused) < 5, answers
        assert sorted({code for code, _ in answers}) in ([400, 409], [409]), answers
    finally:
        stop_process(proc)


def test_slow_header_connections_are_closed_and_the_probes_keep_answering(tmp_path: Path) -> None:
    """Slowloris: connections that send a request line and then a header byte every second, never
    finishing. uvicorn alone keeps them for ever (a thousand exhaust the file descriptors and the
    probes stop answering); sigaudit serve closes each once its headers are HEADER_TIMEOUT_SECONDS
    late, while a client that sends whole requests on a kept-alive connection is served."""
    from scanner.server import HEADER_TIMEOUT_SECONDS

    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": []}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
        "exemptions": [{"images": ["*"], "reason": "r", "until": "2099-01-01T00:00:00Z"}]}}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", "--pods-file", str(pods), "--policy", str(policy),
             "--db", f"sqlite:///{tmp_path / 'sigaudit.db'}", "--cluster", "slow", "--listen", f"127.0.0.1:{port}",
             "--no-run-at-start", "--schedule", "@yearly"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    slow: list[socket.socket] = []
    try:
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        closed: set[int] = set()
        with httpx.Client(base_url=base, timeout=5) as keep_alive:
            deadline = time.monotonic() + HEADER_TIMEOUT_SECONDS + 8
            while time.monotonic() < deadline and len(closed) < len(slow):
                assert keep_alive.get("/healthz").status_code == 200
                for i, s in enumerate(slow):
                    if i in closed:
                        continue
                    try:
                        s.sendall(b"X")  # one more header byte: the trickle never ends
                        s.settimeout(0.01)
                        if s.recv(1) == b"":
                            closed.add(i)
                    except (TimeoutError, BlockingIOError):
                        pass
                    except OSError:
                        closed.add(i)
                time.sleep(1.0)
        assert len(closed) == len(slow), f"{len(slow) - len(closed)} slow connections still open"
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        for s in slow:
            s.close()
        stop_process(proc)
