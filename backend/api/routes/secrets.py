"""`/v1/leases/{id}/secrets` and `/v1/leases/{id}/access`: the guest relay (ciphertext and
an SSH address between a renter and its lease's node; see backend.domain.secrets_relay)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path

from backend.api.deps import Context, DbSession, Renter, after_commit
from backend.api.node_reads import authorized_node_read
from backend.domain import leases, secrets_relay
from cvm.api_models import (
    NODE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    GuestAccessIn,
    GuestAccessView,
    GuestStatusIn,
    GuestStatusView,
    SealedSecretsIn,
    SealedSecretsView,
    SealedSeqView,
)

router = APIRouter(prefix="/leases", tags=["guest relay"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not signed in / bad signature"},
    403: {"description": "not yours"},
    404: {"description": "no such lease"},
}


@router.post(
    "/{lease_id}/secrets",
    status_code=201,
    response_model=SealedSecretsView,
    summary="Queue secrets sealed to the lease's attested guest (ciphertext only)",
    responses={
        **_ERRORS,
        409: {"description": "seq not above the last one queued"},
        422: {"description": "not signed by the lease's renter, or malformed"},
    },
)
def put_secrets(
    lease_id: LeasePath,
    body: SealedSecretsIn,
    renter: Renter,
    context: Context,
    session: DbSession,
) -> SealedSecretsView:
    queued = secrets_relay.put_sealed(
        session, lease_id, renter, body, context.now(),
        chain_id=context.chain.chain_id, registry=context.chain.attestation_registry,
    )  # fmt: skip
    # The node relays at once, not at its next pass; only once the message is committed.
    node = secrets_relay.serving_node(session, lease_id)
    if node is not None:
        for listener in context.sealed_listeners:
            after_commit(session, partial(listener, lease_id, node))
    return queued


@router.get(
    "/{lease_id}/secrets/seq",
    response_model=SealedSeqView,
    summary="The highest sequence number queued for the lease's sealed messages, for its renter",
    responses=_ERRORS,
)
def get_secrets_seq(lease_id: LeasePath, renter: Renter, session: DbSession) -> SealedSeqView:
    return secrets_relay.last_sealed_seq(session, lease_id, renter)


@router.get(
    "/{lease_id}/secrets",
    response_model=list[SealedSecretsView],
    summary="The sealed secrets of a lease, for its node (signed like the spec read)",
    responses=_ERRORS,
)
def get_secrets(
    lease_id: LeasePath,
    context: Context,
    session: DbSession,
    x_cvm_node: Annotated[str, Header(alias=NODE_HEADER)],
    x_cvm_timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
    x_cvm_signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
    x_cvm_nonce: Annotated[str | None, Header(alias=NONCE_HEADER)] = None,
) -> list[SealedSecretsView]:
    authorized_node_read(
        context,
        session,
        lease_id,
        "secrets",
        x_cvm_node,
        x_cvm_timestamp,
        x_cvm_signature,
        x_cvm_nonce,
        # Secrets go to the running guest only: a node merely matched (and maybe declined)
        # never sees them. No stored private spec is needed to carry them.
        accepted_only=True,
    )
    return secrets_relay.sealed_secrets(session, lease_id)


@router.put(
    "/{lease_id}/guest-status",
    response_model=GuestStatusView,
    summary="The lease's node relays its guest's signed status (installed seq)",
    responses=_ERRORS,
)
def put_guest_status(
    lease_id: LeasePath,
    body: GuestStatusIn,
    context: Context,
    session: DbSession,
    x_cvm_node: Annotated[str, Header(alias=NODE_HEADER)],
    x_cvm_timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
    x_cvm_signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
    x_cvm_nonce: Annotated[str | None, Header(alias=NONCE_HEADER)] = None,
) -> GuestStatusView:
    # Signed like the node's reads (LeaseSpecRequest, single-use nonce): only the node running
    # the lease may fill this row. The body speaks for itself (the guest's signature). This
    # request's own session writes (PUT), so the nonce is spent in it, not in a second writer.
    now = int(context.clock())
    window_s = context.settings.heartbeat_window_s
    lease, request = leases.verified_node_request(
        session, lease_id, x_cvm_node, x_cvm_timestamp, x_cvm_signature, x_cvm_nonce,
        domain=context.domain, now=now, window_s=window_s, accepted_only=True,
    )  # fmt: skip
    context.limit_address(request.node.lower(), "guest-status")
    leases.consume_request_nonce(
        session, request.node, request.nonce, request.timestamp, now=now, window_s=window_s
    )
    return secrets_relay.record_guest_status(session, lease, body, context.now())


@router.get(
    "/{lease_id}/guest-status",
    response_model=GuestStatusView,
    summary="The guest's signed status as its node relayed it, for the lease's renter",
    responses=_ERRORS,
)
def get_guest_status(lease_id: LeasePath, renter: Renter, session: DbSession) -> GuestStatusView:
    return secrets_relay.guest_status_for_renter(session, lease_id, renter)


@router.put(
    "/{lease_id}/access",
    response_model=GuestAccessView,
    summary="The lease's node announces where its guest serves SSH and its service ports"
    " (EIP-712 signed)",
    responses={**_ERRORS, 409: {"description": "not newer than the announcement stored"}},
)
def put_access(
    lease_id: LeasePath,
    body: GuestAccessIn,
    context: Context,
    session: DbSession,
    x_cvm_node: Annotated[str | None, Header(alias=NODE_HEADER)] = None,
) -> GuestAccessView:
    return secrets_relay.announce_access(
        session,
        lease_id,
        x_cvm_node,
        body,
        domain=context.domain,
        now=int(context.clock()),
        window_s=context.settings.heartbeat_window_s,
        at=context.now(),
    )


@router.get(
    "/{lease_id}/access",
    response_model=GuestAccessView,
    summary="Where the lease's guest serves SSH and its service ports, for its renter",
    responses=_ERRORS,
)
def get_access(lease_id: LeasePath, renter: Renter, session: DbSession) -> GuestAccessView:
    return secrets_relay.access_for_renter(session, lease_id, renter)
