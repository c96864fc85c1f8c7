"""The lease timeline (JSON and Server-Sent Events) and the web console's config and files."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from backend.api.console import install_web
from backend.api.deps import AppContext
from backend.domain import timeline as domain_timeline
from backend.store import ChainEvent, Evidence, Match, Store
from cvm.api_models import RETRY_AFTER_HEADER
from tests.fixtures.processes import wait_for
from tests.unit.backend.factories import add_lease

RENTER = "0x" + "02" * 20
NODE = "0x" + "01" * 20
REPORT_HASH = "0x" + "cd" * 32


def add_event(store: Store, block: int, name: str, lease_id: int, **args: object) -> None:
    with store.session() as session:
        session.add(
            ChainEvent(
                block_number=block,
                block_hash="0x" + f"{block:064x}",
                log_index=0,
                tx_hash="0x" + "00" * 32,
                contract="LeaseMarket",
                name=name,
                block_timestamp=1_700_000_000 + block,
                lease_id=lease_id,
                node=None,
                args={"leaseId": lease_id, **args},
            )
        )


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_timeline_follows_a_lease_step_by_step(client: TestClient, store: Store) -> None:
    add_lease(store, 7, RENTER)
    add_event(store, 5, "LeaseCreated", 7)
    steps = client.get("/v1/leases/7/timeline").json()["steps"]
    assert [(s["name"], s["at"]) for s in steps] == [
        ("created", 1_700_000_005),
        ("matched", None),
        ("accepted", None),
        ("launched", None),
        ("report_submitted", None),
        ("verified", None),
    ]
    with store.session() as session:
        now = at(1_700_000_006)
        session.add(
            Match(
                lease_id=7,
                node=NODE,
                status="accepted",
                vcpus=2,
                memory_mib=1,
                disk_gib=1,
                score=1.0,
                created_at=now,
                deadline=now,
            )
        )
        session.add(
            Evidence(
                hash="0x" + "ef" * 32,
                report_hash=REPORT_HASH,
                content=b"{}",
                size=2,
                created_at=at(1_700_000_008),
            )
        )
    add_event(store, 7, "LeaseAccepted", 7, nodeKey=NODE)
    add_event(store, 9, "AttestationSubmitted", 7, reportHash=REPORT_HASH)
    add_event(store, 10, "AttestationVerified", 7, reportHash=REPORT_HASH)
    body = client.get("/v1/leases/7/timeline").json()
    assert [(s["name"], s["at"]) for s in body["steps"]] == [
        ("created", 1_700_000_005),
        ("matched", 1_700_000_006),
        ("accepted", 1_700_000_007),
        ("launched", 1_700_000_008),
        ("report_submitted", 1_700_000_009),
        ("verified", 1_700_000_010),
    ]
    assert body["steps"][2]["detail"] == {"node": NODE}
    assert body["closed_at"] is None


def test_timeline_of_an_unknown_lease_is_404(client: TestClient) -> None:
    answer = client.get("/v1/leases/99/timeline")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "lease 99 not found"}


def test_stream_pushes_each_change_to_every_listener(live_api: str, store: Store) -> None:
    add_lease(store, 3, RENTER)
    add_event(store, 5, "LeaseCreated", 3)
    received: dict[int, list[dict[str, object]]] = {0: [], 1: []}
    two_each = threading.Barrier(3)

    def listen(index: int) -> None:
        with httpx.stream("GET", f"{live_api}/v1/leases/3/timeline/stream", timeout=30) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    received[index].append(json.loads(line.removeprefix("data: ")))
                    if len(received[index]) == 1:
                        two_each.wait(timeout=20)
                    if len(received[index]) == 2:
                        return

    listeners = [threading.Thread(target=listen, args=(i,)) for i in (0, 1)]
    for thread in listeners:
        thread.start()
    two_each.wait(timeout=20)  # both saw the first state; now the chain moves on
    add_event(store, 6, "LeaseAccepted", 3, nodeKey=NODE)
    for thread in listeners:
        thread.join(timeout=20)
    for index in (0, 1):
        first, second = received[index]
        assert first["steps"][2]["at"] is None  # type: ignore[index]
        assert second["steps"][2]["at"] == 1_700_000_006  # type: ignore[index]


def test_console_config_tells_the_page_where_the_chain_is(client: TestClient) -> None:
    config = client.get("/v1/console/config").json()
    assert config["chain_id"] == 31337
    assert config["lease_market"] == "0x" + "22" * 20
    assert config["rpc_url"] == "http://127.0.0.1:8545"
    assert config["local"] is False


def console_app(context: AppContext, directory: Path) -> FastAPI:
    app = FastAPI()
    app.state.context = context
    install_web(app, "/v1", directory=directory)
    return app


def test_built_console_is_served_at_root_beside_the_api(
    context: AppContext, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<title>cvm console</title>")
    (tmp_path / "app.js").write_text("console.log('cvm')")
    with TestClient(console_app(context, tmp_path)) as client:
        page = client.get("/")
        assert "cvm console" in page.text
        # Only its own scripts run and nothing frames it (the browser suite runs under it).
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert client.get("/app.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/v1/console/config").json()["chain_id"] == 31337


def test_console_mount_shadows_no_api_route(client: TestClient) -> None:
    assert client.get("/v1/health").json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_backend_without_a_built_console_says_how_to_build_it(
    context: AppContext, tmp_path: Path
) -> None:
    with TestClient(console_app(context, tmp_path / "missing")) as client:
        answer = client.get("/")
        assert answer.status_code == 503
        assert "make web" in answer.text
        assert client.get("/v1/console/config").status_code == 200


def test_no_api_docs_page_runs_cdn_scripts_on_the_console_s_origin(
    context: AppContext,
) -> None:
    """Attack (issue 18): FastAPI's /docs and /redoc loaded unpinned scripts from a CDN, with no
    CSP, on the origin of the wallet console and its session. Fails on the old app (both were
    200 and named cdn.jsdelivr.net); now only the OpenAPI document is served."""
    from backend.api import create_app

    with TestClient(create_app(context)) as client:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            answer = client.get(path)
            assert answer.status_code in (404, 503), path  # 503: the console-not-built page
            assert "cdn" not in answer.text.lower() and "<script" not in answer.text.lower()
        schema = client.get("/openapi.json")
        assert schema.status_code == 200 and schema.json()["info"]["title"] == "cvm marketplace"


# --- bounded streams (issue 18) -------------------------------------------------------------


async def _open_streams(
    url: str, lease_ids: list[int], received: list[list[dict[str, Any]]], want: int
) -> None:
    """One stream per entry of `lease_ids`, each read until it has `want` timeline events."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def listen(index: int, lease_id: int) -> None:
            async with client.stream("GET", f"{url}/v1/leases/{lease_id}/timeline/stream") as s:
                assert s.status_code == 200
                async for line in s.aiter_lines():
                    if line.startswith("data: "):
                        received[index].append(json.loads(line.removeprefix("data: ")))
                        if len(received[index]) == want:
                            return

        await asyncio.gather(*(listen(i, lease) for i, lease in enumerate(lease_ids)))


