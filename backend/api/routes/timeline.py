"""`/v1/leases/{id}/timeline`: a lease's life step by step, as JSON or pushed as Server-Sent Events.

created -> matched -> accepted -> launched -> report submitted -> verified, each with its
time (assembled by `backend.domain.timeline`). Streams are anonymous, so they are bounded:
at most `timeline_streams_per_client` per client IP (429) and `timeline_streams_max` per
process (503), each ending after `timeline_stream_lifetime_s` (browsers reconnect by
themselves). One watcher per app (`TimelineHub`) notices changes in the store with one cheap
query, finds which watched leases they touch, reads each of those timelines once and hands
the result to every stream of that lease: however many streams are open, a change costs one
read per changed lease, in one trip to the thread pool the API shares.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from backend.api.deps import Context
from backend.api.errors import ApiError
from backend.api.limits import client_key
from backend.domain import timeline
from backend.domain.errors import NotFound, RateLimited
from backend.store import ChainEvent, Match, Store, Verification
from cvm.api_models import LeaseTimeline
from cvm.config import Settings

router = APIRouter(prefix="/leases", tags=["leases"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]

# Seconds between the hub's change checks while someone listens, and between keep-alives.
HUB_POLL_S = 0.5
KEEPALIVE_S = 15.0
# How long a browser waits before reconnecting a stream that ended (its lifetime).
RECONNECT_MS = 2000
# A refused stream may try again after this many seconds.
RETRY_AFTER_S = 10

Marks = tuple[int, int, int]  # the newest chain event, match and verification ids


def _read_timeline(store: Store, lease_id: int) -> LeaseTimeline | None:
    with store.new_session(read_only=True) as session:
        return timeline.lease_timeline(session, lease_id)


def _body(found: LeaseTimeline | None) -> str:
    # A lease the indexer has not seen yet is `null`: it will come.
    return json.dumps(None if found is None else found.model_dump(mode="json"))


def _refresh(
    store: Store, since: Marks | None, watched: Collection[int], fresh: Collection[int]
) -> tuple[Marks, dict[int, str]]:
    """The store's marks now, and the timelines (as JSON) of the watched leases that changed
    since `since` (all of them when it is None or rows went away: a reorg) plus `fresh`."""
    with store.new_session(read_only=True) as session:
        marks: Marks = tuple(  # type: ignore[assignment]
            value or 0 for value in timeline.store_version(session)
        )
        todo = set(fresh)
        if since is None or any(now < before for now, before in zip(marks, since, strict=True)):
            todo |= set(watched)
        elif marks != since and watched:
            wanted = list(watched)
            for column, id_column, before in (
                (ChainEvent.lease_id, ChainEvent.id, since[0]),
                (Match.lease_id, Match.id, since[1]),
                (Verification.lease_id, Verification.id, since[2]),
            ):
                todo |= set(
                    session.scalars(
                        select(column).where(id_column > before, column.in_(wanted)).distinct()
                    )
                )
        return marks, {lease: _body(timeline.lease_timeline(session, lease)) for lease in todo}


@dataclass
class _Watched:
    """One lease with open streams: its latest timeline and a signal for each new one."""

    streams: int = 0
    body: str | None = None  # None until first read
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class StreamsFull(ApiError):
    """No room for another stream in this process (503)."""


class TimelineHub:
    """One store watcher shared by every open stream, and the streams' caps."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        poll_s: float = HUB_POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings  # read at each stream: the caps follow the settings
        self.poll_s = poll_s
        self.clock = clock
        self.clients: dict[str, int] = {}
        self.open = 0
        self._watched: dict[int, _Watched] = {}
        self._marks: Marks | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # --- admission ------------------------------------------------------------------------

    def admit(self, client: str) -> None:
        """Count a new stream of `client`; refused over a cap (no await: no race)."""
        per_client = self.settings.timeline_streams_per_client
        total = self.settings.timeline_streams_max
        if self.clients.get(client, 0) >= per_client:
            raise RateLimited(
                f"too many timeline streams from this client: at most {per_client} at"
                " once (close one, or read GET /v1/leases/{id}/timeline)",
                RETRY_AFTER_S,
            )
        if self.open >= total:
            raise StreamsFull(
                503,
                f"this backend serves {total} timeline streams already; try again shortly"
                " or read GET /v1/leases/{id}/timeline",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.clients[client] = self.clients.get(client, 0) + 1
        self.open += 1

    def release(self, client: str) -> None:
        self.open -= 1
        left = self.clients.get(client, 1) - 1
        if left > 0:
            self.clients[client] = left
        else:
            self.clients.pop(client, None)

    # --- watching ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        try:
            while self._watched:
                fresh = [lease for lease, w in self._watched.items() if w.body is None]
                marks, bodies = await anyio.to_thread.run_sync(
                    _refresh, self.store, self._marks, list(self._watched), fresh
                )
                self._marks = marks
                for lease, body in bodies.items():
                    watched = self._watched.get(lease)
                    if watched is not None and body != watched.body:
                        watched.body = body
                        watched.version += 1
                        watched.changed.set()
                        watched.changed = asyncio.Event()
                assert self._wake is not None
                with anyio.move_on_after(self.poll_s):
                    await self._wake.wait()
                self._wake.clear()
        finally:
            self._task = None
            self._marks = None  # nobody watched meanwhile: start over

    async def updates(self, lease_id: int) -> AsyncIterator[str | None]:
        """The lease's timeline (JSON) each time it changes, the current one first; None as a
        keep-alive; ends after the hub's stream lifetime."""
        watched = self._watched.setdefault(lease_id, _Watched())
        watched.streams += 1
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None:
            self._task = asyncio.create_task(self._watch())
        if watched.body is None:
            self._wake.set()  # a new lease: read it now, not at the next poll
        deadline = self.clock() + self.settings.timeline_stream_lifetime_s
        try:
            seen = 0
            while True:
                left = deadline - self.clock()
                if left <= 0:
                    return
                if watched.version == seen:
                    signal = watched.changed
                    with anyio.move_on_after(min(KEEPALIVE_S, left)):
                        await signal.wait()
                if watched.version != seen:
                    seen = watched.version
                    yield watched.body
                elif deadline > self.clock():
                    yield None
        finally:
            watched.streams -= 1
            if watched.streams == 0:
                self._watched.pop(lease_id, None)


def _hub(request: Request) -> TimelineHub:
    hub: TimelineHub | None = getattr(request.app.state, "timeline_hub", None)
    if hub is None:
        context = request.app.state.context
        hub = TimelineHub(context.store, context.settings)
        request.app.state.timeline_hub = hub
    return hub


class _Stream(StreamingResponse):
    """A stream that gives its slot back however it ends (done, cut off, never started)."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


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
    client = client_key(request.scope)
    hub.admit(client)

    async def events() -> AsyncIterator[str]:
        yield f"retry: {RECONNECT_MS}\n\n"
        async for body in hub.updates(lease_id):
            if body is None:
                yield ": keep-alive\n\n"
            else:
                yield f"event: timeline\ndata: {body}\n\n"

    return _Stream(events(), lambda: hub.release(client))


__all__ = ["TimelineHub", "router"]
