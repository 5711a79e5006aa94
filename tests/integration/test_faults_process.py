"""Fault matrix, process / database / Kubernetes rows, with the real ``sigaudit scan`` process:

* SIGTERM and SIGKILL in the middle of a scan (made slow by a registry that stalls mid-body): the
  interrupted scan is never complete, the previous scan stays the latest, and the next scan is clean;
* a second scan of the same cluster while one runs is refused (exit 3), never interleaved;
* the database unreachable at the start (exit 3, a clear message without the password), and lost in
  the middle of the scan (PostgreSQL backends terminated): not complete, the previous scan stays latest;
* the Kubernetes API server unreachable: exit 3 and no half scan stored.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.models import ScanState
from scanner.store import open_store
from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import HostileRegistry, Rule, Stall
from tests.harness.tools import free_port

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    tmp: Path
    policy: Path
    fast_pods: Path  # one signed image, scans in a second
    slow_pods: Path  # the same plus an image whose signature blob stalls mid-body
    hostile: HostileRegistry


@pytest.fixture(scope="module")
def setup(registry, tmp_path_factory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("proc")
    key = KeyPair.ecdsa()
    hostile = HostileRegistry(upstream=registry.url)
    try:
        fast = oci.make_image(registry.url, "proc/fast", "1")
        sign_image(registry.url, hostile.host, "proc/fast", fast, key)
        slow = oci.make_image(registry.url, "proc/slow", "1")
        sign_image(registry.url, hostile.host, "proc/slow", slow, key)
        hostile.add(Rule("GET", r"/v2/proc/slow/blobs/sha256:", Stall(hold=15)))
        (tmp / "k.pub").write_text(key.public_pem)
        policy = tmp / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{hostile.host}']\n"
            f"  rules:\n    - {{name: r, images: ['{hostile.host}/*'], "
            "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
        )
        fast_pod = _pod("a", "fast", [("c", f"{hostile.host}/proc/fast:1", f"{hostile.host}/proc/fast@{fast}")])
        slow_pod = _pod("a", "slow", [("c", f"{hostile.host}/proc/slow:1", f"{hostile.host}/proc/slow@{slow}")])
        fast_pods, slow_pods = tmp / "fast.json", tmp / "slow.json"
        fast_pods.write_text(json.dumps({"kind": "List", "items": [fast_pod]}))
        slow_pods.write_text(json.dumps({"kind": "List", "items": [fast_pod, slow_pod]}))
        yield Setup(tmp, policy, fast_pods, slow_pods, hostile)
    finally:
        hostile.close()


def scan_cmd(s: Setup, pods: Path, db: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy", str(s.policy),
            "--db", db, "--cluster", "c1", "-o", "json", "--no-progress", *extra]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def start_slow(s: Setup, db: str) -> subprocess.Popen:
    before = len(s.hostile.seen("/v2/proc/slow/blobs/"))
    proc = subprocess.Popen(scan_cmd(s, s.slow_pods, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while len(s.hostile.seen("/v2/proc/slow/blobs/")) == before:  # the scan is now inside the stall
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the scan never reached the stalling registry"
        time.sleep(0.1)
    time.sleep(0.3)
    return proc


def states(db: str) -> tuple[int | None, list[str]]:
    store = open_store(db)
    try:
        latest = store.latest_scan_id("c1")
        rows = [x.state.value for x in sorted(store.list_scans("c1"), key=lambda x: x.id)]
        return latest, rows
    finally:
        store.close()


def test_sigterm_mid_scan_leaves_the_previous_scan_latest_and_restarts_clean(setup: Setup, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    first = run(scan_cmd(setup, setup.fast_pods, db))
    assert first.returncode == 0, first.stderr
    first_id = json.loads(first.stdout)["scan"]["id"]
    proc = start_slow(setup, db)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, (proc.returncode, err)
    assert "received signal" in err and "Traceback" not in err, err
    latest, rows = states(db)
    assert latest == first_id
    assert rows == ["complete", "failed"], rows
    again = run(scan_cmd(setup, setup.fast_pods, db))
    assert again.returncode == 0, again.stderr
    latest, rows = states(db)
    assert latest == json.loads(again.stdout)["scan"]["id"] and rows == ["complete", "failed", "complete"]


def test_sigkill_mid_scan_then_the_next_scan_is_clean(setup: Setup, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    first = run(scan_cmd(setup, setup.fast_pods, db))
    first_id = json.loads(first.stdout)["scan"]["id"]
    proc = start_slow(setup, db)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    latest, rows = states(db)
    assert latest == first_id and rows == ["complete", "running"], rows  # killed: nobody could mark it
    again = run(scan_cmd(setup, setup.fast_pods, db))
    assert again.returncode == 0, again.stderr  # the dead process's scan is abandoned, not waited for
    latest, rows = states(db)
    assert latest == json.loads(again.stdout)["scan"]["id"]
    assert rows == ["complete", "failed", "complete"], rows


def test_a_second_scan_while_one_runs_is_refused(setup: Setup, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'two.db'}"
    proc = start_slow(setup, db)
    try:
        second = run(scan_cmd(setup, setup.fast_pods, db))
        assert second.returncode == 3, second.stderr
        assert "in progress" in second.stderr.lower() or "running" in second.stderr.lower(), second.stderr
        assert "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    latest, rows = states(db)
    assert latest is None and rows == ["failed"], rows  # one scan only, never two interleaved


def test_database_unreachable_at_start_is_exit_3_with_a_clear_message(setup: Setup) -> None:
    port = free_port()
    r = run(scan_cmd(setup, setup.fast_pods, f"postgresql+psycopg://sigaudit:Db-Pa55word@127.0.0.1:{port}/x"))
    assert r.returncode == 3, r.stderr
    assert "cannot connect" in r.stderr and "Db-Pa55word" not in r.stderr + r.stdout, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_postgres_connection_lost_mid_scan_then_another_scan_takes_over(
    setup: Setup, postgres_server, postgres_url: str
) -> None:
    for _ in range(2):  # migrations run twice: the second is a no-op
        up = run([sys.executable, "-m", "scanner.cli", "db", "upgrade", "--db", postgres_url])
        assert up.returncode == 0, up.stderr
    first = run(scan_cmd(setup, setup.fast_pods, postgres_url))
    assert first.returncode == 0, first.stderr
    first_id = json.loads(first.stdout)["scan"]["id"]
    proc = start_slow(setup, postgres_url)
    dbname = postgres_url.rsplit("/", 1)[1].split("?")[0]
    admin = postgres_server.admin()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (dbname,))
            killed = cur.rowcount
    finally:
        admin.close()
    assert killed >= 1, "the scan held no connection to terminate"
    # Its cluster lock went with its session: a second scan may now start, and it takes over.
    second = run(scan_cmd(setup, setup.fast_pods, postgres_url))
    assert second.returncode == 0, second.stderr
    second_id = json.loads(second.stdout)["scan"]["id"]
    _out, err = proc.communicate(timeout=90)
    assert proc.returncode == 3, err  # the first scan cannot record itself over the one that took over
    assert "Traceback" not in err and "abandoned" in err, err
    store = open_store(postgres_url)
    try:
        assert store.latest_scan_id("c1") == second_id
        states_by_id = {x.id: x.state for x in store.list_scans("c1")}
    finally:
        store.close()
    assert states_by_id[first_id] is ScanState.COMPLETE and states_by_id[second_id] is ScanState.COMPLETE
    interrupted = [i for i in states_by_id if i not in (first_id, second_id)]
    assert len(interrupted) == 1 and states_by_id[interrupted[0]] is ScanState.FAILED, states_by_id


def test_kube_api_unreachable_is_exit_3_and_no_half_scan(setup: Setup, tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "kube-T0ken-secret"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}],
    }))
    db = f"sqlite:///{tmp_path / 'kube.db'}"
    r = run([sys.executable, "-m", "scanner.cli", "scan", "--kubeconfig", str(kubeconfig), "--policy",
             str(setup.policy), "--db", db, "--cluster", "c1", "--no-progress", "-o", "json"], timeout=180)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and "kube-T0ken-secret" not in r.stderr + r.stdout, r.stderr
    assert r.stdout == ""
    latest, rows = states(db)
    assert latest is None and all(s != "complete" for s in rows), rows



# -- Failures that used to be Python's exit 1 --------------------------------------------------------------

NO_RULES = "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules: []\n"
D1 = "sha256:" + "1" * 64


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def shadow_module(tmp: Path, name: str, exc: str) -> str:
    """A directory for PYTHONPATH holding a package ``name`` that raises ``exc`` when imported: a broken
    or missing dependency, as a real install can have one."""
    pkg = tmp / "shadow" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise {exc}\n")
    return str(tmp / "shadow")


def test_malformed_pods_are_skipped_and_the_scan_is_partial(tmp_path: Path) -> None:
    good = _pod("a", "good", [("c", "r.io/app:1", f"r.io/app@{D1}")])
    listname = _pod("a", "listname", [("c", "r.io/app:1", f"r.io/app@{D1}")])
    listname["spec"]["containers"][0]["name"] = ["c"]
    secrets = _pod("a", "secrets", [("c", "r.io/app:1", f"r.io/app@{D1}")])
    secrets["spec"]["imagePullSecrets"] = True
    nest = "[" * 20_000 + "]" * 20_000
    deep = json.dumps(_pod("a", "deep", [("c", "r.io/app:1", f"r.io/app@{D1}")])).replace(
        '"labels": {}', '"labels": {"x": ' + nest + "}", 1)  # a field the inventory reads
    # where the inventory never reads (annotations), a deep value is never built: that pod is judged (issue 19)
    deepnote = json.dumps(_pod("a", "deepnote", [("c", "r.io/app:1", f"r.io/app@{D1}")])).replace(
        '"labels": {', '"annotations": {"x": ' + nest + '}, "labels": {')
    items = ", ".join([json.dumps(listname), json.dumps(secrets), deep, deepnote, json.dumps(good)])
    (tmp_path / "pods.json").write_text('{"kind": "List", "items": [' + items + "]}")
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    r = cli("scan", "--pods-file", str(tmp_path / "pods.json"), "--policy", str(tmp_path / "policy.yaml"),
            "--no-store", "-o", "json", "--no-progress")
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["scan"]["status"] == "partial"
    assert sorted(c["pod"] for i in doc["images"] for c in i["containers"]) == ["deepnote", "good"]
    for pod in ("a/listname", "a/secrets", "a/deep"):
        assert f"warning: pod {pod} skipped" in r.stderr, (pod, r.stderr)
    assert "a/deepnote skipped" not in r.stderr


def test_the_scan_deadline_cuts_a_pod_list_read_past_not_only_the_registry_work(tmp_path: Path) -> None:
    """A 60 MB value nested in a field the inventory never reads is read past, event by event, never
    built: it held a ``--deadline 1`` scan ~9 s (a 2 GiB file: minutes), the deadline only checked once
    the list was read. The reader stops at the deadline: exit 3, saying so, nothing judged."""
    nest = "[" * 30_000_000 + "]" * 30_000_000
    pod = json.dumps(_pod("a", "deep", [("c", "r.io/app:1", f"r.io/app@{D1}")])).replace(
        '"labels": {', '"annotations": {"x": ' + nest + '}, "labels": {')
    (tmp_path / "pods.json").write_text('{"kind": "List", "items": [' + pod + "]}")
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    t0 = time.monotonic()
    r = cli("scan", "--pods-file", str(tmp_path / "pods.json"), "--policy", str(tmp_path / "policy.yaml"),
            "--no-store", "-o", "json", "--no-progress", "--deadline", "1")
    took = time.monotonic() - t0
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "deadline passed while the pod list was read" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert took < 30, took


def _pods_file_cut_at_the_deadline(r_code: int, stderr: str, took: float, label: str, db: str) -> None:
    assert r_code == 3, (r_code, stderr[-2000:])
    assert f"{label}: the scan deadline passed while the pod list was read" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert took < 3 + 5, took  # the deadline, plus the interpreter's start and a loaded machine
    latest, rows = states(db)
    assert latest is None and "complete" not in rows, rows


def test_a_fifo_pods_file_no_writer_ever_opens_ends_at_the_deadline(tmp_path: Path) -> None:
    """A FIFO with no writer held ``open()`` (and then a read) before any deadline check: the scan ran until
    killed. It is opened without waiting and each read waits no longer than the deadline."""
    import os

    fifo = tmp_path / "pods.fifo"
    os.mkfifo(fifo)
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    db = f"sqlite:///{tmp_path / 'f.db'}"
    t0 = time.monotonic()
    r = cli("scan", "--pods-file", str(fifo), "--policy", str(tmp_path / "policy.yaml"), "--db", db,
            "--cluster", "c1", "-o", "json", "--no-progress", "--deadline", "3", timeout=40)
    _pods_file_cut_at_the_deadline(r.returncode, r.stderr, time.monotonic() - t0, str(fifo), db)


def test_a_stdin_pods_file_held_open_and_silent_ends_at_the_deadline(tmp_path: Path) -> None:
    """``--pods-file -`` on a pipe whose writer never writes nor closes it (and one that wrote half a list and
    went silent): exit 3 at the deadline naming <stdin>, never a read blocked past it."""
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    for n, first in enumerate([b"", b'{"kind": "List", "items": ['], 1):
        db = f"sqlite:///{tmp_path / f's{n}.db'}"
        out, err = tmp_path / f"out{n}", tmp_path / f"err{n}"
        t0 = time.monotonic()
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", "-", "--policy",
                                     str(tmp_path / "policy.yaml"), "--db", db, "--cluster", "c1", "-o", "json",
                                     "--no-progress", "--deadline", "3"], stdin=subprocess.PIPE, stdout=o, stderr=e)
            assert proc.stdin is not None
            try:
                proc.stdin.write(first)
                proc.stdin.flush()
                code = proc.wait(timeout=40)  # the pipe stays open: its writer is this test
            finally:
                proc.kill()
                proc.wait()
                proc.stdin.close()
        _pods_file_cut_at_the_deadline(code, err.read_text(), time.monotonic() - t0, "<stdin>", db)


def test_a_fifo_pods_file_written_slowly_within_the_deadline_is_read_whole(tmp_path: Path) -> None:
    """The deadline bounds each wait, not the pace: a writer trickling a list in for a few seconds is read."""
    import os
    import threading

    fifo = tmp_path / "pods.fifo"
    os.mkfifo(fifo)
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    doc = json.dumps({"kind": "List", "items": []}).encode()

    def trickle() -> None:
        time.sleep(1)  # the scan waits for its writer first
        with fifo.open("wb", buffering=0) as f:
            for i in range(0, len(doc), 4):
                f.write(doc[i : i + 4])
                time.sleep(0.2)

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    db = f"sqlite:///{tmp_path / 'w.db'}"
    r = cli("scan", "--pods-file", str(fifo), "--policy", str(tmp_path / "policy.yaml"), "--db", db,
            "--cluster", "c1", "-o", "json", "--no-progress", "--deadline", "20", timeout=90)
    writer.join(timeout=10)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert json.loads(r.stdout)["scan"]["status"] == "complete"
    latest, rows = states(db)
    assert latest is not None and rows == ["complete"], rows


def test_a_fifo_pods_file_whose_writer_comes_after_the_scan_opened_it_is_read_without_a_deadline(
        tmp_path: Path) -> None:
    """``mkfifo p; sigaudit scan --pods-file p & kubectl get pods -A -o json > p``: without --deadline the FIFO
    (opened without waiting for a writer) was read at once, found at EOF, and the scan failed ("premature
    EOF") before kubectl wrote. Its read waits for the writer, as open() did."""
    import os
    import threading

    fifo = tmp_path / "pods.fifo"
    os.mkfifo(fifo)
    (tmp_path / "policy.yaml").write_text(NO_RULES)

    def late_writer() -> None:
        time.sleep(2)
        with fifo.open("wb") as f:
            f.write(json.dumps({"kind": "List", "items": []}).encode())

    writer = threading.Thread(target=late_writer, daemon=True)
    writer.start()
    db = f"sqlite:///{tmp_path / 'l.db'}"
    r = cli("scan", "--pods-file", str(fifo), "--policy", str(tmp_path / "policy.yaml"), "--db", db,
            "--cluster", "c1", "-o", "json", "--no-progress", timeout=60)
    writer.join(timeout=10)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    latest, rows = states(db)
    assert latest is not None and rows == ["complete"], rows


def test_a_stdin_pods_file_on_a_closed_stdin_is_an_inventory_error_not_an_unexpected_one(tmp_path: Path) -> None:
    """``--pods-file - <&-``: Python sets sys.stdin to None, and sys.stdin.buffer was an AttributeError
    ("unexpected failure"). It is the pod list that cannot be read, named, exit 3."""
    import os

    (tmp_path / "policy.yaml").write_text(NO_RULES)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", "-", "--policy",
                        str(tmp_path / "policy.yaml"), "--db", db, "--cluster", "c1", "-o", "json", "--no-progress",
                        "--deadline", "10"], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: os.close(0))
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "cannot read pod list <stdin>: standard input is closed" in r.stderr, r.stderr
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_docker_config_with_a_non_string_auth_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"r.io": {"auth": 12345}}}))
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    (tmp_path / "pods.json").write_text(json.dumps({"kind": "List", "items": []}))
    r = cli("scan", "--pods-file", str(tmp_path / "pods.json"), "--policy", str(tmp_path / "policy.yaml"),
            "--docker-config", str(tmp_path / "config.json"), "--no-store", "-o", "json")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "config.json" in r.stderr and "auth is a int, not a string" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["scan", "--pods-file", "PODS", "--policy", "POLICY", "-o", "json"],
                                  ["db", "upgrade"], ["report", "--format", "json"]], ids=["scan", "db", "report"])
