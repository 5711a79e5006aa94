"""Storage that grows with change, not with time (issue 20 item 2), on SQLite and a real PostgreSQL:
an unchanged scan writes no detail rows, a change writes what changed, every scan still reads back
whole, retention keeps what a kept scan shares, and the migration keeps every report byte-identical."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bench.storage import T0, estate, history
from scanner.models import ScanResult
from scanner.reports import render
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


def _before_content_migration() -> str:
    """The revision before the content-addressed one (by name: the lead renumbers at merge)."""
    from alembic.script import ScriptDirectory

    from scanner.store.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config()).walk_revisions()
    (before,) = {str(s.down_revision) for s in scripts if "content_addressed_scans" in str(s.path)}
    return before


def test_every_report_is_byte_identical_after_the_migration_back_and_forth(db_url: str) -> None:
    """Downgrade to the revision before copies the shared rows back into rows of each scan; upgrade gives them the
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
    downgrade(db_url, _before_content_migration())
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


def test_scans_and_prunes_at_the_same_time_never_lose_shared_content(postgres_url: str) -> None:
    """A scan names content an earlier scan wrote while a prune collects what no scan names: the prune
    must never retire a verdict between the scan's look-up and its commit (the content lock), so every
    kept scan always reads back whole and no scan fails to record."""
    upgrade(postgres_url)
    writer, pruner = open_store(postgres_url), open_store(postgres_url)
    variants = [estate(300, T0, churn=c) for c in (0.0, 0.5)]
    errors: list[BaseException] = []
    done = threading.Event()

    def prune() -> None:
        try:
            while not done.is_set():
                pruner.prune(keep_scans=1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=prune)
    thread.start()
    try:
        for i in range(16):
            r = dataclasses.replace(variants[i % 2], started_at=T0 + timedelta(hours=i))
            scan_id = _record(writer, r)
            assert writer.load_scan(scan_id).verdicts == r.verdicts
    finally:
        done.set()
        thread.join(timeout=120)
        writer.close()
        pruner.close()
    assert not errors, errors


def test_a_scan_whose_verdict_set_lost_a_member_reads_as_damaged_not_as_less(store: Store) -> None:
    """Were a verdict set's member lost under a scan that still names it (retention collects a set only
    when no kept scan names it, under the content lock), the scan would be read without some evidence:
    its recorded size disagrees, and it is refused as damaged instead."""
    scan_id = _record(store, estate(50, T0))
    with store.engine.begin() as conn:
        gone = conn.execute(sa.text(
            "DELETE FROM verdict_set_members WHERE set_id = (SELECT verdict_set_id FROM scans WHERE id = :s) "
            "AND position = 0"), {"s": scan_id}).rowcount
    assert gone == 1
    from scanner.errors import StoreError

    with pytest.raises(StoreError, match="incomplete: the database is damaged"):
        store.load_scan(scan_id)


def test_scans_read_together_are_the_scans_read_alone_and_share_what_they_share(store: Store) -> None:
    """The HTML report reads a scan and its previous one together (issue 20: the previous scan was read
    and built afresh, a third of a 10,000-pod report): the same scans, in the order asked, a verdict they
    share built once; a missing scan is refused as alone."""
    first = _record(store, estate(200, T0))
    second = _record(store, estate(200, T0 + timedelta(hours=6), churn=0.05))
    empty = _record(store, dataclasses.replace(estate(1, T0), verdicts=(), cluster="other"))
    together = store.load_scans([second, first, empty])
    assert together == [store.load_scan(second), store.load_scan(first), store.load_scan(empty)]
    shared = {id(v) for v in together[0].verdicts} & {id(v) for v in together[1].verdicts}
    assert len(shared) >= len(together[0].verdicts) // 2  # the unchanged verdicts are the same objects
    from scanner.errors import StoreError

    with pytest.raises(StoreError, match="there is no scan 999999"):
        store.load_scans([first, 999999])
    from scanner.clock import fixed_clock

    clock = fixed_clock(T0)  # the same page either way
    assert render.render_html(store, second, clock=clock) == render.html_for_result(store.load_scan(second), store,
                                                                                  clock=clock)


# -- what main added since: the admission finding, watch verdicts, the re-check window ---------------


