"""signatures.signed_at_source: where a signature's signing time comes from

Revision ID: 0003_signed_at_source
Revises: 0002
Create Date: 2026-12-07

A signing time is authentic (RFC 3161 timestamp, Rekor SET, signing authority) or only claimed by the
signer; only an authentic one may keep a signature out of a ``revokedAt`` revocation, so the source is
kept beside the time. Rows written before this revision have NULL: loaded as "unknown", never authentic.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_signed_at_source"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signatures") as batch:
        batch.add_column(sa.Column("signed_at_source", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signatures") as batch:
        batch.drop_column("signed_at_source")
