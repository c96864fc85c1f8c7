"""Failover (issue 20): each lease's history of nodes (`lease_nodes`), from its
`LeaseAccepted` events to the `LeaseFailedOver`, `LeaseDeclined` or `LeaseClosed` that ended
each node's time on it. A chain projection: re-indexing fills it for leases indexed before.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 12:40:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease_nodes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("accepted_block", sa.BigInteger(), nullable=False),
        sa.Column("accepted_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_block", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_lease_nodes_lease_id", "lease_nodes", ["lease_id"])
    op.create_index("ix_lease_nodes_node", "lease_nodes", ["node"])
    # Leases indexed before this revision: their accepts are in chain_events already.
    _backfill()


def _backfill() -> None:
    bind = op.get_bind()
    events = bind.execute(
        sa.text(
            "SELECT name, lease_id, block_number, block_timestamp, args FROM chain_events"
            " WHERE lease_id IS NOT NULL AND name IN"
            " ('LeaseAccepted', 'LeaseDeclined', 'LeaseClosed', 'LeaseFailedOver')"
            " ORDER BY block_number, log_index"
        )
    ).all()

    current: dict[int, dict[str, object]] = {}
    rows: list[dict[str, object]] = []
    for name, lease_id, block, timestamp, args in events:
        values = json.loads(args) if isinstance(args, str) else args
        if name == "LeaseAccepted":
            row: dict[str, object] = {
                "lease_id": lease_id,
                "node": str(values["nodeKey"]).lower(),
                "accepted_block": block,
                "accepted_at": timestamp,
                "ended_block": None,
                "ended_at": None,
                "reason": None,
            }
            rows.append(row)
            current[lease_id] = row
        elif lease_id in current:
            row = current.pop(lease_id)
            row["ended_block"], row["ended_at"] = block, timestamp
            if name == "LeaseFailedOver":  # as backend.indexer.projections.FAILOVER_REASONS
                code = int(values["reason"])
                row["reason"] = {1: "first_attestation_missed", 2: "attestation_expired"}.get(
                    code, "failed_over"
                )
            else:
                row["reason"] = "declined" if name == "LeaseDeclined" else "closed"
    if rows:
        table = sa.table(
            "lease_nodes",
            *(sa.column(name) for name in ("lease_id", "node", "accepted_block", "accepted_at",
                                           "ended_block", "ended_at", "reason")),
        )  # fmt: skip
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_index("ix_lease_nodes_node", table_name="lease_nodes")
    op.drop_index("ix_lease_nodes_lease_id", table_name="lease_nodes")
    op.drop_table("lease_nodes")
