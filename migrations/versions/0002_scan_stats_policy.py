"""scans.stats and scans.policy_summary: the scan's own counters and the policy it applied

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The metrics collector reads registry/verification counters of stored scans; the report's exemptions
register lists every exemption of the policy, including those that matched no image.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scans") as batch:
        batch.add_column(sa.Column("stats", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("policy_summary", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scans") as batch:
        batch.drop_column("policy_summary")
        batch.drop_column("stats")
