"""scan_summaries: what a scan's trend needs, kept after retention deletes its detail

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

``sigaudit db prune`` deletes old scans' verdicts, containers and signatures; the report's trend reads
one small row per finished scan from this table instead, so it covers years while the detail covers
the retention window (issue 20). Finished scans stored before are back-filled here, a batch of scans
at a time. Space freed by prune returns to the file on SQLite with ``auto_vacuum=incremental``, which
:func:`scanner.store.migrate.upgrade` turns on after the migrations (VACUUM cannot run inside them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 200  # scans per back-fill step


def upgrade() -> None:
    op.create_table(
        "scan_summaries",
        sa.Column("scan_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cluster", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("policy_digest", sa.String(length=200), nullable=False),
        sa.Column("sigaudit_version", sa.String(length=64), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("compliant", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("namespaces", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("scan_id", name=op.f("pk_scan_summaries")),
    )
    op.create_index("ix_scan_summaries_cluster_started_at", "scan_summaries", ["cluster", "started_at"])
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    meta = sa.MetaData()
    scans = sa.Table("scans", meta, autoload_with=conn)
    images = sa.Table("images", meta, autoload_with=conn)
    containers = sa.Table("containers", meta, autoload_with=conn)
    summaries = sa.Table("scan_summaries", meta, autoload_with=conn)
    ids = list(conn.execute(
        sa.select(scans.c.id).where(scans.c.state.in_(["complete", "partial"])).order_by(scans.c.id)
    ).scalars())
    for i in range(0, len(ids), _BATCH):
        chunk = ids[i : i + _BATCH]
        namespaces: dict[int, dict[str, dict[str, int]]] = {scan_id: {} for scan_id in chunk}
        for scan_id, ns, status, n in conn.execute(
            sa.select(containers.c.scan_id, containers.c.namespace, images.c.status,
                      sa.func.count(sa.distinct(images.c.id)))
            .join(images, images.c.id == containers.c.image_row_id)
            .where(containers.c.scan_id.in_(chunk))
            .group_by(containers.c.scan_id, containers.c.namespace, images.c.status)
        ):
            namespaces[scan_id].setdefault(ns, {})[status] = int(n)
        rows = [
            {"scan_id": r.id, "cluster": r.cluster, "state": r.state, "started_at": r.started_at,
             "finished_at": r.finished_at, "policy_digest": r.policy_digest,
             "sigaudit_version": r.sigaudit_version, "total": r.total, "compliant": r.compliant,
             "counts": r.counts or {}, "namespaces": namespaces[r.id]}
            for r in conn.execute(sa.select(scans).where(scans.c.id.in_(chunk)))
        ]
        if rows:
            conn.execute(summaries.insert(), rows)


def downgrade() -> None:
    op.drop_index("ix_scan_summaries_cluster_started_at", table_name="scan_summaries")
    op.drop_table("scan_summaries")
