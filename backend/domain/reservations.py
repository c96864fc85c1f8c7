"""Reservation keepalive: a matched node that boots its guest before it accepts (the combined
accept: one `acceptAndSubmit` once the guest's first report is in hand) tells the backend it is
still at it, so the matcher does not give the lease to the next node meanwhile.

The reservation's deadline lives in the store only (`Match.deadline`, read by the matcher's
`expire_overdue` on the leader), so any replica may take the call. Each call moves the deadline
to now + the accept timeout, never past the dispatch + `match_boot_max_s`: a node that never
accepts still loses the lease, only later.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.domain.errors import Conflict, NotFound
from backend.store import Lease, Match, ReservationState
from cvm.api_models import ReservationKeepaliveView


def keep_alive(
    session: Session,
    lease_id: int,
    node: str,
    now: datetime,
    *,
    accept_timeout_s: float,
    boot_max_s: float,
) -> ReservationKeepaliveView:
    """Extend `node`'s live reservation of `lease_id` (the caller verified the node's signed
    request). NotFound for a lease the store knows nothing of; Conflict when the node holds no
    live reservation of it, or its reservation reached its maximum."""
    node = node.lower()
    live = session.scalars(
        select(Match)
        .where(Match.lease_id == lease_id, Match.status.in_(ReservationState.live()))
        .with_for_update()
    ).first()
    if live is None and session.get(Lease, lease_id) is None:
        raise NotFound(f"lease {lease_id}")
    if live is None or live.node.lower() != node:
        raise Conflict(f"lease {lease_id}: no live reservation of {node} to keep alive")
    cap = live.created_at + timedelta(seconds=boot_max_s)
    if live.status == ReservationState.RESERVED:
        if now >= cap:
            raise Conflict(
                f"lease {lease_id}: the reservation reached its maximum ({boot_max_s:g} s"
                " after the dispatch): accept now or let it go"
            )
        # Never shortened: a keepalive only ever gives more time.
        live.deadline = max(live.deadline, min(now + timedelta(seconds=accept_timeout_s), cap))
    return ReservationKeepaliveView(
        lease_id=lease_id,
        node=live.node,
        status=str(live.status),
        deadline=live.deadline,
        max_deadline=cap,
        expires_in_s=max(0.0, (live.deadline - now).total_seconds()),
    )
