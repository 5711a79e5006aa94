"""signature_relists and images.checked_at: the re-check window (``--recheck-after``)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

With ``--recheck-after``, a digest whose signatures were re-listed within the window is judged from the
verification cache without a registry request (issue 19). ``signature_relists`` records when, per
digest and scope (cluster, registry, repository and the names of the credential sources: a hash, never a
secret), the signatures were last seen attached; ``images.checked_at`` says, for a verdict served from
the window, since when. Scans stored before have NULL (their signatures were listed in the scan).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signature_relists",
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("material_fingerprint", sa.String(length=512), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", "scope", name=op.f("pk_signature_relists")),
    )
    op.create_index("ix_signature_relists_checked_at", "signature_relists", ["checked_at"])
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("checked_at")
    op.drop_index("ix_signature_relists_checked_at", table_name="signature_relists")
    op.drop_table("signature_relists")
