"""`/v1/leases`: leases as on chain, private spec intents, attestation status per lease."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

from backend.api.deps import Context, DbSession, Renter, session_address
from backend.api.node_reads import authorized_node_read
from backend.domain import attestations, leases, reservations
from backend.domain.errors import Unauthenticated
from backend.store.db import READ_ONLY
from cvm.api_models import (
    NODE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AttestationView,
    LeaseIntent,
    LeaseState,
    LeaseView,
    PrivateSpec,
    ReservationKeepaliveView,
)

router = APIRouter(prefix="/leases", tags=["leases"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "unknown lease"}}


@router.get("", response_model=list[LeaseView], summary="List leases")
def list_leases(
    session: DbSession,
    renter: str | None = None,
    node: str | None = None,
    status: LeaseState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[LeaseView]:
    return leases.list_leases(
        session, renter=renter, node=node, status=status, limit=limit, offset=offset
    )


@router.post(
    "/intents",
    status_code=201,
    response_model=PrivateSpec,
    summary="Store the private spec of a lease about to be created; returns its specHash",
    responses={401: {"description": "not signed in"}},
)
def create_intent(
    body: LeaseIntent, renter: Renter, context: Context, session: DbSession
) -> PrivateSpec:
    context.limit_address(renter, "intents")
    return leases.store_private_spec(session, renter, body, context.now())


@router.get("/{lease_id}", response_model=LeaseView, responses=_NOT_FOUND)
def get_lease(lease_id: LeasePath, session: DbSession) -> LeaseView:
    return leases.get_lease(session, lease_id)


@router.get(
    "/{lease_id}/spec",
    response_model=PrivateSpec,
    summary="The private spec: for the lease's renter (SIWE) or its matched node (signed)",
    responses={
        401: {"description": "not signed in"},
        403: {"description": "not yours"},
        409: {"description": "the node request's nonce was used before (replay)"},
        429: {"description": "too many requests from this node"},
        **_NOT_FOUND,
    },
)
def get_spec(
    lease_id: LeasePath,
    context: Context,
    session: DbSession,
    authorization: Annotated[str | None, Header()] = None,
    x_cvm_node: Annotated[str | None, Header(alias=NODE_HEADER)] = None,
    x_cvm_timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
    x_cvm_signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
    x_cvm_nonce: Annotated[str | None, Header(alias=NONCE_HEADER)] = None,
) -> PrivateSpec:
    if x_cvm_node is None:
        renter = session_address(context, session, authorization)
        return leases.private_spec_for_renter(session, lease_id, renter)
    lease = authorized_node_read(
        context,
        session,
        lease_id,
        "spec",
        x_cvm_node,
        x_cvm_timestamp,
        x_cvm_signature,
        x_cvm_nonce,
        accepted_only=False,  # a matched node reads the spec before it accepts
    )
    return leases.private_spec_of(session, lease)


@router.get(
    "/{lease_id}/attestation",
    response_model=AttestationView,
    summary="Attestation status of a lease and the backend verifier's full result",
    responses=_NOT_FOUND,
)
async def get_attestation(lease_id: LeasePath, context: Context) -> Response:
    # dApps poll this: served from a short-lived cache, else one indexed query on the
    # event loop (no threadpool hop, no ORM), serialised once.
    now = context.clock()
    cache = context.attestation_cache
    cached = cache.get(lease_id)
    if cached is not None and cached[0] > now:
        return Response(cached[1], media_type="application/json")
    with context.store.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        view = attestations.attestation_view(connection, lease_id, int(now))
    body = view.model_dump_json().encode()
    ttl = context.settings.api_attestation_cache_s
    if ttl > 0:
        if len(cache) >= _ATTESTATION_CACHE_ENTRIES:
            cache.clear()
        cache[lease_id] = (now + ttl, body)
    return Response(body, media_type="application/json")


_ATTESTATION_CACHE_ENTRIES = 100_000


@router.post(
    "/{lease_id}/reservation/keepalive",
    response_model=ReservationKeepaliveView,
    summary="The matched node keeps its reservation of an open lease alive while its guest boots"
    " before the accept (combined accept): the deadline moves to now + the accept timeout,"
    " never past the dispatch + CVM_MATCH_BOOT_MAX_S",
    responses={
        401: {"description": "unsigned, or a bad or stale node signature"},
        403: {"description": "the lease was never matched to this node"},
        404: {"description": "unknown lease"},
        409: {
            "description": "no live reservation of this node (expired, another node's), its"
            " maximum reached, or a replayed request nonce"
        },
        429: {"description": "too many requests from this node"},
    },
)
def keep_reservation_alive(
    lease_id: LeasePath,
    context: Context,
    session: DbSession,
    x_cvm_node: Annotated[str | None, Header(alias=NODE_HEADER)] = None,
    x_cvm_timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
    x_cvm_signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
    x_cvm_nonce: Annotated[str | None, Header(alias=NONCE_HEADER)] = None,
) -> ReservationKeepaliveView:
    if x_cvm_node is None:
        raise Unauthenticated(f"a keepalive is signed by the matched node ({NODE_HEADER})")
    now = int(context.clock())
    window_s = context.settings.heartbeat_window_s
    # A node the lease was matched to (even at the head, before the store has the lease).
    _lease, request = leases.verified_node_request(
        session, lease_id, x_cvm_node, x_cvm_timestamp, x_cvm_signature, x_cvm_nonce,
        domain=context.domain, now=now, window_s=window_s, accepted_only=False,
        lease_at_head=context.lease_at_head,
    )  # fmt: skip
    context.limit_address(request.node.lower(), "reservation-keepalive")
    leases.consume_request_nonce(
        session, request.node, request.nonce, request.timestamp, now=now, window_s=window_s
    )
    return reservations.keep_alive(
        session, lease_id, request.node, context.now(),
        accept_timeout_s=context.settings.match_accept_timeout_s,
        boot_max_s=context.settings.match_boot_max_s,
    )  # fmt: skip
