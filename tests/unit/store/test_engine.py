"""A full disk is named as such, with the command that makes room, on both backends (issue 20)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from scanner.errors import StoreError, StoreFull
from scanner.store.engine import describe_db_error, is_disk_full

URL = "postgresql+psycopg://sigaudit:s3cret-pw@db:5432/sigaudit"


class _PgError(Exception):
    def __init__(self, text: str, sqlstate: str | None) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


def _sqlite_full() -> sqlite3.Error:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (x)")
    con.execute("PRAGMA max_page_count = 2")
    try:
        con.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 10)
    except sqlite3.Error as exc:
        return exc
    finally:
        con.close()
    raise AssertionError("SQLite took more pages than it may")


@pytest.mark.parametrize("orig", [
    _PgError('could not extend file "base/16384/16402": wrote only 4096 of 8192 bytes', "53100"),
    _PgError("could not write to file: No space left on device", None),
    _sqlite_full(),
], ids=["pg-53100", "enospc", "sqlite-full"])
def test_a_full_disk_is_a_storefull_naming_db_prune(orig: Exception) -> None:
    exc = OperationalError("INSERT ...", {}, orig)
    assert is_disk_full(exc)
    err = describe_db_error("cannot record scan 7:", URL, exc)
    assert isinstance(err, StoreFull)
    assert "`sigaudit db prune --keep" in str(err) and "s3cret-pw" not in str(err)


def test_other_errors_are_not_called_a_full_disk() -> None:
    exc = OperationalError("INSERT ...", {}, _PgError("deadlock detected", "40P01"))
    err = describe_db_error("cannot record scan 7:", URL, exc)
    assert type(err) is StoreError and "prune" not in str(err)
