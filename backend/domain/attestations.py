"""A lease's attestation status with the backend verifier's full result, its dispute window
and any dispute of its verdict.

The hottest read of the API (dApps poll it), so it is one indexed Core query on a plain
connection rather than ORM objects.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from backend.domain.addresses import checksum
from backend.domain.errors import NotFound
from backend.store import Attestation, Dispute, Lease, Verification
from cvm.api_models import AttestationState, AttestationView, DisputeView, VerificationView

_ATTESTATION_QUERY = (
    select(
        Attestation.node,
        Attestation.status,
        Attestation.report_hash,
        Attestation.measurement,
        Attestation.submitted_at,
        Attestation.verified_at,
        Attestation.expires_at,
        Verification.ok,
        Verification.reason_codes,
        Verification.detail,
        Verification.checked_at,
        Verification.confirm_tx,
        Verification.amd_root,
        Verification.id,
        Attestation.decided_at,
        Attestation.disputable_until,
        Dispute.disputer,
        Dispute.verdict.label("disputed_verdict"),
        Dispute.overturned,
        Dispute.disputed_at,
        Dispute.tx_hash.label("dispute_tx"),
    )
    .outerjoin(
        Verification,
        (Verification.lease_id == Attestation.lease_id)
        & (Verification.report_hash == Attestation.report_hash),
    )
    .outerjoin(
        Dispute,
        (Dispute.lease_id == Attestation.lease_id)
        & (Dispute.report_hash == Attestation.report_hash),
    )
    .where(Attestation.lease_id == bindparam("lease_id"))
)
_LEASE_EXISTS = select(Lease.id).where(Lease.id == bindparam("lease_id"))


def attestation_view(connection: Connection, lease_id: int, now: int) -> AttestationView:
    """The attestation of a lease as of `now` (unix seconds); `NotFound` for an unknown lease.

    A verified attestation past its `expires_at` reads as expired, as `isAttested` sees it.
    """
    row = connection.execute(_ATTESTATION_QUERY, {"lease_id": lease_id}).first()
    if row is None:
        if connection.execute(_LEASE_EXISTS, {"lease_id": lease_id}).first() is None:
            raise NotFound(f"lease {lease_id}")
        return AttestationView(
            lease_id=lease_id,
            status=AttestationState.NONE,
            node=None,
            report_hash=None,
            measurement=None,
            submitted_at=None,
            verified_at=None,
            expires_at=None,
            verification=None,
        )
    status: AttestationState = row.status
    if status == AttestationState.VERIFIED and row.expires_at and row.expires_at <= now:
        status = AttestationState.EXPIRED
    return AttestationView(
        lease_id=lease_id,
        status=status,
        node=checksum(row.node),
        report_hash=row.report_hash,
        measurement=row.measurement,
        submitted_at=row.submitted_at,
        verified_at=row.verified_at,
        expires_at=row.expires_at,
        verification=None
        if row.id is None
        else VerificationView(
            ok=row.ok,
            reason_codes=list(row.reason_codes),
            detail=dict(row.detail),
            report_hash=row.report_hash,
            checked_at=row.checked_at,
            confirm_tx=row.confirm_tx,
            amd_root=row.amd_root,
        ),
        decided_at=row.decided_at,
        # 0: the registry keeps no dispute window for this submission.
        dispute_window_ends_at=row.disputable_until or None,
        dispute=None
        if row.disputer is None
        else DisputeView(
            disputer=checksum(row.disputer),
            verdict=row.disputed_verdict,
            overturned=row.overturned,
            disputed_at=row.disputed_at,
            tx_hash=row.dispute_tx,
        ),
    )
