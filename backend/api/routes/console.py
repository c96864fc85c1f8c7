"""`/v1/leases/{id}/console` (the lease's node ships its guest console, signed) and
`/v1/leases/{id}/logs` (the lease's renter reads it); see backend.domain.console."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from backend.api.deps import AppContext, Context, DbSession, Renter
from backend.api.errors import ApiError
from backend.domain import console
from backend.domain.addresses import parse_address
from cvm.api_models import (
    CONSOLE_CHUNK_MAX_BYTES,
    NODE_HEADER,
    NONCE_HEADER,
    OFFSET_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ConsoleReceipt,
    LeaseConsoleView,
)

router = APIRouter(prefix="/leases", tags=["guest console"])

LeasePath = Annotated[int, Path(ge=0, le=2**63 - 1, description="on-chain lease id")]
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not signed in / bad signature"},
    403: {"description": "not yours"},
    404: {"description": "no such lease"},
}


@router.post(
    "/{lease_id}/console",
    response_model=ConsoleReceipt,
    summary="The lease's node ships guest-console bytes (EIP-712 ConsoleUpload, single-use"
    " nonce); the backend keeps the last 256 KiB",
    openapi_extra={"requestBody": {"required": True, "content": _OCTETS}},
    responses={
        **_ERRORS,
        409: {"description": "the upload's nonce was used before (a replay)"},
        413: {"description": f"more than {CONSOLE_CHUNK_MAX_BYTES} bytes"},
    },
)
async def put_console(
    lease_id: LeasePath,
    request: Request,
    context: Context,
    x_cvm_node: Annotated[str | None, Header(alias=NODE_HEADER)] = None,
    x_cvm_timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
    x_cvm_nonce: Annotated[str | None, Header(alias=NONCE_HEADER)] = None,
    x_cvm_offset: Annotated[str | None, Header(alias=OFFSET_HEADER)] = None,
    x_cvm_signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
) -> ConsoleReceipt:
    if x_cvm_node is None:
        raise ApiError(401, f"console uploads are signed by the lease's node ({NODE_HEADER})")
    chunk = bytearray()
    async for part in request.stream():
        chunk.extend(part)
        if len(chunk) > CONSOLE_CHUNK_MAX_BYTES:
            raise ApiError(413, f"a console upload carries at most {CONSOLE_CHUNK_MAX_BYTES} bytes")
    signed = console.SignedChunk(
        x_cvm_node, x_cvm_timestamp, x_cvm_nonce, x_cvm_offset, x_cvm_signature, bytes(chunk)
    )
    # The store is synchronous: not on the event loop.
    return await run_in_threadpool(_append, context, lease_id, signed)


def _append(context: AppContext, lease_id: int, signed: console.SignedChunk) -> ConsoleReceipt:
    with context.store.session() as session:
        receipt = console.append(
            session,
            lease_id,
            signed,
            domain=context.domain,
            now=int(context.clock()),
            window_s=context.settings.heartbeat_window_s,
            at=context.now(),
        )
        # Counted only once the signature verified (a 429 rolls the append back): forged
        # uploads naming a node's address count against their client IP, never the node.
        context.limit_address(parse_address(signed.node or "", NODE_HEADER), "console")
        return receipt


@router.get(
    "/{lease_id}/logs",
    response_model=LeaseConsoleView,
    summary="The tail of the lease's guest console, for its renter (relayed by the node's"
    " host, which sees and could alter it: untrusted)",
    responses=_ERRORS,
)
def get_logs(
    lease_id: LeasePath,
    renter: Renter,
    session: DbSession,
    since: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="stream position to start from")
    ] = 0,
) -> LeaseConsoleView:
    return console.read(session, lease_id, renter, since)
