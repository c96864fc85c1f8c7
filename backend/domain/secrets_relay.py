"""The guest relay: secrets a renter sealed to its attested guest, carried to the lease's
node, and where the node says the guest serves SSH.

The backend is an untrusted transport here: it stores ciphertext it cannot open (HPKE to a
key that never leaves the guest) and an SSH address the renter checks by pinning the
guest's attested host key. Access is still checked, so nobody else can fill a lease's
queue or read its traffic: the renter (SIWE) writes secrets, the lease's node (a signed
request, as for the private spec) reads them and announces the SSH address.

Each sealed message carries the renter's sequence number and EIP-712 signature. The guest
is what enforces them (only its renter's signature, only a seq above the last installed);
the backend checks them too, so junk is refused early and its queue stays in seq order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend.domain.addresses import parse_address
from backend.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from backend.store import Lease
from backend.store.models import GuestAccess as GuestAccessRow
from backend.store.models import GuestStatusRow, SealedSecret
from cvm import guest_eip712
from cvm.api_models import (
    NODE_HEADER,
    GuestAccessIn,
    GuestAccessView,
    GuestPort,
    GuestStatusIn,
    GuestStatusView,
    LeaseState,
    SealedSecretsIn,
    SealedSecretsView,
    SealedSeqView,
)
from cvm.eip712 import Domain, SignatureError, check_timestamp, verify_node_message
from cvm.guest_access import GuestAccess

# The newest sealed messages kept per lease; an older one is dropped to make room (a renter
# that re-sends its secrets is never refused, and a lease's queue stays bounded).
MAX_PENDING_PER_LEASE = 16


def _lease(session: Session, lease_id: int, *, lock: bool = False) -> Lease:
    # `lock`: two concurrent puts must not both pass the seq check (PostgreSQL row lock).
    lease = session.get(Lease, lease_id, with_for_update=lock)
    if lease is None:
        raise NotFound(f"lease {lease_id}")
    return lease


def serving_node(session: Session, lease_id: int) -> str | None:
    """The node that runs the lease (its lower-case address), None if none does."""
    return _lease(session, lease_id).node


def _view(row: SealedSecret) -> SealedSecretsView:
    return SealedSecretsView(
        id=row.id,
        lease_id=row.lease_id,
        report_data=row.report_data,
        enc=row.enc,
        ciphertext=row.ciphertext,
        seq=row.seq,
        signature=row.signature,
        created_at=row.created_at,
    )


def _last_seq(session: Session, lease_id: int) -> int:
    return int(
        session.scalar(select(func.max(SealedSecret.seq)).where(SealedSecret.lease_id == lease_id))
        or 0
    )


def put_sealed(
    session: Session,
    lease_id: int,
    renter: str,
    body: SealedSecretsIn,
    now: datetime,
    *,
    chain_id: int,
    registry: str,
) -> SealedSecretsView:
    """Queue sealed secrets for the lease's node; only its renter, only while it runs, only
    signed by the renter (EIP-712 SealedSecrets on this deployment) with a seq above those
    queued. The newest `MAX_PENDING_PER_LEASE` are kept."""
    lease = _lease(session, lease_id, lock=True)
    if lease.renter != renter:
        raise Forbidden("only the lease's renter sends it secrets")
    if lease.status != LeaseState.ACTIVE or lease.node is None:
        raise Forbidden(f"lease {lease_id} is {lease.status}: secrets go to running guests only")
    message = guest_eip712.sealed_secrets_message(
        chain_id, registry, lease_id, body.seq, bytes.fromhex(body.report_data),
        bytes.fromhex(body.enc), bytes.fromhex(body.ciphertext),
    )  # fmt: skip
    try:
        signer = guest_eip712.recover(message, bytes.fromhex(body.signature))
    except ValueError as exc:
        raise InvalidInput(f"the sealed message's signature is malformed: {exc}") from None
    if signer.lower() != lease.renter.lower():
        # The guest would refuse it too: only the renter HOST_DATA binds may send.
        raise InvalidInput(f"the sealed message is signed by {signer}, not by the lease's renter")
    last = _last_seq(session, lease_id)
    if body.seq <= last:
        raise Conflict(f"seq {body.seq} is not above the last one queued ({last}): use {last + 1}")
    row = SealedSecret(
        lease_id=lease_id,
        report_data=body.report_data,
        enc=body.enc,
        ciphertext=body.ciphertext,
        seq=body.seq,
        signature=body.signature,
        created_at=now,
    )
    session.add(row)
    session.flush()
    older = select(SealedSecret.id).where(SealedSecret.lease_id == lease_id)
    dropped = session.scalars(
        older.order_by(SealedSecret.id.desc()).offset(MAX_PENDING_PER_LEASE)
    ).all()
    if dropped:
        session.execute(delete(SealedSecret).where(SealedSecret.id.in_(dropped)))
    return _view(row)


def last_sealed_seq(session: Session, lease_id: int, renter: str) -> SealedSeqView:
    """The highest seq queued for the lease, for its renter's client to go above."""
    lease = _lease(session, lease_id)
    if lease.renter != renter:
        raise Forbidden("only the lease's renter reads its sealed messages' sequence")
    return SealedSeqView(lease_id=lease_id, seq=_last_seq(session, lease_id))


