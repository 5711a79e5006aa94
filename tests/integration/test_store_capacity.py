"""PostgreSQL "nearly full" (issue 20): sigaudit cannot see the server's disk, so the operator declares the
size the database may reach (``--db-capacity``, both faces). The real PostgreSQL and the real CLI: past 80%
a scan warns, within the reserve it is refused before anything is written, saying ``sigaudit db prune``;
``sigaudit_store_capacity_bytes`` exports the declaration, as SQLite's volume is exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from scanner.store import open_store, upgrade
from scanner.store.store import RESERVE_BYTES
from tests.integration.test_scan_retention_cli import EMPTY, _cli, _policy
from tests.integration.test_store_scans import T0, record, sample_result

pytestmark = pytest.mark.integration
MiB = 2**20


def _filled(url: str) -> int:
    """The database grown past 136 MiB (so that 80% of a capacity can lie below the reserve): rows of
    1,500 bytes are stored as they are (no TOAST compression below 2 kB). Returns pg_database_size."""
    upgrade(url)
    with open_store(url) as s, s.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE filler AS SELECT repeat('x', 1500) AS pad FROM generate_series(1, 100000)"))
    with open_store(url) as s:
        size = s.disk_usage().database_bytes
    assert size > 136 * MiB
    return size


def _scan(url: str, tmp: Path, capacity: int):  # type: ignore[no-untyped-def]
    (tmp / "pods.json").write_text(EMPTY)
    return _cli("scan", "--db", url, "--cluster", "prod", "--policy", str(_policy(tmp)), "--pods-file",
                str(tmp / "pods.json"), "-o", "none", "--no-progress", "--db-capacity", str(capacity), tmp=tmp)


def test_a_scan_within_the_reserve_of_the_declared_capacity_is_refused_saying_db_prune(
        postgres_url: str, tmp_path: Path) -> None:
    size = _filled(postgres_url)
    refused = _scan(postgres_url, tmp_path, size + RESERVE_BYTES - 8 * MiB)
    assert refused.returncode == 3, refused.stderr
    assert "--db-capacity" in refused.stderr and "sigaudit db prune" in refused.stderr, refused.stderr
    with open_store(postgres_url) as s:
        assert s.list_scans("prod") == []  # refused before anything was written


def test_a_scan_past_80_percent_of_the_declared_capacity_warns_and_runs(postgres_url: str, tmp_path: Path) -> None:
    size = _filled(postgres_url)
    capacity = size + RESERVE_BYTES + 2 * MiB  # past 80%, outside the reserve
    assert size >= 0.8 * capacity
    warned = _scan(postgres_url, tmp_path, capacity)
    assert warned.returncode == 0, warned.stderr
    assert "nearly full" in warned.stderr and "sigaudit db prune" in warned.stderr, warned.stderr
    roomy = _scan(postgres_url, tmp_path, 4 * size)
    assert roomy.returncode == 0 and "nearly full" not in roomy.stderr, roomy.stderr


def test_the_declared_capacity_is_a_metric_beside_the_size(db_url: str) -> None:
    from scanner.metrics.collector import SigauditCollector, StoreSource

    upgrade(db_url)
    for capacity in (None, 10 * 2**30):
        with open_store(db_url, capacity_bytes=capacity) as s:
            record(s, sample_result("prod", T0))
            fams = {f.name: f for f in SigauditCollector(StoreSource(s, "prod")).collect()}
            usage = s.disk_usage()
        assert fams["sigaudit_store_size_bytes"].samples[0].value == pytest.approx(usage.database_bytes, rel=0.5)
        if capacity is None:
            assert "sigaudit_store_capacity_bytes" not in fams
        else:
            assert [(x.labels, x.value) for x in fams["sigaudit_store_capacity_bytes"].samples] == [
                ({"cluster": "prod"}, float(capacity))]
            assert not usage.nearly_full
