"""Every failure the API meets becomes JSON: a store that went away is a 503 the caller can retry
(with Retry-After), never a 500 with a traceback in the log."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from backend.api.errors import install_error_handlers
from cvm.api_models import RETRY_AFTER_HEADER


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/store-gone")
    def store_gone() -> None:
        # A real driver error: a PostgreSQL URL whose server is not there.
        engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        with engine.connect() as connection:
            connection.execute(text("select 1"))

    @app.get("/bug")
    def bug() -> None:
        raise RuntimeError("a bug")

    return app


def test_an_unreachable_store_is_a_503_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(_app(), raise_server_exceptions=False) as client:
        with caplog.at_level(logging.WARNING, logger="backend.api.errors"):
            response = client.get("/store-gone")
        assert response.status_code == 503
        assert response.headers[RETRY_AFTER_HEADER] == "1"
        assert response.json() == {"detail": "the store is unavailable; retry shortly"}
        assert [r.exc_info for r in caplog.records] == [None]  # one line, no traceback
        bug = client.get("/bug")
        assert bug.status_code == 500 and bug.json() == {"detail": "internal error"}
