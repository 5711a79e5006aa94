"""images.deciding_reason: which of a verdict's reasons decided its status

Revision ID: 0004
Revises: 0003_signed_at_source
Create Date: 2026-12-07

Tables and reports show the reason that decided a verdict (a revocation, not another key's failure
listed first) from this field; they never parse the reasons' words. Scans stored before have NULL,
read as 0 (the first reason, what they showed before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003_signed_at_source"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("deciding_reason", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("deciding_reason")
