"""Evidence upload/download, health, readiness, metrics, and the OpenAPI document."""

from __future__ import annotations

import secrets

from eth_utils import keccak
from fastapi.testclient import TestClient

from backend.api.deps import AppContext
from backend.store import Evidence, Store
from cvm.attestation.abi import REPORT_SIZE
from cvm.attestation.evidence import EvidenceBundle
from tests.unit.backend.factories import Clock, add_lease, new_account, upload_headers


def bundle(lease_id: int = 1, nonce: int = 0) -> EvidenceBundle:
    return EvidenceBundle(
        report=secrets.token_bytes(REPORT_SIZE),
        vcek=secrets.token_bytes(600),
        chain=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        chain_id=31337,
        registry="0x" + "33" * 20,
        lease_id=lease_id,
        nonce=nonce,
    )


def test_upload_is_content_addressed_and_idempotent(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    node = new_account()
    add_lease(store, 1, "0x" + "44" * 20, node=node.address.lower())
    evidence = bundle()
    raw = evidence.encode()
    headers = upload_headers(node, raw, context.domain, int(clock.now))
    first = client.post("/v1/evidence", content=raw, headers=headers)
    assert first.status_code == 201, first.text
    receipt = first.json()
    assert receipt["hash"] == "0x" + keccak(raw).hex()
    assert receipt["report_hash"] == "0x" + keccak(evidence.report).hex()
    assert receipt["size"] == len(raw)
    again = client.post("/v1/evidence", content=raw, headers=headers)
    assert again.status_code == 201 and again.json() == receipt
    with store.session() as session:
        assert session.query(Evidence).count() == 1

    by_hash = client.get(f"/v1/evidence/{receipt['hash']}")
    assert by_hash.status_code == 200 and by_hash.content == raw
    assert by_hash.headers["content-type"] == "application/octet-stream"
    by_report = client.get(f"/v1/evidence/{receipt['report_hash'].upper().replace('0X', '0x')}")
    assert by_report.status_code == 200 and by_report.content == raw


def test_bad_evidence_is_refused_and_not_stored(
    client: TestClient, store: Store, context: AppContext, clock: Clock
) -> None:
    node = new_account()
    raw = bundle().encode()
    headers = upload_headers(node, raw, context.domain, int(clock.now))
    not_canonical = raw.replace(b'"chain_id":31337', b'"chain_id": 31337')
    for body, status, words in (
        (b"", 422, "empty"),
        (b"\x00\x01garbage", 422, "not canonical"),
        (not_canonical, 422, "canonical"),
        (b"x" * 8193, 413, "limit"),
    ):
        response = client.post("/v1/evidence", content=body, headers=headers)
        assert response.status_code == status, (body[:20], response.text)
        assert words in response.json()["detail"]
    with store.session() as session:
        assert session.query(Evidence).count() == 0
    assert client.get("/v1/evidence/0x" + "12" * 32).status_code == 404
    assert client.get("/v1/evidence/0x12").status_code == 422


def test_health_readiness_metrics_openapi(client: TestClient) -> None:
    assert client.get("/v1/health").json() == {"status": "ok"}
    ready = client.get("/v1/ready")
    assert ready.status_code == 200 and ready.json()["database"] is True
    client.get("/v1/nodes/0x1")  # a 422 to count
    metrics = client.get("/metrics").text
    assert (
        'cvm_api_requests_total{method="GET",route="/v1/nodes/{address}",status="422"} 1.0'
        in metrics
    )
    assert "cvm_api_request_seconds_bucket" in metrics
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/nodes",
        "/v1/nodes/{address}",
        "/v1/nodes/{address}/heartbeats",
        "/v1/leases",
        "/v1/leases/intents",
        "/v1/leases/{lease_id}",
        "/v1/leases/{lease_id}/spec",
        "/v1/leases/{lease_id}/attestation",
        "/v1/evidence",
        "/v1/evidence/{hash}",
        "/v1/guest-keys/{key_hash}/claim",
        "/v1/auth/nonce",
        "/v1/auth/login",
        "/v1/chain",
        "/v1/health",
        "/v1/ready",
    ):
        assert path in paths, path
    assert client.get("/v1/nowhere").json() == {"detail": "Not Found"}


def test_readiness_reports_a_dead_database(client: TestClient, context: AppContext) -> None:
    # Port 1 on loopback refuses connections: the database is unreachable.
    context.store = Store("postgresql+psycopg://cvm@127.0.0.1:1/cvm", migrate_schema=False)
    response = client.get("/v1/ready")
    assert response.status_code == 503 and response.json()["database"] is False
    assert client.get("/v1/health").status_code == 200
