"""images.admission: why a non-compliant image judged by an imported admission policy runs anyway

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

A verdict's ``admission`` finding (``scanner.models.AdmissionFinding``: the policy, whether it would admit
the image now, its causes strongest first with their evidence), as JSON. Information only: it never
changes a status. NULL for verdicts without one and for scans stored before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("admission", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("admission")
