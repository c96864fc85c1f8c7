"""Leases as the API shows them, their private specs, and who may read a spec."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.domain.addresses import checksum, parse_address
from backend.domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from backend.store import (
    Attestation,
    ChainEvent,
    Lease,
    LeaseNode,
    Match,
    RequestNonce,
    ReservationState,
    Verification,
)
from backend.store import PrivateSpec as PrivateSpecRow
from cvm.api_models import (
    NODE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    LeaseIntent,
    LeaseNodeView,
    LeaseState,
    LeaseView,
    PrivateSpec,
    private_spec_hash,
)
from cvm.attestation.amd_root import AmdRoot
from cvm.eip712 import (
    Domain,
    LeaseSpecRequest,
    SignatureError,
    check_timestamp,
    verify_node_message,
)


def _spec_of(session: Session, lease: Lease) -> PrivateSpecRow | None:
    spec = session.get(PrivateSpecRow, lease.spec_hash)
    # A spec binds only to leases of the renter who stored it.
    return spec if spec is not None and spec.renter == lease.renter else None


def _amd_roots(session: Session, lease_ids: list[int]) -> dict[int, AmdRoot]:
    """The root each lease's latest report chained to, for those whose report verified."""
    if not lease_ids:
        return {}
    rows = session.execute(
        select(Attestation.lease_id, Verification.amd_root)
        .join(
            Verification,
            (Verification.lease_id == Attestation.lease_id)
            & (Verification.report_hash == Attestation.report_hash),
        )
        .where(Attestation.lease_id.in_(lease_ids), Verification.amd_root.is_not(None))
    ).all()
    return {int(lease_id): amd_root for lease_id, amd_root in rows}


def _histories(session: Session, lease_ids: list[int]) -> dict[int, list[LeaseNodeView]]:
    """Each lease's nodes, oldest first (`lease_nodes`)."""
    if not lease_ids:
        return {}
    rows = session.scalars(
        select(LeaseNode).where(LeaseNode.lease_id.in_(lease_ids)).order_by(LeaseNode.id)
    ).all()
    found: dict[int, list[LeaseNodeView]] = {}
    for row in rows:
        found.setdefault(int(row.lease_id), []).append(
            LeaseNodeView(
                node=str(checksum(row.node)),
                accepted_at=row.accepted_at,
                ended_at=row.ended_at,
                reason=row.reason,
            )
        )
    return found


def lease_view(
    session: Session,
    lease: Lease,
    amd_root: AmdRoot | None = None,
    nodes: list[LeaseNodeView] | None = None,
) -> LeaseView:
    """A lease as on chain, whether its renter stored its private spec here, which root
    its latest verified report chained to, and the nodes that served it."""
    return LeaseView(
        id=lease.id,
        renter=str(checksum(lease.renter)),
        node=checksum(lease.node),
        status=lease.status,
        tee_type=lease.tee_type,
        vcpus=lease.vcpus,
        memory_mib=lease.memory_mib,
        disk_gib=lease.disk_gib,
        min_node_stake=lease.min_node_stake,
        max_rate_per_second=lease.max_rate_per_second,
        rate_per_second=lease.rate_per_second,
        deposit=lease.deposit,
        spec_hash=lease.spec_hash,
        expected_measurement=lease.expected_measurement,
        reattest_interval=lease.reattest_interval,
        created_block=lease.created_block,
        has_private_spec=_spec_of(session, lease) is not None,
        amd_root=amd_root,
        nodes=nodes or [],
    )


def _lease(session: Session, lease_id: int) -> Lease:
    lease = session.get(Lease, lease_id)
    if lease is None:
        raise NotFound(f"lease {lease_id}")
    return lease


def get_lease(session: Session, lease_id: int) -> LeaseView:
    lease = _lease(session, lease_id)
    return lease_view(
        session,
        lease,
        _amd_roots(session, [lease.id]).get(lease.id),
        _histories(session, [lease.id]).get(lease.id),
    )


