"""Challenge requests (issue 20): a lease's node asks the failover watch to challenge its
lease, so a guest relaunched after a crash may attest at once (`challenge_requests`, one row
per lease at most).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from backend.store.types import UtcDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "challenge_requests",
        sa.Column("lease_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("requested_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lease_id"),
    )


def downgrade() -> None:
    op.drop_table("challenge_requests")
