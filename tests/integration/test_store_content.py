"""Storage that grows with change, not with time (issue 20 item 2), on SQLite and a real PostgreSQL:
an unchanged scan writes no detail rows, a change writes what changed, every scan still reads back
whole, retention keeps what a kept scan shares, and the migration keeps every report byte-identical."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.storage import T0, estate, history
from reports import render
from scanner.models import ScanResult
from scanner.store import Store, downgrade, open_store, upgrade

pytestmark = pytest.mark.integration

CONTENT = ("images", "containers", "signatures", "signature_checks", "container_groups", "verdict_sets",
           "verdict_set_members")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    upgrade(db_url)
    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


def _record(store: Store, result: ScanResult) -> int:
    scan_id = store.begin_scan(result.cluster, result.started_at, result.policy_digest, result.sigaudit_version)
    store.finish_scan(scan_id, result)
    return scan_id


def _rows(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in CONTENT}


def _file_bytes(path: Path) -> int:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        con.close()
    return path.stat().st_size


def test_an_unchanged_scan_writes_no_detail_and_reads_back_whole(store: Store, tmp_path: Path) -> None:
    cold = estate(2000, T0)
    first = _record(store, cold)
    rows = _rows(store)
    size = _file_bytes(tmp_path / "sigaudit.db") if store.dialect == "sqlite" else None
    warm = dataclasses.replace(estate(2000, T0 + timedelta(hours=6)))
    second = _record(store, warm)
    assert _rows(store) == rows  # not one verdict, container, signature or check row more
    if size is not None:
        assert _file_bytes(tmp_path / "sigaudit.db") - size < 50 * 1024
    assert store.load_scan(first) == dataclasses.replace(cold, scan_id=first)
    assert store.load_scan(second) == dataclasses.replace(warm, scan_id=second)
    assert store.counts_by_namespace(second) == store.counts_by_namespace(first)


def test_a_change_writes_what_changed(store: Store) -> None:
    _record(store, estate(2000, T0))
    before = _rows(store)
    changed = estate(2000, T0 + timedelta(hours=6), churn=0.01)  # 20 pods rolled out, 4 digests re-judged
    scan_id = _record(store, changed)
    added = {t: n - before[t] for t, n in _rows(store).items()}
    assert added["verdict_sets"] == 1 and added["verdict_set_members"] == 400
    assert added["images"] == 4  # the re-judged verdicts only
    assert 0 < added["containers"] <= 20 * 5 + 4 * 5  # the groups a replaced pod or a re-judged digest is in
    assert store.load_scan(scan_id) == dataclasses.replace(changed, scan_id=scan_id)


def test_retention_keeps_what_a_kept_scan_shares_and_collects_the_rest(store: Store) -> None:
    ids = [_record(store, estate(500, T0 + timedelta(hours=6 * i), churn=0.2 if i == 1 else 0.0)) for i in range(4)]
    kept = store.load_scan(ids[-1])
    only_kept = _rows(store)
    result = store.prune(keep_scans=1)
    assert result.scans == 3 and result.rows > 0
    assert store.load_scan(ids[-1]) == kept
    rows = _rows(store)
    assert rows["verdict_sets"] == 1 and rows["verdict_set_members"] == 100
    assert rows["images"] == 100 and rows["containers"] == 500  # exactly the kept scan's content
    assert rows["images"] < only_kept["images"]
    # The next identical scan finds its content still there and adds none.
    _record(store, estate(500, T0 + timedelta(days=9)))
    assert _rows(store) == rows


def test_every_report_is_byte_identical_after_the_migration_back_and_forth(db_url: str) -> None:
    """Downgrade to 0007 copies the shared rows back into rows of each scan; upgrade gives them the
    content shape again (as "legacy" rows). The JSON document, CSV, HTML report (trend and diff),
    namespace counts and history of every scan are the same bytes throughout."""
    upgrade(db_url)

    def outputs(store: Store, ids: list[int]) -> list[str]:
        out = []
        for scan_id in ids:
            out += [render.render_json(store, scan_id), render.render_csv(store, scan_id),
                    render.render_html(store, scan_id, clock=lambda: T0),
                    repr(sorted(store.counts_by_namespace(scan_id).items()))]
        return [*out, repr(store.history("bench")), render.render_fleet_html(store, clock=lambda: T0)]

    with open_store(db_url) as store:
        ids = [_record(store, r) for r in history(200)]
        expected = outputs(store, ids)
    downgrade(db_url, "0007")
    upgrade(db_url)
    with open_store(db_url) as store:
        assert outputs(store, ids) == expected
        # New scans after the migration share nothing with the legacy rows, and still read whole.
        again = _record(store, history(200)[-1])
        verdicts = store.load_scan(again).verdicts
        assert verdicts == store.load_scan(ids[-1]).verdicts
        store.prune(keep_scans=1)  # the legacy rows go, the new scan's stay
        assert store.load_scan(again).verdicts == verdicts


def test_two_clusters_writing_the_same_new_content_at_once_both_succeed(postgres_url: str) -> None:
    """The same digest judged the same way in two clusters is one verdict row: two scans finishing
    together must not both insert it (a unique violation would lose a scan)."""
    upgrade(postgres_url)
    stores = [open_store(postgres_url) for _ in range(2)]
    try:
        results = [dataclasses.replace(estate(1000, T0), cluster=c) for c in ("east", "west")]
        ids = [s.begin_scan(r.cluster, r.started_at, r.policy_digest, r.sigaudit_version)
               for s, r in zip(stores, results, strict=True)]
        errors: list[BaseException] = []
        go = threading.Barrier(2)

        def finish(i: int) -> None:
            try:
                go.wait()
                stores[i].finish_scan(ids[i], results[i])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        for s, scan_id, r in zip(stores, ids, results, strict=True):
            assert s.load_scan(scan_id) == dataclasses.replace(r, scan_id=scan_id)
        assert _rows(stores[0])["images"] == 200  # shared, not written twice
    finally:
        for s in stores:
            s.close()
