"""Liveness (`/v1/health`) and readiness (`/v1/ready`: the store answers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from backend.api.deps import Context
from backend.store import IndexerCursor
from cvm.api_models import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="The process is alive")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    summary="The store answers (503 otherwise)",
    responses={503: {"model": Readiness}},
)
def ready(context: Context) -> JSONResponse:
    indexed: int | None = None
    try:
        with context.store.new_session(read_only=True) as session:
            session.execute(text("SELECT 1"))
            indexed = session.scalar(select(IndexerCursor.last_block).limit(1))
        readiness = Readiness(status="ready", database=True, indexed_block=indexed)
        return JSONResponse(readiness.model_dump())
    except Exception:  # any database failure means "not ready", never a 500
        readiness = Readiness(status="not ready", database=False, indexed_block=None)
        return JSONResponse(readiness.model_dump(), status_code=503)
