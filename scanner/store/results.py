"""Writing a scan's results: the verdicts, containers, signatures and checks it is the first to have
(content-addressed, shared with every other scan that has them: issue 20), its verdict set, its trend
summary, and the scan marked finished, in ONE transaction (COPY on PostgreSQL, executemany on SQLite), with every
text made storable on both backends."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scanner.errors import StoreError
from scanner.models import (
    Check,
    ContainerRef,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureResult,
    Verdict,
    VerdictSource,
    image_counts,
)
from scanner.redact import representable
from scanner.store import codec
from scanner.store.core import FINISHED as _FINISHED
from scanner.store.core import Db, chunks, dialect_insert, lock_content
from scanner.store.core import checks as _checks
from scanner.store.core import containers as _containers
from scanner.store.core import groups as _groups
from scanner.store.core import images as _images
from scanner.store.core import members as _members
from scanner.store.core import scans as _scans
from scanner.store.core import signatures as _signatures
from scanner.store.core import summaries as _summaries
from scanner.store.core import verdict_sets as _sets
from scanner.store.engine import is_sqlite
from scanner.store.schema import UTCDateTime

_UTC = UTCDateTime()


class Results:
    """Records finished scans."""

    def __init__(self, db: Db, *, release_scan_lock: Callable[[int], None]) -> None:
        self._db = db
        self._release_scan_lock = release_scan_lock  # scans: the scan's lock ends with it

    def finish_scan(self, scan_id: int, result: ScanResult, policy_summary: Mapping[str, Any] | None = None) -> None:
        """Write every verdict and mark the scan finished, all in one transaction."""
        if result.state == ScanState.RUNNING:
            raise ValueError("finish_scan needs a finished state (complete, partial or failed)")
        try:
            with self._db.errors(f"cannot record scan {scan_id}"), self._db.write() as conn:
                self._write_scan(conn, scan_id, result, policy_summary)
        finally:
            self._release_scan_lock(scan_id)
        self._db.checkpoint()

    def add_watch_verdicts(self, scan_id: int, cluster: str, verdicts: Sequence[Verdict]) -> int:
        """Append verdicts found by ``serve --watch`` to the finished scan ``scan_id`` of ``cluster``, marked
        ``source = watch`` (:class:`VerdictSource`), in one transaction; the scan's own verdicts, counts
        and trend summary stay as the scan found them. Returns the scan's number of watch verdicts (its
        ``stats["watch_verdicts"]``, which tells a reader that caches a loaded scan that it changed).
        Raises StoreError when the scan is not a finished scan of ``cluster`` (retention deleted it, or
        it never finished)."""
        if any(v.source is not VerdictSource.WATCH for v in verdicts):
            raise ValueError("add_watch_verdicts records watch verdicts only")
        with self._db.errors(f"cannot record watch verdicts in scan {scan_id}"), self._db.write() as conn:
            query = sa.select(_scans.c.state, _scans.c.cluster, _scans.c.stats, _scans.c.verdict_set_id).where(
                _scans.c.id == scan_id)
            if not is_sqlite(conn):
                query = query.with_for_update()
            row = conn.execute(query).one_or_none()
            if row is None or row.state not in _FINISHED or row.cluster != cluster:
                raise StoreError(f"cannot record watch verdicts in scan {scan_id}: it is not a finished scan "
                                 f"of cluster {cluster!r}")
            # A verdict set may be shared by other scans (and is named by its content): never changed.
            # The scan is re-pointed at a set of its own members followed by the new ones.
            lock_content(conn)
            old_set = row.verdict_set_id
            new_set = _write_content(conn, verdicts, _set_members(conn, old_set))
            stats = dict(row.stats or {})
            count = int(stats.get("watch_verdicts") or 0) + len(verdicts)
            stats["watch_verdicts"] = count
            conn.execute(_scans.update().where(_scans.c.id == scan_id).values(stats=stats, verdict_set_id=new_set))
            if old_set is not None and old_set != new_set:
                _drop_set_if_unnamed(conn, old_set)
        return count

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

        lock_content(conn)
        set_id = _write_content(conn, result.verdicts)

        counts = Counter(str(v.status) for v in result.verdicts)
        images = image_counts(result.verdicts)  # distinct images: a credential split is one image
        total, compliant = images.images, images.compliant
        if result.state.value in _FINISHED:
            summary = {
                "cluster": result.cluster, "state": result.state.value, "started_at": result.started_at,
                "finished_at": result.finished_at, "policy_digest": storable_text(result.policy_digest, 200),
                "sigaudit_version": storable_text(result.sigaudit_version or row.sigaudit_version, 64),
                "total": total, "compliant": compliant, "counts": dict(sorted(counts.items())),
                "namespaces": _storable_json(_namespace_counts(result.verdicts)),
            }
            insert = dialect_insert(is_sqlite(conn))
            # An upsert: a summary left by a scan whose id was reused must never refuse this scan.
            conn.execute(insert(_summaries).values(scan_id=scan_id, **summary)
                         .on_conflict_do_update(index_elements=[_summaries.c.scan_id], set_=summary))
        # The last statement of the transaction: only now does the scan read as finished.
        conn.execute(
            _scans.update().where(_scans.c.id == scan_id).values(
                state=result.state.value, started_at=result.started_at, finished_at=result.finished_at,
                heartbeat_at=self._db.clock(), policy_digest=result.policy_digest,
                sigaudit_version=result.sigaudit_version or sa.literal_column("sigaudit_version"),
                errors=list(result.errors), counts=dict(sorted(counts.items())),
                total=total, compliant=compliant, verdict_set_id=set_id,
                stats=json.loads(json.dumps(dict(result.stats), default=str)),
                policy_summary=json.loads(json.dumps(dict(policy_summary), default=str)) if policy_summary else None,
            )
        )


def _write_content(conn: sa.Connection, verdicts: Sequence[Verdict], base: _Members | None = None) -> int:
    """Store the verdicts' content that is not stored yet, and return the id of their verdict set:
    the members of ``base`` (an existing set, which is left as it is), then ``verdicts``.

    Verdicts, container groups and the set are looked up by content hash first: what an earlier scan
    wrote is named, not written again, so a scan that finds what the previous one found adds no row
    here at all, and one that finds a change adds the rows of what changed (and a new set: one small
    row per verdict)."""
    v_hashes = [codec.verdict_hash(v) for v in verdicts]
    g_hashes = [codec.containers_hash(v.image.containers) for v in verdicts]
    first = 0 if base is None else len(base.pairs)
    s_hash = codec.verdict_set_hash([*(base.pairs if base else ()), *zip(v_hashes, g_hashes, strict=True)])
    found = conn.execute(sa.select(_sets.c.id).where(_sets.c.content_hash == s_hash)).scalar_one_or_none()
    if found is not None:
        return int(found)

    image_ids = _known(conn, _images, v_hashes)
    new_verdicts: dict[str, Verdict] = {}
    for h, v in zip(v_hashes, verdicts, strict=True):
        if h not in image_ids:
            new_verdicts.setdefault(h, v)
    _write_verdicts(conn, new_verdicts, image_ids)

    group_ids = _known(conn, _groups, g_hashes)
    new_groups: dict[str, tuple[ContainerRef, ...]] = {}
    for h, v in zip(g_hashes, verdicts, strict=True):
        if h not in group_ids:
            new_groups.setdefault(h, v.image.containers)
    ids = _allocate_ids(conn, _groups, len(new_groups))
    group_rows: list[dict[str, Any]] = []
    container_rows: list[dict[str, Any]] = []
    for gid, (h, containers) in zip(ids, new_groups.items(), strict=True):
        group_ids[h] = gid
        group_rows.append({"id": gid, "content_hash": h})
        container_rows.extend(_container_row(gid, pos, c) for pos, c in enumerate(containers))
    _bulk_insert(conn, _groups, group_rows)
    _bulk_insert(conn, _containers, container_rows)

    (set_id,) = _allocate_ids(conn, _sets, 1)
    _bulk_insert(conn, _sets, [{"id": set_id, "content_hash": s_hash, "size": first + len(verdicts)}])
    if base is not None and first:
        conn.execute(_members.insert().from_select(
            ["set_id", "position", "image_id", "group_id"],
            sa.select(sa.literal(set_id), _members.c.position, _members.c.image_id, _members.c.group_id)
            .where(_members.c.set_id == base.set_id)))
    _bulk_insert(conn, _members, [
        {"set_id": set_id, "position": first + pos, "image_id": image_ids[vh], "group_id": group_ids[gh]}
        for pos, (vh, gh) in enumerate(zip(v_hashes, g_hashes, strict=True))
    ])
    return set_id


@dataclass(frozen=True, slots=True)
class _Members:
    """An existing verdict set: its id and its members' (verdict hash, containers hash), in order."""

    set_id: int
    pairs: tuple[tuple[str, str], ...]


