"""`/v1/evidence`: canonical evidence bundles (report, VCEK, chain), addressed by hash."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from backend.api.deps import AppContext, Context, DbSession
from backend.api.errors import ApiError
from backend.domain import evidence
from cvm.api_models import EvidenceReceipt

router = APIRouter(prefix="/evidence", tags=["evidence"])

_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"evidence is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, f"evidence exceeds the limit of {limit} bytes")
    return bytes(body)


@router.post(
    "",
    status_code=201,
    response_model=EvidenceReceipt,
    summary="Store canonical evidence bytes (idempotent); returns their hash",
    openapi_extra={"requestBody": {"required": True, "content": _OCTETS}},
    responses={
        413: {"description": "evidence larger than the configured limit"},
        422: {"description": "not canonical evidence"},
    },
)
async def upload_evidence(request: Request, context: Context) -> EvidenceReceipt:
    bundle = await _read_limited(request, context.settings.evidence_max_bytes)
    receipt = evidence.receipt_of(bundle)
    # The store is synchronous: waiting for its (SQLite) write lock on the event loop
    # would stall every other request, including the one that holds the lock.
    await run_in_threadpool(_store, context, bundle, receipt)
    return receipt


def _store(context: AppContext, bundle: bytes, receipt: EvidenceReceipt) -> None:
    with context.store.session() as session:
        evidence.store_evidence(session, bundle, receipt, context.now())


@router.get(
    "/{hash}",
    response_class=Response,
    summary="Evidence bytes by evidence hash, or by the report hash recorded on chain",
    responses={200: {"content": _OCTETS}, 404: {"description": "unknown hash"}},
)
def get_evidence(hash: str, session: DbSession) -> Response:
    content = evidence.evidence_bytes(session, hash)
    return Response(content=content, media_type="application/octet-stream")
