"""Nodes as the API shows them, and the rule for accepting a node's signed heartbeat."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.domain.addresses import checksum, parse_address
from backend.domain.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from backend.matching import reputation
from backend.store import Heartbeat, Node
from cvm.api_models import HeartbeatIn, NodeView
from cvm.eip712 import Domain, SignatureError, check_timestamp, verify_node_message
from cvm.eip712 import Heartbeat as SignedFields


def node_view(node: Node, heartbeat: Heartbeat | None) -> NodeView:
    """A node's on-chain facts with its last heartbeat (None: never heard from)."""
    return NodeView(
        address=str(checksum(node.address)),
        operator=str(checksum(node.operator)),
        tee_type=node.tee_type,
        vcpus=node.vcpus,
        memory_mib=node.memory_mib,
        disk_gib=node.disk_gib,
        region=node.region,
        price_per_vcpu_second=node.price_per_vcpu_second,
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


@dataclass(frozen=True)
class NodeFilter:
    """Which nodes to list; None leaves a criterion out."""

    tee_type: int | None = None
    min_vcpus: int | None = None
    min_memory_mib: int | None = None
    max_price_per_vcpu_second: int | None = None
    min_stake: int | None = None
    active: bool | None = None


def list_nodes(
    session: Session, where: NodeFilter, *, limit: int = 100, offset: int = 0
) -> list[NodeView]:
    """Nodes matching `where`, by address."""
    query = select(Node, Heartbeat).outerjoin(Heartbeat, Heartbeat.node == Node.address)
    if where.tee_type is not None:
        query = query.where(Node.tee_type == where.tee_type)
    if where.min_vcpus is not None:
        query = query.where(Node.vcpus >= where.min_vcpus)
    if where.min_memory_mib is not None:
        query = query.where(Node.memory_mib >= where.min_memory_mib)
    if where.max_price_per_vcpu_second is not None:
        query = query.where(Node.price_per_vcpu_second <= where.max_price_per_vcpu_second)
    if where.min_stake is not None:
        query = query.where(Node.stake >= where.min_stake)
    if where.active is not None:
        query = query.where(Node.active == where.active)
    rows = session.execute(query.order_by(Node.address).limit(limit).offset(offset)).all()
    return [node_view(node, heartbeat) for node, heartbeat in rows]


def get_node(session: Session, address: str) -> NodeView:
    """One node by address (`NotFound` if it is not registered or not indexed yet)."""
    key = parse_address(address)
    node = session.get(Node, key)
    if node is None:
        raise NotFound(f"node {address}")
    return node_view(node, session.get(Heartbeat, key))


def accept_heartbeat(
    session: Session,
    heartbeat: HeartbeatIn,
    *,
    domain: Domain,
    now: datetime,
    window_s: int,
) -> None:
    """Record a node's signed heartbeat as its current free capacity.

    It must be signed by the node key, stamped within `window_s` of `now`, from a
    registered node, and strictly newer than the last one accepted: a replayed (or
    reordered) heartbeat never rolls the node's capacity back.
    """
    key = heartbeat.node.lower()
    try:
        fields = SignedFields(
            node=heartbeat.node,
            free_vcpus=heartbeat.free_vcpus,
            free_memory_mib=heartbeat.free_memory_mib,
            free_disk_gib=heartbeat.free_disk_gib,
            running_leases=heartbeat.running_leases,
            timestamp=heartbeat.timestamp,
        )
        verify_node_message(fields, heartbeat.signature, domain)
    except SignatureError as exc:
        raise Unauthenticated(f"heartbeat signature rejected: {exc}") from exc
    try:
        check_timestamp(heartbeat.timestamp, int(now.timestamp()), window_s)
    except SignatureError as exc:
        raise InvalidInput(f"stale or future heartbeat: {exc}") from exc
    values = {
        "free_vcpus": heartbeat.free_vcpus,
        "free_memory_mib": heartbeat.free_memory_mib,
        "free_disk_gib": heartbeat.free_disk_gib,
        "running_leases": heartbeat.running_leases,
        "timestamp": heartbeat.timestamp,
        "signature": heartbeat.signature.lower(),
        "received_at": now,
    }
    # A conditional update, so that the newer-than rule holds under concurrent requests;
    # the registration check rides in the same statement (one round trip per heartbeat of
    # a known node, a thousand nodes' heartbeats being the store's steadiest write).
    result = session.execute(
        update(Heartbeat)
        .where(
            Heartbeat.node == key,
            Heartbeat.timestamp < heartbeat.timestamp,
            exists().where(Node.address == key),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) == 1:
        return
    if session.get(Node, key) is None:
        raise NotFound(f"node {heartbeat.node} (not registered on chain, or not indexed yet)")
    if session.get(Heartbeat, key) is not None:
        raise Conflict("heartbeat timestamp is not newer than the last accepted one")
    try:
        with session.begin_nested():
            session.add(Heartbeat(node=key, **values))
    except IntegrityError as exc:
        raise Conflict("a concurrent heartbeat of this node was accepted") from exc
