"""The real ``sigaudit`` process at the two ends of a pipe:

* stdout's reader exits early (``sigaudit scan -o json | head -c 100``): no "unexpected failure" (exit 3),
  no verdict (exit 1), no silently truncated output under ``PYTHONUNBUFFERED=1`` (the image's setting): exit
  141 (128 + SIGPIPE), quiet, and the scan's own work (store, ``--json-out``, ``--report``, metrics) is done;
* SIGTERM while the pod list is awaited from a FIFO or a pipe no writer feeds: the scan ends within about a
  second, as a SIGTERM anywhere else in a scan does (exit 3, the scan recorded failed), never only at
  ``--deadline`` (or never, without one).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.demo import _pod

pytestmark = pytest.mark.integration

NO_RULES = "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules: []\n"
EXIT_BROKEN_PIPE = 141
PODS = 1500  # -o json/table/policyreport: well over a pipe's 64 KiB buffer


def _scan_states(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return [row[0] for row in conn.execute("SELECT state FROM scans ORDER BY id")]
        except sqlite3.OperationalError:  # not migrated yet
            return []


@pytest.fixture(scope="module")
def many_pods(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pipes")
    items = [_pod("a", f"p{i}", [("c", f"r.io/app{i}:1", f"r.io/app{i}@sha256:{i:064x}")]) for i in range(PODS)]
    (tmp / "pods.json").write_text(json.dumps({"kind": "List", "items": items}))
    (tmp / "policy.yaml").write_text(NO_RULES)
    return tmp


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["PYTHONUNBUFFERED=1", "buffered"])
@pytest.mark.parametrize("output", ["json", "table", "policyreport"])
def test_a_stdout_reader_that_exits_early_is_exit_141_after_the_scans_work_is_done(
        many_pods: Path, tmp_path: Path, output: str, unbuffered: str) -> None:
    db = tmp_path / "s.db"
    json_out, report, metrics = tmp_path / "scan.json", tmp_path / "report.html", tmp_path / "metrics.prom"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    read_end, write_end = os.pipe()
    with (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(many_pods / "pods.json"), "--policy",
             str(many_pods / "policy.yaml"), "--db", f"sqlite:///{db}", "--cluster", "c1", "-o", output,
             "--no-progress", "--json-out", str(json_out), "--report", str(report), "--metrics-file", str(metrics)],
            stdout=write_end, stderr=err, env=env)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as reader:  # the reader takes 100 bytes and goes (`| head -c 100`)
            first = reader.read(100)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    stderr = (tmp_path / "err").read_text()
    assert len(first) == 100
    assert code == EXIT_BROKEN_PIPE, (code, stderr[-2000:])
    for noise in ("unexpected", "Traceback", "Exception ignored", "BrokenPipe", "error"):
        assert noise not in stderr, stderr
    # the scan's own work was all done before stdout was written
    assert _scan_states(db) == ["complete"]
    assert len(json.loads(json_out.read_text())["images"]) == PODS
    assert report.read_text().rstrip().endswith("</html>")
    assert "sigaudit_" in metrics.read_text()


def test_a_whole_stdout_is_still_written_and_the_verdict_exit_kept(many_pods: Path, tmp_path: Path) -> None:
    """The other side of the above: a reader that reads it all gets every byte, and the verdict's code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(many_pods / "pods.json"),
                        "--policy", str(many_pods / "policy.yaml"), "--no-store", "-o", "json", "--no-progress",
                        "--json-out", str(tmp_path / "scan.json")], capture_output=True, timeout=120, env=env)
    assert r.returncode == 1, r.stderr[-2000:]  # no rule for any image: non-compliant
    assert r.stdout == (tmp_path / "scan.json").read_bytes()


@pytest.mark.parametrize("source,deadline", [("fifo", None), ("fifo", "60"), ("stdin", "60")])
def test_sigterm_while_the_pod_list_is_awaited_ends_the_scan_at_once(
        tmp_path: Path, source: str, deadline: str | None) -> None:
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    db = tmp_path / "t.db"
    pods = "-"
    if source == "fifo":
        pods = str(tmp_path / "pods.fifo")
        os.mkfifo(pods)  # no writer ever opens it
    cmd = [sys.executable, "-m", "scanner.cli", "scan", "--pods-file", pods, "--policy", str(tmp_path / "policy.yaml"),
           "--db", f"sqlite:///{db}", "--cluster", "c1", "-o", "json", "--no-progress"]
    if deadline:
        cmd += ["--deadline", deadline]
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err)  # stdin: held open, silent
    try:
        until = time.monotonic() + 60
        while _scan_states(db) != ["running"]:  # begun: its SIGTERM handler is in place, the list awaited
            assert proc.poll() is None, (tmp_path / "err").read_text()
            assert time.monotonic() < until, "the scan never began"
            time.sleep(0.1)
        time.sleep(1)
        assert proc.poll() is None, (tmp_path / "err").read_text()
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=20)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()
    stderr = (tmp_path / "err").read_text()
    assert code == 3, (code, stderr[-2000:])
    assert took < 3, took  # a stop is looked at every 0.5 s; interpreter exit and a loaded machine besides
    assert "received signal 15" in stderr and "interrupted" in stderr, stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    assert _scan_states(db) == ["failed"]  # as a SIGTERM mid-scan: recorded, never complete
    assert (tmp_path / "out").read_bytes() == b""


@pytest.mark.parametrize("args", [["check-policy", "{tmp}/big.yaml"], ["--help"], ["scan", "--help"], ["--version"]],
                         ids=["check-policy", "help", "scan-help", "version"])
def test_any_command_whose_stdout_reader_is_gone_is_exit_141(tmp_path: Path, args: list[str]) -> None:
    """Every command, and click's own --help/--version (written while the options are parsed: click's answer
    to a broken pipe there was exit 1, "non-compliant"); the reader closed before the first byte."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "k.pub").write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    rules = "".join(f"    - {{name: r{i}, images: ['r.io/x{i}/*'], verifiers: [{{cosign: {{key: k.pub, "
                    "ignoreTlog: true}}]}\n" for i in range(300))
    (tmp_path / "big.yaml").write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n" + rules)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        r = subprocess.run([sys.executable, "-m", "scanner.cli", *(a.format(tmp=tmp_path) for a in args)],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(write_end)
    assert r.returncode == EXIT_BROKEN_PIPE, (r.returncode, r.stderr[-2000:])
    for noise in ("unexpected", "Traceback", "Exception ignored", "BrokenPipe"):
        assert noise not in r.stderr, r.stderr