def _with_new_fields(result: ScanResult, rejected: str) -> ScanResult:
    """``result`` whose non-compliant verdicts carry an admission finding and the rules that rejected
    them (``rejected`` in the rule name: not stored, so it must not matter to the store), and whose
    compliant ones were served from the re-check window."""
    from scanner.models import AdmissionCause, AdmissionEvidence, AdmissionFinding

    finding = AdmissionFinding("ClusterPolicy/require-signed", "kyverno.yaml", False, (
        AdmissionEvidence(AdmissionCause.AUDIT_MODE, {"validationFailureAction": "Audit"}),))
    verdicts = tuple(
        dataclasses.replace(v, checked_at=T0 - timedelta(minutes=30)) if v.compliant
        else dataclasses.replace(v, admission=finding, rejected_by=(("kyverno.yaml", rejected),))
        for v in result.verdicts)
    return dataclasses.replace(result, verdicts=verdicts)


def _as_stored(result: ScanResult, scan_id: int) -> ScanResult:
    """What the store gives back: everything but the verdicts' in-memory ``rejected_by``."""
    return dataclasses.replace(result, scan_id=scan_id,
                               verdicts=tuple(dataclasses.replace(v, rejected_by=()) for v in result.verdicts))


def test_an_unchanged_scan_with_admission_findings_and_window_verdicts_writes_nothing(
        store: Store, tmp_path: Path) -> None:
    """admission and checked_at are stored, so they are content; rejected_by is not stored, so a verdict
    that differs only there shares its row (and a verdict read back, which has none, finds its own)."""
    cold = _with_new_fields(estate(2000, T0), "require-signed")
    assert any(v.admission for v in cold.verdicts) and any(v.checked_at for v in cold.verdicts)
    first = _record(store, cold)
    rows = _rows(store)
    size = _file_bytes(tmp_path / "sigaudit.db") if store.dialect == "sqlite" else None
    warm = _with_new_fields(estate(2000, T0 + timedelta(hours=6)), "another-rule")
    second = _record(store, warm)
    assert _rows(store) == rows
    if size is not None:
        assert _file_bytes(tmp_path / "sigaudit.db") - size < 50 * 1024
    assert store.load_scan(first) == _as_stored(cold, first)
    assert store.load_scan(second) == _as_stored(warm, second)
    # A changed finding is new content.
    moved = _with_new_fields(estate(2000, T0 + timedelta(hours=12)), "require-signed")
    moved = dataclasses.replace(moved, verdicts=tuple(
        dataclasses.replace(v, checked_at=T0) if v.checked_at else v for v in moved.verdicts))
    third = _record(store, moved)
    assert _rows(store)["images"] > rows["images"]
    assert store.load_scan(third) == _as_stored(moved, third)


def _watch_verdict(n: int) -> Any:
    from scanner.models import (
        ContainerRef,
        ContainerType,
        ImageReference,
        RunningImage,
        Status,
        Verdict,
        VerdictSource,
        Workload,
    )

    digest = f"sha256:{n:064x}"
    c = ContainerRef("watched", f"pod-{n}", "app", ContainerType.CONTAINER, "r.io/new:1", f"r.io/new@{digest}",
                     Workload("Pod", f"pod-{n}"), (), f"uid-w{n}")
    return Verdict(RunningImage(ImageReference("r.io", "new", "1", digest), (c,)), Status.UNSIGNED,
                   ("no signature found",), rule="bench", source=VerdictSource.WATCH)


def test_watch_verdicts_never_change_a_shared_verdict_set(store: Store) -> None:
    """Two scans with the same content name one verdict set. Watch verdicts added to the second make
    it a new set (its members, then the watch's); the first scan reads back exactly as it was."""
    a = estate(200, T0)
    b = estate(200, T0 + timedelta(hours=6))
    first, second = _record(store, a), _record(store, b)
    with store.engine.connect() as conn:
        sets = conn.execute(sa.text("SELECT id, verdict_set_id FROM scans")).all()
    assert len({s for _, s in sets}) == 1  # shared
    before = _rows(store)
    watch = [_watch_verdict(1), _watch_verdict(2)]
    assert store.add_watch_verdicts(second, "bench", watch) == 2
    assert store.load_scan(first) == dataclasses.replace(a, scan_id=first)
    loaded = store.load_scan(second)
    assert loaded.verdicts == b.verdicts + tuple(watch)
    assert loaded.stats["watch_verdicts"] == 2 and store.scan_summary(second).total == len(b.verdicts)
    after = _rows(store)
    assert after["verdict_sets"] == before["verdict_sets"] + 1  # the first scan's set stays: it names it
    assert after["verdict_set_members"] == before["verdict_set_members"] + len(b.verdicts) + 2
    assert after["images"] == before["images"] + 2 and after["container_groups"] == before["container_groups"] + 2
    # More watch verdicts: the second scan's own set is named by no one else and goes at once.
    assert store.add_watch_verdicts(second, "bench", [_watch_verdict(3)]) == 3
    assert _rows(store)["verdict_sets"] == after["verdict_sets"]
    assert store.load_scan(second).verdicts == b.verdicts + tuple(watch) + (_watch_verdict(3),)
    assert store.load_scan(first) == dataclasses.replace(a, scan_id=first)
    counts = store.counts_by_namespace(second)
    assert counts[("watched", "unsigned")] == 3
    # Retention: the first scan goes; the second keeps every verdict it names, watch ones included.
    store.prune(keep_scans=1)
    assert store.load_scan(second).verdicts == b.verdicts + tuple(watch) + (_watch_verdict(3),)


