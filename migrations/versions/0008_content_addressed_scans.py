"""content-addressed scan detail: verdict sets, shared verdicts and container groups

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Every scan used to write one row per verdict, container, signature and check, whether anything had
changed or not (issue 20: +528 KB per unchanged scan of 1,000 pods). A scan now names a verdict set
(``verdict_sets``, its ordered ``verdict_set_members``); each member names a verdict (``images``,
with its signatures and checks) and a container group (``container_groups`` and its ``containers``);
all three are keyed by a hash of their content and shared by every scan with the same content.

Upgrade: existing rows are kept where they are and given the new shape in place — each scan's
verdicts become its verdict set (id = the scan's id), each verdict row its own container group (id =
the image row's id), with ``legacy:<id>`` keys that no new hash can equal (new scans start sharing
from their first write). Downgrade copies every scan's shared rows back into rows of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 200  # scans per step of the downgrade's copy


def _legacy(column: str) -> sa.TextClause:
    return sa.text(f"'legacy:' || CAST({column} AS VARCHAR(20))")


def _bump_sequence(conn: sa.Connection, table: str) -> None:
    """PostgreSQL: after rows were inserted with explicit ids, the next id comes after them."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 - our own table names
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"))


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "verdict_sets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdict_sets")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_verdict_sets_content_hash")),
    )
    op.create_table(
        "container_groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_container_groups")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_container_groups_content_hash")),
    )
    op.create_table(
        "verdict_set_members",
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["container_groups.id"],
                                name=op.f("fk_verdict_set_members_group_id_container_groups")),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_verdict_set_members_image_id_images")),
        sa.ForeignKeyConstraint(["set_id"], ["verdict_sets.id"],
                                name=op.f("fk_verdict_set_members_set_id_verdict_sets"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("set_id", "position", name=op.f("pk_verdict_set_members")),
    )
    op.create_index("ix_verdict_set_members_image_id", "verdict_set_members", ["image_id"])
    op.create_index("ix_verdict_set_members_group_id", "verdict_set_members", ["group_id"])

    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(length=80), nullable=True))
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("scans") as batch:
        batch.add_column(sa.Column("verdict_set_id", sa.Integer(), nullable=True))

    # The data, in place: each verdict row is its own group; each scan's verdicts its own set.
    conn.execute(sa.text(f"UPDATE images SET content_hash = {_legacy('id').text}"))  # noqa: S608
    conn.execute(sa.text(f"INSERT INTO container_groups (id, content_hash) SELECT id, {_legacy('id').text} "  # noqa: S608
                         "FROM images"))
    conn.execute(sa.text("UPDATE containers SET group_id = image_row_id"))
    conn.execute(sa.text(
        f"INSERT INTO verdict_sets (id, content_hash, size) SELECT scan_id, {_legacy('scan_id').text}, count(*) "  # noqa: S608
        "FROM images GROUP BY scan_id"))
    conn.execute(sa.text("INSERT INTO verdict_set_members (set_id, position, image_id, group_id) "
                         "SELECT scan_id, position, id, id FROM images"))
    conn.execute(sa.text("UPDATE scans SET verdict_set_id = id WHERE EXISTS "
                         "(SELECT 1 FROM verdict_sets WHERE verdict_sets.id = scans.id)"))
    _bump_sequence(conn, "verdict_sets")
    _bump_sequence(conn, "container_groups")

    with op.batch_alter_table("signatures") as batch:
        batch.drop_index("ix_signatures_scan_id")
        batch.drop_constraint("fk_signatures_scan_id_scans", type_="foreignkey")
        batch.drop_column("scan_id")
    with op.batch_alter_table("containers") as batch:
        batch.drop_index("ix_containers_scan_id_namespace")
        batch.drop_index("ix_containers_image_row_id")
        batch.drop_constraint("fk_containers_scan_id_scans", type_="foreignkey")
        batch.drop_constraint("fk_containers_image_row_id_images", type_="foreignkey")
        batch.drop_column("scan_id")
        batch.drop_column("image_row_id")
        batch.alter_column("group_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(op.f("fk_containers_group_id_container_groups"), "container_groups",
                                 ["group_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_containers_group_id", ["group_id"])
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_scan_id_status")
        batch.drop_constraint("uq_images_scan_id_position", type_="unique")
        batch.drop_constraint("fk_images_scan_id_scans", type_="foreignkey")
        batch.drop_column("scan_id")
        batch.drop_column("position")
        batch.alter_column("content_hash", existing_type=sa.String(length=80), nullable=False)
        batch.create_unique_constraint(op.f("uq_images_content_hash"), ["content_hash"])
    with op.batch_alter_table("scans") as batch:
        batch.create_foreign_key(op.f("fk_scans_verdict_set_id_verdict_sets"), "verdict_sets",
                                 ["verdict_set_id"], ["id"])
        batch.create_index("ix_scans_verdict_set_id", ["verdict_set_id"])


def downgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("scan_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("position", sa.Integer(), nullable=True))
        batch.drop_constraint("uq_images_content_hash", type_="unique")
        batch.alter_column("content_hash", existing_type=sa.String(length=80), nullable=True)
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("scan_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("image_row_id", sa.Integer(), nullable=True))
        batch.alter_column("group_id", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("signatures") as batch:
        batch.add_column(sa.Column("scan_id", sa.Integer(), nullable=True))
    _copy_back(conn)

    with op.batch_alter_table("scans") as batch:
        batch.drop_index("ix_scans_verdict_set_id")
        batch.drop_constraint("fk_scans_verdict_set_id_verdict_sets", type_="foreignkey")
        batch.drop_column("verdict_set_id")
    op.drop_index("ix_verdict_set_members_group_id", table_name="verdict_set_members")
    op.drop_index("ix_verdict_set_members_image_id", table_name="verdict_set_members")
    op.drop_table("verdict_set_members")
    op.drop_table("verdict_sets")
    with op.batch_alter_table("containers") as batch:
        batch.drop_index("ix_containers_group_id")
        batch.drop_constraint("fk_containers_group_id_container_groups", type_="foreignkey")
        batch.drop_column("group_id")
        batch.alter_column("scan_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("image_row_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_containers_scan_id_scans", "scans", ["scan_id"], ["id"], ondelete="CASCADE")
        batch.create_foreign_key("fk_containers_image_row_id_images", "images", ["image_row_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_index("ix_containers_image_row_id", ["image_row_id"])
        batch.create_index("ix_containers_scan_id_namespace", ["scan_id", "namespace"])
    op.drop_table("container_groups")
    with op.batch_alter_table("signatures") as batch:
        batch.alter_column("scan_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_signatures_scan_id_scans", "scans", ["scan_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_signatures_scan_id", ["scan_id"])
    with op.batch_alter_table("images") as batch:
        batch.drop_column("content_hash")
        batch.alter_column("scan_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("position", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_images_scan_id_scans", "scans", ["scan_id"], ["id"], ondelete="CASCADE")
        batch.create_unique_constraint("uq_images_scan_id_position", ["scan_id", "position"])
        batch.create_index("ix_images_scan_id_status", ["scan_id", "status"])


def _copy_back(conn: sa.Connection) -> None:
    """Give every scan rows of its own again (a copy of each shared verdict, signature, check and
    container it names), then delete the shared rows."""
    meta = sa.MetaData()
    scans, images, containers, signatures, checks, members = (
        sa.Table(t, meta, autoload_with=conn)
        for t in ("scans", "images", "containers", "signatures", "signature_checks", "verdict_set_members"))
    next_id = {t.name: int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0))).scalar_one()) + 1
               for t in (images, containers, signatures, checks)}

    def take(table: sa.Table) -> int:
        next_id[table.name] += 1
        return next_id[table.name] - 1

    def plain(row: Any, drop: Sequence[str] = ()) -> dict[str, Any]:
        return {k: v for k, v in row._mapping.items() if k not in drop}

    shared = int(next_id["images"])  # every image row below this id is a shared one, deleted at the end
    scan_rows = conn.execute(sa.select(scans.c.id, scans.c.verdict_set_id)
                             .where(scans.c.verdict_set_id.is_not(None)).order_by(scans.c.id)).all()
    for i in range(0, len(scan_rows), _BATCH):
        new_images: list[dict[str, Any]] = []
        new_containers: list[dict[str, Any]] = []
        new_sigs: list[dict[str, Any]] = []
        new_checks: list[dict[str, Any]] = []
        for scan_id, set_id in scan_rows[i : i + _BATCH]:
            for m in conn.execute(sa.select(members).where(members.c.set_id == set_id).order_by(members.c.position)):
                image = conn.execute(sa.select(images).where(images.c.id == m.image_id)).one()
                image_id = take(images)
                new_images.append({**plain(image, ("content_hash",)), "id": image_id, "scan_id": scan_id,
                                   "position": m.position})
                for c in conn.execute(sa.select(containers).where(containers.c.group_id == m.group_id)):
                    new_containers.append({**plain(c, ("group_id",)), "id": take(containers), "scan_id": scan_id,
                                           "image_row_id": image_id})
                for s in conn.execute(sa.select(signatures).where(signatures.c.image_row_id == m.image_id)):
                    sig_id = take(signatures)
                    new_sigs.append({**plain(s), "id": sig_id, "scan_id": scan_id, "image_row_id": image_id})
                    new_checks.extend({**plain(k), "id": take(checks), "signature_id": sig_id} for k in conn.execute(
                        sa.select(checks).where(checks.c.signature_id == s.id)))
        for table, rows in ((images, new_images), (containers, new_containers), (signatures, new_sigs),
                            (checks, new_checks)):
            if rows:
                conn.execute(table.insert(), rows)
    # The shared rows: their copies are in place.
    old_images = sa.select(images.c.id).where(images.c.id < shared)
    old_sigs = sa.select(signatures.c.id).where(signatures.c.image_row_id.in_(old_images))
    conn.execute(checks.delete().where(checks.c.signature_id.in_(old_sigs)))
    conn.execute(signatures.delete().where(signatures.c.image_row_id.in_(old_images)))
    conn.execute(containers.delete().where(containers.c.scan_id.is_(None)))
    conn.execute(members.delete())
    conn.execute(images.delete().where(images.c.id < shared))
    for table in (images, containers, signatures, checks):
        _bump_sequence(conn, table.name)