def _set_members(conn: sa.Connection, set_id: int | None) -> _Members | None:
    if set_id is None:
        return None
    rows = conn.execute(
        sa.select(_members.c.position, _images.c.content_hash, _groups.c.content_hash.label("group_hash"))
        .join(_images, _images.c.id == _members.c.image_id)
        .join(_groups, _groups.c.id == _members.c.group_id)
        .where(_members.c.set_id == set_id).order_by(_members.c.position)
    ).all()
    size = conn.execute(sa.select(_sets.c.size).where(_sets.c.id == set_id)).scalar()
    if size is None or len(rows) != size or [r.position for r in rows] != list(range(size)):
        raise StoreError(f"verdict set {set_id} is incomplete: the database is damaged")
    return _Members(set_id, tuple((str(r.content_hash), str(r.group_hash)) for r in rows))


def _drop_set_if_unnamed(conn: sa.Connection, set_id: int) -> None:
    """Delete the verdict set ``set_id`` (not its verdicts or groups) if no scan names it: a scan
    re-pointed by watch verdicts leaves its former set behind, one member row per verdict each time,
    which would otherwise wait for the next prune. The caller holds the content lock."""
    if conn.execute(sa.select(sa.exists().where(_scans.c.verdict_set_id == set_id))).scalar():
        return
    conn.execute(_members.delete().where(_members.c.set_id == set_id))
    conn.execute(_sets.delete().where(_sets.c.id == set_id))


