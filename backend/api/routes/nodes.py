"""`/v1/nodes`: registered nodes with their last heartbeat, and signed heartbeats."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from backend.api.deps import Context, DbSession, after_commit
from backend.api.errors import ApiError, not_found
from backend.api.schemas import HeartbeatIn, HeartbeatOut, NodeOut, checksum, parse_address
from backend.matching import reputation
from backend.store import Heartbeat, Node
from cvm.eip712 import Heartbeat as SignedFields
from cvm.eip712 import SignatureError, SignedHeartbeat, check_timestamp, verify_heartbeat

router = APIRouter(prefix="/nodes", tags=["nodes"])


def node_out(node: Node, heartbeat: Heartbeat | None) -> NodeOut:
    return NodeOut(
        address=str(checksum(node.address)),
        operator=str(checksum(node.operator)),
        tee_type=node.tee_type,
        vcpus=node.vcpus,
        memory_mib=node.memory_mib,
        disk_gib=node.disk_gib,
        region=node.region,
        price_per_second=node.price_per_second,
        stake=node.stake,
        active=node.active,
        endpoint=node.endpoint,
        free_vcpus=heartbeat.free_vcpus if heartbeat else None,
        free_memory_mib=heartbeat.free_memory_mib if heartbeat else None,
        free_disk_gib=heartbeat.free_disk_gib if heartbeat else None,
        running_leases=heartbeat.running_leases if heartbeat else None,
        last_heartbeat_at=heartbeat.received_at if heartbeat else None,
        reputation=reputation(node.attestations_verified, node.attestations_rejected, node.faults),
    )


@router.get("", response_model=list[NodeOut], summary="List and filter registered nodes")
def list_nodes(
    session: DbSession,
    tee_type: Annotated[int | None, Query(ge=0, le=255)] = None,
    min_vcpus: Annotated[int | None, Query(ge=0, le=65535)] = None,
    min_memory_mib: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    max_price_per_second: Annotated[int | None, Query(ge=0, le=2**256 - 1)] = None,
    min_stake: Annotated[int | None, Query(ge=0, le=2**256 - 1)] = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[NodeOut]:
    query = select(Node, Heartbeat).outerjoin(Heartbeat, Heartbeat.node == Node.address)
    if tee_type is not None:
        query = query.where(Node.tee_type == tee_type)
    if min_vcpus is not None:
        query = query.where(Node.vcpus >= min_vcpus)
    if min_memory_mib is not None:
        query = query.where(Node.memory_mib >= min_memory_mib)
    if max_price_per_second is not None:
        query = query.where(Node.price_per_second <= max_price_per_second)
    if min_stake is not None:
        query = query.where(Node.stake >= min_stake)
    if active is not None:
        query = query.where(Node.active == active)
    rows = session.execute(query.order_by(Node.address).limit(limit).offset(offset)).all()
    return [node_out(node, heartbeat) for node, heartbeat in rows]


@router.get(
    "/{address}",
    response_model=NodeOut,
    responses={404: {"description": "unknown node"}, 422: {"description": "bad address"}},
)
def get_node(address: str, session: DbSession) -> NodeOut:
    key = parse_address(address)
    node = session.get(Node, key)
    if node is None:
        raise not_found(f"node {address}")
    return node_out(node, session.get(Heartbeat, key))


@router.post(
    "/{address}/heartbeats",
    status_code=201,
    response_model=HeartbeatOut,
    summary="Report free capacity, signed by the node key (EIP-712 Heartbeat)",
    responses={
        401: {"description": "bad signature"},
        404: {"description": "node not registered"},
        409: {"description": "timestamp not newer than the last accepted (replay)"},
        422: {"description": "malformed body or timestamp outside the window"},
    },
)
def post_heartbeat(
    address: str, body: HeartbeatIn, context: Context, session: DbSession
) -> HeartbeatOut:
    key = parse_address(address)
    if body.node.lower() != key:
        raise ApiError(422, f"body node {body.node} differs from the path address {address}")
    fields = SignedFields(
        node=body.node,
        free_vcpus=body.free_vcpus,
        free_memory_mib=body.free_memory_mib,
        free_disk_gib=body.free_disk_gib,
        running_leases=body.running_leases,
        timestamp=body.timestamp,
    )
    try:
        verify_heartbeat(SignedHeartbeat(fields, body.signature), context.domain)
    except SignatureError as exc:
        raise ApiError(401, f"heartbeat signature rejected: {exc}") from exc
    try:
        check_timestamp(body.timestamp, int(context.clock()), context.settings.heartbeat_window_s)
    except SignatureError as exc:
        raise ApiError(422, f"stale or future heartbeat: {exc}") from exc
    if session.get(Node, key) is None:
        raise not_found(f"node {address} (not registered on chain, or not indexed yet)")

    values = {
        "free_vcpus": body.free_vcpus,
        "free_memory_mib": body.free_memory_mib,
        "free_disk_gib": body.free_disk_gib,
        "running_leases": body.running_leases,
        "timestamp": body.timestamp,
        "signature": body.signature.lower(),
        "received_at": context.now(),
    }
    # Conditional update: only a strictly newer timestamp replaces the last heartbeat, so a
    # replayed (or reordered) heartbeat cannot roll the node's capacity back.
    result = session.execute(
        update(Heartbeat)
        .where(Heartbeat.node == key, Heartbeat.timestamp < body.timestamp)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) == 0:
        if session.get(Heartbeat, key) is not None:
            raise ApiError(409, "heartbeat timestamp is not newer than the last accepted one")
        try:
            with session.begin_nested():
                session.add(Heartbeat(node=key, **values))
        except IntegrityError as exc:
            raise ApiError(409, "a concurrent heartbeat of this node was accepted") from exc
    for listener in context.heartbeat_listeners:
        after_commit(
            session,
            partial(
                listener.on_heartbeat,
                key,
                body.free_vcpus,
                body.free_memory_mib,
                body.free_disk_gib,
                body.timestamp,
            ),
        )
    return HeartbeatOut(node=str(checksum(key)), timestamp=body.timestamp)
