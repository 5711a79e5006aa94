"""The cost of ``evidence_put`` re-writing blobs the store holds already (a warm scan re-writes its trust
blobs and any material or entries stored before): the insert-or-ignore it was, against the insert that
gives a row not holding the bytes its bytes (compared in the database), on SQLite and, with ``--pg URL``,
PostgreSQL.

Usage: python -m bench.evidence_put [--blobs 2000] [--size 4096] [--repeat 5] [--pg postgresql://…]
Prints one JSON line per backend: median seconds for the re-put of every blob, each way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from scanner.store import open_store, upgrade
from scanner.store.core import chunks, dialect_insert
from scanner.store.engine import is_sqlite
from scanner.store.schema import evidence_blobs


def _ignore(store: Any, blobs: dict[str, bytes]) -> None:
    """The write as it was: ON CONFLICT DO NOTHING (each blob's name checked, as evidence_put does)."""
    for sha, data in blobs.items():
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValueError(sha)
    insert = dialect_insert(is_sqlite(store._db.engine))
    with store._db.write() as conn:
        for chunk in chunks(sorted(blobs)):
            conn.execute(insert(evidence_blobs).on_conflict_do_nothing(index_elements=[evidence_blobs.c.sha256]),
                         [{"sha256": s, "data": blobs[s]} for s in chunk])


def _measure(url: str, n: int, size: int, repeat: int) -> dict[str, Any]:
    upgrade(url)
    blobs = {}
    for _ in range(n):
        data = os.urandom(size)
        blobs[hashlib.sha256(data).hexdigest()] = data
    with open_store(url) as store:
        store.evidence_put(blobs, {})
        ways: dict[str, Callable[[], None]] = {"ignore": lambda: _ignore(store, blobs),
                                               "compare": lambda: store.evidence_put(blobs, {})}
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(repeat):
            for name, put in ways.items():
                t0 = time.perf_counter()
                put()
                times[name].append(time.perf_counter() - t0)
    return {"blobs": n, "size": size, **{f"{k}_s": round(statistics.median(v), 4) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pg", default=None, help="a PostgreSQL URL (an empty database) to measure too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps({"backend": "sqlite", **_measure(f"sqlite:///{tmp}/b.db", args.blobs, args.size,
                                                          args.repeat)}))
    if args.pg:
        print(json.dumps({"backend": "postgresql", **_measure(args.pg, args.blobs, args.size, args.repeat)}))


if __name__ == "__main__":
    main()
