"""What keeps one caller from exhausting the API: body size limits and rate limits.

Body sizes are checked before a byte is read: a declared `Content-Length` over the limit is
answered 413 at once, and a chunked body is counted as it streams and cut off at the limit.
Some routes have limits of their own: evidence uploads (`evidence_max_bytes`), image
uploads (`PUT /v1/images/{id}`, `image_max_bytes`, hundreds of MiB) and snapshot uploads
(`PUT /v1/leases/{id}/snapshots/chunks/{sha}` 1 MiB, `.../manifests/{epoch}` 256 KiB); every
other route, image reads included, keeps `api_max_body_bytes`.
Rate limits are fixed windows of one minute, counted per client IP on every `/v1` request
and per address (renter or node) on every writing endpoint once that address is proven (a
session, or a verified node signature; sign-in itself is counted per client IP), and
answered 429 with `Retry-After`. The counters live in Redis when replicas share a PostgreSQL
store (or `CVM_RATE_LIMIT_URL` names one), so every replica sees the same ones; with SQLite (one
process by construction) they live in the process. If Redis stops answering, each replica
counts in its own memory until Redis is back (logged once): limits stay on, only per replica.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

import anyio
import redis
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import ApiError, error_response
from backend.domain.errors import RateLimited
from backend.repeats import RepeatedConditions
from cvm.api_models import SNAPSHOT_CHUNK_MAX_BYTES, SNAPSHOT_MANIFEST_MAX_BYTES
from cvm.config import Settings

log = logging.getLogger(__name__)

WINDOW_S = 60


class RateLimiter:
    """Fixed-window counters: `hit(scope, key, limit)` counts one request or refuses it."""

    def __init__(self, redis_url: str | None, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._redis = (
            redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
            if redis_url
            else None
        )
        self._lock = threading.Lock()
        self._window = -1
        self._counts: dict[str, int] = {}
        self._outage = RepeatedConditions(log, level=logging.WARNING)
        self._redis_retry_at = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.time
    ) -> RateLimiter:
        url = settings.rate_limit_url
        replicated = settings.database_url.startswith("postgresql")
        if url is None and replicated and settings.broker_url.startswith(("redis://", "rediss://")):
            url = settings.broker_url
        return cls(url, clock=clock)

    @property
    def shared(self) -> bool:
        """Whether the counters are shared by every replica (Redis)."""
        return self._redis is not None

    def hit(self, scope: str, key: str, limit: int) -> None:
        """Count a request of `key` in `scope`; `RateLimited` once over `limit` per window."""
        if limit <= 0:
            return
        now = self.clock()
        window = int(now // WINDOW_S)
        count = self._count(f"cvm:rl:{scope}:{key}:{window}")
        if count > limit:
            retry = int((window + 1) * WINDOW_S - now) + 1
            raise RateLimited(
                f"too many requests ({scope}): at most {limit} per {WINDOW_S}s; retry in {retry}s",
                retry,
            )

    def _count(self, name: str) -> int:
        if self._redis is not None and time.monotonic() >= self._redis_retry_at:
            try:
                pipe = self._redis.pipeline()
                pipe.incr(name)
                pipe.expire(name, WINDOW_S * 2)
                count = int(pipe.execute()[0])
            except redis.RedisError as exc:
                # Try again in a moment, not on every request; count locally meanwhile.
                self._redis_retry_at = time.monotonic() + 2.0
                self._outage.report(
                    "redis", "shared rate-limit counters unavailable (%s); counting locally", exc
                )
            else:
                self._outage.clear("redis")
                return count
        window = name.rsplit(":", 1)[1]
        with self._lock:
            if int(window) != self._window:
                self._window = int(window)
                self._counts.clear()
            self._counts[name] = self._counts.get(name, 0) + 1
            return self._counts[name]

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def client_key(scope: Scope) -> str:
    """The client's IP (uvicorn has already applied X-Forwarded-For from trusted proxies)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AbuseGuardMiddleware:
    """Body size limits and the per-client rate limit, before any route runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        settings: Settings,
        prefix: str,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.settings = settings
        self.prefix = prefix

    def _body_limit(self, method: str, path: str) -> int:
        if path == f"{self.prefix}/evidence":
            return self.settings.evidence_max_bytes
        if method == "PUT" and _IMAGE_UPLOAD.fullmatch(path.removeprefix(self.prefix)):
            return self.settings.image_max_bytes
        if method == "PUT" and _SNAPSHOT_CHUNK.fullmatch(path.removeprefix(self.prefix)):
            return max(SNAPSHOT_CHUNK_MAX_BYTES, self.settings.api_max_body_bytes)
        if method == "PUT" and _SNAPSHOT_MANIFEST.fullmatch(path.removeprefix(self.prefix)):
            return max(SNAPSHOT_MANIFEST_MAX_BYTES, self.settings.api_max_body_bytes)
        return self.settings.api_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        try:
            limit = self.settings.rate_limit_per_client
            if self.limiter.shared:
                # A Redis round trip: not on the event loop.
                await anyio.to_thread.run_sync(self.limiter.hit, "client", client_key(scope), limit)
            else:
                self.limiter.hit("client", client_key(scope), limit)  # a dict update, no I/O
        except RateLimited as exc:
            await error_response(exc)(scope, receive, send)
            return
        limit = self._body_limit(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # Refused from the headers alone: the body is never kept. A small overage is read
            # and dropped first, so the client gets the 413 rather than a connection reset
            # (closing on unread data makes the kernel reset); a large one is not read at all
            # (the server drops it as it arrives after the answer). A client that asked
            # `Expect: 100-continue` sends nothing before the answer: it gets the 413 at once
            # (reading would tell the server to invite the body).
            if declared <= _DRAIN_MAX_BYTES and not _expects_continue(scope):
                await _drain(receive)
            refusal = ApiError(413, f"request body is {declared} bytes; the limit is {limit}")
            await error_response(refusal)(scope, receive, send)
            return
        received = 0
        answered = False  # by this middleware: whatever the app sends afterwards is dropped
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def counted() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Cut off here: answer 413 and tell the app the client went away.
                    if not started:
                        refusal = ApiError(413, f"request body exceeds the limit of {limit} bytes")
                        await error_response(refusal)(scope, receive, send)
                    answered = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted, guarded_send)


# The one route whose body is an image (exactly an id: no component, no other method).
_IMAGE_UPLOAD = re.compile(r"/images/[0-9a-f]{64}")
# Snapshot uploads by a lease's node (issue 20): a chunk up to 1 MiB, a manifest up to 256 KiB.
_SNAPSHOT_CHUNK = re.compile(r"/leases/[0-9]{1,19}/snapshots/chunks/[0-9a-f]{64}")
_SNAPSHOT_MANIFEST = re.compile(r"/leases/[0-9]{1,19}/snapshots/manifests/[0-9]{1,19}")

# Largest refused body that is still read (and dropped) so that the refusal arrives cleanly.
_DRAIN_MAX_BYTES = 1 << 20


async def _drain(receive: Receive) -> None:
    """Read the request body to its end, keeping none of it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _expects_continue(scope: Scope) -> bool:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in headers)


def _content_length(scope: Scope) -> int | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """The body of a route with a limit of its own (`what` names it in the 413): refused at
    once for a declared `Content-Length` over `limit`, cut off at `limit` while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"{what} is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, f"{what} exceeds the limit of {limit} bytes")
    return bytes(body)


def check_address(limiter: RateLimiter | None, settings: Settings, address: str, what: str) -> None:
    """The per-address limit of writing requests (`RateLimited` once over it)."""
    if limiter is not None:
        limiter.hit(f"writes:{what}", address.lower(), settings.rate_limit_writes_per_address)


__all__ = ["AbuseGuardMiddleware", "RateLimiter", "check_address", "client_key"]
