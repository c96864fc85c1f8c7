"""The lease timeline (JSON and Server-Sent Events) and the web console's config and files."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.api.console import install_web
from backend.api.deps import AppContext
from backend.store import ChainEvent, Evidence, Match, Store
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
