"""The key service and snapshots (issue 20): renters' key deposits (signed manifest, sealed
bundle) and the sealed shares per holder, holders' releases to attested guests, each lease's
highest epoch record, and the index of its snapshot objects (the bytes are in the object
store, backend.objects), with when a closed lease's data was first seen for its removal.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.store.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False,
        autoincrement=True,
    )  # fmt: skip


def _at(name: str) -> sa.Column:
    return sa.Column(name, backend.store.types.UtcDateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "key_deposits",
        sa.Column("lease_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key_version", sa.BigInteger(), nullable=False),
        sa.Column("renter", sa.String(length=42), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("manifest_hash", sa.String(length=66), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        sa.Column("bundle", sa.Text(), nullable=True),
        _at("created_at"),
        sa.PrimaryKeyConstraint("lease_id"),
    )
    op.create_table(
        "key_shares",
        _id(),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=42), nullable=False),
        sa.Column("key_version", sa.BigInteger(), nullable=False),
        sa.Column("enc", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lease_id", "holder", "key_version", name="uq_key_share"),
        sqlite_autoincrement=True,  # holders' cursors only grow: no id is handed out twice
    )
    op.create_index("ix_key_shares_lease_id", "key_shares", ["lease_id"])
    op.create_index("ix_key_shares_holder_id", "key_shares", ["holder", "id"])
    op.create_table(
        "key_releases",
        _id(),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=42), nullable=False),
        sa.Column("key_version", sa.BigInteger(), nullable=False),
        sa.Column("report_hash", sa.String(length=66), nullable=False),
        sa.Column("enc", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lease_id", "holder", "report_hash", name="uq_key_release"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_key_releases_lease_id", "key_releases", ["lease_id"])
    op.create_table(
        "epoch_records",
        _id(),
        sa.Column("lease_id", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("snapshot", sa.String(length=64), nullable=False),
        sa.Column("key_version", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.String(length=88), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lease_id", name="uq_epoch_record_lease"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "snapshot_objects",
        sa.Column("lease_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("lease_id", "kind", "name"),
    )
    op.create_table(
        "lease_cleanups",
        sa.Column("lease_id", sa.BigInteger(), autoincrement=False, nullable=False),
        _at("closed_seen_at"),
        sa.PrimaryKeyConstraint("lease_id"),
    )


def downgrade() -> None:
    op.drop_table("lease_cleanups")
    op.drop_table("snapshot_objects")
    op.drop_table("epoch_records")
    op.drop_index("ix_key_releases_lease_id", table_name="key_releases")
    op.drop_table("key_releases")
    op.drop_index("ix_key_shares_holder_id", table_name="key_shares")
    op.drop_index("ix_key_shares_lease_id", table_name="key_shares")
    op.drop_table("key_shares")
    op.drop_table("key_deposits")
