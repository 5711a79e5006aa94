"""The store's plumbing, shared by its parts (scans, results, queries, cache, retention, notified): the engine,
the clock, one write or read transaction, database errors as StoreErrors, and the tables."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from scanner.clock import Clock
from scanner.errors import StoreError
from scanner.models import ScanState
from scanner.store import schema as _schema
from scanner.store.engine import describe_db_error, display_url, is_sqlite, write_options

MAX_ID = 2**31 - 1  # sa.Integer: INTEGER on both backends
FINISHED = (ScanState.COMPLETE.value, ScanState.PARTIAL.value)
_CHUNK = 500

scans = _schema.scans
images = _schema.images
containers = _schema.containers
signatures = _schema.signatures
checks = _schema.signature_checks
cache = _schema.verification_cache
relists = _schema.signature_relists
summaries = _schema.scan_summaries
notified = _schema.notification_state
verdict_sets = _schema.verdict_sets
members = _schema.verdict_set_members
groups = _schema.container_groups

# PostgreSQL: the transaction-level advisory lock that serialises whoever adds or removes shared
# content (a scan's write, retention's collection), so that a verdict a scan is about to name is never
# collected under it and two clusters never insert the same new verdict at once. SQLite writers are
# serialised by BEGIN IMMEDIATE already.
CONTENT_LOCK_KEY = int.from_bytes(b"sigaudit:content"[:8], "big", signed=True)


def lock_content(conn: sa.Connection) -> None:
    """Take :data:`CONTENT_LOCK_KEY` until the end of ``conn``'s transaction (PostgreSQL)."""
    if not is_sqlite(conn):
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CONTENT_LOCK_KEY)))

log = logging.getLogger(__name__)
T = TypeVar("T")


def dialect_insert(sqlite: bool) -> Callable[..., Any]:
    """The dialect's ``INSERT … ON CONFLICT`` construct, imported on use: a SQLite scan never loads
    SQLAlchemy's PostgreSQL dialect (a tenth of a second of start-up)."""
    if sqlite:
        from sqlalchemy.dialects import sqlite as dialect
    else:
        from sqlalchemy.dialects import postgresql as dialect  # type: ignore[no-redef]
    return cast(Callable[..., Any], dialect.insert)


def chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Db:
    """One database: its engine, URL and clock, with the transaction helpers every part uses."""

    def __init__(self, engine: sa.Engine, url: URL, clock: Clock) -> None:
        self.engine = engine
        self.url = url
        self.clock = clock
        self._uri_file: tuple[str | None] | None = None  # the file a ``file:`` URI opened, once read

    @property
    def shown(self) -> str:
        """The database URL with the password hidden."""
        return display_url(self.url)

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise describe_db_error(f"{action}:", self.url, exc) from None
        except Exception as exc:
            # The driver's own errors (COPY runs on the raw psycopg connection).
            dbapi = getattr(self.engine.dialect, "loaded_dbapi", None)
            if dbapi is not None and isinstance(exc, dbapi.Error):
                raise describe_db_error(f"{action}:", self.url, exc) from None
            raise

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.connect() as conn:
            if is_sqlite(conn):
                conn.execution_options(**write_options())
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def known_id(self, scan_id: int) -> int:
        """``scan_id`` if it can name a row (the ids are 32-bit INTEGERs); else there is no such scan.
        A number from a URL or a flag (``/reports/99999999999999999999.json``) is never handed to the
        driver, which would raise OverflowError (SQLite) or DataError (PostgreSQL) instead."""
        if isinstance(scan_id, bool) or not isinstance(scan_id, int) or not 0 < scan_id <= MAX_ID:
            raise StoreError(f"there is no scan {scan_id} in {self.shown}")
        return scan_id

    def checkpoint(self, mode: str = "TRUNCATE") -> None:
        """SQLite: copy the WAL into the database file and empty it, best effort.

        A scan's rows would otherwise stay in the WAL until it holds 1,000 pages, and on a full disk
        they cannot be checkpointed (the file must grow) nor deleted (the WAL must grow): nothing could
        make room. With the WAL emptied after each scan, the next write that fills the disk leaves a
        WAL of garbage frames that prune's small transactions overwrite from its start."""
        if not is_sqlite(self.engine):
            return
        try:
            raw = self.engine.raw_connection()
            try:
                raw.cursor().execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            finally:
                raw.close()
        except (sqlite3.Error, SQLAlchemyError) as exc:
            log.warning("cannot checkpoint %s: %s", self.shown, exc)

    def file_bytes(self) -> int | None:
        path = self.sqlite_path()
        if path is None:
            return None
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    def sqlite_path(self) -> str | None:
        if not is_sqlite(self.engine):
            return None
        database = self.url.database or ""
        if not database or database == ":memory:":
            return None
        if database.startswith("file:"):
            return self._uri_path()
        return os.path.abspath(os.path.expanduser(database))

    def _uri_path(self) -> str | None:
        """The file a ``file:`` URI opened, as SQLite names it (``PRAGMA database_list``; empty for an
        in-memory database): its volume and size are checked as a plain path's are (they were not, and
        a scan began on a full volume)."""
        if self._uri_file is None:
            with self.errors("cannot read the database file's name"), self.read() as conn:
                rows = conn.exec_driver_sql("PRAGMA database_list").all()
            found = next((str(r[2]) for r in rows if r[1] == "main" and r[2]), None)
            self._uri_file = (os.path.abspath(found) if found else None,)
        return self._uri_file[0]
