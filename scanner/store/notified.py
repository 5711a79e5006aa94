"""The notification dedup state (issue 24): what each receiver was last told about each violation of a
cluster, so that a violation is sent once and resent only when it changes; and counters added to a
finished scan's stats after its verdicts were stored (e.g. notification deliveries)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scanner.store.core import Db
from scanner.store.core import chunks as _chunks
from scanner.store.core import notified as _notified
from scanner.store.core import scans as _scans


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


class NotifiedState:
    """Reads and writes of the notification dedup state."""

    def __init__(self, db: Db) -> None:
        self._db = db

    def notified(self, cluster: str, receiver: str) -> dict[str, Notified]:
        """What ``receiver`` was last told (or is still to be told) about ``cluster``'s violations."""
        with self._db.errors("cannot read the notification state"), self._db.read() as conn:
            rows = conn.execute(sa.select(_notified).where(_notified.c.cluster == cluster,
                                                           _notified.c.receiver == receiver))
            return {r.key: Notified(r.key, r.fingerprint, r.kind, r.state, tuple(r.namespaces or ()),
                                    r.scan_id, r.sent_at)
                    for r in rows}

    def record_notified(self, cluster: str, receiver: str, upsert: Sequence[Notified] = (),
                        delete: Sequence[str] = ()) -> None:
        """Replace the state rows ``upsert`` and drop the keys ``delete``, in one transaction."""
        with self._db.errors("cannot write the notification state"), self._db.write() as conn:
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
        scan_id = self._db.known_id(scan_id)
        with self._db.errors(f"cannot update scan {scan_id}"), self._db.write() as conn:
            stats = conn.execute(sa.select(_scans.c.stats).where(_scans.c.id == scan_id)).scalar_one_or_none()
            merged = {**(stats or {}), name: value}
            conn.execute(_scans.update().where(_scans.c.id == scan_id).values(stats=merged))
