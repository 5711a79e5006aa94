"""Alembic driven programmatically: the migrations ship inside the wheel, no alembic.ini needed.

Reading the schema revision (every scan does) needs no alembic import: the current revision is read
from ``alembic_version`` and the head from the version files; alembic itself is imported only to
migrate or check (its import costs about 0.2 s of a scan's start-up)."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from alembic.config import Config

from scanner.errors import StoreError
from scanner.store.engine import describe_db_error, display_url, is_sqlite, make_engine, write_options

log = logging.getLogger(__name__)

# Key of the PostgreSQL advisory lock that serialises concurrent upgrades.
MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(b"sigaudit:migrations").digest()[:8], "big", signed=True)


def script_location() -> Path:
    from scanner import migrations

    return Path(migrations.__file__).resolve().parent


def alembic_config(connection: sa.Connection | None = None, *, quiet: bool = True) -> Config:
    from alembic.config import Config

    cfg = Config(stdout=io.StringIO()) if quiet else Config()
    cfg.set_main_option("script_location", str(script_location()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_REVISION = re.compile(r'^revision(?:: str)? = "([^"]+)"', re.M)
_DOWN = re.compile(r'^down_revision(?:: [^=]+)? = "([^"]+)"', re.M)


def head_revision() -> str:
    """The newest migration shipped with this sigaudit (the one no other migration revises)."""
    revisions, downs = set(), set()
    for f in (script_location() / "versions").glob("*.py"):
        text = f.read_text(encoding="utf-8")
        revisions.update(_REVISION.findall(text))
        downs.update(_DOWN.findall(text))
    heads = revisions - downs
    if len(heads) != 1:
        raise StoreError(f"the shipped migrations have {len(heads)} heads: {sorted(heads)}")
    return str(heads.pop())


def alembic_head_revision() -> str:
    """The head as alembic computes it (tests check it equals :func:`head_revision`)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _set_foreign_keys(conn: sa.Connection, *, on: bool) -> None:
    """SQLite: turn foreign key enforcement on or off for this connection (outside any transaction: an open
    one is committed first, since any statement through SQLAlchemy begins one), and check it took."""
    if conn.in_transaction():
        conn.commit()
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")
    if bool(raw.execute("PRAGMA foreign_keys").fetchone()[0]) != on:
        raise StoreError("cannot switch SQLite foreign keys for the migration (a transaction is open)")


@contextmanager
def _migration_connection(url: str) -> Iterator[sa.Connection]:
    """One connection, in one transaction, holding the migration lock."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if is_sqlite(conn):
                # Batch migrations copy tables; with foreign keys on, dropping the old table would
                # cascade (DELETE FROM images empties containers and signatures). The pragma only
                # changes outside a transaction, so it goes to the driver's connection directly: through
                # SQLAlchemy the engine's begin hook has already sent BEGIN and the pragma is a no-op.
                _set_foreign_keys(conn, on=False)
                conn = conn.execution_options(**write_options())  # BEGIN IMMEDIATE: one upgrader
            with conn.begin():
                if not is_sqlite(conn):
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
                yield conn
                if is_sqlite(conn):
                    # What the foreign keys would have refused, a migration must not leave behind.
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise StoreError(f"the migration would leave rows that refer to nothing ({broken[:3]}); "
                                         "nothing was changed")
            if is_sqlite(conn):
                _set_foreign_keys(conn, on=True)
    except StoreError:
        raise
    except SQLAlchemyError as exc:
        raise describe_db_error("cannot migrate", url, exc) from None
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Running it twice, or twice at once, is harmless."""
    with _migration_connection(url) as conn:
        from alembic import command

        command.upgrade(alembic_config(conn), revision)
    enable_incremental_vacuum(url)


def enable_incremental_vacuum(url: str) -> bool:
    """SQLite: turn on ``auto_vacuum=incremental`` in a file created without it (before sigaudit set
    it at creation), so that space freed by ``db prune`` can return to the volume. Changing it needs
    one VACUUM, which rewrites the file and needs as much free space again: when that fails (a full
    disk) the file keeps working as before and the next `sigaudit db upgrade` tries again. Returns whether
    incremental vacuum is on. PostgreSQL: autovacuum does this job; nothing to do."""
    engine = make_engine(url)
    try:
        if not is_sqlite(engine):
            return False
        raw = engine.raw_connection()  # pysqlite in autocommit (engine._sqlite_connect): VACUUM runs outside
        try:                            # a transaction, as it must
            cur = raw.cursor()
            if int(cur.execute("PRAGMA auto_vacuum").fetchone()[0] or 0) == 2:
                return True
            try:
                cur.execute("PRAGMA auto_vacuum = INCREMENTAL")
                cur.execute("VACUUM")
            except sqlite3.Error as exc:
                log.warning("cannot turn on incremental auto-vacuum in %s (space freed by `sigaudit db prune` "
                            "stays inside the file until it can): %s", display_url(url),
                            describe_db_error("VACUUM", url, exc).diagnostics())
                return False
            return int(cur.execute("PRAGMA auto_vacuum").fetchone()[0] or 0) == 2
        finally:
            raw.close()
    except SQLAlchemyError as exc:
        raise describe_db_error("cannot vacuum", url, exc) from None
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> None:
    with _migration_connection(url) as conn:
        from alembic import command

        command.downgrade(alembic_config(conn), revision)


def check(url: str) -> None:
    """Raise ``alembic.util.AutogenerateDiffsDetected`` if the models and the schema differ."""
    with _migration_connection(url) as conn:
        from alembic import command

        command.check(alembic_config(conn))


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _current(conn)
    except SQLAlchemyError as exc:
        raise describe_db_error("cannot read the schema version of", url, exc) from None
    finally:
        engine.dispose()


def _current(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise StoreError(f"the database records several schema revisions: {sorted(rows)}")
    return str(rows[0]) if rows else None


def check_schema_on(conn: sa.Connection, url: str) -> None:
    current = _current(conn)
    head = head_revision()
    if current != head:
        raise StoreError(
            f"database schema of {display_url(url)} is at {current or 'nothing (empty database)'}, "
            f"this sigaudit needs {head}: run `sigaudit db upgrade`"
        )
