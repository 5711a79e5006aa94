"""Issue #27 on the real ``sigaudit serve`` process (127.0.0.1): /api and /reports need the bearer token
from ``--auth-token-file`` while /metrics and the probes stay open; a form POST with a foreign Origin
starts nothing; API scans are rate-limited (429 + Retry-After); the issue's hostile ids are 404; a cluster
named ``prod-東京`` downloads its reports (RFC 6266, nosniff, CSP); ``--max-connections`` answers 503 to
the API but never to the probes; no auth on a non-loopback address is refused at start (exit 2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import yaml

from tests.harness.tools import free_port, stop_process, wait_for_http

pytestmark = pytest.mark.integration

TOKEN = "9f4c1e0b7a2d4c6e8f10a3b5c7d9e1f2"
CLUSTER = "prod-東京"


def _inputs(tmp_path: Path) -> list[str]:
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": []}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
        "exemptions": [{"images": ["*"], "reason": "r", "until": "2099-01-01T00:00:00Z"}]}}))
    return ["--pods-file", str(pods), "--policy", str(policy), "--db", f"sqlite:///{tmp_path / 'sigaudit.db'}",
            "--schedule", "@yearly"]


def _serve(tmp_path: Path, *args: str) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", *_inputs(tmp_path), "--listen", f"127.0.0.1:{port}", *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)
        yield base
    finally:
        stop_process(proc)
    assert TOKEN not in log_path.read_text(errors="replace")


METRICS_PORT = free_port()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "token").write_text(TOKEN + "\n")
    yield from _serve(tmp_path, "--auth-token-file", str(tmp_path / "token"), "--cluster", CLUSTER,
                      "--api-scan-interval", "300", "--metrics-listen", f"127.0.0.1:{METRICS_PORT}")


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _scans(base: str) -> list[dict[str, object]]:
    return list(httpx.get(f"{base}/api/scans", headers=AUTH, timeout=10).json()["scans"])


def test_token_auth_browser_refusals_rate_limit_ids_and_headers_on_the_real_server(token_server: str) -> None:
    base = token_server
    deadline = time.monotonic() + 60
    while not [s for s in _scans(base) if s["status"] == "complete"]:  # the start-up scan
        assert time.monotonic() < deadline, "no start-up scan completed"
        time.sleep(0.3)

    # 1. Open: probes and metrics. Closed without the token: everything else.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(base + path, timeout=10).status_code == 200, path
    for path in ("/api/scans", "/api/scans/1", "/reports/latest.json", "/reports/latest.html", "/reports/1.csv"):
        for headers in ({}, {"Authorization": "Bearer " + "0" * len(TOKEN)}, {"Authorization": TOKEN}):
            r = httpx.get(base + path, headers=headers, timeout=10)
            assert r.status_code == 401 and CLUSTER not in r.text, (path, headers, r.status_code, r.text)

    # ... and the --metrics-listen port serves only /metrics and the probes, token or not.
    metrics = f"http://127.0.0.1:{METRICS_PORT}"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(metrics + path, timeout=10).status_code == 200, path
    for path in ("/api/scans", "/reports/latest.json"):
        assert httpx.get(metrics + path, headers=AUTH, timeout=10).status_code == 404, path
    assert httpx.post(f"{metrics}/api/scans", json={}, headers=AUTH, timeout=10).status_code == 404

    # 2. The hostile ids: 404, never 500, never scan 1.
    for path in ("/reports/99999999999999999999999.html", "/api/scans/99999999999999999999999",
                 "/reports/%C2%B2.html", "/reports/%D9%A1.json", "/api/scans/%D9%A1", "/reports/1_0.json"):
        r = httpx.get(base + path, headers=AUTH, timeout=10)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])

    # 3. A cluster name outside Latin-1: every report downloads, with RFC 6266, nosniff and the CSP.
    for fmt in ("html", "json", "csv"):
        r = httpx.get(f"{base}/reports/latest.{fmt}", headers=AUTH, timeout=10)
        assert r.status_code == 200, (fmt, r.status_code, r.text[:300])
        cd = r.headers["content-disposition"]
        assert 'filename="sigaudit-prod-__-scan-1.' in cd, cd
        assert unquote(cd.split("filename*=UTF-8''")[1]) == f"sigaudit-{CLUSTER}-scan-1.{fmt}"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in r.headers["content-security-policy"]

    # 4. What a web page can make a browser send starts nothing: a form post (no preflight) with a
    #    foreign Origin, even with the token; a JSON post marked cross-site.
    before = len(_scans(base))
    for _ in range(20):
        r = httpx.post(f"{base}/api/scans", content=b"x=1", timeout=10, headers={
            **AUTH, "Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
        assert r.status_code == 403, r.text
    r = httpx.post(f"{base}/api/scans", json={}, timeout=10, headers={**AUTH, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert httpx.post(f"{base}/api/scans", json={}, timeout=10).status_code == 401
    assert len(_scans(base)) == before

    # 5. One API scan, then 429 with Retry-After for the rest of the interval.
    first = httpx.post(f"{base}/api/scans", json={}, headers=AUTH, timeout=10)
    assert first.status_code == 202, first.text
    for _ in range(5):
        r = httpx.post(f"{base}/api/scans", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 429 and 290 <= int(r.headers["retry-after"]) <= 300, (r.status_code, r.headers)
    assert len(_scans(base)) == before + 1


def test_max_connections_refuses_the_api_but_never_the_probes(tmp_path: Path) -> None:
    """--max-connections 10 with 30 slow-header connections open: /api gets 503 at once, /healthz,
    /readyz and /metrics answer 200; once the header timeout has closed them, /api answers again."""
    from scanner.server import HEADER_TIMEOUT_SECONDS

    (tmp_path / "token").write_text(TOKEN)
    gen = _serve(tmp_path, "--auth-token-file", str(tmp_path / "token"), "--cluster", "c", "--max-connections", "10")
    base = next(gen)
    slow: list[socket.socket] = []
    try:
        port = int(base.rsplit(":", 1)[1])
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /api/scans HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        assert httpx.get(f"{base}/api/scans", headers=AUTH, timeout=5).status_code == 503
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(base + path, timeout=5).status_code == 200, path
        assert time.monotonic() - t0 < 3
        deadline = time.monotonic() + HEADER_TIMEOUT_SECONDS + 10
        while httpx.get(f"{base}/api/scans", headers=AUTH, timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the slow connections were never closed"
            time.sleep(0.5)
    finally:
        for s in slow:
            s.close()
        for _ in gen:
            pass


def test_no_auth_on_a_non_loopback_address_is_refused_at_start(tmp_path: Path) -> None:
    for listen in ("0.0.0.0:8080", ":8080", "[::]:8080", "10.1.2.3:8080"):
        r = subprocess.run([sys.executable, "-m", "scanner.cli", "serve", *_inputs(tmp_path), "--listen", listen],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (listen, r.returncode, r.stderr)
        assert "without authentication" in r.stderr and "--insecure-no-auth" in r.stderr, r.stderr


def test_a_connection_flood_under_a_small_fd_limit_never_starves_the_probes(tmp_path: Path) -> None:
    """The issue's numbers: the process may hold 200 file descriptors; 260 connections that never finish
    their headers arrive, and keep arriving. The oldest connection still waiting for its headers is
    closed whenever more than --max-connections wait, so /healthz is answered at once throughout."""
    import resource

    def small_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "serve", *_inputs(tmp_path), "--listen", f"127.0.0.1:{port}",
             "--cluster", "fd", "--no-run-at-start", "--max-connections", "50"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=small_fd_limit)
    slow: list[socket.socket] = []
    try:
        wait_for_http(f"{base}/healthz", proc=proc, log_path=log_path, timeout=60)
        worst = 0.0
        for wave in range(3):
            for _ in range(260 // 3 + 1):
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    s.sendall(b"GET /api/scans HTTP/1.1\r\nHost: x\r\n")
                    slow.append(s)
                except OSError:
                    pass
            time.sleep(0.3)
            for _ in range(3):
                t0 = time.monotonic()
                r = httpx.get(f"{base}/healthz", timeout=5)
                worst = max(worst, time.monotonic() - t0)
                assert r.status_code == 200, (wave, r.status_code)
        assert worst < 2, worst
        assert proc.poll() is None, log_path.read_text()[-2000:]
    finally:
        for s in slow:
            s.close()
        stop_process(proc)
