"""A lease's life step by step, assembled from the indexed chain events and our own records.

created -> matched -> accepted -> launched -> report submitted -> verified, each with the
time it happened. The node uploads its evidence once the guest runs and produced a report:
that upload is the closest record the backend has of the launch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.store import ChainEvent, Evidence, Lease, Match, Verification
from cvm.api_models import LeaseTimeline, TimelineStep


def _first(events: list[ChainEvent], name: str) -> ChainEvent | None:
    return next((event for event in events if event.name == name), None)


def lease_timeline(session: Session, lease_id: int) -> LeaseTimeline | None:
    """The timeline of one lease, or None if the indexer has not seen it."""
    lease = session.get(Lease, lease_id)
    if lease is None:
        return None
    events = list(
        session.scalars(
            select(ChainEvent)
            .where(ChainEvent.lease_id == lease_id)
            .order_by(ChainEvent.block_number, ChainEvent.log_index)
        )
    )
    created = _first(events, "LeaseCreated")
    matches = select(Match).where(Match.lease_id == lease_id)
    moves = [event for event in events if event.name == "LeaseFailedOver"]
    if moves:
        # The lease failed over: its timeline follows the node it runs on now (the nodes
        # before are in its history, `GET /v1/leases/{id}` nodes).
        last = moves[-1]
        moved_at = (last.block_number, last.log_index)
        events = [e for e in events if (e.block_number, e.log_index) > moved_at]
        matches = matches.where(
            Match.created_at >= datetime.fromtimestamp(last.block_timestamp, UTC)
        )
    match = session.scalars(matches.order_by(Match.id).limit(1)).first()
    accepted = _first(events, "LeaseAccepted")
    submitted = _first(events, "AttestationSubmitted")
    verified = _first(events, "AttestationVerified")
    rejected = _first(events, "AttestationRejected")
    closed = _first(events, "LeaseClosed")
    evidence_at = None
    if submitted is not None:
        report_hash = str(submitted.args.get("reportHash", "")).lower()
        uploaded = session.scalar(
            select(func.min(Evidence.created_at)).where(Evidence.report_hash == report_hash)
        )
        evidence_at = int(uploaded.timestamp()) if uploaded is not None else submitted_at(submitted)
    checked = session.scalars(
        select(Verification)
        .where(Verification.lease_id == lease_id)
        .order_by(Verification.id.desc())
        .limit(1)
    ).first()
    steps = [
        TimelineStep(name="created", at=submitted_at(created), detail={"renter": lease.renter}),
        TimelineStep(
            name="matched",
            at=int(match.created_at.timestamp()) if match else None,
            detail={"node": match.node} if match else {},
        ),
        TimelineStep(
            name="accepted",
            at=submitted_at(accepted),
            detail={"node": str(accepted.args.get("nodeKey", "")).lower()} if accepted else {},
        ),
        TimelineStep(name="launched", at=evidence_at),
        TimelineStep(
            name="report_submitted",
            at=submitted_at(submitted),
            detail={"report_hash": str(submitted.args.get("reportHash", ""))} if submitted else {},
        ),
        TimelineStep(
            name="verified",
            at=submitted_at(verified),
            detail=_verified_detail(checked),
        ),
    ]
    return LeaseTimeline(
        lease_id=lease_id,
        status=lease.status,
        steps=steps,
        rejected_at=submitted_at(rejected),
        closed_at=submitted_at(closed),
        close_reason=lease.close_reason,
    )


def _verified_detail(checked: Verification | None) -> dict[str, Any]:
    if checked is None:
        return {}
    detail: dict[str, Any] = {"reason_codes": list(checked.reason_codes)}
    if checked.amd_root is not None:
        # "verified" by a simulated AMD-SP must never read like hardware in the timeline.
        detail["amd_root"] = checked.amd_root.value
    return detail


def submitted_at(event: ChainEvent | None) -> int | None:
    """The block time of `event` (None if it has not happened)."""
    return event.block_timestamp if event is not None else None


def store_version(session: Session) -> tuple[Any, ...]:
    """Changes whenever an event is indexed, a lease matched or a report verified."""
    row = session.execute(
        select(
            select(func.max(ChainEvent.id)).scalar_subquery(),
            select(func.max(Match.id)).scalar_subquery(),
            select(func.max(Verification.id)).scalar_subquery(),
        )
    ).one()
    return tuple(row)
