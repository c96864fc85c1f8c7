"""Sealed messages carry the renter's sequence number and EIP-712 signature (issue 17): the
guest installs one only when its renter signed it and its seq is above the last installed.
Table `guest_status`: the installed seq as the guest signed it, relayed by the node.

Rows queued before have neither, and no guest would accept them: they are dropped.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.store.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM sealed_secrets")
    with op.batch_alter_table("sealed_secrets") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("signature", sa.String(length=130), server_default="", nullable=False)
        )
    op.create_table(
        "guest_status",
        sa.Column("lease_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.String(length=130), nullable=False),
        sa.Column("updated_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lease_id"),
    )


def downgrade() -> None:
    op.drop_table("guest_status")
    with op.batch_alter_table("sealed_secrets") as batch:
        batch.drop_column("signature")
        batch.drop_column("seq")
