"""`/v1/evidence`: canonical evidence bundles (report, VCEK, chain), addressed by hash."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool

from backend.api.deps import AppContext, Context, DbSession
from backend.api.errors import ApiError
from backend.api.limits import read_limited
from backend.domain import evidence
from backend.domain.addresses import parse_address
from cvm.api_models import (
    AMD_ROOT_HEADER,
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EvidenceReceipt,
    GuestKeyClaimView,
)

router = APIRouter(prefix="/evidence", tags=["evidence"])

_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.post(
    "",
    status_code=201,
    response_model=EvidenceReceipt,
    summary="Store canonical evidence bytes (idempotent), signed by the lease's node key"
    " (EIP-712 EvidenceUpload); returns their hash",
    openapi_extra={"requestBody": {"required": True, "content": _OCTETS}},
    responses={
        401: {"description": "unsigned, badly signed or stale upload"},
        403: {"description": "the signer is not the lease's node"},
        404: {"description": "the lease the bundle names does not exist"},
        409: {"description": "the bundle's nonce was already attested (replay)"},
        413: {"description": "evidence larger than the configured limit"},
        422: {"description": "not canonical evidence"},
        429: {"description": "too many uploads from this node or client"},
    },
)
async def upload_evidence(
    request: Request,
    context: Context,
    x_cvm_node: Annotated[str | None, Header(alias=NODE_HEADER)] = None,
    x_cvm_timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
    x_cvm_signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
) -> EvidenceReceipt:
    if x_cvm_node is None:
        raise ApiError(401, f"evidence uploads are signed by the lease's node ({NODE_HEADER})")
    bundle = await read_limited(request, context.settings.evidence_max_bytes, "evidence")
    receipt = evidence.receipt_of(bundle)
    # The store is synchronous: waiting for its (SQLite) write lock on the event loop
    # would stall every other request, including the one that holds the lock.
    claim = await run_in_threadpool(
        _store, context, bundle, receipt, (x_cvm_node, x_cvm_timestamp, x_cvm_signature)
    )
    return receipt.model_copy(update={"key_claim_checked": True, "key_claim": claim})


def _store(
    context: AppContext,
    bundle: bytes,
    receipt: EvidenceReceipt,
    signed: tuple[str | None, str | None, str | None],
) -> GuestKeyClaimView | None:
    # Authorized, then proven, outside the write transaction: the proof checks certificates
    # and signatures, which must neither hold the (SQLite) write lock nor run for uploads
    # that are not the lease node's.
    with context.store.new_session(read_only=True) as reader:
        lease = evidence.authorize_upload(
            reader,
            bundle,
            receipt,
            *signed,
            domain=context.domain,
            now=int(context.clock()),
            window_s=context.settings.heartbeat_window_s,
        )
    # Counted once the signature verified: forged uploads naming a node's address count
    # against their client IP only, never against the node's own allowance.
    context.limit_address(parse_address(signed[0] or "", NODE_HEADER), "evidence")
    key_hash = evidence.proven_key(
        bundle,
        lease,
        chain_id=context.chain.chain_id,
        registry=context.chain.attestation_registry,
        trusted_roots=context.trusted_roots,
    )
    with context.store.session() as session:
        evidence.store_evidence(session, bundle, receipt, context.now(), key_hash)
    # Answered after the commit, as the claim route would be: this upload's own claim counts.
    with context.store.new_session(read_only=True) as reader:
        return evidence.claim_against(reader, bundle)


@router.get(
    "/{hash}",
    response_class=Response,
    summary="Evidence bytes by evidence hash, or by the report hash recorded on chain",
    responses={
        200: {
            "content": _OCTETS,
            "headers": {
                AMD_ROOT_HEADER: {
                    "description": "once verified: `amd`, or `simulated` (the local stack's"
                    " simulated AMD-SP signed the report)",
                    "schema": {"type": "string", "enum": ["amd", "simulated"]},
                }
            },
        },
        404: {"description": "unknown hash"},
    },
)
def get_evidence(hash: str, session: DbSession) -> Response:
    content, amd_root = evidence.evidence_bytes(session, hash)
    # The bytes are content-addressed and cannot carry the verdict: a header does.
    headers = {AMD_ROOT_HEADER: amd_root.value} if amd_root is not None else None
    return Response(content=content, media_type="application/octet-stream", headers=headers)
