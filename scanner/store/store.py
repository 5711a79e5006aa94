"""Repository functions over the store. Takes and returns the frozen models of ``scanner.models``.

A scan is recorded in two steps: :meth:`Store.begin_scan` inserts a ``running`` row (and, on
PostgreSQL, takes an advisory lock per cluster for the life of the scan); :meth:`Store.finish_scan`
writes every verdict, container, signature and check and marks the scan finished in ONE transaction.
A crash or a lost connection in between leaves the row ``running``; the next scan of that cluster
marks it ``failed`` ("abandoned (process died)"). Readers that ask for the latest complete scan never
see a half-written one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from scanner.clock import Clock, system_clock
from scanner.errors import ScanInProgress, StoreError, StoreFull
from scanner.models import (
    Check,
    CheckName,
    ContainerRef,
    ContainerType,
    ImageReference,
    Outcome,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureFailure,
    SignatureResult,
    Status,
    UnresolvedImage,
    Verdict,
    Workload,
)
from scanner.redact import redact_text, representable
from scanner.store import codec
from scanner.store.engine import (
    PRUNE_HINT,
    describe_db_error,
    display_url,
    is_sqlite,
    make_engine,
    parse_url,
    write_options,
)
from scanner.store.migrate import check_schema_on
from scanner.store.schema import (
    Container,
    Image,
    NotificationState,
    Scan,
    ScanSummaryRow,
    Signature,
    SignatureCheck,
    UTCDateTime,
    VerificationCache,
)

DEFAULT_STALE_AFTER = timedelta(minutes=10)
MAX_ID = 2**31 - 1  # sa.Integer: INTEGER on both backends
ABANDONED = "abandoned (process died)"
_FINISHED = (ScanState.COMPLETE.value, ScanState.PARTIAL.value)
_CHUNK = 500
# Rows deleted per transaction by prune: a year of detail is never one transaction, and each step fits
# in the space a full disk still has (SQLite reuses its WAL file; PostgreSQL its free space map).
PRUNE_BATCH = 2000
# The verification cache records a use at most this often per entry: a warm scan rewrites no row.
CACHE_TOUCH_GRANULARITY = timedelta(hours=1)
# Cache entries unused for this long (no scan of any cluster saw their digest running) are pruned, or
# sooner with a shorter --keep.
CACHE_KEEP = timedelta(days=30)
# SQLite: a scan is not begun when less than this is left on the volume. A SQLite file whose volume
# fills up completely cannot even delete (in WAL mode a delete needs room in the WAL, and the WAL's
# committed pages need room in the file): stopping short keeps `db prune` able to run.
RESERVE_BYTES = 32 * 2**20
RETENTION_NOTE = "detail deleted by retention (sigaudit db prune); its summary is kept for the trend"

_scans = cast(sa.Table, Scan.__table__)
_images = cast(sa.Table, Image.__table__)
_containers = cast(sa.Table, Container.__table__)
_signatures = cast(sa.Table, Signature.__table__)
_checks = cast(sa.Table, SignatureCheck.__table__)
_cache = cast(sa.Table, VerificationCache.__table__)
_summaries = cast(sa.Table, ScanSummaryRow.__table__)
_notified = cast(sa.Table, NotificationState.__table__)

log = logging.getLogger(__name__)
T = TypeVar("T")
_UTC = UTCDateTime()


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """One scan without its verdicts: for listings, trends and metrics."""

    id: int
    cluster: str
    state: ScanState
    started_at: datetime
    finished_at: datetime | None
    counts: Mapping[str, int]  # every Status value -> number of images
    compliant: int
    total: int
    policy_digest: str
    version: str
    errors: tuple[str, ...] = ()
    heartbeat_at: datetime | None = None

    @property
    def noncompliant(self) -> int:
        return self.total - self.compliant


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :meth:`Store.prune` deleted."""

    scans: int = 0  # scans whose detail was deleted (their summaries stay)
    rows: int = 0  # detail rows deleted (images, containers, signatures, checks, scans)
    cache_entries: int = 0
    summaries: int = 0
    file_bytes_before: int | None = None  # SQLite: the database file (and its WAL), else None
    file_bytes_after: int | None = None


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """The database's size and, for a SQLite file, the room left on its volume."""

    database_bytes: int
    free_bytes: int | None  # None: not known (PostgreSQL: the server's disk is not visible)
    volume_bytes: int | None

    @property
    def nearly_full(self) -> bool:
        """Less than 10% or 64 MiB of the volume left: the next scans may not fit."""
        if self.free_bytes is None or self.volume_bytes is None:
            return False
        return self.free_bytes < max(64 * 2**20, self.volume_bytes // 10)


@dataclass(frozen=True, slots=True)
class Notified:
    """One row of the notification dedup state (see :class:`scanner.store.schema.NotificationState`)."""

    key: str
    fingerprint: str
    kind: str
    state: str  # "pending" | "sent"
    namespaces: tuple[str, ...]
    scan_id: int
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class CachedVerification:
    """Signature results for one digest under one decision identity (what the verifier declares
    its results depend on: ``Verifier.decision_identity``), kept across scans."""

    digest: str
    decision_identity: str
    material_fingerprint: str
    signatures: tuple[SignatureResult, ...]
    computed_at: datetime
    used_at: datetime | None = field(default=None, compare=False)


def _lock_key(namespace: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"sigaudit:{namespace}:{name}".encode()).digest()[:8], "big",
                          signed=True)


