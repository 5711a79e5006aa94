"""Retention (``sigaudit db prune``, ``--retention``): scans' detail deleted in bounded batches while
their trend summaries stay, unused cache entries dropped, space given back (SQLite incremental vacuum),
and the room left on a SQLite volume checked before a scan begins."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from scanner.errors import StoreFull
from scanner.models import ScanState
from scanner.store.cache import CACHE_KEEP
from scanner.store.core import Db, lock_content
from scanner.store.core import cache as _cache
from scanner.store.core import checks as _checks
from scanner.store.core import containers as _containers
from scanner.store.core import groups as _groups
from scanner.store.core import images as _images
from scanner.store.core import members as _members
from scanner.store.core import relists as _relists
from scanner.store.core import scans as _scans
from scanner.store.core import signatures as _signatures
from scanner.store.core import summaries as _summaries
from scanner.store.core import verdict_sets as _sets
from scanner.store.engine import PRUNE_HINT, describe_db_error, is_sqlite

# Rows deleted per transaction by prune: a year of detail is never one transaction, and each step fits
# in the space a full disk still has (SQLite reuses its WAL file; PostgreSQL its free space map).
PRUNE_BATCH = 2000
# SQLite: a scan is not begun when less than this is left on the volume. A SQLite file whose volume
# fills up completely cannot even delete (in WAL mode a delete needs room in the WAL, and the WAL's
# committed pages need room in the file): stopping short keeps `db prune` able to run.
RESERVE_BYTES = 32 * 2**20

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :meth:`Store.prune` deleted."""

    scans: int = 0  # scans whose detail was deleted (their summaries stay)
    rows: int = 0  # detail rows deleted (images, containers, signatures, checks, scans)
    cache_entries: int = 0
    summaries: int = 0
    file_bytes_before: int | None = None  # SQLite: the database file (and its WAL), else None
    file_bytes_after: int | None = None


