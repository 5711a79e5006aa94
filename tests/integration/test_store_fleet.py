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
