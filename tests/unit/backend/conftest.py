"""Fixtures of the backend unit tests: a migrated SQLite store, an app with a settable clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.api import create_app
from backend.api.deps import AppContext
from backend.api.limits import RateLimiter
from backend.store import Store
from cvm.api_models import ChainInfo
from cvm.config import Settings
from tests.fixtures.processes import serving
from tests.unit.backend.factories import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(float(int(time.time())))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'backend.db'}",
        api_public_host="cvm.test",
        evidence_max_bytes=8192,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Store]:
    """The store every backend test runs against: embedded SQLite and a real PostgreSQL."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgresql_database_url")
        settings.database_url = url
    store = Store(settings.database_url)
    yield store
    store.close()


@pytest.fixture
def chain_info() -> ChainInfo:
    return ChainInfo(
        chain_id=31337,
        node_registry="0x" + "11" * 20,
        lease_market="0x" + "22" * 20,
        attestation_registry="0x" + "33" * 20,
    )


@pytest.fixture
def context(settings: Settings, store: Store, chain_info: ChainInfo, clock: Clock) -> AppContext:
    # In-process counters: never the broker's default Redis at a fixed port (Redis-shared
    # counters have a test of their own on the session's Redis).
    return AppContext(
        settings=settings,
        store=store,
        chain=chain_info,
        clock=clock,
        limiter=RateLimiter(None, clock=clock),
    )


@pytest.fixture
def client(context: AppContext) -> Iterator[TestClient]:
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def live_api(context: AppContext) -> Iterator[str]:
    """The app served by a real uvicorn on a free port (for `cvm.api_client` over HTTP)."""
    with serving(create_app(context)) as url:
        yield url


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """moto's S3 server in this process, on a free port, stopped after the session (the S3
    object store's tests, backend.objects)."""
    from moto.server import ThreadedMotoServer

    from tests.fixtures.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
