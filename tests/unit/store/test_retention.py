"""Retention's room checks (scanner/store/retention.py), on real SQLite files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scanner.errors import StoreFull
from scanner.store import open_store, upgrade

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RESERVE = 2**20


@pytest.mark.parametrize("spelling", ["sqlite:///{path}", "sqlite:///file:{path}?uri=true"])
def test_a_declared_capacity_is_measured_whatever_the_sqlite_url_spelling(tmp_path: Path, spelling: str) -> None:
    # A `file:` URI names no path sigaudit stats: its size read as 0 and a scan began in a database
    # past its --db-capacity (the volume check is SQLite's own and stays for plain paths).
    url = spelling.format(path=tmp_path / "s.db")
    upgrade(url)
    with open_store(url) as s:
        size = s.disk_usage().database_bytes
    assert size > 0
    with open_store(url, capacity_bytes=size + RESERVE - 1, reserve_bytes=RESERVE) as full:
        assert full.disk_usage().database_bytes == size
        with pytest.raises(StoreFull, match="--db-capacity"):
            full.begin_scan("prod", T0, "sha256:" + "0" * 64, "test")
        assert full.list_scans("prod") == []
    with open_store(url, capacity_bytes=size + 10 * RESERVE, reserve_bytes=RESERVE) as roomy:
        roomy.begin_scan("prod", T0, "sha256:" + "0" * 64, "test")
