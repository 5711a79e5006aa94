"""Real Prometheus and Pushgateway (Debian packages) on 127.0.0.1 for integration tests.

Fixtures:

* ``pushgateway`` (function): ``prometheus-pushgateway`` with persistence off. Object with ``.url``,
  ``.host``, ``.metrics_text()`` (its /metrics), ``.stop()``.
* ``prometheus_factory`` (function): ``prometheus_factory(scrape_targets, scrape_interval="1s",
  honor_labels=True)`` where ``scrape_targets`` is a list of "host:port" (job "sigaudit") or a
  dict {job: [host:port, ...]}. Object with ``.url``, ``.query(promql)`` (the ``data.result`` list
  of an instant query), ``.wait_for(promql, timeout=30)`` (polls until the result is non-empty),
  ``.targets()`` and ``.stop()``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.tools import free_port, require_binary, stop_process, wait_for_http


@dataclass
class _Process:
    host: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        stop_process(self.proc)


class Pushgateway(_Process):
    def metrics_text(self) -> str:
        r = httpx.get(f"{self.url}/metrics", timeout=10.0)
        r.raise_for_status()
        return r.text


class Prometheus(_Process):
    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (raises on an API error)."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10.0)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: HTTP {r.status_code} {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns at least one series (scrapes run every scrape_interval)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} still empty after {timeout}s; targets: {self.targets()}")
            time.sleep(0.25)

    def targets(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/targets", timeout=10.0)
        active: list[dict[str, Any]] = r.json()["data"]["activeTargets"]
        return active


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def start_pushgateway(workdir: Path, *, basic_auth: tuple[str, str] | None = None) -> Pushgateway:
    """``basic_auth=(user, password)``: the Pushgateway demands HTTP Basic authentication (its
    ``--web.config.file``, bcrypt-hashed password) on every request."""
    binary = require_binary("prometheus-pushgateway")
    workdir.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{free_port()}"
    log_path = workdir / "pushgateway.log"
    # Metrics live in memory only: Debian's build persists to /var/lib/prometheus/pushgateway.data unless
    # told otherwise, and every gateway the tests started then loaded what earlier runs had pushed.
    cmd = [str(binary), f"--web.listen-address={host}", "--persistence.file="]
    if basic_auth is not None:
        import bcrypt

        hashed = bcrypt.hashpw(basic_auth[1].encode(), bcrypt.gensalt(rounds=5)).decode()
        web_config = workdir / "web.yml"
        web_config.write_text(yaml.safe_dump({"basic_auth_users": {basic_auth[0]: hashed}}))
        cmd.append(f"--web.config.file={web_config}")
    proc = _spawn(cmd, log_path)
    pg = Pushgateway(host, proc, log_path)
    try:
        wait_for_http(f"{pg.url}/-/ready", proc=proc, log_path=log_path,
                      ok_statuses=(200, 401) if basic_auth else (200,))
    except BaseException:
        pg.stop()
        raise
    return pg


def start_prometheus(
    workdir: Path,
    scrape_targets: Sequence[str] | Mapping[str, Sequence[str]],
    *,
    scrape_interval: str = "1s",
    honor_labels: bool = True,
) -> Prometheus:
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = dict(scrape_targets) if isinstance(scrape_targets, Mapping) else {"sigaudit": list(scrape_targets)}
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "honor_labels": honor_labels,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": list(targets)}],
            }
            for job, targets in jobs.items()
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    host = f"127.0.0.1:{free_port()}"
    log_path = workdir / "prometheus.log"
    proc = _spawn(
        [
            str(binary),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={host}",
            "--web.enable-lifecycle",
        ],
        log_path,
    )
    prom = Prometheus(host, proc, log_path)
    try:
        wait_for_http(f"{prom.url}/-/ready", proc=proc, log_path=log_path, timeout=30.0)
    except BaseException:
        prom.stop()
        raise
    return prom


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    pg = start_pushgateway(tmp_path / "pushgateway")
    yield pg
    pg.stop()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    started: list[Prometheus] = []

    def make(
        scrape_targets: Sequence[str] | Mapping[str, Sequence[str]],
        *,
        scrape_interval: str = "1s",
        honor_labels: bool = True,
    ) -> Prometheus:
        prom = start_prometheus(
            tmp_path / f"prometheus-{len(started)}",
            scrape_targets,
            scrape_interval=scrape_interval,
            honor_labels=honor_labels,
        )
        started.append(prom)
        return prom

    yield make
    for prom in started:
        prom.stop()
