"""The store at fleet scale (issue 20 item 3; figures in bench/fleet.py): listing the clusters costs an
index probe per cluster, not a read of every scan row (73,000 a year at 50 clusters)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from scanner.store import open_store, upgrade
from tests.integration.test_store_scans import T0, record, sample_result

pytestmark = pytest.mark.integration

NAMES = ["prod", "prod-eu", "prod_eu", "Prod", "staging", "zz", "a", "prod-eu-1", "ümlaut", "ä"]


def test_clusters_lists_every_cluster_once_in_order(db_url: str) -> None:
    upgrade(db_url)
    with open_store(db_url) as s:
        assert s.clusters() == []
        for i, name in enumerate(NAMES):
            record(s, sample_result(name, T0.replace(hour=i % 24)))
        record(s, sample_result("prod", T0.replace(hour=23)))
        with s.engine.connect() as conn:
            expected = list(conn.execute(sa.text("SELECT DISTINCT cluster FROM scans ORDER BY cluster")).scalars())
        assert s.clusters() == expected and sorted(set(expected)) == sorted(set(NAMES))


def test_listing_the_clusters_reads_no_more_scan_rows_than_there_are_clusters(postgres_url: str) -> None:
    upgrade(postgres_url)
    with open_store(postgres_url) as s:
        for name in ("a", "b", "c"):
            record(s, sample_result(name))
        with s.engine.begin() as conn:  # a year of 6-hourly scans of three clusters (rows only)
            conn.execute(sa.text(
                "INSERT INTO scans (cluster, state, started_at, finished_at, heartbeat_at, policy_digest, "
                "sigaudit_version, owner_host, owner_pid, errors, counts, total, compliant) "
                "SELECT c, 'complete', now() - make_interval(hours => 6 * g), now(), now(), 'p', 'v', 'h', 1, "
                "'[]', '{}', 0, 0 FROM generate_series(1, 1460) g, (VALUES ('a'), ('b'), ('c')) v(c)"))
            conn.execute(sa.text("ANALYZE scans"))
        statements: list[str] = []

        def seen(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
            statements.append(statement)

        sa.event.listen(s.engine, "before_cursor_execute", seen)
        assert s.clusters() == ["a", "b", "c"]
        sa.event.remove(s.engine, "before_cursor_execute", seen)
        [query] = statements
        with s.engine.connect() as conn:
            plan = "\n".join(conn.execute(sa.text("EXPLAIN (ANALYZE, FORMAT TEXT) " + query)).scalars())
        assert "Seq Scan on scans" not in plan, plan


def _statements(engine: sa.Engine, fn) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def note(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        fn()
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    return seen


def test_a_warm_scrape_of_many_clusters_makes_the_statements_a_scrape_of_one_does(db_url: str) -> None:
    """Issue 20: a scrape of every cluster made three queries per cluster (0.47 s at 50 clusters on
    PostgreSQL). The heads of all clusters are read in a fixed number of statements, and a cluster
    whose head did not move is neither loaded nor computed again."""
    from scanner.metrics.collector import SigauditCollector, StoreSource

    upgrade(db_url)
    with open_store(db_url) as s:
        record(s, sample_result("c00", T0))
        one = SigauditCollector(StoreSource(s))
        list(one.collect())
        few = _statements(s.engine, lambda: list(one.collect()))
        for i in range(1, 12):
            record(s, sample_result(f"c{i:02d}", T0.replace(hour=i)))
        many = SigauditCollector(StoreSource(s))
        list(many.collect())
        warm = _statements(s.engine, lambda: list(many.collect()))
        assert len(warm) == len(few) <= 3, warm
        samples = [x for f in many.collect() if f.name == "sigaudit_last_success_timestamp_seconds"
                   for x in f.samples]
        assert sorted(x.labels["cluster"] for x in samples) == [f"c{i:02d}" for i in range(12)]


def test_heads_name_each_clusters_latest_complete_and_last_finished_scan(db_url: str) -> None:
    """The heads agree with the per-cluster queries they replace, a newer failed or partial scan
    included (the verdict series stay the complete scan's; the state series say what came last)."""
    from scanner.models import ScanState

    upgrade(db_url)
    with open_store(db_url) as s:
        done = record(s, sample_result("a", T0))
        partial = record(s, sample_result("a", T0.replace(hour=13), state=ScanState.PARTIAL))
        failed = s.begin_scan("a", T0.replace(hour=14), "p", "v")
        s.fail_scan(failed, ["registry down"])
        s.begin_scan("a", T0.replace(hour=15), "p", "v")  # running: neither complete nor finished
        only = record(s, sample_result("b", T0))
        s.begin_scan("c", T0, "p", "v")  # never finished
        heads = {h.cluster: h for h in s.heads()}
        assert list(heads) == ["a", "b", "c"] and s.heads("a") == [heads["a"]]
        assert heads["a"].latest_complete == done == s.latest_scan_id("a")
        assert heads["a"].last_finished_state is ScanState.FAILED
        assert heads["a"].last_finished_at == s.scan_summary(failed).finished_at
        assert heads["b"].latest_complete == only and heads["b"].last_finished_state is ScanState.COMPLETE
        assert (heads["c"].latest_complete, heads["c"].latest_revision, heads["c"].last_finished_state) == (
            None, None, None)
        assert s.heads("nobody") == [type(heads["a"])("nobody", None, None, None, None)]
        assert partial != done


def test_a_stats_change_after_the_scan_reaches_the_next_scrape(db_url: str) -> None:
    """A finished scan is written again only through its stats (the watch verdicts' count, the
    notification outcome ``scan --notify`` records after the scan): the head's revision carries them,
    so a cached cluster's series never go stale. (The metrics cache was keyed on the watch count
    alone: a notification failure recorded after a scrape never reached /metrics.)"""
    from scanner.metrics.collector import SigauditCollector, StoreSource

    upgrade(db_url)
    with open_store(db_url) as s:
        scan_id = record(s, sample_result("prod", T0))
        collector = SigauditCollector(StoreSource(s, "prod"))
        assert "sigaudit_notifications_failed" not in {f.name for f in collector.collect()}
        s.add_scan_stats(scan_id, "notifications_failed", {"slack": 1})
        fams = {f.name: f for f in collector.collect()}
        assert [(x.labels, x.value) for x in fams["sigaudit_notifications_failed"].samples] == [
            ({"cluster": "prod", "receiver": "slack"}, 1.0)]
