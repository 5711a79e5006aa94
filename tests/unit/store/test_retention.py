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


@pytest.mark.parametrize("spelling", ["sqlite:///{path}", "sqlite:///file:{path}?uri=true",
                                      "sqlite:///file://localhost{path}?uri=true"])
def test_a_full_volume_refuses_a_scan_whatever_the_sqlite_url_spelling(tmp_path: Path, spelling: str) -> None:
    # The volume check stats the file's directory: a `file:` URI named no file, so a scan began on a
    # volume with less than the reserve left (here every volume has: the reserve is 4 EiB).
    url = spelling.format(path=tmp_path / "s.db")
    upgrade(url)
    with open_store(url, reserve_bytes=2**62) as s:
        usage = s.disk_usage()
        assert usage.free_bytes is not None and usage.database_bytes > 0
        with pytest.raises(StoreFull, match="volume"):
            s.begin_scan("prod", T0, "sha256:" + "0" * 64, "test")
        assert s.list_scans("prod") == []


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")  # mode=memory's pool class
def test_an_in_memory_database_names_no_file() -> None:
    for url in ("sqlite://", "sqlite:///file:mem1?mode=memory&cache=shared&uri=true"):
        with open_store(url) as s:
            usage = s.disk_usage()
            assert (usage.free_bytes, usage.volume_bytes) == (None, None)