def test_a_missing_postgres_driver_is_exit_2_naming_the_extra(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    (tmp_path / "pods.json").write_text(json.dumps({"kind": "List", "items": []}))
    shadow = shadow_module(tmp_path, "psycopg", "ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')")
    args = [{"PODS": str(tmp_path / "pods.json"), "POLICY": str(tmp_path / "policy.yaml")}.get(a, a) for a in args]
    r = cli(*args, "--db", "postgresql://sigaudit:Db-Pa55word@127.0.0.1:5432/x", env={"PYTHONPATH": shadow})
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "install sigaudit[postgres]" in r.stderr and "Traceback" not in r.stderr
    assert "Db-Pa55word" not in r.stderr + r.stdout


def test_an_unexpected_exception_in_the_real_process_is_exit_3_and_the_scan_is_marked_failed(tmp_path: Path) -> None:
    """A dependency that blows up on import (here the Kubernetes client, for a live scan) stands for any
    exception nobody planned for: one line and exit 3, the traceback only with -vv, the scan not left
    running in the database."""
    (tmp_path / "policy.yaml").write_text(NO_RULES)
    shadow = shadow_module(tmp_path, "kubernetes", "RuntimeError('broken install: kubernetes client')")
    db = f"sqlite:///{tmp_path / 'u.db'}"
    args = ["scan", "--policy", str(tmp_path / "policy.yaml"), "--db", db, "--cluster", "c1", "--no-progress"]
    r = cli(*args, env={"PYTHONPATH": shadow})
    assert r.returncode == 3, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == ["sigaudit: error: unexpected failure: RuntimeError: broken install: kubernetes client "
                     "(-vv shows the traceback)"], lines
    latest, rows = states(db)
    assert latest is None and rows == ["failed"], rows
    loud = cli("-vv", *args, env={"PYTHONPATH": shadow})
    assert loud.returncode == 3 and "Traceback" in loud.stderr and "broken install" in loud.stderr
