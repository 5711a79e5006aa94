"""Repository functions over the store. Takes and returns the frozen models of ``scanner.models``.

A scan is recorded in two steps: :meth:`Store.begin_scan` inserts a ``running`` row (and, on
PostgreSQL, takes an advisory lock per cluster for the life of the scan); :meth:`Store.finish_scan`
writes every verdict, container, signature and check and marks the scan finished in ONE transaction.
A crash or a lost connection in between leaves the row ``running``; the next scan of that cluster
marks it ``failed`` ("abandoned (process died)"). Readers that ask for the latest complete scan never
see a half-written one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from scanner.clock import Clock, system_clock
from scanner.models import ScanResult, SignatureResult, Verdict
from scanner.store.cache import CACHE_KEEP as CACHE_KEEP
from scanner.store.cache import CACHE_TOUCH_GRANULARITY as CACHE_TOUCH_GRANULARITY
from scanner.store.cache import Cache
from scanner.store.cache import CachedVerification as CachedVerification
from scanner.store.cache import RelistMark as RelistMark
from scanner.store.core import MAX_ID as MAX_ID
from scanner.store.core import Db
from scanner.store.engine import describe_db_error, make_engine, parse_url
from scanner.store.evidence import Evidence
from scanner.store.migrate import check_schema_on
from scanner.store.notified import Notified as Notified
from scanner.store.notified import NotifiedState
from scanner.store.queries import ClusterHead as ClusterHead
from scanner.store.queries import Queries
from scanner.store.queries import ScanSummary as ScanSummary
from scanner.store.results import Results
from scanner.store.results import storable_text as storable_text
from scanner.store.retention import PRUNE_BATCH as PRUNE_BATCH
from scanner.store.retention import RESERVE_BYTES as RESERVE_BYTES
from scanner.store.retention import DiskUsage as DiskUsage
from scanner.store.retention import PruneResult as PruneResult
from scanner.store.retention import Retention
from scanner.store.scans import ABANDONED as ABANDONED
from scanner.store.scans import DEFAULT_STALE_AFTER as DEFAULT_STALE_AFTER
from scanner.store.scans import Scans


class Store:
    """The database of scans. Create with :func:`open_store`; close with :meth:`close`.

    A facade: each room of the store is its own module, and this class hands every call to it —
    scan lifecycle and locks (``scans.py``), writing results (``results.py``), reading scans
    (``queries.py``), the verification cache (``cache.py``), retention (``retention.py``) and the
    notification dedup state (``notified.py``), over the
    shared plumbing of ``core.py``."""

    def __init__(self, engine: sa.Engine, url: URL, *, clock: Clock = system_clock,
                 stale_after: timedelta = DEFAULT_STALE_AFTER, reserve_bytes: int = RESERVE_BYTES,
                 capacity_bytes: int | None = None) -> None:
        self._db = Db(engine, url, clock)
        self._retention = Retention(self._db, reserve_bytes=reserve_bytes, capacity_bytes=capacity_bytes)
        self._scans = Scans(self._db, stale_after=stale_after, check_room=self._retention.check_room)
        self._results = Results(self._db, release_scan_lock=self._scans.release_scan_lock)
        self._queries = Queries(self._db)
        self._cache = Cache(self._db)
        self._notified = NotifiedState(self._db)
        self._evidence = Evidence(self._db)

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for the metrics collector's read-only queries and for tests)."""
        return self._db.engine

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return self._db.shown

    @property
    def dialect(self) -> str:
        return self._db.engine.dialect.name

    def close(self) -> None:
        self._scans.close()
        self._db.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_schema(self) -> None:
        """Raise StoreError unless the schema is at the head revision of this sigaudit."""
        with self._db.errors("cannot read the schema version"), self._db.read() as conn:
            check_schema_on(conn, self._db.shown)

    # -- scan lifecycle (scans.py, results.py) ----------------------------------------------------

    def begin_scan(self, cluster: str, started_at: datetime, policy_digest: str, version: str) -> int:
        """Record a running scan; refuse if another live scan of ``cluster`` is running."""
        return self._scans.begin_scan(cluster, started_at, policy_digest, version)

    def heartbeat(self, scan_id: int) -> None:
        """Tell other processes this scan is alive. Raises StoreError if it is no longer running."""
        self._scans.heartbeat(scan_id)

    def keepalive(self, scan_id: int, interval: float = 60.0) -> AbstractContextManager[None]:
        """Send heartbeats from a background thread while the block runs."""
        return self._scans.keepalive(scan_id, interval)

    def finish_scan(self, scan_id: int, result: ScanResult, policy_summary: Mapping[str, Any] | None = None) -> None:
        """Write every verdict and mark the scan finished, all in one transaction."""
        self._results.finish_scan(scan_id, result, policy_summary)

    def add_watch_verdicts(self, scan_id: int, cluster: str, verdicts: Sequence[Verdict]) -> int:
        """Append ``serve --watch`` verdicts to the finished scan ``scan_id`` (see Results.add_watch_verdicts)."""
        return self._results.add_watch_verdicts(scan_id, cluster, verdicts)

    def fail_scan(self, scan_id: int, errors: Sequence[str]) -> None:
        """Mark a running scan failed (no verdicts are written). A no-op if it is not running."""
        self._scans.fail_scan(scan_id, errors)

    # -- reading (queries.py) ---------------------------------------------------------------------

    def load_scan(self, scan_id: int) -> ScanResult:
        """The scan as it was saved, as frozen models."""
        return self._queries.load_scan(scan_id)

    def load_scans(self, scan_ids: Sequence[int]) -> list[ScanResult]:
        """The scans, in the order asked, read together: what they share is read once (a report's scan
        and its previous one)."""
        return self._queries.load_scans(scan_ids)

    def policy_summary(self, scan_id: int) -> dict[str, Any] | None:
        """The policy a scan applied (rules, exemptions, revocations), as recorded by finish_scan."""
        return self._queries.policy_summary(scan_id)

    def scan_summary(self, scan_id: int) -> ScanSummary:
        return self._queries.scan_summary(scan_id)

    def latest_scan_id(self, cluster: str | None = None, *, complete_only: bool = True,
                       include_partial: bool = False) -> int | None:
        """The newest scan (of ``cluster``, or of any cluster); by default the newest complete one."""
        return self._queries.latest_scan_id(cluster, complete_only=complete_only, include_partial=include_partial)

    def previous_scan_id(self, scan_id: int) -> int | None:
        """The complete scan of the same cluster just before ``scan_id`` (for diffs)."""
        return self._queries.previous_scan_id(scan_id)

    def verified_before(self, cluster: str, digests: Iterable[str], before: datetime) -> dict[str, datetime]:
        """digest -> the start of the newest finished scan of ``cluster`` before ``before`` that judged it
        verified."""
        return self._queries.verified_before(cluster, digests, before)

    def list_scans(self, cluster: str | None = None, limit: int = 50) -> list[ScanSummary]:
        """Scans of every state, newest first."""
        return self._queries.list_scans(cluster, limit)

    def history(self, cluster: str, limit: int = 100, *, since: datetime | None = None) -> list[ScanSummary]:
        """The last ``limit`` finished scans of ``cluster``, oldest first, from the scan summaries (they
        outlive the detail that :meth:`prune` deletes)."""
        return self._queries.history(cluster, limit, since=since)

    def clusters(self) -> list[str]:
        return self._queries.clusters()

    def heads(self, cluster: str | None = None) -> list[ClusterHead]:
        """Per cluster (``cluster`` or every one): its newest complete scan and that scan's revision, and
        its newest finished scan's state and time, in two statements (the metrics collector's scrape)."""
        return self._queries.heads(cluster)

    def counts_by_namespace(self, scan_id: int) -> dict[tuple[str, str], int]:
        """(namespace, status) -> number of distinct images running in that namespace."""
        return self._queries.counts_by_namespace(scan_id)

    # -- retention (retention.py) -----------------------------------------------------------------

    def delete_scans_before(self, before: datetime, cluster: str | None = None) -> int:
        """Retention: delete finished and failed scans started before ``before``; the newest
        complete scan of each cluster is always kept. Returns how many scans were deleted."""
        return self._retention.delete_scans_before(before, cluster)

    def prune(self, *, before: datetime | None = None, keep_scans: int | None = None, cluster: str | None = None,
              prune_cache: bool = True, summaries_before: datetime | None = None,
              batch: int = PRUNE_BATCH) -> PruneResult:
        """Retention (``sigaudit db prune``): see :meth:`scanner.store.retention.Retention.prune`."""
        return self._retention.prune(before=before, keep_scans=keep_scans, cluster=cluster, prune_cache=prune_cache,
                                     summaries_before=summaries_before, batch=batch)

    def disk_usage(self) -> DiskUsage:
        """The database's size, (SQLite) the room left on the volume holding it, and the declared capacity."""
        return self._retention.disk_usage()

    # -- evidence material (evidence.py) ----------------------------------------------------------

    def evidence_put(self, blobs: Mapping[str, bytes], refs: Mapping[str, str], *,
                     needs: Iterable[str] = (), at_head: bool = False, own: Iterable[str] = ()) -> None:
        """Content-addressed blobs and the names pointing at them, each written only if absent (``own``: names
        this write alone may write, pointed at what it says whatever was found); nothing is
        written (EvidenceMissing) when a blob of ``needs`` (stored already, named by what is written) is not,
        nor (StoreError) with ``at_head`` when the database is not at this sigaudit's revision."""
        self._evidence.evidence_put(blobs, refs, needs=needs, at_head=at_head, own=own)

    def evidence_refs(self, names: Iterable[str]) -> dict[str, str]:
        return self._evidence.evidence_refs(names)

    def evidence_refs_under(self, prefix: str) -> dict[str, str]:
        return self._evidence.evidence_refs_under(prefix)

    def evidence_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        return self._evidence.evidence_blobs(shas)

    # -- verification cache (cache.py) ------------------------------------------------------------

    def cache_get(self, digest: str, decision_identity: str) -> CachedVerification | None:
        return self._cache.cache_get(digest, decision_identity)

    def cache_get_many(self, keys: Iterable[tuple[str, str]], *, touch: bool = True
                       ) -> dict[tuple[str, str], CachedVerification]:
        """Cached results for (digest, decision identity) pairs; misses are absent from the dict."""
        return self._cache.cache_get_many(keys, touch=touch)

    def cache_put(self, digest: str, decision_identity: str, material_fingerprint: str,
                  signatures: Sequence[SignatureResult], computed_at: datetime | None = None) -> None:
        self._cache.cache_put(digest, decision_identity, material_fingerprint, signatures, computed_at)

    def cache_put_many(self, entries: Iterable[CachedVerification]) -> None:
        """Insert or replace cache entries, in one transaction."""
        self._cache.cache_put_many(entries)

    def relists_get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RelistMark]:
        """When the signatures of (digest, scope) pairs were last seen attached (``--recheck-after``)."""
        return self._cache.relists_get_many(keys)

    def relists_put_many(self, marks: Iterable[RelistMark]) -> None:
        self._cache.relists_put_many(marks)

    def cache_invalidate(self, digest: str | None = None) -> int:
        """Drop cache entries (of one digest, or all). Returns how many were dropped."""
        return self._cache.cache_invalidate(digest)

    def cache_prune(self, unused_since: datetime) -> int:
        """Drop entries not used since ``unused_since``. Returns how many were dropped."""
        return self._cache.cache_prune(unused_since)

    # -- notification dedup state (notified.py) ---------------------------------------------------

    def notified(self, cluster: str, receiver: str) -> dict[str, Notified]:
        """What ``receiver`` was last told (or is still to be told) about ``cluster``'s violations."""
        return self._notified.notified(cluster, receiver)

    def record_notified(self, cluster: str, receiver: str, upsert: Sequence[Notified] = (),
                        delete: Sequence[str] = ()) -> None:
        """Replace the state rows ``upsert`` and drop the keys ``delete``, in one transaction."""
        self._notified.record_notified(cluster, receiver, upsert, delete)

    def add_scan_stats(self, scan_id: int, name: str, value: Any) -> None:
        """Add one counter group to a finished scan's stats (e.g. notification deliveries)."""
        self._notified.add_scan_stats(scan_id, name, value)


def open_store(url: str, *, clock: Clock = system_clock, stale_after: timedelta = DEFAULT_STALE_AFTER,
               pool_size: int = 5, reserve_bytes: int = RESERVE_BYTES, capacity_bytes: int | None = None) -> Store:
    """Open the database at ``url`` (and check it answers). Raises StoreError, password masked.
    ``capacity_bytes``: the size the database may reach (``--db-capacity``): a scan is not begun within
    ``reserve_bytes`` of it, and past 80% of it the database is nearly full (:class:`DiskUsage`)."""
    parsed = parse_url(url)
    engine = make_engine(parsed, pool_size=pool_size)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        raise describe_db_error("cannot connect to", parsed, exc) from None
    return Store(engine, parsed, clock=clock, stale_after=stale_after, reserve_bytes=reserve_bytes,
                 capacity_bytes=capacity_bytes)
