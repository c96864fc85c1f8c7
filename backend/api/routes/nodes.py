"""`/v1/nodes`: registered nodes with their last heartbeat, and signed heartbeats."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import Context, DbSession, after_commit
from backend.api.errors import ApiError
from backend.domain import nodes
from backend.domain.addresses import checksum, parse_address
from cvm.api_models import HeartbeatIn, HeartbeatReceipt, NodeView

router = APIRouter(prefix="/nodes", tags=["nodes"])


@router.get("", response_model=list[NodeView], summary="List and filter registered nodes")
def list_nodes(
    session: DbSession,
    tee_type: Annotated[int | None, Query(ge=0, le=255)] = None,
    min_vcpus: Annotated[int | None, Query(ge=0, le=65535)] = None,
    min_memory_mib: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    max_price_per_vcpu_second: Annotated[int | None, Query(ge=0, le=2**256 - 1)] = None,
    min_stake: Annotated[int | None, Query(ge=0, le=2**256 - 1)] = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[NodeView]:
    where = nodes.NodeFilter(
        tee_type=tee_type,
        min_vcpus=min_vcpus,
        min_memory_mib=min_memory_mib,
        max_price_per_vcpu_second=max_price_per_vcpu_second,
        min_stake=min_stake,
        active=active,
    )
    return nodes.list_nodes(session, where, limit=limit, offset=offset)


@router.get(
    "/{address}",
    response_model=NodeView,
    responses={404: {"description": "unknown node"}, 422: {"description": "bad address"}},
)
def get_node(address: str, session: DbSession) -> NodeView:
    return nodes.get_node(session, address)


@router.post(
    "/{address}/heartbeats",
    status_code=201,
    response_model=HeartbeatReceipt,
    summary="Report free capacity, signed by the node key (EIP-712 Heartbeat)",
    responses={
        401: {"description": "bad signature"},
        404: {"description": "node not registered"},
        409: {"description": "timestamp not newer than the last accepted (replay)"},
        429: {"description": "too many heartbeats from this node or client"},
        422: {"description": "malformed body or timestamp outside the window"},
    },
)
def post_heartbeat(
    address: str, body: HeartbeatIn, context: Context, session: DbSession
) -> HeartbeatReceipt:
    key = parse_address(address)
    if body.node.lower() != key:
        raise ApiError(422, f"body node {body.node} differs from the path address {address}")
    nodes.accept_heartbeat(
        session,
        body,
        domain=context.domain,
        now=context.now(),
        window_s=context.settings.heartbeat_window_s,
    )
    # Counted only once the signature verified (a 429 rolls the heartbeat back): forged
    # heartbeats naming this address count against their client IP, never against the node.
    context.limit_address(key, "heartbeats")
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
    return HeartbeatReceipt(node=str(checksum(key)), timestamp=body.timestamp)
