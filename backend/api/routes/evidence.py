"""`/v1/evidence`: canonical evidence bundles (report, VCEK, chain), addressed by hash."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.api.deps import AppContext, Context, DbSession
from backend.api.errors import ApiError, not_found
from backend.api.schemas import EvidenceReceipt, parse_hash
from backend.evidence import EvidenceFormatError, evidence_hash, report_hash_of
from backend.store import Evidence

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
    if not bundle:
        raise ApiError(422, "empty body: send the canonical evidence bytes")
    try:
        report_hash = report_hash_of(bundle)
    except EvidenceFormatError as exc:
        raise ApiError(422, f"not canonical evidence: {exc}") from exc
    digest = evidence_hash(bundle)
    # The store is synchronous: waiting for its (SQLite) write lock on the event loop
    # would stall every other request, including the one that holds the lock.
    await run_in_threadpool(_store_evidence, context, digest, report_hash, bundle)
    return EvidenceReceipt(hash=digest, report_hash=report_hash, size=len(bundle))


def _store_evidence(context: AppContext, digest: str, report_hash: str, bundle: bytes) -> None:
    with context.store.session() as session:
        if session.get(Evidence, digest) is None:
            try:
                with session.begin_nested():
                    session.add(
                        Evidence(
                            hash=digest,
                            report_hash=report_hash,
                            content=bundle,
                            size=len(bundle),
                            created_at=context.now(),
                        )
                    )
            except IntegrityError:
                pass  # the same bytes were stored concurrently: content addressing makes it one


@router.get(
    "/{hash}",
    response_class=Response,
    summary="Evidence bytes by evidence hash, or by the report hash recorded on chain",
    responses={200: {"content": _OCTETS}, 404: {"description": "unknown hash"}},
)
def get_evidence(hash: str, session: DbSession) -> Response:
    key = parse_hash(hash)
    row = session.get(Evidence, key)
    if row is None:
        row = session.scalar(
            select(Evidence).where(Evidence.report_hash == key).order_by(Evidence.created_at)
        )
    if row is None:
        raise not_found(f"evidence {hash}")
    return Response(content=row.content, media_type="application/octet-stream")
