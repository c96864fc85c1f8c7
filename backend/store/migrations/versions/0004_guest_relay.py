"""The guest relay: secrets sealed to attested guests (ciphertext only) and where each
lease's guest serves SSH (issue 11).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sealed_secrets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("report_data", sa.String(length=128), nullable=False),
        sa.Column("enc", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sealed_secrets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sealed_secrets_lease_id"), ["lease_id"], unique=False)
    op.create_table(
        "guest_access",
        sa.Column("lease_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("ssh_port", sa.Integer(), nullable=False),
        sa.Column("updated_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lease_id"),
    )


def downgrade() -> None:
    op.drop_table("guest_access")
    with op.batch_alter_table("sealed_secrets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_secrets_lease_id"))
    op.drop_table("sealed_secrets")
