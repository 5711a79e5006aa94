"""The real `sigaudit` process against a real database (SQLite and PostgreSQL): `db prune`,
`scan --retention`, and no lost scans (issue 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scanner.models import ScanState
from scanner.store import open_store, upgrade
from tests.integration.test_store_scans import record, sample_result

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)
EMPTY = '{"kind": "List", "items": []}'


def _cli(*args: str, tmp: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGAUDIT_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120, **kw)  # type: ignore[call-overload]


def _policy(tmp: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp / "k.pub").write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    policy = tmp / "policy.yaml"
    policy.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
                      "    - name: r\n      images: ['*']\n"
                      "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    return policy


def _old_scans(url: str) -> dict[str, list[int]]:
    upgrade(url)
    with open_store(url) as s:
        return {c: [record(s, sample_result(c, NOW - timedelta(days=d))) for d in (200, 100, 50, 10)]
                for c in ("prod", "staging")}


def test_db_prune(db_url: str, tmp_path: Path) -> None:
    ids = _old_scans(db_url)
    refused = _cli("db", "prune", "--db", db_url, tmp=tmp_path)
    assert refused.returncode == 2 and "--keep" in refused.stderr
    assert _cli("db", "prune", "--db", db_url, "--keep", "90", tmp=tmp_path).returncode == 2  # no unit: refused

    done = _cli("db", "prune", "--db", db_url, "--keep", "90d", "--cluster", "prod", tmp=tmp_path)

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["schema_version"] == 1 and out["scans_deleted"] == 2 and out["rows_deleted"] > 0
    with open_store(db_url) as s:
        assert {x.id for x in s.list_scans("prod")} == set(ids["prod"][2:])
        assert len(s.list_scans("staging")) == 4
        assert [h.id for h in s.history("prod")] == ids["prod"]  # the trend keeps every scan
    again = _cli("db", "prune", "--db", db_url, "--keep-scans", "1", tmp=tmp_path)
    assert json.loads(again.stdout)["scans_deleted"] == 1 + 3


def test_scan_with_retention_prunes_its_own_cluster_after_a_successful_scan(db_url: str, tmp_path: Path) -> None:
    ids = _old_scans(db_url)
    (tmp_path / "pods.json").write_text(EMPTY)
    scan = _cli("scan", "--db", db_url, "--cluster", "prod", "--policy", str(_policy(tmp_path)), "--pods-file",
                str(tmp_path / "pods.json"), "-o", "none", "--no-progress", "--retention", "30d", tmp=tmp_path)
    assert scan.returncode == 0, scan.stderr
    with open_store(db_url) as s:
        kept = [x.id for x in s.list_scans("prod")]
        assert kept[1:] == [ids["prod"][3]] and kept[0] > max(ids["staging"])  # the new scan and the 10-day one
        assert len(s.list_scans("staging")) == 4  # another cluster's scans are its own scanner's business
        assert len(s.history("prod")) == 5


def test_a_second_scan_never_takes_over_a_live_one_with_an_old_heartbeat(db_url: str, tmp_path: Path) -> None:
    """Issue 20: a `sigaudit scan` longer than the stale limit was marked abandoned by the next one,
    which lost the first one's work. A live owner on this host keeps its scan, whatever its heartbeat."""
    upgrade(db_url)
    policy = str(_policy(tmp_path))
    (tmp_path / "pods.json").write_text(EMPTY)
    args = ["scan", "--db", db_url, "--cluster", "prod", "--policy", policy, "-o", "none", "--no-progress"]
    env = {**os.environ, "SIGAUDIT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "scanner.cli", *args, "--pods-file", "-"], cwd=ROOT, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        deadline = time.monotonic() + 60
        running = None
        while running is None and time.monotonic() < deadline:  # the first scan is recorded, then reads stdin
            with engine.connect() as conn:
                running = conn.execute(sa.text("SELECT id FROM scans WHERE state = 'running'")).scalar()
            time.sleep(0.2)
        assert running is not None and first.poll() is None
        with engine.begin() as conn:  # its last heartbeat is two hours old (a stalled database, a long scan)
            conn.execute(sa.text("UPDATE scans SET heartbeat_at = :t WHERE id = :i"),
                         {"t": (datetime.now(UTC) - timedelta(hours=2)).replace(tzinfo=None)
                          if db_url.startswith("sqlite") else datetime.now(UTC) - timedelta(hours=2), "i": running})
        engine.dispose()

        second = _cli(*args, "--pods-file", str(tmp_path / "pods.json"), tmp=tmp_path)

        assert second.returncode == 3, second.stderr
        assert "is running" in second.stderr or "is scanning cluster" in second.stderr, second.stderr
        _, err = first.communicate(EMPTY, timeout=120)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with open_store(db_url) as s:
        assert s.scan_summary(running).state == ScanState.COMPLETE


def test_the_servers_scheduled_scan_applies_the_retention_too(db_url: str, tmp_path: Path) -> None:
    from scanner.scan import Retention, ScanOptions
    from scanner.scheduler import ScanRunner

    ids = _old_scans(db_url)
    (tmp_path / "pods.json").write_text(EMPTY)
    options = ScanOptions(cluster="prod", policy_path=str(_policy(tmp_path)), pods_file=str(tmp_path / "pods.json"),
                          retention=Retention(keep=timedelta(days=30)))
    with open_store(db_url) as s:
        ScanRunner(options, s).run_scheduled()
        kept = [x.id for x in s.list_scans("prod")]
        assert len(kept) == 2 and kept[1] == ids["prod"][3]
        assert len(s.list_scans("staging")) == 4
