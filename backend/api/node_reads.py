"""The one check of a node-signed read of a lease (its private spec, its sealed secrets).

The node's signature (`LeaseSpecRequest`, EIP-712) must be fresh and its nonce unused: the
nonce is spent in a writing session, since the request's own session only reads. Which node
may read is the caller's rule (`leases.verified_node_request`). Rate-limited per node
address only once the signature verified: a forged request naming a node's address must not
use up that node's own allowance (failed attempts count per client IP, in the middleware).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend.api.deps import AppContext
from backend.domain import leases
from backend.store import Lease


def authorized_node_read(
    context: AppContext,
    session: Session,
    lease_id: int,
    what: str,
    node: str,
    timestamp: str | None,
    signature: str | None,
    nonce: str | None,
    *,
    accepted_only: bool,
) -> Lease:
    """The lease once the node's signed request for endpoint `what` passed every check and
    its nonce is spent; a `DomainError` otherwise. `accepted_only`: only the node that
    accepted the lease, not one it was merely matched to."""
    now = int(context.clock())
    window_s = context.settings.heartbeat_window_s
    lease, request = leases.verified_node_request(
        session,
        lease_id,
        node,
        timestamp,
        signature,
        nonce,
        domain=context.domain,
        now=now,
        window_s=window_s,
        accepted_only=accepted_only,
        lease_at_head=None if accepted_only else context.lease_at_head,
    )
    context.limit_address(request.node.lower(), what)
    with context.store.session() as writer:
        leases.consume_request_nonce(
            writer, request.node, request.nonce, request.timestamp, now=now, window_s=window_s
        )
    return lease
