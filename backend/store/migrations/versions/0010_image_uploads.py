"""Who uploaded which image (per-renter image quota, garbage collection of unused uploads).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backend.store.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_uploads",
        sa.Column("image", sa.String(length=64), nullable=False),
        sa.Column("renter", sa.String(length=42), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_at", backend.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image", "renter"),
    )
    op.create_index("ix_image_uploads_renter", "image_uploads", ["renter"])
    op.create_index("ix_image_uploads_uploaded_at", "image_uploads", ["uploaded_at"])


def downgrade() -> None:
    op.drop_index("ix_image_uploads_uploaded_at", table_name="image_uploads")
    op.drop_index("ix_image_uploads_renter", table_name="image_uploads")
    op.drop_table("image_uploads")