def sealed_secrets(session: Session, lease_id: int) -> list[SealedSecretsView]:
    """The sealed secrets of a lease, oldest first, for its node once the node's signed
    read passed (`backend.api.node_reads`)."""
    rows = session.scalars(
        select(SealedSecret).where(SealedSecret.lease_id == lease_id).order_by(SealedSecret.id)
    )
    return [_view(row) for row in rows]


def record_guest_status(
    session: Session, lease: Lease, body: GuestStatusIn, at: datetime
) -> GuestStatusView:
    """Keep the guest's latest signed status, as the lease's node (already checked) relayed it.
    Not checked here: only the renter's client knows (from the evidence it verified) which
    signer to trust; a junk signature merely shows the renter "unverified"."""
    row = session.get(GuestStatusRow, lease.id, with_for_update=True)
    if row is None:
        row = GuestStatusRow(lease_id=lease.id)
        session.add(row)
    row.seq, row.signature, row.updated_at = body.seq, body.signature, at
    session.flush()
    return _status_view(row)


def guest_status_for_renter(session: Session, lease_id: int, renter: str) -> GuestStatusView:
    lease = _lease(session, lease_id)
    if lease.renter != renter:
        raise Forbidden("only the lease's renter reads its guest's status")
    row = session.get(GuestStatusRow, lease_id)
    if row is None:
        raise NotFound(f"guest status of lease {lease_id} (its node has not relayed one yet)")
    return _status_view(row)


def _status_view(row: GuestStatusRow) -> GuestStatusView:
    return GuestStatusView(
        lease_id=row.lease_id, seq=row.seq, signature=row.signature, updated_at=row.updated_at
    )


def announce_access(
    session: Session,
    lease_id: int,
    node: str | None,
    body: GuestAccessIn,
    *,
    domain: Domain,
    now: int,
    window_s: int,
    at: datetime,
) -> GuestAccessView:
    """Record where the lease's guest serves SSH and its service ports, as its own node
    signed it."""
    lease = _lease(session, lease_id)
    if node is None:
        raise Unauthenticated(f"announcing guest access needs the {NODE_HEADER} header")
    address = parse_address(node, NODE_HEADER)
    ports = [[port.guest_port, port.host_port] for port in body.ports]
    try:
        forwards = tuple((guest, host) for guest, host in ports)
        access = GuestAccess(address, lease_id, body.host, body.ssh_port, forwards, body.timestamp)
        verify_node_message(access, body.signature, domain)
        check_timestamp(body.timestamp, now, window_s)
    except (SignatureError, ValueError) as exc:
        raise Unauthenticated(f"guest access rejected: {exc}") from exc
    if lease.node is None or lease.node != address:
        raise Forbidden("only the node that accepted the lease announces its guest")
    row = session.get(GuestAccessRow, lease_id, with_for_update=True)
    if row is None:
        row = GuestAccessRow(lease_id=lease_id, node=address, timestamp=0)
        session.add(row)
    elif row.node != address:
        row.timestamp = 0  # the lease moved: the previous node's announcements do not count
    if body.timestamp <= row.timestamp:
        # A captured announcement replayed within the time window must not roll the address
        # back: only a newer one replaces it (the same address again is a harmless retry).
        if (row.host, row.ssh_port, row.ports) == (body.host, body.ssh_port, ports):
            return _access_view(row)
        raise Conflict(
            f"guest access announced at {body.timestamp} is not newer than the one stored"
            f" ({row.timestamp}): a replay"
        )
    row.node, row.host, row.ssh_port, row.updated_at = address, body.host, body.ssh_port, at
    row.ports, row.timestamp = ports, body.timestamp
    session.flush()
    return _access_view(row)


def access_for_renter(session: Session, lease_id: int, renter: str) -> GuestAccessView:
    lease = _lease(session, lease_id)
    if lease.renter != renter:
        raise Forbidden("only the lease's renter sees where its guest serves SSH")
    row = session.get(GuestAccessRow, lease_id)
    if row is None or row.node != lease.node:
        raise NotFound(f"SSH access of lease {lease_id} (its node has not announced it yet)")
    return _access_view(row)


def _access_view(row: GuestAccessRow) -> GuestAccessView:
    return GuestAccessView(
        lease_id=row.lease_id,
        node=row.node,
        host=row.host,
        ssh_port=row.ssh_port,
        ports=[GuestPort(guest_port=guest, host_port=host) for guest, host in row.ports or []],
        updated_at=row.updated_at,
    )
