"""`/v1/leases/{id}/timeline`: a lease's life step by step, as JSON or pushed as Server-Sent Events.

created -> matched -> accepted -> launched -> report submitted -> verified, each with its
time (assembled by `backend.domain.timeline`). The stream is fed
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

from backend.api.deps import Context
from backend.domain import timeline
from backend.domain.errors import NotFound
from backend.store import Store
from cvm.api_models import LeaseTimeline

router = APIRouter(prefix="/leases", tags=["leases"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]

# Seconds between the hub's change checks while someone listens, and between keep-alives.
HUB_POLL_S = 0.5
KEEPALIVE_S = 15.0


def _read_timeline(store: Store, lease_id: int) -> LeaseTimeline | None:
    with store.new_session(read_only=True) as session:
        return timeline.lease_timeline(session, lease_id)


def _store_version(store: Store) -> tuple[Any, ...]:
    with store.new_session(read_only=True) as session:
        return timeline.store_version(session)


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
    found = await anyio.to_thread.run_sync(_read_timeline, context.store, lease_id)
    if found is None:
        raise NotFound(f"lease {lease_id}")
    return found


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
            found = await anyio.to_thread.run_sync(_read_timeline, store, lease_id)
            body = json.dumps(None if found is None else found.model_dump(mode="json"))
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
