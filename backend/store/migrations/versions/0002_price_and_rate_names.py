"""One vocabulary: a node's price per vCPU-second, a lease's (maximum) rate per second.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 21:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (table, old name, new name); renames keep the data, the types are unchanged.
_RENAMES = (
    ("nodes", "price_per_second", "price_per_vcpu_second"),
    ("leases", "min_stake", "min_node_stake"),
    ("leases", "max_price_per_second", "max_rate_per_second"),
    ("leases", "price_per_second", "rate_per_second"),
)


def upgrade() -> None:
    for table, old, new in _RENAMES:
        op.alter_column(table, old, new_column_name=new)


def downgrade() -> None:
    for table, old, new in reversed(_RENAMES):
        op.alter_column(table, new, new_column_name=old)