def _known(conn: sa.Connection, table: sa.Table, hashes: Sequence[str]) -> dict[str, int]:
    """content hash -> id of the rows of ``table`` that exist already."""
    out: dict[str, int] = {}
    for chunk in chunks(sorted(set(hashes))):
        out.update((h, int(i)) for i, h in conn.execute(
            sa.select(table.c.id, table.c.content_hash).where(table.c.content_hash.in_(chunk))))
    return out


def _write_verdicts(conn: sa.Connection, verdicts: Mapping[str, Verdict], image_ids: dict[str, int]) -> None:
    """Insert the verdicts ``verdicts`` (by content hash) with their signatures and checks."""
    ids = _allocate_ids(conn, _images, len(verdicts))
    image_rows: list[dict[str, Any]] = []
    sig_rows: list[dict[str, Any]] = []
    sig_checks: list[tuple[Check, ...]] = []
    for image_id, (h, verdict) in zip(ids, verdicts.items(), strict=True):
        image_ids[h] = image_id
        image_rows.append({"id": image_id, "content_hash": h, **_image_row(verdict)})
        for pos, sr in enumerate(verdict.signatures):
            sig_rows.append(_signature_row(image_id, pos, sr))
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
    _bulk_insert(conn, _signatures, sig_rows)
    _bulk_insert(conn, _checks, check_rows)


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
    for name, fix in _storable_columns(table).items():
        if name in rows[0] and not _all_storable(table.c[name], [row[name] for row in rows]):
            for row in rows:
                row[name] = fix(row[name])
    return rows


