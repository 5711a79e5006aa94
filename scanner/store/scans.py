"""Scan lifecycle and locks: a ``running`` row per scan (on PostgreSQL with a per-cluster advisory
lock held for the life of the scan), heartbeats, failure marking, and the take-over of a scan whose
process died ("abandoned (process died)"). Finishing a scan is ``results.py``."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from scanner.errors import ScanInProgress, StoreError
from scanner.models import ScanState
from scanner.redact import redact_text, representable
from scanner.store.core import Db
from scanner.store.core import scans as _scans
from scanner.store.engine import is_sqlite

DEFAULT_STALE_AFTER = timedelta(minutes=10)
ABANDONED = "abandoned (process died)"

log = logging.getLogger(__name__)


def _lock_key(namespace: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"sigaudit:{namespace}:{name}".encode()).digest()[:8], "big",
                          signed=True)


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


class Scans:
    """The scans being recorded by this process, and the locks they hold."""

    def __init__(self, db: Db, *, stale_after: timedelta, check_room: Callable[[], None]) -> None:
        self._db = db
        self._stale_after = stale_after
        self._check_room = check_room  # retention: refuse to begin a scan on a nearly full volume
        self._scan_locks: dict[int, sa.Connection] = {}
        self._host = socket.gethostname()[:253]
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release every scan lock this process holds."""
        with self._lock:
            locks, self._scan_locks = self._scan_locks, {}
        for conn in locks.values():
            self._drop_lock_connection(conn)

    def begin_scan(self, cluster: str, started_at: datetime, policy_digest: str, version: str) -> int:
        """Record a running scan; refuse if another live scan of ``cluster`` is running."""
        if not cluster:
            raise ValueError("cluster name must not be empty")
        self._check_room()
        lock_conn: sa.Connection | None = None
        with self._db.errors(f"cannot start a scan of cluster {cluster!r}"):
            if not is_sqlite(self._db.engine):
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
            conn = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
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
                    f"in {self._db.shown}); wait for it to finish"
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

    def release_scan_lock(self, scan_id: int) -> None:
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
        now = self._db.clock()
        with self._db.write() as conn:
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
        with self._db.errors(f"cannot record the heartbeat of scan {scan_id}"), self._db.write() as conn:
            return bool(conn.execute(
                _scans.update()
                .where(_scans.c.id == scan_id, _scans.c.state == ScanState.RUNNING.value)
                .values(heartbeat_at=self._db.clock())
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

    def fail_scan(self, scan_id: int, errors: Sequence[str]) -> None:
        """Mark a running scan failed (no verdicts are written). A no-op if it is not running."""
        try:
            with self._db.errors(f"cannot mark scan {scan_id} failed"), self._db.write() as conn:
                conn.execute(
                    _scans.update()
                    .where(_scans.c.id == scan_id, _scans.c.state == ScanState.RUNNING.value)
                    .values(state=ScanState.FAILED.value, finished_at=self._db.clock(),
                            errors=[representable(redact_text(e)) for e in errors])
                )
        finally:
            self.release_scan_lock(scan_id)
