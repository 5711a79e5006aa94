"""images.source: verdicts found by ``sigaudit serve --watch`` between two scans

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A watch-found verdict (a new running digest verified within seconds of its container starting) is
recorded against the latest complete scan with ``source = 'watch'``; the scan's own verdicts keep
NULL (``scan``). Reports, the JSON document and the API show the marker.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("source")
