"""Challenge requests: a lease's node asks to be challenged, so a relaunched guest may attest.

The registry takes no fresh attestation in the first half of the re-attestation interval
unless the lease was challenged since its latest one, and only the renter or a verifier may
challenge. A guest relaunched on the same node after a crash (new keys, so the standing
attestation no longer vouches for it and the key holders release nothing to it) would wait up
to half the interval with its renter offline. Its node asks here (node-signed, the lease's
current node only); the failover watch (`backend.liveness`), on the verifier key's leader,
challenges the lease on chain when the chain allows it and clears the request.

Bounded: one row per lease at most (a repeat is the same request: idempotent), for an active
lease and its own node only; the watch reads at most a page per pass and clears every row it
finds moot (lease moved on or closed, already challenged, re-attested).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.store import ChallengeRequest, Lease
from cvm.api_models import ChallengeRequestView


def _view(row: ChallengeRequest) -> ChallengeRequestView:
    return ChallengeRequestView(lease_id=row.lease_id, node=row.node, requested_at=row.requested_at)


def request_challenge(
    session: Session, lease: Lease, node: str, now: datetime
) -> ChallengeRequestView:
    """Record `node`'s request for `lease` (the caller checked the node is the running lease's
    own, by its signature); the pending one again if there is one from that node."""
    node = node.lower()
    row = session.get(ChallengeRequest, lease.id)
    if row is None:
        row = ChallengeRequest(lease_id=lease.id, node=node, requested_at=now)
        session.add(row)
    elif row.node != node:
        # Left over from the node the lease moved away from: this one replaces it.
        row.node, row.requested_at = node, now
    session.flush()
    return _view(row)


def pending(session: Session, limit: int) -> list[tuple[int, str]]:
    """(lease, node) of up to `limit` pending requests, the oldest first."""
    rows = session.execute(
        select(ChallengeRequest.lease_id, ChallengeRequest.node)
        .order_by(ChallengeRequest.requested_at, ChallengeRequest.lease_id)
        .limit(limit)
    ).all()
    return [(int(lease_id), str(node)) for lease_id, node in rows]


def clear(session: Session, lease_id: int, node: str) -> None:
    """Forget `node`'s request for `lease_id` (not a newer one from another node)."""
    session.execute(
        delete(ChallengeRequest).where(
            ChallengeRequest.lease_id == lease_id, ChallengeRequest.node == node.lower()
        )
    )