def _dialect_insert(sqlite: bool) -> Callable[..., Any]:
    """The dialect's ``INSERT … ON CONFLICT`` construct, imported on use: a SQLite scan never loads
    SQLAlchemy's PostgreSQL dialect (a tenth of a second of start-up)."""
    if sqlite:
        from sqlalchemy.dialects import sqlite as dialect
    else:
        from sqlalchemy.dialects import postgresql as dialect  # type: ignore[no-redef]
    return cast(Callable[..., Any], dialect.insert)


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` of this host is alive and a sigaudit: True when its command line names
    sigaudit or its ``scanner`` package (or /proc cannot be read), False when it is gone or a zombie (a
    crashed scan its parent never reaped), None when the pid is alive but another program's (reused
    since, or sigaudit embedded in one): then only the heartbeat can tell."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().lower()
    except OSError:
        return True
    if state and state[0] in (b"Z", b"X"):
        return False
    return True if b"sigaudit" in cmdline or b"scanner" in cmdline else None


class Store:
    """The database of scans. Create with :func:`open_store`; close with :meth:`close`."""

    def __init__(self, engine: sa.Engine, url: URL, *, clock: Clock = system_clock,
                 stale_after: timedelta = DEFAULT_STALE_AFTER, reserve_bytes: int = RESERVE_BYTES) -> None:
        self._reserve = reserve_bytes
        self._engine = engine
        self._url = url
        self._clock = clock
        self._stale_after = stale_after
        self._scan_locks: dict[int, sa.Connection] = {}
        self._host = socket.gethostname()[:253]
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for the metrics collector's read-only queries and for tests)."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return display_url(self._url)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        with self._lock:
            locks, self._scan_locks = self._scan_locks, {}
        for conn in locks.values():
            self._drop_lock_connection(conn)
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise describe_db_error(f"{action}:", self._url, exc) from None
        except Exception as exc:
            # The driver's own errors (COPY runs on the raw psycopg connection).
            dbapi = getattr(self._engine.dialect, "loaded_dbapi", None)
            if dbapi is not None and isinstance(exc, dbapi.Error):
                raise describe_db_error(f"{action}:", self._url, exc) from None
            raise

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self._engine.connect() as conn:
            if is_sqlite(conn):
                conn.execution_options(**write_options())
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._engine.connect() as conn:
            yield conn

    def _known_id(self, scan_id: int) -> int:
        """``scan_id`` if it can name a row (the ids are 32-bit INTEGERs); else there is no such scan.
        A number from a URL or a flag (``/reports/99999999999999999999.json``) is never handed to the
        driver, which would raise OverflowError (SQLite) or DataError (PostgreSQL) instead."""
        if isinstance(scan_id, bool) or not isinstance(scan_id, int) or not 0 < scan_id <= MAX_ID:
            raise StoreError(f"there is no scan {scan_id} in {self.url}")
        return scan_id

    def check_schema(self) -> None:
        """Raise StoreError unless the schema is at the head revision of this sigaudit."""
        with self._errors("cannot read the schema version"), self._read() as conn:
            check_schema_on(conn, display_url(self._url))

    # -- scan lifecycle ---------------------------------------------------------------------------

    def begin_scan(self, cluster: str, started_at: datetime, policy_digest: str, version: str) -> int:
        """Record a running scan; refuse if another live scan of ``cluster`` is running."""
        if not cluster:
            raise ValueError("cluster name must not be empty")
        self._check_room()
        lock_conn: sa.Connection | None = None
        with self._errors(f"cannot start a scan of cluster {cluster!r}"):
            if not is_sqlite(self._engine):
                lock_conn = self._take_cluster_lock(cluster)
            try:
                scan_id = self._insert_running(cluster, started_at, policy_digest, version,
                                               lock_held=lock_conn is not None)
            except BaseException:
                if lock_conn is not None:
                    self._drop_lock_connection(lock_conn)
                raise
        if lock_conn is not None:
            with self._lock:
                self._scan_locks[scan_id] = lock_conn
        return scan_id

    def _take_cluster_lock(self, cluster: str, wait: float = 2.0) -> sa.Connection:
        """Take the cluster's session-level advisory lock on a dedicated connection.

        Retries for ``wait`` seconds: a process that just died may still have a backend winding down.
        """
        key = _lock_key("scan", cluster)
        deadline = time.monotonic() + wait
        while True:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar()
            except BaseException:
                self._drop_lock_connection(conn, unlock=False)
                raise
            if got:
                return conn
            conn.close()
            if time.monotonic() >= deadline:
                raise ScanInProgress(
                    f"another sigaudit process is scanning cluster {cluster!r} (it holds the scan lock "
                    f"in {display_url(self._url)}); wait for it to finish"
                )
            time.sleep(0.1)

    @staticmethod
    def _drop_lock_connection(conn: sa.Connection, unlock: bool = True) -> None:
        # Unlock explicitly (closing alone releases the lock only once the server notices), then
        # close the physical connection so that a failed unlock cannot leak a lock into the pool.
        if unlock:
            try:
                conn.execute(sa.select(sa.func.pg_advisory_unlock_all()))
            except SQLAlchemyError:
                pass
        try:
            conn.invalidate()
        except SQLAlchemyError:
            pass
        try:
            conn.close()
        except SQLAlchemyError:
            pass

    def _release_scan_lock(self, scan_id: int) -> None:
        with self._lock:
            conn = self._scan_locks.pop(scan_id, None)
        if conn is not None:
            self._drop_lock_connection(conn)

    def _owner_alive(self, row: Any, now: datetime, lock_held: bool) -> bool:
        if lock_held:
            # We hold the cluster's advisory lock: whoever wrote this row no longer has its session.
            return False
        if row.owner_host == self._host and row.owner_pid and row.owner_pid != os.getpid():
            # A sigaudit process of this host owns the scan while it lives, however old its last
            # heartbeat (a long scan on a busy machine, a heartbeat delayed by a locked database).
            alive = _pid_alive(row.owner_pid)
            if alive is not None:
                return alive
        # Another host, this very process (whose earlier scan record it no longer runs) or a pid now
        # another program's: only the heartbeat can tell.
        return bool(now - row.heartbeat_at < self._stale_after)

    def _insert_running(self, cluster: str, started_at: datetime, policy_digest: str, version: str,
                        *, lock_held: bool) -> int:
        now = self._clock()
        with self._write() as conn:
            running = conn.execute(
                sa.select(_scans.c.id, _scans.c.started_at, _scans.c.heartbeat_at, _scans.c.owner_host,
                          _scans.c.owner_pid, _scans.c.errors)
                .where(_scans.c.cluster == cluster, _scans.c.state == ScanState.RUNNING.value)
                .order_by(_scans.c.id)
            ).all()
            for row in running:
                if self._owner_alive(row, now, lock_held):
                    raise ScanInProgress(
                        f"scan {row.id} of cluster {cluster!r} is running (started "
                        f"{row.started_at.isoformat()}, pid {row.owner_pid} on {row.owner_host or '?'}, "
                        f"last heartbeat {row.heartbeat_at.isoformat()}); wait for it to finish"
                    )
                conn.execute(
                    _scans.update()
                    .where(_scans.c.id == row.id, _scans.c.state == ScanState.RUNNING.value)
                    .values(state=ScanState.FAILED.value, finished_at=now,
                            errors=[*(row.errors or []), ABANDONED])
                )
            return int(conn.execute(
                _scans.insert().returning(_scans.c.id).values(
                    cluster=cluster, state=ScanState.RUNNING.value, started_at=started_at,
                    finished_at=None, heartbeat_at=now, policy_digest=policy_digest,
                    sigaudit_version=version, owner_host=self._host, owner_pid=os.getpid(),
                    errors=[], counts={}, total=0, compliant=0,
                )
            ).scalar_one())

    def heartbeat(self, scan_id: int) -> None:
        """Tell other processes this scan is alive. Raises StoreError if it is no longer running."""
        if not self._beat(scan_id):
            raise StoreError(f"scan {scan_id} is no longer running (another process marked it abandoned?)")

    def _beat(self, scan_id: int) -> bool:
        """Refresh the heartbeat; False when the scan is no longer running. Raises StoreError when the
        database cannot be written (busy, unreachable)."""
        with self._errors(f"cannot record the heartbeat of scan {scan_id}"), self._write() as conn:
            return bool(conn.execute(
                _scans.update()
                .where(_scans.c.id == scan_id, _scans.c.state == ScanState.RUNNING.value)
                .values(heartbeat_at=self._clock())
            ).rowcount)

    @contextmanager
    def keepalive(self, scan_id: int, interval: float = 60.0) -> Iterator[None]:
        """Send heartbeats from a background thread while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    if not self._beat(scan_id):
                        return  # finished, or failed: nothing left to keep alive
                except StoreError as exc:
                    # A busy or briefly unreachable database: one missed beat, not the last one (a
                    # scan whose beats stopped for good would be taken over by the next one).
                    log.warning("scan %d: %s; trying again in %.0f s", scan_id, exc.diagnostics(), interval)
                except Exception:
                    log.exception("scan %d: heartbeat failed; trying again", scan_id)

        thread = threading.Thread(target=beat, name=f"sigaudit-heartbeat-{scan_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def finish_scan(self, scan_id: int, result: ScanResult, policy_summary: Mapping[str, Any] | None = None) -> None:
        """Write every verdict and mark the scan finished, all in one transaction."""
        if result.state == ScanState.RUNNING:
            raise ValueError("finish_scan needs a finished state (complete, partial or failed)")
        try:
            with self._errors(f"cannot record scan {scan_id}"), self._write() as conn:
                self._write_scan(conn, scan_id, result, policy_summary)
        finally:
            self._release_scan_lock(scan_id)
        self._checkpoint()

    def _checkpoint(self, mode: str = "TRUNCATE") -> None:
        """SQLite: copy the WAL into the database file and empty it, best effort.

        A scan's rows would otherwise stay in the WAL until it holds 1,000 pages, and on a full disk
        they cannot be checkpointed (the file must grow) nor deleted (the WAL must grow): nothing could
        make room. With the WAL emptied after each scan, the next write that fills the disk leaves a
        WAL of garbage frames that prune's small transactions overwrite from its start."""
        if not is_sqlite(self._engine):
            return
        try:
            raw = self._engine.raw_connection()
            try:
                raw.cursor().execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            finally:
                raw.close()
        except (sqlite3.Error, SQLAlchemyError) as exc:
            log.warning("cannot checkpoint %s: %s", self.url, exc)

    def _write_scan(self, conn: sa.Connection, scan_id: int, result: ScanResult,
                    policy_summary: Mapping[str, Any] | None = None) -> None:
        query = sa.select(_scans.c.state, _scans.c.cluster, _scans.c.sigaudit_version).where(_scans.c.id == scan_id)
        if not is_sqlite(conn):
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise StoreError(f"cannot record scan {scan_id}: there is no such scan")
        if row.state != ScanState.RUNNING.value:
            raise StoreError(f"cannot record scan {scan_id}: it is {row.state}, not running "
                             "(another process marked it abandoned)")
        if row.cluster != result.cluster:
            raise StoreError(f"cannot record scan {scan_id}: it belongs to cluster {row.cluster!r}, "
                             f"the result to {result.cluster!r}")

        # Ids are allocated up front so that children can point at their parents without a RETURNING
        # round trip per batch; the rows then go in by COPY (PostgreSQL) or executemany (SQLite).
        image_rows = [_image_row(scan_id, pos, v) for pos, v in enumerate(result.verdicts)]
        image_ids = _allocate_ids(conn, _images, len(image_rows))
        container_rows: list[dict[str, Any]] = []
        sig_rows: list[dict[str, Any]] = []
        sig_checks: list[tuple[Check, ...]] = []
        for image_id, image_row, verdict in zip(image_ids, image_rows, result.verdicts, strict=True):
            image_row["id"] = image_id
            for pos, c in enumerate(verdict.image.containers):
                container_rows.append(_container_row(scan_id, image_id, pos, c))
            for pos, sr in enumerate(verdict.signatures):
                sig_rows.append(_signature_row(scan_id, image_id, pos, sr))
                sig_checks.append(sr.checks)
        sig_ids = _allocate_ids(conn, _signatures, len(sig_rows))
        check_rows: list[dict[str, Any]] = []
        for sig_id, sig_row, checks in zip(sig_ids, sig_rows, sig_checks, strict=True):
            sig_row["id"] = sig_id
            check_rows.extend(
                {"signature_id": sig_id, "position": pos, "name": str(c.name), "outcome": str(c.outcome),
                 "reason": c.reason, "enforced": c.enforced}
                for pos, c in enumerate(checks)
            )
        _bulk_insert(conn, _images, image_rows)
        _bulk_insert(conn, _containers, container_rows)
        _bulk_insert(conn, _signatures, sig_rows)
        _bulk_insert(conn, _checks, check_rows)

        counts = Counter(str(v.status) for v in result.verdicts)
        total, compliant = len(result.verdicts), sum(1 for v in result.verdicts if v.compliant)
        if result.state.value in _FINISHED:
            summary = {
                "cluster": result.cluster, "state": result.state.value, "started_at": result.started_at,
                "finished_at": result.finished_at, "policy_digest": storable_text(result.policy_digest, 200),
                "sigaudit_version": storable_text(result.sigaudit_version or row.sigaudit_version, 64),
                "total": total, "compliant": compliant, "counts": dict(sorted(counts.items())),
                "namespaces": _storable_json(_namespace_counts(result.verdicts)),
            }
            insert = _dialect_insert(is_sqlite(conn))
            # An upsert: a summary left by a scan whose id was reused must never refuse this scan.
            conn.execute(insert(_summaries).values(scan_id=scan_id, **summary)
                         .on_conflict_do_update(index_elements=[_summaries.c.scan_id], set_=summary))
        # The last statement of the transaction: only now does the scan read as finished.
        conn.execute(
            _scans.update().where(_scans.c.id == scan_id).values(
                state=result.state.value, started_at=result.started_at, finished_at=result.finished_at,
                heartbeat_at=self._clock(), policy_digest=result.policy_digest,
                sigaudit_version=result.sigaudit_version or sa.literal_column("sigaudit_version"),
                errors=list(result.errors), counts=dict(sorted(counts.items())),
                total=total, compliant=compliant,
                stats=json.loads(json.dumps(dict(result.stats), default=str)),
                policy_summary=json.loads(json.dumps(dict(policy_summary), default=str)) if policy_summary else None,
            )
        )

    def fail_scan(self, scan_id: int, errors: Sequence[str]) -> None:
        """Mark a running scan failed (no verdicts are written). A no-op if it is not running."""
        try:
            with self._errors(f"cannot mark scan {scan_id} failed"), self._write() as conn:
                conn.execute(
                    _scans.update()
                    .where(_scans.c.id == scan_id, _scans.c.state == ScanState.RUNNING.value)
                    .values(state=ScanState.FAILED.value, finished_at=self._clock(),
                            errors=[representable(redact_text(e)) for e in errors])
                )
        finally:
            self._release_scan_lock(scan_id)

    # -- reading ----------------------------------------------------------------------------------

    def load_scan(self, scan_id: int) -> ScanResult:
        """The scan as it was saved, as frozen models."""
        scan_id = self._known_id(scan_id)
        with self._errors(f"cannot read scan {scan_id}"), self._read() as conn:
            scan = conn.execute(sa.select(_scans).where(_scans.c.id == scan_id)).one_or_none()
            if scan is None:
                raise StoreError(f"there is no scan {scan_id} in {self.url}")
            images = conn.execute(
                sa.select(_images).where(_images.c.scan_id == scan_id).order_by(_images.c.position)
            ).all()
            containers: dict[int, list[ContainerRef]] = {}
            for c in conn.execute(
                sa.select(_containers).where(_containers.c.scan_id == scan_id)
                .order_by(_containers.c.image_row_id, _containers.c.position)
            ):
                containers.setdefault(c.image_row_id, []).append(_container_from_row(c))
            checks: dict[int, list[Check]] = {}
            for k in conn.execute(
                sa.select(_checks)
                .join(_signatures, _signatures.c.id == _checks.c.signature_id)
                .where(_signatures.c.scan_id == scan_id)
                .order_by(_checks.c.signature_id, _checks.c.position)
            ):
                checks.setdefault(k.signature_id, []).append(
                    Check(CheckName(k.name), Outcome(k.outcome), k.reason, bool(k.enforced)))
            signatures: dict[int, list[SignatureResult]] = {}
            for s in conn.execute(
                sa.select(_signatures).where(_signatures.c.scan_id == scan_id)
                .order_by(_signatures.c.image_row_id, _signatures.c.position)
            ):
                signatures.setdefault(s.image_row_id, []).append(
                    _signature_from_row(s, tuple(checks.get(s.id, ()))))

        verdicts = tuple(
            _verdict_from_row(i, tuple(containers.get(i.id, ())), tuple(signatures.get(i.id, ())))
            for i in images
        )
        return ScanResult(
            cluster=scan.cluster,
            started_at=scan.started_at,
            finished_at=scan.finished_at or scan.heartbeat_at,
            state=ScanState(scan.state),
            verdicts=verdicts,
            policy_digest=scan.policy_digest,
            errors=tuple(scan.errors or ()),
            scan_id=scan.id,
            sigaudit_version=scan.sigaudit_version,
            stats=dict(scan.stats or {}),
        )

    def policy_summary(self, scan_id: int) -> dict[str, Any] | None:
        """The policy a scan applied (rules, exemptions, revocations), as recorded by finish_scan."""
        scan_id = self._known_id(scan_id)
        with self._errors(f"cannot read scan {scan_id}"), self._read() as conn:
            value = conn.execute(sa.select(_scans.c.policy_summary).where(_scans.c.id == scan_id)).scalar()
        return dict(value) if value else None

    def scan_summary(self, scan_id: int) -> ScanSummary:
        scan_id = self._known_id(scan_id)
        with self._errors(f"cannot read scan {scan_id}"), self._read() as conn:
            row = conn.execute(sa.select(_scans).where(_scans.c.id == scan_id)).one_or_none()
        if row is None:
            raise StoreError(f"there is no scan {scan_id} in {self.url}")
        return _summary(row)

    def latest_scan_id(self, cluster: str | None = None, *, complete_only: bool = True,
                       include_partial: bool = False) -> int | None:
        """The newest scan (of ``cluster``, or of any cluster); by default the newest complete one."""
        query = sa.select(_scans.c.id)
        if cluster is not None:
            query = query.where(_scans.c.cluster == cluster)
        if complete_only:
            states = list(_FINISHED) if include_partial else [ScanState.COMPLETE.value]
            query = query.where(_scans.c.state.in_(states))
        query = query.order_by(_scans.c.started_at.desc(), _scans.c.id.desc()).limit(1)
        with self._errors("cannot read the scans"), self._read() as conn:
            return conn.execute(query).scalar_one_or_none()

    def previous_scan_id(self, scan_id: int) -> int | None:
        """The complete scan of the same cluster just before ``scan_id`` (for diffs)."""
        if not 0 < scan_id <= MAX_ID:
            return None
        with self._errors(f"cannot read scan {scan_id}"), self._read() as conn:
            row = conn.execute(
                sa.select(_scans.c.cluster, _scans.c.started_at).where(_scans.c.id == scan_id)
            ).one_or_none()
            if row is None:
                return None
            return conn.execute(
                sa.select(_scans.c.id)
                .where(
                    _scans.c.cluster == row.cluster,
                    _scans.c.state == ScanState.COMPLETE.value,
                    _scans.c.id != scan_id,
                    sa.or_(_scans.c.started_at < row.started_at,
                           sa.and_(_scans.c.started_at == row.started_at, _scans.c.id < scan_id)),
                )
                .order_by(_scans.c.started_at.desc(), _scans.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    def list_scans(self, cluster: str | None = None, limit: int = 50) -> list[ScanSummary]:
        """Scans of every state, newest first."""
        query = sa.select(_scans)
        if cluster is not None:
            query = query.where(_scans.c.cluster == cluster)
        query = query.order_by(_scans.c.started_at.desc(), _scans.c.id.desc()).limit(limit)
        with self._errors("cannot list the scans"), self._read() as conn:
            return [_summary(r) for r in conn.execute(query)]

    def history(self, cluster: str, limit: int = 100, *, since: datetime | None = None) -> list[ScanSummary]:
        """The last ``limit`` finished (complete or partial) scans of ``cluster`` (started at or after
        ``since``), oldest first, from the scan summaries: they outlive the detail that
        :meth:`prune` deletes, so a trend covers the scans whose verdicts are gone too."""
        query = sa.select(_summaries).where(_summaries.c.cluster == cluster)
        if since is not None:
            query = query.where(_summaries.c.started_at >= since)
        query = query.order_by(_summaries.c.started_at.desc(), _summaries.c.scan_id.desc()).limit(limit)
        with self._errors("cannot read the scan history"), self._read() as conn:
            rows = [_summary_of_summary_row(r) for r in conn.execute(query)]
        rows.reverse()
        return rows

    def clusters(self) -> list[str]:
        with self._errors("cannot list the clusters"), self._read() as conn:
            return list(conn.execute(
                sa.select(_scans.c.cluster).distinct().order_by(_scans.c.cluster)).scalars())

    def counts_by_namespace(self, scan_id: int) -> dict[tuple[str, str], int]:
        """(namespace, status) -> number of distinct images running in that namespace, for the
        metrics collector's low-cardinality series. An image running in two namespaces counts in both."""
        if not 0 < scan_id <= MAX_ID:
            return {}
        query = (
            sa.select(_containers.c.namespace, _images.c.status, sa.func.count(sa.distinct(_images.c.id)))
            .join(_images, _images.c.id == _containers.c.image_row_id)
            .where(_containers.c.scan_id == scan_id)
            .group_by(_containers.c.namespace, _images.c.status)
        )
        with self._errors(f"cannot read scan {scan_id}"), self._read() as conn:
            return {(ns, status): int(n) for ns, status, n in conn.execute(query)}

    def delete_scans_before(self, before: datetime, cluster: str | None = None) -> int:
        """Retention: delete finished and failed scans started before ``before``; the newest
        complete scan of each cluster is always kept. Returns how many scans were deleted."""
        return self.prune(before=before, cluster=cluster, prune_cache=False).scans

    def prune(self, *, before: datetime | None = None, keep_scans: int | None = None, cluster: str | None = None,
              prune_cache: bool = True, summaries_before: datetime | None = None,
              batch: int = PRUNE_BATCH) -> PruneResult:
        """Retention (``sigaudit db prune``): delete the detail (verdicts, containers, signatures,
        checks and the scan row) of every scan that no ``keep`` keeps, and return the space.

        A scan is kept when it is running, the newest complete scan of its cluster, started at or
        after ``before``, or one of the ``keep_scans`` newest scans of its cluster; with neither
        ``before`` nor ``keep_scans`` nothing is deleted. The scan's summary (:meth:`history`) stays
        (until ``summaries_before``). Each scan is first marked failed with :data:`RETENTION_NOTE`,
        then deleted in transactions of at most ``batch`` rows, so a prune stopped half-way never
        leaves a scan that reads as whole, and none of its transactions needs much room: it works on
        a full disk. The verification cache loses entries no scan has used for ``CACHE_KEEP`` (or
        since ``before``, if later). SQLite then gives the freed pages back to the volume."""
        if batch < 1:
            raise ValueError("batch must be positive")
        if keep_scans is not None and keep_scans < 0:
            raise ValueError("keep_scans must not be negative")
        size_before = self._file_bytes()
        with self._errors("cannot prune the database"):
            limited = before is not None or keep_scans is not None
            doomed = self._prune_candidates(before, keep_scans, cluster) if limited else []
            rows = 0
            for scan_id in doomed:
                rows += self._prune_scan(scan_id, batch)
            cache = 0
            if prune_cache:
                cutoff = self._clock() - CACHE_KEEP
                if before is not None and before > cutoff:
                    cutoff = before
                cache = self._delete_batched(_cache, [_cache.c.used_at < cutoff],
                                             [_cache.c.digest, _cache.c.trust_fingerprint], batch)
            summaries = 0
            if summaries_before is not None:
                # Only of scans whose detail is gone: a kept scan keeps its point on the trend.
                cond = [_summaries.c.started_at < summaries_before,
                        ~sa.exists().where(_scans.c.id == _summaries.c.scan_id)]
                if cluster is not None:
                    cond.append(_summaries.c.cluster == cluster)
                summaries = self._delete_batched(_summaries, cond, [_summaries.c.scan_id], batch)
            self._return_space()
        return PruneResult(scans=len(doomed), rows=rows, cache_entries=cache, summaries=summaries,
                           file_bytes_before=size_before, file_bytes_after=self._file_bytes())

    def _prune_candidates(self, before: datetime | None, keep_scans: int | None, cluster: str | None) -> list[int]:
        query = sa.select(_scans.c.id, _scans.c.cluster, _scans.c.state, _scans.c.started_at).where(
            _scans.c.state != ScanState.RUNNING.value)
        if cluster is not None:
            query = query.where(_scans.c.cluster == cluster)
        by_cluster: dict[str, list[Any]] = {}
        with self._read() as conn:
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
        """Delete one scan's detail, at most ``batch`` rows per transaction. Returns the rows deleted."""
        with self._write() as conn:
            row = conn.execute(sa.select(_scans.c.state, _scans.c.errors).where(_scans.c.id == scan_id)).one_or_none()
            if row is None or row.state == ScanState.RUNNING.value:
                return 0
            if RETENTION_NOTE not in (row.errors or []):
                # From now on it reads as what it is, a scan without its verdicts: never as a whole one.
                conn.execute(_scans.update().where(_scans.c.id == scan_id).values(
                    state=ScanState.FAILED.value, errors=[*(row.errors or []), RETENTION_NOTE]))
        deleted = 0
        while True:  # signatures and their checks
            with self._write() as conn:
                sig_ids = list(conn.execute(
                    sa.select(_signatures.c.id).where(_signatures.c.scan_id == scan_id)
                    .order_by(_signatures.c.id).limit(max(1, batch // 4))).scalars())
                if not sig_ids:
                    break
                deleted += int(conn.execute(_checks.delete().where(_checks.c.signature_id.in_(sig_ids))).rowcount)
                deleted += int(conn.execute(_signatures.delete().where(_signatures.c.id.in_(sig_ids))).rowcount)
            self._checkpoint("PASSIVE")
        deleted += self._delete_batched(_containers, [_containers.c.scan_id == scan_id], [_containers.c.id], batch)
        deleted += self._delete_batched(_images, [_images.c.scan_id == scan_id], [_images.c.id], batch)
        with self._write() as conn:
            deleted += int(conn.execute(_scans.delete().where(
                _scans.c.id == scan_id, _scans.c.state != ScanState.RUNNING.value)).rowcount)
        return deleted

    def _delete_batched(self, table: sa.Table, cond: list[Any], key: list[sa.Column[Any]], batch: int) -> int:
        """Delete the rows of ``table`` matching ``cond``, ``batch`` rows per transaction."""
        deleted = 0
        while True:
            with self._write() as conn:
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
            self._checkpoint("PASSIVE")

    def _file_bytes(self) -> int | None:
        path = self._sqlite_path()
        if path is None:
            return None
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    def _sqlite_path(self) -> str | None:
        if not is_sqlite(self._engine):
            return None
        database = self._url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return os.path.abspath(os.path.expanduser(database))

    def _return_space(self, step_pages: int = 2048) -> None:
        """SQLite: give free pages back to the volume (a few MiB per step, each step checkpointed, so
        the WAL never needs much room), then truncate the WAL. PostgreSQL: autovacuum reuses the
        space of deleted rows; nothing to do."""
        if not is_sqlite(self._engine):
            return
        raw = self._engine.raw_connection()  # autocommit (engine._sqlite_connect): pragmas outside a transaction
        try:
            self._vacuum_steps(raw.cursor(), step_pages)
        except sqlite3.Error as exc:  # the rows are gone; the file shrinks at the next prune
            log.warning("cannot give the freed space back to the volume yet: %s",
                        describe_db_error("vacuum", self._url, exc).diagnostics())
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

    def _check_room(self) -> None:
        """Raise StoreFull when the volume of a SQLite file has less than the reserve left."""
        if self._sqlite_path() is None:
            return
        usage = self.disk_usage()
        if usage.free_bytes is not None and usage.free_bytes < self._reserve:
            raise StoreFull(
                f"cannot start a scan: only {usage.free_bytes / 2**20:.1f} MiB is left on the volume holding "
                f"{self.url} (sigaudit stops at {self._reserve / 2**20:.0f} MiB so that it can still delete); "
                f"{PRUNE_HINT}")

    def disk_usage(self) -> DiskUsage:
        """The database's size and (SQLite) the room left on the volume holding it."""
        path = self._sqlite_path()
        if path is not None:
            size = self._file_bytes() or 0
            try:
                st = os.statvfs(os.path.dirname(path))
            except OSError:
                return DiskUsage(size, None, None)
            return DiskUsage(size, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
        if is_sqlite(self._engine):
            return DiskUsage(0, None, None)
        with self._errors("cannot read the database size"), self._read() as conn:
            size = conn.execute(sa.select(sa.func.pg_database_size(sa.func.current_database()))).scalar_one()
        return DiskUsage(int(size), None, None)

    # -- verification cache (issue 9) -------------------------------------------------------------

    def cache_get(self, digest: str, decision_identity: str) -> CachedVerification | None:
        return self.cache_get_many([(digest, decision_identity)]).get((digest, decision_identity))

    def cache_get_many(self, keys: Iterable[tuple[str, str]], *, touch: bool = True
                       ) -> dict[tuple[str, str], CachedVerification]:
        """Cached results for (digest, decision identity) pairs; misses are absent from the dict.
        ``touch`` records the use, so that :meth:`cache_prune` keeps what is still running."""
        wanted = set(keys)
        digests = sorted({d for d, _ in wanted})
        found: dict[tuple[str, str], CachedVerification] = {}
        with self._errors("cannot read the verification cache"):
            with self._read() as conn:
                for chunk in _chunks(digests):
                    for row in conn.execute(sa.select(_cache).where(_cache.c.digest.in_(chunk))):
                        key = (row.digest, row.trust_fingerprint)
                        if key in wanted:
                            found[key] = _cached_from_row(row)
            now = self._clock()
            # Only the entries read, and only when their last recorded use is older than the
            # granularity: a warm scan (same digests within the hour) writes nothing, and an entry of
            # an old decision identity is not kept alive by its digest's new one.
            stale = sorted(k for k, v in found.items()
                           if v.used_at is None or now - v.used_at >= CACHE_TOUCH_GRANULARITY)
            if touch and stale:
                with self._write() as conn:
                    conn.execute(
                        _cache.update()
                        .where(_cache.c.digest == sa.bindparam("d"), _cache.c.trust_fingerprint == sa.bindparam("t"))
                        .values(used_at=now),
                        [{"d": d, "t": t} for d, t in stale],
                    )
        return found

    def cache_put(self, digest: str, decision_identity: str, material_fingerprint: str,
                  signatures: Sequence[SignatureResult], computed_at: datetime | None = None) -> None:
        self.cache_put_many([CachedVerification(digest, decision_identity, material_fingerprint,
                                                tuple(signatures), computed_at or self._clock())])

    def cache_put_many(self, entries: Iterable[CachedVerification]) -> None:
        """Insert or replace cache entries, in one transaction."""
        now = self._clock()
        rows = {
            (e.digest, e.decision_identity): {
                "digest": e.digest, "trust_fingerprint": e.decision_identity,
                "material_fingerprint": e.material_fingerprint,
                "results": [codec.signature_to_json(s) for s in e.signatures],
                "computed_at": e.computed_at, "used_at": now,
            }
            for e in entries
        }
        if not rows:
            return
        insert = _dialect_insert(is_sqlite(self._engine))
        with self._errors("cannot write the verification cache"), self._write() as conn:
            for chunk in _chunks(list(rows.values())):
                stmt = insert(_cache)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[_cache.c.digest, _cache.c.trust_fingerprint],
                    set_={c: stmt.excluded[c] for c in
                          ("material_fingerprint", "results", "computed_at", "used_at")},
                )
                conn.execute(stmt, list(chunk))

    def cache_invalidate(self, digest: str | None = None) -> int:
        """Drop cache entries (of one digest, or all). Returns how many were dropped."""
        stmt = _cache.delete()
        if digest is not None:
            stmt = stmt.where(_cache.c.digest == digest)
        with self._errors("cannot clear the verification cache"), self._write() as conn:
            return int(conn.execute(stmt).rowcount)

    def cache_prune(self, unused_since: datetime) -> int:
        """Drop entries not used since ``unused_since``. Returns how many were dropped."""
        with self._errors("cannot prune the verification cache"), self._write() as conn:
            return int(conn.execute(_cache.delete().where(_cache.c.used_at < unused_since)).rowcount)


    # -- notification dedup state (issue 24) -------------------------------------------------------

    def notified(self, cluster: str, receiver: str) -> dict[str, Notified]:
        """What ``receiver`` was last told (or is still to be told) about ``cluster``'s violations."""
        with self._errors("cannot read the notification state"), self._read() as conn:
            rows = conn.execute(sa.select(_notified).where(_notified.c.cluster == cluster,
                                                           _notified.c.receiver == receiver))
            return {r.key: Notified(r.key, r.fingerprint, r.kind, r.state, tuple(r.namespaces or ()),
                                    r.scan_id, r.sent_at)
                    for r in rows}

    def record_notified(self, cluster: str, receiver: str, upsert: Sequence[Notified] = (),
                        delete: Sequence[str] = ()) -> None:
        """Replace the state rows ``upsert`` and drop the keys ``delete``, in one transaction."""
        with self._errors("cannot write the notification state"), self._write() as conn:
            keys = sorted({n.key for n in upsert} | set(delete))
            for chunk in _chunks(keys):
                conn.execute(_notified.delete().where(_notified.c.cluster == cluster,
                                                      _notified.c.receiver == receiver,
                                                      _notified.c.key.in_(chunk)))
            rows = [{"cluster": cluster, "receiver": receiver, "key": n.key, "fingerprint": n.fingerprint,
                     "kind": n.kind, "state": n.state, "namespaces": list(n.namespaces), "scan_id": n.scan_id,
                     "sent_at": n.sent_at} for n in upsert]
            for part in _chunks(rows):
                conn.execute(_notified.insert(), list(part))

    def add_scan_stats(self, scan_id: int, name: str, value: Any) -> None:
        """Add one counter group to a finished scan's stats (what happened after the verdicts were
        stored, e.g. notification deliveries), for the metrics collector."""
        scan_id = self._known_id(scan_id)
        with self._errors(f"cannot update scan {scan_id}"), self._write() as conn:
            stats = conn.execute(sa.select(_scans.c.stats).where(_scans.c.id == scan_id)).scalar_one_or_none()
            merged = {**(stats or {}), name: value}
            conn.execute(_scans.update().where(_scans.c.id == scan_id).values(stats=merged))


def _allocate_ids(conn: sa.Connection, table: sa.Table, n: int) -> list[int]:
    """``n`` fresh primary keys for ``table``, inside the caller's write transaction."""
    if n == 0:
        return []
    if is_sqlite(conn):
        # BEGIN IMMEDIATE holds the database's write lock: nobody else can take these ids.
        top = conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one()
        return list(range(int(top) + 1, int(top) + 1 + n))
    seq = sa.func.pg_get_serial_sequence(table.name, "id")
    return list(conn.execute(
        sa.select(sa.func.nextval(seq)).select_from(sa.func.generate_series(1, n))
    ).scalars())


def storable_text(value: str, limit: int | None = None) -> str:
    """``value`` as a text column can hold it on every backend: NUL and lone surrogates become U+FFFD,
    and text longer than the column's ``limit`` is cut, ending in "…".

    Pod fields (an image, an ownerReference's kind and name) are the cluster's tenants' to write: the
    API server takes NUL and any length there, and one such pod once made PostgreSQL refuse the whole
    scan, so that no scan of the cluster could ever be recorded. A verdict's facts are decided before
    the store; what it stores is their record, marked where it had to be changed."""
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "\u2026"
    return representable(value)


def _storable_json(value: Any) -> Any:
    """A JSON column's value with every string representable (a lone surrogate would make the reports
    and the API, which write UTF-8, fail on this scan for good)."""
    if isinstance(value, str):
        return representable(value)
    if isinstance(value, list | tuple):
        return [_storable_json(v) for v in value]
    if isinstance(value, dict):
        return {representable(k) if isinstance(k, str) else k: _storable_json(v) for k, v in value.items()}
    return value


def _storable_columns(table: sa.Table) -> dict[str, Callable[[Any], Any]]:
    """Column name -> what makes a value storable, for ``table``'s text and JSON columns."""
    out: dict[str, Callable[[Any], Any]] = {}
    for c in table.columns:
        if isinstance(c.type, sa.JSON):
            out[c.name] = _storable_json
        elif isinstance(c.type, sa.String):
            out[c.name] = functools.partial(_storable_value, limit=c.type.length)
    return out


def _storable_value(value: Any, limit: int | None) -> Any:
    return storable_text(value, limit) if isinstance(value, str) else value


def _storable_rows(table: sa.Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fixes = [(name, fix) for name, fix in _storable_columns(table).items() if name in rows[0]]
    for row in rows:
        for name, fix in fixes:
            row[name] = fix(row[name])
    return rows


def _bulk_insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    rows = _storable_rows(table, rows)
    if is_sqlite(conn):
        # One executemany of tuples through the driver, with each column's own bind processor (JSON,
        # UTC datetimes): the same stored values as table.insert(), without SQLAlchemy's per-row
        # parameter handling, which was about a quarter of a warm 10,000-container scan.
        columns = list(rows[0])
        procs = [table.c[name].type.bind_processor(conn.dialect) for name in columns]
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'  # noqa: S608 - our own schema's names
        data = [tuple(p(row[c]) if p is not None else row[c] for p, c in zip(procs, columns, strict=True))
                for row in rows]
        conn.exec_driver_sql(sql, data)
        return
    # PostgreSQL: COPY on the same (transactional) connection, far cheaper than INSERTs per row.
    columns = list(rows[0])
    dialect = conn.dialect

    def as_json(v: Any) -> Any:
        # ASCII, as INSERT's serializer writes it: a lone surrogate in a reason is escaped, not an encoding error.
        return None if v is None else json.dumps(v)

    def as_utc(v: Any) -> Any:
        return _UTC.process_bind_param(v, dialect)  # refuses naive datetimes, as INSERT would

    def same(v: Any) -> Any:
        return v

    converters: list[Callable[[Any], Any]] = []
    for name in columns:
        col_type = table.c[name].type
        converters.append(as_json if isinstance(col_type, sa.JSON)
                          else as_utc if isinstance(col_type, UTCDateTime) else same)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cols = ", ".join(f'"{c}"' for c in columns)
        with cursor.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([conv(row[c]) for conv, c in zip(converters, columns, strict=True)])
    finally:
        cursor.close()


# -- rows <-> models ------------------------------------------------------------------------------


def _image_row(scan_id: int, position: int, v: Verdict) -> dict[str, Any]:
    img = v.image
    ref = img.reference
    if isinstance(img, RunningImage):
        text, unresolved, notes = str(ref), None, list(img.notes)
        secrets = [list(p) for p in img.pull_secrets]
    else:
        text, unresolved, notes, secrets = img.image, img.reason, list(img.notes), []
    return {
        "scan_id": scan_id, "position": position, "resolved": isinstance(img, RunningImage),
        "registry": ref.registry if ref else None, "repository": ref.repository if ref else None,
        "tag": ref.tag if ref else None, "digest": ref.digest if ref else None,
        "image": text, "unresolved_reason": unresolved, "notes": notes, "pull_secrets": secrets,
        "status": str(v.status), "reasons": list(v.reasons), "rule": v.rule,
        "policy_source": v.policy_source, "expiring": v.expiring, "not_after": v.not_after,
        "warn_only": v.warn_only, "deciding_reason": v.deciding_reason,
        "exemptions": [codec.exemption_to_json(x) for x in v.exemptions],
    }


def _container_row(scan_id: int, image_id: int, position: int, c: ContainerRef) -> dict[str, Any]:
    return {
        "scan_id": scan_id, "image_row_id": image_id, "position": position,
        "namespace": c.namespace, "pod": c.pod, "pod_uid": c.pod_uid, "container": c.container,
        "container_type": str(c.container_type), "image": c.image, "image_id": c.image_id,
        "workload_kind": c.workload.kind, "workload_name": c.workload.name,
        "pull_secrets": list(c.pull_secrets),
    }


def _signature_row(scan_id: int, image_id: int, position: int, s: SignatureResult) -> dict[str, Any]:
    return {
        "scan_id": scan_id, "image_row_id": image_id, "position": position, "kind": s.kind,
        "verifier": s.verifier, "outcome": str(s.outcome), "reason": s.reason,
        "failure": str(s.failure), "signer": s.signer, "key_sha256": s.key_sha256,
        "identity": s.identity, "issuer": s.issuer, "signed_at": s.signed_at.value if s.signed_at else None,
        "signed_at_source": s.signed_at.source.value if s.signed_at else None, "not_after": s.not_after,
        "details": codec.encode(dict(s.details)),
    }


def _container_from_row(c: Any) -> ContainerRef:
    return ContainerRef(
        namespace=c.namespace, pod=c.pod, container=c.container,
        container_type=ContainerType(c.container_type), image=c.image, image_id=c.image_id,
        workload=Workload(c.workload_kind, c.workload_name),
        pull_secrets=tuple(c.pull_secrets or ()), pod_uid=c.pod_uid,
    )


def _signature_from_row(s: Any, checks: tuple[Check, ...]) -> SignatureResult:
    return SignatureResult(
        kind=s.kind, verifier=s.verifier, outcome=Outcome(s.outcome), reason=s.reason,
        failure=SignatureFailure(s.failure), signer=s.signer, key_sha256=s.key_sha256,
        identity=s.identity, issuer=s.issuer, signed_at=codec.signed_time(s.signed_at, s.signed_at_source),
        not_after=s.not_after,
        checks=checks, details=codec.decode(s.details or {}),
    )


def _verdict_from_row(i: Any, containers: tuple[ContainerRef, ...],
                      signatures: tuple[SignatureResult, ...]) -> Verdict:
    ref = (ImageReference(i.registry, i.repository, i.tag, i.digest)
           if i.registry is not None and i.repository is not None else None)
    image: RunningImage | UnresolvedImage
    if i.resolved:
        if ref is None or ref.digest is None:
            raise StoreError(f"image row {i.id} is resolved but has no digest: the database is damaged")
        image = RunningImage(ref, containers, tuple(i.notes or ()),
                             tuple((ns, name) for ns, name in (i.pull_secrets or ())))
    else:
        image = UnresolvedImage(ref, i.image, containers, i.unresolved_reason or "", tuple(i.notes or ()))
    deciding = i.deciding_reason or 0
    if not 0 <= deciding < max(1, len(i.reasons or ())):
        raise StoreError(f"image row {i.id}: deciding_reason {deciding} is not one of its reasons: the database "
                         "is damaged")
    try:
        exemptions = tuple(codec.exemption_from_json(x) for x in i.exemptions or ())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"image row {i.id}: its exemptions cannot be read ({exc}): the database is damaged") from None
    return Verdict(
        image=image, status=Status(i.status), reasons=tuple(i.reasons or ()), rule=i.rule,
        policy_source=i.policy_source, signatures=signatures, expiring=bool(i.expiring),
        not_after=i.not_after, warn_only=bool(i.warn_only), deciding_reason=deciding, exemptions=exemptions,
    )


def _summary(r: Any) -> ScanSummary:
    counts = {str(s): 0 for s in Status}
    counts.update({k: int(v) for k, v in (r.counts or {}).items()})
    return ScanSummary(
        id=r.id, cluster=r.cluster, state=ScanState(r.state), started_at=r.started_at,
        finished_at=r.finished_at, counts=counts, compliant=r.compliant, total=r.total,
        policy_digest=r.policy_digest, version=r.sigaudit_version, errors=tuple(r.errors or ()),
        heartbeat_at=r.heartbeat_at,
    )


def _namespace_counts(verdicts: Iterable[Verdict]) -> dict[str, dict[str, int]]:
    """{namespace: {status: verdicts with a container there}}, as counts_by_namespace counts."""
    out: dict[str, Counter[str]] = {}
    for v in verdicts:
        for ns in {c.namespace for c in v.image.containers}:
            out.setdefault(ns, Counter())[str(v.status)] += 1
    return {ns: dict(sorted(c.items())) for ns, c in sorted(out.items())}


def _summary_of_summary_row(r: Any) -> ScanSummary:
    counts = {str(s): 0 for s in Status}
    counts.update({k: int(v) for k, v in (r.counts or {}).items()})
    return ScanSummary(
        id=r.scan_id, cluster=r.cluster, state=ScanState(r.state), started_at=r.started_at,
        finished_at=r.finished_at, counts=counts, compliant=r.compliant, total=r.total,
        policy_digest=r.policy_digest, version=r.sigaudit_version,
    )


def _cached_from_row(row: Any) -> CachedVerification:
    return CachedVerification(
        digest=row.digest, decision_identity=row.trust_fingerprint,
        material_fingerprint=row.material_fingerprint,
        signatures=tuple(codec.signature_from_json(s) for s in row.results),
        computed_at=row.computed_at, used_at=row.used_at,
    )


def open_store(url: str, *, clock: Clock = system_clock, stale_after: timedelta = DEFAULT_STALE_AFTER,
               pool_size: int = 5, reserve_bytes: int = RESERVE_BYTES) -> Store:
    """Open the database at ``url`` (and check it answers). Raises StoreError, password masked."""
    parsed = parse_url(url)
    engine = make_engine(parsed, pool_size=pool_size)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise describe_db_error("cannot connect to", parsed, exc) from None
    return Store(engine, parsed, clock=clock, stale_after=stale_after, reserve_bytes=reserve_bytes)
