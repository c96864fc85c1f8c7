"""Dependencies of the routes: the app context, a transactional session, who is calling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Protocol

import anyio
from cryptography import x509
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from backend.api.errors import ApiError
from backend.api.limits import RateLimiter, check_address
from backend.domain import auth
from backend.objects import ObjectStore, object_store
from backend.store import Lease, Store
from cvm.api_models import ChainInfo
from cvm.config import Settings
from cvm.eip712 import Domain
from cvm.images import ImageStore


class HeartbeatListener(Protocol):
    """Told about every accepted heartbeat (the matcher updates its index)."""

    def on_heartbeat(
        self, node: str, free_vcpus: int, free_memory_mib: int, free_disk_gib: int, timestamp: int
    ) -> None: ...


@dataclass
class AppContext:
    """Everything a request needs, built once per app."""

    settings: Settings
    store: Store
    chain: ChainInfo
    clock: Callable[[], float] = time.time
    heartbeat_listeners: list[HeartbeatListener] = field(default_factory=list)
    # Called as (lease_id, node address) once sealed secrets for a lease are committed.
    sealed_listeners: list[Callable[[int, str], None]] = field(default_factory=list)
    # lease id -> (fresh until, JSON body) of the attestation-status endpoint
    attestation_cache: dict[int, tuple[float, bytes]] = field(default_factory=dict)
    # Rate-limit counters (shared through Redis by replicas); set by `create_app` if None.
    limiter: RateLimiter | None = None
    # Issue 20. Called as (lease_id, node address) once a key deposit or a key release for a
    # running lease is committed (the node relays it to its guest at once).
    key_listeners: list[Callable[[int, str], None]] = field(default_factory=list)
    # Whether an address is a registered, staked key holder on chain (None: this deployment
    # has no key service, and holder requests are refused).
    key_holders: Callable[[str], bool] | None = None
    # The lease a LeaseCreated at the chain's head opened, for a node matched to it before the
    # indexer has it (backend.matching.head; None: dispatch waits for the indexer).
    lease_at_head: Callable[[int], Lease | None] | None = None
    # Where snapshot objects go; the settings' store (backend.objects) if None.
    objects: ObjectStore | None = None
    # The roots a report must chain to for its evidence to claim its guest key at upload
    # (None: AMD's); the verifier's, so both prove the same reports.
    trusted_roots: Sequence[x509.Certificate] | None = None

    def limit_address(self, address: str, what: str) -> None:
        """Count a writing request of `address` to endpoint `what` (429 once over the limit)."""
        check_address(self.limiter, self.settings, address, what)

    def limit_client(self, client: str, what: str) -> None:
        """Count an unauthenticated writing request of client IP `client` to `what`."""
        check_address(self.limiter, self.settings, f"ip:{client}", what)

    @property
    def object_store(self) -> ObjectStore:
        """The snapshot object store (made from the settings on first use)."""
        if self.objects is None:
            self.objects = object_store(self.settings)
        return self.objects

    @property
    def images(self) -> ImageStore:
        """The images this backend serves (`image_dir`)."""
        return ImageStore(self.settings.image_dir)

    @property
    def domain(self) -> Domain:
        return Domain(chain_id=self.chain.chain_id, node_registry=self.chain.node_registry)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


# Commits and rollbacks run on worker threads of their own: if they shared the request
# threadpool, requests blocked waiting for a pooled connection could starve the very
# teardowns that would give connections back (a deadlock under load).
_TEARDOWN_THREADS = anyio.CapacityLimiter(16)


def _commit(session: Session) -> None:
    try:
        session.commit()
    finally:
        session.close()


def _rollback(session: Session) -> None:
    try:
        session.rollback()
    finally:
        session.close()


async def get_session(context: Context, request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed if the route returns, rolled back otherwise.

    Callables the route appends to `session.info["after_commit"]` run once the commit
    succeeded (e.g. telling the matcher about a heartbeat it must not see if the write failed).
    Safe methods (GET, HEAD) only read, so their sessions never wait for the write lock.
    """
    session = context.store.new_session(read_only=request.method in ("GET", "HEAD"))
    session.info["after_commit"] = []
    try:
        yield session
    except BaseException:
        await anyio.to_thread.run_sync(_rollback, session, limiter=_TEARDOWN_THREADS)
        raise
    callbacks = session.info.pop("after_commit")
    await anyio.to_thread.run_sync(_commit, session, limiter=_TEARDOWN_THREADS)
    for callback in callbacks:
        # Callbacks may open store sessions: waiting for a lock must not block the loop.
        await anyio.to_thread.run_sync(callback, limiter=_TEARDOWN_THREADS)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    session.info["after_commit"].append(callback)


# scope="function": the commit happens before the response is sent, so a 2xx means written.
DbSession = Annotated[Session, Depends(get_session, scope="function")]


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Authorization must be 'Bearer <session token>'")
    return token.strip()


def session_address(context: AppContext, session: Session, authorization: str | None) -> str | None:
    """The renter address of a valid bearer session, None without a token, 401 if invalid."""
    token = _bearer(authorization)
    if token is None:
        return None
    return auth.session_address(session, token, context.now())


def current_renter(
    context: Context,
    session: DbSession,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """The signed-in renter (SIWE session), or 401."""
    address = session_address(context, session, authorization)
    if address is None:
        raise ApiError(401, "sign in with Ethereum first (POST /v1/auth/nonce, /v1/auth/login)")
    return address


Renter = Annotated[str, Depends(current_renter)]
