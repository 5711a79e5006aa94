"""images.exemptions: the exemptions and waivers that mattered to a verdict, as fields

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

The report's exemptions register reads which exemption (or a rule's own waiver) was applied or had
lapsed from this column (``scanner.models.ExemptionRef``), never from the reasons' words. Scans stored
before have NULL: the report says their exemption details were not recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("exemptions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("exemptions")
