"""Evidence material (issue #23): content-addressed blobs, written once, and the names that point at
them (``scan/<id>``, ``material/<digest>/<fingerprint>``)."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from scanner.store.core import Db, dialect_insert, lock_content
from scanner.store.core import chunks as _chunks
from scanner.store.engine import is_sqlite
from scanner.store.schema import evidence_blobs as _blobs
from scanner.store.schema import evidence_refs as _refs


class EvidenceMissing(Exception):
    """A blob that what evidence_put writes names, and that it was told the store holds, is not stored
    (``db prune`` deleted it since it was looked up): nothing was written."""


class Evidence:
    def __init__(self, db: Db) -> None:
        self._db = db

    def evidence_put(self, blobs: Mapping[str, bytes], refs: Mapping[str, str], *,
                     needs: Iterable[str] = (), at_head: bool = False, own: Iterable[str] = ()) -> None:
        """Write blobs (keyed by their sha256 hex, checked) and names, each only if absent (a blob: or stored
        under its name but not those bytes, which it then gets): what a name pointed at first is what it keeps
        pointing at. ``own``: names of ``refs`` this write alone may write (a scan's ``scan/<id>``: its id is
        new, the scan writes it once), which point at what it says whatever was found under them (a name
        planted ahead under the predictable id was kept, and the pack showed the planted index as the scan's).
        One transaction. ``needs``: blobs stored
        already that what is written names (a scan's index naming the image entries an earlier scan
        stored): checked under the content lock, so that ``db prune`` cannot delete one between the
        caller's look and this write; EvidenceMissing, and nothing written, when one is gone.
        ``at_head``: what is written is read right only by this sigaudit's revision (an index of schema 2):
        StoreError, nothing written, unless the database is at it, checked under the content lock (which
        the downgrade below it takes): a scan or `serve` started before a `db downgrade` never leaves an
        index the earlier version reads as no images (and whose entries its prune deletes)."""
        for sha, data in blobs.items():
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError(f"evidence blob {sha} does not hash to its name")
        insert = dialect_insert(is_sqlite(self._db.engine))
        now = self._db.clock()
        needed = sorted(set(needs) - set(blobs))
        with self._db.errors("cannot write the evidence material"), self._db.write() as conn:
            lock_content(conn)  # against evidence_prune's deletion (a blob named here is never deleted under it)
            if at_head:
                from scanner.store.migrate import check_schema_on

                check_schema_on(conn, self._db.shown)
            for chunk in _chunks(needed):
                found = set(conn.execute(sa.select(_blobs.c.sha256).where(_blobs.c.sha256.in_(chunk))).scalars())
                if found != set(chunk):
                    raise EvidenceMissing(f"evidence blob(s) {sorted(set(chunk) - found)} are no longer stored")
            # A row already under a blob's name is kept only when it holds these very bytes (so it hashes to
            # its name): one planted ahead under the predictable name of content yet to be written, or left
            # damaged, gets them, compared in the database (no stored blob is read back nor hashed here): an
            # insert-or-ignore kept it, and every reader of what names it failed on it forever.
            put = insert(_blobs)
            put = put.on_conflict_do_update(index_elements=[_blobs.c.sha256], set_={"data": put.excluded.data},
                                            where=_blobs.c.data.is_distinct_from(put.excluded.data))
            for chunk in _chunks(sorted(blobs)):
                conn.execute(put, [{"sha256": s, "data": blobs[s]} for s in chunk])
            mine = set(own)
            if mine - set(refs):
                raise ValueError(f"evidence names {sorted(mine - set(refs))} are not written")
            first = insert(_refs).on_conflict_do_nothing(index_elements=[_refs.c.name])
            claim = insert(_refs)
            claim = claim.on_conflict_do_update(index_elements=[_refs.c.name],
                                                set_={"sha256": claim.excluded.sha256,
                                                      "created_at": claim.excluded.created_at})
            for put_refs, names in ((first, sorted(set(refs) - mine)), (claim, sorted(mine))):
                for chunk in _chunks(names):
                    conn.execute(put_refs, [{"name": n, "sha256": refs[n], "created_at": now} for n in chunk])

    def evidence_refs(self, names: Iterable[str]) -> dict[str, str]:
        """name -> sha256 for the names that exist."""
        out: dict[str, str] = {}
        with self._db.errors("cannot read the evidence material"), self._db.read() as conn:
            for chunk in _chunks(sorted(set(names))):
                for row in conn.execute(sa.select(_refs.c.name, _refs.c.sha256).where(_refs.c.name.in_(chunk))):
                    out[row.name] = row.sha256
        return out

    def evidence_refs_under(self, prefix: str) -> dict[str, str]:
        """name -> sha256 for the names that start with ``prefix`` (a scan's ``serve --watch`` batches)."""
        with self._db.errors("cannot read the evidence material"), self._db.read() as conn:
            rows = conn.execute(sa.select(_refs.c.name, _refs.c.sha256).where(
                _refs.c.name.startswith(prefix, autoescape=True)))
            return {row.name: row.sha256 for row in rows}

    def evidence_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """sha256 -> bytes for the blobs that exist (each checked against its name)."""
        out: dict[str, bytes] = {}
        with self._db.errors("cannot read the evidence material"), self._db.read() as conn:
            for chunk in _chunks(sorted(set(shas))):
                for row in conn.execute(sa.select(_blobs.c.sha256, _blobs.c.data).where(_blobs.c.sha256.in_(chunk))):
                    if not isinstance(row.data, bytes | bytearray | memoryview):
                        continue  # SQLite keeps what it is given: a planted TEXT value is no blob (bytes() raised)
                    data = bytes(row.data)
                    if hashlib.sha256(data).hexdigest() == row.sha256:
                        out[row.sha256] = data
        return out


# A scan's evidence index names its image entries (the bulk of it: every container of every image) as a blob
# of their own (index schema 2), stored once for every scan whose entries are the same: a scan that judged
# the same images on the same material as the previous one stores and compresses no entries at all (issue
# 19). ``images/<sha256 of the entries' text>`` names that blob: a writer's look-up only (the index names the
# blob itself), kept by ``db prune`` while a kept index names the blob.
IMAGES_PREFIX = "images/"


def images_name(text_sha256: str) -> str:
    return f"{IMAGES_PREFIX}{text_sha256}"


# What a stored index or its image entries may decompress to: a 10,000-container scan's entries are ~4.5 MB of
# text; a blob that inflates past this (a gzip bomb planted in the database) is refused, never held.
MAX_INDEX_TEXT = 256 << 20


def gunzip(data: bytes, limit: int | None = None) -> bytes:
    """What the gzip stream ``data`` holds (every member, NUL padding after each skipped, as ``gzip.decompress``),
    at most ``limit`` bytes of it. ValueError for anything else: not gzip, truncated, a damaged deflate body
    (zlib.error, which is no OSError), trailing garbage, or more than ``limit`` bytes. Every reader of a stored
    index goes through here (and migration 0013, which must read what an earlier reader reads), so that
    damaged or hostile rows are a clear error, never an unexpected exception (exit 3)."""
    limit = MAX_INDEX_TEXT if limit is None else limit
    if not data:
        raise ValueError("empty, not gzip")
    out: list[bytes] = []
    size = 0
    rest = data
    try:
        while rest:  # member by member
            z = zlib.decompressobj(31)
            chunk = rest
            while chunk and not z.eof:
                out.append(z.decompress(chunk, limit - size + 1))
                size += len(out[-1])
                if size > limit:
                    raise ValueError(f"it inflates past {limit} bytes")
                chunk = z.unconsumed_tail
            if not z.eof:
                out.append(z.flush())
                size += len(out[-1])
            if not z.eof or size > limit:
                raise ValueError("a truncated gzip stream" if not z.eof else f"it inflates past {limit} bytes")
            rest = z.unused_data.lstrip(b"\0")  # NUL padding after a member, as gzip.decompress skips it
    except zlib.error as exc:
        raise ValueError(f"not gzip: {exc}") from None
    return b"".join(out)


def index_images(index: Mapping[str, Any], blobs: Callable[[Iterable[str]], Mapping[str, bytes]]) -> list[Any]:
    """The image entries of a scan's (or watch batch's) evidence index: its own ``images`` (schema 1), or
    those of the blob its ``images_blob`` names (schema 2), whose text must hash to the ``text_sha256`` the
    index says. ValueError when they cannot be read as a list (missing, damaged, or not what the index says)."""
    named = index.get("images_blob")
    if named is None:
        images = index.get("images", [])
    else:
        if not isinstance(named, dict) or not isinstance(named.get("sha256"), str):
            raise ValueError("its images_blob is malformed")
        sha = named["sha256"]
        data = blobs([sha]).get(sha)
        if data is None:
            raise ValueError(f"its image entries ({sha}) are missing from the store")
        try:
            text = gunzip(data)
        except ValueError as exc:
            raise ValueError(f"its image entries ({sha}) are unreadable: {exc}") from None
        if hashlib.sha256(text).hexdigest() != named.get("text_sha256"):
            raise ValueError(f"its image entries ({sha}) are not those it names")
        try:
            images = json.loads(text)
        except RecursionError:
            raise ValueError(f"its image entries ({sha}) nest too deep") from None
    if not isinstance(images, list):
        raise ValueError("its images are not a list")
    return images


def material_name(digest: str, fingerprint: str) -> str:
    """The name of the material a digest was verified on, cold, under a material fingerprint."""
    return f"material/{digest}/{hashlib.sha256(fingerprint.encode()).hexdigest()}"


def _shas_in(doc: Any, key: str) -> set[str]:
    return {str(e[key]) for e in doc if isinstance(e, dict) and e.get(key)} if isinstance(doc, list) else set()


MAX_PRUNE_LOOKS = 100  # evidence written while one prune runs, looked at again at most this often


def evidence_prune(db: Db, batch: int) -> int:
    """Drop the evidence no kept scan and no cache entry can use: ``scan/<id>`` names of deleted scans,
    ``material/...`` names of no cache entry, and every blob no kept name reaches. Returns the blobs
    deleted. Reads each kept scan's index (a few hundred KB for 10,000 pods): prune is rare."""
    from scanner.models import ScanState
    from scanner.store.core import cache as _cache
    from scanner.store.core import scans as _scans

    with db.read() as conn:
        if conn.execute(sa.select(_scans.c.id).where(_scans.c.state == ScanState.RUNNING.value).limit(1)).first():
            return 0  # a running scan writes its evidence at its end: a later prune collects instead
        # The blobs first, then the names: a blob written after this (a `serve --watch` batch, which no
        # running scan announces) is never a candidate; an existing blob a name written later reaches is
        # found by the look at the names before each deletion (below).
        every = [s for (s,) in conn.execute(sa.select(_blobs.c.sha256))]
        refs = {r.name: r.sha256 for r in conn.execute(sa.select(_refs.c.name, _refs.c.sha256))}
        live_scans = {f"scan/{i}" for (i,) in conn.execute(sa.select(_scans.c.id))}
        live_material = {material_name(r.digest, r.material_fingerprint)
                         for r in conn.execute(sa.select(_cache.c.digest, _cache.c.material_fingerprint))}
    # scan/<id>/watch/<n>: what `serve --watch` added to scan <id> lives as long as the scan
    dead = sorted(n for n in refs if n not in live_scans and n not in live_material
                  and n.split("/watch/", 1)[0] not in live_scans and not n.startswith(IMAGES_PREFIX))
    for chunk in _chunks(dead, batch):
        with db.write() as conn:
            conn.execute(_refs.delete().where(_refs.c.name.in_(chunk)))
    gone = set(dead)
    kept = {n: s for n, s in refs.items() if n not in gone}
    ev = Evidence(db)
    # an images/ name keeps nothing alive: it is kept while a kept index names its blob
    live = _reached(ev, {n: s for n, s in kept.items() if not n.startswith(IMAGES_PREFIX)}, batch)
    stale = sorted(n for n, s in kept.items() if n.startswith(IMAGES_PREFIX) and s not in live)
    for chunk in _chunks(stale, batch):
        with db.write() as conn:
            conn.execute(_refs.delete().where(_refs.c.name.in_(chunk)))
    kept = {n: s for n, s in kept.items() if n not in set(stale)}
    doomed = sorted(set(every) - live)
    deleted, i, looks = 0, 0, 0
    while i < len(doomed):
        chunk = doomed[i:i + batch]
        with db.write() as conn:
            lock_content(conn)  # evidence_put takes it too: no name is written between this look and the delete
            # names are only ever added (but here): another count means a writer named material since
            changed = conn.execute(sa.select(sa.func.count()).select_from(_refs)).scalar_one() != len(kept)
            if not changed:
                chunk = [sha for sha in chunk if sha not in live]
                if chunk:
                    conn.execute(_blobs.delete().where(_blobs.c.sha256.in_(chunk)))
        if not changed:
            deleted, i = deleted + len(chunk), i + batch
            continue
        looks += 1
        if looks > MAX_PRUNE_LOOKS:  # a writer busier than the prune: the next prune collects the rest
            break
        with db.read() as conn:  # what the new names reach lives too; then this chunk again
            now = {r.name: r.sha256 for r in conn.execute(sa.select(_refs.c.name, _refs.c.sha256))}
        live |= _reached(ev, {n: sha for n, sha in now.items() if n not in kept}, batch)
        kept = now
    return deleted


def _reached(ev: Evidence, named: Mapping[str, str], batch: int) -> set[str]:
    """Every blob the names reach: their own, a scan's (or watch batch's) index's trust files and image
    materials, each material's registry and trust answers."""
    live: set[str] = set(named.values())
    material_docs: set[str] = set()
    for name, sha in named.items():
        data = ev.evidence_blobs([sha]).get(sha)
        if data is None:
            continue
        try:
            if name.startswith("scan/"):
                index = json.loads(gunzip(data))
                live |= _shas_in(index.get("trust"), "sha256")
                entries = index.get("images_blob")
                if isinstance(entries, dict) and entries.get("sha256"):
                    live.add(str(entries["sha256"]))  # kept even when damaged: never the prune's to judge
                material_docs |= _shas_in(index_images(index, ev.evidence_blobs), "material")
            else:
                material_docs.add(sha)
        except (ValueError, AttributeError, RecursionError):
            continue  # unreadable: its blobs are not known to be needed, nor kept by it
    live |= material_docs
    for chunk in _chunks(sorted(material_docs), batch):
        for data in ev.evidence_blobs(chunk).values():
            try:
                doc = json.loads(data)
                # the registry answers and the trust answers (CRLs, listings...) the verification read
                live |= _shas_in(doc.get("answers"), "sha256") | _shas_in(doc.get("trust"), "sha256")
            except (ValueError, AttributeError, RecursionError):
                continue
    return live
