"""Fold chain events into the `nodes`, `leases` and `attestations` projections.

Each event feeds at most one lease and one node projection (`ChainEvent.lease_id`,
`ChainEvent.node`). The lease side and the node side of an event are applied by separate
handlers, so that a reorg can rebuild one lease or one node from its own events without
touching (or double counting into) the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.store import Attestation, ChainEvent, Dispute, Lease, LeaseNode, Node
from cvm.api_models import AttestationState, LeaseState
from cvm.chain import LeaseSpec, NodeSpec


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value).lower()


def json_args(args: dict[str, Any]) -> dict[str, Any]:
    """Event arguments as JSON: bytes as 0x-hex, structs as objects, addresses lower-case."""

    def convert(value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            return "0x" + bytes(value).hex()
        if isinstance(value, tuple | list):
            return [convert(item) for item in value]
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
            return value.lower()
        return value

    return {key: convert(value) for key, value in args.items()}


def subjects(name: str, args: dict[str, Any], session: Session) -> tuple[int | None, str | None]:
    """(lease id, node address) the event feeds; None where it feeds no projection."""
    if name in _REGISTRY_NODE_EVENTS:
        return None, str(args["nodeKey"]).lower()
    if name == "LeaseAccepted":
        return int(args["leaseId"]), str(args["nodeKey"]).lower()
    if name in ("AttestationSubmitted", "AttestationEvidence"):
        # AttestationEvidence feeds no projection; its lease id lets the verifier find the
        # attested signer the node submitted with each nonce.
        return int(args["leaseId"]), None
    if name in ("AttestationVerified", "AttestationRejected", "AttestationDisputed"):
        # Counts toward the reputation of the node whose attestation it was.
        lease_id = int(args["leaseId"])
        attestation = session.get(Attestation, lease_id)
        return lease_id, attestation.node if attestation else None
    if name in _LEASE_EVENTS:
        return int(args["leaseId"]), None
    return None, None


# --- lease side ------------------------------------------------------------------------------


def lease_created(args: dict[str, Any], block_number: int) -> Lease:
    """The lease a `LeaseCreated` (its JSON args, see `json_args`) opens, as the store keeps it;
    also what the dispatch at the head matches before the lease is indexed."""
    spec = LeaseSpec.from_abi(args["spec"])
    return Lease(
        id=int(args["leaseId"]),
        renter=args["renter"],
        node=None,
        status=LeaseState.OPEN,
        tee_type=int(spec.tee_type),
        vcpus=spec.vcpu,
        memory_mib=spec.memory_mib,
        disk_gib=spec.disk_gib,
        min_node_stake=spec.min_node_stake,
        max_rate_per_second=int(args["maxPricePerSecond"]),
        rate_per_second=None,
        deposit=int(args["deposit"]),
        spec_hash=_hex(spec.spec_hash),
        expected_measurement=_hex(args["expectedMeasurement"]),
        reattest_interval=spec.reattest_interval,
        attestation_nonce=0,
        created_block=block_number,
        accepted_block=None,
        closed_block=None,
        close_reason=None,
    )


def _lease_created(session: Session, event: ChainEvent) -> None:
    session.merge(lease_created(event.args, event.block_number))


def _lease(session: Session, event: ChainEvent) -> Lease | None:
    return session.get(Lease, int(event.args["leaseId"]))


# Why a node's time on a lease ended (`LeaseNode.reason`); LeaseFailedOver's reason codes.
FAILOVER_REASONS = {
    1: "first_attestation_missed",
    2: "attestation_expired",
    3: "node_exit",
    4: "attestation_rejected",
    5: "verdict_overturned",
}


def _end_node_time(session: Session, event: ChainEvent, reason: str) -> None:
    """End the open `lease_nodes` row of the event's lease (if any) with `reason`."""
    for row in session.scalars(
        select(LeaseNode).where(
            LeaseNode.lease_id == int(event.args["leaseId"]), LeaseNode.ended_block.is_(None)
        )
    ):
        row.ended_block = event.block_number
        row.ended_at = event.block_timestamp
        row.reason = reason


def _lease_accepted(session: Session, event: ChainEvent) -> None:
    lease = _lease(session, event)
    if lease is not None:
        lease.status = LeaseState.ACTIVE
        lease.node = event.args["nodeKey"]
        lease.rate_per_second = int(event.args["ratePerSecond"])
        lease.accepted_block = event.block_number
        _end_node_time(session, event, "replaced")  # never two open rows (cannot happen)
        session.add(
            LeaseNode(
                lease_id=lease.id,
                node=str(event.args["nodeKey"]).lower(),
                accepted_block=event.block_number,
                accepted_at=event.block_timestamp,
            )
        )


def _reopen(lease: Lease) -> None:
    lease.status = LeaseState.OPEN
    lease.node = None
    lease.rate_per_second = None
    lease.accepted_block = None


def _lease_declined(session: Session, event: ChainEvent) -> None:
    # The node gave the lease back before attesting: it is open for the next node.
    lease = _lease(session, event)
    if lease is not None:
        _reopen(lease)
        _end_node_time(session, event, "declined")


