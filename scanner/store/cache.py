"""The verification cache (issue 9): signature results per (digest, decision identity), kept across
scans, their use recorded at most hourly so that a warm scan rewrites no row."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from scanner.models import SignatureResult
from scanner.store import codec
from scanner.store.core import Db, dialect_insert
from scanner.store.core import cache as _cache
from scanner.store.core import chunks as _chunks
from scanner.store.core import relists as _relists
from scanner.store.engine import is_sqlite

log = logging.getLogger(__name__)

# The verification cache records a use at most this often per entry: a warm scan rewrites no row.
CACHE_TOUCH_GRANULARITY = timedelta(hours=1)
# Cache entries unused for this long (no scan of any cluster saw their digest running) are pruned, or
# sooner with a shorter --keep.
CACHE_KEEP = timedelta(days=30)


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


@dataclass(frozen=True, slots=True)
class RelistMark:
    """When the signature material ``material_fingerprint`` of ``digest`` was last seen attached, in
    one scope (registry, repository, credential sources: see ``SignatureRelist``) — the fact the
    re-check window (``--recheck-after``) trusts instead of a request."""

    digest: str
    scope: str
    material_fingerprint: str
    checked_at: datetime


class Cache:
    """Reads and writes of the verification cache."""

    def __init__(self, db: Db) -> None:
        self._db = db

    def cache_get(self, digest: str, decision_identity: str) -> CachedVerification | None:
        return self.cache_get_many([(digest, decision_identity)]).get((digest, decision_identity))

    def cache_get_many(self, keys: Iterable[tuple[str, str]], *, touch: bool = True
                       ) -> dict[tuple[str, str], CachedVerification]:
        """Cached results for (digest, decision identity) pairs; misses are absent from the dict.
        ``touch`` records the use, so that :meth:`cache_prune` keeps what is still running."""
        wanted = set(keys)
        digests = sorted({d for d, _ in wanted})
        found: dict[tuple[str, str], CachedVerification] = {}
        with self._db.errors("cannot read the verification cache"):
            with self._db.read() as conn:
                for chunk in _chunks(digests):
                    for row in conn.execute(_RAW_SELECT.where(_cache.c.digest.in_(chunk))):
                        key = (row.digest, row.trust_fingerprint)
                        if key in wanted and (entry := _cached_from_row(row)) is not None:
                            found[key] = entry
            now = self._db.clock()
            # Only the entries read, and only when their last recorded use is older than the
            # granularity: a warm scan (same digests within the hour) writes nothing, and an entry of
            # an old decision identity is not kept alive by its digest's new one.
            stale = sorted(k for k, v in found.items()
                           if v.used_at is None or now - v.used_at >= CACHE_TOUCH_GRANULARITY)
            if touch and stale:
                with self._db.write() as conn:
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
                                                tuple(signatures), computed_at or self._db.clock())])

    def cache_put_many(self, entries: Iterable[CachedVerification]) -> None:
        """Insert or replace cache entries, in one transaction."""
        now = self._db.clock()
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
        insert = dialect_insert(is_sqlite(self._db.engine))
        with self._db.errors("cannot write the verification cache"), self._db.write() as conn:
            for chunk in _chunks(list(rows.values())):
                stmt = insert(_cache)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[_cache.c.digest, _cache.c.trust_fingerprint],
                    set_={c: stmt.excluded[c] for c in
                          ("material_fingerprint", "results", "computed_at", "used_at")},
                )
                conn.execute(stmt, list(chunk))

    def relists_get_many(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RelistMark]:
        """The re-list marks of (digest, scope) pairs; those never marked are absent."""
        wanted = set(keys)
        found: dict[tuple[str, str], RelistMark] = {}
        with self._db.errors("cannot read the verification cache"), self._db.read() as conn:
            for chunk in _chunks(sorted({d for d, _ in wanted})):
                for row in conn.execute(sa.select(_relists).where(_relists.c.digest.in_(chunk))):
                    if (row.digest, row.scope) in wanted:
                        found[(row.digest, row.scope)] = RelistMark(row.digest, row.scope,
                                                                    row.material_fingerprint, row.checked_at)
        return found

    def relists_put_many(self, marks: Iterable[RelistMark]) -> None:
        """Insert or replace re-list marks, in one transaction."""
        rows = {(m.digest, m.scope): {"digest": m.digest, "scope": m.scope,
                                      "material_fingerprint": m.material_fingerprint, "checked_at": m.checked_at}
                for m in marks}
        if not rows:
            return
        insert = dialect_insert(is_sqlite(self._db.engine))
        with self._db.errors("cannot write the verification cache"), self._db.write() as conn:
            for chunk in _chunks(list(rows.values())):
                stmt = insert(_relists)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[_relists.c.digest, _relists.c.scope],
                    set_={c: stmt.excluded[c] for c in ("material_fingerprint", "checked_at")},
                )
                conn.execute(stmt, list(chunk))

    def cache_invalidate(self, digest: str | None = None) -> int:
        """Drop cache entries and re-list marks (of one digest, or all). Returns how many cache
        entries were dropped."""
        stmt = _cache.delete()
        marks = _relists.delete()
        if digest is not None:
            stmt = stmt.where(_cache.c.digest == digest)
            marks = marks.where(_relists.c.digest == digest)
        with self._db.errors("cannot clear the verification cache"), self._db.write() as conn:
            conn.execute(marks)
            return int(conn.execute(stmt).rowcount)

    def cache_prune(self, unused_since: datetime) -> int:
        """Drop entries not used since ``unused_since`` (and re-list marks older than that). Returns
        how many entries were dropped."""
        with self._db.errors("cannot prune the verification cache"), self._db.write() as conn:
            conn.execute(_relists.delete().where(_relists.c.checked_at < unused_since))
            return int(conn.execute(_cache.delete().where(_cache.c.used_at < unused_since)).rowcount)


# The results column as text, decoded by _cached_from_row: a row whose JSON does not parse (SQLite keeps
# whatever text was written) or nests past the decoder's depth (PostgreSQL accepts thousands of levels) is
# then one miss, not a failed read of the whole cache. A CAST in SQL, not only SQLAlchemy's type: psycopg
# decodes json/jsonb itself while fetching, before any per-row check could catch its RecursionError.
_RAW_SELECT = sa.select(*(c for c in _cache.c if c.name != "results"),
                        sa.cast(_cache.c.results, sa.Text).label("results"))


def _cached_from_row(row: Any) -> CachedVerification | None:
    """The entry of one row, or None (a miss) when its results do not decode: a row damaged on disk, written
    by hand, or by a version whose checks this one does not know (an unknown check name or outcome, a
    missing field, a value of another type) is never served and never stops the scan; the image is
    verified again and the scan's write replaces the row."""
    try:
        results = json.loads(row.results) if isinstance(row.results, str | bytes) else row.results
        if not isinstance(results, list):
            raise TypeError(f"results is a {type(results).__name__}")
        signatures = tuple(codec.signature_from_json(s) for s in results)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        log.warning("verification cache: the entry of %s cannot be read (%s); verifying again",
                    row.digest, type(exc).__name__)
        return None
    return CachedVerification(
        digest=row.digest, decision_identity=row.trust_fingerprint,
        material_fingerprint=row.material_fingerprint, signatures=signatures,
        computed_at=row.computed_at, used_at=row.used_at,
    )
