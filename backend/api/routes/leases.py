"""`/v1/leases`: leases as on chain, private spec intents, attestation status per lease."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from backend.api.deps import AppContext, Context, DbSession, Renter, session_address
from backend.api.errors import ApiError, not_found
from backend.api.schemas import (
    AttestationOut,
    AttestationState,
    LeaseId,
    LeaseIntentIn,
    LeaseOut,
    LeaseSpecOut,
    VerificationOut,
    checksum,
    parse_address,
)
from backend.store import Attestation, Lease, LeaseSpec, Match, Verification
from backend.store.db import READ_ONLY
from cvm.api_client import NODE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, private_spec_hash
from cvm.eip712 import (
    LeaseSpecRequest,
    SignatureError,
    check_timestamp,
    verify_lease_spec_request,
)

router = APIRouter(prefix="/leases", tags=["leases"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "unknown lease"}}


def _spec_of(session: Session, lease: Lease) -> LeaseSpec | None:
    spec = session.get(LeaseSpec, lease.spec_hash)
    # A spec binds only to leases of the renter who stored it.
    return spec if spec is not None and spec.renter == lease.renter else None


def lease_out(session: Session, lease: Lease) -> LeaseOut:
    return LeaseOut(
        id=lease.id,
        renter=str(checksum(lease.renter)),
        node=checksum(lease.node),
        status=lease.status,
        tee_type=lease.tee_type,
        vcpus=lease.vcpus,
        memory_mib=lease.memory_mib,
        disk_gib=lease.disk_gib,
        min_stake=lease.min_stake,
        max_price_per_second=lease.max_price_per_second,
        price_per_second=lease.price_per_second,
        deposit=lease.deposit,
        spec_hash=lease.spec_hash,
        expected_measurement=lease.expected_measurement,
        reattest_interval=lease.reattest_interval,
        created_block=lease.created_block,
        has_private_spec=_spec_of(session, lease) is not None,
    )


def _lease(session: Session, lease_id: int) -> Lease:
    lease = session.get(Lease, lease_id)
    if lease is None:
        raise not_found(f"lease {lease_id}")
    return lease


@router.get("", response_model=list[LeaseOut], summary="List leases")
def list_leases(
    session: DbSession,
    renter: str | None = None,
    node: str | None = None,
    status: Annotated[str | None, Query(pattern="^[a-z]{1,16}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[LeaseOut]:
    query = select(Lease)
    if renter is not None:
        query = query.where(Lease.renter == parse_address(renter, "renter"))
    if node is not None:
        query = query.where(Lease.node == parse_address(node, "node"))
    if status is not None:
        query = query.where(Lease.status == status)
    leases = session.scalars(query.order_by(Lease.id).limit(limit).offset(offset)).all()
    return [lease_out(session, lease) for lease in leases]


@router.post(
    "/intents",
    status_code=201,
    response_model=LeaseSpecOut,
    summary="Store the private spec of a lease about to be created; returns its specHash",
    responses={401: {"description": "not signed in"}},
)
def create_intent(
    body: LeaseIntentIn, renter: Renter, context: Context, session: DbSession
) -> LeaseSpecOut:
    spec_hash = private_spec_hash(renter, body.image, body.ssh_public_key, body.cloud_init)
    if session.get(LeaseSpec, spec_hash) is None:
        session.add(
            LeaseSpec(
                spec_hash=spec_hash,
                renter=renter,
                image=body.image,
                ssh_public_key=body.ssh_public_key,
                cloud_init=body.cloud_init,
                created_at=context.now(),
            )
        )
    return LeaseSpecOut(
        spec_hash=spec_hash,
        image=body.image,
        ssh_public_key=body.ssh_public_key,
        cloud_init=body.cloud_init,
    )


@router.get("/{lease_id}", response_model=LeaseOut, responses=_NOT_FOUND)
def get_lease(lease_id: LeasePath, session: DbSession) -> LeaseOut:
    return lease_out(session, _lease(session, lease_id))


def _node_may_read(
    context: AppContext, session: Session, lease: Lease, node: str, timestamp: str, signature: str
) -> None:
    address = parse_address(node, NODE_HEADER)
    try:
        request = LeaseSpecRequest(node=address, lease_id=lease.id, timestamp=int(timestamp))
        verify_lease_spec_request(request, signature, context.domain)
        check_timestamp(
            request.timestamp, int(context.clock()), context.settings.heartbeat_window_s
        )
    except (SignatureError, ValueError) as exc:
        raise ApiError(401, f"node request rejected: {exc}") from exc
    matched = session.scalar(
        select(Match.id).where(Match.lease_id == lease.id, Match.node == address).limit(1)
    )
    if lease.node != address and matched is None:
        raise ApiError(403, "only the lease's renter and the node it was matched to see its spec")


@router.get(
    "/{lease_id}/spec",
    response_model=LeaseSpecOut,
    summary="The private spec: for the lease's renter (SIWE) or its matched node (signed)",
    responses={
        401: {"description": "not signed in"},
        403: {"description": "not yours"},
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
) -> LeaseSpecOut:
    lease = _lease(session, lease_id)
    if x_cvm_node is not None:
        if x_cvm_timestamp is None or x_cvm_signature is None:
            raise ApiError(401, f"{NODE_HEADER} needs {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
        _node_may_read(context, session, lease, x_cvm_node, x_cvm_timestamp, x_cvm_signature)
    else:
        renter = session_address(context, session, authorization)
        if renter is None:
            raise ApiError(401, "sign in with Ethereum to read a lease's private spec")
        if renter != lease.renter:
            raise ApiError(403, "only the lease's renter sees its private spec")
    spec = _spec_of(session, lease)
    if spec is None:
        raise not_found(f"private spec of lease {lease_id}")
    return LeaseSpecOut(
        spec_hash=spec.spec_hash,
        image=spec.image,
        ssh_public_key=spec.ssh_public_key,
        cloud_init=spec.cloud_init,
    )


@router.get(
    "/{lease_id}/attestation",
    response_model=AttestationOut,
    summary="Attestation status of a lease and the backend verifier's full result",
    responses=_NOT_FOUND,
)
async def get_attestation(lease_id: LeasePath, context: Context) -> Response:
    # The hottest read of the API (dApps poll it): served from a short-lived cache, else
    # one indexed query on the event loop (no threadpool hop, no ORM), serialised once.
    now = context.clock()
    cache = context.attestation_cache
    cached = cache.get(lease_id)
    if cached is not None and cached[0] > now:
        return Response(cached[1], media_type="application/json")
    with context.store.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
        body = attestation_out(connection, lease_id, int(now)).model_dump_json().encode()
    ttl = context.settings.api_attestation_cache_s
    if ttl > 0:
        if len(cache) >= _ATTESTATION_CACHE_ENTRIES:
            cache.clear()
        cache[lease_id] = (now + ttl, body)
    return Response(body, media_type="application/json")


_ATTESTATION_CACHE_ENTRIES = 100_000


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
        Verification.id,
    )
    .outerjoin(
        Verification,
        (Verification.lease_id == Attestation.lease_id)
        & (Verification.report_hash == Attestation.report_hash),
    )
    .where(Attestation.lease_id == bindparam("lease_id"))
)
_LEASE_EXISTS = select(Lease.id).where(Lease.id == bindparam("lease_id"))


def attestation_out(connection: Connection, lease_id: LeaseId, now: int) -> AttestationOut:
    """The attestation view of a lease (404 if the lease is unknown)."""
    row = connection.execute(_ATTESTATION_QUERY, {"lease_id": lease_id}).first()
    if row is None:
        if connection.execute(_LEASE_EXISTS, {"lease_id": lease_id}).first() is None:
            raise not_found(f"lease {lease_id}")
        return AttestationOut(
            lease_id=lease_id,
            status="none",
            node=None,
            report_hash=None,
            measurement=None,
            submitted_at=None,
            verified_at=None,
            expires_at=None,
            verification=None,
        )
    status: AttestationState = row.status
    if status == "verified" and row.expires_at and row.expires_at <= now:
        status = "expired"
    return AttestationOut(
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
        else VerificationOut(
            ok=row.ok,
            reason_codes=list(row.reason_codes),
            detail=dict(row.detail),
            report_hash=row.report_hash,
            checked_at=row.checked_at,
            confirm_tx=row.confirm_tx,
        ),
    )
