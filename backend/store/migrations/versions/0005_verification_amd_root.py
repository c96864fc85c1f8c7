"""The root each verified report chained to (`amd` or `simulated`), so that a report
signed by the simulated AMD-SP is marked as such wherever it is shown (issue 11).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amd_root", sa.String(length=16), nullable=True))
    # Results stored before this column said it in their detail (`simulated_amd`, set only
    # for reports that verified): carry it over, or a local stack's old results would read
    # as unmarked.
    verifications = sa.table(
        "verifications",
        sa.column("id", sa.BigInteger),
        sa.column("amd_root", sa.String),
        sa.column("detail", sa.JSON),
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(verifications.c.id, verifications.c.detail)).all():
        simulated = row.detail.get("simulated_amd") if isinstance(row.detail, dict) else None
        if simulated is not None:
            bind.execute(
                verifications.update()
                .where(verifications.c.id == row.id)
                .values(amd_root="simulated" if simulated else "amd")
            )


def downgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("amd_root")
