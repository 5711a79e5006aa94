"""Receivers of sigaudit's notifications on 127.0.0.1 for integration tests.

Fixtures:

* ``http_receiver`` (function): a real HTTP server (``http.server`` in a thread) that records every
  request (path, headers, body). ``.url``, ``.requests`` (list of :class:`Received`), ``.fail_next(n,
  status=500)`` (answer the next n requests with that status), ``.hang_next(n, seconds)`` (hold the next
  n requests that long before answering), ``.clear()`` (requests and queued failures).
* ``alertmanager`` (function): the Debian ``prometheus-alertmanager`` package's Alertmanager, no
  clustering, with a route ``namespace="prod"`` → a webhook to an ``http_receiver`` of its own
  (``.routed``), so tests see that Alertmanager's own routing applied to sigaudit's labels.
  ``.url``, ``.alerts(active=True, silenced=..., inhibited=...)`` (GET /api/v2/alerts), ``.stop()``.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.tools import free_port, require_binary, stop_process, wait_for_http


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    _fail: list[int] = field(default_factory=list)
    _hang: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self.lock:
            self._fail.extend([status] * n)

    def hang_next(self, n: int, seconds: float) -> None:
        with self.lock:
            self._hang.extend([seconds] * n)

    def clear(self) -> None:
        """Forget the requests received and any failures or hangs still queued."""
        with self.lock:
            self.requests.clear()
            self._fail.clear()
            self._hang.clear()

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} requests after {timeout}s, expected {n}")
            time.sleep(0.1)
        return list(self.requests)


def start_http_receiver() -> HttpReceiver:
    holder: dict[str, HttpReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = holder["r"]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with rec.lock:
                rec.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = rec._fail.pop(0) if rec._fail else 200
                hang = rec._hang.pop(0) if rec._hang else 0.0
            if hang:
                time.sleep(hang)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the client gave up

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec = HttpReceiver(server)
    holder["r"] = rec
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return rec


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    rec = start_http_receiver()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@dataclass
class Alertmanager:
    host: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    routed: HttpReceiver

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=10.0)
        r.raise_for_status()
        alerts: list[dict[str, Any]] = r.json()
        return alerts

    def stop(self) -> None:
        stop_process(self.proc)


def start_alertmanager(workdir: Path, routed: HttpReceiver) -> Alertmanager:
    binary = require_binary("prometheus-alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {"receiver": "default", "group_by": ["alertname", "namespace"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h",
                  "routes": [{"matchers": ['namespace="prod"'], "receiver": "prod"}]},
        "receivers": [{"name": "default"},
                      {"name": "prod", "webhook_configs": [{"url": f"{routed.url}/prod", "send_resolved": True}]}],
    }
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config))
    host = f"127.0.0.1:{free_port()}"
    log_path = workdir / "alertmanager.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(binary), f"--config.file={config_path}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address={host}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    am = Alertmanager(host, proc, log_path, routed)
    try:
        wait_for_http(f"{am.url}/-/ready", proc=proc, log_path=log_path, timeout=30.0)
    except BaseException:
        am.stop()
        raise
    return am


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    routed = start_http_receiver()
    am = start_alertmanager(tmp_path / "alertmanager", routed)
    yield am
    am.stop()
    routed.server.shutdown()
    routed.server.server_close()
