"""A PostgreSQL whose disk is full (issue 20): the store's tables live in a tablespace on a real,
small tmpfs; scans fail with an error that says `db prune`, and the real `sigaudit db prune` still
runs on the full disk and deletes the old detail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scanner.errors import StoreFull
from scanner.store import open_store, upgrade
from tests.harness.fixtures_postgres import PostgresServer
from tests.integration.test_store_scans import T0, record, sample_result

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)


def _need(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is needed (CI=true: failing instead of skipping)")
    pytest.skip(f"{what} is needed")


@pytest.fixture
def full_disk_url(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[str]:
    """A database whose tables (not its catalog, not the server's WAL) are on a 4 MiB tmpfs."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        _need("root (to mount a small tmpfs for the tablespace)")
    base = Path(tempfile.mkdtemp(prefix="sigaudit-pgfull-", dir="/tmp"))  # pytest's tmp_path is root's only
    os.chmod(base, 0o755)  # the server (user postgres) walks to the mount point
    mount = base / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        _need(f"a tmpfs mount ({done.stderr.strip()})")
    space = f"small_{os.getpid()}_{base.name[-8:]}".lower().replace("-", "_")
    name = ""
    try:
        shutil.chown(mount, user="postgres", group="postgres")
        with postgres_server.admin() as conn:
            conn.execute(f"CREATE TABLESPACE {space} LOCATION '{mount}'")
        name = postgres_server.create_database()
        with postgres_server.admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_tablespace = {space}')
        yield postgres_server.url(name)
    finally:
        if name:
            postgres_server.drop_database(name)
        with postgres_server.admin() as conn:
            conn.execute(f"DROP TABLESPACE IF EXISTS {space}")
        subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_on_a_full_postgresql_disk_scans_say_db_prune_and_prune_makes_room(full_disk_url: str, tmp_path: Path) -> None:
    url = full_disk_url
    upgrade(url)
    with open_store(url) as s:
        with s.engine.connect() as conn:  # the tables are on the small volume
            assert conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE tablename = 'images' "
                                        "AND tablespace IS NOT NULL")).scalar_one() == 1
        for i in range(8):
            record(s, sample_result("prod", T0 - (i + 1) * DAY, n_extra=60))
        with s.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM"))  # as autovacuum does early in a table's life: its maps exist
        recorded = 0
        with pytest.raises(StoreFull, match=r"disk holding the database is full.*`sigaudit db prune --keep"):
            for i in range(2000):
                result = sample_result("prod", T0 + i * DAY, n_extra=60)
                scan_id = s.begin_scan("prod", result.started_at, result.policy_digest, result.sigaudit_version)
                try:
                    s.finish_scan(scan_id, result)
                except StoreFull:
                    s.fail_scan(scan_id, ["the disk is full"])  # as the scan use case does
                    raise
                recorded += 1
        assert recorded > 2
        # The write that failed left no half-written scan: it reads as failed, every other as whole.
        assert [x.state.value for x in s.list_scans(limit=2)] == ["failed", "complete"]
        with s.engine.connect() as conn:
            before = conn.execute(sa.text("SELECT count(*) FROM images")).scalar_one()
        # The real CLI on the same full disk: prune runs (its deletes need no room in the data files;
        # an UPDATE that marked rows for deletion did, and failed) and deletes the old detail.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SIGAUDIT_DATA_DIR": str(tmp_path / "data")}
        pruned = subprocess.run([sys.executable, "-m", "scanner.cli", "db", "prune", "--db", url, "--keep-scans", "1"],
                                cwd=ROOT, env=env, text=True, capture_output=True, timeout=300, check=False)
        assert pruned.returncode == 0, pruned.stderr
        assert "Traceback" not in pruned.stderr
        assert [x.state.value for x in s.list_scans(limit=5000)] == ["failed", "complete"]  # the newest complete stays
        with s.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM images")).scalar_one() < before / 5
        # (The next scans may still fail for a while on a volume with 0 bytes left: the B-tree pages
        # of an ever-growing id emptied by the prune are recycled only by a later VACUUM.)
