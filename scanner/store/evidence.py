"""Evidence material (issue #23): content-addressed blobs, written once, and the names that point at
them (``scan/<id>``, ``material/<digest>/<fingerprint>``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import cast

import sqlalchemy as sa

from scanner.store.core import Db, dialect_insert
from scanner.store.core import chunks as _chunks
from scanner.store.engine import is_sqlite
from scanner.store.schema import EvidenceBlob, EvidenceRef

_blobs = cast(sa.Table, EvidenceBlob.__table__)
_refs = cast(sa.Table, EvidenceRef.__table__)


class Evidence:
    def __init__(self, db: Db) -> None:
        self._db = db

    def evidence_put(self, blobs: Mapping[str, bytes], refs: Mapping[str, str]) -> None:
        """Write blobs (keyed by their sha256 hex, checked) and names, each only if absent: what a
        name pointed at first is what it keeps pointing at. One transaction."""
        for sha, data in blobs.items():
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError(f"evidence blob {sha} does not hash to its name")
        insert = dialect_insert(is_sqlite(self._db.engine))
        now = self._db.clock()
        with self._db.errors("cannot write the evidence material"), self._db.write() as conn:
            for chunk in _chunks(sorted(blobs)):
                conn.execute(insert(_blobs).on_conflict_do_nothing(index_elements=[_blobs.c.sha256]),
                             [{"sha256": s, "data": blobs[s]} for s in chunk])
            for chunk in _chunks(sorted(refs)):
                conn.execute(insert(_refs).on_conflict_do_nothing(index_elements=[_refs.c.name]),
                             [{"name": n, "sha256": refs[n], "created_at": now} for n in chunk])

    def evidence_refs(self, names: Iterable[str]) -> dict[str, str]:
        """name -> sha256 for the names that exist."""
        out: dict[str, str] = {}
        with self._db.errors("cannot read the evidence material"), self._db.read() as conn:
            for chunk in _chunks(sorted(set(names))):
                for row in conn.execute(sa.select(_refs.c.name, _refs.c.sha256).where(_refs.c.name.in_(chunk))):
                    out[row.name] = row.sha256
        return out

    def evidence_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """sha256 -> bytes for the blobs that exist (each checked against its name)."""
        out: dict[str, bytes] = {}
        with self._db.errors("cannot read the evidence material"), self._db.read() as conn:
            for chunk in _chunks(sorted(set(shas))):
                for row in conn.execute(sa.select(_blobs.c.sha256, _blobs.c.data).where(_blobs.c.sha256.in_(chunk))):
                    data = bytes(row.data)
                    if hashlib.sha256(data).hexdigest() == row.sha256:
                        out[row.sha256] = data
        return out
