"""The service ports each lease's node forwards to its guest (issue 19): (guest port, host
port) pairs, announced with the SSH address in the same node-signed GuestAccess message.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("guest_access") as batch:
        batch.add_column(sa.Column("ports", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("guest_access") as batch:
        batch.drop_column("ports")