def test_the_migration_carries_admission_source_and_checked_at_both_ways(db_url: str) -> None:
    """Down to the revision before the content store and back: a watch verdict stays a watch verdict,
    a finding stays, a window verdict keeps its time (the conversion copies every images column)."""
    upgrade(db_url)
    result = _with_new_fields(estate(100, T0), "require-signed")
    with open_store(db_url) as store:
        scan_id = _record(store, result)
        store.add_watch_verdicts(scan_id, "bench", [_watch_verdict(7)])
        expected = store.load_scan(scan_id)
    assert {v.source.value for v in expected.verdicts} == {"scan", "watch"}
    downgrade(db_url, _before_content_migration())
    with sa.create_engine(db_url).connect() as conn:
        got = conn.execute(sa.text(
            "SELECT count(*), sum(CASE WHEN CAST(admission AS TEXT) LIKE '%require-signed%' THEN 1 ELSE 0 END), "
            "count(source), count(checked_at) FROM images WHERE scan_id = :i"),
            {"i": scan_id}).one()
    assert tuple(got) == (len(expected.verdicts), sum(1 for v in expected.verdicts if v.admission), 1,
                          sum(1 for v in expected.verdicts if v.checked_at))
    upgrade(db_url)
    with open_store(db_url) as store:
        assert store.load_scan(scan_id) == expected
        assert store.verified_before("bench", [v.image.reference.digest for v in expected.verdicts
                                               if v.image.reference and v.status.value == "verified"],
                                     T0 + timedelta(days=1))


def test_prune_keeps_what_a_watch_batch_written_meanwhile_names(db_url: str, monkeypatch) -> None:
    """The evidence prune and a `serve --watch` batch written while it marks (see the unit test), on the
    real database: the blobs the batch names survive."""
    from tests.unit.store.test_evidence import prune_during_a_watch_batch

    prune_during_a_watch_batch(db_url, monkeypatch)


def test_evidence_written_while_prunes_run_is_whole_afterwards(db_url: str) -> None:
    """`serve --watch` batches (each naming a new blob and re-putting one that lost its name) written while
    evidence prunes run in another connection: every name still reaches all its blobs afterwards."""
    import gzip
    import hashlib
    import json

    from scanner.models import ScanState
    from scanner.store.evidence import evidence_prune

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    upgrade(db_url)
    writer, pruner = open_store(db_url), open_store(db_url)
    try:
        scan_id = writer.begin_scan("c", T0, "sha256:p", "1")
        writer.finish_scan(scan_id, ScanResult(cluster="c", started_at=T0, finished_at=T0 + timedelta(seconds=5),
                                               state=ScanState.COMPLETE, verdicts=(), policy_digest="sha256:p"))
        errors: list[BaseException] = []
        done = threading.Event()

        def prune() -> None:
            try:
                while not done.is_set():
                    evidence_prune(pruner._db, 50)
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=prune)
        thread.start()
        batches = {}
        try:
            for n in range(40):
                orphan = f"unnamed until batch {n}".encode()
                writer.evidence_put({sha(orphan): orphan}, {})  # a blob nothing names: prune may take it
                answer = f"answer {n}".encode()
                doc = json.dumps({"answers": [{"sha256": sha(answer)}, {"sha256": sha(orphan)}]}).encode()
                index = gzip.compress(json.dumps({"images": [{"material": sha(doc)}], "n": n}).encode(), mtime=0)
                blobs = {sha(b): b for b in (answer, orphan, doc, index)}
                writer.evidence_put(blobs, {f"scan/{scan_id}/watch/{n}": sha(index)})
                batches[n] = set(blobs)
        finally:
            done.set()
            thread.join(timeout=120)
        assert not errors, errors
        evidence_prune(pruner._db, 50)
        for n, shas in batches.items():
            assert set(writer.evidence_blobs(shas)) == shas, f"batch {n} lost blobs"
    finally:
        writer.close()
        pruner.close()
