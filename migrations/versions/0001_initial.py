"""initial schema: scans, images, containers, signatures, checks, verification cache

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Timestamps are timezone-aware UTC (scanner.store.schema.UTCDateTime over DateTime(timezone=True)).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cluster", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy_digest", sa.String(length=200), nullable=False),
        sa.Column("sigaudit_version", sa.String(length=64), nullable=False),
        sa.Column("owner_host", sa.String(length=253), server_default="", nullable=False),
        sa.Column("owner_pid", sa.Integer(), server_default="0", nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("compliant", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scans")),
    )
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.create_index("ix_scans_cluster_started_at", ["cluster", "started_at"], unique=False)
        batch_op.create_index("ix_scans_cluster_state", ["cluster", "state"], unique=False)

    op.create_table(
        "verification_cache",
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("trust_fingerprint", sa.String(length=200), nullable=False),
        sa.Column("material_fingerprint", sa.String(length=512), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", "trust_fingerprint", name=op.f("pk_verification_cache")),
    )
    with op.batch_alter_table("verification_cache", schema=None) as batch_op:
        batch_op.create_index("ix_verification_cache_used_at", ["used_at"], unique=False)

    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("registry", sa.String(length=255), nullable=True),
        sa.Column("repository", sa.String(length=512), nullable=True),
        sa.Column("tag", sa.String(length=128), nullable=True),
        sa.Column("digest", sa.String(length=200), nullable=True),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("unresolved_reason", sa.Text(), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("pull_secrets", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("rule", sa.String(length=253), nullable=True),
        sa.Column("policy_source", sa.Text(), nullable=True),
        sa.Column("expiring", sa.Boolean(), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warn_only", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["scan_id"], ["scans.id"], name=op.f("fk_images_scan_id_scans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("scan_id", "position", name="uq_images_scan_id_position"),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index("ix_images_digest", ["digest"], unique=False)
        batch_op.create_index("ix_images_scan_id_status", ["scan_id", "status"], unique=False)

    op.create_table(
        "containers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("image_row_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("pod_uid", sa.String(length=64), nullable=False),
        sa.Column("container", sa.String(length=253), nullable=False),
        sa.Column("container_type", sa.String(length=32), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("image_id", sa.Text(), nullable=True),
        sa.Column("workload_kind", sa.String(length=128), nullable=False),
        sa.Column("workload_name", sa.String(length=253), nullable=False),
        sa.Column("pull_secrets", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_row_id"],
            ["images.id"],
            name=op.f("fk_containers_image_row_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["scan_id"], ["scans.id"], name=op.f("fk_containers_scan_id_scans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_containers")),
    )
    with op.batch_alter_table("containers", schema=None) as batch_op:
        batch_op.create_index("ix_containers_image_row_id", ["image_row_id"], unique=False)
        batch_op.create_index("ix_containers_scan_id_namespace", ["scan_id", "namespace"], unique=False)

    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("image_row_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("verifier", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("failure", sa.String(length=16), nullable=False),
        sa.Column("signer", sa.Text(), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=True),
        sa.Column("identity", sa.Text(), nullable=True),
        sa.Column("issuer", sa.Text(), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_row_id"],
            ["images.id"],
            name=op.f("fk_signatures_image_row_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["scan_id"], ["scans.id"], name=op.f("fk_signatures_scan_id_scans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signatures")),
    )
    with op.batch_alter_table("signatures", schema=None) as batch_op:
        batch_op.create_index("ix_signatures_image_row_id", ["image_row_id"], unique=False)
        batch_op.create_index("ix_signatures_key_sha256", ["key_sha256"], unique=False)
        batch_op.create_index("ix_signatures_scan_id", ["scan_id"], unique=False)

    op.create_table(
        "signature_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signatures.id"],
            name=op.f("fk_signature_checks_signature_id_signatures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signature_checks")),
    )
    with op.batch_alter_table("signature_checks", schema=None) as batch_op:
        batch_op.create_index("ix_signature_checks_signature_id", ["signature_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signature_checks", schema=None) as batch_op:
        batch_op.drop_index("ix_signature_checks_signature_id")

    op.drop_table("signature_checks")
    with op.batch_alter_table("signatures", schema=None) as batch_op:
        batch_op.drop_index("ix_signatures_scan_id")
        batch_op.drop_index("ix_signatures_key_sha256")
        batch_op.drop_index("ix_signatures_image_row_id")

    op.drop_table("signatures")
    with op.batch_alter_table("containers", schema=None) as batch_op:
        batch_op.drop_index("ix_containers_scan_id_namespace")
        batch_op.drop_index("ix_containers_image_row_id")

    op.drop_table("containers")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_scan_id_status")
        batch_op.drop_index("ix_images_digest")

    op.drop_table("images")
    with op.batch_alter_table("verification_cache", schema=None) as batch_op:
        batch_op.drop_index("ix_verification_cache_used_at")

    op.drop_table("verification_cache")
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.drop_index("ix_scans_cluster_state")
        batch_op.drop_index("ix_scans_cluster_started_at")

    op.drop_table("scans")
