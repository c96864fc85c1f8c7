"""The guest relay: secrets a renter sealed to its attested guest, carried to the lease's
node, and where the node says the guest serves SSH.

The backend is an untrusted transport here: it stores ciphertext it cannot open (HPKE to a
key that never leaves the guest) and an SSH address the renter checks by pinning the
guest's attested host key. Access is still checked, so nobody else can fill a lease's
queue or read its traffic: the renter (SIWE) writes secrets, the lease's node (a signed
request, as for the private spec) reads them and announces the SSH address.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.domain.addresses import parse_address
from backend.domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from backend.store import Lease
from backend.store.models import GuestAccess as GuestAccessRow
from backend.store.models import SealedSecret
from cvm.api_models import (
    NODE_HEADER,
    GuestAccessIn,
    GuestAccessView,
    LeaseState,
    SealedSecretsIn,
    SealedSecretsView,
)
from cvm.eip712 import Domain, SignatureError, check_timestamp, verify_node_message
from cvm.guest_access import GuestAccess

# The newest sealed messages kept per lease; an older one is dropped to make room (a renter
# that re-sends its secrets is never refused, and a lease's queue stays bounded).
MAX_PENDING_PER_LEASE = 16


def _lease(session: Session, lease_id: int) -> Lease:
    lease = session.get(Lease, lease_id)
    if lease is None:
        raise NotFound(f"lease {lease_id}")
    return lease


def _view(row: SealedSecret) -> SealedSecretsView:
    return SealedSecretsView(
        id=row.id,
        lease_id=row.lease_id,
        report_data=row.report_data,
        enc=row.enc,
        ciphertext=row.ciphertext,
        created_at=row.created_at,
    )


def put_sealed(
    session: Session, lease_id: int, renter: str, body: SealedSecretsIn, now: datetime
) -> SealedSecretsView:
    """Queue sealed secrets for the lease's node; only its renter, only while it runs.
    The newest `MAX_PENDING_PER_LEASE` are kept."""
    lease = _lease(session, lease_id)
    if lease.renter != renter:
        raise Forbidden("only the lease's renter sends it secrets")
    if lease.status != LeaseState.ACTIVE or lease.node is None:
        raise Forbidden(f"lease {lease_id} is {lease.status}: secrets go to running guests only")
    row = SealedSecret(
        lease_id=lease_id,
        report_data=body.report_data,
        enc=body.enc,
        ciphertext=body.ciphertext,
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


def sealed_secrets(session: Session, lease_id: int) -> list[SealedSecretsView]:
    """The sealed secrets of a lease, oldest first, for its node once the node's signed
    read passed (`backend.api.node_reads`)."""
    rows = session.scalars(
        select(SealedSecret).where(SealedSecret.lease_id == lease_id).order_by(SealedSecret.id)
    )
    return [_view(row) for row in rows]


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
    """Record where the lease's guest serves SSH, as its own node signed it."""
    lease = _lease(session, lease_id)
    if node is None:
        raise Unauthenticated(f"announcing guest access needs the {NODE_HEADER} header")
    address = parse_address(node, NODE_HEADER)
    try:
        access = GuestAccess(address, lease_id, body.host, body.ssh_port, body.timestamp)
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
        if (row.host, row.ssh_port) == (body.host, body.ssh_port):
            return _access_view(row)
        raise Conflict(
            f"guest access announced at {body.timestamp} is not newer than the one stored"
            f" ({row.timestamp}): a replay"
        )
    row.node, row.host, row.ssh_port, row.updated_at = address, body.host, body.ssh_port, at
    row.timestamp = body.timestamp
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
        updated_at=row.updated_at,
    )
