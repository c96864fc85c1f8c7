"""`/v1/leases/{id}/timeline`: a lease's life step by step, as JSON or pushed as Server-Sent Events.

created -> matched -> accepted -> launched -> report submitted -> verified, each with its
time, read from the indexed chain events and the backend's own records. The stream is fed
by one watcher per app (`TimelineHub`) that notices any change in the store with one cheap
query, however many browsers listen; each listener then re-reads only its own lease.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.api.deps import Context
from backend.api.errors import not_found
from backend.store import ChainEvent, Evidence, Lease, Match, Store, Verification

router = APIRouter(prefix="/leases", tags=["leases"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]

STEPS = ("created", "matched", "accepted", "launched", "report_submitted", "verified")
# Seconds between the hub's change checks while someone listens, and between keep-alives.
HUB_POLL_S = 0.5
KEEPALIVE_S = 15.0


class TimelineStep(BaseModel):
    name: str
    at: int | None  # Unix seconds; None while the step has not happened
    detail: dict[str, Any] = {}


class LeaseTimeline(BaseModel):
    lease_id: int
    status: str
    steps: list[TimelineStep]
    rejected_at: int | None = None
    closed_at: int | None = None
    close_reason: int | None = None


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
    match = session.scalars(
        select(Match).where(Match.lease_id == lease_id).order_by(Match.id).limit(1)
    ).first()
    accepted = _first(events, "LeaseAccepted")
    submitted = _first(events, "AttestationSubmitted")
    verified = _first(events, "AttestationVerified")
    rejected = _first(events, "AttestationRejected")
    closed = _first(events, "LeaseClosed")
    # The node uploads the evidence once its guest runs and has produced a report: the
    # closest record the backend has of the launch.
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
            detail={"reason_codes": list(checked.reason_codes)} if checked else {},
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


def submitted_at(event: ChainEvent | None) -> int | None:
    """The block time of `event` (None if it has not happened)."""
    return event.block_timestamp if event is not None else None


def _read_timeline(store: Store, lease_id: int) -> LeaseTimeline | None:
    with store.new_session(read_only=True) as session:
        return lease_timeline(session, lease_id)


def _store_version(store: Store) -> tuple[Any, ...]:
    """Changes whenever an event is indexed, a lease matched or a report verified."""
    with store.new_session(read_only=True) as session:
        row = session.execute(
            select(
                select(func.max(ChainEvent.id)).scalar_subquery(),
                select(func.max(Match.id)).scalar_subquery(),
                select(func.max(Verification.id)).scalar_subquery(),
            )
        ).one()
        return tuple(row)


class TimelineHub:
    """One store watcher shared by every open stream: listeners wait on its version."""

    def __init__(self, store: Store, poll_s: float = HUB_POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self.version = 0
        self._listeners = 0
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        last: tuple[Any, ...] | None = None
        while self._listeners > 0:
            current = await anyio.to_thread.run_sync(_store_version, self.store)
            if current != last:
                last = current
                self.version += 1
                assert self._changed is not None
                self._changed.set()
                self._changed = asyncio.Event()
            await asyncio.sleep(self.poll_s)
        self._task = None

    async def wait_change(self, seen: int, timeout: float) -> int:
        """The hub's version once it differs from `seen`, or `seen` after `timeout`."""
        if self.version != seen:
            return self.version
        assert self._changed is not None
        with anyio.move_on_after(timeout):
            await self._changed.wait()
        return self.version

    async def listen(self) -> AsyncIterator[int]:
        """Versions of the store, the current one first, for as long as the caller iterates."""
        self._listeners += 1
        if self._changed is None:
            self._changed = asyncio.Event()
        if self._task is None:
            self._task = asyncio.create_task(self._watch())
        try:
            seen = -1
            while True:
                seen = await self.wait_change(seen, KEEPALIVE_S)
                yield seen
        finally:
            self._listeners -= 1


def _hub(request: Request) -> TimelineHub:
    hub: TimelineHub | None = getattr(request.app.state, "timeline_hub", None)
    if hub is None:
        hub = TimelineHub(request.app.state.context.store)
        request.app.state.timeline_hub = hub
    return hub


@router.get(
    "/{lease_id}/timeline",
    response_model=LeaseTimeline,
    summary="The steps of a lease's life with their times",
    responses={404: {"description": "unknown lease"}},
)
async def get_timeline(lease_id: LeasePath, context: Context) -> LeaseTimeline:
    timeline = await anyio.to_thread.run_sync(_read_timeline, context.store, lease_id)
    if timeline is None:
        raise not_found(f"lease {lease_id}")
    return timeline


@router.get(
    "/{lease_id}/timeline/stream",
    summary="The lease's timeline as Server-Sent Events: one `timeline` event per change",
    response_class=StreamingResponse,
    # An endless stream: OpenAPI clients and fuzzers cannot consume it (see the README).
    include_in_schema=False,
)
async def stream_timeline(lease_id: LeasePath, request: Request) -> StreamingResponse:
    hub = _hub(request)
    store = hub.store

    async def events() -> AsyncIterator[str]:
        sent: str | None = None
        async for _version in hub.listen():
            if await request.is_disconnected():
                return
            timeline = await anyio.to_thread.run_sync(_read_timeline, store, lease_id)
            body = json.dumps(None if timeline is None else timeline.model_dump())
            if body != sent:
                sent = body
                # A lease the indexer has not seen yet is `null`: it will come.
                yield f"event: timeline\ndata: {body}\n\n"
            else:
                yield ": keep-alive\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
