"""Evidence claims a guest key only once its report proves it (REPORT_DATA binds the key to
the lease and the report verifies): a bundle that merely named a key claimed it before,
which let a hostile node claim another lease's key.

Data only: the key hash of each stored bundle this backend's verifier never verified for
its lease is cleared (the verifier proves a pending one again when it appraises it).
Downgrading keeps the cleared hashes cleared: fewer claims, never a false one.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 15:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    evidence = sa.table(
        "evidence",
        sa.column("hash", sa.String(66)),
        sa.column("lease_id", sa.BigInteger()),
        sa.column("guest_key_hash", sa.String(66)),
    )
    verifications = sa.table(
        "verifications",
        sa.column("lease_id", sa.BigInteger()),
        sa.column("evidence_hash", sa.String(66)),
        sa.column("ok", sa.Boolean()),
    )
    verified = (
        sa.select(sa.literal(1))
        .where(
            verifications.c.evidence_hash == evidence.c.hash,
            verifications.c.lease_id == evidence.c.lease_id,
            verifications.c.ok.is_(True),
        )
        .exists()
    )
    op.execute(
        evidence.update()
        .where(evidence.c.guest_key_hash.is_not(None), ~verified)
        .values(guest_key_hash=None)
    )


def downgrade() -> None:
    pass  # the cleared hashes are not restored: they claimed keys they never proved
