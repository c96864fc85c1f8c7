"""Schemathesis against the app's own OpenAPI schema: no input makes the API answer 5xx.

Runs on SQLite and PostgreSQL (which, unlike SQLite, refuses NUL bytes in text: inputs
must be checked before they reach the store). A few dozen examples per operation.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from backend.api import create_app
from backend.api.deps import AppContext
from backend.api.limits import RateLimiter
from backend.store import Store
from cvm.api_models import ChainInfo
from cvm.config import Settings
from tests.fixtures.processes import free_port
from tests.unit.backend.factories import add_lease, add_node

pytestmark = pytest.mark.integration


# Where the fixture's server listens (the test checks it still answers after a reset).
_SERVER: dict[str, str] = {}


@pytest.fixture(params=["sqlite", "postgresql"])
def api_schema(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgresql_database_url")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    store = Store(url)
    # Some rows, so that reads by id find something as well as nothing.
    add_node(store, "0x" + "01" * 20)
    add_lease(store, 0, "0x" + "02" * 20)
    add_lease(store, 1, "0x" + "02" * 20, status="active", node="0x" + "01" * 20)
    context = AppContext(
        # The fuzzer is one client sending thousands of requests: no per-client limit here
        # (tests/unit/backend/test_api_abuse.py covers the limits).
        settings=Settings(database_url=url, evidence_max_bytes=4096, rate_limit_per_client=0),
        limiter=RateLimiter(None),
        store=store,
        chain=ChainInfo(
            chain_id=31337,
            node_registry="0x" + "11" * 20,
            lease_market="0x" + "22" * 20,
            attestation_registry="0x" + "33" * 20,
        ),
    )
    port = free_port()
    # The fuzzer reuses keep-alive connections with pauses between requests that grow long on
    # a loaded machine: with uvicorn's 5 s keep-alive, the server could close one just as a
    # POST went out on it, and the client saw a connection reset (not an answer of the API).
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(context),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_keep_alive=300,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    _SERVER["url"] = f"http://127.0.0.1:{port}"
    loaded = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    # Explicit examples and random fuzzing; the exhaustive coverage phase would take
    # minutes on two cores for little extra here.
    loaded.config.phases.update(phases=["examples", "fuzzing"])
    yield loaded
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_gets_a_server_error(case: schemathesis.Case) -> None:
    # One connection per case: a keep-alive connection the server closed after an earlier
    # case cannot fail this one.
    with requests.Session() as session:
        try:
            if not _is_http(case.headers):
                # Not HTTP (a control byte in a header): the server refuses it before the API
                # sees it, answering 400 and closing.
                response = case.call(session=session)
                assert response.status_code < 500, response.text
                return
            case.call_and_validate(session=session, checks=[not_a_server_error])
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # The server refused the request before reading its body and closed: the unread
            # body turns the close into a reset, which can reach the client before the end of
            # the answer. No server error, as long as the server still answers the next client.
            alive = requests.get(f"{_SERVER['url']}/openapi.json", timeout=60)
            assert alive.status_code == 200, "the server stopped answering after this input"


# RFC 9110: a field name is a token; a field value has no control characters but HTAB.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _is_http(headers: Mapping[str, str] | None) -> bool:
    for name, value in (headers or {}).items():
        if not _TOKEN.fullmatch(name):
            return False
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in str(value)):
            return False
    return True
