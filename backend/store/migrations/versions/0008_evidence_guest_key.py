"""The lease and the guest-key hash of each evidence bundle, indexed: the verifier rejects a
guest key another live lease already claimed (one guest, one lease).

Bundles stored before this revision keep NULL in both: they claim no key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 06:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evidence") as batch:
        batch.add_column(sa.Column("lease_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("guest_key_hash", sa.String(66), nullable=True))
        batch.create_index("ix_evidence_guest_key_hash", ["guest_key_hash"])


def downgrade() -> None:
    with op.batch_alter_table("evidence") as batch:
        batch.drop_index("ix_evidence_guest_key_hash")
        batch.drop_column("guest_key_hash")
        batch.drop_column("lease_id")
