"""evidence indexes of schema 2: the revision that marks them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

A scan's evidence index (``scan/<id>``) may now be of schema 2: a head naming its image entries as a
shared, content-addressed blob (``images_blob``: ``sha256`` of the gzipped blob, ``text_sha256`` of its
text; found again by writers under ``images/<text_sha256>``). An earlier sigaudit does not know these
blobs: its ``db prune`` deletes them, after which every pack of those scans fails. No table changes; this
revision exists so that an earlier sigaudit refuses the database ("this sigaudit needs 0012").

Upgrade: nothing to do (indexes of schema 1 stay readable). Downgrade: every index of schema 2 is written
back as schema 1 (its entries inlined, gzipped, stored under the hash of the new bytes and the scan's name
pointed at them), the ``images/`` names dropped; the blobs no name reaches any more are left to ``db prune``.
An index whose entries are missing or not what it names cannot be written back: the downgrade is refused
(nothing changed) naming those scans, since the earlier reader would take such an index for no images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 100  # indexes read per step of the downgrade

_blobs = sa.table("evidence_blobs", sa.column("sha256", sa.String(64)), sa.column("data", sa.LargeBinary))
_refs = sa.table("evidence_refs", sa.column("name", sa.String(512)), sa.column("sha256", sa.String(64)))


def upgrade() -> None:
    pass  # a version marker: schema-1 indexes stay as they are and readable


def _gunzip(data: bytes) -> bytes | None:
    """The content of the gzip stream ``data`` as the store's readers read it (every member, NUL padding after
    each, as every earlier reader's ``gzip.decompress``: an index an earlier sigaudit reads must be recognised
    here for what it is, or a schema-2 index it would read as no images is left as it is), at most
    MAX_INDEX_TEXT bytes; None: anything else. (The entries are checked against the text the index names.)"""
    from scanner.store.evidence import gunzip

    try:
        return gunzip(data)
    except ValueError:
        return None


def _blob(conn: sa.Connection, sha: str) -> bytes | None:
    data = conn.execute(sa.select(_blobs.c.data).where(_blobs.c.sha256 == sha)).scalar()
    if not isinstance(data, bytes | bytearray | memoryview) or hashlib.sha256(bytes(data)).hexdigest() != sha:
        return None
    return bytes(data)


def downgrade() -> None:
    # the index writer's own encoding (canonical JSON, deterministic gzip): what is written back here is byte
    # for byte what sigaudit writes for that document
    from scanner.evidence.capture import _gzip, canonical_json
    from scanner.store.core import lock_content

    conn = op.get_bind()
    # a writer of schema-2 indexes checks the revision under this lock (SQLite: BEGIN IMMEDIATE already):
    # none commits one between the look at the names below and this revision's end
    lock_content(conn)
    names = [n for (n,) in conn.execute(sa.select(_refs.c.name).where(_refs.c.name.startswith("scan/"))
                                        .order_by(_refs.c.name))]
    damaged: list[str] = []
    entries_cache: tuple[tuple[str, Any], list[Any]] | None = None  # consecutive scans mostly share entries
    for i in range(0, len(names), _BATCH):
        chunk = names[i : i + _BATCH]
        rows = conn.execute(sa.select(_refs.c.name, _refs.c.sha256).where(_refs.c.name.in_(chunk))
                            .order_by(_refs.c.name)).all()
        for name, sha in rows:
            data = _blob(conn, sha)
            text = _gunzip(data) if data is not None else None
            try:
                index = json.loads(text) if text is not None else None
            except (ValueError, RecursionError):
                index = None
            if not isinstance(index, dict) or "images_blob" not in index:
                continue  # schema 1 (or unreadable, which the earlier readers refuse as before)
            named = index["images_blob"]
            images: Any = None
            if isinstance(named, dict) and isinstance(named.get("sha256"), str) and "images" not in index:
                # the pair, never a concatenation: a planted head naming sha256 + text_sha256 split elsewhere
                # would otherwise be given another scan's entries instead of being refused
                key = (named["sha256"], named.get("text_sha256"))
                if entries_cache is not None and entries_cache[0] == key:
                    images = entries_cache[1]
                else:
                    raw = _blob(conn, named["sha256"])
                    entries = _gunzip(raw) if raw is not None else None
                    if entries is not None and hashlib.sha256(entries).hexdigest() == named.get("text_sha256"):
                        try:
                            images = json.loads(entries)
                        except (ValueError, RecursionError):
                            images = None
                    if isinstance(images, list):
                        entries_cache = (key, images)
            if not isinstance(images, list):
                damaged.append(name)
                continue
            head = {k: v for k, v in index.items() if k != "images_blob"}
            try:
                doc = _gzip([canonical_json({**head, "schema_version": 1, "images": images})])
            except (ValueError, RecursionError):  # a lone surrogate ("\\ud800" read from the JSON) is no UTF-8
                damaged.append(name)
                continue
            new = hashlib.sha256(doc).hexdigest()
            if conn.execute(sa.select(_blobs.c.sha256).where(_blobs.c.sha256 == new)).first() is None:
                conn.execute(_blobs.insert().values(sha256=new, data=doc))
            elif _blob(conn, new) is None:  # a row under that name not holding those bytes (damaged, or
                # planted ahead: the bytes written here are predictable): it gets them, or the index is lost
                conn.execute(_blobs.update().where(_blobs.c.sha256 == new).values(data=doc))
            conn.execute(_refs.update().where(_refs.c.name == name).values(sha256=new))
    if damaged:
        from scanner.errors import StoreError

        shown = ", ".join(damaged[:10]) + (f" and {len(damaged) - 10} more" if len(damaged) > 10 else "")
        raise StoreError(
            f"cannot downgrade below the evidence index schema 2: {len(damaged)} scan(s) hold an index whose "
            f"image entries are missing or damaged ({shown}); an earlier sigaudit would read them as no "
            "images. Delete those scans (`sigaudit db prune`) or keep this version; nothing was changed")
    conn.execute(_refs.delete().where(_refs.c.name.startswith("images/")))