def test_idle_streams_and_a_lease_event_cost_one_read_per_changed_lease(
    live_api: str, store: Store, context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (issue 18): every store change made each open stream re-read its own lease's
    timeline on the thread pool the API shares, so ~1,500 idle streams stalled the API on
    every lease event. Fails on the old hub (one read per stream: 300 here); now the change is
    read once for the lease it touched and fanned out to its 300 streams."""
    context.settings.timeline_streams_per_client = 1000
    for lease_id in (3, 4):
        add_lease(store, lease_id, RENTER)
        add_event(store, lease_id, "LeaseCreated", lease_id)
    reads: Counter[int] = Counter()
    read = domain_timeline.lease_timeline

    def counted(session: Any, lease_id: int) -> Any:
        reads[lease_id] += 1
        return read(session, lease_id)

    monkeypatch.setattr(domain_timeline, "lease_timeline", counted)
    statements = [0]

    def count_statement(*_args: Any) -> None:
        statements[0] += 1

    lease_ids = [3] * 300 + [4] * 20
    received: list[list[dict[str, Any]]] = [[] for _ in lease_ids]
    done = threading.Event()

    def run() -> None:
        asyncio.run(_open_streams(live_api, lease_ids, received, want=2))
        done.set()

    listener = threading.Thread(target=run, daemon=True)
    listener.start()
    wait_for(lambda: all(received), timeout=60, what="every stream's first timeline")
    reads.clear()
    event.listen(store.engine, "before_cursor_execute", count_statement)
    try:
        add_event(store, 8, "LeaseAccepted", 3, nodeKey=NODE)  # lease 3 changes, not 4
        add_event(store, 9, "LeaseAccepted", 4, nodeKey=NODE)  # ... then lease 4 too
        assert done.wait(timeout=60), "not every stream saw the change"
    finally:
        event.remove(store.engine, "before_cursor_execute", count_statement)
    listener.join(timeout=30)
    assert all(r[1]["steps"][2]["at"] is not None for r in received)
    # One read per changed lease (two if the two events landed in two polls), not per stream.
    assert reads[3] <= 2 and reads[4] <= 2, reads
    # The rest is the hub's one cheap change check per poll (and the writes of the events).
    assert statements[0] < 60, statements[0]


def test_streams_are_capped_per_client_and_in_total_with_a_clear_refusal(
    live_api: str, store: Store, context: AppContext
) -> None:
    """Fails on the old hub: streams were neither capped per client nor in total."""
    add_lease(store, 3, RENTER)
    context.settings.timeline_streams_per_client = 3
    url = f"{live_api}/v1/leases/3/timeline/stream"
    with ExitStack() as streams:
        for _ in range(3):
            opened = streams.enter_context(httpx.stream("GET", url, timeout=30))
            assert opened.status_code == 200
        refused = httpx.get(url, timeout=30)
        assert refused.status_code == 429
        assert "too many timeline streams from this client: at most 3" in refused.json()["detail"]
        assert int(refused.headers[RETRY_AFTER_HEADER]) >= 1
        context.settings.timeline_streams_per_client = 10
        context.settings.timeline_streams_max = 4
        streams.enter_context(httpx.stream("GET", url, timeout=30))  # the 4th
        full = httpx.get(url, timeout=30)
        assert full.status_code == 503
        assert "serves 4 timeline streams already" in full.json()["detail"]
    # Closed streams give their slots back.
    with httpx.stream("GET", url, timeout=30) as again:
        assert again.status_code == 200


def test_a_stream_ends_at_its_lifetime_and_frees_its_slot(
    live_api: str, store: Store, context: AppContext
) -> None:
    """Fails on the old hub: a stream never ended (the read below would time out)."""
    add_lease(store, 3, RENTER)
    context.settings.timeline_stream_lifetime_s = 1.0
    context.settings.timeline_streams_per_client = 1
    url = f"{live_api}/v1/leases/3/timeline/stream"
    for _ in range(2):  # the second stream gets the slot the first one left
        # The old hub sent a keep-alive every 15 s for ever: give up (fail) after 40 s.
        give_up = time.monotonic() + 40
        lines = []
        with httpx.stream("GET", url, timeout=30) as stream:
            for line in stream.iter_lines():  # ends only once the server ends the stream
                lines.append(line)
                if time.monotonic() > give_up:
                    pytest.fail("the stream outlived its lifetime")
        assert stream.status_code == 200
        assert lines[0] == "retry: 2000"  # the browser reconnects by itself
        assert any(line.startswith("data: {") for line in lines)