def list_leases(
    session: Session,
    *,
    renter: str | None = None,
    node: str | None = None,
    status: LeaseState | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[LeaseView]:
    """Leases by id, of one renter, one node and in one status where given."""
    query = select(Lease)
    if renter is not None:
        query = query.where(Lease.renter == parse_address(renter, "renter"))
    if node is not None:
        query = query.where(Lease.node == parse_address(node, "node"))
    if status is not None:
        query = query.where(Lease.status == status)
    leases = session.scalars(query.order_by(Lease.id).limit(limit).offset(offset)).all()
    ids = [lease.id for lease in leases]
    roots = _amd_roots(session, ids)
    histories = _histories(session, ids)
    return [
        lease_view(session, lease, roots.get(lease.id), histories.get(lease.id)) for lease in leases
    ]


def _private_spec(row: PrivateSpecRow) -> PrivateSpec:
    return PrivateSpec(
        spec_hash=row.spec_hash,
        image=row.image,
        ssh_public_key=row.ssh_public_key,
        cloud_init=row.cloud_init,
    )


def store_private_spec(
    session: Session, renter: str, intent: LeaseIntent, now: datetime
) -> PrivateSpec:
    """Keep the private spec of a lease `renter` is about to create (idempotent).

    Its hash (`private_spec_hash`) is the `specHash` the lease must carry on chain.
    """
    spec_hash = private_spec_hash(renter, intent.image, intent.ssh_public_key, intent.cloud_init)
    row = session.get(PrivateSpecRow, spec_hash)
    if row is None:
        row = PrivateSpecRow(
            spec_hash=spec_hash,
            renter=renter,
            image=intent.image,
            ssh_public_key=intent.ssh_public_key,
            cloud_init=intent.cloud_init,
            created_at=now,
        )
        session.add(row)
    return _private_spec(row)


def private_spec_for_renter(session: Session, lease_id: int, renter: str | None) -> PrivateSpec:
    """The private spec of a lease, for its signed-in renter only (`renter` None: not signed in)."""
    lease = _lease(session, lease_id)
    if renter is None:
        raise Unauthenticated("sign in with Ethereum to read a lease's private spec")
    if renter != lease.renter:
        raise Forbidden("only the lease's renter sees its private spec")
    return _stored_spec(session, lease)


def verified_node_request(
    session: Session,
    lease_id: int,
    node: str,
    timestamp: str | None,
    signature: str | None,
    nonce: str | None,
    *,
    domain: Domain,
    now: int,
    window_s: int,
    accepted_only: bool,
    lease_at_head: Callable[[int], Lease | None] | None = None,
) -> tuple[Lease, LeaseSpecRequest]:
    """The lease and the node's verified, fresh `LeaseSpecRequest` for it (the values of the
    `NODE_HEADER`, `TIMESTAMP_HEADER`, `SIGNATURE_HEADER` and `NONCE_HEADER` headers), whose
    nonce the caller must then `consume_request_nonce` (in a writing transaction) before
    answering.

    Only the node that accepted the lease may ask, or, unless `accepted_only`, one it was
    matched to (it reads the spec before accepting). A lease dispatched at the head, before
    the store has it, is read with `lease_at_head` (the chain's `LeaseCreated`), for a node
    holding a live reservation for it only.
    """
    stored = session.get(Lease, lease_id)
    if stored is None and (accepted_only or lease_at_head is None):
        raise NotFound(f"lease {lease_id}")
    if timestamp is None or signature is None or nonce is None:
        raise Unauthenticated(
            f"{NODE_HEADER} needs {TIMESTAMP_HEADER}, {NONCE_HEADER} and {SIGNATURE_HEADER}"
        )
    address = parse_address(node, NODE_HEADER)
    try:
        request = LeaseSpecRequest(
            node=address, lease_id=lease_id, timestamp=int(timestamp), nonce=int(nonce)
        )
        verify_node_message(request, signature, domain)
        check_timestamp(request.timestamp, now, window_s)
    except (SignatureError, ValueError) as exc:
        raise Unauthenticated(f"node request rejected: {exc}") from exc
    if stored is None:
        assert lease_at_head is not None
        # Not indexed yet: only a node holding a live reservation, and only for a lease the
        # chain has (a create a reorg dropped is not found).
        reserved = session.scalar(
            select(Match.id)
            .where(
                Match.lease_id == lease_id,
                Match.node == address,
                Match.status.in_(ReservationState.live()),
            )
            .limit(1)
        )
        at_head = lease_at_head(lease_id) if reserved is not None else None
        if at_head is None:
            raise NotFound(f"lease {lease_id}")
        return at_head, request
    lease = stored
    if lease.node == address:
        return lease, request
    if address.lower() in _failed_over_from(session, lease.id):
        # The lease moved off this node (it was at fault): nothing of it is this node's now.
        raise Forbidden(f"lease {lease.id} failed over from this node: it is no longer yours")
    if accepted_only:
        raise Forbidden(f"only the node that accepted lease {lease.id} may ask for this")
    matched = session.scalar(
        select(Match.id).where(Match.lease_id == lease.id, Match.node == address).limit(1)
    )
    if matched is None:
        raise Forbidden("only the lease's renter and the node it was matched to see its spec")
    return lease, request


def _failed_over_from(session: Session, lease_id: int) -> set[str]:
    """The nodes `lease_id` failed over from (its indexed `LeaseFailedOver` events)."""
    rows = session.scalars(
        select(ChainEvent.args).where(
            ChainEvent.name == "LeaseFailedOver", ChainEvent.lease_id == lease_id
        )
    )
    return {str(args["oldNode"]).lower() for args in rows}


def private_spec_of(session: Session, lease: Lease) -> PrivateSpec:
    """The stored private spec of a lease (404 if none), for a caller already authorized."""
    return _stored_spec(session, lease)


def consume_request_nonce(
    session: Session, signer: str, nonce: int, timestamp: int, *, now: int, window_s: int
) -> None:
    """Record a signed request's nonce as used; `Conflict` if it was used before.

    Kept until the request's timestamp leaves the window (after that the timestamp check
    refuses it anyway), so the table holds only the last `2 * window_s` of requests.
    """
    moment = datetime.fromtimestamp(now, UTC)
    session.execute(delete(RequestNonce).where(RequestNonce.expires_at < moment))
    expires = datetime.fromtimestamp(timestamp + window_s, UTC) + timedelta(seconds=1)
    try:
        with session.begin_nested():
            session.add(RequestNonce(signer=signer.lower(), nonce=str(nonce), expires_at=expires))
    except IntegrityError as exc:
        raise Conflict(f"request nonce {nonce} was already used: a replay") from exc


def _stored_spec(session: Session, lease: Lease) -> PrivateSpec:
    row = _spec_of(session, lease)
    if row is None:
        raise NotFound(f"private spec of lease {lease.id}")
    return _private_spec(row)