def _lease_failed_over(session: Session, event: ChainEvent) -> None:
    # The node was at fault and the lease's policy allows failover: back on the market with
    # its escrow; the old node can never take it again (declinedBy on chain). Its attestation
    # no longer stands: `isAttested` is false until the next node's is Verified.
    lease = _lease(session, event)
    if lease is None:
        return
    _reopen(lease)
    _end_node_time(session, event, FAILOVER_REASONS.get(int(event.args["reason"]), "failed_over"))
    attestation = session.get(Attestation, lease.id)
    if attestation is not None and attestation.status in (
        AttestationState.PENDING,
        AttestationState.VERIFIED,
    ):
        attestation.status = AttestationState.EXPIRED


def _lease_topped_up(session: Session, event: ChainEvent) -> None:
    lease = _lease(session, event)
    if lease is not None:
        lease.deposit = int(event.args["deposit"])


def _lease_closed(session: Session, event: ChainEvent) -> None:
    lease = _lease(session, event)
    if lease is not None:
        lease.status = LeaseState.CLOSED
        lease.close_reason = int(event.args["reason"])
        lease.closed_block = event.block_number
        _end_node_time(session, event, "closed")


def _attestation_submitted(session: Session, event: ChainEvent) -> None:
    lease_id = int(event.args["leaseId"])
    lease = session.get(Lease, lease_id)
    nonce = lease.attestation_nonce if lease is not None else 0
    if lease is not None:
        lease.attestation_nonce = nonce + 1
    interval = lease.reattest_interval if lease is not None else 0
    session.merge(
        Attestation(
            lease_id=lease_id,
            node=event.args["node"],
            status=AttestationState.PENDING,
            report_hash=_hex(event.args["reportHash"]),
            measurement=_hex(event.args["measurement"]),
            nonce=nonce,
            submitted_block=event.block_number,
            submitted_at=event.block_timestamp,
            verified_at=None,
            decided_at=None,
            disputable_until=None,  # read from the registry (`backend.disputes`)
            # As on chain: an attestation is good for reattestInterval from its submission.
            expires_at=event.block_timestamp + interval,
        )
    )


def _attestation_decided(status: AttestationState) -> Callable[[Session, ChainEvent], None]:
    def handler(session: Session, event: ChainEvent) -> None:
        attestation = session.get(Attestation, int(event.args["leaseId"]))
        if attestation is not None and attestation.report_hash == _hex(event.args["reportHash"]):
            attestation.status = status
            if attestation.decided_at is None:
                # When the verifiers' verdict landed (a reversal by a dispute, were it to emit
                # the opposite event, does not move it).
                attestation.decided_at = event.block_timestamp
            if status == AttestationState.VERIFIED:
                attestation.verified_at = event.block_timestamp

    return handler


def _first_verdict(session: Session, lease_id: int, report_hash: str) -> AttestationState | None:
    """The verifiers' verdict on a submission: its first Verified or Rejected event (a
    dispute's reversal, if the contract emits one, comes after it)."""
    events = session.scalars(
        select(ChainEvent)
        .where(
            ChainEvent.lease_id == lease_id,
            ChainEvent.name.in_(("AttestationVerified", "AttestationRejected")),
        )
        .order_by(ChainEvent.block_number, ChainEvent.log_index)
    )
    for event in events:
        if _hex(event.args["reportHash"]) == report_hash:
            if event.name == "AttestationVerified":
                return AttestationState.VERIFIED
            return AttestationState.REJECTED
    return None


def _attestation_disputed(session: Session, event: ChainEvent) -> None:
    lease_id = int(event.args["leaseId"])
    report_hash = _hex(event.args["reportHash"])
    overturned = bool(event.args["overturned"])
    verdict = _first_verdict(session, lease_id, report_hash)
    session.merge(
        Dispute(
            lease_id=lease_id,
            report_hash=report_hash,
            disputer=str(event.args["disputer"]).lower(),
            verdict=verdict,
            overturned=overturned,
            disputed_at=event.block_timestamp,
            block_number=event.block_number,
            tx_hash=event.tx_hash,
        )
    )
    attestation = session.get(Attestation, lease_id)
    if overturned and attestation is not None and attestation.report_hash == report_hash:
        # The EVM's check decided against the verifiers: the verdict is reversed.
        if verdict == AttestationState.VERIFIED:
            attestation.status = AttestationState.REJECTED
        elif verdict == AttestationState.REJECTED:
            attestation.status = AttestationState.VERIFIED
            attestation.verified_at = attestation.verified_at or event.block_timestamp


_LEASE_HANDLERS: dict[str, Callable[[Session, ChainEvent], None]] = {
    "LeaseCreated": _lease_created,
    "LeaseAccepted": _lease_accepted,
    "LeaseDeclined": _lease_declined,
    "LeaseFailedOver": _lease_failed_over,
    "LeaseToppedUp": _lease_topped_up,
    "LeaseClosed": _lease_closed,
    "AttestationSubmitted": _attestation_submitted,
    "AttestationVerified": _attestation_decided(AttestationState.VERIFIED),
    "AttestationRejected": _attestation_decided(AttestationState.REJECTED),
    "AttestationDisputed": _attestation_disputed,
}
_LEASE_EVENTS = frozenset(_LEASE_HANDLERS)

