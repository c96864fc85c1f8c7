"""The one check of a node-signed read of a lease (its private spec, its sealed secrets).

The node's signature (`LeaseSpecRequest`, EIP-712) must be fresh, by the node the lease was
matched to or accepted by, and its nonce unused: the nonce is spent in a writing session,
since the request's own session only reads. Rate-limited per node address.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend.api.deps import AppContext
from backend.domain import leases
from backend.domain.addresses import parse_address
from cvm.api_models import NODE_HEADER, PrivateSpec


def authorized_node_read(
    context: AppContext,
    session: Session,
    lease_id: int,
    what: str,
    node: str,
    timestamp: str | None,
    signature: str | None,
    nonce: str | None,
) -> PrivateSpec:
    """The lease's private spec once the node's signed request for endpoint `what` passed
    every check and its nonce is spent; a `DomainError` otherwise."""
    context.limit_address(parse_address(node, NODE_HEADER), what)
    now = int(context.clock())
    window_s = context.settings.heartbeat_window_s
    spec, request = leases.private_spec_for_node(
        session,
        lease_id,
        node,
        timestamp,
        signature,
        nonce,
        domain=context.domain,
        now=now,
        window_s=window_s,
    )
    with context.store.session() as writer:
        leases.consume_request_nonce(
            writer, request.node, request.nonce, request.timestamp, now=now, window_s=window_s
        )
    return spec
