"""Disputes of attestation verdicts: the chain's record (`disputes`, indexed from
`AttestationDisputed`), each watcher's re-check of a decided submission (`dispute_checks`),
when a verdict landed (`attestations.decided_at`) and until when it may be disputed
(`attestations.disputable_until`, as the registry's `submissionOf` says).

Verified attestations indexed before this revision get `decided_at = verified_at`; rejected
ones keep NULL (their window is long past on any chain that ran an older backend).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 09:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.store.types

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attestations") as batch:
        batch.add_column(sa.Column("decided_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("disputable_until", sa.BigInteger(), nullable=True))
    attestations = sa.table(
        "attestations",
        sa.column("status", sa.String),
        sa.column("verified_at", sa.BigInteger),
        sa.column("decided_at", sa.BigInteger),
    )
    op.execute(
        attestations.update()
        .where(attestations.c.status == "verified")
        .values(decided_at=attestations.c.verified_at)
    )
    op.create_table(
        "disputes",
        sa.Column("lease_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("report_hash", sa.String(length=66), nullable=False),
        sa.Column("disputer", sa.String(length=42), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("overturned", sa.Boolean(), nullable=False),
        sa.Column("disputed_at", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("lease_id", "report_hash"),
    )
    op.create_table(
        "dispute_checks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("report_hash", sa.String(length=66), nullable=False),
        sa.Column("watcher", sa.String(length=42), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("reason_codes", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("dispute_tx", sa.String(length=66), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("checked_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lease_id", "report_hash", "watcher", name="uq_dispute_check"),
    )
    op.create_index("ix_dispute_checks_lease_id", "dispute_checks", ["lease_id"])


def downgrade() -> None:
    op.drop_index("ix_dispute_checks_lease_id", table_name="dispute_checks")
    op.drop_table("dispute_checks")
    op.drop_table("disputes")
    with op.batch_alter_table("attestations") as batch:
        batch.drop_column("disputable_until")
        batch.drop_column("decided_at")
