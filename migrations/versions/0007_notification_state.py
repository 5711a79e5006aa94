"""notification_state: what each notification receiver was told, so a violation is sent once

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

After each scan, the violations that appeared since the previous complete scan are sent to the
configured receivers (issue 24); this table holds, per cluster, receiver name and violation key, the
fingerprint last sent, so that the next scan resends only what changed and resolves what ended. It
holds no receiver URL and no secret.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_state",
        sa.Column("cluster", sa.String(length=253), nullable=False),
        sa.Column("receiver", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("namespaces", sa.JSON(), nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cluster", "receiver", "key", name=op.f("pk_notification_state")),
    )


def downgrade() -> None:
    op.drop_table("notification_state")
