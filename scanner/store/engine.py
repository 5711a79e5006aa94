"""Database URLs and engines: SQLite by default, PostgreSQL (psycopg 3) by URL."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from scanner.errors import ConfigError, StoreError, StoreFull
from scanner.redact import redact_text

SQLITE_BUSY_TIMEOUT_MS = 30_000
_IMMEDIATE = "sigaudit_sqlite_immediate"


def data_dir() -> Path:
    """``$SIGAUDIT_DATA_DIR``, else ``$XDG_DATA_HOME/sigaudit``, else ``~/.local/share/sigaudit``."""
    explicit = os.environ.get("SIGAUDIT_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "sigaudit"


def default_db_url() -> str:
    """``$SIGAUDIT_DB`` if set, else a SQLite file in the data directory (created if missing)."""
    explicit = os.environ.get("SIGAUDIT_DB")
    if explicit:
        return explicit
    directory = data_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the data directory {directory}: {exc.strerror or exc}") from exc
    return f"sqlite:///{directory / 'sigaudit.db'}"


def mask_password(text: str) -> str:
    """Replace any ``user:password@`` inside ``text`` with ``user:***@`` (up to the authority's last
    ``@``: an unencoded ``@`` in the password is masked too) and credential-like query values
    (``?password=…``, which libpq accepts) with ``***``."""
    return redact_text(text)


SUPPORTED_DATABASES = "sqlite (sqlite:///path) or postgresql (postgresql://user@host/db)"


def parse_url(url: str) -> URL:
    """Parse and normalise a database URL; plain ``postgresql://`` means psycopg 3.

    A URL sigaudit cannot use (malformed, another database, another SQLite driver) is the user's
    input to fix: :class:`ConfigError` (exit 2), naming the supported schemes, password masked."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # Unparsed text has no known userinfo to mask: show only what precedes the first ':'.
        scheme = url.split(":", 1)[0].strip()[:40]
        shown = f"{scheme!r}" + ("..." if ":" in url else "") if scheme else "an empty or scheme-less string"
        raise ConfigError(f"not a database URL (starting {shown}): use {SUPPORTED_DATABASES}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("psycopg", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ConfigError(f"unsupported SQLite driver {parsed.drivername!r}: use {SUPPORTED_DATABASES} "
                              f"- got {display_url(parsed)}")
    else:
        raise ConfigError(f"unsupported database {backend!r}: use {SUPPORTED_DATABASES} "
                          f"- got {display_url(parsed)}")
    return parsed


def display_url(url: str | URL) -> str:
    """The URL with its password hidden (in the userinfo or as a ``password=`` query parameter), for
    messages and logs."""
    if isinstance(url, URL):
        return redact_text(url.render_as_string(hide_password=True))
    try:
        return redact_text(make_url(url).render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        return mask_password(url)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from pysqlite so BEGIN is ours (IMMEDIATE for writes).
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        # Before WAL and before the first table: a new file is created with incremental auto-vacuum,
        # so the pages `sigaudit db prune` frees can be given back to the volume (PRAGMA
        # incremental_vacuum). A no-op on an existing file (migrate.upgrade converts those).
        cur.execute("PRAGMA auto_vacuum = INCREMENTAL")
        # Switching a fresh file to WAL needs an exclusive lock and SQLite answers "database is
        # locked" at once, without waiting on busy_timeout, when another connection is switching it
        # too (two first scans or upgrades at the same moment): check first, then retry briefly.
        if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            for attempt in range(50):
                try:
                    cur.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 49:
                        raise
                    time.sleep(0.1)
        cur.execute("PRAGMA synchronous = NORMAL")
    finally:
        cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Writers take the write lock when they begin, so two writers queue on busy_timeout instead of
    # one failing with "database is locked" when it upgrades a read lock (WAL snapshot too old).
    if conn.get_execution_options().get(_IMMEDIATE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def make_engine(url: str | URL, *, pool_size: int = 5) -> sa.Engine:
    """An engine with sane pool settings for the backend."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = Path(database).expanduser().parent
            if not parent.is_dir():
                raise StoreError(f"cannot open {display_url(parsed)}: directory {parent} does not exist")
        engine = sa.create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return sa.create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=2,
            pool_pre_ping=True,
            pool_recycle=1800,
            pool_timeout=30,
            connect_args={"connect_timeout": 10, "application_name": "sigaudit"},
        )
    except ImportError as exc:  # the dialect imports its driver here: a missing extra, not a failed scan
        package = "sigaudit[postgres]" if parsed.get_driver_name() == "psycopg" else parsed.get_driver_name()
        raise ConfigError(
            f"{display_url(parsed)}: the database driver is not installed ({exc}): install {package}"
        ) from None


def write_options() -> dict[str, Any]:
    """Execution options for a connection that will write (BEGIN IMMEDIATE on SQLite)."""
    return {_IMMEDIATE: True}


def is_sqlite(engine: sa.Engine | sa.Connection) -> bool:
    return engine.dialect.name == "sqlite"


def _query_password(url: URL) -> str | None:
    """A password given as a query parameter (``?password=…``; libpq reads it like the userinfo's)."""
    for key, value in url.query.items():
        if key.lower() in ("password", "sslpassword"):
            return value if isinstance(value, str) else (value[0] if value else None)
    return None


PRUNE_HINT = ("the disk holding the database is full: delete old scans with `sigaudit db prune --keep 30d` "
              "(it needs little room) or give the volume more space")


def is_disk_full(exc: BaseException) -> bool:
    """Whether a database error says the disk (or the file's size limit) is full: SQLite's
    SQLITE_FULL, PostgreSQL's ``disk_full`` (SQLSTATE 53100) or an ENOSPC it passed on."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) == "53100" or getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    text = str(orig).lower()
    return "database or disk is full" in text or "no space left on device" in text


def describe_db_error(action: str, url: str | URL, exc: BaseException) -> StoreError:
    """A StoreError for a database failure, never showing the password."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    detail = " ".join(line.strip() for line in text.splitlines()[:2]) if text else type(orig).__name__
    detail = mask_password(detail)
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
        password = parsed.password or _query_password(parsed)
    except (ArgumentError, ValueError):
        password = None
    if password and str(password) in detail:
        # A short password would turn every occurrence of its letters into stars and make the message
        # unreadable; then the driver's detail is dropped rather than risk showing the password.
        detail = detail.replace(str(password), "***") if len(str(password)) >= 4 else type(orig).__name__
    if is_disk_full(exc):
        return StoreFull(f"{action} {display_url(url)}: {detail}; {PRUNE_HINT}")
    return StoreError(f"{action} {display_url(url)}: {detail}")
