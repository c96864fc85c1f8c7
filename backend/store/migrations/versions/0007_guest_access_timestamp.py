"""The signed timestamp of each lease's guest-access announcement: only a newer one replaces
it, so a replayed older announcement cannot roll the SSH address back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("guest_access") as batch:
        batch.add_column(
            sa.Column("timestamp", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("guest_access") as batch:
        batch.drop_column("timestamp")