# A database past this share of its declared capacity (``--db-capacity``) is nearly full.
CAPACITY_WARN = 0.8


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """The database's size, for a SQLite file the room left on its volume, and the capacity the operator
    declared (``--db-capacity``: PostgreSQL does not tell a client how full the server's disk is)."""

    database_bytes: int
    free_bytes: int | None  # None: not known (PostgreSQL: the server's disk is not visible)
    volume_bytes: int | None
    capacity_bytes: int | None = None  # declared; None: not declared

    @property
    def nearly_full(self) -> bool:
        """Less than 10% or 64 MiB of the volume left, or the database past 80% of its declared capacity:
        the next scans may not fit."""
        if self.capacity_bytes is not None and self.database_bytes >= self.capacity_bytes * CAPACITY_WARN:
            return True
        if self.free_bytes is None or self.volume_bytes is None:
            return False
        return self.free_bytes < max(64 * 2**20, self.volume_bytes // 10)

    def describe(self) -> str:
        """How full it is, for a warning."""
        parts = []
        if self.capacity_bytes is not None:
            parts.append(f"{self.database_bytes / 2**20:,.0f} MiB of the {self.capacity_bytes / 2**20:,.0f} MiB "
                         f"declared with --db-capacity ({self.database_bytes / self.capacity_bytes:.0%})")
        if self.free_bytes is not None and self.volume_bytes is not None:
            parts.append(f"{self.free_bytes / 2**20:,.0f} MiB free of {self.volume_bytes / 2**20:,.0f} MiB on its "
                         "volume")
        return "; ".join(parts)


class Retention:
    """Pruning and the room on the volume."""

    def __init__(self, db: Db, *, reserve_bytes: int, capacity_bytes: int | None = None) -> None:
        if capacity_bytes is not None and capacity_bytes <= 0:
            raise ValueError("the declared capacity must be positive")
        self._db = db
        self._reserve = reserve_bytes
        self._capacity = capacity_bytes

    def delete_scans_before(self, before: datetime, cluster: str | None = None) -> int:
        """Retention: delete finished and failed scans started before ``before``; the newest
        complete scan of each cluster is always kept. Returns how many scans were deleted."""
        return self.prune(before=before, cluster=cluster, prune_cache=False).scans

    def prune(self, *, before: datetime | None = None, keep_scans: int | None = None, cluster: str | None = None,
              prune_cache: bool = True, summaries_before: datetime | None = None,
              batch: int = PRUNE_BATCH) -> PruneResult:
        """Retention (``sigaudit db prune``): delete every scan that no ``keep`` keeps, then the
        content only deleted scans named (verdict sets, verdicts with their signatures and checks,
        container groups: shared by scans with the same content, see :mod:`scanner.store.schema`),
        and return the space.

        A scan is kept when it is running, the newest complete scan of its cluster, started at or
        after ``before``, or one of the ``keep_scans`` newest scans of its cluster; with neither
        ``before`` nor ``keep_scans`` nothing is deleted. The scan's summary (:meth:`history`) stays
        (until ``summaries_before``). A scan row goes in a transaction of its own (it never reads as
        whole without its verdicts); its content is collected in transactions of at most ``batch``
        rows (:meth:`_collect`), so none needs much room: it works on a full disk.
        The verification cache loses entries no scan has used for ``CACHE_KEEP`` (or
        since ``before``, if later). SQLite then gives the freed pages back to the volume."""
        if batch < 1:
            raise ValueError("batch must be positive")
        if keep_scans is not None and keep_scans < 0:
            raise ValueError("keep_scans must not be negative")
        size_before = self._db.file_bytes()
        with self._db.errors("cannot prune the database"):
            limited = before is not None or keep_scans is not None
            doomed = self._prune_candidates(before, keep_scans, cluster) if limited else []
            rows = 0
            for scan_id in doomed:
                rows += self._prune_scan(scan_id, batch)
            if limited:
                rows += self._collect(batch)
            cache = 0
            if prune_cache:
                cutoff = self._db.clock() - CACHE_KEEP
                if before is not None and before > cutoff:
                    cutoff = before
                cache = self._delete_batched(_cache, [_cache.c.used_at < cutoff],
                                             [_cache.c.digest, _cache.c.trust_fingerprint], batch)
                self._delete_batched(_relists, [_relists.c.checked_at < cutoff],
                                     [_relists.c.digest, _relists.c.scope], batch)
            if doomed or prune_cache:  # evidence of deleted scans and of forgotten cache entries (issue #23)
                from scanner.store.evidence import evidence_prune

                evidence_prune(self._db, batch)
            summaries = 0
            if summaries_before is not None:
                # Only of scans whose detail is gone: a kept scan keeps its point on the trend.
                cond = [_summaries.c.started_at < summaries_before,
                        ~sa.exists().where(_scans.c.id == _summaries.c.scan_id)]
                if cluster is not None:
                    cond.append(_summaries.c.cluster == cluster)
                summaries = self._delete_batched(_summaries, cond, [_summaries.c.scan_id], batch)
            touched = [_scans, _sets, _members, _images, _signatures, _checks, _groups, _containers] if rows else []
            touched += [_cache] if cache else []
            touched += [_summaries] if summaries else []
            self._return_space(touched)
        return PruneResult(scans=len(doomed), rows=rows, cache_entries=cache, summaries=summaries,
                           file_bytes_before=size_before, file_bytes_after=self._db.file_bytes())

    def _prune_candidates(self, before: datetime | None, keep_scans: int | None, cluster: str | None) -> list[int]:
        query = sa.select(_scans.c.id, _scans.c.cluster, _scans.c.state, _scans.c.started_at).where(
            _scans.c.state != ScanState.RUNNING.value)
        if cluster is not None:
            query = query.where(_scans.c.cluster == cluster)
        by_cluster: dict[str, list[Any]] = {}
        with self._db.read() as conn:
            for row in conn.execute(query):
                by_cluster.setdefault(row.cluster, []).append(row)
            # SQLite gives a new row max(id) + 1: deleting the newest row would hand its id, which its
            # summary keeps, to the next scan. The highest id always stays.
            top = conn.execute(sa.select(sa.func.max(_scans.c.id))).scalar()
        doomed: list[int] = []
        for rows in by_cluster.values():
            rows.sort(key=lambda r: (r.started_at, r.id), reverse=True)  # newest first
            newest_complete = next((r.id for r in rows if r.state == ScanState.COMPLETE.value), None)
            for rank, row in enumerate(rows):
                if row.id in (newest_complete, top):
                    continue
                if keep_scans is not None and rank < keep_scans:
                    continue
                if before is not None and row.started_at >= before:
                    continue
                doomed.append(int(row.id))
        return sorted(doomed)

    def _prune_scan(self, scan_id: int, batch: int) -> int:
        """Delete one scan's row (its detail is shared content, collected by :meth:`_collect`).
        Returns the rows deleted."""
        with self._db.write() as conn:
            return int(conn.execute(_scans.delete().where(
                _scans.c.id == scan_id, _scans.c.state != ScanState.RUNNING.value)).rowcount)

    def _collect(self, batch: int) -> int:
        """Delete the verdict sets no scan names, then the verdicts and container groups no set names.
        Returns the rows deleted.

        Each transaction takes the content lock that a scan's write takes too, finds unnamed rows and
        deletes them *with* their children (members, signatures and checks, containers): a collection
        stopped half-way never leaves a half-deleted set, verdict or group for a later scan to reuse,
        and it needs no room to mark one (on a full PostgreSQL disk an UPDATE that marks a row needs a
        new row version, so it fails where a DELETE does not). A transaction deletes parents while
        their children add up to at most ``batch`` rows (one parent at least: a transaction is bounded
        by the largest verdict set or container group, a cluster's size, never by the history), in
        statements of at most ``batch`` rows."""
        deleted = 0
        unnamed_sets = ~sa.exists().where(_scans.c.verdict_set_id == _sets.c.id)
        deleted += self._delete_unnamed(_sets, unnamed_sets,
                                        [(_members, _members.c.set_id, [_members.c.set_id, _members.c.position])],
                                        batch)
        unnamed_images = ~sa.exists().where(_members.c.image_id == _images.c.id)
        deleted += self._delete_unnamed(_images, unnamed_images, [], batch, signatures=True)
        unnamed_groups = ~sa.exists().where(_members.c.group_id == _groups.c.id)
        deleted += self._delete_unnamed(_groups, unnamed_groups,
                                        [(_containers, _containers.c.group_id, [_containers.c.id])], batch)
        return deleted

    def _delete_unnamed(self, table: sa.Table, unnamed: Any,
                        children: list[tuple[sa.Table, Any, list[sa.Column[Any]]]],
                        batch: int, *, signatures: bool = False) -> int:
        deleted = 0
        while True:
            with self._db.write() as conn:
                lock_content(conn)
                ids = list(conn.execute(sa.select(table.c.id).where(unnamed).order_by(table.c.id)
                                        .limit(batch)).scalars())
                if not ids:
                    return deleted
                if signatures:  # a signature and its checks: ~4 rows
                    weights = {k: 4 * int(n) for k, n in conn.execute(
                        sa.select(_signatures.c.image_row_id, sa.func.count())
                        .where(_signatures.c.image_row_id.in_(ids)).group_by(_signatures.c.image_row_id))}
                else:
                    child, fk, _ = children[0]
                    weights = {k: int(n) for k, n in conn.execute(
                        sa.select(fk, sa.func.count()).select_from(child).where(fk.in_(ids)).group_by(fk))}
                chosen: list[int] = []
                total = 0
                for i in ids:
                    total += 1 + weights.get(i, 0)
                    if chosen and total > batch:
                        break
                    chosen.append(i)
                for child, fk, key in children:
                    deleted += self._delete_chunks(conn, child, [fk.in_(chosen)], key, batch)
                if signatures:
                    while True:
                        sig_ids = list(conn.execute(
                            sa.select(_signatures.c.id).where(_signatures.c.image_row_id.in_(chosen))
                            .limit(max(1, batch // 4))).scalars())
                        if not sig_ids:
                            break
                        deleted += int(conn.execute(
                            _checks.delete().where(_checks.c.signature_id.in_(sig_ids))).rowcount)
                        deleted += int(conn.execute(
                            _signatures.delete().where(_signatures.c.id.in_(sig_ids))).rowcount)
                deleted += int(conn.execute(table.delete().where(table.c.id.in_(chosen))).rowcount)
            self._db.checkpoint("PASSIVE")

    @staticmethod
    def _delete_chunks(conn: sa.Connection, table: sa.Table, cond: list[Any], key: list[sa.Column[Any]],
                       batch: int) -> int:
        """Delete the rows of ``table`` matching ``cond`` in statements of at most ``batch`` rows, in
        ``conn``'s transaction."""
        deleted = 0
        while True:
            keys = conn.execute(sa.select(*key).where(*cond).limit(batch)).all()
            if not keys:
                return deleted
            if len(key) == 1:
                stmt = table.delete().where(key[0].in_([k[0] for k in keys]))
            else:
                stmt = table.delete().where(sa.tuple_(*key).in_([tuple(k) for k in keys]))
            deleted += int(conn.execute(stmt).rowcount)

    def _delete_batched(self, table: sa.Table, cond: list[Any], key: list[sa.Column[Any]], batch: int) -> int:
        """Delete the rows of ``table`` matching ``cond``, ``batch`` rows per transaction."""
        deleted = 0
        while True:
            with self._db.write() as conn:
                keys = conn.execute(sa.select(*key).where(*cond).limit(batch)).all()
                if not keys:
                    return deleted
                if len(key) == 1:
                    stmt = table.delete().where(key[0].in_([k[0] for k in keys]))
                else:
                    stmt = table.delete().where(sa.tuple_(*key).in_([tuple(k) for k in keys]))
                deleted += int(conn.execute(stmt).rowcount)
            # SQLite: the WAL starts over after each batch instead of growing to 1,000 pages, which a
            # nearly full volume may not have.
            self._db.checkpoint("PASSIVE")

    def _vacuum_postgresql(self, tables: Sequence[sa.Table]) -> None:
        """VACUUM each table (outside a transaction): the space of its deleted rows becomes reusable.
        It needs no new room once the table's free-space and visibility maps exist (autovacuum
        creates them early in a table's life); where it fails the rows are gone all the same, and
        autovacuum makes their space reusable later."""
        failed: list[str] = []
        last: SQLAlchemyError | None = None
        with self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in tables:
                try:
                    conn.execute(sa.text(f'VACUUM "{table.name}"'))
                except SQLAlchemyError as exc:
                    failed.append(table.name)
                    last = exc
        if last is not None:
            log.warning("the rows are deleted, but VACUUM of %s failed (autovacuum will make their space "
                        "reusable later): %s", ", ".join(failed),
                        describe_db_error("vacuum", self._db.url, last).diagnostics())

    def _return_space(self, tables: Sequence[sa.Table] = (), step_pages: int = 2048) -> None:
        """SQLite: give free pages back to the volume (a few MiB per step, each step checkpointed, so
        the WAL never needs much room), then truncate the WAL. PostgreSQL: VACUUM the tables rows
        were deleted from, so the next scan can reuse their space at once (autovacuum would, later:
        on a full disk every scan until then fails); the files keep their size."""
        if not is_sqlite(self._db.engine):
            if tables:
                self._vacuum_postgresql(tables)
            return
        raw = self._db.engine.raw_connection()  # autocommit (engine._sqlite_connect): pragmas outside a transaction
        try:
            self._vacuum_steps(raw.cursor(), step_pages)
        except sqlite3.Error as exc:  # the rows are gone; the file shrinks at the next prune
            log.warning("cannot give the freed space back to the volume yet: %s",
                        describe_db_error("vacuum", self._db.url, exc).diagnostics())
        finally:
            raw.close()

    @staticmethod
    def _vacuum_steps(cur: Any, step_pages: int) -> None:
        def freelist() -> int:
            return int(cur.execute("PRAGMA freelist_count").fetchone()[0] or 0)

        if int(cur.execute("PRAGMA auto_vacuum").fetchone()[0] or 0) == 2:
            left = freelist()
            while left > 0:
                cur.execute(f"PRAGMA incremental_vacuum({int(step_pages)})").fetchall()
                cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                left, before = freelist(), left
                if left >= before:
                    break
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def check_room(self) -> None:
        """Raise StoreFull when the volume of a SQLite file has less than the reserve left, or the
        database has less than the reserve left of its declared capacity (any backend)."""
        if self._db.sqlite_path() is None and self._capacity is None:
            return
        usage = self.disk_usage()
        if usage.capacity_bytes is not None and usage.capacity_bytes - usage.database_bytes < self._reserve:
            raise StoreFull(
                f"cannot start a scan: {self._db.shown} holds {usage.database_bytes / 2**20:,.1f} MiB of the "
                f"{usage.capacity_bytes / 2**20:,.0f} MiB declared with --db-capacity (sigaudit stops "
                f"{self._reserve / 2**20:.0f} MiB short of it so that a scan's write never meets a full disk); "
                "delete old scans with `sigaudit db prune --keep 30d` (it needs little room), or declare the "
                "capacity the database's volume really has")
        if usage.free_bytes is not None and usage.free_bytes < self._reserve:
            raise StoreFull(
                f"cannot start a scan: only {usage.free_bytes / 2**20:.1f} MiB is left on the volume holding "
                f"{self._db.shown} (sigaudit stops at {self._reserve / 2**20:.0f} MiB so that it can still delete); "
                f"{PRUNE_HINT}")

    def disk_usage(self) -> DiskUsage:
        """The database's size and (SQLite) the room left on the volume holding it."""
        path = self._db.sqlite_path()
        if path is not None:
            size = self._db.file_bytes() or 0
            try:
                st = os.statvfs(os.path.dirname(path))
            except OSError:
                return DiskUsage(size, None, None, self._capacity)
            return DiskUsage(size, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, self._capacity)
        if is_sqlite(self._db.engine):
            # A ``file:`` URI or ``:memory:``: no file to stat, but its pages are counted (a declared
            # capacity is measured on every backend: a size that read as 0 let a scan into a full database).
            with self._db.errors("cannot read the database size"), self._db.read() as conn:
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            return DiskUsage(int(pages) * int(page), None, None, self._capacity)
        with self._db.errors("cannot read the database size"), self._db.read() as conn:
            size = conn.execute(sa.select(sa.func.pg_database_size(sa.func.current_database()))).scalar_one()
        return DiskUsage(int(size), None, None, self._capacity)
