"""evidence: content-addressed material of verifications, for evidence packs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

An evidence pack (issue #23) holds the registry answers each verdict was reached on; a warm scan
fetches no signatures, so the material of the first (cold) verification is kept here, content-
addressed (``evidence_blobs``) and named (``evidence_refs``: ``material/<digest>/<fingerprint>``
and ``scan/<id>``), so that ``sigaudit evidence --scan ID`` builds a pack for any scan in retention.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evidence_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_evidence_blobs")),
    )
    op.create_table(
        "evidence_refs",
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_evidence_refs")),
    )


def downgrade() -> None:
    op.drop_table("evidence_refs")
    op.drop_table("evidence_blobs")