# --- node side --------------------------------------------------------------------------------


def _node_spec(node: Node, value: Any, endpoint: str) -> None:
    spec = NodeSpec.from_abi(value)
    node.tee_type = int(spec.tee_type)
    node.vcpus = spec.vcpu
    node.memory_mib = spec.memory_mib
    node.disk_gib = spec.disk_gib
    node.region = spec.region
    node.price_per_vcpu_second = spec.price_per_vcpu_second
    node.endpoint = endpoint


def _node_registered(session: Session, node: str, event: ChainEvent) -> None:
    row = Node(
        address=node,
        operator=event.args["operator"],
        stake=0,
        active=True,
        attestations_verified=0,
        attestations_rejected=0,
        faults=0,
        registered_block=event.block_number,
    )
    _node_spec(row, event.args["spec"], event.args["endpoint"])
    session.merge(row)


def _node_updated(session: Session, node: str, event: ChainEvent) -> None:
    row = session.get(Node, node)
    if row is not None:
        _node_spec(row, event.args["spec"], event.args["endpoint"])


def _staked(session: Session, node: str, event: ChainEvent) -> None:
    row = session.get(Node, node)
    if row is not None:
        row.stake = int(event.args["stake"])


def _unstake_requested(session: Session, node: str, event: ChainEvent) -> None:
    row = session.get(Node, node)
    if row is not None:
        row.stake = max(0, row.stake - int(event.args["amount"]))


def _slashed(session: Session, node: str, event: ChainEvent) -> None:
    row = session.get(Node, node)
    if row is not None:
        row.stake = max(0, row.stake - int(event.args["fromStake"]))
        row.faults += 1


def _missed(session: Session, node: str, event: ChainEvent) -> None:
    row = session.get(Node, node)
    if row is not None:
        row.faults += 1


def _counted(field: str) -> Callable[[Session, str, ChainEvent], None]:
    def handler(session: Session, node: str, event: ChainEvent) -> None:
        row = session.get(Node, node)
        if row is not None:
            setattr(row, field, getattr(row, field) + 1)

    return handler


def _nothing(session: Session, node: str, event: ChainEvent) -> None:
    """The event concerns the node but changes none of its projected fields."""


_NODE_HANDLERS: dict[str, Callable[[Session, str, ChainEvent], None]] = {
    "NodeRegistered": _node_registered,
    "NodeUpdated": _node_updated,
    "Staked": _staked,
    "UnstakeRequested": _unstake_requested,
    "Unstaked": _nothing,
    "Slashed": _slashed,
    "MissedAttestationRecorded": _missed,
    "LeaseAccepted": _nothing,
    "AttestationVerified": _counted("attestations_verified"),
    "AttestationRejected": _counted("attestations_rejected"),
}
# Events that change a node's projected fields (on-chain facts, stake, track record),
# and with them its score in the matcher: exactly the node handlers that do something.
NODE_RESCORING_EVENTS = frozenset(
    name for name, handler in _NODE_HANDLERS.items() if handler is not _nothing
)
# NodeRegistry's events about one node, which they name by `nodeKey`.
_REGISTRY_NODE_EVENTS = frozenset(_NODE_HANDLERS) - {
    "LeaseAccepted",
    "AttestationVerified",
    "AttestationRejected",
}


def apply_lease_side(session: Session, event: ChainEvent) -> None:
    handler = _LEASE_HANDLERS.get(event.name)
    if handler is not None and event.lease_id is not None:
        handler(session, event)


def apply_node_side(session: Session, event: ChainEvent) -> None:
    handler = _NODE_HANDLERS.get(event.name)
    if handler is not None and event.node is not None:
        handler(session, event.node, event)


def apply(session: Session, event: ChainEvent) -> None:
    """Apply a new event to both projections it feeds."""
    apply_lease_side(session, event)
    apply_node_side(session, event)


def rebuild_lease(session: Session, lease_id: int) -> None:
    """Recompute a lease, its attestation and its disputes from its remaining events."""
    session.execute(delete(Dispute).where(Dispute.lease_id == lease_id))
    session.execute(delete(LeaseNode).where(LeaseNode.lease_id == lease_id))
    session.execute(delete(Attestation).where(Attestation.lease_id == lease_id))
    session.execute(delete(Lease).where(Lease.id == lease_id))
    session.flush()
    events = session.scalars(
        select(ChainEvent)
        .where(ChainEvent.lease_id == lease_id)
        .order_by(ChainEvent.block_number, ChainEvent.log_index)
    )
    for event in events:
        apply_lease_side(session, event)
        session.flush()


def rebuild_node(session: Session, node: str) -> None:
    """Recompute a node from its remaining events."""
    session.execute(delete(Node).where(Node.address == node))
    session.flush()
    events = session.scalars(
        select(ChainEvent)
        .where(ChainEvent.node == node)
        .order_by(ChainEvent.block_number, ChainEvent.log_index)
    )
    for event in events:
        apply_node_side(session, event)
        session.flush()
