"""Replicas: leader leases, single-use request nonces, one live reservation per lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_LIVE = sa.text("status IN ('reserved', 'accepted')")


def upgrade() -> None:
    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("holder", sa.String(length=80), nullable=False),
        sa.Column("expires_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "request_nonces",
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.String(length=80), nullable=False),
        sa.Column("expires_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signer", "nonce"),
    )
    with op.batch_alter_table("request_nonces", schema=None) as batch_op:
        batch_op.create_index("ix_request_nonces_expires_at", ["expires_at"], unique=False)
    with op.batch_alter_table("siwe_nonces", schema=None) as batch_op:
        batch_op.create_index("ix_siwe_nonces_address", ["address"], unique=False)
    op.create_index(
        "uq_matches_live_lease",
        "matches",
        ["lease_id"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_matches_live_lease", table_name="matches")
    with op.batch_alter_table("siwe_nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_siwe_nonces_address")
    op.drop_table("request_nonces")
    op.drop_table("leader_leases")
