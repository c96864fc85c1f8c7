"""The API's one error type and the handlers that turn every failure into a JSON 4xx/5xx.

Routes raise `ApiError` for what only HTTP knows (a header missing, a path and a body that
disagree); the domain's `DomainError`s get their status here, in one table.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    OutOfSpace,
    RateLimited,
    TooLarge,
    Unauthenticated,
)
from cvm.api_models import RETRY_AFTER_HEADER

log = logging.getLogger(__name__)

_STATUS_OF: dict[type[DomainError], int] = {
    InvalidInput: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    TooLarge: 413,
    OutOfSpace: 507,
    DomainError: 400,  # last: a refusal of no more specific kind
}


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a message for the caller."""

    def __init__(
        self, status_code: int, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def error_response(exc: DomainError | ApiError) -> JSONResponse:
    """The JSON answer to a refusal (with Retry-After for a 429)."""
    if isinstance(exc, ApiError):
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    status = next(code for kind, code in _STATUS_OF.items() if isinstance(exc, kind))
    headers = None
    if isinstance(exc, RateLimited):
        headers = {RETRY_AFTER_HEADER: str(exc.retry_after_s)}
    return JSONResponse(status_code=status, content={"detail": exc.detail}, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error is `{"detail": <message>}`; validation errors name the offending field."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content={"detail": str(exc.detail)}, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        messages = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()))
            messages.append(f"{location}: {error.get('msg', 'invalid')}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(messages) or "invalid"})

    @app.exception_handler(OperationalError)
    async def _store_unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
        # The store restarting or unreachable (the connection failed, not the statement): a
        # retry will do, so a 503 with Retry-After and one log line instead of a traceback.
        log.warning("store unavailable: %s", type(exc.orig).__name__)
        return JSONResponse(
            status_code=503,
            content={"detail": "the store is unavailable; retry shortly"},
            headers={RETRY_AFTER_HEADER: "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": "internal error"})
