"""Retention (issue 20) on SQLite and a real PostgreSQL: `prune` deletes old detail in bounded
transactions, keeps a summary of every scan for the trend, returns the space, and works on a full disk."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scanner.errors import StoreError, StoreFull
from scanner.models import ScanState
from scanner.store import Store, downgrade, open_store, upgrade
from tests.integration.test_store_scans import T0, Clock, record, sample_result

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 100 * DAY)


@pytest.fixture
def store(db_url: str, clock: Clock) -> Iterator[Store]:
    upgrade(db_url)
    s = open_store(db_url, clock=clock)
    try:
        yield s
    finally:
        s.close()


def _rows(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ("scans", "images", "containers", "signatures", "signature_checks", "scan_summaries")}


def test_the_trend_outlives_the_detail(store: Store) -> None:
    ids = [record(store, sample_result("prod", T0 + i * DAY)) for i in range(6)]
    other = record(store, sample_result("staging", T0))
    before = [(s.id, s.started_at, s.compliant, s.total, dict(s.counts)) for s in store.history("prod")]
    assert [b[0] for b in before] == ids

    result = store.prune(before=T0 + 4 * DAY, cluster="prod")

    assert result.scans == 4 and result.rows > 0
    assert [s.id for s in store.list_scans("prod")] == ids[:3:-1]  # the detail of the old ones is gone
    for scan_id in ids[:4]:
        with pytest.raises(StoreError, match="there is no scan"):
            store.load_scan(scan_id)
    # ...but the trend still has every scan, with the same figures.
    assert [(s.id, s.started_at, s.compliant, s.total, dict(s.counts)) for s in store.history("prod")] == before
    assert store.load_scan(ids[-1]).verdicts  # kept scans are intact
    assert [s.id for s in store.list_scans("staging")] == [other]  # --cluster prunes that cluster only


def test_keep_scans_and_keep_are_both_kept_and_the_newest_complete_scan_always(store: Store) -> None:
    complete = record(store, sample_result("prod", T0))
    partial = [record(store, sample_result("prod", T0 + i * DAY, state=ScanState.PARTIAL)) for i in range(1, 6)]
    # days 3, 4, 5 are the 3 newest; days 4 and 5 are recent; day 0 is the newest complete scan
    assert store.prune(before=T0 + 4 * DAY, keep_scans=3).scans == 2
    assert [s.id for s in store.list_scans()] == [*reversed(partial[2:]), complete]
    assert store.prune(keep_scans=0).scans == 2  # the newest complete one, and the highest id, stay
    assert {s.id for s in store.list_scans()} == {complete, partial[-1]}
    assert store.prune().scans == 0  # no keep given: nothing to judge by, nothing deleted


def test_a_pruned_id_is_never_given_to_the_next_scan(store: Store) -> None:
    """SQLite numbers a new row max(id) + 1: were the newest row pruned, the next scan would take its id
    and meet its summary."""
    first = record(store, sample_result("prod", T0))
    last = record(store, sample_result("prod", T0 + DAY, state=ScanState.PARTIAL))
    store.prune(keep_scans=0)
    nxt = record(store, sample_result("prod", T0 + 2 * DAY))
    assert nxt > last > first
    assert [s.id for s in store.history("prod")] == [first, last, nxt]


def test_prune_deletes_in_bounded_transactions(store: Store) -> None:
    for i in range(3):
        record(store, sample_result("prod", T0 + i * DAY, n_extra=60))  # 300+ containers, 120+ signatures each
    biggest: list[int] = []

    def after(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE"):
            biggest.append(cursor.rowcount)

    sa.event.listen(store.engine, "after_cursor_execute", after)
    result = store.prune(before=T0 + 10 * DAY, batch=50)
    assert result.scans == 2
    assert biggest and max(biggest) <= 50, max(biggest)
    rows = _rows(store)
    assert rows["scans"] == 1 and rows["scan_summaries"] == 3
    assert rows["containers"] == 306 and rows["signatures"] == 123  # only the kept scan's


def test_a_prune_stopped_half_way_never_leaves_a_scan_that_reads_as_whole(store: Store) -> None:
    """A scan row goes in one transaction; the content only it named is collected afterwards, in
    batches. Killed half-way through the collection, the pruned scan is simply gone, the kept one
    reads whole, and the next prune finishes collecting."""
    old = record(store, sample_result("prod", T0, n_extra=20))
    kept = record(store, sample_result("prod", T0 + DAY))
    whole = store.load_scan(kept)
    calls = 0

    def stop_after_some(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        nonlocal calls
        if statement.lstrip().upper().startswith("DELETE FROM CONTAINERS"):
            calls += 1
            if calls == 2:
                raise RuntimeError("killed")

    sa.event.listen(store.engine, "before_cursor_execute", stop_after_some)
    with pytest.raises(RuntimeError):
        store.prune(before=T0 + 10 * DAY, batch=20)
    sa.event.remove(store.engine, "before_cursor_execute", stop_after_some)
    with pytest.raises(StoreError, match="there is no scan"):
        store.load_scan(old)
    assert store.latest_scan_id("prod") == kept and store.load_scan(kept) == whole
    left = _rows(store)["containers"]
    assert store.prune(before=T0 + 10 * DAY).rows > 0  # the next prune finishes the job
    assert _rows(store)["containers"] < left and store.load_scan(kept) == whole
    first = store.history("prod")[0]
    assert first.id == old and first.state == ScanState.COMPLETE  # its summary still says complete


def test_unused_cache_entries_go_with_the_scans(store: Store, clock: Clock) -> None:
    store.cache_put("sha256:" + "a" * 64, "t", "m", [])
    clock.at = T0 + 200 * DAY
    store.cache_put("sha256:" + "b" * 64, "t", "m", [])
    assert store.prune(before=T0 + 150 * DAY).cache_entries == 1
    assert store.cache_get("sha256:" + "b" * 64, "t") is not None


def test_the_migration_back_fills_the_summaries_of_existing_scans(db_url: str) -> None:
    upgrade(db_url)
    with open_store(db_url) as s:
        ids = [record(s, sample_result("prod", T0 + i * DAY, state=st))
               for i, st in enumerate((ScanState.COMPLETE, ScanState.PARTIAL, ScanState.COMPLETE))]
        failed = s.begin_scan("prod", T0 + 5 * DAY, "p", "v")
        s.fail_scan(failed, ["boom"])
        expected = [(h.id, h.state, h.started_at, h.total, h.compliant, dict(h.counts)) for h in s.history("prod")]
    assert [e[0] for e in expected] == ids
    downgrade(db_url, "0005")  # the table goes: as in a database written by an older sigaudit
    upgrade(db_url)
    with open_store(db_url) as s:
        assert [(h.id, h.state, h.started_at, h.total, h.compliant, dict(h.counts))
                for h in s.history("prod")] == expected
        with s.engine.connect() as conn:
            namespaces = conn.execute(sa.text("SELECT namespaces FROM scan_summaries WHERE scan_id = :i"),
                                      {"i": ids[0]}).scalar_one()
        if isinstance(namespaces, str):
            import json

            namespaces = json.loads(namespaces)
        assert _flat(namespaces) == s.counts_by_namespace(ids[0])


def _flat(namespaces: dict[str, dict[str, int]]) -> dict[tuple[str, str], int]:
    return {(ns, st): n for ns, by in namespaces.items() for st, n in by.items()}


def test_a_new_scan_writes_its_namespace_counts_into_its_summary(store: Store) -> None:
    scan_id = record(store, sample_result("prod", T0, n_extra=14))
    with store.engine.connect() as conn:
        namespaces = conn.execute(sa.text("SELECT namespaces FROM scan_summaries WHERE scan_id = :i"),
                                  {"i": scan_id}).scalar_one()
    if isinstance(namespaces, str):
        import json

        namespaces = json.loads(namespaces)
    assert _flat(namespaces) == store.counts_by_namespace(scan_id)


# -- SQLite: space and full disks -------------------------------------------------------------------


def _pragma(path: Path, name: str) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        con.close()


def test_a_new_sqlite_file_returns_pruned_space_to_the_volume(sqlite_url: str, tmp_path: Path) -> None:
    upgrade(sqlite_url)
    path = tmp_path / "sigaudit.db"
    assert _pragma(path, "auto_vacuum") == 2  # incremental, set at creation
    with open_store(sqlite_url) as s:
        for i in range(8):
            record(s, sample_result("prod", T0 + i * DAY, n_extra=150))
        result = s.prune(keep_scans=1)
    assert result.scans == 7
    assert result.file_bytes_before is not None and result.file_bytes_after is not None
    assert result.file_bytes_after < result.file_bytes_before / 3
    assert path.stat().st_size == result.file_bytes_after  # the WAL is truncated too
    assert _pragma(path, "freelist_count") == 0


def test_upgrade_turns_on_incremental_vacuum_in_an_older_file(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "sigaudit.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE made_by_an_older_sigaudit (x)")  # the file exists without auto_vacuum
    con.close()
    assert _pragma(path, "auto_vacuum") == 0
    upgrade(sqlite_url)
    assert _pragma(path, "auto_vacuum") == 2


def test_on_a_full_disk_the_error_names_db_prune_and_prune_makes_room(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with open_store(sqlite_url) as s:
        for i in range(4):
            record(s, sample_result("prod", T0 + i * DAY, n_extra=150))
        with s.engine.connect() as conn:
            pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())

    def full(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")  # the volume holds no more pages

    with open_store(sqlite_url) as s:
        sa.event.listen(s.engine, "connect", full)
        s.engine.dispose()
        with pytest.raises(StoreError, match=r"disk is full.*`sigaudit db prune --keep") as err:
            for i in range(4, 40):
                record(s, sample_result("prod", T0 + i * DAY, n_extra=150))
        s.fail_scan(s.list_scans()[0].id, [str(err.value)])
        assert s.prune(keep_scans=1).scans >= 3  # pruning needs no room
        record(s, sample_result("prod", T0 + 50 * DAY, n_extra=150))  # and the next scan fits again
        assert [h.started_at for h in s.history("prod")][-1] == T0 + 50 * DAY


def test_disk_usage_tells_a_nearly_full_volume(store: Store) -> None:
    usage = store.disk_usage()
    assert usage.database_bytes > 0
    if store.dialect == "sqlite":
        assert usage.free_bytes is not None and usage.volume_bytes is not None
        assert usage.nearly_full == (usage.free_bytes < max(64 * 2**20, usage.volume_bytes // 10))
    else:
        assert usage.free_bytes is None and not usage.nearly_full


def test_the_metrics_tell_how_full_the_database_is(store: Store) -> None:
    from scanner.metrics.collector import SigauditCollector, StoreSource

    record(store, sample_result("prod", T0))
    fams = {f.name: f for f in SigauditCollector(StoreSource(store, "prod")).collect()}
    assert fams["sigaudit_store_size_bytes"].samples[0].value > 0
    if store.dialect == "sqlite":
        free = fams["sigaudit_store_free_bytes"].samples[0].value
        volume = fams["sigaudit_store_volume_bytes"].samples[0].value
        assert 0 < free <= volume
    else:
        assert "sigaudit_store_free_bytes" not in fams


def test_the_reports_trend_covers_scans_whose_detail_was_pruned(store: Store) -> None:
    from scanner.reports.render import report_model

    ids = [record(store, sample_result("prod", T0 + i * DAY)) for i in range(5)]
    store.prune(keep_scans=1)
    model = report_model(store.load_scan(ids[-1]), store)
    assert [p.scan_id for p in model.trend.points] == ids


def test_a_dead_or_foreign_pid_owns_no_scan() -> None:
    import subprocess
    import sys

    from scanner.store.scans import _pid_alive

    root = Path(__file__).resolve().parents[2]
    # alive, and its command line says sigaudit (as `sigaudit scan` and `python -m scanner.cli scan` do)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "sigaudit", "scan"])
    other = subprocess.Popen(["sleep", "30"])  # alive, but not a sigaudit: a reused pid
    zombie = subprocess.Popen([sys.executable, "-m", "scanner.cli", "--version"], cwd=root)
    try:
        assert _pid_alive(owner.pid) is True
        assert _pid_alive(other.pid) is None  # the heartbeat decides
        deadline = 50
        while deadline and Path(f"/proc/{zombie.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
            deadline -= 1
            import time

            time.sleep(0.1)
        assert _pid_alive(zombie.pid) is False  # exited, never reaped
    finally:
        owner.kill()
        owner.wait()
        other.kill()
        other.wait()
        zombie.wait()
    assert _pid_alive(zombie.pid) is False


def test_a_scan_is_not_begun_when_the_volume_is_nearly_full(sqlite_url: str) -> None:
    """A SQLite volume filled to the last byte cannot delete either (the WAL must grow, and committed WAL
    pages must go into the file): sigaudit stops short of that, with the command that makes room."""
    upgrade(sqlite_url)
    with open_store(sqlite_url, reserve_bytes=2**62) as s:
        with pytest.raises(StoreFull, match=r"only .* MiB is left.*`sigaudit db prune --keep"):
            s.begin_scan("prod", T0, "p", "v")
        assert s.list_scans() == []


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB tmpfs (needs root; skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_on_a_real_full_volume_prune_makes_room_and_scans_go_on(small_volume: Path) -> None:
    url = f"sqlite:///{small_volume / 'sigaudit.db'}"
    upgrade(url)
    with open_store(url, reserve_bytes=2**20) as s:
        with pytest.raises(StoreFull, match="db prune"):
            for i in range(200):
                record(s, sample_result("prod", T0 + i * DAY, n_extra=60))
        assert s.list_scans()[0].state == ScanState.COMPLETE  # stopped before a scan began: none half-written
        recorded = len(s.history("prod"))
        assert s.prune(keep_scans=2).scans == recorded - 2
        for j in range(3):
            record(s, sample_result("prod", T0 + (300 + j) * DAY, n_extra=60))
        assert len(s.history("prod")) == recorded + 3


def test_keep_summaries_deletes_only_summaries_whose_detail_is_gone(store: Store) -> None:
    ids = [record(store, sample_result("prod", T0 + i * DAY)) for i in range(4)]
    store.prune(before=T0 + 2 * DAY)  # the detail of the first two goes
    result = store.prune(before=T0 + 2 * DAY, summaries_before=T0 + 10 * DAY)
    assert result.summaries == 2
    assert [h.id for h in store.history("prod")] == ids[2:]  # the scans still detailed keep their points
