"""Initial schema: chain projections, indexer state, off-chain records.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 14:33:53.443184
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attestations",
        sa.Column("lease_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("report_hash", sa.String(length=66), nullable=False),
        sa.Column("measurement", sa.String(length=98), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("submitted_block", sa.BigInteger(), nullable=False),
        sa.Column("submitted_at", sa.BigInteger(), nullable=False),
        sa.Column("verified_at", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("lease_id"),
    )
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attestations_report_hash"), ["report_hash"], unique=False
        )

    op.create_table(
        "chain_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("contract", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("block_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("lease_id", sa.BigInteger(), nullable=True),
        sa.Column("node", sa.String(length=42), nullable=True),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("block_number", "log_index", name="uq_event_position"),
    )
    with op.batch_alter_table("chain_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_chain_events_block_number"), ["block_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_chain_events_lease_id"), ["lease_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_chain_events_node"), ["node"], unique=False)

    op.create_table(
        "evidence",
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.Column("report_hash", sa.String(length=66), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash"),
    )
    with op.batch_alter_table("evidence", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evidence_report_hash"), ["report_hash"], unique=False)

    op.create_table(
        "heartbeats",
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("free_vcpus", sa.Integer(), nullable=False),
        sa.Column("free_memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("free_disk_gib", sa.BigInteger(), nullable=False),
        sa.Column("running_leases", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        sa.Column("received_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node"),
    )
    op.create_table(
        "indexed_blocks",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "indexer_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_block", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "lease_specs",
        sa.Column("spec_hash", sa.String(length=66), nullable=False),
        sa.Column("renter", sa.String(length=42), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("ssh_public_key", sa.Text(), nullable=True),
        sa.Column("cloud_init", sa.Text(), nullable=True),
        sa.Column("created_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("spec_hash"),
    )
    with op.batch_alter_table("lease_specs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lease_specs_renter"), ["renter"], unique=False)

    op.create_table(
        "leases",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("renter", sa.String(length=42), nullable=False),
        sa.Column("node", sa.String(length=42), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tee_type", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("disk_gib", sa.BigInteger(), nullable=False),
        sa.Column("min_stake", backend.store.types.Uint256(length=78), nullable=False),
        sa.Column("max_price_per_second", backend.store.types.Uint256(length=78), nullable=False),
        sa.Column("price_per_second", backend.store.types.Uint256(length=78), nullable=True),
        sa.Column("deposit", backend.store.types.Uint256(length=78), nullable=False),
        sa.Column("spec_hash", sa.String(length=66), nullable=False),
        sa.Column("expected_measurement", sa.String(length=98), nullable=False),
        sa.Column("reattest_interval", sa.BigInteger(), nullable=False),
        sa.Column("attestation_nonce", sa.BigInteger(), nullable=False),
        sa.Column("created_block", sa.BigInteger(), nullable=False),
        sa.Column("accepted_block", sa.BigInteger(), nullable=True),
        sa.Column("closed_block", sa.BigInteger(), nullable=True),
        sa.Column("close_reason", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leases_node"), ["node"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_renter"), ["renter"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_spec_hash"), ["spec_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_leases_status"), ["status"], unique=False)

    op.create_table(
        "matches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("disk_gib", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("deadline", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", backend.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_matches_lease_id"), ["lease_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_matches_node"), ["node"], unique=False)
        batch_op.create_index(batch_op.f("ix_matches_status"), ["status"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("operator", sa.String(length=42), nullable=False),
        sa.Column("tee_type", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.BigInteger(), nullable=False),
        sa.Column("disk_gib", sa.BigInteger(), nullable=False),
        sa.Column("region", sa.Integer(), nullable=False),
        sa.Column("price_per_second", backend.store.types.Uint256(length=78), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("stake", backend.store.types.Uint256(length=78), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("attestations_verified", sa.Integer(), nullable=False),
        sa.Column("attestations_rejected", sa.Integer(), nullable=False),
        sa.Column("faults", sa.Integer(), nullable=False),
        sa.Column("registered_block", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_nodes_match", ["tee_type", "active", "vcpus", "memory_mib"], unique=False
        )

    op.create_table(
        "sessions",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("expires_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_sha256"),
    )
    op.create_table(
        "siwe_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("expires_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_table(
        "verifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("report_hash", sa.String(length=66), nullable=False),
        sa.Column("evidence_hash", sa.String(length=66), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("reason_codes", sa.JSON(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("checked_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("confirm_tx", sa.String(length=66), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lease_id", "report_hash", name="uq_verification"),
    )
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verifications_lease_id"), ["lease_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verifications_lease_id"))

    op.drop_table("verifications")
    op.drop_table("siwe_nonces")
    op.drop_table("sessions")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index("ix_nodes_match")

    op.drop_table("nodes")
    with op.batch_alter_table("matches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_matches_status"))
        batch_op.drop_index(batch_op.f("ix_matches_node"))
        batch_op.drop_index(batch_op.f("ix_matches_lease_id"))

    op.drop_table("matches")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leases_status"))
        batch_op.drop_index(batch_op.f("ix_leases_spec_hash"))
        batch_op.drop_index(batch_op.f("ix_leases_renter"))
        batch_op.drop_index(batch_op.f("ix_leases_node"))

    op.drop_table("leases")
    with op.batch_alter_table("lease_specs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lease_specs_renter"))

    op.drop_table("lease_specs")
    op.drop_table("indexer_cursor")
    op.drop_table("indexed_blocks")
    op.drop_table("heartbeats")
    with op.batch_alter_table("evidence", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evidence_report_hash"))

    op.drop_table("evidence")
    with op.batch_alter_table("chain_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chain_events_node"))
        batch_op.drop_index(batch_op.f("ix_chain_events_lease_id"))
        batch_op.drop_index(batch_op.f("ix_chain_events_block_number"))

    op.drop_table("chain_events")
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attestations_report_hash"))

    op.drop_table("attestations")