def _all_storable(column: sa.Column[Any], values: list[Any]) -> bool:
    """Whether a whole column of a batch needs no fix (the common case), judged in C: its text all
    ASCII without NUL (then no lone surrogate either) and within the column's length. A cold write of
    10,000 containers called a fix per cell, 160,000 Python calls (issue 20). False when unsure:
    each cell is then fixed as before."""
    if isinstance(column.type, sa.JSON):
        try:  # ensure_ascii=False: a lone surrogate comes out as itself (not ASCII), a NUL as \u0000
            text = json.dumps(values, ensure_ascii=False)
        except (TypeError, ValueError):
            return False
        return text.isascii() and "\\u0000" not in text
    texts = [v for v in values if isinstance(v, str)]
    if not texts:
        return True
    joined = "".join(texts)
    if not joined.isascii() or "\x00" in joined:
        return False
    limit = column.type.length if isinstance(column.type, sa.String) else None
    return limit is None or max(map(len, texts)) <= limit


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


# -- models -> rows -------------------------------------------------------------------------------


def _image_row(v: Verdict) -> dict[str, Any]:
    img = v.image
    ref = img.reference
    if isinstance(img, RunningImage):
        text, unresolved, notes = str(ref), None, list(img.notes)
        secrets = [list(p) for p in img.pull_secrets]
    else:
        text, unresolved, notes, secrets = img.image, img.reason, list(img.notes), []
    return {
        "resolved": isinstance(img, RunningImage),
        "registry": ref.registry if ref else None, "repository": ref.repository if ref else None,
        "tag": ref.tag if ref else None, "digest": ref.digest if ref else None,
        "image": text, "unresolved_reason": unresolved, "notes": notes, "pull_secrets": secrets,
        "status": str(v.status), "reasons": list(v.reasons), "rule": v.rule,
        "policy_source": v.policy_source, "expiring": v.expiring, "not_after": v.not_after,
        "warn_only": v.warn_only, "deciding_reason": v.deciding_reason,
        "exemptions": [codec.exemption_to_json(x) for x in v.exemptions],
        "admission": codec.admission_to_json(v.admission),
        "source": None if v.source is VerdictSource.SCAN else str(v.source),
        "checked_at": v.checked_at,
    }


def _container_row(group_id: int, position: int, c: ContainerRef) -> dict[str, Any]:
    return {
        "group_id": group_id, "position": position,
        "namespace": c.namespace, "pod": c.pod, "pod_uid": c.pod_uid, "container": c.container,
        "container_type": str(c.container_type), "image": c.image, "image_id": c.image_id,
        "workload_kind": c.workload.kind, "workload_name": c.workload.name,
        "pull_secrets": list(c.pull_secrets),
    }


def _signature_row(image_id: int, position: int, s: SignatureResult) -> dict[str, Any]:
    return {
        "image_row_id": image_id, "position": position, "kind": s.kind,
        "verifier": s.verifier, "outcome": str(s.outcome), "reason": s.reason,
        "failure": str(s.failure), "signer": s.signer, "key_sha256": s.key_sha256,
        "identity": s.identity, "issuer": s.issuer, "signed_at": s.signed_at.value if s.signed_at else None,
        "signed_at_source": s.signed_at.source.value if s.signed_at else None, "not_after": s.not_after,
        "details": codec.encode(dict(s.details)),
    }


def _namespace_counts(verdicts: Iterable[Verdict]) -> dict[str, dict[str, int]]:
    """{namespace: {status: verdicts with a container there}}, as counts_by_namespace counts."""
    out: dict[str, Counter[str]] = {}
    for v in verdicts:
        for ns in {c.namespace for c in v.image.containers}:
            out.setdefault(ns, Counter())[str(v.status)] += 1
    return {ns: dict(sorted(c.items())) for ns, c in sorted(out.items())}
